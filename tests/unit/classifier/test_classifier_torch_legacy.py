"""Torch legacy-format state dicts read without torch; anything but named tensors refused before it runs.

The files are written here with torch.save's legacy byte layout (five pickles and raw storages) by a
stand-in `torch` module, so no torch is needed: a shared storage with offsets and a transposed view,
a float16 and an int64 scalar tensor, and files that are hostile, truncated or inconsistent.
"""

from __future__ import annotations

import collections
import io
import os
import pickle
import struct
import sys
import types
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from classifier.model.torch_legacy import LEGACY_MAGIC, TorchFileError, read_state_dict

SYS_INFO = {"protocol_version": 1001, "little_endian": True, "type_sizes": {"short": 2, "int": 4, "long": 4}}


@dataclass(eq=False)
class _Storage:
    key: str
    data: np.ndarray  # little-endian, 1-D


@dataclass
class _Tensor:
    storage: _Storage
    offset: int
    size: tuple[int, ...]
    stride: tuple[int, ...]

    def __reduce__(self) -> tuple[Any, ...]:
        rebuild = sys.modules["torch._utils"]._rebuild_tensor_v2
        return rebuild, (self.storage, self.offset, self.size, self.stride, False, collections.OrderedDict())


@pytest.fixture
def fake_torch(monkeypatch: pytest.MonkeyPatch) -> Iterator[types.ModuleType]:
    """Modules named torch and torch._utils, so that pickle writes the globals torch.save writes."""
    torch, utils = types.ModuleType("torch"), types.ModuleType("torch._utils")

    def _rebuild_tensor_v2(*args: Any) -> None:  # never called: only its name is pickled
        raise AssertionError

    _rebuild_tensor_v2.__module__, _rebuild_tensor_v2.__qualname__ = "torch._utils", "_rebuild_tensor_v2"
    utils._rebuild_tensor_v2 = _rebuild_tensor_v2  # type: ignore[attr-defined]
    for name in ("FloatStorage", "HalfStorage", "LongStorage"):
        setattr(torch, name, type(name, (), {"__module__": "torch"}))
    torch._utils = utils  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "torch", torch)
    monkeypatch.setitem(sys.modules, "torch._utils", utils)
    yield torch


STORAGE_TYPES = {"<f4": "FloatStorage", "<f2": "HalfStorage", "<i8": "LongStorage"}


def legacy_bytes(state: Any, storages: list[_Storage], *, keys: list[str] | None = None) -> bytes:
    """torch.save(state, f, _use_new_zipfile_serialization=False)'s layout, given the storages' order."""
    torch = sys.modules["torch"]

    class _Pickler(pickle.Pickler):
        def persistent_id(self, obj: Any) -> Any:
            if isinstance(obj, _Storage):
                storage_type = getattr(torch, STORAGE_TYPES[obj.data.dtype.str])
                return ("storage", storage_type, obj.key, "cpu", len(obj.data), None)
            return None

    buf = io.BytesIO()
    for header in (LEGACY_MAGIC, 1001, SYS_INFO):
        pickle.dump(header, buf, protocol=2)
    _Pickler(buf, protocol=2).dump(state)
    pickle.dump(keys if keys is not None else [s.key for s in storages], buf, protocol=2)
    for s in storages:
        buf.write(struct.pack("<q", len(s.data)) + s.data.tobytes())
    return buf.getvalue()


def _example() -> tuple[collections.OrderedDict[str, _Tensor], list[_Storage]]:
    shared = _Storage("140", np.arange(14, dtype="<f4"))
    half = _Storage("7", np.array([0.5, -2.0, 3.25], dtype="<f2"))
    count = _Storage("9", np.array([123], dtype="<i8"))
    state = collections.OrderedDict(
        [
            ("conv.weight", _Tensor(shared, 2, (3, 4), (4, 1))),  # elements 2..13 as 3x4
            ("conv.weight_t", _Tensor(shared, 2, (4, 3), (1, 4))),  # the same, transposed
            ("bias", _Tensor(shared, 0, (2,), (1,))),
            ("half", _Tensor(half, 1, (2,), (1,))),
            ("bn.num_batches_tracked", _Tensor(count, 0, (), ())),
        ]
    )
    return state, [count, shared, half]  # data in the key list's order, not the dict's


