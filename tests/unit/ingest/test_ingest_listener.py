"""The listener over real DICOM associations on loopback (in-process, in-memory publisher)."""

from __future__ import annotations

import json
import random
import threading
import time
import urllib.request
from pathlib import Path

import pytest
import structlog
from ingest_support import (
    LOCALHOST,
    OUR_AE,
    MemoryPublisher,
    client_tls_args,
    dataset_bytes,
    listener_settings,
    make_certificates,
    running_listener,
    send_files,
    synthetic_ct,
    write_variant,
)
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, MRImageStorage, generate_uid
from pynetdicom import AE
from pynetdicom.sop_class import Verification
from structlog.testing import capture_logs

from common.metrics import serve_metrics
from ingest import statuses
from storage.stream.contract import StreamUnavailable
from storage.stream.events import InstanceEvent

CT_FILES = ["CT_small.dcm", "693_J2KR.dcm", "693_J2KI.dcm", "eCT_Supplemental.dcm"]


def _testfile(name: str) -> Path:
    return Path(get_testdata_file(name))


def _events(publisher: MemoryPublisher) -> list[InstanceEvent]:
    return [InstanceEvent.from_json(value) for _topic, _key, value in publisher.records]


def _good_file(tmp_path: Path) -> Path:
    return synthetic_ct(
        tmp_path / f"good-{generate_uid()}.dcm", study_uid=generate_uid(), series_uid=generate_uid(), number=1
    )


def test_echo_is_answered(tmp_path: Path) -> None:
    """C-ECHO gets 0x0000."""
    with running_listener(listener_settings(tmp_path / "archive"), MemoryPublisher()) as (listener, _):
        ae = AE(ae_title="ECHOSCU")
        ae.add_requested_context(Verification)
        assoc = ae.associate(LOCALHOST, listener.port, ae_title=OUR_AE)
        assert assoc.is_established
        assert assoc.send_c_echo().Status == 0x0000
        assoc.release()


def test_ct_files_are_archived_byte_identical_with_one_event_each(tmp_path: Path) -> None:
    """Real CT files (explicit LE, JPEG 2000 lossless and lossy, Enhanced CT) arrive unchanged."""
    publisher = MemoryPublisher()
    files = [_testfile(n) for n in CT_FILES]
    with running_listener(listener_settings(tmp_path / "archive"), publisher) as (listener, _):
        # 693_J2KI and 693_UNCI share a SOP Instance UID: one association per file keeps each check exact.
        for path in files:
            before = len(publisher.records)
            assert send_files(listener.port, [path]) == [statuses.SUCCESS]
            [event] = _events(publisher)[before:]
            archived = Path(event.archive_uri.removeprefix("file://"))
            assert dataset_bytes(archived) == dataset_bytes(path)
    assert len(publisher.records) == len(files)


def test_extra_sop_classes_and_all_transfer_syntaxes(tmp_path: Path) -> None:
    """Configured extra SOP classes are accepted in implicit, deflated, JPEG-LS, RLE and JPEG syntaxes."""
    names = [
        "MR_small_implicit.dcm",
        "MR_small_jpeg_ls_lossless.dcm",
        "MR_small_RLE.dcm",
        "image_dfl.dcm",
        "SC_rgb_jpeg_dcmtk.dcm",
        "JPEG-LL.dcm",
        "JPGExtended.dcm",
    ]
    extra = f"{MRImageStorage},1.2.840.10008.5.1.4.1.1.7"
    publisher = MemoryPublisher()
    with running_listener(
        listener_settings(tmp_path / "archive", extra_storage_sop_classes=extra), publisher
    ) as (
        listener,
        _,
    ):
        for name in names:
            before = len(publisher.records)
            assert send_files(listener.port, [_testfile(name)]) == [statuses.SUCCESS], name
            [event] = _events(publisher)[before:]
            assert dataset_bytes(Path(event.archive_uri.removeprefix("file://"))) == dataset_bytes(
                _testfile(name)
            )


