"""Helpers shared by the ingest tests: an in-memory publisher, a listener on a free port, and a
pynetdicom SCU that sends files byte for byte (chunked send, no re-encoding)."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry
from pydicom import dcmread
from pynetdicom import AE
from pynetdicom.dsutils import split_dataset

from common.pynetdicom_switches import chunked_send
from ingest.listener import Listener
from ingest.metrics import IngestMetrics
from kidneyct.send_files import presentation_contexts
from kidneyct.settings import Settings
from kidneyct.wiring.ingest import build_listener
from storage.stream.contract import Publisher
from storage.stream.events import ReleaseHint

LOCALHOST = "127.0.0.1"
OUR_AE = "KIDNEYCT"


@dataclass
class MemoryPublisher:
    """Keeps published events in a list (release hints in `hints`); `failure` makes every publish raise it."""

    records: list[tuple[str, bytes, bytes]] = field(default_factory=list)
    hints: list[tuple[str, bytes, bytes]] = field(default_factory=list)
    failure: Exception | None = None
    closed: bool = False
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def publish(self, topic: str, key: bytes, value: bytes) -> None:
        if self.failure is not None:
            raise self.failure
        with self._lock:
            kept = self.hints if ReleaseHint.of_message(value) is not None else self.records
            kept.append((topic, key, value))

    def close(self) -> None:
        self.closed = True


def listener_settings(archive_dir: Path, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "archive_dir": archive_dir,
        "dicom_host": LOCALHOST,
        "dicom_port": 0,
        "ae_title": OUR_AE,
        "acse_timeout_s": 5.0,
        "dimse_timeout_s": 10.0,
        "network_timeout_s": 10.0,
        "kafka_bootstrap": None,
        "allowed_calling_aes": "",
        "extra_storage_sop_classes": "",
    }
    values.update(overrides)
    return Settings(**values)


@contextlib.contextmanager
def running_listener(settings: Settings, publisher: Publisher) -> Iterator[tuple[Listener, IngestMetrics]]:
    metrics = IngestMetrics(CollectorRegistry())
    listener = build_listener(settings, publisher=publisher, metrics=metrics)
    listener.start()
    try:
        yield listener, metrics
    finally:
        listener.stop(grace_s=5.0)


def dataset_bytes(path: Path) -> bytes:
    """The encoded dataset of a DICOM file, without preamble and file meta."""
    _meta, offset = split_dataset(path)
    return path.read_bytes()[offset:]


def file_contexts(paths: Sequence[Path]) -> list[tuple[str, str]]:
    """The (SOP class, transfer syntax) pairs to propose for `paths`, as the demo's sender does."""
    return presentation_contexts(paths)


def send_files(
    port: int,
    paths: Sequence[Path],
    *,
    called_ae: str = OUR_AE,
    calling_ae: str = "TESTSCU",
    tls_args: Any = None,
) -> list[int] | None:
    """C-STORE each file as its raw bytes over one association; None when it was not established."""
    ae = AE(ae_title=calling_ae)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 10
    for sop_class, syntax in file_contexts(paths):
        ae.add_requested_context(sop_class, [syntax])
    with chunked_send():  # send the file's bytes, not a re-encoding
        assoc = ae.associate(LOCALHOST, port, ae_title=called_ae, tls_args=tls_args)
        if not assoc.is_established:
            return None
        results = []
        for path in paths:
            status = assoc.send_c_store(path)
            results.append(int(status.Status) if "Status" in status else -1)
        assoc.release()
        return results


@dataclass(frozen=True)
class Certificates:
    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path


def make_certificates(directory: Path) -> Certificates:
    """A throw-away CA that signs a server (127.0.0.1) and a client certificate, via `openssl`."""
    import subprocess

    def run(*args: str) -> None:
        subprocess.run(["openssl", *args], check=True, capture_output=True, cwd=directory)

    directory.mkdir(parents=True, exist_ok=True)
    run(
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-days",
        "2",
        "-subj",
        "/CN=kidneyct-test-ca",
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
    )
    (directory / "server.ext").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    for name in ("server", "client"):
        run(
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-subj",
            f"/CN=kidneyct-test-{name}",
            "-keyout",
            f"{name}.key",
            "-out",
            f"{name}.csr",
        )
        extra = ["-extfile", "server.ext"] if name == "server" else []
        run(
            "x509",
            "-req",
            "-in",
            f"{name}.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            "2",
            "-out",
            f"{name}.pem",
            *extra,
        )
    return Certificates(
        ca=directory / "ca.pem",
        server_cert=directory / "server.pem",
        server_key=directory / "server.key",
        client_cert=directory / "client.pem",
        client_key=directory / "client.key",
    )


