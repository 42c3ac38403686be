"""Checks a received dataset before anything is stored: the UIDs the archive path and the event
are built from must be present and valid, and the dataset must be what the request said it is.

Values larger than 64 KiB (the pixel data) are deferred, not read, so checking a 1 GB
multi-frame instance reads a few kilobytes; the pixel data's length and offset stay known for
`content_checks`. Messages name attributes, never their values: a hostile value stays out of logs.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from pydicom import dcmread
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset

from common.vocabulary import is_valid_uid
from ingest.statuses import Failure

REQUIRED_UIDS = ("SOPClassUID", "SOPInstanceUID", "StudyInstanceUID", "SeriesInstanceUID")
# Elements larger than this are not read while checking (there should be none before pixels).
_DEFER_BYTES = 64 * 1024


class InvalidInstance(Exception):
    """A dataset that can never be stored as it is; `failure` picks the DICOM status."""

    def __init__(self, failure: Failure, detail: str) -> None:
        super().__init__(detail)
        self.failure = failure
        self.detail = detail


@contextmanager
def invalid_if_raises(failure: Failure, what: str) -> Iterator[None]:
    """Any exception inside as `InvalidInstance(failure, "<what>: <exception type>")`: pydicom and
    the decoders raise many types for corrupt input, and the type (never the message, which may
    quote a value) is what a reader of the log needs."""
    try:
        yield
    except Exception as exc:  # noqa: BLE001 - see above
        raise InvalidInstance(failure, f"{what}: {type(exc).__name__}") from exc


@dataclass(frozen=True, slots=True)
class InstanceHeader:
    sop_class_uid: str
    sop_instance_uid: str
    study_instance_uid: str
    series_instance_uid: str
    modality: str | None
    instance_number: int | None
    number_of_frames: int


def read_header(source: Path | BinaryIO) -> Dataset:
    """The dataset, large values deferred; `InvalidInstance(UNDECODABLE)` when it cannot be parsed."""
    with invalid_if_raises(Failure.UNDECODABLE, "dataset cannot be decoded"):
        return dcmread(source, defer_size=_DEFER_BYTES)


def validate(
    ds: Dataset,
    *,
    requested_sop_class: str,
    requested_sop_instance: str,
    context_sop_class: str | None = None,
) -> InstanceHeader:
    """The header of a dataset fit to archive, or `InvalidInstance` saying what is wrong."""
    values = {keyword: _uid_as_received(ds, keyword) for keyword in REQUIRED_UIDS}
    missing = [keyword for keyword, value in values.items() if not value]
    if len(missing) == len(REQUIRED_UIDS):
        # pydicom reads junk leniently (one bogus element); a dataset with none of them is no dataset.
        raise InvalidInstance(Failure.UNDECODABLE, "no DICOM dataset: none of the required UIDs found")
    if missing:
        raise InvalidInstance(Failure.MISSING_UID, f"missing {', '.join(missing)}")
    invalid = [
        keyword for keyword, value in values.items() if not is_valid_uid(value) or _vr(ds, keyword) != "UI"
    ]
    if invalid:
        raise InvalidInstance(Failure.INVALID_UID, f"invalid UID syntax in {', '.join(invalid)}")
    if values["SOPClassUID"] != requested_sop_class:
        raise InvalidInstance(
            Failure.SOP_CLASS_MISMATCH, "SOPClassUID of the dataset differs from the request's"
        )
    if context_sop_class is not None and values["SOPClassUID"] != context_sop_class:
        # The command's class is the sender's claim; the context is what we agreed to accept.
        raise InvalidInstance(
            Failure.SOP_CLASS_MISMATCH,
            "SOPClassUID of the dataset differs from the presentation context's abstract syntax",
        )
    if values["SOPInstanceUID"] != requested_sop_instance:
        raise InvalidInstance(
            Failure.SOP_INSTANCE_MISMATCH, "SOPInstanceUID of the dataset differs from the request's"
        )
    return InstanceHeader(
        sop_class_uid=values["SOPClassUID"],
        sop_instance_uid=values["SOPInstanceUID"],
        study_instance_uid=values["StudyInstanceUID"],
        series_instance_uid=values["SeriesInstanceUID"],
        modality=_text(_get(ds, "Modality")) or None,
        instance_number=_integer(_get(ds, "InstanceNumber")),
        number_of_frames=max(_integer(_get(ds, "NumberOfFrames")) or 1, 1),
    )


def _get(ds: Dataset, keyword: str) -> Any:
    """One element's value; pydicom converts values lazily, so a corrupt one fails only here."""
    with invalid_if_raises(Failure.UNDECODABLE, f"{keyword} cannot be decoded"):
        return ds.get(keyword)


def _vr(ds: Dataset, keyword: str) -> str:
    """The element's VR as received (explicit VR) or from the dictionary (implicit VR)."""
    try:
        return str(ds[keyword].VR)
    except Exception:  # noqa: BLE001 - pydicom raises many types for corrupt input
        return ""


def _uid_as_received(ds: Dataset, keyword: str) -> str:
    """A UID element's value as its bytes came, less the one trailing NUL pad PS3.5 6.2 allows.

    pydicom strips trailing spaces and NULs when it converts a UI value, and a leading space or a
    trailing newline would then be stripped here: the instance would be filed under a UID that is
    not the one its archived bytes carry. So the raw bytes are judged, and anything else is invalid.
    """
    with invalid_if_raises(Failure.UNDECODABLE, f"{keyword} cannot be decoded"):
        element = ds.get_item(keyword)
    if element is None:
        return ""
    if isinstance(element, RawDataElement) and isinstance(element.value, bytes):
        raw = element.value
        return (raw[:-1] if raw.endswith(b"\x00") else raw).decode("latin-1")
    value = _get(ds, keyword)  # built in memory (or converted already): the value as it was set
    return "" if value is None else str(value)


def _text(value: Any) -> str:
    if value is None:
        return ""
    return str(value).strip()


def _integer(value: Any) -> int | None:
    """An IS value as int; a missing or malformed one is None (it is informative, not required)."""
    if value is None or value == "":
        return None
    try:
        return int(value)
    except (TypeError, ValueError):
        return None
