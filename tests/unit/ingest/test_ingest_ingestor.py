"""One instance through check, durable archive and acknowledged publish (ingest/ingestor.py)."""

from __future__ import annotations

import datetime as dt
import io
import shutil
from pathlib import Path

import pytest
from ingest_support import MemoryPublisher
from prometheus_client import CollectorRegistry
from pydicom import dcmread
from pydicom.data import get_testdata_file
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian
from structlog.testing import capture_logs

from ingest import statuses
from ingest.ingestor import Ingestor, ReceivedInstance
from ingest.metrics import IngestMetrics
from storage.archive import Archive
from storage.events import InstanceEvent
from storage.stream import StreamUnavailable

TOPIC = "kidneyct.instances"
NOW = dt.datetime(2024, 5, 1, 12, 30, tzinfo=dt.UTC)


def _ingestor(
    tmp_path: Path, publisher: MemoryPublisher, *, max_bytes: int = 10**9
) -> tuple[Ingestor, IngestMetrics]:
    metrics = IngestMetrics(CollectorRegistry())
    ingestor = Ingestor(
        archive=Archive(tmp_path / "archive"),
        publisher=publisher,
        topic=TOPIC,
        metrics=metrics,
        max_instance_bytes=max_bytes,
        clock=lambda: NOW,
    )
    return ingestor, metrics


def _received(tmp_path: Path, name: str = "CT_small.dcm") -> ReceivedInstance:
    """A copy of a real file, as pynetdicom's chunked receive leaves it."""
    path = tmp_path / "received.dcm"
    shutil.copyfile(get_testdata_file(name), path)
    ds = dcmread(path, stop_before_pixels=True)
    return ReceivedInstance(
        source=path,
        size_bytes=path.stat().st_size,
        requested_sop_class=str(ds.SOPClassUID),
        requested_sop_instance=str(ds.SOPInstanceUID),
        transfer_syntax_uid=str(ds.file_meta.TransferSyntaxUID),
        calling_ae="PACS",
    )


def _value(metrics: IngestMetrics, name: str, **labels: str) -> float:
    return metrics.registry.get_sample_value(name, labels) or 0.0


def test_success_archives_then_publishes_one_event(tmp_path: Path) -> None:
    """Success: the file is archived and exactly one complete event is published, keyed by study."""
    publisher = MemoryPublisher()
    ingestor, metrics = _ingestor(tmp_path, publisher)
    received = _received(tmp_path)
    original = received.source.read_bytes()  # type: ignore[union-attr]
    assert ingestor.ingest(received) == statuses.SUCCESS
    [(topic, key, value)] = publisher.records
    event = InstanceEvent.from_json(value)
    ds = dcmread(get_testdata_file("CT_small.dcm"), stop_before_pixels=True)
    assert topic == TOPIC
    assert key == str(ds.StudyInstanceUID).encode() == event.key
    assert (event.study_instance_uid, event.series_instance_uid, event.sop_instance_uid) == (
        ds.StudyInstanceUID,
        ds.SeriesInstanceUID,
        ds.SOPInstanceUID,
    )
    assert event.sop_class_uid == CTImageStorage
    assert event.transfer_syntax_uid == ExplicitVRLittleEndian
    assert event.modality == "CT"
    assert event.calling_ae == "PACS"
    assert event.received_at == NOW.isoformat()
    assert event.number_of_frames == 1
    assert event.instance_number == int(ds.InstanceNumber)
    archived = Path(event.archive_uri.removeprefix("file://"))
    assert archived.read_bytes() == original
    assert event.size_bytes == len(original)
    assert _value(metrics, "kidneyct_ingest_instances_stored_total") == 1
    assert _value(metrics, "kidneyct_ingest_received_bytes_total") == len(original)


def test_event_and_logs_carry_no_patient_data(tmp_path: Path) -> None:
    """Neither the event nor any log line contains the patient's name, ID or birth date."""
    publisher = MemoryPublisher()
    ingestor, _ = _ingestor(tmp_path, publisher)
    ds = dcmread(get_testdata_file("CT_small.dcm"), stop_before_pixels=True)
    secrets = [str(ds.PatientName), str(ds.PatientID)]
    with capture_logs() as logs:
        assert ingestor.ingest(_received(tmp_path)) == statuses.SUCCESS
    event_text = publisher.records[0][2].decode()
    log_text = repr(logs)
    for secret in secrets:
        assert secret and secret not in event_text and secret not in log_text
    assert [entry["event"] for entry in logs] == ["instance_stored"]


def test_broker_failure_answers_out_of_resources(tmp_path: Path) -> None:
    """When the publish is not acknowledged the answer is 0xA700, never success."""
    publisher = MemoryPublisher(failure=StreamUnavailable("broker down"))
    ingestor, metrics = _ingestor(tmp_path, publisher)
    with capture_logs() as logs:
        assert ingestor.ingest(_received(tmp_path)) == statuses.OUT_OF_RESOURCES
    assert publisher.records == []
    assert logs[-1]["event"] == "instance_rejected" and logs[-1]["reason"] == "publish_failed"
    assert logs[-1]["log_level"] == "error"
    assert _value(metrics, "kidneyct_ingest_instances_rejected_total", reason="publish_failed") == 1
    assert _value(metrics, "kidneyct_ingest_instances_stored_total") == 0


