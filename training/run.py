"""One training run, end to end: data -> manifest -> two-phase fit (grouped and random split) -> evaluation
-> Grad-CAM -> artifact -> report. Registration in the database is separate (`training.registry`).
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import keras
import numpy as np
import structlog
from sqlalchemy.orm import Session, sessionmaker

from classifier.artifact import ModelCard, load_artifact, save_artifact
from classifier.errors import ArtifactError
from classifier.gradcam import grad_cam, too_small_for_heatmaps
from classifier.model import build_model
from classifier.preprocess import Window
from storage.models import CLASS_NAMES
from training.baseline import nearest_neighbour_predict
from training.data import AugmentConfig, Augmenter, ImageSequence, to_three_channels
from training.dedup import GroupingParams
from training.evaluate import classification_metrics
from training.fit import FitConfig, FitResult, class_weights, fit_two_phase
from training.report import write_report
from training.split import SplitFractions
from training.trainset import TrainingSet, build_training_set, collect_sources

log = structlog.get_logger(__name__)

MANIFEST_FILE = "manifest.json"
PREDICTIONS_FILE = "test_predictions.json"


class TrainingError(Exception):
    """A training run cannot start or finish; the message says what to change."""


@dataclass(frozen=True)
class TrainOptions:
    image_size: int = 224
    weights: str = "imagenet"  # "imagenet", "none", a base-weights file or a model artifact directory
    fit: FitConfig = field(default_factory=FitConfig)
    seed: int = 42
    fractions: SplitFractions = field(default_factory=SplitFractions)
    grouping: GroupingParams = field(default_factory=GroupingParams)
    window: Window = field(default_factory=lambda: Window(40.0, 400.0))
    augment: AugmentConfig | None = field(default_factory=AugmentConfig)
    compare_random: bool = True
    gradcam_per_class: int = 2
    threads: int = 4


@dataclass
class SplitOutcome:
    name: str  # "grouped" or "random"
    fit: FitResult
    test_metrics: dict[str, Any]
    val_metrics: dict[str, Any] | None
    nearest_neighbour_metrics: dict[str, Any]
    test_indices: np.ndarray
    test_probabilities: np.ndarray
    counts: dict[str, dict[str, int]]
    from_scratch: bool = False  # trained end to end from random weights (see `training.fit`)


@dataclass
class TrainedRun:
    version: str
    run_dir: Path
    artifact_dir: Path
    card: ModelCard
    manifest_hash: str
    grouped: SplitOutcome
    random: SplitOutcome | None
    reload_max_abs_diff: float
    report: dict[str, Any]


def make_model(image_size: int, weights: str) -> tuple[keras.Model, bool]:
    """The classifier's model with the starting weights `--weights` asked for, and whether it trains
    from scratch (random weights, or an artifact that was trained so); or a clear TrainingError."""
    if weights == "none":
        return build_model(image_size=image_size, weights=None, from_scratch=True), True
    if weights == "imagenet":
        try:
            return build_model(image_size=image_size, weights="imagenet"), False
        except Exception as exc:  # keras.utils.get_file raises a bare Exception on URL failures
            raise TrainingError(
                "--weights imagenet downloads ResNet50's ImageNet weights and needs the internet; the download "
                f"failed ({type(exc).__name__}: {exc}). Use --weights none, a weights file, or a model "
                "artifact directory."
            ) from exc
    path = Path(weights)
    if path.is_dir():
        try:
            model, card = load_artifact(path)
        except ArtifactError as exc:
            raise TrainingError(f"--weights {path}: {exc}") from exc
        if card.image_size != image_size:
            raise TrainingError(
                f"--weights {path} was trained at {card.image_size} px, not --image-size {image_size}"
            )
        return model, card.from_scratch
    if path.is_file():
        try:
            return build_model(image_size=image_size, weights=str(path)), False
        except (ValueError, OSError) as exc:
            raise TrainingError(f"--weights {path} are not ResNet50 base weights: {exc}") from exc
    raise TrainingError(
        f"--weights must be imagenet, none, or an existing file or directory; got {weights!r}"
    )


def _counts(ts: TrainingSet, *, random: bool) -> dict[str, dict[str, int]]:
    counts: dict[str, dict[str, int]] = {
        s: dict.fromkeys(ts.manifest.classes, 0) for s in ("train", "val", "test")
    }
    for item in ts.manifest.items:
        counts[item.random_split if random else item.split][item.label] += 1
    return counts


def _train_and_evaluate(
    ts: TrainingSet, *, random: bool, options: TrainOptions, checkpoint_dir: Path
) -> tuple[keras.Model, SplitOutcome]:
    name = "random" if random else "grouped"
    labels = ts.label_indices()
    train_idx, val_idx, test_idx = (ts.indices(s, random=random) for s in ("train", "val", "test"))
    if len(train_idx) == 0 or len(test_idx) == 0:
        raise TrainingError(
            f"the {name} split left {len(train_idx)} training and {len(test_idx)} test images; label more data "
            "(or more distinct studies/scans) before training"
        )
    k = len(ts.manifest.classes)
    keras.utils.set_random_seed(options.seed)  # the same initial weights for both splits
    model, from_scratch = make_model(options.image_size, options.weights)
    bs = options.fit.batch_size
    train = ImageSequence(
        ts.images[train_idx],
        labels[train_idx],
        num_classes=k,
        batch_size=bs,
        shuffle=True,
        seed=options.seed,
        augmenter=Augmenter(options.augment, seed=options.seed) if options.augment else None,
    )
    val = (
        ImageSequence(
            ts.images[val_idx],
            labels[val_idx],
            num_classes=k,
            batch_size=bs,
            shuffle=False,
            seed=0,
            # Balanced over the validation set's own classes, so that its weighted accuracy (what
            # early stopping watches) is the mean per-class recall.
            class_weight=class_weights(labels[val_idx], k),
        )
        if len(val_idx)
        else None
    )
    log.info("training_split_started", split=name, train=len(train_idx), val=len(val_idx), test=len(test_idx))
    fit = fit_two_phase(
        model,
        train=train,
        train_labels=labels[train_idx],
        val=val,
        num_classes=k,
        config=options.fit,
        checkpoint_dir=checkpoint_dir / name,
        from_scratch=from_scratch,
    )
    test_probs = np.asarray(model.predict(to_three_channels(ts.images[test_idx]), batch_size=bs, verbose=0))
    val_metrics = None
    if len(val_idx):
        val_probs = np.asarray(model.predict(to_three_channels(ts.images[val_idx]), batch_size=bs, verbose=0))
        val_metrics = classification_metrics(labels[val_idx], val_probs, ts.manifest.classes)
    nn = nearest_neighbour_predict(ts.images[train_idx], labels[train_idx], ts.images[test_idx])
    outcome = SplitOutcome(
        name=name,
        fit=fit,
        test_metrics=classification_metrics(labels[test_idx], test_probs, ts.manifest.classes),
        val_metrics=val_metrics,
        nearest_neighbour_metrics=classification_metrics(
            labels[test_idx], np.eye(k)[nn], ts.manifest.classes
        ),
        test_indices=test_idx,
        test_probabilities=test_probs,
        counts=_counts(ts, random=random),
        from_scratch=from_scratch,
    )
    log.info(
        "training_split_evaluated",
        split=name,
        accuracy=round(outcome.test_metrics["accuracy"], 4),
        macro_f1=round(outcome.test_metrics["macro_f1"], 4),
    )
    return model, outcome


def _gradcam_examples(
    model: keras.Model, ts: TrainingSet, outcome: SplitOutcome, per_class: int
) -> dict[str, Any]:
    """Grad-CAM of the first `per_class` test images of each class (manifest order: reproducible)."""
    labels = ts.label_indices()
    chosen = [
        i
        for c in range(len(ts.manifest.classes))
        for i in [int(j) for j in outcome.test_indices if labels[j] == c][:per_class]
    ]
    if not chosen:
        return {"images": np.zeros((0,)), "heatmaps": np.zeros((0,)), "captions": []}
    too_small = too_small_for_heatmaps(model)
    if too_small is not None:
        log.warning("gradcam_skipped", reason=too_small)
        return {"images": np.zeros((0,)), "heatmaps": np.zeros((0,)), "captions": [], "skipped": too_small}
    cam = grad_cam(model, to_three_channels(ts.images[chosen]))
    classes = ts.manifest.classes
    captions = [
        f"true {classes[labels[i]]} / pred {classes[int(c)]}"
        for i, c in zip(chosen, cam.class_index, strict=True)
    ]
    return {"images": ts.images[chosen], "heatmaps": cam.heatmaps, "captions": captions}


def _write_predictions(path: Path, ts: TrainingSet, outcome: SplitOutcome) -> None:
    """The grouped model's test probabilities per item: for audits, and to check the worker reproduces them."""
    items = ts.manifest.items
    rows = [
        {"key": items[i].key, "label": items[i].label, "probabilities": [float(p) for p in probs]}
        for i, probs in zip(outcome.test_indices.tolist(), outcome.test_probabilities, strict=True)
    ]
    path.write_text(json.dumps({"classes": ts.manifest.classes, "items": rows}, indent=1) + "\n")


