import io
import re
import pickle
import zipfile
from collections import OrderedDict

import numpy as np
import pytest

from models.backbones import BACKBONES
from models.weights import MAGIC_NUMBER, UnsafeWeightsError, WeightsFormatError, load_legacy_state_dict

LITE0 = BACKBONES["efficientnet-lite0"].weights_path()


# A writer of the legacy layout as torch.save wrote it, naming any global we like, without torch.
class Global:
    def __init__(self, module: str, name: str):
        self.module, self.name = module, name

    def __call__(self, *args):  # pickle wants the callable of a reduce to be callable
        raise AssertionError("never called while writing")


class Call:
    """Pickles as `function(*args)`, the way a tensor pickles as _rebuild_tensor_v2(...)."""
    def __init__(self, function: Global, *args):
        self.function, self.args = function, args

    def __reduce__(self):
        return self.function, self.args


class Storage:
    def __init__(self, key: str, values: np.ndarray, type_name: str = "FloatStorage"):
        self.key, self.values, self.type_name = key, values, type_name


class LegacyPickler(pickle._Pickler):
    def save(self, obj, save_persistent_id=True):
        if isinstance(obj, Global):
            self.write(pickle.GLOBAL + f"{obj.module}\n{obj.name}\n".encode())
        else:
            super().save(obj, save_persistent_id)

    def persistent_id(self, obj):
        if isinstance(obj, Storage):
            return ("storage", Global("torch", obj.type_name), obj.key, "cpu", obj.values.size)
        return None


def tensor(storage: Storage, offset: int, shape: tuple, stride: tuple) -> Call:
    return Call(Global("torch._utils", "_rebuild_tensor_v2"), storage, offset, shape, stride, False, OrderedDict())


def write_legacy(path, state, storages=()):
    buffer = io.BytesIO()
    for part in (MAGIC_NUMBER, 1001, {"protocol_version": 1001, "little_endian": True}, state,
                 [s.key for s in storages]):
        LegacyPickler(buffer, protocol=2).dump(part)
    for s in storages:
        buffer.write(s.values.size.to_bytes(8, "little") + s.values.astype(s.values.dtype.newbyteorder("<")).tobytes())
    path.write_bytes(buffer.getvalue())


def test_real_weights_load_without_torch():
    state = load_legacy_state_dict(LITE0)
    assert len(state) == 296
    assert sum(v.size for v in state.values()) == 4_694_073
    assert state["_conv_stem.weight"].shape == (32, 3, 3, 3)
    assert state["_fc.weight"].shape == (1000, 1280) and state["_fc.weight"].dtype == np.float32
    assert state["_bn0.num_batches_tracked"].shape == () and state["_bn0.num_batches_tracked"].dtype == np.int64
    assert all(np.isfinite(v).all() for v in state.values())


def test_views_respect_offset_shape_and_stride(tmp_path):
    numbers = np.arange(20, dtype=np.float32)
    storage = Storage("0", numbers)
    state = OrderedDict(whole=tensor(storage, 0, (4, 5), (5, 1)),
                        transposed=tensor(storage, 0, (5, 4), (1, 5)),
                        tail=tensor(storage, 12, (2, 3), (3, 1)),
                        scalar=tensor(storage, 7, (), ()),
                        count=tensor(Storage("1", np.array([42], np.int64), "LongStorage"), 0, (), ()))
    write_legacy(tmp_path / "views.pth", state, [storage, state["count"].args[0]])
    loaded = load_legacy_state_dict(tmp_path / "views.pth")
    np.testing.assert_array_equal(loaded["whole"], numbers.reshape(4, 5))
    np.testing.assert_array_equal(loaded["transposed"], numbers.reshape(4, 5).T)
    np.testing.assert_array_equal(loaded["tail"], numbers[12:18].reshape(2, 3))
    assert loaded["scalar"].shape == () and loaded["scalar"] == 7
    assert loaded["count"] == 42 and loaded["count"].dtype == np.int64
    assert loaded["whole"].flags.writeable   # a copy, not a view into the file's bytes


