"""How one accepted connection is read: pynetdicom's socket, DUL and association with the limits
a hostile or broken peer cannot talk its way around (`ingest.server` swaps them in).

pynetdicom (3.0) reads a PDU with a blocking loop whose socket timeout restarts with every byte,
so a peer trickling one byte per second holds the reading thread (and the socket) for as long
as it likes; it waits for the rest of a P-DATA whose PDV claims 4 GiB; it waits the whole network
timeout for a dataset a command announced and that never comes; and it leaves a chunked C-STORE's
temporary file behind whenever the request is not handled (an unknown SOP class, an invalid
command). Here:

- a PDU must arrive whole within its deadline (the network timeout from its first byte): then an
  A-ABORT is sent and the socket closed;
- a PDU longer than the peer may send, or a P-DATA whose PDV lengths do not fit it, is answered
  with A-ABORT and the socket closed as soon as its header says so, before the rest is read;
- inside one DIMSE message (a command announcing a dataset, a dataset not yet complete) a silence
  longer than `message_gap_timeout_s` aborts the association;
- an invalid request aborts the association at once (pynetdicom ignores it and leaves the sender
  waiting), and every temporary dataset file is removed once its request is served and when the
  association ends, however it ended;
- a DIMSE message pynetdicom cannot decode (a C-STORE command whose SOP Instance UID is empty or
  NUL makes pydicom refuse the file meta it writes) is answered with A-ABORT and one log line,
  instead of an exception that ends the reading thread;
- both reactor threads wait for their input instead of polling it every millisecond
  (`reactor_wakeups`): the CPU an idle or waiting association burned goes to storing instances.
"""

from __future__ import annotations

import contextlib
import os
import socket
import struct
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import structlog
from pynetdicom.association import Association
from pynetdicom.dimse import DIMSEServiceProvider
from pynetdicom.dul import DULServiceProvider
from pynetdicom.pdu import A_ABORT_RQ
from pynetdicom.transport import AssociationSocket

from ingest.reactor_wakeups import REACTOR_IDLE_WAIT_S, SignallingQueue, Wakeup

log = structlog.get_logger(__name__)

# An A-ASSOCIATE-RQ proposing 128 contexts with every transfer syntax is well under this.
MAX_ASSOCIATE_PDU_BYTES = 1024 * 1024
# PDU header (type, reserved, length) that precedes the length it announces.
_PDU_HEADER_BYTES = 6
_P_DATA = 0x04
_PDV_HEADER_BYTES = 4
# A PDV item holds at least a presentation context ID and a message control header (PS3.8 9.3.5).
_PDV_MIN_LENGTH = 2
_UNLIMITED = 1 << 62
_READ_CHUNK = 65536
# A-ABORT reasons (PS3.8 9.3.8): source 2 is the service provider.
_SOURCE_PROVIDER = 0x02
_REASON_NOT_SPECIFIED = 0x00
_REASON_INVALID_PARAMETER = 0x06
_ABORT_SEND_TIMEOUT_S = 1.0


@dataclass(frozen=True)
class ConnectionLimits:
    """What one connection may do (the server's `ServerLimits`, as the connection needs them)."""

    max_pdu_bytes: int = 0  # our advertised maximum PDU; 0 is unlimited
    pdu_read_timeout_s: float | None = 60.0  # first byte to last byte of one PDU
    message_gap_timeout_s: float = 10.0


@dataclass
class _PduRead:
    deadline: float | None
    header: bytes | None = None


def harden(assoc: Association, limits: ConnectionLimits) -> None:
    """Swap our classes in on a fresh acceptor association (before its threads start)."""
    assoc.__class__ = HardenedAssociation
    assoc.dul.__class__ = DeadlineDUL
    assoc.dimse.__class__ = GuardedDIMSE
    sock = assoc.dul.socket
    assert sock is not None  # pynetdicom's request handler set it
    sock.__class__ = BoundedAssociationSocket
    assoc.dul._limits = limits  # type: ignore[attr-defined]
    assoc.dul._last_pdu_at = time.monotonic()  # type: ignore[attr-defined]
    assoc.dul._stall_logged = False  # type: ignore[attr-defined]
    # The DUL waits in select (socket or wake-up) instead of sleeping between polls.
    assoc.dul._wakeup = Wakeup()  # type: ignore[attr-defined]
    assoc.dul._run_loop_delay = 0
    # The association waits for anything put into the queues it reads.
    incoming = threading.Event()
    assoc.dimse._incoming = incoming  # type: ignore[attr-defined]
    assoc.dimse.msg_queue = SignallingQueue(incoming, assoc.dimse.msg_queue)
    assoc.dul.to_user_queue = SignallingQueue(incoming, assoc.dul.to_user_queue)
    sock._limits = limits  # type: ignore[attr-defined]
    sock._pdu = None  # type: ignore[attr-defined]
    sock._refused = False  # type: ignore[attr-defined]


