"""`kidneyct listen` as a real process against the real Kafka: SIGTERM drains and exits 0, and an
archive directory that the process may not write answers a failure until it may again."""

from __future__ import annotations

import json
import os
import queue
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from ingest_support import LOCALHOST, OUR_AE, create_topic, read_topic, send_files, synthetic_ct
from pydicom import dcmread
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid
from pynetdicom import AE

from ingest import statuses
from storage.stream.events import InstanceEvent

pytestmark = pytest.mark.kafka

KIDNEYCT = Path(sys.executable).with_name("kidneyct")
SETPRIV = shutil.which("setpriv")
# Root ignores file permissions through these capabilities; without them it is an ordinary owner.
WITHOUT_ROOT_OVERRIDES = ("--bounding-set=-dac_override,-dac_read_search,-fowner", "--")


class ListenerProcess:
    """A `kidneyct listen` subprocess whose JSON log lines are collected as they come."""

    def __init__(self, env: dict[str, str], *, cwd: Path, prefix: tuple[str, ...] = ()) -> None:
        self.lines: list[dict[str, Any]] = []
        self._new: queue.Queue[dict[str, Any]] = queue.Queue()
        self.process = subprocess.Popen(
            [*prefix, str(KIDNEYCT), "listen"],
            env=env,
            cwd=cwd,
            stderr=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            text=True,
        )
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stderr is not None
        for raw in self.process.stderr:
            try:
                entry = json.loads(raw)
            except ValueError:
                continue  # a library's plain log line
            self.lines.append(entry)
            self._new.put(entry)

    def wait_for(self, event: str, timeout_s: float = 60.0) -> dict[str, Any]:
        for entry in self.lines:
            if entry.get("event") == event:
                return entry
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            try:
                entry = self._new.get(timeout=0.2)
            except queue.Empty:
                if self.process.poll() is not None:
                    break
                continue
            if entry.get("event") == event:
                return entry
        raise AssertionError(f"no {event!r} log line; got {[e.get('event') for e in self.lines]}")

    def events(self, event: str) -> list[dict[str, Any]]:
        return [e for e in self.lines if e.get("event") == event]

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout=60)


def _env(*, archive: Path, data: Path, bootstrap: str, topic: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("KIDNEYCT_")}
    env.update(
        KIDNEYCT_DICOM_HOST=LOCALHOST,
        KIDNEYCT_DICOM_PORT="0",
        KIDNEYCT_AE_TITLE=OUR_AE,
        KIDNEYCT_ARCHIVE_DIR=str(archive),
        KIDNEYCT_DATA_DIR=str(data),
        KIDNEYCT_KAFKA_BOOTSTRAP=bootstrap,
        KIDNEYCT_TOPIC_INSTANCES=topic,
        KIDNEYCT_LOG_FORMAT="json",
        KIDNEYCT_SHUTDOWN_GRACE_S="30",
        HOME=str(data),
    )
    return env


def _ct(directory: Path, name: str) -> Path:
    return synthetic_ct(directory / name, study_uid=generate_uid(), series_uid=generate_uid(), number=1)


def test_sigterm_drains_in_flight_association_and_exits_zero(
    tmp_path: Path, kafka_bootstrap: str, unique_name
) -> None:
    """After SIGTERM no new association is accepted, the open one still stores, then exit code 0."""
    topic = unique_name("instances")
    create_topic(kafka_bootstrap, topic)
    data = tmp_path / "data"
    data.mkdir()
    listener = ListenerProcess(
        _env(archive=tmp_path / "archive", data=data, bootstrap=kafka_bootstrap, topic=topic), cwd=data
    )
    try:
        port = int(listener.wait_for("listener_started")["port"])
        first, second, late = (
            _ct(tmp_path, "first.dcm"),
            _ct(tmp_path, "second.dcm"),
            _ct(tmp_path, "late.dcm"),
        )
        ae = AE(ae_title="INFLIGHT")
        ae.add_requested_context(CTImageStorage, ExplicitVRLittleEndian)
        assoc = ae.associate(LOCALHOST, port, ae_title=OUR_AE)
        assert assoc.is_established
        assert assoc.send_c_store(first).Status == statuses.SUCCESS

        listener.process.send_signal(signal.SIGTERM)
        listener.wait_for("listener_stopped_accepting")
        assert send_files(port, [late]) is None
        assert assoc.send_c_store(second).Status == statuses.SUCCESS
        assoc.release()
        assert listener.process.wait(timeout=60) == 0
    finally:
        listener.stop()
    assert listener.wait_for("listener_stopped")["drained"] is True
    listener.wait_for("listener_exited")
    events = [InstanceEvent.from_json(r.value) for r in read_topic(kafka_bootstrap, topic, expected=2)]
    assert sorted(e.sop_instance_uid for e in events) == sorted(
        str(dcmread(p).SOPInstanceUID) for p in (first, second)
    )


def test_unwritable_archive_answers_failure_until_writable(
    tmp_path: Path, kafka_bootstrap: str, unique_name
) -> None:
    """The process may not write the archive: 0xA700 and no event; once it may, the re-send succeeds."""
    prefix: tuple[str, ...] = ()
    if os.geteuid() == 0:
        if SETPRIV is None:
            pytest.skip("running as root needs setpriv (util-linux) to make permissions apply")
        prefix = (SETPRIV, *WITHOUT_ROOT_OVERRIDES)
    topic = unique_name("instances")
    create_topic(kafka_bootstrap, topic)
    archive = tmp_path / "archive"
    archive.mkdir()
    archive.chmod(0o555)
    data = tmp_path / "data"
    data.mkdir()
    listener = ListenerProcess(
        _env(archive=archive, data=data, bootstrap=kafka_bootstrap, topic=topic), cwd=data, prefix=prefix
    )
    try:
        port = int(listener.wait_for("listener_started")["port"])
        instance = _ct(tmp_path, "instance.dcm")
        assert send_files(port, [instance]) == [statuses.OUT_OF_RESOURCES]
        assert listener.wait_for("instance_rejected")["reason"] == "archive_failed"
        archive.chmod(0o755)
        assert send_files(port, [instance]) == [statuses.SUCCESS]
        assert listener.stop() == 0
    finally:
        archive.chmod(0o755)
        listener.stop()
    [record] = read_topic(kafka_bootstrap, topic, expected=1, settle_s=2.0)
    assert InstanceEvent.from_json(record.value).sop_instance_uid == dcmread(instance).SOPInstanceUID
