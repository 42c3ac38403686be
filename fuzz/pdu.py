"""Low-level abuse of the Upper Layer protocol (PS3.8): raw PDUs on a bare socket, and broken
P-DATA inside an established association. Each case says how the listener answered (the first
PDU type it sent back) and how long it kept the connection open."""

from __future__ import annotations

import contextlib
import random
import socket
import struct
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

from fuzz import datasets, wire

PDU_NAMES = {
    0x01: "RQ",
    0x02: "AC",
    0x03: "RJ",
    0x04: "P-DATA",
    0x05: "RELEASE-RQ",
    0x06: "RELEASE-RP",
    0x07: "ABORT",
}


@dataclass(frozen=True)
class PduOutcome:
    category: str
    answer: str  # the first PDU type sent back, "none" when it only closed, "open" if never closed
    closed_after_s: float | None


def captured_associate_rq(calling_ae: str = "FUZZER", called_ae: str = "KIDNEYCT") -> bytes:
    """A valid A-ASSOCIATE-RQ as pynetdicom sends it (caught by a socket that answers nothing)."""
    server = socket.create_server((wire.LOCALHOST, 0))
    port = server.getsockname()[1]
    caught: list[bytes] = []

    def catch() -> None:
        conn, _ = server.accept()
        with conn:
            conn.settimeout(5)
            data = b""
            while len(data) < 6 or len(data) < 6 + struct.unpack(">L", data[2:6])[0]:
                chunk = conn.recv(65536)
                if not chunk:
                    break
                data += chunk
            caught.append(data)

    thread = threading.Thread(target=catch, daemon=True)
    thread.start()
    with contextlib.suppress(Exception):
        wire.associate(
            port,
            [(CTImageStorage, [ExplicitVRLittleEndian])],
            calling_ae=calling_ae,
            called_ae=called_ae,
            timeout_s=1,
        )
    thread.join(5)
    server.close()
    return caught[0]


def _outcome(category: str, data: bytes, closed_after: float | None) -> PduOutcome:
    if data:
        answer = PDU_NAMES.get(data[0], f"0x{data[0]:02X}")
    else:
        answer = "none" if closed_after is not None else "open"
    return PduOutcome(category, answer, closed_after)


def _raw(category: str, port: int, payload: bytes, wait_s: float) -> PduOutcome:
    try:
        data, closed = wire.send_raw(port, payload, timeout_s=wait_s)
    except OSError:
        return PduOutcome(category, "refused", 0.0)
    return _outcome(category, data, closed)


def random_bytes(rng: random.Random, port: int, wait_s: float) -> PduOutcome:
    return _raw("pdu_random_bytes", port, rng.randbytes(rng.randrange(1, 4096)), wait_s)


def unknown_type(rng: random.Random, port: int, wait_s: float) -> PduOutcome:
    body = rng.randbytes(rng.randrange(0, 64))
    return _raw("pdu_unknown_type", port, wire.pdu_header(rng.randrange(8, 256), len(body)) + body, wait_s)


def out_of_order(rng: random.Random, port: int, wait_s: float) -> PduOutcome:
    pdu_type = rng.choice((0x02, 0x03, 0x04, 0x05, 0x06, 0x07))
    body = rng.randbytes(rng.choice((4, 10, 100)))
    return _raw("pdu_before_association", port, wire.pdu_header(pdu_type, len(body)) + body, wait_s)


def mutated_associate(rng: random.Random, port: int, wait_s: float, template: bytes) -> PduOutcome:
    data = bytearray(template)
    for _ in range(rng.randrange(1, 6)):
        at = rng.randrange(6, len(data))  # keep the header: the body is what is parsed
        data[at] = rng.randrange(256)
    return _raw("associate_rq_mutated", port, bytes(data), wait_s)


def huge_associate(rng: random.Random, port: int, wait_s: float) -> PduOutcome:
    """A header announcing 300 MB, then 1 MB of it: refused at the header, or buffered?"""
    payload = wire.pdu_header(0x01, 300 * 1024**2) + bytes(1024**2)
    return _raw("associate_rq_huge", port, payload, wait_s)


