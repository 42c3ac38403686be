"""Datasets that cannot be right are refused with a failure status over a real association."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from ingest_support import MemoryPublisher, listener_settings, running_listener
from pydicom.uid import (
    CTImageStorage,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    MRImageStorage,
)

from fuzz import datasets, wire
from ingest import statuses
from ingest.listener import Listener

CONTEXTS = [(CTImageStorage, [ExplicitVRLittleEndian]), (CTImageStorage, [ImplicitVRLittleEndian])]


@pytest.fixture
def listener(tmp_path: Path) -> Iterator[tuple[Listener, MemoryPublisher]]:
    publisher = MemoryPublisher()
    with running_listener(listener_settings(tmp_path / "archive"), publisher) as (running, _metrics):
        yield running, publisher


def _store(port: int, dataset: bytes, *, sop_class: str, sop_instance: str, syntax: str) -> int | None:
    contexts = [(CTImageStorage, [ExplicitVRLittleEndian]), (CTImageStorage, [ImplicitVRLittleEndian])]
    if syntax == JPEG2000Lossless:
        contexts = [(CTImageStorage, [JPEG2000Lossless])]
    assoc = wire.associate(port, contexts)
    assert assoc.is_established
    try:
        cx = wire.context_id_for(assoc, CTImageStorage, syntax)
        return wire.raw_store(assoc, cx, sop_class=sop_class, sop_instance=sop_instance, dataset=dataset)
    finally:
        assoc.release()


def test_valid_slice_over_raw_store_succeeds(listener: tuple[Listener, MemoryPublisher]) -> None:
    """The control case: the unmodified slice is stored (so the refusals below are about the change)."""
    running, publisher = listener
    ds = datasets.ct_slice()
    data = datasets.encode(ds, implicit=False)
    status = _store(
        running.port,
        data,
        sop_class=CTImageStorage,
        sop_instance=ds.SOPInstanceUID,
        syntax=ExplicitVRLittleEndian,
    )
    assert status == statuses.SUCCESS and len(publisher.records) == 1


def test_other_sop_class_on_the_ct_context_is_refused(listener: tuple[Listener, MemoryPublisher]) -> None:
    """An MR dataset (command saying MR too) sent on the CT context gets 0xA900, nothing published."""
    running, publisher = listener
    ds = datasets.ct_slice()
    ds.SOPClassUID = MRImageStorage
    status = _store(
        running.port,
        datasets.encode(ds, implicit=False),
        sop_class=MRImageStorage,
        sop_instance=ds.SOPInstanceUID,
        syntax=ExplicitVRLittleEndian,
    )
    assert status == statuses.DATASET_DOES_NOT_MATCH_SOP_CLASS and publisher.records == []


def test_short_native_pixel_data_is_refused(listener: tuple[Listener, MemoryPublisher]) -> None:
    """Native pixel data shorter than Rows x Columns x Bits gets 0xC004."""
    running, publisher = listener
    ds = datasets.truncated_pixels(datasets.ct_slice(), keep=1000)
    status = _store(
        running.port,
        datasets.encode(ds, implicit=False),
        sop_class=CTImageStorage,
        sop_instance=ds.SOPInstanceUID,
        syntax=ExplicitVRLittleEndian,
    )
    assert status == statuses.CANNOT_UNDERSTAND_PIXEL_DATA and publisher.records == []


def test_explicit_vr_dataset_on_an_implicit_context_is_refused(
    listener: tuple[Listener, MemoryPublisher],
) -> None:
    """A dataset in explicit VR sent where implicit VR was negotiated gets 0xC005."""
    running, publisher = listener
    ds = datasets.ct_slice()
    status = _store(
        running.port,
        datasets.encode(ds, implicit=False),
        sop_class=CTImageStorage,
        sop_instance=ds.SOPInstanceUID,
        syntax=ImplicitVRLittleEndian,
    )
    assert status == statuses.CANNOT_UNDERSTAND_ENCODING and publisher.records == []


def test_uid_sent_with_another_vr_is_refused(listener: tuple[Listener, MemoryPublisher]) -> None:
    """A StudyInstanceUID encoded as LO (not UI) gets 0xC002 rather than being taken with str()."""
    running, publisher = listener
    ds = datasets.ct_slice()
    ds = datasets.with_element(ds, "StudyInstanceUID", "LO", ds.StudyInstanceUID)
    status = _store(
        running.port,
        datasets.encode(ds, implicit=False),
        sop_class=CTImageStorage,
        sop_instance=ds.SOPInstanceUID,
        syntax=ExplicitVRLittleEndian,
    )
    assert status == statuses.CANNOT_UNDERSTAND_INVALID_UID and publisher.records == []


def test_jpeg2000_with_random_payload_is_refused(listener: tuple[Listener, MemoryPublisher]) -> None:
    """JPEG 2000 with valid headers and a random payload: its first frame does not decode, 0xC004."""
    running, publisher = listener
    ds = datasets.j2k_with_random_payload(datasets.j2k_slice())
    status = _store(
        running.port,
        datasets.encode(ds, implicit=False),
        sop_class=CTImageStorage,
        sop_instance=ds.SOPInstanceUID,
        syntax=JPEG2000Lossless,
    )
    assert status == statuses.CANNOT_UNDERSTAND_PIXEL_DATA and publisher.records == []
