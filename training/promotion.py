"""Promotion: a candidate becomes active only if it beats the trivial baselines and the active model by more
than the uncertainty, on the same held-out data.

"The same data" is the candidate's evaluation set: the held-out splits of its manifest (`test` and, when
the run held out the latest IDs, `latest`). The candidate and the active model are evaluated afresh on
those items, each at its own input size through the classifier's preprocessing; the baselines
(1-nearest-neighbour and ridge on 32x32 pixels) are fitted afresh on the manifest's train + val items.
"By more than the uncertainty": the 95 % group-bootstrap interval of the paired macro-F1 difference
(candidate minus each other model, the same resampled groups for both) must lie above zero. This holds
for the first promotion too: a model that does not beat a lookup table is noise on new patients
whatever else is active. (If the active model was trained on some of those items its score is
flattering, which only makes promotion stricter.) `--force` overrides, and the note records it with
the reason given and the comparison it overrode.

A version imported from a notebook's file has no split of ours: it is judged on the active model's
evaluation set when there is one. A site's first model, imported with nothing to evaluate it on, needs
the acceptance result of its import (`models import ... --acceptance FOLDER`, the site's own labelled
images): accuracy at least `training.acceptance.FLOOR_ACCURACY` and every class above chance. An
imported version whose parity was not checked (weights only, `--no-parity`) needs an acceptance
result in every case: nothing else shows that its stated pooling, activation and class order are
right. `--force --reason` overrides any of these, and the note records it.

Once a version is active, its study results that differ from what PACS was sent are re-opened
(`storage.promotion_results`), so that the worker sends the new version's report revision.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import structlog
from sqlalchemy.orm import Session

from classifier.artifact import load_artifact
from classifier.preprocess import KIDNEY_WINDOW, Window
from storage.archive_reader import ArchiveReader
from storage.model_versions import get_active_model_version, get_model_version, set_model_status
from storage.models import ModelVersion
from storage.promotion_results import reopen_changed_results
from training.acceptance import first_model_shortfalls
from training.baseline import baseline_probabilities
from training.bootstrap import paired_macro_f1_difference
from training.manifest import Manifest, ManifestItem
from training.trainset import load_model_inputs, path_from_uri

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


def _describe(name: str, c: dict[str, Any]) -> str:
    lo, hi = c["interval"]
    return (
        f"{name} {c['other_macro_f1']:.3f} (difference {c['difference']:+.3f}, 95% CI [{lo:+.3f}, {hi:+.3f}])"
    )


def decide_promotion(
    *, comparisons: dict[str, dict[str, Any]], force: bool, force_reason: str | None = None
) -> PromotionDecision:
    """Promote when, against every other model (baselines and the active one), the lower end of the paired
    macro-F1 difference's interval is above zero; `force` overrides and says so.

    `comparisons`: other model -> `training.bootstrap.paired_macro_f1_difference` entry.
    """
    if not comparisons:
        raise PromotionError("nothing to compare the candidate with")
    candidate = next(iter(comparisons.values()))["candidate_macro_f1"]
    losing = [n for n, c in comparisons.items() if not c["interval"][0] > 0.0]
    detail = "; ".join(_describe(n, c) for n, c in comparisons.items())
    head = f"candidate macro-F1 {candidate:.3f} vs {detail}"
    if not losing:
        return PromotionDecision(True, False, f"beats all by more than the uncertainty: {head}", comparisons)
    not_beaten = ", ".join(losing)
    if force:
        return PromotionDecision(
            True, True, f"{_forced(force_reason)}: does not clearly beat {not_beaten}: {head}", comparisons
        )
    return PromotionDecision(
        False, False, f"refused: does not clearly beat {not_beaten}: {head}", comparisons
    )


def _manifest_path(version: ModelVersion) -> Path:
    artifact = Path(path_from_uri(version.artifact_uri))
    return artifact / (version.card.get("extra") or {}).get("manifest_file", "manifest.json")


def _forced(force_reason: str | None) -> str:
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
        return PromotionDecision(True, True, f"{_forced(force_reason)}: {version} (imported) {common}")
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


EVALUATION_SPLITS = ("test", "latest")
BASELINE_IMAGE_SIZE = 64  # the baselines downsample to 32x32 anyway


def evaluation_items(manifest: Manifest) -> list[ManifestItem]:
    items = [i for i in manifest.items if i.split in EVALUATION_SPLITS]
    if not items:
        raise PromotionError("the evaluation set (the manifest's test and latest splits) is empty")
    return items


def probabilities_on(
    version: ModelVersion, items: list[ManifestItem], reader: ArchiveReader | None = None
) -> np.ndarray:
    """`version`'s class probabilities on `items`, through the classifier's preprocessing at its own size."""
    model, card = load_artifact(Path(path_from_uri(version.artifact_uri)), expected_sha256=version.sha256)
    inputs = load_model_inputs(items, image_size=card.image_size, window=card.window_obj, reader=reader)
    return np.asarray(model.predict(inputs, verbose=0))


def baselines_on(
    manifest: Manifest, items: list[ManifestItem], window: Window, reader: ArchiveReader | None = None
) -> dict[str, np.ndarray]:
    """The baselines fitted on the manifest's train + val items, predicting `items`."""
    train = [i for i in manifest.items if i.split in ("train", "val")]
    if not train:
        raise PromotionError("the manifest has no train/val items to fit the baselines on")
    size = BASELINE_IMAGE_SIZE
    train_images = load_model_inputs(train, image_size=size, window=window, reader=reader)[..., :1]
    test_images = load_model_inputs(items, image_size=size, window=window, reader=reader)[..., :1]
    labels = np.asarray([manifest.classes.index(i.label) for i in train])
    return baseline_probabilities(train_images, labels, test_images, len(manifest.classes))


