"""Promotion: a candidate becomes active only if it is at least as good as the active model on the same data.

"The same data" is the candidate's evaluation set: the test split of its manifest. Both models are
evaluated afresh on those items, each at its own input size through the classifier's preprocessing,
so a candidate is never compared with a number measured on another test set. (If the active model
was trained on some of those items its score is flattering, which only makes promotion stricter.)
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import structlog
from sqlalchemy.orm import Session

from classifier.artifact import load_artifact
from storage.model_versions import get_active_model_version, get_model_version, set_model_status
from storage.models import ModelVersion
from training.evaluate import classification_metrics
from training.manifest import Manifest
from training.trainset import load_model_inputs, path_from_uri

log = structlog.get_logger(__name__)


class PromotionError(Exception):
    """The promotion cannot be decided or carried out; the message says why."""


@dataclass(frozen=True, slots=True)
class PromotionDecision:
    promote: bool
    forced: bool
    reason: str


def decide_promotion(*, candidate_f1: float, active_f1: float | None, force: bool) -> PromotionDecision:
    """Promote when there is no active model or the candidate's macro-F1 is at least the active one's."""
    if active_f1 is None:
        return PromotionDecision(True, False, f"no active model; candidate macro-F1 {candidate_f1:.4f}")
    if candidate_f1 >= active_f1:
        return PromotionDecision(
            True, False, f"candidate macro-F1 {candidate_f1:.4f} >= active {active_f1:.4f} on the same set"
        )
    if force:
        return PromotionDecision(
            True,
            True,
            f"FORCED: candidate macro-F1 {candidate_f1:.4f} < active {active_f1:.4f} on the same set",
        )
    return PromotionDecision(
        False,
        False,
        f"refused: candidate macro-F1 {candidate_f1:.4f} < active {active_f1:.4f} on the same set",
    )


def _manifest_path(version: ModelVersion) -> Path:
    artifact = Path(path_from_uri(version.artifact_uri))
    return artifact / (version.card.get("extra") or {}).get("manifest_file", "manifest.json")


def decide_without_evaluation_set(
    *, version: str, active: ModelVersion | None, force: bool
) -> PromotionDecision:
    """An imported version with nothing to evaluate it on: first model of a site, or --force."""
    if active is None:
        return PromotionDecision(True, False, f"no active model; {version} (imported) has no evaluation set")
    if force:
        return PromotionDecision(
            True,
            True,
            f"FORCED: {version} (imported) and active {active.version} have no common evaluation set",
        )
    return PromotionDecision(
        False,
        False,
        f"refused: {version} (imported) has no evaluation set and neither has active {active.version}",
    )


def evaluation_set(candidate: ModelVersion) -> Manifest:
    """The manifest stored with the candidate's artifact (its test split is the evaluation set)."""
    path = _manifest_path(candidate)
    if not path.is_file():
        raise PromotionError(
            f"version {candidate.version} has no manifest at {path}; cannot build its evaluation set"
        )
    manifest = Manifest.read(path)
    if candidate.manifest_hash is not None and manifest.hash() != candidate.manifest_hash:
        raise PromotionError(
            f"the manifest at {path} is not the one version {candidate.version} was registered with"
        )
    return manifest


def macro_f1_on(version: ModelVersion, manifest: Manifest) -> float:
    """Macro-F1 of `version` on the test split of `manifest`."""
    model, card = load_artifact(Path(path_from_uri(version.artifact_uri)), expected_sha256=version.sha256)
    items = manifest.items_in("test")
    if not items:
        raise PromotionError("the evaluation set (the manifest's test split) is empty")
    inputs = load_model_inputs(items, image_size=card.image_size, window=card.window_obj)
    probabilities = np.asarray(model.predict(inputs, verbose=0))
    truth = [manifest.classes.index(i.label) for i in items]
    return float(classification_metrics(truth, probabilities, manifest.classes)["macro_f1"])


def promote(session: Session, *, version: str, force: bool, now: dt.datetime) -> PromotionDecision:
    """Evaluate and, if allowed, make `version` active (retiring the active one); the caller commits."""
    candidate = get_model_version(session, version=version)
    if candidate is None:
        raise PromotionError(f"no model version {version!r}")
    if candidate.status == "active":
        raise PromotionError(f"version {version} is already active")
    active = get_active_model_version(session)
    if candidate.manifest_hash is None and not _manifest_path(candidate).is_file():
        # Imported from a notebook's file: no split of ours. Judge it on the active model's set.
        if active is None or not _manifest_path(active).is_file():
            decision = decide_without_evaluation_set(version=version, active=active, force=force)
            set_model_status(
                session,
                version=version,
                status="active" if decision.promote else candidate.status,
                now=now,
                note=decision.reason,
            )
            log.info("promotion_decided", version=version, promote=decision.promote, forced=decision.forced)
            return decision
        manifest = evaluation_set(active)
    else:
        manifest = evaluation_set(candidate)
    candidate_f1 = macro_f1_on(candidate, manifest)
    active_f1 = macro_f1_on(active, manifest) if active is not None else None
    decision = decide_promotion(candidate_f1=candidate_f1, active_f1=active_f1, force=force)
    log.info(
        "promotion_decided",
        version=version,
        active_version=active.version if active else None,
        candidate_macro_f1=round(candidate_f1, 4),
        active_macro_f1=None if active_f1 is None else round(active_f1, 4),
        promote=decision.promote,
        forced=decision.forced,
    )
    # A refusal is recorded too, so the audit trail shows every attempt.
    status = "active" if decision.promote else candidate.status
    set_model_status(session, version=version, status=status, now=now, note=decision.reason)
    return decision
