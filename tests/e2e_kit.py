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

    def __init__(self, args: list[str], env: Mapping[str, str], log_path: Path) -> None:
        self.log_path = log_path
        self._file = log_path.open("a")
        self.proc = subprocess.Popen(
            args, env=dict(env), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1
        )
        self.events: list[dict[str, Any]] = []
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
                self.events.append(event)

    def wait_event(self, name: str, *, timeout_s: float = 120.0) -> dict[str, Any]:
        def found() -> dict[str, Any] | None:
            if self.proc.poll() is not None and not any(e.get("event") == name for e in self.events):
                raise AssertionError(
                    f"process exited ({self.proc.returncode}) before {name}: see {self.log_path}"
                )
            return next((e for e in self.events if e.get("event") == name), None)

        return wait_for(found, timeout_s=timeout_s, what=f"log event {name} (log: {self.log_path})")

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