def partial_associate(rng: random.Random, port: int, wait_s: float) -> PduOutcome:
    """A header and a few bytes, then silence: how long does it hold a place?"""
    payload = wire.pdu_header(0x01, rng.randrange(100, 1000)) + rng.randbytes(rng.randrange(0, 50))
    return _raw("associate_rq_partial", port, payload, wait_s)


def silent(rng: random.Random, port: int, wait_s: float) -> PduOutcome:
    return _raw("silent_connection", port, b"", wait_s)


def _associated(port: int) -> tuple[object, int]:
    assoc = wire.associate(port, [(CTImageStorage, [ExplicitVRLittleEndian])])
    if not assoc.is_established:
        raise ConnectionError("not associated")
    return assoc, wire.context_id_for(assoc, CTImageStorage)


def _after_association(category: str, port: int, wait_s: float, payload: bytes) -> PduOutcome:
    try:
        assoc, _cx = _associated(port)
    except (ConnectionError, OSError):
        return PduOutcome(category, "not_associated", None)
    sock = assoc.dul.socket.socket  # type: ignore[attr-defined]
    started = time.monotonic()
    with contextlib.suppress(OSError):
        sock.sendall(payload)
    deadline = started + wait_s
    while assoc.is_alive() and time.monotonic() < deadline:  # type: ignore[attr-defined]
        time.sleep(0.02)
    closed = time.monotonic() - started if not assoc.is_alive() else None  # type: ignore[attr-defined]
    answer = "ABORT" if assoc.is_aborted else ("none" if closed is not None else "open")  # type: ignore[attr-defined]
    if closed is None:
        assoc.abort()  # type: ignore[attr-defined]
    return PduOutcome(category, answer, closed)


def oversized_pdata(rng: random.Random, port: int, wait_s: float) -> PduOutcome:
    """A P-DATA announcing 64 MiB (beyond the maximum we announced), then 1 MiB of it."""
    payload = wire.pdu_header(0x04, 64 * 1024**2) + bytes(1024**2)
    return _after_association("pdata_oversized", port, wait_s, payload)


def pdata_bad_context(rng: random.Random, port: int, wait_s: float) -> PduOutcome:
    """A PDV on a context that was never negotiated (an even, unknown id)."""
    pdv = bytes([rng.choice((0, 2, 99, 255)), 0x03]) + rng.randbytes(20)
    item = struct.pack(">L", len(pdv)) + pdv
    return _after_association("pdata_bad_context", port, wait_s, wire.pdu_header(0x04, len(item)) + item)


def aborted_store(rng: random.Random, port: int, wait_s: float) -> PduOutcome:
    """A C-STORE cut off after its first fragments, then A-ABORT (leaves a temporary file?)."""
    try:
        assoc, cx = _associated(port)
    except (ConnectionError, OSError):
        return PduOutcome("store_aborted_midway", "not_associated", None)
    ds = datasets.ct_slice()
    payload = datasets.encode(ds, implicit=False) + bytes(rng.randrange(2, 4) * 1024**2)
    wire.partial_store(
        assoc,
        cx,
        sop_class=CTImageStorage,
        sop_instance=generate_uid(),
        dataset=payload,  # type: ignore[arg-type]
        fragments=2,
    )
    time.sleep(0.2)
    assoc.abort()  # type: ignore[attr-defined]
    return PduOutcome("store_aborted_midway", "ABORT", 0.0)


PduCase = Callable[[random.Random, int, float], PduOutcome]
PDU_CASES: dict[str, PduCase] = {
    "pdu_random_bytes": random_bytes,
    "pdu_unknown_type": unknown_type,
    "pdu_before_association": out_of_order,
    "associate_rq_huge": huge_associate,
    "associate_rq_partial": partial_associate,
    "silent_connection": silent,
    "pdata_oversized": oversized_pdata,
    "pdata_bad_context": pdata_bad_context,
    "store_aborted_midway": aborted_store,
}
# Cases that only wait: run side by side so that a timeout of seconds costs seconds, not minutes.
CONCURRENT = frozenset({"associate_rq_partial", "silent_connection"})
