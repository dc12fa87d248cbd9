import pickle

import numpy as np
import pytest

from models.backbones import BACKBONES
from models.weights import MAGIC_NUMBER, UnsafeWeightsError, WeightsFormatError, load_legacy_state_dict

LITE0 = BACKBONES["efficientnet-lite0"].weights_path()


def test_real_weights_load_without_torch():
    state = load_legacy_state_dict(LITE0)
    assert len(state) == 296
    assert sum(v.size for v in state.values()) == 4_694_073
    assert state["_conv_stem.weight"].shape == (32, 3, 3, 3)
    assert state["_fc.weight"].shape == (1000, 1280) and state["_fc.weight"].dtype == np.float32
    assert np.isfinite(state["_fc.weight"]).all()


class _Evil:
    """Pickles as a call of `os.system` (or anything else) when unpickled."""
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        import os
        return os.system, (f"touch {self.marker}",)


def _legacy_file(path, payload):
    with open(path, "wb") as f:
        for part in (MAGIC_NUMBER, 1001, {"little_endian": True}, payload, []):
            pickle.dump(part, f, protocol=2)


def test_malicious_pickle_is_refused_and_never_runs(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pth"
    _legacy_file(path, {"weight": _Evil(marker)})
    with pytest.raises(UnsafeWeightsError, match=r"names global '(posix|os)\.system'.*not allowed"):
        load_legacy_state_dict(path)
    assert not marker.exists()


def test_malicious_global_in_the_header_is_refused(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pth"
    with open(path, "wb") as f:
        pickle.dump(_Evil(marker), f, protocol=2)
    with pytest.raises(UnsafeWeightsError):
        load_legacy_state_dict(path)
    assert not marker.exists()


def test_truncated_file_gives_a_clear_error(tmp_path):
    data = LITE0.read_bytes()
    for cut in (100, len(data) // 2, len(data) - 10):
        path = tmp_path / f"cut{cut}.pth"
        path.write_bytes(data[:cut])
        with pytest.raises(WeightsFormatError, match="truncated|corrupt"):
            load_legacy_state_dict(path)


def test_missing_and_wrong_files(tmp_path):
    with pytest.raises(WeightsFormatError, match="does not exist"):
        load_legacy_state_dict(tmp_path / "none.pth")
    path = tmp_path / "plain.pth"
    with open(path, "wb") as f:
        pickle.dump(12345, f, protocol=2)
    with pytest.raises(WeightsFormatError, match="magic number"):
        load_legacy_state_dict(path)