def test_archive_failure_answers_out_of_resources_and_publishes_nothing(tmp_path: Path) -> None:
    """An archive that cannot be written answers 0xA700 and no event goes out."""
    publisher = MemoryPublisher()
    ingestor, metrics = _ingestor(tmp_path, publisher)
    (tmp_path / "archive").write_bytes(b"a file where the archive directory should be")
    with capture_logs() as logs:
        assert ingestor.ingest(_received(tmp_path)) == statuses.OUT_OF_RESOURCES
    assert publisher.records == []
    assert logs[-1]["reason"] == "archive_failed"
    assert _value(metrics, "kidneyct_ingest_instances_rejected_total", reason="archive_failed") == 1


def test_unexpected_error_is_a_failure_status(tmp_path: Path) -> None:
    """A bug in a collaborator is answered 0xA700 and logged with its traceback, not success."""
    publisher = MemoryPublisher(failure=RuntimeError("bug"))
    ingestor, _ = _ingestor(tmp_path, publisher)
    with capture_logs() as logs:
        assert ingestor.ingest(_received(tmp_path)) == statuses.OUT_OF_RESOURCES
    assert [e["event"] for e in logs] == ["instance_ingest_crashed", "instance_rejected"]
    assert logs[-1]["reason"] == "internal_error"


def test_oversize_instance_is_refused_before_archiving(tmp_path: Path) -> None:
    """An instance above max_instance_bytes is refused with 0xA701 and nothing is stored."""
    publisher = MemoryPublisher()
    ingestor, _ = _ingestor(tmp_path, publisher, max_bytes=1000)
    assert ingestor.ingest(_received(tmp_path)) == statuses.OUT_OF_RESOURCES_TOO_LARGE
    assert publisher.records == []
    assert not (tmp_path / "archive").exists() or list((tmp_path / "archive").rglob("*.dcm")) == []


def test_invalid_dataset_answers_its_status_with_reason(tmp_path: Path) -> None:
    """A SOP class mismatch answers 0xA900; the reason is logged; nothing is stored."""
    publisher = MemoryPublisher()
    ingestor, metrics = _ingestor(tmp_path, publisher)
    received = _received(tmp_path)
    wrong = ReceivedInstance(
        source=received.source,
        size_bytes=received.size_bytes,
        requested_sop_class="1.2.840.10008.5.1.4.1.1.4",
        requested_sop_instance=received.requested_sop_instance,
        transfer_syntax_uid=received.transfer_syntax_uid,
        calling_ae="PACS",
    )
    with capture_logs() as logs:
        assert ingestor.ingest(wrong) == statuses.DATASET_DOES_NOT_MATCH_SOP_CLASS
    assert logs[-1]["reason"] == "sop_class_mismatch" and logs[-1]["log_level"] == "warning"
    assert publisher.records == []
    assert _value(metrics, "kidneyct_ingest_instances_rejected_total", reason="sop_class_mismatch") == 1


def test_stream_source_is_archived_from_the_start(tmp_path: Path) -> None:
    """Without chunked receive the dataset arrives as bytes; the whole stream is archived."""
    publisher = MemoryPublisher()
    ingestor, _ = _ingestor(tmp_path, publisher)
    received = _received(tmp_path)
    content = received.source.read_bytes()  # type: ignore[union-attr]
    streamed = ReceivedInstance(
        source=io.BytesIO(content),
        size_bytes=len(content),
        requested_sop_class=received.requested_sop_class,
        requested_sop_instance=received.requested_sop_instance,
        transfer_syntax_uid=received.transfer_syntax_uid,
        calling_ae=None,
    )
    assert ingestor.ingest(streamed) == statuses.SUCCESS
    event = InstanceEvent.from_json(publisher.records[0][2])
    assert Path(event.archive_uri.removeprefix("file://")).read_bytes() == content
    assert event.calling_ae is None


@pytest.mark.parametrize("name", ["693_J2KR.dcm", "eCT_Supplemental.dcm"])
def test_other_ct_files_succeed(tmp_path: Path, name: str) -> None:
    """JPEG 2000 CT and Enhanced CT (2 frames) are stored with their transfer syntax and frames."""
    publisher = MemoryPublisher()
    ingestor, _ = _ingestor(tmp_path, publisher)
    assert ingestor.ingest(_received(tmp_path, name)) == statuses.SUCCESS
    event = InstanceEvent.from_json(publisher.records[0][2])
    ds = dcmread(get_testdata_file(name), stop_before_pixels=True)
    assert event.transfer_syntax_uid == ds.file_meta.TransferSyntaxUID
    assert event.number_of_frames == int(ds.get("NumberOfFrames", 1))
