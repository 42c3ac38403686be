"""The association server: pynetdicom's threaded server with limits a hostile or broken peer cannot
talk its way around.

pynetdicom (3.0) counts every connected socket as an association, holds the TLS handshake in the
accept loop, and closes a connection only when its peer or a read timeout (restarted by every
byte) lets it. Here (the reading side of each connection is `ingest.transport`):

- only admitted associations take one of `max_associations` slots (`AssociationSlots`), and at
  most `max_associations_per_peer` of them come from one source address;
- connections that have not completed A-ASSOCIATE are bounded separately (`max_pending`, and
  `max_pending_per_peer` from one address), so idle or half-open sockets lock no sender out;
- one watchdog thread closes every connection at its deadlines, however slowly its peer trickles
  bytes: `establish_timeout_s` from connect to A-ASSOCIATE-AC (TLS handshake included; the
  handshake runs in the connection's own thread), and `association_max_s` for the whole
  association. Closing means shutting the socket down: the thread reading it returns at once,
  pynetdicom ends the association and closes the file descriptor.
"""

from __future__ import annotations

import collections
import socket
import ssl
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import structlog
from pynetdicom import evt
from pynetdicom.association import Association
from pynetdicom.events import Event
from pynetdicom.transport import RequestHandler, ThreadedAssociationServer

from ingest.transport import ConnectionLimits, harden, shut

log = structlog.get_logger(__name__)

# How often the watchdog looks at the connections: the slack on every connection deadline.
_WATCH_INTERVAL_S = 0.1


@dataclass(frozen=True)
class ServerLimits:
    max_associations: int = 16
    max_associations_per_peer: int = 4
    max_pending: int = 64
    max_pending_per_peer: int = 4
    establish_timeout_s: float = 10.0
    # Largest P-DATA PDU accepted after association: our advertised maximum PDU; 0 is unlimited.
    max_pdu_bytes: int = 0
    # Idle time between PDUs, and the time one PDU may take from its first byte to its last.
    network_timeout_s: float | None = 60.0
    message_gap_timeout_s: float = 10.0
    association_max_s: float = 3600.0
    # SO_REUSEPORT: several listener processes bind the same port; the kernel spreads connections.
    reuse_port: bool = False

    def connection(self) -> ConnectionLimits:
        return ConnectionLimits(
            max_pdu_bytes=self.max_pdu_bytes,
            pdu_read_timeout_s=self.network_timeout_s,
            message_gap_timeout_s=self.message_gap_timeout_s,
        )


class AssociationSlots:
    """At most `limit` admitted associations at once, `per_peer` of them from one address; an
    association's slot is free once it is released or aborted, or its thread has ended, however
    it ended (release, abort, kill), so no path can leak a slot."""

    def __init__(self, limit: int, per_peer: int | None = None) -> None:
        self.limit = limit
        self.per_peer = per_peer if per_peer is not None else limit
        self._held: list[Association] = []
        self._lock = threading.Lock()

    def admit(self, assoc: Association) -> str | None:
        """Take a slot for `assoc`; None when admitted, else the reason it is not."""
        peer = _peer(assoc)
        with self._lock:
            self._held = [a for a in self._held if _holds_slot(a) and a is not assoc]
            if len(self._held) >= self.limit:
                return "too_many_associations"
            if sum(1 for a in self._held if _peer(a) == peer) >= self.per_peer:
                return "too_many_associations_from_peer"
            self._held.append(assoc)
            return None


def _holds_slot(assoc: Association) -> bool:
    """Released or aborted associations free their slot at once, before their thread winds down."""
    return assoc.is_alive() and not (assoc.is_released or assoc.is_aborted)


def _peer(assoc: Association) -> str:
    try:
        return str(assoc.requestor.address)
    except Exception:  # noqa: BLE001 - an association without an address counts as one peer
        return "unknown"


@dataclass
class _Connection:
    """One accepted connection, from accept until its association's thread has ended."""

    sock: socket.socket
    peer: str
    accepted_at: float = field(default_factory=time.monotonic)
    assoc: Association | None = None
    established: bool = False
    closed: bool = False
    woken: bool = False  # its association thread was told no A-ASSOCIATE-RQ will come

    def ended(self) -> bool:
        assoc = self.assoc
        if assoc is None or not assoc._started_dul:  # type: ignore[attr-defined]
            # Closed before pynetdicom's thread ran (refused, handshake failed, start failed).
            return self.closed and (assoc is None or not assoc.is_alive())
        return not assoc.is_alive()

    @property
    def pending(self) -> bool:
        # A connection closed (by us or its peer) no longer counts, whatever pynetdicom's thread
        # still waits for (the ACSE timeout, for one that never sent A-ASSOCIATE-RQ).
        return not self.established and not self.closed and self.sock.fileno() != -1 and not self.ended()


