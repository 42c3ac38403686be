"""A private, real Kafka broker that one test owns: it can be stopped, killed, paused and started
again on the same port and data, without disturbing the shared broker of `kafka.sh`.

    with KafkaProcess.create(libs) as broker:
        produce(broker.bootstrap)
        broker.stop()        # clean shutdown; broker.kill() for a crash
        broker.start()       # same port, same data: committed records and offsets are still there

`python kafka_process.py ping HOST:PORT` checks that a broker answers a metadata request (used by
`kafka.sh`). The jars come from `kafka.sh fetch`.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
KAFKA_VERSION = "3.9.1"
PROPERTIES_TEMPLATE = HERE / "kafka-server.properties.in"
LOG4J_PROPERTIES = HERE / "kafka-log4j.properties"


class KafkaProcessError(RuntimeError):
    """The broker could not be formatted, started or stopped."""


def default_libs_dir(services_dir: str | os.PathLike[str] | None = None) -> Path:
    """Where `kafka.sh fetch` puts the jars (`$KIDNEYCT_SERVICES_DIR` or `<repo>/.services`)."""
    base = Path(services_dir) if services_dir else REPO / ".services"
    return base / f"kafka-{KAFKA_VERSION}" / "libs"


def libs_available(libs: Path) -> bool:
    return (libs / ".complete").is_file() and any(libs.glob("kafka_2.13-*.jar"))


def free_port() -> int:
    """A port that nothing listens on now (the kernel picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def ping(bootstrap: str, *, timeout_s: float = 5.0) -> bool:
    """True when a broker at `bootstrap` answers a metadata request within `timeout_s`."""
    from kafka import KafkaAdminClient
    from kafka.errors import KafkaError

    timeout_ms = int(timeout_s * 1000)
    try:
        admin = KafkaAdminClient(
            bootstrap_servers=bootstrap,
            request_timeout_ms=timeout_ms,
            client_id="kidneyct-ping",
        )
    except (KafkaError, OSError, ValueError):
        return False
    try:
        admin.list_topics()
        return True
    except (KafkaError, OSError):
        return False
    finally:
        admin.close()


class KafkaProcess:
    """One real single-node KRaft broker in its own directory, on its own loopback ports."""

    def __init__(
        self,
        *,
        libs: Path,
        work_dir: Path,
        port: int | None = None,
        controller_port: int | None = None,
        heap: str = "256m",
        start_timeout_s: float = 90.0,
        owns_work_dir: bool = False,
    ) -> None:
        if not libs_available(libs):
            raise KafkaProcessError(f"Kafka jars missing in {libs}: run tests/services/kafka.sh fetch")
        self.libs = libs
        self.work_dir = work_dir
        self.port = port or free_port()
        self.controller_port = controller_port or free_port()
        self.heap = heap
        self.start_timeout_s = start_timeout_s
        self._owns_work_dir = owns_work_dir
        self._process: subprocess.Popen[bytes] | None = None
        self.data_dir = work_dir / "data"
        self.log_file = work_dir / "kafka.log"
        self.properties_file = work_dir / "server.properties"

    @classmethod
    def create(cls, libs: Path | None = None, **kwargs: object) -> KafkaProcess:
        """A broker in a new temporary directory that `close()` removes."""
        work_dir = Path(tempfile.mkdtemp(prefix="kidneyct-kafka-"))
        return cls(libs=libs or default_libs_dir(), work_dir=work_dir, owns_work_dir=True, **kwargs)  # type: ignore[arg-type]

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    def is_running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def _java(self, main_class: str, *args: str) -> list[str]:
        return [
            "java",
            "-Xms64m",
            f"-Xmx{self.heap}",
            "-XX:+UseSerialGC",
            # C1 only: a short-lived test broker starts about a third faster on 2 cores.
            "-XX:TieredStopAtLevel=1",
            "-Djava.awt.headless=true",
            f"-Dlog4j.configuration=file:{LOG4J_PROPERTIES}",
            f"-Dkafka.logs.dir={self.work_dir}",
            "-cp",
            f"{self.libs}/*",
            main_class,
            *args,
        ]

    def _format_once(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        template = PROPERTIES_TEMPLATE.read_text()
        self.properties_file.write_text(
            template.replace("@PORT@", str(self.port))
            .replace("@CONTROLLER_PORT@", str(self.controller_port))
            .replace("@LOG_DIR@", str(self.data_dir))
        )
        if (self.data_dir / "meta.properties").exists():
            return
        # A cluster id is 16 random bytes in unpadded base64url: 22 characters.
        cluster_id = secrets.token_urlsafe(16)[:22]
        result = subprocess.run(
            self._java(
                # --cluster-id=...: an id may start with "-", which argparse would take for an option.
                "kafka.tools.StorageTool",
                "format",
                f"--cluster-id={cluster_id}",
                "-c",
                str(self.properties_file),
            ),
            capture_output=True,
            text=True,
            check=False,
        )
        if result.returncode != 0:
            raise KafkaProcessError(f"kafka storage format failed: {result.stdout}{result.stderr}")

    def start(self) -> None:
        """Start the broker (formatting its storage the first time) and wait until it answers."""
        if self.is_running():
            return
        self._format_once()
        log = self.log_file.open("ab")
        try:
            self._process = subprocess.Popen(
                self._java("kafka.Kafka", str(self.properties_file)),
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        finally:
            log.close()
        self.wait_until_ready()

    def wait_until_ready(self) -> None:
        deadline = time.monotonic() + self.start_timeout_s
        while True:
            if not self.is_running():
                raise KafkaProcessError(f"broker exited while starting:\n{self.log_tail()}")
            if ping(self.bootstrap, timeout_s=2.0):
                return
            if time.monotonic() >= deadline:
                raise KafkaProcessError(
                    f"broker did not answer within {self.start_timeout_s:.0f}s:\n{self.log_tail()}"
                )
            time.sleep(0.25)

    def stop(self, timeout_s: float = 60.0) -> None:
        """A clean shutdown (SIGTERM); data and ports are kept for `start()`."""
        if self._process is None:
            return
        if self._process.poll() is None:
            self._resume_quietly()
            self._process.terminate()
            try:
                self._process.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
        self._process = None

    def kill(self) -> None:
        """A crash (SIGKILL): nothing is flushed or handed over."""
        if self._process is None:
            return
        if self._process.poll() is None:
            self._process.kill()
            self._process.wait()
        self._process = None

    def pause(self) -> None:
        """Freeze the broker (SIGSTOP): connections stay open but nothing answers."""
        if self.is_running():
            assert self._process is not None
            os.kill(self._process.pid, signal.SIGSTOP)

    def resume(self) -> None:
        """Undo `pause()`."""
        if self.is_running():
            assert self._process is not None
            os.kill(self._process.pid, signal.SIGCONT)

    def _resume_quietly(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            self.resume()

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_file.read_text(errors="replace").splitlines()[-lines:])
        except FileNotFoundError:
            return "(no log)"

    def close(self) -> None:
        """Stop the broker and remove its directory when it was created by `create()`."""
        self.stop()
        if self._owns_work_dir:
            shutil.rmtree(self.work_dir, ignore_errors=True)

    def __enter__(self) -> KafkaProcess:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    ping_parser = sub.add_parser("ping", help="exit 0 when the broker answers a metadata request")
    ping_parser.add_argument("bootstrap")
    ping_parser.add_argument("--timeout", type=float, default=5.0)
    args = parser.parse_args()
    # kafka-python logs every refused connection; a ping only needs the answer.
    logging.basicConfig(level=logging.CRITICAL)
    return 0 if ping(args.bootstrap, timeout_s=args.timeout) else 1


if __name__ == "__main__":
    raise SystemExit(main())
