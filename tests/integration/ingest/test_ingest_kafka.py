"""The listener against the real Kafka broker: real CT files from pynetdicom and DCMTK, bad input,
and a broker outage."""

from __future__ import annotations

import random
import shutil
import socket
import subprocess
import time
from collections import Counter
from pathlib import Path

import pytest
from ingest_support import (
    client_tls_args,
    create_topic,
    dataset_bytes,
    kafka_publisher,
    listener_settings,
    make_certificates,
    read_topic,
    running_listener,
    send_files,
    synthetic_ct,
    write_variant,
)
from pydicom import dcmread
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, MRImageStorage, generate_uid

from ingest import statuses
from storage.stream.events import InstanceEvent

pytestmark = pytest.mark.kafka

SECONDARY_CAPTURE = "1.2.840.10008.5.1.4.1.1.7"
EXTRA_CLASSES = f"{MRImageStorage},{SECONDARY_CAPTURE}"
# One file per transfer syntax; CT first, then extra classes where pydicom-data has no CT in that syntax.
FILES = {
    "CT_small.dcm": "-xe",  # explicit VR little endian
    "693_J2KR.dcm": "-xv",  # JPEG 2000 lossless
    "693_J2KI.dcm": "-xw",  # JPEG 2000
    "eCT_Supplemental.dcm": "-xe",  # Enhanced CT, 2 frames
    "MR_small_implicit.dcm": "-xi",  # implicit VR little endian
    "MR_small_jpeg_ls_lossless.dcm": "-xt",  # JPEG-LS lossless
    "MR_small_RLE.dcm": "-xr",  # RLE lossless
    "image_dfl.dcm": "-xd",  # deflated explicit VR little endian
    "SC_rgb_jpeg_dcmtk.dcm": "-xy",  # JPEG baseline
    "JPEG-LL.dcm": "-xs",  # JPEG lossless SV1
}
DCMTK_STORESCU = Path("/usr/bin/storescu")  # the venv's `storescu` is pynetdicom's app
DCMTK_STORESCP = Path("/usr/bin/storescp")


def _testfile(name: str) -> Path:
    return Path(get_testdata_file(name))


def _events(records: list) -> list[InstanceEvent]:
    return [InstanceEvent.from_json(r.value) for r in records]


def _archived(event: InstanceEvent) -> Path:
    return Path(event.archive_uri.removeprefix("file://"))


@pytest.mark.parametrize("name", list(FILES))
def test_pynetdicom_scu_file_is_archived_byte_identical_with_one_event(
    tmp_path: Path, kafka_bootstrap: str, unique_name, name: str
) -> None:
    """pynetdicom sends a real file as its raw bytes: archived unchanged, exactly one Kafka event."""
    topic = unique_name("instances")
    create_topic(kafka_bootstrap, topic)
    path = _testfile(name)
    settings = listener_settings(
        tmp_path / "archive", topic_instances=topic, extra_storage_sop_classes=EXTRA_CLASSES
    )
    publisher = kafka_publisher(kafka_bootstrap)
    try:
        with running_listener(settings, publisher) as (listener, _):
            assert send_files(listener.port, [path]) == [statuses.SUCCESS]
    finally:
        publisher.close()
    [record] = read_topic(kafka_bootstrap, topic, expected=1)
    event = InstanceEvent.from_json(record.value)
    ds = dcmread(path, stop_before_pixels=True)
    assert record.key == str(ds.StudyInstanceUID).encode()
    assert event.sop_instance_uid == ds.SOPInstanceUID
    assert event.transfer_syntax_uid == ds.file_meta.TransferSyntaxUID
    assert dataset_bytes(_archived(event)) == dataset_bytes(path)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _storescu(
    port: int, path: Path, flag: str, *, calling_ae: str = "DCMTKSCU"
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            str(DCMTK_STORESCU),
            flag,
            "-aet",
            calling_ae,
            "-aec",
            "KIDNEYCT",
            "127.0.0.1",
            str(port),
            str(path),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )


def _dcmtk_reference(tmp_path: Path, path: Path, flag: str) -> bytes:
    """What DCMTK's storescu puts on the wire for `path`, as DCMTK's own storescp receives it bit for bit."""
    out = tmp_path / "storescp"
    out.mkdir(exist_ok=True)
    port = _free_port()
    scp = subprocess.Popen(
        [str(DCMTK_STORESCP), "+B", "+xa", "-od", str(out), "-aet", "KIDNEYCT", str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 10
        while _storescu(port, path, flag).returncode != 0:
            assert time.monotonic() < deadline, "DCMTK storescp did not start"
            time.sleep(0.1)
    finally:
        scp.terminate()
        scp.wait(timeout=10)
    [received] = list(out.iterdir())
    data = dataset_bytes(received)
    shutil.rmtree(out)
    return data


@pytest.mark.skipif(not DCMTK_STORESCU.exists(), reason="DCMTK (apt-get install dcmtk) is not installed")
def test_dcmtk_storescu_files_are_archived_as_sent_with_one_event_each(
    tmp_path: Path, kafka_bootstrap: str, unique_name
) -> None:
    """DCMTK storescu sends every file in its own syntax: archived exactly as DCMTK's storescp receives it."""
    topic = unique_name("instances")
    create_topic(kafka_bootstrap, topic)
    settings = listener_settings(
        tmp_path / "archive", topic_instances=topic, extra_storage_sop_classes=EXTRA_CLASSES
    )
    sent: dict[str, tuple[Path, str]] = {}
    for name, flag in FILES.items():
        uid = str(dcmread(_testfile(name), stop_before_pixels=True).SOPInstanceUID)
        sent.setdefault(uid, (_testfile(name), flag))  # some test files share a SOP Instance UID
    publisher = kafka_publisher(kafka_bootstrap)
    try:
        with running_listener(settings, publisher) as (listener, _):
            for path, flag in sent.values():
                result = _storescu(listener.port, path, flag)
                assert result.returncode == 0, result.stderr
    finally:
        publisher.close()
    events = _events(read_topic(kafka_bootstrap, topic, expected=len(sent)))
    assert Counter(e.sop_instance_uid for e in events) == Counter(list(sent))  # exactly one each
    for event in events:
        path, flag = sent[event.sop_instance_uid]
        assert event.calling_ae == "DCMTKSCU"
        assert event.transfer_syntax_uid == dcmread(path, stop_before_pixels=True).file_meta.TransferSyntaxUID
        assert dataset_bytes(_archived(event)) == _dcmtk_reference(tmp_path, path, flag), path.name


def _garbage_file(path: Path) -> Path:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = CTImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.save_as(path, enforce_file_format=True)
    with path.open("ab") as f:
        f.write(bytes(random.Random(11).randrange(256) for _ in range(8192)))
    return path


def test_bad_input_publishes_nothing_and_listener_keeps_serving(
    tmp_path: Path, kafka_bootstrap: str, unique_name
) -> None:
    """Garbage, no SOP Instance UID, a `../` UID, a wrong called AE, a disallowed caller, a TLS-less
    client: each gets its status or rejection; nothing reaches the topic; a good instance still does."""
    topic = unique_name("instances")
    create_topic(kafka_bootstrap, topic)
    certs = make_certificates(tmp_path / "certs")
    ct = _testfile("CT_small.dcm")
    settings = listener_settings(
        tmp_path / "archive",
        topic_instances=topic,
        allowed_calling_aes="TESTSCU",
        tls_cert=certs.server_cert,
        tls_key=certs.server_key,
        tls_ca=certs.ca,
    )
    tls = client_tls_args(certs)
    bad = [
        (_garbage_file(tmp_path / "garbage.dcm"), statuses.CANNOT_UNDERSTAND),
        (
            write_variant(ct, tmp_path / "no-sop.dcm", SOPInstanceUID=None),
            statuses.CANNOT_UNDERSTAND_MISSING_UID,
        ),
        (
            write_variant(ct, tmp_path / "dots.dcm", SeriesInstanceUID="1.2.3/../../../../x"),
            statuses.CANNOT_UNDERSTAND_INVALID_UID,
        ),
    ]
    good = synthetic_ct(tmp_path / "good.dcm", study_uid=generate_uid(), series_uid=generate_uid(), number=1)
    publisher = kafka_publisher(kafka_bootstrap)
    try:
        with running_listener(settings, publisher) as (listener, _):
            for path, status in bad:
                assert send_files(listener.port, [path], tls_args=tls) == [status], path.name
            assert send_files(listener.port, [good], tls_args=tls, called_ae="SOMEONE") is None
            assert send_files(listener.port, [good], tls_args=tls, calling_ae="INTRUDER") is None
            assert send_files(listener.port, [good]) is None  # no TLS
            assert send_files(listener.port, [good], tls_args=tls) == [statuses.SUCCESS]
    finally:
        publisher.close()
    [record] = read_topic(kafka_bootstrap, topic, expected=1, settle_s=3.0)
    assert InstanceEvent.from_json(record.value).sop_instance_uid == dcmread(good).SOPInstanceUID
    assert [p.name for p in (tmp_path / "archive").rglob("*.dcm")] == [f"{dcmread(good).SOPInstanceUID}.dcm"]


@pytest.mark.slow
def test_broker_outage_answers_failure_and_recovers_by_itself(
    tmp_path: Path, private_kafka, unique_name
) -> None:
    """Broker stopped: C-STORE answers 0xA700, never success; broker back: the re-send succeeds."""
    topic = unique_name("instances")
    create_topic(private_kafka.bootstrap, topic, partitions=1)
    settings = listener_settings(tmp_path / "archive", topic_instances=topic)
    first = synthetic_ct(
        tmp_path / "first.dcm", study_uid=generate_uid(), series_uid=generate_uid(), number=1
    )
    during = synthetic_ct(
        tmp_path / "during.dcm", study_uid=generate_uid(), series_uid=generate_uid(), number=2
    )
    publisher = kafka_publisher(private_kafka.bootstrap, timeout_s=3.0)
    try:
        with running_listener(settings, publisher) as (listener, metrics):
            assert send_files(listener.port, [first]) == [statuses.SUCCESS]
            private_kafka.stop()
            assert send_files(listener.port, [during]) == [statuses.OUT_OF_RESOURCES]
            assert send_files(listener.port, [during]) == [statuses.OUT_OF_RESOURCES]
            private_kafka.start()
            # The sender retries; the listener reconnects by itself (the broker may need a moment).
            deadline = time.monotonic() + 60
            outcome = send_files(listener.port, [during])
            while outcome != [statuses.SUCCESS] and time.monotonic() < deadline:
                assert outcome == [statuses.OUT_OF_RESOURCES]
                outcome = send_files(listener.port, [during])
            assert outcome == [statuses.SUCCESS]
            rejected = metrics.registry.get_sample_value(
                "kidneyct_ingest_instances_rejected_total", {"reason": "publish_failed"}
            )
            assert rejected is not None and rejected >= 2
    finally:
        publisher.close()
    events = _events(read_topic(private_kafka.bootstrap, topic, expected=2))
    uids = Counter(e.sop_instance_uid for e in events)
    # The success answers are backed by events; a failed attempt may also have landed (at least once).
    assert uids[dcmread(first).SOPInstanceUID] == 1
    assert uids[dcmread(during).SOPInstanceUID] >= 1
