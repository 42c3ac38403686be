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
from pynetdicom import AE, _config
from pynetdicom.dsutils import split_dataset

from ingest.app import build_listener
from ingest.listener import Listener
from ingest.metrics import IngestMetrics
from kidneyct.settings import Settings
from storage.stream import Publisher

LOCALHOST = "127.0.0.1"
OUR_AE = "KIDNEYCT"


@dataclass
class MemoryPublisher:
    """Keeps published events in a list; `failure` makes every publish raise it."""

    records: list[tuple[str, bytes, bytes]] = field(default_factory=list)
    failure: Exception | None = None
    closed: bool = False
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def publish(self, topic: str, key: bytes, value: bytes) -> None:
        if self.failure is not None:
            raise self.failure
        with self._lock:
            self.records.append((topic, key, value))

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
    pairs = []
    for path in paths:
        meta = dcmread(path, stop_before_pixels=True).file_meta
        pairs.append((str(meta.MediaStorageSOPClassUID), str(meta.TransferSyntaxUID)))
    return list(dict.fromkeys(pairs))


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
    previous = _config.STORE_SEND_CHUNKED_DATASET
    _config.STORE_SEND_CHUNKED_DATASET = True  # send the file's bytes, not a re-encoding
    try:
        assoc = ae.associate(LOCALHOST, port, ae_title=called_ae, tls_args=tls_args)
        if not assoc.is_established:
            return None
        results = []
        for path in paths:
            status = assoc.send_c_store(path)
            results.append(int(status.Status) if "Status" in status else -1)
        assoc.release()
        return results
    finally:
        _config.STORE_SEND_CHUNKED_DATASET = previous
