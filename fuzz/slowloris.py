"""Peers that hold a connection without finishing anything: each case checks that the listener
closes the socket by its deadline (docs/conformance.md, 3.2.1.2), not merely that it answers.

    slowloris_pdata           a P-DATA whose bytes come one per interval: the PDU read deadline
    silent_association        a valid association, then nothing: the network timeout
    associate_rq_half_sent    half an A-ASSOCIATE-RQ, the rest one byte per interval: the
                              establishment deadline
    empty_dataset             a C-STORE command announcing a dataset that never comes: the
                              message gap timeout
    pdv_length_huge           a P-DATA whose PDV claims 0xFFFFFFF0 bytes: aborted at once

Every case runs on a bare socket (pynetdicom's own reactor would answer for us), waits at most
its deadline plus `SLACK_S` and then gives up by itself. They run against a listener of their
own with short deadlines (`SHORT_DEADLINES`): the deadlines are what is tested, not their length.
Cases of a category run side by side, at most as many as one address may hold.
"""

from __future__ import annotations

import collections
import contextlib
import functools
import select
import socket
import struct
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from pydicom.uid import CTImageStorage, generate_uid
from pynetdicom.pdu import P_DATA_TF

from fuzz import pdu, wire
from fuzz.listener_process import ListenerProcess, running_listener

# The listener's settings for this phase, and the deadline each case must be closed by.
SHORT_DEADLINES: dict[str, str] = {
    "KIDNEYCT_NETWORK_TIMEOUT_S": "4",
    "KIDNEYCT_MESSAGE_GAP_TIMEOUT_S": "1",
    "KIDNEYCT_ASSOCIATION_ESTABLISH_TIMEOUT_S": "2",
    "KIDNEYCT_ACSE_TIMEOUT_S": "3",
}
# Scheduling and the trickle's own interval: how late a close may be and still count as in time.
SLACK_S = 1.5
TRICKLE_INTERVAL_S = 0.25
# The context the captured A-ASSOCIATE-RQ proposes first (CT Image Storage, explicit VR).
CONTEXT_ID = 1


@dataclass(frozen=True)
class Deadlines:
    network_s: float
    message_gap_s: float
    establish_s: float

    @classmethod
    def of(cls, settings: Mapping[str, str]) -> Deadlines:
        return cls(
            network_s=float(settings.get("KIDNEYCT_NETWORK_TIMEOUT_S", 60)),
            message_gap_s=float(settings.get("KIDNEYCT_MESSAGE_GAP_TIMEOUT_S", 10)),
            establish_s=float(settings.get("KIDNEYCT_ASSOCIATION_ESTABLISH_TIMEOUT_S", 10)),
        )


@dataclass(frozen=True)
class Closure:
    answer: str  # the first PDU the listener sent after the case began, "none", or "open"
    closed_after_s: float | None


@dataclass
class SlowRow:
    category: str
    deadline_s: float
    sent: int = 0
    answers: collections.Counter[str] = field(default_factory=collections.Counter)
    closed_in_time: int = 0
    past_deadline: int = 0  # closed late, or still open when the case gave up
    max_closed_after_s: float = 0.0
    crashes: int = 0

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["answers"] = dict(sorted(self.answers.items()))
        out["max_closed_after_s"] = round(self.max_closed_after_s, 2)
        return out


# --- on the wire ----------------------------------------------------------------------------------


def connect(port: int, *, source: str = wire.LOCALHOST, timeout_s: float = 5.0) -> socket.socket:
    return socket.create_connection((wire.LOCALHOST, port), timeout=timeout_s, source_address=(source, 0))


@functools.cache
def associate_rq() -> bytes:
    """A valid A-ASSOCIATE-RQ (CT Image Storage, explicit VR), captured once."""
    return pdu.captured_associate_rq()


def associated(port: int, *, source: str = wire.LOCALHOST) -> socket.socket:
    """A bare socket on which A-ASSOCIATE-AC was received (ConnectionError otherwise)."""
    sock = connect(port, source=source)
    try:
        sock.sendall(associate_rq())
        header = _read_exactly(sock, 6)
        body = _read_exactly(sock, struct.unpack(">L", header[2:6])[0])
    except (OSError, struct.error) as exc:
        sock.close()
        raise ConnectionError("no A-ASSOCIATE-AC") from exc
    if header[0] != 0x02 or body is None:
        sock.close()
        raise ConnectionError(f"answered with PDU type 0x{header[0]:02X}")
    return sock


def _read_exactly(sock: socket.socket, count: int) -> bytes:
    data = bytearray()
    while len(data) < count:
        chunk = sock.recv(count - len(data))
        if not chunk:
            raise ConnectionError("closed")
        data.extend(chunk)
    return bytes(data)


def store_command_pdus(*, context_id: int = CONTEXT_ID) -> bytes:
    """The P-DATA PDUs of a C-STORE-RQ command that announces a dataset (and nothing after it)."""
    message = wire._store_message(CTImageStorage, generate_uid(), b"", 1)
    return b"".join(P_DATA_TF(p).encode() for p in message.encode_msg(context_id, 16382))


def trickle_until_closed(sock: socket.socket, payload: bytes, *, give_up_s: float) -> Closure:
    """Send `payload` one byte per `TRICKLE_INTERVAL_S` (then nothing) until the listener closes
    the connection or `give_up_s` passes; what it sent back first, and when it closed."""
    started = time.monotonic()
    answer = b""
    sent = 0
    while time.monotonic() - started < give_up_s:
        if sent < len(payload):
            try:
                sock.send(payload[sent : sent + 1])
            except OSError:
                return _closure(answer, started)
            sent += 1
        readable, _, _ = select.select([sock], [], [], TRICKLE_INTERVAL_S)
        if not readable:
            continue
        try:
            chunk = sock.recv(65536)
        except OSError:
            return _closure(answer, started)
        if not chunk:
            return _closure(answer, started)
        answer = answer or chunk
    return Closure("open", None)