def test_sop_class_not_configured_is_refused_at_negotiation(tmp_path: Path) -> None:
    """MR without the extra setting: the presentation context is rejected, nothing can be sent."""
    with running_listener(listener_settings(tmp_path / "archive"), MemoryPublisher()) as (listener, _):
        ae = AE(ae_title="MRSCU")
        ae.add_requested_context(MRImageStorage, ExplicitVRLittleEndian)
        ae.add_requested_context(Verification)
        assoc = ae.associate(LOCALHOST, listener.port, ae_title=OUR_AE)
        assert assoc.is_established
        assert [cx.abstract_syntax for cx in assoc.accepted_contexts] == [Verification]
        assert [cx.abstract_syntax for cx in assoc.rejected_contexts] == [MRImageStorage]
        assoc.release()


def _garbage_file(path: Path) -> Path:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = CTImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.save_as(path, enforce_file_format=True)
    with path.open("ab") as f:
        f.write(bytes(random.Random(3).randrange(256) for _ in range(8192)))
    return path


def _bad_inputs(tmp_path: Path) -> dict[str, tuple[Path, int]]:
    ct = _testfile("CT_small.dcm")
    return {
        "garbage": (_garbage_file(tmp_path / "garbage.dcm"), statuses.CANNOT_UNDERSTAND),
        "no_sop_instance": (
            write_variant(ct, tmp_path / "no-sop.dcm", SOPInstanceUID=None),
            statuses.CANNOT_UNDERSTAND_MISSING_UID,
        ),
        "traversal_uid": (
            write_variant(ct, tmp_path / "traversal.dcm", StudyInstanceUID="1.2/../../../../tmp/evil"),
            statuses.CANNOT_UNDERSTAND_INVALID_UID,
        ),
        "sop_class_mismatch": (
            write_variant(ct, tmp_path / "mismatch.dcm", SOPClassUID=MRImageStorage),
            statuses.DATASET_DOES_NOT_MATCH_SOP_CLASS,
        ),
    }


@pytest.mark.parametrize("case", ["garbage", "no_sop_instance", "traversal_uid", "sop_class_mismatch"])
def test_bad_dataset_gets_its_status_and_listener_keeps_serving(tmp_path: Path, case: str) -> None:
    """Each bad dataset gets its named failure status, nothing is published or archived."""
    path, expected = _bad_inputs(tmp_path)[case]
    publisher = MemoryPublisher()
    archive = tmp_path / "archive"
    with running_listener(listener_settings(archive), publisher) as (listener, metrics):
        with capture_logs() as logs:
            assert send_files(listener.port, [path]) == [expected]
        assert publisher.records == []
        assert list(archive.rglob("*.dcm")) == []
        rejected = [e for e in logs if e["event"] == "instance_rejected"]
        assert len(rejected) == 1 and rejected[0]["status"] == f"0x{expected:04X}"
        assert (
            metrics.registry.get_sample_value(
                "kidneyct_ingest_instances_rejected_total", {"reason": rejected[0]["reason"]}
            )
            == 1
        )
        # The listener serves the next association normally.
        assert send_files(listener.port, [_good_file(tmp_path)]) == [statuses.SUCCESS]
    assert len(publisher.records) == 1
    assert not list(tmp_path.parent.rglob("evil*"))


def test_oversize_instance_is_refused(tmp_path: Path) -> None:
    """An instance above max_instance_bytes gets 0xA701 and is not stored."""
    publisher = MemoryPublisher()
    with running_listener(listener_settings(tmp_path / "archive", max_instance_bytes=10_000), publisher) as (
        listener,
        _,
    ):
        assert send_files(listener.port, [_testfile("CT_small.dcm")]) == [statuses.OUT_OF_RESOURCES_TOO_LARGE]
    assert publisher.records == []


