"""Content checks read lengths and offsets, never the pixel data itself (ingest/content_checks.py)."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydicom.dataset import FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian

from fuzz import datasets
from ingest.content_checks import PIXEL_DATA, check_pixel_data
from ingest.statuses import Failure
from ingest.validation import InvalidInstance, read_header


def _big_file(path: Path, frames: int) -> Path:
    ds = datasets.ct_slice()
    ds.Rows, ds.Columns, ds.NumberOfFrames = 512, 512, frames
    ds.PixelData = bytes(512 * 512 * 2 * frames)
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.save_as(path, enforce_file_format=True)
    return path


def test_pixel_check_leaves_the_pixel_data_unread(tmp_path: Path) -> None:
    """A 4 MiB multi-frame passes, and its pixel data is still deferred afterwards (was read whole)."""
    path = _big_file(tmp_path / "big.dcm", frames=8)
    ds = read_header(path)
    check_pixel_data(ds, transfer_syntax_uid=ExplicitVRLittleEndian, size_bytes=path.stat().st_size)
    assert ds.get_item(PIXEL_DATA, keep_deferred=True).value is None


def test_pixel_data_running_past_the_end_is_refused(tmp_path: Path) -> None:
    """A file cut inside its pixel data (length field intact) is refused, without reading it."""
    path = _big_file(tmp_path / "big.dcm", frames=2)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) - 1000])
    ds = read_header(path)
    with pytest.raises(InvalidInstance) as caught:
        check_pixel_data(ds, transfer_syntax_uid=ExplicitVRLittleEndian, size_bytes=path.stat().st_size)
    assert caught.value.failure is Failure.PIXEL_DATA_INVALID
