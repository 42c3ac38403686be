"""An open association's two reactor threads wait for their input instead of polling it every
millisecond, and still answer at once when it comes (ingest/reactor_wakeups.py)."""

from __future__ import annotations

import queue
import socket
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from ingest_support import (
    LOCALHOST,
    OUR_AE,
    MemoryPublisher,
    listener_settings,
    running_listener,
    synthetic_ct,
)
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid
from pynetdicom import AE

from common.pynetdicom_switches import chunked_send
from ingest import statuses, transport
from ingest.reactor_wakeups import REACTOR_IDLE_WAIT_S, SignallingQueue, Wakeup

# Far longer than any wake-up takes: a waiter still blocked after this was never woken.
NEVER_S = 30.0
IDLE_S = 1.0


def _waiting(target: Any) -> threading.Thread:
    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    time.sleep(0.1)  # let it block
    return thread


def test_a_ring_wakes_a_waiter_long_before_its_timeout() -> None:
    wakeup = Wakeup()
    quiet, _peer = socket.socketpair()
    try:
        waiter = _waiting(lambda: wakeup.wait_readable(quiet, NEVER_S))
        assert waiter.is_alive(), "nothing has arrived yet: it must still wait"
        wakeup.ring()
        waiter.join(timeout=5)
        assert not waiter.is_alive()
    finally:
        wakeup.close()
        quiet.close()


def test_data_on_the_socket_ends_the_wait_and_a_ring_after_close_is_harmless() -> None:
    wakeup = Wakeup()
    watched, peer = socket.socketpair()
    try:
        waiter = _waiting(lambda: wakeup.wait_readable(watched, NEVER_S))
        peer.send(b"\x04")
        waiter.join(timeout=5)
        assert not waiter.is_alive()
    finally:
        wakeup.close()
        watched.close()
        peer.close()
    wakeup.ring()  # an association sending after its reactor ended: nothing to wake, no error


def test_a_signalling_queue_keeps_what_was_queued_and_sets_its_event_on_put() -> None:
    before: queue.Queue[int] = queue.Queue()
    before.put(1)
    event = threading.Event()
    swapped = SignallingQueue(event, before)
    assert swapped.get_nowait() == 1
    assert not event.is_set()
    swapped.put(2)
    assert event.is_set()


def _count_calls(monkeypatch: pytest.MonkeyPatch, cls: type, name: str, counts: dict[str, int]) -> None:
    original = getattr(cls, name)
    counts[name] = 0

    def counted(self: Any, *args: Any, **kwargs: Any) -> Any:
        counts[name] += 1
        return original(self, *args, **kwargs)

    monkeypatch.setattr(cls, name, counted)


def test_an_idle_association_waits_instead_of_polling_and_still_stores_at_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    counts: dict[str, int] = {}
    _count_calls(monkeypatch, transport.DeadlineDUL, "_is_transport_event", counts)
    _count_calls(monkeypatch, transport.GuardedDIMSE, "get_msg", counts)
    rings: dict[str, int] = {}
    _count_calls(monkeypatch, Wakeup, "ring", rings)
    path = synthetic_ct(tmp_path / "ct.dcm", study_uid=generate_uid(), series_uid=generate_uid(), number=1)
    with running_listener(listener_settings(tmp_path / "archive"), MemoryPublisher()) as (listener, _):
        ae = AE(ae_title="TESTSCU")
        ae.add_requested_context(CTImageStorage, ExplicitVRLittleEndian)
        assoc = ae.associate(LOCALHOST, listener.port, ae_title=OUR_AE)
        assert assoc.is_established
        try:
            time.sleep(0.2)  # past negotiation
            before = dict(counts)
            time.sleep(IDLE_S)
            idle_loops = {name: counts[name] - before[name] for name in counts}
            rings_before_store = rings["ring"]
            with chunked_send():
                status = assoc.send_c_store(path)
            rings_for_store = rings["ring"] - rings_before_store
        finally:
            assoc.release()
    # Polling looped about once a millisecond (up to 1,000 per second per thread); waiting loops
    # once per REACTOR_IDLE_WAIT_S (20 per second), a few more for the checks around each wait.
    most = 3 * IDLE_S / REACTOR_IDLE_WAIT_S
    assert all(0 < loops <= most for loops in idle_loops.values()), idle_loops
    assert status.Status == statuses.SUCCESS
    # The response was handed to a waiting DUL: it was woken, not left to its next 50 ms look.
    assert rings_for_store >= 1
