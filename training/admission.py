"""Promotion decisions that need no model loaded (no Keras): imported versions with nothing to evaluate
them on, and the record of every decision. `training.promotion` runs the gate on labelled data; the
`models promote` command asks here first, so those refusals come in seconds.

A site's first model, imported with nothing to evaluate it on, is promoted on the acceptance result of
its import (`training.acceptance`: accuracy at least `FLOOR_ACCURACY`, every class above chance). An
imported version whose parity was not checked (weights only, `--no-parity`) needs an acceptance result
in every case. `--force --reason` overrides, and the note records it. A promotion re-opens the new
version's study results that differ from what PACS was sent (`storage.db.promotion_results`).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import structlog
from sqlalchemy.orm import Session

from storage.db.model_versions import set_model_status
from storage.db.promotion_results import reopen_changed_results
from storage.db.tables import ModelVersion
from training.acceptance import first_model_shortfalls
from training.trainset import path_from_uri

log = structlog.get_logger(__name__)


class PromotionError(Exception):
    """The promotion cannot be decided or carried out; the message says why."""


@dataclass(frozen=True, slots=True)
class PromotionDecision:
    promote: bool
    forced: bool
    reason: str
    comparisons: dict[str, dict[str, Any]] = field(default_factory=dict)
    reopened: int = 0  # study results re-opened to send the new version's report revision


def manifest_path(version: ModelVersion) -> Path:
    artifact = Path(path_from_uri(version.artifact_uri))
    return artifact / (version.card.get("extra") or {}).get("manifest_file", "manifest.json")


def forced_label(force_reason: str | None) -> str:
    return f"FORCED (reason: {force_reason})" if force_reason else "FORCED"


def import_record(version: ModelVersion) -> dict[str, Any] | None:
    """What `models import` recorded of a version imported from a notebook's file (None: trained here)."""
    record = (version.card.get("extra") or {}).get("import")
    return record if isinstance(record, dict) else None


def describe_acceptance(acceptance: dict[str, Any]) -> str:
    recall = ", ".join(f"{c} {r:.2f}" for c, r in acceptance["recall"].items())
    return f"acceptance accuracy {acceptance['accuracy']:.3f} on {acceptance['slices']} slice(s), recall {recall}"


def unchecked_without_acceptance(candidate: ModelVersion) -> str | None:
    """Why an imported version whose parity was not checked cannot be promoted without acceptance."""
    record = import_record(candidate)
    if record is None or (record.get("parity") or {}).get("checked") or record.get("acceptance"):
        return None
    return (
        f"refused: {candidate.version}'s parity was not checked ({record['parity'].get('note')}), and it has no "
        "acceptance result: nothing shows that its stated pooling, activation and class order are right; "
        "import it again with --acceptance FOLDER (the site's labelled images), or promote with --force --reason"
    )


def decide_without_evaluation_set(
    *, candidate: ModelVersion, active: ModelVersion | None, force: bool, force_reason: str | None = None
) -> PromotionDecision:
    """An imported version with nothing to evaluate it on: first model of a site (on its acceptance
    result), or --force."""
    version = candidate.version
    if force:
        common = (
            "has no evaluation set"
            if active is None
            else f"and active {active.version} have no common evaluation set"
        )
        return PromotionDecision(True, True, f"{forced_label(force_reason)}: {version} (imported) {common}")
    if active is not None:
        return PromotionDecision(
            False,
            False,
            f"refused: {version} (imported) has no evaluation set and neither has active {active.version}",
        )
    acceptance = (import_record(candidate) or {}).get("acceptance")
    if not acceptance:
        return PromotionDecision(
            False,
            False,
            f"refused: {version} would be the site's first model and has no acceptance result: import it with "
            "--acceptance FOLDER (the site's labelled images), or promote with --force --reason",
        )
    shortfalls = first_model_shortfalls(acceptance)
    if shortfalls:
        return PromotionDecision(
            False,
            False,
            f"refused: first model {version}: {'; '.join(shortfalls)} ({describe_acceptance(acceptance)})",
        )
    return PromotionDecision(True, False, f"first model {version}: {describe_acceptance(acceptance)}")


def decide_before_evaluation(
    session: Session,
    candidate: ModelVersion,
    active: ModelVersion | None,
    *,
    force: bool,
    force_reason: str | None,
    now: dt.datetime,
) -> PromotionDecision | None:
    """The recorded decision when no evaluation set is needed or none exists; None: run the gate."""
    if force and not (force_reason or "").strip():
        raise PromotionError("--force needs --reason TEXT (it is recorded with the promotion)")
    unchecked = unchecked_without_acceptance(candidate)
    if unchecked is not None:
        decision = (
            PromotionDecision(
                True, True, f"{forced_label(force_reason)}: {unchecked.removeprefix('refused: ')}"
            )
            if force
            else PromotionDecision(False, False, unchecked)
        )
        return record_decision(session, candidate, decision, now)
    imported_alone = candidate.manifest_hash is None and not manifest_path(candidate).is_file()
    if imported_alone and (active is None or not manifest_path(active).is_file()):
        decision = decide_without_evaluation_set(
            candidate=candidate, active=active, force=force, force_reason=force_reason
        )
        return record_decision(session, candidate, decision, now)
    return None


def record_decision(
    session: Session, candidate: ModelVersion, decision: PromotionDecision, now: dt.datetime
) -> PromotionDecision:
    """Write the decision (a refusal too: the audit trail shows every attempt); a promotion re-opens the
    new version's study results that differ from what PACS was sent."""
    status = "active" if decision.promote else candidate.status
    set_model_status(session, version=candidate.version, status=status, now=now, note=decision.reason)
    log.info(
        "promotion_recorded", version=candidate.version, promote=decision.promote, forced=decision.forced
    )
    if not decision.promote:
        return decision
    reopened = reopen_changed_results(session, model_version_id=candidate.id, now=now)
    log.info("promotion_results_reopened", version=candidate.version, studies=reopened)
    return replace(decision, reopened=reopened)
