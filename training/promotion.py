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
(`storage.db.promotion_results`), so that the worker sends the new version's report revision.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import numpy as np
import structlog
from sqlalchemy.orm import Session

from classifier.model.artifact import load_artifact
from classifier.model.preprocess import KIDNEY_WINDOW, Window
from storage.archive.reader import ArchiveReader
from storage.db.model_versions import get_active_model_version, get_model_version
from storage.db.tables import ModelVersion
from training.admission import (
    PromotionDecision,
    PromotionError,
    decide_before_evaluation,
    decide_without_evaluation_set,
    forced_label,
    manifest_path,
    record_decision,
)
from training.baseline import (
    FROZEN_LITE0,
    FROZEN_SIZE,
    baseline_probabilities,
    logistic_frozen_lite0_predict,
    unavailable_baselines,
)
from training.bootstrap import paired_macro_f1_difference
from training.manifest import Manifest, ManifestItem
from training.trainset import load_model_inputs, path_from_uri

log = structlog.get_logger(__name__)
__all__ = [
    "PromotionDecision",
    "PromotionError",
    "decide_promotion",
    "decide_without_evaluation_set",
    "promote",
]


def _describe(name: str, c: dict[str, Any]) -> str:
    lo, hi = c["interval"]
    return (
        f"{name} {c['other_macro_f1']:.3f} (difference {c['difference']:+.3f}, 95% CI [{lo:+.3f}, {hi:+.3f}])"
    )


def decide_promotion(
    *,
    comparisons: dict[str, dict[str, Any]],
    force: bool,
    force_reason: str | None = None,
    unavailable: dict[str, str] | None = None,
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
    # A baseline that could not run is said, never silently dropped from the panel.
    detail += "".join(f"; {n} unavailable ({why})" for n, why in (unavailable or {}).items())
    head = f"candidate macro-F1 {candidate:.3f} vs {detail}"
    if not losing:
        return PromotionDecision(True, False, f"beats all by more than the uncertainty: {head}", comparisons)
    not_beaten = ", ".join(losing)
    if force:
        return PromotionDecision(
            True,
            True,
            f"{forced_label(force_reason)}: does not clearly beat {not_beaten}: {head}",
            comparisons,
        )
    return PromotionDecision(
        False, False, f"refused: does not clearly beat {not_beaten}: {head}", comparisons
    )


def evaluation_set(candidate: ModelVersion) -> Manifest:
    """The manifest stored with the candidate's artifact (its test split is the evaluation set)."""
    path = manifest_path(candidate)
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
    manifest: Manifest,
    items: list[ManifestItem],
    window: Window,
    reader: ArchiveReader | None = None,
    feature_cache: Path | None = None,
) -> dict[str, np.ndarray]:
    """The baselines fitted on the manifest's train + val items, predicting `items` (pixels at 64 px;
    the frozen Lite0 baseline, where installed, at its own 224 px, features cached under `feature_cache`)."""
    train = [i for i in manifest.items if i.split in ("train", "val")]
    if not train:
        raise PromotionError("the manifest has no train/val items to fit the baselines on")
    labels = np.asarray([manifest.classes.index(i.label) for i in train])

    def load(chosen: list[ManifestItem], size: int) -> np.ndarray:
        return load_model_inputs(chosen, image_size=size, window=window, reader=reader)[..., :1]

    size, k = BASELINE_IMAGE_SIZE, len(manifest.classes)
    out = baseline_probabilities(load(train, size), labels, load(items, size), k, frozen=False)
    if not unavailable_baselines():
        out[FROZEN_LITE0] = logistic_frozen_lite0_predict(
            load(train, FROZEN_SIZE), labels, load(items, FROZEN_SIZE), k, feature_cache=feature_cache
        )
    return out


def promote(
    session: Session,
    *,
    version: str,
    force: bool,
    now: dt.datetime,
    force_reason: str | None = None,
    reader: ArchiveReader | None = None,
    feature_cache: Path | None = None,
) -> PromotionDecision:
    """Evaluate and, if allowed, make `version` active (retiring the active one); the caller commits.

    `reader` opens the evaluation set's DICOM items wherever the archive keeps them (local or S3);
    `feature_cache` is where the frozen-feature baseline keeps its features (the trainer's cache).
    """
    candidate = get_model_version(session, version=version)
    if candidate is None:
        raise PromotionError(f"no model version {version!r}")
    if candidate.status == "active":
        raise PromotionError(f"version {version} is already active")
    active = get_active_model_version(session)
    decided = decide_before_evaluation(
        session, candidate, active, force=force, force_reason=force_reason, now=now
    )
    if decided is not None:
        return decided
    if candidate.manifest_hash is None and not manifest_path(candidate).is_file():
        # Imported from a notebook's file: no split of ours. Judge it on the active model's set (which
        # exists: decide_before_evaluation answered otherwise).
        assert active is not None
        manifest = evaluation_set(active)
    else:
        manifest = evaluation_set(candidate)
    items = evaluation_items(manifest)
    truth = np.asarray([manifest.classes.index(i.label) for i in items])
    groups = [i.group for i in items]
    # The window the trainer decoded DICOM with (recorded in the manifest); images ignore it.
    window = Window(**manifest.grouping.get("window", KIDNEY_WINDOW.as_dict()))
    others = baselines_on(manifest, items, window, reader, feature_cache)
    if active is not None:
        others[f"active {active.version}"] = probabilities_on(active, items, reader)
    comparisons = paired_macro_f1_difference(
        truth, probabilities_on(candidate, items, reader), others, groups, len(manifest.classes)
    )
    decision = decide_promotion(
        comparisons=comparisons, force=force, force_reason=force_reason, unavailable=unavailable_baselines()
    )
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
    return record_decision(session, candidate, decision, now)
