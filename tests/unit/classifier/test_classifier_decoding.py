"""One record to tensors or to a poison verdict with the right state and reason."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
from classifier_kit import write_instance

from classifier.model.preprocess import KIDNEY_WINDOW
from classifier.worker.decoding import (
    DecodedInstance,
    PoisonInstance,
    Preprocessing,
    decode_record,
    parse_event,
)
from classifier.worker.errors import (
    ArchiveFileChanged,
    ArchiveFileMissing,
    DecodeError,
    InvalidEventError,
    NotClassifiable,
)
from storage.stream.contract import Record

PRE = Preprocessing(image_size=32, window=KIDNEY_WINDOW)


def record(value: bytes, offset: int = 0) -> Record:
    return Record("instances", 0, offset, b"key", value)


def test_ct_instance_decodes_with_its_accession_number(tmp_path: Path) -> None:
    """A CT file gives [frames, 32, 32, 3] tensors and the AccessionNumber read from the file."""
    event = write_instance(tmp_path, accession="A-77")
    outcome = decode_record(record(event.to_json()), PRE, tmp_path)
    assert isinstance(outcome, DecodedInstance)
    assert outcome.tensors.shape == (1, 32, 32, 3) and outcome.tensors.dtype == np.float32
    assert outcome.accession_number == "A-77" and outcome.modality == "CT"


def test_multiframe_ct_gives_one_tensor_per_frame(tmp_path: Path) -> None:
    """The enhanced CT with two frames decodes into two tensors."""
    event = write_instance(tmp_path, source="eCT_Supplemental.dcm")
    outcome = decode_record(record(event.to_json()), PRE, tmp_path)
    assert isinstance(outcome, DecodedInstance) and outcome.tensors.shape[0] == 2


def test_relative_archive_path_is_resolved_in_the_archive(tmp_path: Path) -> None:
    """An archive URI that is a relative path is found under the archive folder."""
    event = write_instance(tmp_path)
    relative = Path(event.archive_uri.removeprefix("file://")).relative_to(tmp_path)
    event = dataclasses.replace(event, archive_uri=str(relative))
    assert isinstance(decode_record(record(event.to_json()), PRE, tmp_path), DecodedInstance)


@pytest.mark.parametrize(
    ("value", "match"),
    [
        (b"\xff\xfe garbage", "not JSON"),
        (b"[1, 2]", "not a JSON object"),
        (b'{"schema_version": 99}', "schema_version"),
    ],
)
def test_invalid_messages_are_poison(value: bytes, match: str) -> None:
    """Messages that are not events are InvalidEventError, with no event to mark."""
    outcome = decode_record(record(value), PRE, Path("/nonexistent"))
    assert isinstance(outcome, PoisonInstance) and outcome.event is None
    assert isinstance(outcome.error, InvalidEventError) and match in str(outcome.error)


def test_overlong_uid_is_an_invalid_event(tmp_path: Path) -> None:
    """A UID longer than 64 characters cannot be stored: invalid event."""
    event = dataclasses.replace(write_instance(tmp_path), sop_instance_uid="1." * 40)
    with pytest.raises(InvalidEventError, match="sop_instance_uid"):
        parse_event(record(event.to_json()))


def test_bad_received_time_is_an_invalid_event(tmp_path: Path) -> None:
    """received_at must be ISO 8601."""
    data = json.loads(write_instance(tmp_path).to_json())
    data["received_at"] = "yesterday"
    with pytest.raises(InvalidEventError, match="received_at"):
        parse_event(record(json.dumps(data).encode()))


def test_missing_file_fails_the_instance(tmp_path: Path) -> None:
    """A deleted archive file is ArchiveFileMissing; the instance will be marked failed."""
    event = write_instance(tmp_path)
    Path(event.archive_uri.removeprefix("file://")).unlink()
    outcome = decode_record(record(event.to_json()), PRE, tmp_path)
    assert isinstance(outcome, PoisonInstance) and isinstance(outcome.error, ArchiveFileMissing)
    assert outcome.error.state == "failed" and outcome.event == event


def test_changed_file_fails_the_instance(tmp_path: Path) -> None:
    """A file whose sha256 differs from the event's is not trusted."""
    event = write_instance(tmp_path)
    with open(event.archive_uri.removeprefix("file://"), "ab") as f:
        f.write(b"\x00")
    outcome = decode_record(record(event.to_json()), PRE, tmp_path)
    assert isinstance(outcome, PoisonInstance) and isinstance(outcome.error, ArchiveFileChanged)


def test_non_ct_is_skipped_not_failed(tmp_path: Path) -> None:
    """An MR image is a valid instance this model does not classify: skipped."""
    event = write_instance(tmp_path, source="MR_small.dcm")
    outcome = decode_record(record(event.to_json()), PRE, tmp_path)
    assert isinstance(outcome, PoisonInstance) and isinstance(outcome.error, NotClassifiable)
    assert outcome.error.state == "skipped" and "MR" in outcome.error.reason


def test_undecodable_pixels_fail_the_instance(tmp_path: Path) -> None:
    """A CT whose JPEG 2000 stream is truncated fails with a decode reason."""
    event = write_instance(tmp_path, source="emri_small_jpeg_2k_lossless_too_short.dcm", modality="CT")
    outcome = decode_record(record(event.to_json()), PRE, tmp_path)
    assert isinstance(outcome, PoisonInstance) and isinstance(outcome.error, DecodeError)
    assert outcome.error.state == "failed"
