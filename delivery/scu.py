"""One association per destination and round: C-STORE each object, report each one's outcome as
soon as it is known (`on_outcome`), and start no C-STORE that `may_start` refuses (a lease that ran out)."""

from __future__ import annotations

import io
import ssl
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import pydicom
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian
from pynetdicom import AE

from delivery.destinations import Destination
from storage.db.outbox import ClaimedDelivery

# Success, and the warnings of PS3.4 B.2.3 (coerced, elements discarded, not matching the class):
# the PACS kept the object.
STORED_STATUSES = frozenset({0x0000, 0xB000, 0xB006, 0xB007})


@dataclass(frozen=True)
class StoreOptions:
    calling_ae: str
    tls: ssl.SSLContext | None = None
    acse_timeout_s: float = 30.0
    dimse_timeout_s: float = 60.0
    network_timeout_s: float = 60.0


Outcome = Callable[[ClaimedDelivery, str | None], None]


def _ignore(_delivery: ClaimedDelivery, _error: str | None) -> None:
    return None


def _all_failed(
    deliveries: Sequence[ClaimedDelivery], reason: str, on_outcome: Outcome
) -> dict[int, str | None]:
    for d in deliveries:
        on_outcome(d, reason)
    return dict.fromkeys((d.id for d in deliveries), reason)


def store_all(
    destination: Destination,
    deliveries: Sequence[ClaimedDelivery],
    options: StoreOptions,
    *,
    on_outcome: Outcome = _ignore,
    may_start: Callable[[ClaimedDelivery], bool] = lambda _d: True,
) -> dict[int, str | None]:
    """C-STORE each delivery's object; delivery id -> None when stored, else why not. Each outcome
    is also given to `on_outcome` as soon as it is known; deliveries left unstarted because
    `may_start` said no are in neither."""
    ae = AE(ae_title=options.calling_ae)
    ae.acse_timeout = options.acse_timeout_s
    ae.dimse_timeout = options.dimse_timeout_s
    ae.network_timeout = options.network_timeout_s
    for sop_class in sorted({d.sop_class_uid for d in deliveries}):
        ae.add_requested_context(sop_class, [ExplicitVRLittleEndian, ImplicitVRLittleEndian])
    tls_args = (options.tls, destination.host) if options.tls is not None else None
    try:
        assoc = ae.associate(
            destination.host, destination.port, ae_title=destination.ae_title, tls_args=tls_args
        )
    except (OSError, ssl.SSLError) as exc:
        return _all_failed(deliveries, f"cannot connect: {type(exc).__name__}", on_outcome)
    if not assoc.is_established:
        reason = "association rejected" if assoc.is_rejected else "no association (destination down?)"
        return _all_failed(deliveries, reason, on_outcome)
    outcomes: dict[int, str | None] = {}
    skipped: set[int] = set()
    try:
        for d in deliveries:
            if not may_start(d):
                skipped.add(d.id)
                continue
            outcomes[d.id] = _store_one(assoc, d)
            on_outcome(d, outcomes[d.id])
            if not assoc.is_established:
                break
    finally:
        if assoc.is_established:
            assoc.release()
    lost = [d for d in deliveries if d.id not in outcomes and d.id not in skipped]
    outcomes.update(_all_failed(lost, "association lost", on_outcome))
    return outcomes


def _store_one(assoc, delivery: ClaimedDelivery) -> str | None:  # noqa: ANN001 - pynetdicom Association
    ds = pydicom.dcmread(io.BytesIO(delivery.dataset))
    status = assoc.send_c_store(ds)
    if "Status" not in status:
        return "no C-STORE response (timeout or association aborted)"
    code = int(status.Status)
    return None if code in STORED_STATUSES else f"C-STORE status 0x{code:04X}"
