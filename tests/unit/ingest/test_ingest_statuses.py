"""The failure -> DICOM status map (ingest/statuses.py)."""

from __future__ import annotations

from pynetdicom.status import code_to_category

from ingest import statuses
from ingest.statuses import STATUS_FOR_FAILURE, Failure


def test_every_failure_has_a_status() -> None:
    """No failure reason can fall through to a default (or success)."""
    assert set(STATUS_FOR_FAILURE) == set(Failure)
    assert statuses.SUCCESS not in STATUS_FOR_FAILURE.values()


def test_every_status_is_a_storage_failure_for_pynetdicom() -> None:
    """Senders read each of our statuses as a Failure, never a Warning or Success."""
    for status in STATUS_FOR_FAILURE.values():
        assert code_to_category(status) == "Failure", hex(status)


def test_our_faults_are_out_of_resources_and_dataset_faults_are_errors() -> None:
    """Archive/broker faults answer A7xx (retry later); bad datasets answer A9xx or Cxxx."""
    for failure in (Failure.ARCHIVE_FAILED, Failure.PUBLISH_FAILED, Failure.INTERNAL_ERROR):
        assert STATUS_FOR_FAILURE[failure] == statuses.OUT_OF_RESOURCES
    for failure in (
        Failure.UNDECODABLE,
        Failure.MISSING_UID,
        Failure.INVALID_UID,
        Failure.SOP_INSTANCE_MISMATCH,
    ):
        assert STATUS_FOR_FAILURE[failure] & 0xF000 == 0xC000
    assert STATUS_FOR_FAILURE[Failure.SOP_CLASS_MISMATCH] & 0xFF00 == 0xA900
