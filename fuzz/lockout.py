"""How long a valid sender waits beside hostile connections (loopback only, bounded).

    python -m fuzz.lockout                                  # this checkout, the table on stdout
    python -m fuzz.lockout --listener-root /other/checkout  # the same against other code

For each kind (a P-DATA trickled one byte per second, a valid association gone silent, half an
A-ASSOCIATE-RQ then silence) and each count (16, 64): a fresh listener, `count` hostile
connections opened at once, then a valid sender tries to store one instance every 0.5 s until
it gets 0x0000 or gives up. Hostile connections come from `--hostile-source` (127.0.0.2, another
loopback address: another host as far as the per-peer limits can tell) or from 127.0.0.1, the
valid sender's own address. The listener runs with a 20 s network timeout so that a run takes
under a minute; how long the listener kept each hostile socket open is measured too.
"""

from __future__ import annotations

import argparse
import contextlib
import random
import select
import socket
import struct
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from fuzz import wire
from fuzz.cases import valid
from fuzz.listener_process import running_listener
from fuzz.slowloris import CONTEXT_ID, associate_rq, associated, connect

SETTINGS = {"KIDNEYCT_NETWORK_TIMEOUT_S": "20", "KIDNEYCT_MAX_ASSOCIATIONS": "16"}
GIVE_UP_S = 45.0


class Placed:
    """Counts the hostile connections in place (connected, and associated where they associate)."""

    def __init__(self) -> None:
        self.count = 0
        self._lock = threading.Lock()

    def __call__(self) -> None:
        with self._lock:
            self.count += 1


def _hold(sock: socket.socket, stop: threading.Event, trickle: bool, placed: Placed) -> float | None:
    """Keep `sock` open (sending one byte a second when `trickle`) until the listener closes it
    (the seconds it took) or `stop` is set (None)."""
    placed()
    started = time.monotonic()
    with contextlib.closing(sock):
        while not stop.is_set():
            if trickle:
                try:
                    sock.send(b"\x00")
                except OSError:
                    return time.monotonic() - started
            readable, _, _ = select.select([sock], [], [], 1.0)
            if readable:
                try:
                    if not sock.recv(65536):
                        return time.monotonic() - started
                except OSError:
                    return time.monotonic() - started
    return None


def slowloris(port: int, source: str, stop: threading.Event, placed: Placed) -> float | None:
    sock = associated(port, source=source)
    body = struct.pack(">L", 100_002) + bytes([CONTEXT_ID, 0x00])
    sock.sendall(wire.pdu_header(0x04, len(body) + 100_000) + body)
    return _hold(sock, stop, trickle=True, placed=placed)


def silent_association(port: int, source: str, stop: threading.Event, placed: Placed) -> float | None:
    return _hold(associated(port, source=source), stop, trickle=False, placed=placed)


def half_associate_rq(port: int, source: str, stop: threading.Event, placed: Placed) -> float | None:
    sock = connect(port, source=source)
    request = associate_rq()
    sock.sendall(request[: len(request) // 2])
    return _hold(sock, stop, trickle=False, placed=placed)


KINDS: dict[str, Callable[[int, str, threading.Event, Placed], float | None]] = {
    "slowloris_pdata": slowloris,
    "silent_association": silent_association,
    "half_associate_rq": half_associate_rq,
}


def _valid_sender_wait(port: int, give_up_s: float) -> tuple[float, int, str]:
    from fuzz.run import Sender

    started = time.monotonic()
    attempts, answer = 0, "none"
    while time.monotonic() - started < give_up_s:
        attempts += 1
        answer = Sender(port).store(valid(random.Random(attempts)))
        if answer == "0x0000":
            break
        time.sleep(0.5)
    return time.monotonic() - started, attempts, answer


def measure(root: Path, work_dir: Path, kind: str, count: int, source: str) -> dict[str, Any]:
    stop, placed = threading.Event(), Placed()
    associate_rq()  # captured once, before the hostile connections start
    with running_listener(root, work_dir, settings=SETTINGS) as listener:
        time.sleep(0.5)  # the start-up probe's connection ends first

        def hostile(_: int) -> float | None | str:
            try:
                return KINDS[kind](listener.port, source, stop, placed)
            except (ConnectionError, OSError):
                placed()
                return "refused"

        with ThreadPoolExecutor(max_workers=count) as pool:
            futures = [pool.submit(hostile, i) for i in range(count)]
            # Every hostile connection in place (or refused) first: connects whose SYN the listen
            # backlog dropped are retried by the kernel after 1 s, 3 s...
            deadline = time.monotonic() + 20
            while placed.count < count and time.monotonic() < deadline:
                time.sleep(0.05)
            time.sleep(0.5)
            waited, attempts, answer = _valid_sender_wait(listener.port, GIVE_UP_S)
            stop.set()
            outcomes = [f.result() for f in futures]
    lifetimes = [o for o in outcomes if isinstance(o, float)]
    return {
        "kind": kind,
        "count": count,
        "hostile_source": source,
        "valid_sender_waited_s": round(waited, 2),
        "attempts": attempts,
        "answer": answer,
        "hostile_refused_at_once": sum(1 for o in outcomes if o == "refused"),
        "hostile_closed_by_listener": len(lifetimes),
        "hostile_still_open_at_end": sum(1 for o in outcomes if o is None),
        "longest_hostile_socket_s": round(max(lifetimes), 1) if lifetimes else None,
    }


def main(argv: list[str] | None = None) -> None:
    from fuzz.run import REPO, quiet_fuzzer_side

    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--listener-root", type=Path, default=REPO)
    parser.add_argument("--hostile-source", default="127.0.0.2")
    parser.add_argument("--kinds", default=",".join(KINDS))
    parser.add_argument("--counts", default="16,64")
    args = parser.parse_args(argv)
    print(
        "| kind | hostile | from | valid sender waited (s) | attempts | answer | refused at once | closed by listener | open at end | longest hostile socket (s) |"
    )
    print("|---|---:|---|---:|---:|---|---:|---:|---:|---:|")
    import tempfile

    with quiet_fuzzer_side(), tempfile.TemporaryDirectory(prefix="kidneyct-lockout-") as work:
        for kind in args.kinds.split(","):
            for count in (int(c) for c in args.counts.split(",")):
                r = measure(args.listener_root.resolve(), Path(work), kind, count, args.hostile_source)
                print(
                    f"| {r['kind']} | {r['count']} | {r['hostile_source']} | {r['valid_sender_waited_s']} | "
                    f"{r['attempts']} | {r['answer']} | {r['hostile_refused_at_once']} | "
                    f"{r['hostile_closed_by_listener']} | {r['hostile_still_open_at_end']} | "
                    f"{r['longest_hostile_socket_s']} |",
                    flush=True,
                )


if __name__ == "__main__":
    main()
