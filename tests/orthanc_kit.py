"""Orthanc (Debian) as a real PACS for end-to-end tests, and a TCP proxy that can stall a connection.

Importable from every test because `tests/` is on sys.path.
"""

from __future__ import annotations

import contextlib
import json
import socket
import subprocess
import threading
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from e2e_kit import wait_for

ORTHANC = "/usr/sbin/Orthanc"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class OrthancServer:
    """An Orthanc of its own (temporary config, storage and index), on free ports unless given."""

    def __init__(
        self,
        root: Path,
        *,
        our_port: int | None = None,
        dicom_port: int | None = None,
        http_port: int | None = None,
    ) -> None:
        root.mkdir(parents=True, exist_ok=True)
        self.http_port = http_port or free_port()
        self.dicom_port = dicom_port or free_port()
        config = {
            "Name": "kidneyct-e2e",
            "StorageDirectory": str(root / "storage"),
            "IndexDirectory": str(root / "index"),
            "HttpPort": self.http_port,
            "DicomPort": self.dicom_port,
            "DicomAet": "ORTHANC",
            "RemoteAccessAllowed": False,
            "AuthenticationEnabled": False,
            "HttpServerEnabled": True,
            "DicomServerEnabled": True,
            "Plugins": [],
            "DicomModalities": {"kidneyct": ["KIDNEYCT", "127.0.0.1", our_port]} if our_port else {},
            "DicomScuTimeout": 30,
        }
        (root / "orthanc.json").write_text(json.dumps(config))
        self._log = (root / "orthanc.log").open("a")
        self.proc = subprocess.Popen(
            [ORTHANC, str(root / "orthanc.json")], stdout=self._log, stderr=subprocess.STDOUT
        )
        wait_for(self._answers, timeout_s=60, what="Orthanc's REST API")

    def _answers(self) -> bool:
        if self.proc.poll() is not None:
            raise AssertionError(f"Orthanc exited with {self.proc.returncode}; see {self._log.name}")
        try:
            self.get("/system")
        except (urllib.error.URLError, ConnectionError):
            return False
        return True

    def request(self, method: str, path: str, body: bytes | None = None) -> Any:
        req = urllib.request.Request(f"http://127.0.0.1:{self.http_port}{path}", data=body, method=method)
        with urllib.request.urlopen(req, timeout=120) as response:
            return json.loads(response.read() or b"null")

    def get(self, path: str) -> Any:
        return self.request("GET", path)

    def file(self, instance_id: str) -> bytes:
        url = f"http://127.0.0.1:{self.http_port}/instances/{instance_id}/file"
        with urllib.request.urlopen(url, timeout=120) as response:
            return bytes(response.read())

    def instances_of_study(self, study_instance_uid: str) -> list[dict[str, Any]]:
        """Every instance Orthanc holds in the study, with its main DICOM tags."""
        found = self.request(
            "POST",
            "/tools/find",
            json.dumps({"Level": "Study", "Query": {"StudyInstanceUID": study_instance_uid}}).encode(),
        )
        out = []
        for study_id in found:
            for instance in self.get(f"/studies/{study_id}/instances"):
                tags = self.get(f"/instances/{instance['ID']}/simplified-tags")
                out.append({"ID": instance["ID"], **tags})
        return out

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self._log.close()


class StallingProxy:
    """Forwards TCP connections to a target; once `stall_after` client bytes went through, it stops
    forwarding (a transfer stuck mid-way) until `release()`, which drops the stalled connections and
    lets new ones through."""

    def __init__(self, target_port: int, *, stall_after: int | None) -> None:
        self.port = free_port()
        self._target = target_port
        self._stall_after = stall_after
        self.stalled = threading.Event()
        self._released = threading.Event()
        self._server = socket.create_server(("127.0.0.1", self.port))
        self._sockets: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._server.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(("127.0.0.1", self._target))
            except OSError:
                client.close()
                continue
            self._sockets += [client, upstream]
            limit = None if self._released.is_set() else self._stall_after
            threading.Thread(target=self._pump, args=(client, upstream, limit), daemon=True).start()
            threading.Thread(target=self._pump, args=(upstream, client, None), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket, limit: int | None) -> None:
        sent = 0
        try:
            while True:
                data = source.recv(4096)
                if not data:
                    break
                if limit is not None and sent + len(data) > limit:
                    sink.sendall(data[: max(0, limit - sent)])
                    self.stalled.set()
                    self._released.wait()
                    break
                sink.sendall(data)
                sent += len(data)
        except OSError:
            pass
        for s in (source, sink):
            with contextlib.suppress(OSError):
                s.close()

    def release(self) -> None:
        self._released.set()

    def close(self) -> None:
        self._released.set()
        self._server.close()
        for s in self._sockets:
            with contextlib.suppress(OSError):
                s.close()
