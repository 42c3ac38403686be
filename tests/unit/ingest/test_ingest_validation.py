"""Checks of a received dataset before it is archived (ingest/validation.py)."""

from __future__ import annotations

import io
import random
from pathlib import Path

import pytest
from pydicom import dcmread
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, MRImageStorage

from ingest.statuses import Failure
from ingest.validation import InvalidInstance, read_header, validate


def _ct() -> Dataset:
    return dcmread(get_testdata_file("CT_small.dcm"), stop_before_pixels=True)


def _check(ds: Dataset) -> None:
    validate(
        ds,
        requested_sop_class=str(ds.get("SOPClassUID", "")),
        requested_sop_instance=str(ds.get("SOPInstanceUID", "")),
    )


def test_valid_ct_header_is_extracted() -> None:
    """A real CT slice passes and yields UIDs, modality, instance number and one frame."""
    ds = _ct()
    header = validate(ds, requested_sop_class=CTImageStorage, requested_sop_instance=ds.SOPInstanceUID)
    assert header.sop_class_uid == CTImageStorage
    assert header.study_instance_uid == ds.StudyInstanceUID
    assert header.series_instance_uid == ds.SeriesInstanceUID
    assert header.modality == "CT"
    assert header.instance_number == int(ds.InstanceNumber)
    assert header.number_of_frames == 1


def test_enhanced_ct_counts_frames() -> None:
    """An Enhanced CT instance reports its NumberOfFrames."""
    ds = read_header(Path(get_testdata_file("eCT_Supplemental.dcm")))
    header = validate(ds, requested_sop_class=ds.SOPClassUID, requested_sop_instance=ds.SOPInstanceUID)
    assert header.number_of_frames == int(ds.NumberOfFrames) == 2


@pytest.mark.parametrize(
    "keyword", ["SOPClassUID", "SOPInstanceUID", "StudyInstanceUID", "SeriesInstanceUID"]
)
def test_missing_uid_is_rejected(keyword: str) -> None:
    """Each UID the archive path or event needs is required."""
    ds = _ct()
    requested = (str(ds.SOPClassUID), str(ds.SOPInstanceUID))
    delattr(ds, keyword)
    with pytest.raises(InvalidInstance) as caught:
        validate(ds, requested_sop_class=requested[0], requested_sop_instance=requested[1])
    assert caught.value.failure is Failure.MISSING_UID
    assert keyword in caught.value.detail


def test_empty_uid_counts_as_missing() -> None:
    """An empty SOP Instance UID is missing, not valid."""
    ds = _ct()
    ds.SOPInstanceUID = ""
    with pytest.raises(InvalidInstance) as caught:
        _check(ds)
    assert caught.value.failure is Failure.MISSING_UID


def test_path_traversal_uid_is_rejected_without_echoing_it() -> None:
    """A UID with `../` is invalid; the message names the attribute, not the hostile value."""
    ds = _ct()
    ds.StudyInstanceUID = "../../../etc"
    with pytest.raises(InvalidInstance) as caught:
        _check(ds)
    assert caught.value.failure is Failure.INVALID_UID
    assert "StudyInstanceUID" in caught.value.detail
    assert "etc" not in caught.value.detail


def test_sop_class_must_match_the_request() -> None:
    """A dataset that is not of the requested SOP class is refused."""
    ds = _ct()
    with pytest.raises(InvalidInstance) as caught:
        validate(ds, requested_sop_class=MRImageStorage, requested_sop_instance=ds.SOPInstanceUID)
    assert caught.value.failure is Failure.SOP_CLASS_MISMATCH


def test_sop_instance_must_match_the_request() -> None:
    """A dataset whose SOP Instance UID differs from the request's is refused."""
    ds = _ct()
    with pytest.raises(InvalidInstance) as caught:
        validate(ds, requested_sop_class=ds.SOPClassUID, requested_sop_instance="1.2.3")
    assert caught.value.failure is Failure.SOP_INSTANCE_MISMATCH


def test_malformed_instance_number_is_none() -> None:
    """InstanceNumber is informative: a malformed one becomes None instead of a rejection."""
    ds = _ct()
    ds.InstanceNumber = None
    assert (
        validate(
            ds, requested_sop_class=ds.SOPClassUID, requested_sop_instance=ds.SOPInstanceUID
        ).instance_number
        is None
    )


def _file_with_body(body: bytes) -> io.BytesIO:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = CTImageStorage
    meta.MediaStorageSOPInstanceUID = "1.2.3.4"
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    out = io.BytesIO()
    ds.save_as(out, enforce_file_format=True)
    return io.BytesIO(out.getvalue() + body)


def test_garbage_after_file_meta_is_undecodable() -> None:
    """Bytes that are no DICOM dataset raise UNDECODABLE, not a pydicom exception."""
    garbage = bytes(random.Random(7).randrange(256) for _ in range(4096))
    with pytest.raises(InvalidInstance) as caught:
        _check(read_header(_file_with_body(garbage)))
    assert caught.value.failure is Failure.UNDECODABLE


def test_not_dicom_at_all_is_undecodable() -> None:
    """A stream without preamble and file meta is UNDECODABLE."""
    with pytest.raises(InvalidInstance) as caught:
        read_header(io.BytesIO(b"GIF89a" + b"\x00" * 200))
    assert caught.value.failure is Failure.UNDECODABLE
