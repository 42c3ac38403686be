"""The association server: pynetdicom's threaded server with limits a hostile or broken peer cannot
talk its way around.

pynetdicom (3.0) counts every connected socket as an association, waits for a whole PDU however
long its header says it is, holds the TLS handshake in the accept loop, and leaves a chunked
C-STORE's temporary file behind when the association is aborted. Here:

- a connection that has not completed A-ASSOCIATE within `establish_timeout_s` is closed, however
  slowly it trickles bytes (a watchdog shuts its socket down), and the TLS handshake runs in the
  connection's own thread under the same deadline;
- only admitted associations take one of `max_associations` slots (`AssociationSlots`); idle
  or half-open connections are bounded separately (`max_pending`), so they lock no sender out;
- a PDU longer than we can accept (`max_pdu_bytes`) closes the connection before it is read;
- a partly received C-STORE dataset file is removed when its association ends.
"""

from __future__ import annotations

import contextlib
import os
import socket
import ssl
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import structlog
from pynetdicom import evt
from pynetdicom.association import Association
from pynetdicom.events import Event
from pynetdicom.transport import AssociationSocket, RequestHandler, ThreadedAssociationServer

log = structlog.get_logger(__name__)

# An A-ASSOCIATE-RQ proposing 128 contexts with every transfer syntax is well under this.
MAX_ASSOCIATE_PDU_BYTES = 1024 * 1024
# PDU header (type, reserved, length) that precedes the length it announces.
_PDU_HEADER_BYTES = 6
_UNLIMITED = 1 << 62


@dataclass(frozen=True)
class ServerLimits:
    max_associations: int = 16
    max_pending: int = 64
    establish_timeout_s: float = 10.0
    # Largest P-DATA PDU accepted after association: our advertised maximum PDU; 0 is unlimited.
    max_pdu_bytes: int = 0
    network_timeout_s: float | None = 60.0
    # SO_REUSEPORT: several listener processes bind the same port; the kernel spreads connections.
    reuse_port: bool = False


