"""Read a legacy (pre-1.6, not zip) PyTorch state dict into numpy arrays, without torch, and
without letting the file run code: the unpickler knows an allow-list of globals and refuses any
other by name.

Layout (checked on the EfficientNet-Lite files): pickle 1 = magic number, pickle 2 = protocol
version, pickle 3 = system info, pickle 4 = the state dict (tensors point at storages through
persistent ids), pickle 5 = the storage keys in file order; then per storage an 8-byte
little-endian element count and its raw little-endian data.
"""

from __future__ import annotations

import io
import pickle
import zipfile
from collections import OrderedDict
from pathlib import Path

import numpy as np

MAGIC_NUMBER = 0x1950A86A20F9469CFC6C
STORAGE_DTYPES = {"FloatStorage": np.float32, "LongStorage": np.int64, "DoubleStorage": np.float64,
                  "HalfStorage": np.float16, "IntStorage": np.int32}


class UnsafeWeightsError(ValueError):
    """The weights file names a global outside the allow-list: it could run code when loaded."""


class WeightsFormatError(ValueError):
    """The weights file is missing, truncated or not a legacy PyTorch state dict."""


class _Storage:
    """Where a storage's numbers will come from, filled in once the raw data is read."""

    def __init__(self, dtype, key: str, size: int):
        self.dtype, self.key, self.size = dtype, key, size
        self.data: np.ndarray | None = None


class _Tensor:
    def __init__(self, storage: _Storage, offset: int, shape: tuple, stride: tuple):
        self.storage, self.offset, self.shape, self.stride = storage, offset, tuple(shape), tuple(stride)

    def to_numpy(self) -> np.ndarray:
        data = self.storage.data
        if not self.shape:
            return data[self.offset].copy()
        itemsize = data.itemsize
        needed = self.offset + sum((n - 1) * s for n, s in zip(self.shape, self.stride)) + 1
        if needed > len(data):
            raise WeightsFormatError(f"a tensor reaches past the end of storage {self.storage.key}")
        view = np.lib.stride_tricks.as_strided(data[self.offset:], self.shape,
                                               [s * itemsize for s in self.stride])
        return np.array(view)


def _rebuild_tensor_v2(storage, storage_offset, size, stride, requires_grad=False,
                       backward_hooks=None, metadata=None):
    return _Tensor(storage, storage_offset, size, stride)


class _StorageType:
    def __init__(self, name: str):
        self.name = name


class _RestrictedUnpickler(pickle.Unpickler):
    """Resolves only the globals a plain state dict needs, to local stand-ins (never torch)."""

    def __init__(self, file, path: str):
        super().__init__(file)
        self.path = path
        self.storages: dict[str, _Storage] = {}

    def find_class(self, module: str, name: str):
        if (module, name) == ("collections", "OrderedDict"):
            return OrderedDict
        if (module, name) == ("torch._utils", "_rebuild_tensor_v2"):
            return _rebuild_tensor_v2
        if module == "torch" and name in STORAGE_DTYPES:
            return _StorageType(name)
        raise UnsafeWeightsError(f"weights file '{self.path}' names global '{module}.{name}', which "
                                 "is not allowed: refusing to load it (a weights file must never "
                                 "be able to run code)")

    def persistent_load(self, pid):
        if not (isinstance(pid, tuple) and len(pid) >= 5 and pid[0] == "storage"
                and isinstance(pid[1], _StorageType)):
            raise WeightsFormatError(f"weights file '{self.path}' has an unexpected persistent id {pid!r}")
        _, storage_type, key, _location, size = pid[:5]
        if key not in self.storages:
            self.storages[key] = _Storage(STORAGE_DTYPES[storage_type.name], str(key), int(size))
        return self.storages[key]


def load_legacy_state_dict(path: str | Path) -> dict[str, np.ndarray]:
    """{parameter name: array} from a legacy PyTorch .pth file."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise WeightsFormatError(f"weights file '{path}' does not exist") from None
    if zipfile.is_zipfile(io.BytesIO(raw)):
        raise WeightsFormatError(f"weights file '{path}' is in the zip format of torch >= 1.6; only "
                                 "the legacy format is read here")
    stream = io.BytesIO(raw)
    unpickler = _RestrictedUnpickler(stream, str(path))
    try:
        magic = unpickler.load()
        if magic != MAGIC_NUMBER:
            raise WeightsFormatError(f"weights file '{path}' is not a legacy PyTorch file "
                                     "(wrong magic number)")
        unpickler.load()  # protocol version
        unpickler.load()  # system info
        state = unpickler.load()
        keys = unpickler.load()
    except (UnsafeWeightsError, WeightsFormatError):
        raise
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError) as exc:
        raise WeightsFormatError(f"weights file '{path}' is truncated or corrupt: {exc}") from None
    offset = stream.tell()
    for key in keys:
        storage = unpickler.storages.get(str(key))
        if storage is None:
            raise WeightsFormatError(f"weights file '{path}' lists storage {key} that no tensor uses")
        if offset + 8 > len(raw):
            raise WeightsFormatError(f"weights file '{path}' is truncated (storage {key} missing)")
        count = int.from_bytes(raw[offset:offset + 8], "little")
        offset += 8
        nbytes = count * np.dtype(storage.dtype).itemsize
        if offset + nbytes > len(raw):
            raise WeightsFormatError(f"weights file '{path}' is truncated (storage {key} is cut short)")
        storage.data = np.frombuffer(raw, dtype=np.dtype(storage.dtype).newbyteorder("<"),
                                     count=count, offset=offset)
        offset += nbytes
    if not isinstance(state, dict):
        raise WeightsFormatError(f"weights file '{path}' does not hold a state dict")
    result = {}
    for name, tensor in state.items():
        if not isinstance(tensor, _Tensor):
            raise WeightsFormatError(f"weights file '{path}': entry '{name}' is not a tensor")
        if tensor.storage.data is None:
            raise WeightsFormatError(f"weights file '{path}': storage of '{name}' has no data")
        result[name] = tensor.to_numpy()
    return result