class BoundedAssociationSocket(AssociationSocket):
    """Reads each PDU under its size limit and deadline; a PDU that breaks either is refused
    with A-ABORT and the socket is closed (the DUL sees the short read as Evt17)."""

    _limits: ConnectionLimits
    _pdu: _PduRead | None
    _refused: bool

    def begin_pdu(self) -> None:
        timeout = self._limits.pdu_read_timeout_s
        self._pdu = _PduRead(deadline=None if timeout is None else time.monotonic() + timeout)

    def end_pdu(self) -> None:
        self._pdu = None

    def recv(self, nr_bytes: int) -> bytearray:
        pdu = self._pdu
        if self._refused:
            return bytearray()
        if pdu is None:  # pynetdicom reads only inside `_read_pdu_data`; kept for safety
            return super().recv(nr_bytes)
        if pdu.header is None:
            data = self._read(nr_bytes, pdu, pdata=False)
            pdu.header = bytes(data)
            return data
        if nr_bytes > self._pdu_limit():
            self.refuse(
                "pdu_too_large", _REASON_INVALID_PARAMETER, pdu_bytes=nr_bytes, limit_bytes=self._pdu_limit()
            )
            return bytearray()
        return self._read(nr_bytes, pdu, pdata=pdu.header[:1] == bytes([_P_DATA]))

    def _read(self, nr_bytes: int, pdu: _PduRead, *, pdata: bool) -> bytearray:
        sock = self.socket
        assert sock is not None
        received = bytearray()
        next_item = 0  # offset of the next PDV item header in a P-DATA body
        try:
            while len(received) < nr_bytes:
                remaining = None if pdu.deadline is None else pdu.deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    self.refuse(
                        "pdu_read_timeout",
                        _REASON_NOT_SPECIFIED,
                        pdu_bytes=nr_bytes,
                        received_bytes=len(received),
                    )
                    return received
                sock.settimeout(remaining)
                try:
                    chunk = sock.recv(min(_READ_CHUNK, nr_bytes - len(received)))
                except TimeoutError:
                    continue  # the deadline passed: refused at the top of the loop
                if not chunk:
                    return received
                received.extend(chunk)
                if pdata:
                    next_item = _check_pdv_items(received, next_item, nr_bytes)
                    if next_item < 0:
                        self.refuse("pdv_length_invalid", _REASON_INVALID_PARAMETER, pdu_bytes=nr_bytes)
                        return bytearray()
            return received
        finally:
            with contextlib.suppress(OSError):
                sock.settimeout(self.assoc.network_timeout)  # sends use the association's timeout

    def _pdu_limit(self) -> int:
        if not self.assoc.is_established:
            return MAX_ASSOCIATE_PDU_BYTES
        if self._limits.max_pdu_bytes <= 0:
            return _UNLIMITED
        # The peer must respect the maximum length we announced; a few header bytes of slack.
        return max(self._limits.max_pdu_bytes + 64, MAX_ASSOCIATE_PDU_BYTES)

    def refuse(self, reason: str, diagnostic: int, **fields: Any) -> None:
        """A-ABORT (best effort, from the reading thread: nothing else is sending), then close."""
        self._refused = True
        log.warning("association_aborted", reason=reason, peer_address=_address(self.assoc), **fields)
        sock = self.socket
        if sock is None:
            return
        abort = A_ABORT_RQ()
        abort.source = _SOURCE_PROVIDER
        abort.reason_diagnostic = diagnostic
        with contextlib.suppress(OSError):
            sock.settimeout(_ABORT_SEND_TIMEOUT_S)
            sock.sendall(abort.encode())
        shut(sock)


def _check_pdv_items(body: bytearray, next_item: int, body_length: int) -> int:
    """The offset of the first PDV item not yet complete in `body`, or -1 when an item's length
    cannot be right (shorter than its own header, or running past the PDU)."""
    while len(body) >= next_item + _PDV_HEADER_BYTES:
        (length,) = struct.unpack_from(">L", body, next_item)
        end = next_item + _PDV_HEADER_BYTES + length
        if length < _PDV_MIN_LENGTH or end > body_length:
            return -1
        next_item = end
    return next_item


def shut(sock: socket.socket) -> None:
    """Shut a socket down from any thread: a reader blocked on it returns at once (no data), the
    peer sees the connection closed, and whatever the peer sends next is refused. The socket
    level call, also for TLS: it leaves the TLS object to the thread that reads it."""
    with contextlib.suppress(OSError):
        socket.socket.shutdown(sock, socket.SHUT_RDWR)


