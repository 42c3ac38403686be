"""Wake-ups for pynetdicom's two reactor threads, so that an open association waits instead of polling.

pynetdicom (3.0) runs two threads per association that each poll every millisecond: the DUL
(is there a byte on the socket, a primitive to send?) and the association (is there a decoded
message, a release, an abort?). Four idle associations cost 0.29 CPU seconds per second here,
taken from the cores that store instances. `ingest.transport` makes both wait on what they poll
for: the DUL in `select` on its socket and a `Wakeup`, which `send_pdu` rings; the association on
an event that every put into its incoming queues sets (`SignallingQueue`). Both still look around
every `REACTOR_IDLE_WAIT_S` (timers, a dead thread) as the polling loops did every millisecond.
"""

from __future__ import annotations

import contextlib
import queue
import select
import socket
import ssl
import threading
from typing import Any

# How long a reactor waits with nothing to do before checking its timers and flags again.
REACTOR_IDLE_WAIT_S = 0.05


class Wakeup:
    """A socket pair a thread waiting in `select` can be woken through, from any thread."""

    def __init__(self) -> None:
        self._reader, self._writer = socket.socketpair()
        self._reader.setblocking(False)
        self._writer.setblocking(False)

    def ring(self) -> None:
        # A full buffer is a wake-up already pending; a closed pair is a reactor already gone.
        with contextlib.suppress(OSError):
            self._writer.send(b"\0")

    def wait_readable(self, sock: socket.socket | None, timeout_s: float) -> None:
        """Return when `sock` has data, the wake-up was rung, or `timeout_s` passed."""
        if sock is None or (isinstance(sock, ssl.SSLSocket) and sock.pending()):
            return  # nothing to wait on, or TLS already holds decrypted bytes select cannot see
        with contextlib.suppress(OSError, ValueError):  # a socket closed meanwhile: the DUL sees it
            select.select([sock, self._reader], [], [], timeout_s)
        self._drain()

    def _drain(self) -> None:
        with contextlib.suppress(OSError):
            while self._reader.recv(4096):
                pass

    def close(self) -> None:
        self._reader.close()
        self._writer.close()


class SignallingQueue(queue.Queue[Any]):
    """A queue whose every put sets `event`: one thread waits on several queues at once."""

    def __init__(self, event: threading.Event, items: queue.Queue[Any]) -> None:
        super().__init__()
        self._event = event
        self.queue.extend(items.queue)  # anything already queued before the swap

    def put(self, item: Any, block: bool = True, timeout: float | None = None) -> None:
        super().put(item, block, timeout)
        self._event.set()
