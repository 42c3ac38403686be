"""Builds the result sender from the settings: shared by `kidneyct send-results` and `kidneyct serve`."""

from __future__ import annotations

from sqlalchemy.orm import Session, sessionmaker

from delivery.destinations import make_client_tls_context, parse_destinations
from delivery.metrics import SenderMetrics
from delivery.scu import StoreOptions
from delivery.sender import ResultSender, SenderConfig
from kidneyct.settings import Settings


def check_result_settings(settings: Settings) -> None:
    """ValueError naming the bad setting (destinations, heat map mode, TLS files)."""
    parse_destinations(settings.result_destinations)
    if settings.result_heatmap not in ("pmap", "sc", "none"):
        raise ValueError(f"KIDNEYCT_RESULT_HEATMAP must be pmap, sc or none, not {settings.result_heatmap!r}")
    if (settings.result_tls_cert is None) != (settings.result_tls_key is None):
        raise ValueError("KIDNEYCT_RESULT_TLS_CERT and KIDNEYCT_RESULT_TLS_KEY go together")


def sender_config(settings: Settings) -> SenderConfig:
    tls = None
    if settings.result_tls_ca is not None:
        tls = make_client_tls_context(
            ca=settings.result_tls_ca, cert=settings.result_tls_cert, key=settings.result_tls_key
        )
    return SenderConfig(
        store=StoreOptions(
            calling_ae=settings.ae_title,
            tls=tls,
            acse_timeout_s=settings.acse_timeout_s,
            dimse_timeout_s=settings.dimse_timeout_s,
            network_timeout_s=settings.network_timeout_s,
        ),
        max_attempts=settings.result_max_attempts,
        retry_initial_s=settings.result_retry_initial_s,
        retry_max_s=settings.result_retry_max_s,
        poll_s=settings.result_poll_s,
        lease_s=settings.result_lease_s,
    )


def build_sender(settings: Settings, sessions: sessionmaker[Session], metrics: SenderMetrics) -> ResultSender:
    check_result_settings(settings)
    return ResultSender(sessions=sessions, config=sender_config(settings), metrics=metrics)