def _closure(answer: bytes, started: float) -> Closure:
    name = pdu.PDU_NAMES.get(answer[0], f"0x{answer[0]:02X}") if answer else "none"
    return Closure(name, time.monotonic() - started)


# --- the cases ------------------------------------------------------------------------------------


def slowloris_pdata(port: int, deadlines: Deadlines) -> Closure:
    """A P-DATA header, a valid PDV item header, then its 1,000 bytes one at a time."""
    with contextlib.closing(associated(port)) as sock:
        body = struct.pack(">L", 1002) + bytes([CONTEXT_ID, 0x00])
        sock.sendall(wire.pdu_header(0x04, len(body) + 1000) + body)
        return trickle_until_closed(sock, bytes(1000), give_up_s=deadlines.network_s + 2 * SLACK_S)


def silent_association(port: int, deadlines: Deadlines) -> Closure:
    with contextlib.closing(associated(port)) as sock:
        return trickle_until_closed(sock, b"", give_up_s=deadlines.network_s + 2 * SLACK_S)


def associate_rq_half_sent(port: int, deadlines: Deadlines) -> Closure:
    request = associate_rq()
    half = len(request) // 2
    with contextlib.closing(connect(port)) as sock:
        sock.sendall(request[:half])
        return trickle_until_closed(sock, request[half:], give_up_s=deadlines.establish_s + 2 * SLACK_S)


def empty_dataset(port: int, deadlines: Deadlines) -> Closure:
    with contextlib.closing(associated(port)) as sock:
        sock.sendall(store_command_pdus())
        return trickle_until_closed(sock, b"", give_up_s=deadlines.message_gap_s + 2 * SLACK_S)


def pdv_length_huge(port: int, deadlines: Deadlines) -> Closure:
    """A P-DATA within the announced maximum whose PDV item claims 0xFFFFFFF0 bytes; 10 sent."""
    with contextlib.closing(associated(port)) as sock:
        sock.sendall(wire.pdu_header(0x04, 1000) + struct.pack(">L", 0xFFFFFFF0) + bytes([CONTEXT_ID, 0x00]))
        return trickle_until_closed(sock, bytes(10), give_up_s=2 * SLACK_S)


SlowCase = Callable[[int, Deadlines], Closure]
# Each case and the deadline it must be closed by.
SLOW_CASES: dict[str, tuple[SlowCase, Callable[[Deadlines], float]]] = {
    "slowloris_pdata": (slowloris_pdata, lambda d: d.network_s),
    "silent_association": (silent_association, lambda d: d.network_s),
    "associate_rq_half_sent": (associate_rq_half_sent, lambda d: d.establish_s),
    "empty_dataset": (empty_dataset, lambda d: d.message_gap_s),
    "pdv_length_huge": (pdv_length_huge, lambda d: 0.0),
}


def run_slow_cases(
    listener: ListenerProcess, per_category: int, deadlines: Deadlines, *, side_by_side: int = 4
) -> list[SlowRow]:
    """`per_category` cases of each category, `side_by_side` at once (one address's limit)."""
    rows = []
    for category, (case, deadline_of) in SLOW_CASES.items():
        row = SlowRow(category, deadline_s=deadline_of(deadlines))

        def one(_: int, case: SlowCase = case) -> Closure:
            try:
                return case(listener.port, deadlines)
            except (ConnectionError, OSError) as exc:
                return Closure(f"not_associated ({exc})", None)

        with ThreadPoolExecutor(max_workers=max(1, side_by_side)) as pool:
            closures = list(pool.map(one, range(per_category)))
        for closure in closures:
            _count(row, closure)
        if not listener.alive():
            row.crashes += 1
        rows.append(row)
    return rows


def _count(row: SlowRow, closure: Closure) -> None:
    row.sent += 1
    row.answers[closure.answer] += 1
    if closure.closed_after_s is None:
        row.past_deadline += 1
        return
    row.max_closed_after_s = max(row.max_closed_after_s, closure.closed_after_s)
    if closure.closed_after_s <= row.deadline_s + SLACK_S:
        row.closed_in_time += 1
    else:
        row.past_deadline += 1


def slow_campaign(
    *, root: Path, work_dir: Path, per_category: int, settings: Mapping[str, str] | None = None
) -> dict[str, Any]:
    """Every slow case against a listener of its own (short deadlines unless `settings` say)."""
    settings = dict(settings or SHORT_DEADLINES)
    with running_listener(root, work_dir, settings=settings) as listener:
        time.sleep(0.5)  # the start-up probe's connection ends first: it is one of this address's
        rows = run_slow_cases(listener, per_category, Deadlines.of(settings))
        time.sleep(0.5)  # let the last associations end before counting temporary files
        return {
            "slow_rows": [r.as_dict() for r in rows],
            "alive_at_end": listener.alive(),
            "temp_files_left": sum(1 for _ in listener.temp_dir.iterdir()),
            "settings": settings,
        }


def slow_table(rows: list[dict[str, Any]]) -> str:
    lines = [
        "| slow category | sent | answers | deadline (s) | closed in time | past deadline | latest close (s) |",
        "|---|---:|---|---:|---:|---:|---:|",
    ]
    for r in rows:
        answers = ", ".join(f"{k} ×{v}" for k, v in r["answers"].items())
        lines.append(
            f"| {r['category']} | {r['sent']} | {answers} | {r['deadline_s']:g} | {r['closed_in_time']} | "
            f"{r['past_deadline']} | {r['max_closed_after_s']:.1f} |"
        )
    return "\n".join(lines)
