"""One stream record -> one decoded instance (tensors + what the database needs) or a poison verdict.

The worker parses each record once (`parse_event`, in `classifier.worker.intake`); `decode_event`
runs in its decode threads. Everything that can be wrong with one event is turned into
a `PoisonError` here, so the worker never crashes on bad input and never blocks the partition.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import numpy as np
import pydicom
from pydicom.dataset import Dataset
from pydicom.encaps import generate_frames
from pydicom.filereader import read_dataset
from pydicom.uid import UID, DeflatedExplicitVRLittleEndian

from classifier.model.preprocess import Window, dicom_to_frames, to_model_input
from classifier.worker.errors import (
    ArchiveFileChanged,
    ArchiveFileMissing,
    DecodeError,
    InvalidEventError,
    NotClassifiable,
    PoisonError,
)
from common.decodable import (
    CLASSIFIED_MODALITIES,
    DEFAULT_MAX_DECODED_BYTES,
    DEFAULT_MAX_DEFLATE_RATIO,
    NotDecodable,
    check_budget,
    check_frame_header,
    check_supported_image,
    inflate_capped,
    read_file_meta,
)
from common.files import sha256_stream
from common.vocabulary import UID_LENGTH
from storage.archive.reader import ArchiveReader
from storage.stream.contract import Record
from storage.stream.events import InstanceEvent, InvalidEvent

AE_TITLE_LENGTH = 16
ACCESSION_LENGTH = 16
ISSUER_LENGTH = 64


@dataclass(frozen=True, slots=True)
class Preprocessing:
    """What the active model expects: decoded tensors are only valid for the same preprocessing."""

    image_size: int
    window: Window


@dataclass(frozen=True, slots=True)
class DecodedInstance:
    record: Record
    event: InstanceEvent
    accession_number: str | None
    modality: str | None
    tensors: np.ndarray  # float32 [frames, S, S, 3]
    preprocessing: Preprocessing
    accession_number_issuer: str | None = None


@dataclass(frozen=True, slots=True)
class PoisonInstance:
    record: Record
    event: InstanceEvent | None  # None when the message itself is not a valid event
    error: PoisonError


Outcome = DecodedInstance | PoisonInstance


@dataclass(frozen=True, slots=True)
class DecodeLimits:
    """How far one instance may decode: the listener's memory budget (`common.decodable`)."""

    max_decoded_bytes: int = DEFAULT_MAX_DECODED_BYTES
    max_deflate_ratio: int = DEFAULT_MAX_DEFLATE_RATIO


# What the worker's decode threads run (`decode_event`, or it under the settings' memory budget).
Decode = Callable[[Record, InstanceEvent, Preprocessing, ArchiveReader], Outcome]


def parse_event(record: Record) -> InstanceEvent:
    """The record's instance event; invalid JSON, schema or field values raise `InvalidEventError`."""
    try:
        event = InstanceEvent.from_json(record.value)
    except InvalidEvent as exc:
        raise InvalidEventError(str(exc)) from exc
    for name in ("study_instance_uid", "series_instance_uid", "sop_instance_uid", "sop_class_uid"):
        value = getattr(event, name)
        if not isinstance(value, str) or not 0 < len(value) <= UID_LENGTH:
            raise InvalidEventError(f"{name} is not a UID of at most {UID_LENGTH} characters")
    if not isinstance(event.archive_uri, str) or not event.archive_uri:
        raise InvalidEventError("archive_uri is empty")
    if event.calling_ae is not None and len(event.calling_ae) > AE_TITLE_LENGTH:
        raise InvalidEventError("calling_ae is longer than an AE title")
    if not isinstance(event.number_of_frames, int) or event.number_of_frames < 1:
        raise InvalidEventError("number_of_frames must be a positive integer")
    if not isinstance(event.size_bytes, int) or event.size_bytes < 0:
        raise InvalidEventError("size_bytes must be a non-negative integer")
    return event


def as_reader(archive: Path | ArchiveReader) -> ArchiveReader:
    """A reader for `archive`; a local folder (tools, fuzzing and tests decode single files) is read
    as an archive without an object store."""
    return archive if isinstance(archive, ArchiveReader) else ArchiveReader(archive)


def _accession(ds: Dataset) -> str | None:
    value = str(ds.get("AccessionNumber", "") or "").strip()
    # A value longer than its VR allows is malformed; storing nothing beats storing a truncation.
    return value if 0 < len(value) <= ACCESSION_LENGTH else None


def _accession_issuer(ds: Dataset) -> str | None:
    """The Issuer of Accession Number Sequence's local namespace, else its universal entity ID."""
    items = ds.get("IssuerOfAccessionNumberSequence") or []
    if not items:
        return None
    item = items[0]
    for keyword in ("LocalNamespaceEntityID", "UniversalEntityID"):
        value = str(item.get(keyword, "") or "").strip()
        if 0 < len(value) <= ISSUER_LENGTH:
            return value
    return None


