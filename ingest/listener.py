"""The running listener: a pynetdicom association server with a graceful stop.

Each association runs in its own pynetdicom thread, so several senders (or one study split over
several associations) are served in parallel. `stop` closes the listening socket first, then gives
the associations in flight up to `grace_s` to finish before aborting the rest.
"""

from __future__ import annotations

import functools
import ssl
import threading
import time
from typing import Any

import structlog
from pynetdicom import AE
from pynetdicom.transport import ThreadedAssociationServer

from common.errors import binding
from ingest.server import HardenedAssociationServer, ServerLimits

log = structlog.get_logger(__name__)

_POLL_S = 0.05


class Listener:
    def __init__(
        self,
        *,
        ae: AE,
        host: str,
        port: int,
        evt_handlers: list[Any],
        ssl_context: ssl.SSLContext | None = None,
        limits: ServerLimits | None = None,
    ) -> None:
        self._ae = ae
        self._limits = limits or ServerLimits()
        self._address = (host, port)
        self._evt_handlers = evt_handlers
        self._ssl_context = ssl_context
        self._server: ThreadedAssociationServer | None = None
        self._stopped = threading.Event()

    def start(self) -> None:
        # As `AE.start_server(block=False)` does, with our hardened server class.
        with binding("the DICOM listener", *self._address):
            server = self._ae.make_server(
                self._address,
                ssl_context=self._ssl_context,
                evt_handlers=self._evt_handlers,
                server_class=functools.partial(HardenedAssociationServer, limits=self._limits),  # type: ignore[arg-type]
            )
        thread = threading.Thread(target=server.serve_forever, name="AcceptorServer", daemon=True)
        thread.start()
        self._ae._servers.append(server)
        self._server = server
        log.info("listener_started", ae_title=self._ae.ae_title, host=self.host, port=self.port, tls=self.tls)

    @property
    def host(self) -> str:
        return str(self._require_server().server_address[0])

    @property
    def port(self) -> int:
        """The bound port (the real one when started on port 0)."""
        return int(self._require_server().server_address[1])

    @property
    def tls(self) -> bool:
        return self._ssl_context is not None

    def active_associations(self) -> int:
        return len(self._server.active_associations) if self._server is not None else 0

    def stop(self, *, grace_s: float) -> bool:
        """Stop accepting, wait for associations in flight; True when all finished in time."""
        server = self._require_server()
        server.shutdown()  # closes the listening socket: new associations are refused from here on
        log.info("listener_stopped_accepting", in_flight=len(server.active_associations))
        deadline = time.monotonic() + grace_s
        while server.active_associations and time.monotonic() < deadline:
            self._stopped.wait(_POLL_S)
        left = server.active_associations
        for assoc in left:
            assoc.abort()
        if left:
            log.warning("associations_aborted_at_shutdown", count=len(left), grace_s=grace_s)
        log.info("listener_stopped", drained=not left)
        return not left

    def _require_server(self) -> ThreadedAssociationServer:
        if self._server is None:
            raise RuntimeError("the listener is not started")
        return self._server