def client_tls_args(certs: Certificates, *, with_client_cert: bool = True) -> tuple[Any, str]:
    """pynetdicom `tls_args` for a client that trusts our CA (and presents its certificate)."""
    import ssl

    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(certs.ca))
    if with_client_cert:
        context.load_cert_chain(certfile=certs.client_cert, keyfile=certs.client_key)
    return context, "127.0.0.1"


def write_variant(source: Path, target: Path, **changes: Any) -> Path:
    """A copy of `source` with dataset attributes changed (None deletes); file meta keeps the originals."""
    ds = dcmread(source)
    original_meta = (ds.file_meta.MediaStorageSOPClassUID, ds.file_meta.MediaStorageSOPInstanceUID)
    for keyword, value in changes.items():
        if value is None:
            delattr(ds, keyword)
        else:
            setattr(ds, keyword, value)
    # The C-STORE request is built from the file meta: keep it saying what the original said.
    ds.file_meta.MediaStorageSOPClassUID, ds.file_meta.MediaStorageSOPInstanceUID = original_meta
    ds.preamble = b"\x00" * 128
    ds.save_as(target, enforce_file_format=False)  # True would re-derive the meta from the dataset
    written = dcmread(target, stop_before_pixels=True).file_meta
    assert (written.MediaStorageSOPClassUID, written.MediaStorageSOPInstanceUID) == original_meta
    return target


def synthetic_ct(path: Path, *, study_uid: str, series_uid: str, number: int, size: int = 16) -> Path:
    """A small, valid CT Image Storage file with fresh SOP Instance UID."""
    import numpy as np
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = CTImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = CTImageStorage
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID = study_uid
    ds.SeriesInstanceUID = series_uid
    ds.Modality = "CT"
    ds.PatientName = "Doe^Jane"
    ds.PatientID = "PAT-0001"
    ds.InstanceNumber = number
    ds.Rows = ds.Columns = size
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated = ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 1
    ds.RescaleIntercept = -1024
    ds.RescaleSlope = 1
    ds.PixelData = (np.arange(size * size, dtype=np.int16) % 2000).tobytes()
    ds.save_as(path, enforce_file_format=True)
    return path


def kafka_publisher(bootstrap: str, *, timeout_s: float = 10.0) -> Publisher:
    from storage.stream.kafka_stream import KafkaConnection, KafkaPublisher

    return KafkaPublisher(
        KafkaConnection(bootstrap=bootstrap, client_id="ingest-test"), publish_timeout_s=timeout_s
    )


def create_topic(bootstrap: str, topic: str, *, partitions: int = 4) -> None:
    from storage.stream.kafka_stream import KafkaConnection, ensure_topics

    ensure_topics(KafkaConnection(bootstrap=bootstrap), [topic], partitions=partitions, replication_factor=1)


def read_topic(
    bootstrap: str, topic: str, *, expected: int, timeout_s: float = 30.0, settle_s: float = 1.5
) -> list[Any]:
    """Every instance record on `topic` (release hints left out): polls until `expected` arrived, then
    `settle_s` longer for extras."""
    import time

    from kafka import KafkaConsumer

    consumer = KafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        group_id=None,
    )
    records: list[Any] = []
    kept = lambda batch: [r for r in batch if ReleaseHint.of_message(r.value) is None]  # noqa: E731
    try:
        deadline = time.monotonic() + timeout_s
        while len(records) < expected and time.monotonic() < deadline:
            for batch in consumer.poll(timeout_ms=200).values():
                records.extend(kept(batch))
        settle = time.monotonic() + settle_s
        while time.monotonic() < settle:
            for batch in consumer.poll(timeout_ms=200).values():
                records.extend(kept(batch))
    finally:
        consumer.close()
    return records