class AssociationSlots:
    """At most `limit` admitted associations at once; an association's slot is free once its
    thread has ended, however it ended (release, abort, kill), so no path can leak a slot."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._held: list[Association] = []
        self._lock = threading.Lock()

    def acquire(self, assoc: Association) -> bool:
        with self._lock:
            self._held = [a for a in self._held if _holds_slot(a) and a is not assoc]
            if len(self._held) >= self.limit:
                return False
            self._held.append(assoc)
            return True

    @property
    def in_use(self) -> int:
        with self._lock:
            return sum(1 for a in self._held if _holds_slot(a))


def _holds_slot(assoc: Association) -> bool:
    """Released or aborted associations free their slot at once, before their thread winds down."""
    return assoc.is_alive() and not (assoc.is_released or assoc.is_aborted)


class BoundedAssociationSocket(AssociationSocket):
    """Refuses to read a PDU longer than the association may send (returns nothing: Evt17)."""

    def recv(self, nr_bytes: int) -> bytearray:
        if nr_bytes > _PDU_HEADER_BYTES and nr_bytes > self._pdu_limit():
            log.warning(
                "association_aborted",
                reason="pdu_too_large",
                pdu_bytes=nr_bytes,
                limit_bytes=self._pdu_limit(),
                peer_address=_address(self.assoc),
            )
            return bytearray()
        return super().recv(nr_bytes)

    def _pdu_limit(self) -> int:
        if not self.assoc.is_established:
            return MAX_ASSOCIATE_PDU_BYTES
        limits: ServerLimits | None = getattr(getattr(self.assoc, "_server", None), "limits", None)
        if limits is None or limits.max_pdu_bytes <= 0:
            return _UNLIMITED
        # The peer must respect the maximum length we announced; a few header bytes of slack.
        return max(limits.max_pdu_bytes + 64, MAX_ASSOCIATE_PDU_BYTES)


@dataclass
class _Connection:
    """One accepted connection until its association is established (the watchdog's view)."""

    sock: socket.socket
    peer: str
    assoc: Association | None = None

    @property
    def established(self) -> bool:
        return self.assoc is not None and bool(self.assoc.is_established)


class BoundedRequestHandler(RequestHandler):
    """pynetdicom's handler with our socket class and the temporary-file clean-up."""

    server: HardenedAssociationServer

    def _create_association(self) -> Association:
        assoc = super()._create_association()
        # pynetdicom's wrapper already queued its connection event; give it our `recv` in place.
        assoc.dul.socket.__class__ = BoundedAssociationSocket
        assoc.bind(evt.EVT_CONN_CLOSE, _on_closed)
        assoc.bind(evt.EVT_ABORTED, _on_closed)
        self.server.attach(self.request, assoc)
        return assoc


class HardenedAssociationServer(ThreadedAssociationServer):
    def __init__(self, *args: Any, limits: ServerLimits, **kwargs: Any) -> None:
        self.limits = limits
        self._connections: dict[int, _Connection] = {}
        self._handshaking = 0
        self._lock = threading.Lock()
        super().__init__(*args, request_handler=BoundedRequestHandler, **kwargs)  # type: ignore[misc]

    def server_bind(self) -> None:
        if self.limits.reuse_port:
            assert self.socket is not None
            self.socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        super().server_bind()

    def get_request(self) -> tuple[socket.socket, tuple[str, int]]:
        """Accept only; the TLS handshake runs in the connection's thread (`process_request_thread`)."""
        assert self.socket is not None  # bound in __init__
        client, address = self.socket.accept()
        return client, address

    def verify_request(self, request: Any, client_address: Any) -> bool:
        """Refuse a connection beyond `max_pending` not-yet-established ones."""
        with self._lock:
            self._connections = {
                key: c for key, c in self._connections.items() if not c.established and _alive(c)
            }
            pending = len(self._connections) + self._handshaking
            if pending < self.limits.max_pending:
                self._handshaking += 1
                return True
        log.warning(
            "connection_refused", reason="too_many_pending_connections", peer_address=str(client_address[0])
        )
        return False

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        connection = _Connection(sock=request, peer=str(client_address[0]))
        watchdog = threading.Timer(self.limits.establish_timeout_s, _close_unless_established, (connection,))
        watchdog.daemon = True
        watchdog.start()
        try:
            if self.ssl_context is not None:
                request = connection.sock = self._handshake(request, connection.peer)
            request.settimeout(self.limits.network_timeout_s)
            with self._lock:
                self._handshaking -= 1
                self._connections[id(request)] = connection
            self.finish_request(request, client_address)
        except Exception as exc:  # noqa: BLE001 - one broken connection never stops the server
            log.warning("connection_failed", peer_address=connection.peer, error=type(exc).__name__)
            with self._lock:
                if self._connections.pop(id(request), None) is None:
                    self._handshaking -= 1
            watchdog.cancel()
            self.shutdown_request(request)

    def attach(self, sock: socket.socket, assoc: Association) -> None:
        with self._lock:
            connection = self._connections.get(id(sock))
        if connection is not None:
            connection.assoc = assoc

    def _handshake(self, sock: socket.socket, peer: str) -> ssl.SSLSocket:
        sock.settimeout(self.limits.establish_timeout_s)
        try:
            return self.ssl_context.wrap_socket(sock, server_side=True)  # type: ignore[union-attr]
        except OSError as exc:  # ssl.SSLError and socket timeouts are OSErrors
            log.warning(
                "association_rejected",
                reason="tls_handshake_failed",
                peer_address=peer,
                error=type(exc).__name__,
            )
            callback = getattr(self.ssl_context, "on_handshake_failure", None)
            if callback is not None:
                callback(peer)
            raise

    @property
    def pending_connections(self) -> int:
        with self._lock:
            return sum(1 for c in self._connections.values() if not c.established and _alive(c))


def _alive(connection: _Connection) -> bool:
    return connection.assoc is None or connection.assoc.is_alive()


def _on_closed(event: Event) -> None:
    remove_partial_dataset(event.assoc)


def remove_partial_dataset(assoc: Association) -> None:
    """Delete the temporary file of a C-STORE dataset whose receipt never finished."""
    message = getattr(getattr(assoc, "dimse", None), "message", None)
    file = getattr(message, "_data_set_file", None)
    path = getattr(message, "_data_set_path", None)
    if file is None or path is None:
        return
    with contextlib.suppress(OSError):
        file.close()
    with contextlib.suppress(FileNotFoundError):
        size = Path(path).stat().st_size
        os.unlink(Path(path))
        log.info("partial_dataset_removed", size_bytes=size)


def _close_unless_established(connection: _Connection) -> None:
    """Wake a reader blocked on the socket (recv returns nothing): pynetdicom then closes it (Evt17)."""
    if connection.established or not _alive(connection):
        return
    with contextlib.suppress(OSError):
        connection.sock.shutdown(socket.SHUT_RDWR)
    log.warning(
        "connection_closed", reason="association_not_established_in_time", peer_address=connection.peer
    )


def _address(assoc: Association) -> str:
    try:
        return str(assoc.requestor.address)
    except Exception:  # noqa: BLE001 - only for a log line
        return "unknown"