@pytest.mark.parametrize(
    ("setting", "calling_ae", "called_ae", "reason"),
    [
        ("", "TESTSCU", "NOT_US", "called_ae_unknown"),
        ("PACS", "TESTSCU", OUR_AE, "calling_ae_not_allowed"),
        ("TESTSCU@10.99.0.0/16", "TESTSCU", OUR_AE, "address_not_allowed"),
    ],
)
def test_refused_association_is_logged_and_next_one_served(
    tmp_path: Path, setting: str, calling_ae: str, called_ae: str, reason: str
) -> None:
    """Wrong called AE, a calling AE not allowed, or a wrong address: rejected, logged with reason."""
    publisher = MemoryPublisher()
    good = _good_file(tmp_path)
    settings = listener_settings(tmp_path / "archive", allowed_calling_aes=setting)
    with running_listener(settings, publisher) as (listener, metrics):
        with capture_logs() as logs:
            assert send_files(listener.port, [good], calling_ae=calling_ae, called_ae=called_ae) is None
        [rejection] = [e for e in logs if e["event"] == "association_rejected"]
        assert rejection["reason"] == reason
        assert rejection["calling_ae"] == calling_ae
        assert (
            metrics.registry.get_sample_value("kidneyct_ingest_associations_total", {"outcome": reason}) == 1
        )
        assert publisher.records == []
        allowed_caller = "PACS" if setting == "PACS" else "TESTSCU"
        if reason != "address_not_allowed":
            assert send_files(listener.port, [good], calling_ae=allowed_caller) == [statuses.SUCCESS]
    assert len(publisher.records) == (0 if reason == "address_not_allowed" else 1)


def test_allowed_address_is_admitted(tmp_path: Path) -> None:
    """A calling AE bound to the loopback network is admitted from it."""
    publisher = MemoryPublisher()
    settings = listener_settings(tmp_path / "archive", allowed_calling_aes="TESTSCU@127.0.0.0/8")
    with running_listener(settings, publisher) as (listener, _):
        assert send_files(listener.port, [_good_file(tmp_path)]) == [statuses.SUCCESS]


def test_publish_failure_answers_failure_then_recovers(tmp_path: Path) -> None:
    """While the stream fails, C-STORE answers 0xA700; once it works again, the re-send succeeds."""
    publisher = MemoryPublisher(failure=StreamUnavailable("broker down"))
    good = _good_file(tmp_path)
    with running_listener(listener_settings(tmp_path / "archive"), publisher) as (listener, _):
        assert send_files(listener.port, [good]) == [statuses.OUT_OF_RESOURCES]
        publisher.failure = None
        assert send_files(listener.port, [good]) == [statuses.SUCCESS]
    assert len(publisher.records) == 1


def test_archive_failure_answers_failure_then_recovers(tmp_path: Path) -> None:
    """While the archive cannot be written, C-STORE answers 0xA700 and nothing is published."""
    publisher = MemoryPublisher()
    archive = tmp_path / "archive"
    good = _good_file(tmp_path)
    with running_listener(listener_settings(archive), publisher) as (listener, _):
        archive.rmdir()
        archive.write_bytes(b"the archive volume is gone")
        assert send_files(listener.port, [good]) == [statuses.OUT_OF_RESOURCES]
        assert publisher.records == []
        archive.unlink()
        assert send_files(listener.port, [good]) == [statuses.SUCCESS]
    assert len(publisher.records) == 1


def test_tls_client_gets_through_and_plain_client_does_not(tmp_path: Path) -> None:
    """With TLS and a CA: a client with a certificate stores; plain and certificate-less clients are refused."""
    certs = make_certificates(tmp_path / "certs")
    publisher = MemoryPublisher()
    good = _good_file(tmp_path)
    settings = listener_settings(
        tmp_path / "archive", tls_cert=certs.server_cert, tls_key=certs.server_key, tls_ca=certs.ca
    )
    with running_listener(settings, publisher) as (listener, metrics):
        with capture_logs() as logs:
            assert send_files(listener.port, [good]) is None
            assert (
                send_files(listener.port, [good], tls_args=client_tls_args(certs, with_client_cert=False))
                is None
            )
        reasons = [e["reason"] for e in logs if e["event"] == "association_rejected"]
        assert reasons == ["tls_handshake_failed", "tls_handshake_failed"]
        assert publisher.records == []
        assert send_files(listener.port, [good], tls_args=client_tls_args(certs)) == [statuses.SUCCESS]
        assert (
            metrics.registry.get_sample_value(
                "kidneyct_ingest_associations_total", {"outcome": "tls_handshake_failed"}
            )
            == 2
        )
    assert len(publisher.records) == 1


