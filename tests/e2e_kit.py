"""Helpers of the end-to-end tests: kidneyct commands as real subprocesses, their JSON logs, waiting.

Importable from every test because `tests/` is on sys.path.
"""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy import create_engine, text

T = TypeVar("T")
# The console script beside this interpreter (the venv's), not whatever is first on PATH.
KIDNEYCT = [str(Path(sys.executable).with_name("kidneyct"))]


def wait_for(predicate: Callable[[], T], *, timeout_s: float, what: str, interval_s: float = 0.2) -> T:
    """Poll `predicate` until it returns something truthy; fail with `what` after the deadline."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s:.0f} s waiting for {what}")
        time.sleep(interval_s)


class Process:
    """A `kidneyct` subprocess whose JSON log lines are parsed as they arrive."""

    def __init__(
        self, args: list[str], env: Mapping[str, str], log_path: Path, *, cwd: Path | None = None
    ) -> None:
        self.log_path = log_path
        self._file = log_path.open("a")
        self.proc = subprocess.Popen(
            args,
            env=dict(env),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            bufsize=1,
            cwd=cwd,
        )
        self.events: list[dict[str, Any]] = []
        self._seen_at: dict[str, float] = {}  # event name -> time.monotonic() when first read
        self._lines: queue.Queue[str] = queue.Queue()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self._file.write(line)
            self._file.flush()
            try:
                event = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(event, dict):
                self._seen_at.setdefault(str(event.get("event")), time.monotonic())
                self.events.append(event)

    def wait_event(self, name: str, *, timeout_s: float = 120.0) -> dict[str, Any]:
        def found() -> dict[str, Any] | None:
            if self.proc.poll() is not None and not any(e.get("event") == name for e in self.events):
                raise AssertionError(
                    f"process exited ({self.proc.returncode}) before {name}: see {self.log_path}"
                )
            return next((e for e in self.events if e.get("event") == name), None)

        return wait_for(found, timeout_s=timeout_s, what=f"log event {name} (log: {self.log_path})")

    def seen_at(self, name: str) -> float:
        """time.monotonic() when the log event `name` was first read."""
        return self._seen_at[name]

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=30)

    def terminate(self, timeout_s: float = 60.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                self.kill()
        self._reader.join(timeout=5)
        self._file.close()
        return self.proc.returncode


@contextmanager
def kidneyct(args: list[str], env: Mapping[str, str], log_path: Path) -> Iterator[Process]:
    """Run `kidneyct ARGS`; SIGTERM it (then SIGKILL) on the way out."""
    process = Process([*KIDNEYCT, *args], env, log_path)
    try:
        yield process
    finally:
        process.terminate()


def kidneyct_env(data_dir: Path, **settings: object) -> dict[str, str]:
    """The environment of a kidneyct subprocess: JSON logs, loopback, a free port, our settings."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("KIDNEYCT_")}
    env.update(
        {
            "KIDNEYCT_DATA_DIR": str(data_dir),
            "KIDNEYCT_LOG_FORMAT": "json",
            "KIDNEYCT_DICOM_HOST": "127.0.0.1",
            "KIDNEYCT_DICOM_PORT": "0",
            "KIDNEYCT_DEVICE": "cpu",
            "TF_CPP_MIN_LOG_LEVEL": "2",
        }
    )
    env.update({f"KIDNEYCT_{k.upper()}": str(v) for k, v in settings.items()})
    return env


def query(url: str, sql: str, **params: object) -> list[Any]:
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            return list(conn.execute(text(sql), params))
    finally:
        engine.dispose()


def predicted_sops(url: str) -> dict[str, int]:
    """SOP Instance UID -> number of prediction rows (all frames, all model versions)."""
    rows = query(url, "SELECT sop_instance_uid, COUNT(*) FROM instance_results GROUP BY sop_instance_uid")
    return {uid: n for uid, n in rows}


def dcmtk_tool(name: str) -> str | None:
    """The DCMTK program `name` on PATH, skipping same-named tools of other packages (pynetdicom's storescu)."""
    for folder in os.environ.get("PATH", "").split(os.pathsep):
        candidate = Path(folder) / name
        if not (candidate.is_file() and os.access(candidate, os.X_OK)):
            continue
        result = subprocess.run([str(candidate), "--version"], capture_output=True, text=True, check=False)
        if "dcmtk" in (result.stdout + result.stderr).lower():
            return str(candidate)
    return None


def kafka_postgres_env(
    data_dir: Path,
    *,
    bootstrap: str,
    database_url: str,
    unique_name: Callable[[str], str],
    **settings: object,
) -> dict[str, str]:
    """Settings for kidneyct subprocesses on a real Kafka and PostgreSQL, with topics and group of this test."""
    return kidneyct_env(
        data_dir,
        kafka_bootstrap=bootstrap,
        database_url=database_url,
        topic_instances=unique_name("instances"),
        topic_results=unique_name("results"),
        topic_dead_letter=unique_name("dead-letter"),
        consumer_group=unique_name("classifier"),
        kafka_partitions=2,
        **settings,
    )


def run_kidneyct(args: list[str], env: Mapping[str, str]) -> subprocess.CompletedProcess[str]:
    """Run a short kidneyct command to completion; fail with its output when it fails."""
    result = subprocess.run([*KIDNEYCT, *args], env=dict(env), capture_output=True, text=True, check=False)
    assert result.returncode == 0, f"kidneyct {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}"
    return result


def completed_studies(url: str) -> dict[str, tuple[int, str]]:
    """Study Instance UID -> (n_instances, label) of complete study results."""
    rows = query(url, "SELECT study_instance_uid, n_instances, label, complete FROM study_results")
    return {uid: (n, label) for uid, n, label, complete in rows if complete}