class DeadlineDUL(DULServiceProvider):
    """Starts each PDU's read deadline, aborts an association whose DIMSE message stalls, and
    waits for input instead of polling for it."""

    _limits: ConnectionLimits
    _last_pdu_at: float
    _stall_logged: bool
    _wakeup: Wakeup

    def run_reactor(self) -> None:
        try:
            super().run_reactor()
        finally:
            self._wakeup.close()

    def send_pdu(self, primitive: Any) -> None:
        super().send_pdu(primitive)
        self._wakeup.ring()

    def stop_dul(self) -> bool:
        """pynetdicom's, with the reactor woken to see its stop flag, and joined instead of spun on."""
        if self.state_machine.current_state != "Sta1":
            return False
        self._kill_thread = True
        self._wakeup.ring()
        if threading.current_thread() is not self and self.is_alive():
            self.join()  # a thread never started cannot be joined (pynetdicom's loop only waits while alive)
        return True

    def _is_transport_event(self) -> bool:
        if self._nothing_to_do():
            self._wakeup.wait_readable(self.socket.socket if self.socket else None, REACTOR_IDLE_WAIT_S)
        return super()._is_transport_event()

    def _nothing_to_do(self) -> bool:
        return (
            not self._kill_thread
            and self.state_machine.current_state != "Sta13"  # closing: pynetdicom's own handling
            and self.to_provider_queue.empty()
            and self.event_queue.empty()
        )

    def _read_pdu_data(self) -> None:
        sock = self.socket
        assert isinstance(sock, BoundedAssociationSocket)
        sock.begin_pdu()
        try:
            super()._read_pdu_data()
        finally:
            sock.end_pdu()
            self._last_pdu_at = time.monotonic()

    def idle_timer_expired(self) -> bool:
        """pynetdicom's network timeout, or a message left incomplete for too long (the
        association's reactor then aborts it)."""
        if super().idle_timer_expired():
            self._log_once("network_timeout")
            return True
        if getattr(self.assoc.dimse, "message", None) is None:
            return False  # between messages: only the network timeout applies
        if time.monotonic() - self._last_pdu_at <= self._limits.message_gap_timeout_s:
            return False
        self._log_once("message_stalled")
        return True

    def _log_once(self, reason: str) -> None:
        if not self._stall_logged:
            self._stall_logged = True
            log.warning("association_aborted", reason=reason, peer_address=_address(self.assoc))


class GuardedDIMSE(DIMSEServiceProvider):
    """A P-DATA whose DIMSE message cannot be decoded aborts the association in order; the
    association's reactor waits for a message (or a release, an abort) instead of polling."""

    _incoming: threading.Event

    def get_msg(self, block: bool = False) -> Any:
        if block:
            return super().get_msg(block=True)
        self._incoming.clear()  # before looking: a put after this wakes the wait below
        item = super().get_msg(block=False)
        if item[1] is None and self.dul.to_user_queue.empty():
            self._incoming.wait(REACTOR_IDLE_WAIT_S)
            item = super().get_msg(block=False)
        return item

    def receive_primitive(self, primitive: Any) -> None:
        try:
            super().receive_primitive(primitive)
        except Exception as exc:  # noqa: BLE001 - pydicom raises many types for a hostile command
            log.warning(
                "association_aborted",
                reason="dimse_message_undecodable",
                error=type(exc).__name__,
                peer_address=_address(self.assoc),
            )
            # As pynetdicom does for a message it cannot convert: Evt19 makes the state machine
            # send A-ABORT and close; the partial dataset file goes when the association ends.
            self.dul.event_queue.put("Evt19")


class HardenedAssociation(Association):
    """Aborts on an invalid request, and leaves no temporary dataset file behind."""

    def run(self) -> None:
        try:
            super().run()
        finally:
            remove_partial_dataset(self)

    def _serve_request(self, msg: Any, context_id: int) -> None:
        try:
            if not self._sent_release and not msg.is_valid_request:
                log.warning("association_aborted", reason="invalid_request", peer_address=_address(self))
                self.abort()
                return
            super()._serve_request(msg, context_id)
        finally:
            _remove_file(getattr(msg, "_dataset_file", None), getattr(msg, "_dataset_path", None))


def remove_partial_dataset(assoc: Association) -> None:
    """Delete the temporary file of a C-STORE dataset whose receipt never finished."""
    message = getattr(getattr(assoc, "dimse", None), "message", None)
    _remove_file(getattr(message, "_data_set_file", None), getattr(message, "_data_set_path", None))


def _remove_file(file: Any, path: Any) -> None:
    if path is None:
        return
    if isinstance(path, tuple):  # (path, offset): a file we did not create
        return
    if file is not None:
        with contextlib.suppress(OSError):
            file.close()
    with contextlib.suppress(FileNotFoundError):
        size = Path(path).stat().st_size
        os.unlink(Path(path))
        log.info("partial_dataset_removed", size_bytes=size)


def _address(assoc: Association) -> str:
    try:
        return str(assoc.requestor.address)
    except Exception:  # noqa: BLE001 - only for a log line
        return "unknown"
