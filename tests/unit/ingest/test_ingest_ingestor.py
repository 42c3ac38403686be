"""One instance through check, durable archive and acknowledged publish (ingest/ingestor.py)."""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
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
from storage.archive.local import Archive, ArchivedFile, ArchiveError
from storage.stream.contract import StreamUnavailable
from storage.stream.events import InstanceEvent

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
    assert event.received_at == NOW
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


class _PendingAck:
    """A pending publish that records when it was awaited and can fail the acknowledgement."""

    def __init__(self, calls: list[str], failure: Exception | None) -> None:
        self._calls = calls
        self._failure = failure

    def wait(self) -> None:
        self._calls.append("wait")
        if self._failure is not None:
            raise self._failure


class _OverlappingPublisher(MemoryPublisher):
    """Hands events over at once (`begin_publish`) and acknowledges them in `wait`."""

    def __init__(
        self,
        calls: list[str],
        *,
        begin_failure: Exception | None = None,
        ack_failure: Exception | None = None,
    ) -> None:
        super().__init__()
        self.calls = calls
        self.begin_failure = begin_failure
        self.ack_failure = ack_failure
        self.file_complete_at_begin: list[bool] = []

    def begin_publish(self, topic: str, key: bytes, value: bytes) -> _PendingAck:
        self.calls.append("begin_publish")
        if self.begin_failure is not None:
            raise self.begin_failure
        event = InstanceEvent.from_json(value)
        archived = Path(event.archive_uri.removeprefix("file://"))
        self.file_complete_at_begin.append(archived.is_file() and archived.stat().st_size == event.size_bytes)
        self.records.append((topic, key, value))
        return _PendingAck(self.calls, self.ack_failure)


class _RecordingArchive(Archive):
    """The real archive; records `sync_entry` calls and fails the first `sync_failures` of them."""

    def __init__(self, root: Path, calls: list[str], *, sync_failures: int = 0) -> None:
        super().__init__(root)
        self._calls = calls
        self._sync_failures = sync_failures

    def sync_entry(self, archived: ArchivedFile) -> None:
        self._calls.append("sync_entry")
        if self._sync_failures > 0:
            self._sync_failures -= 1
            raise ArchiveError("cannot sync the archive directory: Input/output error")
        super().sync_entry(archived)


def _overlapping(
    tmp_path: Path, publisher: _OverlappingPublisher, *, sync_failures: int = 0
) -> tuple[Ingestor, IngestMetrics]:
    metrics = IngestMetrics(CollectorRegistry())
    archive = _RecordingArchive(tmp_path / "archive", publisher.calls, sync_failures=sync_failures)
    ingestor = Ingestor(
        archive=archive,
        publisher=publisher,
        topic=TOPIC,
        metrics=metrics,
        max_instance_bytes=10**9,
        clock=lambda: NOW,
    )
    return ingestor, metrics


def test_overlapped_publish_starts_with_the_file_complete_and_ends_after_the_directory_sync(
    tmp_path: Path,
) -> None:
    """The event goes out only once the file is complete at its path; success waits for sync and ack."""
    calls: list[str] = []
    publisher = _OverlappingPublisher(calls)
    ingestor, metrics = _overlapping(tmp_path, publisher)
    assert ingestor.ingest(_received(tmp_path)) == statuses.SUCCESS
    assert calls == ["begin_publish", "sync_entry", "wait"]
    assert publisher.file_complete_at_begin == [True]
    assert _value(metrics, "kidneyct_ingest_publish_seconds_count") == 1
    assert _value(metrics, "kidneyct_ingest_archive_write_seconds_count") == 1