def promote(
    session: Session,
    *,
    version: str,
    force: bool,
    now: dt.datetime,
    force_reason: str | None = None,
    reader: ArchiveReader | None = None,
) -> PromotionDecision:
    """Evaluate and, if allowed, make `version` active (retiring the active one); the caller commits.

    `reader` opens the evaluation set's DICOM items wherever the archive keeps them (local or S3).
    """
    candidate = get_model_version(session, version=version)
    if candidate is None:
        raise PromotionError(f"no model version {version!r}")
    if candidate.status == "active":
        raise PromotionError(f"version {version} is already active")
    if force and not (force_reason or "").strip():
        raise PromotionError("--force needs --reason TEXT (it is recorded with the promotion)")
    active = get_active_model_version(session)
    unchecked = unchecked_without_acceptance(candidate)
    if unchecked is not None:
        decision = (
            PromotionDecision(True, True, f"{_forced(force_reason)}: {unchecked.removeprefix('refused: ')}")
            if force
            else PromotionDecision(False, False, unchecked)
        )
        return _record(session, candidate, decision, now)
    if candidate.manifest_hash is None and not _manifest_path(candidate).is_file():
        # Imported from a notebook's file: no split of ours. Judge it on the active model's set.
        if active is None or not _manifest_path(active).is_file():
            decision = decide_without_evaluation_set(
                candidate=candidate, active=active, force=force, force_reason=force_reason
            )
            return _record(session, candidate, decision, now)
        manifest = evaluation_set(active)
    else:
        manifest = evaluation_set(candidate)
    items = evaluation_items(manifest)
    truth = np.asarray([manifest.classes.index(i.label) for i in items])
    groups = [i.group for i in items]
    # The window the trainer decoded DICOM with (recorded in the manifest); images ignore it.
    window = Window(**manifest.grouping.get("window", KIDNEY_WINDOW.as_dict()))
    others = baselines_on(manifest, items, window, reader)
    if active is not None:
        others[f"active {active.version}"] = probabilities_on(active, items, reader)
    comparisons = paired_macro_f1_difference(
        truth, probabilities_on(candidate, items, reader), others, groups, len(manifest.classes)
    )
    decision = decide_promotion(comparisons=comparisons, force=force, force_reason=force_reason)
    log.info(
        "promotion_decided",
        version=version,
        active_version=active.version if active else None,
        candidate_macro_f1=round(next(iter(comparisons.values()))["candidate_macro_f1"], 4),
        others={n: round(c["other_macro_f1"], 4) for n, c in comparisons.items()},
        lower_bounds={n: round(c["interval"][0], 4) for n, c in comparisons.items()},
        promote=decision.promote,
        forced=decision.forced,
    )
    return _record(session, candidate, decision, now)


def _record(
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