def test_parallel_associations_one_study(tmp_path: Path) -> None:
    """Four associations at once, each sending part of one study: every instance is stored once."""
    publisher = MemoryPublisher()
    study, series = generate_uid(), generate_uid()
    batches = [
        [
            synthetic_ct(tmp_path / f"{a}-{i}.dcm", study_uid=study, series_uid=series, number=a * 10 + i)
            for i in range(5)
        ]
        for a in range(4)
    ]
    results: dict[int, list[int] | None] = {}
    with running_listener(listener_settings(tmp_path / "archive"), publisher) as (listener, _):
        threads = [
            threading.Thread(target=lambda a=a: results.__setitem__(a, send_files(listener.port, batches[a])))
            for a in range(4)
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert all(results[a] == [statuses.SUCCESS] * 5 for a in range(4))
    events = _events(publisher)
    assert len(events) == 20 and len({e.sop_instance_uid for e in events}) == 20
    assert {e.study_instance_uid for e in events} == {study}
    assert len(list((tmp_path / "archive" / study / series).glob("*.dcm"))) == 20


def test_stop_lets_in_flight_association_finish_and_refuses_new_ones(tmp_path: Path) -> None:
    """During stop, an open association keeps storing; new associations are refused."""
    publisher = MemoryPublisher()
    settings = listener_settings(tmp_path / "archive")
    from prometheus_client import CollectorRegistry

    from ingest.metrics import IngestMetrics
    from kidneyct.wiring.ingest import build_listener

    listener = build_listener(settings, publisher=publisher, metrics=IngestMetrics(CollectorRegistry()))
    listener.start()
    port = listener.port
    ae = AE(ae_title="INFLIGHT")
    ae.add_requested_context(CTImageStorage, ExplicitVRLittleEndian)
    assoc = ae.associate(LOCALHOST, port, ae_title=OUR_AE)
    assert assoc.is_established
    drained: list[bool] = []
    stopper = threading.Thread(target=lambda: drained.append(listener.stop(grace_s=20)))
    stopper.start()
    assert send_files(port, [_good_file(tmp_path)]) is None  # no longer accepting
    assert assoc.send_c_store(_good_file(tmp_path)).Status == statuses.SUCCESS
    assoc.release()
    stopper.join(timeout=30)
    assert drained == [True]
    assert len(publisher.records) == 1


def test_stop_aborts_associations_past_the_grace_time(tmp_path: Path) -> None:
    """An association still open when the grace time ends is aborted; stop reports it."""
    from prometheus_client import CollectorRegistry

    from ingest.metrics import IngestMetrics
    from kidneyct.wiring.ingest import build_listener

    listener = build_listener(
        listener_settings(tmp_path / "archive"),
        publisher=MemoryPublisher(),
        metrics=IngestMetrics(CollectorRegistry()),
    )
    listener.start()
    ae = AE(ae_title="IDLE")
    ae.add_requested_context(Verification)
    assoc = ae.associate(LOCALHOST, listener.port, ae_title=OUR_AE)
    assert assoc.is_established
    assert listener.stop(grace_s=0.3) is False
    deadline = time.monotonic() + 10
    while assoc.is_established and time.monotonic() < deadline:
        time.sleep(0.02)
    assert assoc.is_aborted


def test_metrics_are_exposed_over_http(tmp_path: Path) -> None:
    """The Prometheus endpoint reports stored instances, bytes and timing histograms."""
    publisher = MemoryPublisher()
    with running_listener(listener_settings(tmp_path / "archive"), publisher) as (listener, metrics):
        server = serve_metrics(metrics.registry, host=LOCALHOST, port=0)
        try:
            assert send_files(listener.port, [_good_file(tmp_path)]) == [statuses.SUCCESS]
            body = (
                urllib.request.urlopen(f"http://{LOCALHOST}:{server.port}/metrics", timeout=5).read().decode()
            )
        finally:
            server.close()
    assert "kidneyct_ingest_instances_stored_total 1.0" in body
    assert "kidneyct_ingest_archive_write_seconds_count 1.0" in body
    assert "kidneyct_ingest_publish_seconds_count 1.0" in body
    assert 'kidneyct_ingest_associations_total{outcome="accepted"} 1.0' in body


def test_per_association_and_instance_log_events(tmp_path: Path) -> None:
    """An association logs established, one instance_stored per instance, released; no patient data."""
    publisher = MemoryPublisher()
    good = _good_file(tmp_path)
    with (
        running_listener(listener_settings(tmp_path / "archive"), publisher) as (listener, _),
        capture_logs(processors=[structlog.contextvars.merge_contextvars]) as logs,
    ):
        assert send_files(listener.port, [good]) == [statuses.SUCCESS]
    names = [e["event"] for e in logs]
    assert names == ["association_established", "instance_stored", "association_released"]
    stored = logs[1]
    assert (
        stored["calling_ae"] == "TESTSCU"
        and stored["sop_instance_uid"] == _events(publisher)[0].sop_instance_uid
    )
    assert "Doe^Jane" not in json.dumps(logs, default=str) and "PAT-0001" not in json.dumps(logs, default=str)


def test_too_many_associations_is_rejected_and_logged(tmp_path: Path) -> None:
    """Beyond max_associations a new association is rejected (logged, counted); the open one still works."""
    with running_listener(listener_settings(tmp_path / "archive", max_associations=1), MemoryPublisher()) as (
        listener,
        metrics,
    ):
        ae = AE(ae_title="FIRST")
        ae.add_requested_context(Verification)
        first = ae.associate(LOCALHOST, listener.port, ae_title=OUR_AE)
        assert first.is_established
        with capture_logs() as logs:
            second = ae.associate(LOCALHOST, listener.port, ae_title=OUR_AE)
        assert second.is_rejected
        assert [e["reason"] for e in logs if e["event"] == "association_rejected"] == [
            "too_many_associations"
        ]
        assert (
            metrics.registry.get_sample_value(
                "kidneyct_ingest_associations_total", {"outcome": "too_many_associations"}
            )
            == 1
        )
        assert first.send_c_echo().Status == 0x0000
        first.release()


def test_active_associations_gauge_follows_open_associations(tmp_path: Path) -> None:
    """The associations_active gauge is 1 while a client holds an association and 0 after release."""
    with running_listener(listener_settings(tmp_path / "archive"), MemoryPublisher()) as (listener, metrics):
        gauge = "kidneyct_ingest_associations_active"
        assert metrics.registry.get_sample_value(gauge) == 0
        ae = AE(ae_title="ECHOSCU")
        ae.add_requested_context(Verification)
        assoc = ae.associate(LOCALHOST, listener.port, ae_title=OUR_AE)
        assert assoc.is_established
        try:
            assert metrics.registry.get_sample_value(gauge) == 1
        finally:
            assoc.release()
        deadline = time.monotonic() + 10
        while metrics.registry.get_sample_value(gauge) != 0 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert metrics.registry.get_sample_value(gauge) == 0


def test_process_registry_carries_process_metrics() -> None:
    """The one registry of a process reports its memory, CPU time and open files."""
    from common.process_metrics import process_registry

    registry = process_registry()
    assert (registry.get_sample_value("process_resident_memory_bytes") or 0) > 0
    assert registry.get_sample_value("process_cpu_seconds_total") is not None
    assert (registry.get_sample_value("process_open_fds") or 0) > 0