def test_directory_sync_failure_after_publish_answers_failure_and_the_retry_succeeds(
    tmp_path: Path,
) -> None:
    """Publish acknowledged but directory fsync failed: 0xA700; the sender's retry then succeeds."""
    calls: list[str] = []
    publisher = _OverlappingPublisher(calls)
    ingestor, metrics = _overlapping(tmp_path, publisher, sync_failures=1)
    with capture_logs() as logs:
        assert ingestor.ingest(_received(tmp_path)) == statuses.OUT_OF_RESOURCES
        assert ingestor.ingest(_received(tmp_path)) == statuses.SUCCESS
    assert [e["event"] for e in logs] == ["instance_rejected", "instance_stored"]
    assert logs[0]["reason"] == "archive_failed" and logs[0]["log_level"] == "error"
    # The failed attempt's event is out; it names the same complete file the retry's event names.
    first, second = (InstanceEvent.from_json(value) for _, _, value in publisher.records)
    assert first.archive_uri == second.archive_uri and first.sha256 == second.sha256
    assert first.key == second.key
    archived = Path(second.archive_uri.removeprefix("file://"))
    assert archived.read_bytes() == get_testdata_file_bytes("CT_small.dcm")
    assert _value(metrics, "kidneyct_ingest_instances_rejected_total", reason="archive_failed") == 1
    assert _value(metrics, "kidneyct_ingest_instances_stored_total") == 1


def test_unacknowledged_overlapped_publish_answers_failure(tmp_path: Path) -> None:
    """The broker does not acknowledge after the directory sync: 0xA700, publish_failed, not success."""
    calls: list[str] = []
    publisher = _OverlappingPublisher(calls, ack_failure=StreamUnavailable("no ack in time"))
    ingestor, metrics = _overlapping(tmp_path, publisher)
    with capture_logs() as logs:
        assert ingestor.ingest(_received(tmp_path)) == statuses.OUT_OF_RESOURCES
    assert calls == ["begin_publish", "sync_entry", "wait"]
    assert logs[-1]["reason"] == "publish_failed"
    assert _value(metrics, "kidneyct_ingest_instances_stored_total") == 0


def test_overlapped_publish_refused_at_once_answers_failure(tmp_path: Path) -> None:
    """A producer that cannot even take the event: 0xA700 publish_failed, no directory sync waited on."""
    calls: list[str] = []
    publisher = _OverlappingPublisher(calls, begin_failure=StreamUnavailable("broker down"))
    ingestor, _ = _overlapping(tmp_path, publisher)
    with capture_logs() as logs:
        assert ingestor.ingest(_received(tmp_path)) == statuses.OUT_OF_RESOURCES
    assert calls == ["begin_publish"]
    assert publisher.records == []
    assert logs[-1]["reason"] == "publish_failed"


def get_testdata_file_bytes(name: str) -> bytes:
    return Path(get_testdata_file(name)).read_bytes()


def test_resent_instance_with_other_content_keeps_both_and_is_logged_and_counted(tmp_path: Path) -> None:
    """A re-send with different content gets its own file; both events' paths still match their
    sha256; `instance_replaced` is logged and counted. The same content again replaces nothing."""
    publisher = MemoryPublisher()
    ingestor, metrics = _ingestor(tmp_path, publisher)
    # Each received file is new (as pynetdicom's are): the archive hard-links them.
    for name in ("first", "changed", "again"):
        (tmp_path / name).mkdir()
    assert ingestor.ingest(_received(tmp_path / "first")) == statuses.SUCCESS
    changed = _received(tmp_path / "changed")
    ds = dcmread(changed.source)  # type: ignore[arg-type]
    ds.WindowCenter = 41  # other content, same UIDs
    ds.save_as(changed.source)  # type: ignore[arg-type]
    changed = dataclasses.replace(changed, size_bytes=changed.source.stat().st_size)  # type: ignore[union-attr]
    with capture_logs() as logs:
        assert ingestor.ingest(changed) == statuses.SUCCESS
    assert ingestor.ingest(_received(tmp_path / "again")) == statuses.SUCCESS  # the first content again
    events = [InstanceEvent.from_json(value) for _t, _k, value in publisher.records]
    assert events[0].sha256 != events[1].sha256 and events[2].sha256 == events[0].sha256
    for event in events:
        path = Path(event.archive_uri.removeprefix("file://"))
        assert hashlib.sha256(path.read_bytes()).hexdigest() == event.sha256
    replaced = [e for e in logs if e["event"] == "instance_replaced"]
    assert len(replaced) == 1 and replaced[0]["previous_sha256"] == events[0].sha256
    assert _value(metrics, "kidneyct_ingest_instances_replaced_total") == 1