def test_a_view_past_its_storage_is_refused(tmp_path):
    storage = Storage("0", np.zeros(6, np.float32))
    write_legacy(tmp_path / "bad.pth", {"w": tensor(storage, 2, (2, 3), (3, 1))}, [storage])
    with pytest.raises(WeightsFormatError, match="'w' reaches past the end"):
        load_legacy_state_dict(tmp_path / "bad.pth")


@pytest.mark.parametrize("function, argument", [
    (Global("os", "system"), "touch {marker}"),
    (Global("posix", "system"), "touch {marker}"),
    (Global("builtins", "eval"), "open({marker!r}, 'w').close()"),
    (Global("builtins", "exec"), "open({marker!r}, 'w').close()"),
])
def test_a_global_outside_the_allow_list_is_refused_and_never_runs(tmp_path, function, argument):
    marker = str(tmp_path / "pwned")
    storage = Storage("0", np.zeros(1, np.float32))
    state = OrderedDict(weight=tensor(storage, 0, (1,), (1,)),
                        evil=Call(function, argument.format(marker=marker)))
    path = tmp_path / "evil.pth"
    write_legacy(path, state, [storage])
    with pytest.raises(UnsafeWeightsError, match=re.escape(f"'{path}' names global '{function.module}.{function.name}', "
                                                           "which is not allowed: refusing to load it")):
        load_legacy_state_dict(path)
    assert not (tmp_path / "pwned").exists()


def test_the_allow_list_is_exact(tmp_path):
    # A real torch storage type, but not one a float32 state dict needs.
    storage = Storage("0", np.zeros(1, np.float16), "HalfStorage")
    write_legacy(tmp_path / "half.pth", {"w": tensor(storage, 0, (1,), (1,))}, [storage])
    with pytest.raises(UnsafeWeightsError, match="torch.HalfStorage"):
        load_legacy_state_dict(tmp_path / "half.pth")


def test_a_malicious_header_is_refused_before_anything_else(tmp_path):
    marker = tmp_path / "pwned"
    buffer = io.BytesIO()
    LegacyPickler(buffer, protocol=2).dump(Call(Global("os", "system"), f"touch {marker}"))
    (tmp_path / "evil.pth").write_bytes(buffer.getvalue())
    with pytest.raises(UnsafeWeightsError, match="os.system"):
        load_legacy_state_dict(tmp_path / "evil.pth")
    assert not marker.exists()


def test_a_truncated_file_gives_a_clear_error(tmp_path):
    data = LITE0.read_bytes()
    for cut in (0, 5, 100, 30_000, len(data) // 2, len(data) - 10):
        path = tmp_path / f"cut{cut}.pth"
        path.write_bytes(data[:cut])
        with pytest.raises(WeightsFormatError, match=re.escape(f"'{path}' is truncated")):
            load_legacy_state_dict(path)


def test_missing_zip_and_foreign_files(tmp_path):
    with pytest.raises(WeightsFormatError, match="'.*none.pth' does not exist"):
        load_legacy_state_dict(tmp_path / "none.pth")
    with pytest.raises(WeightsFormatError, match="cannot be read"):
        load_legacy_state_dict(tmp_path)
    with zipfile.ZipFile(tmp_path / "new.pth", "w") as archive:   # torch >= 1.6 saves a zip
        archive.writestr("archive/data.pkl", b"")
    with pytest.raises(WeightsFormatError, match="zip format of torch >= 1.6"):
        load_legacy_state_dict(tmp_path / "new.pth")
    (tmp_path / "plain.pth").write_bytes(pickle.dumps(12345, protocol=2))
    with pytest.raises(WeightsFormatError, match="wrong magic number"):
        load_legacy_state_dict(tmp_path / "plain.pth")
