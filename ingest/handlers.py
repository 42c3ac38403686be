"""pynetdicom event handlers. Collaborators are bound as handler arguments
(`evt_handlers=[(evt.EVT_C_STORE, handle_store, [ingestor])]`), never taken from globals.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any, cast

import structlog
from pynetdicom import evt
from pynetdicom.dimse_primitives import C_STORE
from pynetdicom.events import Event

from ingest.access import AccessPolicy
from ingest.ingestor import Ingestor, ReceivedInstance
from ingest.metrics import IngestMetrics
from ingest.release_hints import ReleaseHints
from ingest.server import AssociationSlots
from ingest.statuses import (
    DIAG_CALLED_AE_NOT_RECOGNISED,
    DIAG_LOCAL_LIMIT_EXCEEDED,
    REJECTED_PERMANENT,
    REJECTED_TRANSIENT,
    SOURCE_SERVICE_PROVIDER_PRESENTATION,
    SOURCE_SERVICE_USER,
)

log = structlog.get_logger(__name__)


def _association_context(event: Event) -> dict[str, object]:
    assoc = event.assoc
    return {
        "association_id": assoc.native_id,
        "calling_ae": assoc.requestor.ae_title,
        "peer_address": assoc.requestor.address,
    }


def handle_store(event: Event, ingestor: Ingestor) -> int:
    """EVT_C_STORE: archive, publish, then answer (see `Ingestor.ingest`)."""
    request = cast(C_STORE, event.request)
    context = event.context
    # With chunked receive (always on in the listener) the dataset is a file on disk already.
    path = event.dataset_path
    if path is not None:
        source: Path | io.BytesIO = Path(path)
        size = Path(path).stat().st_size
    else:
        encoded = event.encoded_dataset(include_meta=True)
        source, size = io.BytesIO(encoded), len(encoded)
    received = ReceivedInstance(
        source=source,
        size_bytes=size,
        requested_sop_class=str(request.AffectedSOPClassUID),
        requested_sop_instance=str(request.AffectedSOPInstanceUID),
        transfer_syntax_uid=str(context.transfer_syntax),
        calling_ae=event.assoc.requestor.ae_title or None,
        context_sop_class=str(context.abstract_syntax),
        association=id(event.assoc),
    )
    # Only validated UIDs go into logs: the ingestor binds the dataset's once it checked them.
    with structlog.contextvars.bound_contextvars(**_association_context(event)):
        return ingestor.ingest(received)


def handle_requested(
    event: Event, policy: AccessPolicy, metrics: IngestMetrics, slots: AssociationSlots | None = None
) -> None:
    """EVT_REQUESTED: reject a caller the access policy does not admit, or one beyond the
    association limits (in all, or from its address), before negotiation."""
    assoc = event.assoc
    primitive = assoc.requestor.primitive
    called = str(primitive.called_ae_title if primitive is not None else "")
    calling = str(primitive.calling_ae_title if primitive is not None else "")
    address = assoc.requestor.address
    denial = policy.check(called_ae=called, calling_ae=calling, address=address)
    if denial is None:
        refusal = None if slots is None else slots.admit(assoc)
        if slots is None or refusal is None:
            return
        metrics.associations.labels(outcome=refusal).inc()
        log.warning(
            "association_rejected",
            reason=refusal,
            limit=slots.limit if refusal == "too_many_associations" else slots.per_peer,
            calling_ae=calling,
            peer_address=address,
        )
        # Transient, local limit exceeded (PS3.8 7.1.1.9): the sender should try again later.
        assoc.acse.send_reject(
            REJECTED_TRANSIENT, SOURCE_SERVICE_PROVIDER_PRESENTATION, DIAG_LOCAL_LIMIT_EXCEEDED
        )
        assoc.kill()
        return
    metrics.associations.labels(outcome=denial.value).inc()
    log.warning(
        "association_rejected",
        reason=denial.value,
        called_ae=called,
        calling_ae=calling,
        peer_address=address,
    )
    # Permanent rejection by the service user (PS3.8 7.1.1.9); pynetdicom skips negotiation after it.
    assoc.acse.send_reject(REJECTED_PERMANENT, SOURCE_SERVICE_USER, denial.diagnostic)
    # As pynetdicom does for its own rejections: wait until the peer got it and closed the connection.
    assoc.kill()


def handle_established(event: Event, metrics: IngestMetrics) -> None:
    metrics.associations.labels(outcome="accepted").inc()
    contexts = [cx.abstract_syntax for cx in event.assoc.accepted_contexts]
    log.info("association_established", **_association_context(event), accepted_contexts=len(contexts))


def handle_released(event: Event, hints: ReleaseHints | None = None) -> None:
    """EVT_RELEASED: a hint per study the association stored (the worker may close them early)."""
    published = hints.released(id(event.assoc)) if hints is not None else 0
    log.info("association_released", **_association_context(event), release_hints=published)


def handle_aborted(event: Event, hints: ReleaseHints | None = None) -> None:
    if hints is not None:
        hints.forget(id(event.assoc))  # an aborted study may be partial: the stable-age timer decides
    log.warning("association_aborted", **_association_context(event))


def handle_closed(event: Event, hints: ReleaseHints | None = None) -> None:
    """EVT_CONN_CLOSE: whatever ended the association, its studies are no longer tracked."""
    if hints is not None:
        hints.forget(id(event.assoc))


# pynetdicom's own rejections (PS3.8 7.1.1.9): (source, diagnostic) -> reason.
_PYNETDICOM_REJECTIONS: dict[tuple[Any, Any], str] = {
    (SOURCE_SERVICE_PROVIDER_PRESENTATION, DIAG_LOCAL_LIMIT_EXCEEDED): "too_many_associations",
    (SOURCE_SERVICE_USER, DIAG_CALLED_AE_NOT_RECOGNISED): "called_ae_unknown",
}


def handle_rejected(event: Event, metrics: IngestMetrics) -> None:
    """EVT_REJECTED: pynetdicom rejected the association itself (for example too many at once)."""
    primitive = event.assoc.acceptor.primitive
    key = (getattr(primitive, "result_source", None), getattr(primitive, "diagnostic", None))
    reason = _PYNETDICOM_REJECTIONS.get(key, f"source_{key[0]}_diagnostic_{key[1]}")
    metrics.associations.labels(outcome=reason).inc()
    log.warning("association_rejected", reason=reason, **_association_context(event))


def store_handlers(
    *,
    ingestor: Ingestor,
    policy: AccessPolicy,
    metrics: IngestMetrics,
    slots: AssociationSlots | None = None,
    release_hints: ReleaseHints | None = None,
) -> list[tuple[evt.EventType, object, list[object]] | tuple[evt.EventType, object]]:
    """The handlers the listener binds, with their collaborators."""
    return [
        (evt.EVT_REQUESTED, handle_requested, [policy, metrics, slots]),
        (evt.EVT_ESTABLISHED, handle_established, [metrics]),
        (evt.EVT_REJECTED, handle_rejected, [metrics]),
        (evt.EVT_RELEASED, handle_released, [release_hints]),
        (evt.EVT_ABORTED, handle_aborted, [release_hints]),
        (evt.EVT_CONN_CLOSE, handle_closed, [release_hints]),
        (evt.EVT_C_STORE, handle_store, [ingestor]),
    ]