def test_tensors_come_back_with_offsets_strides_and_dtypes(fake_torch: types.ModuleType) -> None:
    """Every tensor is its storage's (offset, size, stride) window, as an owned array of its dtype."""
    state, storages = _example()
    sd = read_state_dict(legacy_bytes(state, storages))
    expected = np.arange(2, 14, dtype=np.float32).reshape(3, 4)
    assert list(sd) == list(state)
    np.testing.assert_array_equal(sd["conv.weight"], expected)
    np.testing.assert_array_equal(sd["conv.weight_t"], expected.T)
    np.testing.assert_array_equal(sd["bias"], [0.0, 1.0])
    assert sd["half"].dtype == np.float16 and sd["half"].tolist() == [-2.0, 3.25]
    assert sd["bn.num_batches_tracked"].shape == () and int(sd["bn.num_batches_tracked"]) == 123
    assert sd["conv.weight_t"].flags.owndata and sd["conv.weight_t"].flags.writeable


def test_a_path_reads_like_bytes(fake_torch: types.ModuleType, tmp_path: Path) -> None:
    state, storages = _example()
    (tmp_path / "w.pth").write_bytes(legacy_bytes(state, storages))
    assert set(read_state_dict(tmp_path / "w.pth")) == set(state)


class _Hostile:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return os.system, (f"touch {self.marker}",)


def test_a_pickle_naming_any_other_callable_is_refused_before_it_runs(
    fake_torch: types.ModuleType, tmp_path: Path
) -> None:
    """A state dict whose pickle would call os.system: refused by name, and the command never ran."""
    marker = tmp_path / "ran"
    state, storages = _example()
    hostile = legacy_bytes(collections.OrderedDict(state, evil=_Hostile(marker)), storages)
    with pytest.raises(TorchFileError, match=r"refusing (posix|os|nt)\.system"):
        read_state_dict(hostile)
    assert not marker.exists()


def test_a_hostile_header_is_refused_too(fake_torch: types.ModuleType, tmp_path: Path) -> None:
    """The small header pickles go through the same restricted unpickler as the state dict."""
    marker = tmp_path / "ran"
    with pytest.raises(TorchFileError, match="refusing"):
        read_state_dict(pickle.dumps(_Hostile(marker), protocol=2))
    assert not marker.exists()


def test_other_objects_in_the_dict_are_refused(fake_torch: types.ModuleType) -> None:
    state, storages = _example()
    with pytest.raises(TorchFileError, match="not named tensors: epoch"):
        read_state_dict(legacy_bytes(collections.OrderedDict(state, epoch=3), storages))
    with pytest.raises(TorchFileError, match="holds a list, not a state dict"):
        read_state_dict(legacy_bytes([1, 2], []))


def test_zip_format_and_foreign_files_are_refused() -> None:
    with pytest.raises(TorchFileError, match="zip-format"):
        read_state_dict(b"PK\x03\x04" + b"\0" * 40)
    with pytest.raises(TorchFileError, match="wrong magic number"):
        read_state_dict(pickle.dumps(42, protocol=2))
    with pytest.raises(TorchFileError, match="not a readable pickle"):
        read_state_dict(b"\x00\x01garbage")


def test_truncated_or_inconsistent_storages_are_refused(fake_torch: types.ModuleType) -> None:
    state, storages = _example()
    good = legacy_bytes(state, storages)
    with pytest.raises(TorchFileError, match="ends inside storage"):
        read_state_dict(good[:-3])
    with pytest.raises(TorchFileError, match="key list does not match"):
        read_state_dict(legacy_bytes(state, storages, keys=["140", "7"]))
    state["too_far"] = _Tensor(storages[1], 10, (2, 3), (3, 1))
    with pytest.raises(TorchFileError, match="too_far reaches element 15 of a storage of 14"):
        read_state_dict(legacy_bytes(state, storages))
    state["too_far"] = _Tensor(storages[1], 0, (10**6,), (0,))  # one element, expanded
    with pytest.raises(TorchFileError, match="more elements than its storage"):
        read_state_dict(legacy_bytes(state, storages))
