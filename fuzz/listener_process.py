"""A real `kidneyct listen` process on the embedded default, on loopback, for the fuzzer.

`root` is the checkout whose code the listener runs (this one, or an older one to compare), and
its log (stderr) is kept to check that every line is JSON and no patient marker reached it.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class ListenerProcess:
    process: subprocess.Popen[bytes]
    port: int
    metrics_port: int
    data_dir: Path
    log_path: Path
    temp_dir: Path

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def archive(self) -> Path:
        return self.data_dir / "archive"

    def alive(self) -> bool:
        return self.process.poll() is None

    def rss_mib(self) -> float:
        return _status_kib(self.pid, "VmRSS") / 1024

    def peak_rss_mib(self) -> float:
        return _status_kib(self.pid, "VmHWM") / 1024

    def reset_peak_rss(self) -> None:
        """Start the peak (VmHWM) again from the current RSS (Linux: 5 > /proc/PID/clear_refs)."""
        with contextlib.suppress(OSError):
            Path(f"/proc/{self.pid}/clear_refs").write_text("5")

    def log_lines(self) -> list[str]:
        return self.log_path.read_text(errors="replace").splitlines()


def _status_kib(pid: int, field: str) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return float(line.split()[1])
    except OSError:
        pass
    return float("nan")


def _env(
    root: Path, data_dir: Path, port: int, metrics_port: int, extra: Mapping[str, str]
) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("KIDNEYCT_")}
    env.update(
        {
            "PYTHONPATH": str(root),
            "KIDNEYCT_DATA_DIR": str(data_dir),
            "KIDNEYCT_DICOM_HOST": "127.0.0.1",
            "KIDNEYCT_DICOM_PORT": str(port),
            "KIDNEYCT_METRICS_HOST": "127.0.0.1",
            "KIDNEYCT_METRICS_PORT": str(metrics_port),
            "KIDNEYCT_LOG_FORMAT": "json",
            "KIDNEYCT_AE_TITLE": "KIDNEYCT",
            "TMPDIR": str(data_dir / "tmp"),  # where pynetdicom's received datasets go
        }
    )
    env.update(extra)
    return env


@contextlib.contextmanager
def running_listener(
    root: Path, work_dir: Path, *, settings: Mapping[str, str] | None = None, start_timeout_s: float = 60
) -> Iterator[ListenerProcess]:
    """Migrate the embedded database, start `kidneyct listen`, yield it, stop it (SIGTERM)."""
    data_dir = work_dir / f"listener-{time.monotonic_ns()}"
    (data_dir / "tmp").mkdir(parents=True)
    port, metrics_port = free_port(), free_port()
    env = _env(root, data_dir, port, metrics_port, settings or {})
    command = [sys.executable, "-c", "from kidneyct.cli import main; main()"]
    subprocess.run([*command, "db", "upgrade"], cwd=root, env=env, check=True, capture_output=True)
    log_path = data_dir / "listener.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen([*command, "listen"], cwd=root, env=env, stdout=log, stderr=log)
    listener = ListenerProcess(process, port, metrics_port, data_dir, log_path, data_dir / "tmp")
    try:
        _wait_for_port(listener, start_timeout_s)
        yield listener
    finally:
        if listener.alive():
            process.terminate()
            try:
                process.wait(timeout=40)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def _wait_for_port(listener: ListenerProcess, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if not listener.alive():
            raise RuntimeError(f"listener exited at start:\n{listener.log_path.read_text()[-3000:]}")
        with (
            contextlib.suppress(OSError),
            socket.create_connection(("127.0.0.1", listener.port), timeout=0.5),
        ):
            return
        time.sleep(0.1)
    raise TimeoutError("listener did not open its port")
