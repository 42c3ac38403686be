"""`kidneyct models promote VERSION`: the promotion gate (refusals that need no model come first)."""

from __future__ import annotations

import datetime as dt

import click
from sqlalchemy.orm import Session, sessionmaker

from kidneyct.settings import Settings


@click.command("promote")
@click.argument("version")
@click.option(
    "--force",
    is_flag=True,
    help="Promote even if it does not clearly beat the baselines or the active model (recorded).",
)
@click.option("--reason", default=None, help="Why --force is used; required with it, recorded in the note.")
@click.option(
    "--backfill-since",
    default=None,
    help="Also queue the studies received in this window (e.g. 7d, 24h) for the new version.",
)
@click.pass_obj
def promote_command(
    settings: Settings, version: str, force: bool, reason: str | None, backfill_since: str | None
) -> None:
    """Make VERSION active if it beats the baselines and the active model by more than the uncertainty.

    On its evaluation set (the held-out splits of its manifest), the 95 % group-bootstrap interval of
    its macro-F1 minus each other model's must lie above zero; the first promotion included.
    """
    from kidneyct.database import open_database
    from kidneyct.reprocess.backfill import backfill, backfill_window

    if force and not (reason or "").strip():
        raise click.BadParameter("--force needs --reason TEXT (it is recorded with the promotion)")
    window = backfill_window(backfill_since)
    sessions = open_database(settings)  # refuses a database `kidneyct db upgrade` never ran on
    decision = _decide_without_keras(sessions, version, force, reason)
    if decision is None:  # the gate: the models are evaluated on labelled data (Keras from here on)
        decision = _promote_on_the_gate(settings, sessions, version, force, reason)
    click.echo(decision.reason)
    if decision.reopened:
        click.echo(
            f"{decision.reopened} study result(s) of {version} differ from what PACS was sent: "
            "re-opened, the worker sends their new report revision"
        )
    if not decision.promote:
        raise click.ClickException(f"{version} not promoted (use --force to override; it will be recorded)")
    if window is not None:
        click.echo(backfill(settings, sessions, version=version, window=window))


def _decide_without_keras(  # type: ignore[no-untyped-def]
    sessions: sessionmaker[Session], version: str, force: bool, reason: str | None
):
    """An unknown version, an active one, and every decision that needs no model (training.admission)."""
    from storage.db.model_versions import get_active_model_version, get_model_version
    from storage.db.shadow_models import set_shadow
    from training.admission import PromotionError, decide_before_evaluation

    try:
        with sessions.begin() as session:
            row = get_model_version(session, version=version)
            if row is None:
                raise click.ClickException(f"no model version {version!r} (see `kidneyct models list`)")
            if row.status == "active":
                raise click.ClickException(f"version {version} is already active")
            active = get_active_model_version(session)
            decision = decide_before_evaluation(
                session, row, active, force=force, force_reason=reason, now=dt.datetime.now(dt.UTC)
            )
            if decision is not None and decision.promote:
                set_shadow(session, version=version, on=False)  # the active model is nobody's shadow
            return decision
    except PromotionError as exc:
        raise click.ClickException(str(exc)) from exc


def _promote_on_the_gate(  # type: ignore[no-untyped-def]
    settings: Settings, sessions: sessionmaker[Session], version: str, force: bool, reason: str | None
):
    from classifier.worker.errors import ArtifactError
    from kidneyct.archives import build_archive_reader
    from storage.archive.reader import ArchiveUnavailable
    from storage.db.shadow_models import set_shadow
    from training.frozen_features import FEATURE_CACHE_DIR
    from training.promotion import PromotionError, promote

    try:
        with sessions.begin() as session:
            decision = promote(
                session,
                version=version,
                force=force,
                now=dt.datetime.now(dt.UTC),
                force_reason=reason,
                reader=build_archive_reader(settings),
                feature_cache=settings.resolved_train_dir() / FEATURE_CACHE_DIR,
            )
            if decision.promote:
                set_shadow(session, version=version, on=False)  # the active model is nobody's shadow
    except (PromotionError, ArtifactError, ArchiveUnavailable) as exc:
        raise click.ClickException(str(exc)) from exc
    return decision
