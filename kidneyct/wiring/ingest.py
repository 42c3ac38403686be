"""Wiring of the listener from the settings, and its run until a stop is requested.

`kidneyct listen` (and `kidneyct serve`) call these; nothing here reads the environment.
"""

from __future__ import annotations

import threading

import structlog
from sqlalchemy.orm import Session, sessionmaker

from common.health import broker_check
from common.metrics import MetricsServer
from common.pynetdicom_switches import enable_chunked_receive
from ingest.access import AccessPolicy
from ingest.ae import (
    CT_SOP_CLASSES,
    AEOptions,
    build_ae,
    make_tls_context,
    parse_sop_classes,
)
from ingest.catalog import Catalog
from ingest.handlers import store_handlers
from ingest.ingestor import Ingestor
from ingest.listener import Listener
from ingest.metrics import IngestMetrics
from ingest.release_hints import ReleaseHints
from ingest.server import AssociationSlots, ServerLimits
from kidneyct.archives import build_archive
from kidneyct.settings import Settings
from kidneyct.streams import make_consumer
from storage.stream.contract import Publisher

log = structlog.get_logger(__name__)


def build_listener(settings: Settings, *, publisher: Publisher, metrics: IngestMetrics) -> Listener:
    """A listener configured by `settings`; raises ValueError for a setting that cannot work."""
    if (settings.tls_cert is None) != (settings.tls_key is None):
        raise ValueError("TLS needs both KIDNEYCT_TLS_CERT and KIDNEYCT_TLS_KEY")
    if settings.tls_ca is not None and settings.tls_cert is None:
        raise ValueError("KIDNEYCT_TLS_CA requires TLS (KIDNEYCT_TLS_CERT and KIDNEYCT_TLS_KEY)")
    policy = AccessPolicy.from_setting(
        ae_title=settings.ae_title, allowed_calling_aes=settings.allowed_calling_aes
    )
    options = AEOptions(
        ae_title=settings.ae_title,
        extra_sop_classes=tuple(parse_sop_classes(settings.extra_storage_sop_classes)),
        max_associations=settings.max_associations,
        max_pending=settings.max_pending_connections,
        max_pdu_size=settings.max_pdu_size,
        acse_timeout_s=settings.acse_timeout_s,
        dimse_timeout_s=settings.dimse_timeout_s,
        network_timeout_s=settings.network_timeout_s,
    )
    release_hints = (
        ReleaseHints(publisher=publisher, topic=settings.topic_instances) if settings.release_hints else None
    )
    ingestor = Ingestor(
        archive=build_archive(settings),
        publisher=publisher,
        topic=settings.topic_instances,
        metrics=metrics,
        max_instance_bytes=settings.max_instance_bytes,
        image_sop_classes=frozenset(CT_SOP_CLASSES),
        decode_first_frame=settings.verify_compressed_pixel_data,
        max_decoded_bytes=settings.max_decoded_bytes,
        max_deflate_ratio=settings.max_deflate_ratio,
        release_hints=release_hints,
    )
    tls = None
    if settings.tls_cert is not None and settings.tls_key is not None:
        tls = make_tls_context(
            cert=settings.tls_cert,
            key=settings.tls_key,
            ca=settings.tls_ca,
            handshake_timeout_s=settings.association_establish_timeout_s,
        )
        tls.on_handshake_failure = lambda _peer: metrics.associations.labels(
            outcome="tls_handshake_failed"
        ).inc()
    enable_chunked_receive()
    limits = ServerLimits(
        max_associations=settings.max_associations,
        max_associations_per_peer=settings.max_associations_per_peer,
        max_pending=settings.max_pending_connections,
        max_pending_per_peer=settings.max_pending_connections_per_peer,
        establish_timeout_s=settings.association_establish_timeout_s,
        max_pdu_bytes=settings.max_pdu_size,
        network_timeout_s=settings.network_timeout_s,
        message_gap_timeout_s=settings.message_gap_timeout_s,
        association_max_s=settings.association_max_duration_s,
        reuse_port=settings.dicom_reuse_port,
    )
    slots = AssociationSlots(settings.max_associations, per_peer=settings.max_associations_per_peer)
    listener = Listener(
        ae=build_ae(options),
        host=settings.dicom_host,
        port=settings.dicom_port,
        evt_handlers=store_handlers(
            ingestor=ingestor, policy=policy, metrics=metrics, slots=slots, release_hints=release_hints
        ),
        ssl_context=tls,
        limits=limits,
    )
    # Read at scrape time from the server's own list, so no event handler can leave it off by one.
    metrics.associations_active.set_function(listener.active_associations)
    return listener


def build_catalog(
    settings: Settings, sessions: sessionmaker[Session], *, doorbell: threading.Condition | None = None
) -> Catalog:
    """The catalogue consumer of `settings` (its consumer is made in the thread that runs it)."""
    return Catalog(
        make_consumer=lambda: make_consumer(
            settings,
            sessions,
            group_id=settings.catalog_group,
            topics=[settings.topic_instances],
            doorbell=doorbell,
        ),
        sessions=sessions,
        stream_reachable=broker_check(settings.kafka_bootstrap) if settings.kafka_bootstrap else None,
    )


def run_until_stopped(
    listener: Listener,
    *,
    publisher: Publisher,
    stop: threading.Event,
    grace_s: float,
    metrics_server: MetricsServer | None = None,
) -> None:
    """Serve until `stop` is set, then drain associations, flush the publisher and clean up."""
    listener.start()
    # A timed wait keeps the main thread responsive to signals on every platform.
    while not stop.wait(1.0):
        pass
    log.info("shutdown_requested", in_flight=listener.active_associations())
    listener.stop(grace_s=grace_s)
    try:
        publisher.close()
    except Exception:  # noqa: BLE001 - every publish already waited for its acknowledgement
        log.exception("publisher_close_failed")
    if metrics_server is not None:
        metrics_server.close()
    log.info("listener_exited")