def read_archived(
    event: InstanceEvent,
    archive: Path | ArchiveReader,
    *,
    max_decoded_bytes: int = DEFAULT_MAX_DECODED_BYTES,
    max_deflate_ratio: int = DEFAULT_MAX_DEFLATE_RATIO,
) -> Dataset:
    """The archived dataset (a local file or an object), after checking it is what the event announced.
    A deflated dataset is inflated in a stream, never past `max_decoded_bytes` (nor, once large,
    past `max_deflate_ratio` times its deflated size)."""
    try:
        with as_reader(archive).open(event.archive_uri) as f:
            actual = sha256_stream(f)
            if actual != event.sha256:
                raise ArchiveFileChanged("archived file's sha256 differs from the event's")
            f.seek(0)
            ds = _dcmread(f, max_decoded_bytes, max_deflate_ratio)
    except OSError as exc:
        raise ArchiveFileMissing(f"archived file cannot be read: {type(exc).__name__}") from exc
    if str(ds.get("SOPInstanceUID", "")) != event.sop_instance_uid:
        raise ArchiveFileChanged("archived file holds another SOP Instance UID than the event")
    return ds


def _dcmread(f: IO[bytes], max_decoded_bytes: int, max_deflate_ratio: int) -> Dataset:
    try:
        if _is_deflated(f):
            return _read_deflated(f, max_decoded_bytes, max_deflate_ratio)
        return pydicom.dcmread(f)  # reads every element now (no deferred reads of a closed source)
    except OSError:
        raise
    except NotDecodable as exc:
        raise DecodeError(str(exc)) from exc
    except Exception as exc:  # pydicom raises many types for damaged files; all mean "not decodable"
        raise DecodeError(f"not a readable DICOM file: {type(exc).__name__}") from exc


def _is_deflated(f: IO[bytes]) -> bool:
    """Whether the file meta names Deflated Explicit VR Little Endian (pydicom would inflate it whole)."""
    try:
        return bool(read_file_meta(f).get("TransferSyntaxUID") == DeflatedExplicitVRLittleEndian)
    except NotDecodable:
        return False  # let dcmread say what is wrong with it
    finally:
        f.seek(0)


def _read_deflated(f: IO[bytes], max_decoded_bytes: int, max_deflate_ratio: int) -> Dataset:
    meta = read_file_meta(f)
    inflated = io.BytesIO()
    inflate_capped(f, inflated, max_decoded_bytes, max_ratio=max_deflate_ratio)
    inflated.seek(0)
    ds = read_dataset(inflated, is_implicit_VR=False, is_little_endian=True)
    ds.file_meta = meta
    ds.set_original_encoding(False, True, None)
    return ds


def check_decodable(ds: Dataset, max_decoded_bytes: int) -> None:
    """`DecodeError` before any pixel decoding when the instance is not an image the classifier
    decodes, or decoding would exceed the budget; the same definitions as the listener's checks."""
    try:
        check_supported_image(ds)
        check_budget(ds, max_decoded_bytes)
        syntax = UID(str(ds.file_meta.get("TransferSyntaxUID", "")))
        if syntax.is_encapsulated and "PixelData" in ds:
            frames = int(ds.get("NumberOfFrames", 1) or 1)
            for frame in generate_frames(ds.PixelData, number_of_frames=frames):
                check_frame_header(
                    frame,
                    rows=int(ds.Rows),
                    columns=int(ds.Columns),
                    samples=int(ds.get("SamplesPerPixel", 1)),
                )
    except NotDecodable as exc:
        raise DecodeError(str(exc)) from exc


def decode_record(
    record: Record,
    preprocessing: Preprocessing,
    archive: Path | ArchiveReader,
    *,
    max_decoded_bytes: int = DEFAULT_MAX_DECODED_BYTES,
    max_deflate_ratio: int = DEFAULT_MAX_DEFLATE_RATIO,
) -> Outcome:
    """Parse one record and decode it (`decode_event`): for tools and tests that start from raw bytes."""
    try:
        event = parse_event(record)
    except InvalidEventError as exc:
        return PoisonInstance(record, None, exc)
    limits = DecodeLimits(max_decoded_bytes, max_deflate_ratio)
    return decode_event(record, event, preprocessing, as_reader(archive), limits)


def decode_event(
    record: Record,
    event: InstanceEvent,
    pre: Preprocessing,
    archive: ArchiveReader,
    limits: DecodeLimits = DecodeLimits(),
) -> Outcome:
    """Decode the instance a parsed event announces into model tensors, or say why it can never be processed."""
    max_decoded_bytes = limits.max_decoded_bytes
    try:
        ds = read_archived(
            event, archive, max_decoded_bytes=max_decoded_bytes, max_deflate_ratio=limits.max_deflate_ratio
        )
        modality = str(ds.get("Modality", "") or "") or None
        if modality not in CLASSIFIED_MODALITIES:
            raise NotClassifiable(f"modality {modality or 'missing'} is not classified (CT only)")
        check_decodable(ds, max_decoded_bytes)
        frames = dicom_to_frames(ds, pre.window)
        tensors = to_model_input(frames, pre.image_size)
        return DecodedInstance(record, event, _accession(ds), modality, tensors, pre, _accession_issuer(ds))
    except PoisonError as exc:
        return PoisonInstance(record, event, exc)
    except (ValueError, TypeError, AttributeError, KeyError, IndexError) as exc:
        # Malformed attributes surface as these from deep inside pydicom/numpy: this file's fault.
        return PoisonInstance(record, event, DecodeError(f"{type(exc).__name__}: {exc}"))