class BoundedRequestHandler(RequestHandler):
    """pynetdicom's handler with our socket, DUL and association classes."""

    server: HardenedAssociationServer

    def _create_association(self) -> Association:
        assoc = super()._create_association()
        # pynetdicom's wrapper already queued its connection event; give it our classes in place.
        harden(assoc, self.server.limits.connection())
        self.server.attach(self.request, assoc)
        return assoc


class HardenedAssociationServer(ThreadedAssociationServer):
    def __init__(self, *args: Any, limits: ServerLimits, **kwargs: Any) -> None:
        self.limits = limits
        self._connections: dict[int, _Connection] = {}
        self._lock = threading.Lock()
        self._closing = threading.Event()
        super().__init__(*args, request_handler=BoundedRequestHandler, **kwargs)  # type: ignore[misc]
        self._watchdog = threading.Thread(target=self._watch, name="ConnectionWatchdog", daemon=True)
        self._watchdog.start()

    def server_bind(self) -> None:
        if self.limits.reuse_port:
            assert self.socket is not None
            self.socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        super().server_bind()

    def server_close(self) -> None:
        self._closing.set()
        super().server_close()

    def get_request(self) -> tuple[socket.socket, tuple[str, int]]:
        """Accept only; the TLS handshake runs in the connection's thread (`process_request_thread`)."""
        assert self.socket is not None  # bound in __init__
        client, address = self.socket.accept()
        return client, address

    def verify_request(self, request: Any, client_address: Any) -> bool:
        """Refuse a connection beyond `max_pending` not-yet-associated ones, or beyond
        `max_pending_per_peer` of them from its address (closed at once, nothing read)."""
        peer = str(client_address[0])
        with self._lock:
            pending = collections.Counter(c.peer for c in self._live() if c.pending)
            if sum(pending.values()) >= self.limits.max_pending:
                reason = "too_many_pending_connections"
            elif pending[peer] >= self.limits.max_pending_per_peer:
                reason = "too_many_pending_connections_from_peer"
            else:
                self._connections[id(request)] = _Connection(sock=request, peer=peer)
                return True
        log.warning("connection_refused", reason=reason, peer_address=peer)
        return False

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        with self._lock:
            connection = self._connections.get(id(request)) or _Connection(request, str(client_address[0]))
        try:
            if self.ssl_context is not None:
                wrapped = self._handshake(request, connection.peer)
                with self._lock:
                    connection.sock = wrapped
                    self._connections[id(wrapped)] = self._connections.pop(id(request), connection)
                request = wrapped
            request.settimeout(self.limits.network_timeout_s)
            self.finish_request(request, client_address)
        except Exception as exc:  # noqa: BLE001 - one broken connection never stops the server
            log.warning("connection_failed", peer_address=connection.peer, error=type(exc).__name__)
            connection.closed = True
            self.shutdown_request(request)

    def attach(self, sock: socket.socket, assoc: Association) -> None:
        with self._lock:
            connection = self._connections.get(id(sock))
        if connection is not None:
            connection.assoc = assoc
            assoc.bind(evt.EVT_ESTABLISHED, _mark_established, [connection])

    def _live(self) -> list[_Connection]:
        """The connections whose association has not ended (call with the lock held)."""
        self._connections = {key: c for key, c in self._connections.items() if not c.ended()}
        return list(self._connections.values())

    def _watch(self) -> None:
        """Close each connection at its deadlines, until the server closes."""
        while not self._closing.wait(_WATCH_INTERVAL_S):
            with self._lock:
                connections = self._live()
            now = time.monotonic()
            for connection in connections:
                _end_if_orphaned(connection)
                reason = self._overdue(connection, now)
                if reason is not None and not connection.closed and connection.sock.fileno() != -1:
                    connection.closed = True
                    shut(connection.sock)
                    log.warning("connection_closed", reason=reason, peer_address=connection.peer)

    def _overdue(self, connection: _Connection, now: float) -> str | None:
        age = now - connection.accepted_at
        if not connection.established and age > self.limits.establish_timeout_s:
            return "association_not_established_in_time"
        if age > self.limits.association_max_s:
            return "association_deadline"
        return None

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


def _mark_established(event: Event, connection: _Connection) -> None:
    connection.established = True


def _end_if_orphaned(connection: _Connection) -> None:
    """A connection closed before its A-ASSOCIATE-RQ arrived: pynetdicom's thread would wait the
    whole ACSE timeout for it (holding up a graceful stop); an empty answer ends that wait now."""
    assoc = connection.assoc
    if assoc is None or connection.established or connection.sock.fileno() != -1:
        return
    dul = assoc.dul
    if (
        assoc.requestor.primitive is None
        and dul.state_machine.current_state == "Sta1"
        and dul.to_user_queue.empty()
        and not connection.woken
    ):
        connection.woken = True
        dul.to_user_queue.put(None)  # type: ignore[arg-type]