def summary_metrics(outcome: SplitOutcome) -> dict[str, Any]:
    m = outcome.test_metrics
    return {
        "accuracy": m["accuracy"],
        "macro_f1": m["macro_f1"],
        "macro_roc_auc": m["macro_roc_auc"],
        "n": m["n"],
    }


def run_training(
    session_factory: sessionmaker[Session],
    *,
    options: TrainOptions,
    version: str,
    run_dir: Path,
    model_dir: Path,
    verbose: bool = False,
    stages: Callable[[str], Callable[[int, int], None]] | None = None,
) -> TrainedRun:
    """Train, evaluate and save one model version (not yet registered); raise TrainingError when it cannot."""
    with session_factory() as session:
        sources = collect_sources(session)
    if not sources:
        raise TrainingError(
            "no labelled data: record labels with `kidneyct label` or import images with `kidneyct dataset import-folder`"
        )
    ts = build_training_set(
        sources,
        classes=list(CLASS_NAMES),
        image_size=options.image_size,
        window=options.window,
        grouping=options.grouping,
        fractions=options.fractions,
        seed=options.seed,
        threads=options.threads,
        progress=stages("loading images") if stages else None,
        grouping_progress=stages("grouping near-duplicates") if stages else None,
    )
    run_dir.mkdir(parents=True, exist_ok=True)
    manifest_hash = ts.manifest.write(run_dir / MANIFEST_FILE)

    grouped_model, grouped = _train_and_evaluate(
        ts, random=False, options=options, checkpoint_dir=run_dir / "checkpoints"
    )
    random_outcome = None
    if options.compare_random:
        _, random_outcome = _train_and_evaluate(
            ts, random=True, options=options, checkpoint_dir=run_dir / "checkpoints"
        )
    examples = _gradcam_examples(grouped_model, ts, grouped, options.gradcam_per_class)

    artifact_dir = model_dir / version
    metrics = {
        "eval_set": "grouped test split of the manifest",
        "grouped_test": summary_metrics(grouped),
        "random_test": summary_metrics(random_outcome) if random_outcome else None,
    }
    card = save_artifact(
        grouped_model,
        artifact_dir,
        {
            "version": version,
            "window": options.window,
            "manifest_hash": manifest_hash,
            "metrics": metrics,
            "from_scratch": grouped.from_scratch,
            "extra": {
                "manifest_file": MANIFEST_FILE,
                "run_dir": str(run_dir.resolve()),
                "weights_init": options.weights,
                "seed": options.seed,
                "fit": {
                    k: getattr(options.fit, k) for k in options.fit.__dataclass_fields__ if k != "verbose"
                },
            },
        },
    )
    shutil.copyfile(run_dir / MANIFEST_FILE, artifact_dir / MANIFEST_FILE)

    # The worker's path: rebuild from code, load the weights, predict the same test tensors.
    reloaded, _ = load_artifact(artifact_dir, expected_sha256=card.weights_sha256)
    again = np.asarray(reloaded.predict(to_three_channels(ts.images[grouped.test_indices]), verbose=0))
    reload_diff = float(np.abs(again - grouped.test_probabilities).max())
    if reload_diff > 1e-4:
        raise TrainingError(
            f"the saved artifact predicts differently from the trained model (max diff {reload_diff})"
        )

    _write_predictions(run_dir / PREDICTIONS_FILE, ts, grouped)
    report = write_report(
        run_dir,
        version=version,
        manifest=ts.manifest,
        manifest_hash=manifest_hash,
        grouped=grouped,
        random=random_outcome,
        gradcam=examples,
        options=options,
        reload_max_abs_diff=reload_diff,
    )
    log.info("training_run_finished", version=version, manifest_hash=manifest_hash, run_dir=str(run_dir))
    return TrainedRun(
        version=version,
        run_dir=run_dir,
        artifact_dir=artifact_dir,
        card=card,
        manifest_hash=manifest_hash,
        grouped=grouped,
        random=random_outcome,
        reload_max_abs_diff=reload_diff,
        report=report,
    )
