"""One training run, end to end: data -> manifest -> fit with model selection on the validation set ->
refit on train + val with the selected epochs -> evaluation beside the baselines (test split and the
held-out latest IDs; a random split for comparison) -> Grad-CAM -> artifact -> report. Registration in
the database is separate (`training.registry`).
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import keras
import numpy as np
import structlog
from sqlalchemy.orm import Session, sessionmaker

from classifier.model.artifact import ModelCard, load_artifact, save_artifact
from classifier.model.calibration import apply_temperature
from classifier.model.network import BACKBONE_APPLICATIONS, DEFAULT_BACKBONE, build_model
from classifier.model.preprocess import KIDNEY_WINDOW, Window
from classifier.report.gradcam import grad_cam, too_small_for_heatmaps
from classifier.study.rule import StudyRule
from classifier.worker.errors import ArtifactError
from common.vocabulary import CLASS_NAMES
from storage.archive.reader import ArchiveReader
from training.baseline import baseline_probabilities
from training.bootstrap import metric_intervals, paired_macro_f1_difference
from training.calibrate import fit_temperature
from training.data import AugmentConfig, Augmenter, ImageSequence, to_three_channels
from training.dedup import GroupingParams
from training.evaluate import calibration, classification_metrics, normal_vs_abnormal
from training.fit import FitConfig, FitResult, class_weights, fit_two_phase
from training.frozen_features import Extractor
from training.frozen_recipe import FINE_TUNE, FROZEN, FrozenConfig, fit_frozen
from training.report import git_commit, write_report
from training.shift_fit import fit_shift_detector
from training.split import SplitFractions
from training.statements import choose_min_evidence, held_out_statements, scans_of
from training.study_tuning import tune_and_measure
from training.trainset import TrainingSet, build_training_set, collect_sources

log = structlog.get_logger(__name__)

MANIFEST_FILE = "manifest.json"
CHECKPOINT_DIR = "checkpoints"
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
    window: Window = KIDNEY_WINDOW
    augment: AugmentConfig | None = field(default_factory=AugmentConfig)
    compare_random: bool = True
    latest_fraction: float = 0.15  # the top IDs of each class held out as the `latest` split (0: none)
    refit: bool = True  # after selecting the epoch on val, train again on train + val for that many epochs
    gradcam_per_class: int = 2
    threads: int = 4
    backbone: str = DEFAULT_BACKBONE  # keras.applications base (`classifier.model.network.Backbone`)
    # The deterministic-kernel variables the process ran with (`training.determinism`), for the card.
    determinism: dict[str, str | None] | None = None
    keep_checkpoints: bool = False  # the per-phase best-weights files; removed after a finished run otherwise
    target_accuracy: float = 0.90  # accuracy among answered validation scans that sets the evidence threshold
    shift_quantile: float = 0.99  # the validation shift scores' quantile above which a slice is flagged
    recipe: str = FINE_TUNE  # or FROZEN: a frozen pretrained backbone and a deterministic head
    frozen: FrozenConfig = field(default_factory=FrozenConfig)


@dataclass
class SetEvaluation:
    """The served model and the baselines on one held-out set (`test` or `latest`)."""

    name: str
    indices: np.ndarray
    probabilities: np.ndarray  # the served model's
    metrics: dict[str, Any]
    intervals: dict[str, Any]  # group-bootstrap 95 % intervals of the served model's metrics
    calibration: dict[str, Any]
    normal_vs_abnormal: dict[str, Any] | None
    baselines: dict[str, dict[str, Any]]  # baseline -> {"metrics", "intervals"}
    versus_baselines: dict[str, dict[str, Any]]  # paired macro-F1 differences, served model minus baseline
    selection_metrics: dict[str, Any] | None = None  # the model trained on train only (before the refit)


@dataclass
class SplitOutcome:
    name: str  # "grouped" or "random"
    fit: FitResult
    evaluations: dict[str, SetEvaluation]  # "test", and "latest" when the grouped split holds one out
    val_metrics: dict[str, Any] | None
    counts: dict[str, dict[str, int]]
    groups: dict[str, dict[str, int]]  # groups per split and class
    from_scratch: bool = False  # trained end to end from random weights (see `training.fit`)
    selected_epochs: int | None = None
    refit: FitResult | None = None  # the train + val refit whose model is served (grouped split)
    study_rule: dict[str, Any] | None = None  # (k, t) chosen on val scans, accuracy on test scans
    # Temperature, abstention threshold and the held-out figures of the statements (`training.statements`).
    statements: dict[str, Any] | None = None
    head: dict[str, Any] | None = None  # the frozen-features recipe's head and how it was chosen
    # images -> the served model's `dense_512` activations, from cached features (frozen-features recipe)
    dense_features: Callable[[np.ndarray], np.ndarray] | None = field(default=None, repr=False)

    @property
    def test_metrics(self) -> dict[str, Any]:
        return self.evaluations["test"].metrics

    @property
    def test_indices(self) -> np.ndarray:
        return self.evaluations["test"].indices

    @property
    def test_probabilities(self) -> np.ndarray:
        return self.evaluations["test"].probabilities

    @property
    def nearest_neighbour_metrics(self) -> dict[str, Any]:
        return self.evaluations["test"].baselines["nearest_neighbour"]["metrics"]


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


def _refuse_pretrained_tiny(weights: str, backbone: str) -> None:
    if backbone == "tiny" and weights != "none":
        raise TrainingError("the tiny backbone has no pre-trained weights: train it with --weights none")


def make_model(image_size: int, weights: str, backbone: str = DEFAULT_BACKBONE) -> tuple[keras.Model, bool]:
    """The classifier's model with the starting weights `--weights` asked for, and whether it trains
    from scratch (random weights, or an artifact that was trained so); or a clear TrainingError."""
    _refuse_pretrained_tiny(weights, backbone)
    if weights == "none":
        return build_model(image_size=image_size, weights=None, from_scratch=True, backbone=backbone), True
    if weights == "imagenet":
        try:
            return build_model(image_size=image_size, weights="imagenet", backbone=backbone), False
        except Exception as exc:  # keras.utils.get_file raises a bare Exception on URL failures
            raise TrainingError(
                f"--weights imagenet downloads {BACKBONE_APPLICATIONS[backbone]}'s ImageNet weights and needs the internet; the download "
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
        if card.backbone != backbone:
            raise TrainingError(f"--weights {path} is a {card.backbone}, not --backbone {backbone}")
        return model, card.from_scratch
    if path.is_file():
        try:
            return build_model(image_size=image_size, weights=str(path), backbone=backbone), False
        except (ValueError, OSError) as exc:
            raise TrainingError(
                f"--weights {path} are not {BACKBONE_APPLICATIONS[backbone]} base weights: {exc}"
            ) from exc
    raise TrainingError(
        f"--weights must be imagenet, none, or an existing file or directory; got {weights!r}"
    )


def _split_names(ts: TrainingSet, *, random: bool) -> list[str]:
    present = {i.random_split if random else i.split for i in ts.manifest.items}
    return [s for s in ("train", "val", "test", "latest") if s in present or s != "latest"]


def _counts(ts: TrainingSet, *, random: bool) -> dict[str, dict[str, int]]:
    counts = {s: dict.fromkeys(ts.manifest.classes, 0) for s in _split_names(ts, random=random)}
    for item in ts.manifest.items:
        counts[item.random_split if random else item.split][item.label] += 1
    return counts


def group_counts(ts: TrainingSet, *, random: bool = False) -> dict[str, dict[str, int]]:
    """How many groups (scans) of each class (a group's majority class) each split holds."""
    members: dict[str, list[Any]] = {}
    for item in ts.manifest.items:
        members.setdefault(item.group, []).append(item)
    counts = {s: dict.fromkeys(ts.manifest.classes, 0) for s in _split_names(ts, random=random)}
    for items in members.values():
        labels = [i.label for i in items]
        majority = min(set(labels), key=lambda c: (-labels.count(c), c))
        for split in {i.random_split if random else i.split for i in items}:
            counts[split][majority] += 1
    return counts


def straddling_groups(ts: TrainingSet) -> list[str]:
    """Groups (scans) found in more than one split of the grouped split: must be empty."""
    split_of: dict[str, set[str]] = {}
    for item in ts.manifest.items:
        split_of.setdefault(item.group, set()).add(item.split)
    return sorted(g for g, splits in split_of.items() if len(splits) > 1)


def _sequence(
    ts: TrainingSet, indices: np.ndarray, options: TrainOptions, *, training: bool
) -> ImageSequence:
    labels = ts.label_indices()
    k = len(ts.manifest.classes)
    if training:
        return ImageSequence(
            ts.images[indices],
            labels[indices],
            num_classes=k,
            batch_size=options.fit.batch_size,
            shuffle=True,
            seed=options.seed,
            augmenter=Augmenter(options.augment, seed=options.seed) if options.augment else None,
        )
    return ImageSequence(
        ts.images[indices],
        labels[indices],
        num_classes=k,
        batch_size=options.fit.batch_size,
        shuffle=False,
        seed=0,
        # Balanced over the validation set's own classes, so that its weighted accuracy (what
        # early stopping watches) is the mean per-class recall.
        class_weight=class_weights(labels[indices], k),
    )


def _fit(
    ts: TrainingSet,
    train_idx: np.ndarray,
    val_idx: np.ndarray,
    *,
    options: TrainOptions,
    fit_config: FitConfig,
    checkpoint_dir: Path,
) -> tuple[keras.Model, FitResult, bool]:
    keras.utils.set_random_seed(options.seed)  # the same initial weights for every fit
    model, from_scratch = make_model(options.image_size, options.weights, options.backbone)
    fit = fit_two_phase(
        model,
        train=_sequence(ts, train_idx, options, training=True),
        train_labels=ts.label_indices()[train_idx],
        val=_sequence(ts, val_idx, options, training=False) if len(val_idx) else None,
        num_classes=len(ts.manifest.classes),
        config=fit_config,
        checkpoint_dir=checkpoint_dir,
        from_scratch=from_scratch,
    )
    return model, fit, from_scratch


def refit_config(fit: FitResult, config: FitConfig, *, from_scratch: bool) -> FitConfig:
    """The selection run's epochs, to repeat on train + val: phase 1 as run (or up to its best epoch when it
    is the only phase), phase 2 up to its best epoch."""
    selected = fit.selected_epochs()
    if len(fit.phases) == 1 or from_scratch:
        return replace(config, epochs_phase1=max(1, selected), epochs_phase2=0)
    phase1 = fit.phases[0].epochs_run
    return replace(config, epochs_phase1=phase1, epochs_phase2=max(1, selected - phase1))


def _predict(model: keras.Model, ts: TrainingSet, indices: np.ndarray, batch_size: int) -> np.ndarray:
    return np.asarray(model.predict(to_three_channels(ts.images[indices]), batch_size=batch_size, verbose=0))


def evaluate_set(
    ts: TrainingSet,
    name: str,
    indices: np.ndarray,
    probabilities: np.ndarray,
    baseline_train: np.ndarray,
    *,
    seed: int,
    feature_cache: Path | None = None,
) -> SetEvaluation:
    """The served model's metrics, intervals and calibration on one held-out set, beside the baselines
    fitted on the same training images."""
    labels = ts.label_indices()
    classes = ts.manifest.classes
    truth = labels[indices]
    groups = [ts.manifest.items[int(i)].group for i in indices]
    base = baseline_probabilities(
        ts.images[baseline_train],
        labels[baseline_train],
        ts.images[indices],
        len(classes),
        feature_cache=feature_cache,
    )
    return SetEvaluation(
        name=name,
        indices=indices,
        probabilities=probabilities,
        metrics=classification_metrics(truth, probabilities, classes),
        intervals=metric_intervals(truth, probabilities, groups, classes, seed=seed),
        calibration=calibration(truth, probabilities),
        normal_vs_abnormal=normal_vs_abnormal(truth, probabilities, classes),
        baselines={
            b: {
                "metrics": classification_metrics(truth, p, classes),
                "intervals": metric_intervals(truth, p, groups, classes, seed=seed),
            }
            for b, p in base.items()
        },
        versus_baselines=paired_macro_f1_difference(
            truth, probabilities, base, groups, len(classes), seed=seed
        ),
    )


def _study_view(
    ts: TrainingSet, indices: np.ndarray, probabilities: np.ndarray
) -> tuple[np.ndarray, list[str | None], list[str]]:
    """(probabilities, scan of each item, label of each item): a scan is a group (DICOM: the study)."""
    items = [ts.manifest.items[int(i)] for i in indices]
    return probabilities, [i.group for i in items], [i.label for i in items]


def _groups(ts: TrainingSet, indices: np.ndarray) -> list[str]:
    return [ts.manifest.items[int(i)].group for i in indices]


def _statements(
    ts: TrainingSet,
    val: tuple[np.ndarray, np.ndarray],
    evaluations: dict[str, SetEvaluation],
    options: TrainOptions,
) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
    """(study rule, statements): temperature, rule and evidence threshold chosen on the selection run's
    validation predictions, then measured on every held-out set with the served model's predictions."""
    val_idx, val_probs = val
    labels, classes = ts.label_indices(), ts.manifest.classes
    temperature = fit_temperature(val_probs, labels[val_idx])
    calibrated = apply_temperature(val_probs, temperature)
    test = evaluations["test"]
    study_rule = tune_and_measure(
        _study_view(ts, val_idx, calibrated),
        _study_view(ts, test.indices, apply_temperature(test.probabilities, temperature)),
        classes,
    )
    if study_rule is None or not len(val_idx):
        return study_rule, None
    rule = StudyRule(study_rule["k"], study_rule["t"])
    abstention = choose_min_evidence(
        scans_of(calibrated, _groups(ts, val_idx), labels[val_idx], classes, rule), options.target_accuracy
    )
    held_out = {
        name: held_out_statements(
            e.probabilities,
            labels[e.indices],
            _groups(ts, e.indices),
            classes,
            temperature=temperature,
            rule=rule,
            min_evidence=abstention["min_evidence"],
            seed=options.seed,
        )
        for name, e in evaluations.items()
    }
    return study_rule, {"temperature": temperature, "abstention": abstention, "held_out": held_out}


def _train_and_evaluate(
    ts: TrainingSet, *, random: bool, options: TrainOptions, checkpoint_dir: Path
) -> tuple[keras.Model, SplitOutcome]:
    name = "random" if random else "grouped"
    labels = ts.label_indices()
    train_idx, val_idx, test_idx, latest_idx = (
        ts.indices(s, random=random) for s in ("train", "val", "test", "latest")
    )
    if len(train_idx) == 0 or len(test_idx) == 0:
        raise TrainingError(
            f"the {name} split left {len(train_idx)} training and {len(test_idx)} test images; label more data "
            "(or more distinct studies/scans) before training"
        )
    held_out = {"test": test_idx} | ({"latest": latest_idx} if len(latest_idx) else {})
    log.info(
        "training_split_started",
        split=name,
        train=len(train_idx),
        val=len(val_idx),
        **{k: len(v) for k, v in held_out.items()},
    )
    fitted = (
        _frozen(ts, train_idx, val_idx, options=options, refit=not random)
        if options.recipe == FROZEN
        else _fine_tune(ts, train_idx, val_idx, options=options, random=random, checkpoint_dir=checkpoint_dir)
    )
    model, fit = fitted.model, fitted.fit
    val_metrics, val_probs = None, np.zeros((0, len(ts.manifest.classes)))
    if len(val_idx):
        val_probs = fitted.selection(val_idx)
        val_metrics = classification_metrics(labels[val_idx], val_probs, ts.manifest.classes)
    evaluations = {
        k: evaluate_set(
            ts,
            k,
            v,
            fitted.served(v),
            fitted.served_train,
            seed=options.seed,
            feature_cache=options.frozen.cache_dir,
        )
        for k, v in held_out.items()
    }
    for k, evaluation in evaluations.items():
        evaluation.selection_metrics = classification_metrics(
            labels[held_out[k]], fitted.selection(held_out[k]), ts.manifest.classes
        )
    study_rule, statements = _statements(ts, (val_idx, val_probs), evaluations, options)
    outcome = SplitOutcome(
        name=name,
        fit=fit,
        evaluations=evaluations,
        val_metrics=val_metrics,
        counts=_counts(ts, random=random),
        groups=group_counts(ts, random=random),
        from_scratch=fitted.from_scratch,
        selected_epochs=fit.selected_epochs() if len(val_idx) and options.recipe != FROZEN else None,
        refit=fitted.refit,
        head=fitted.head,
        dense_features=fitted.dense_features,
        study_rule=study_rule,
        statements=statements,
    )
    for k, evaluation in evaluations.items():
        log.info(
            "training_split_evaluated",
            split=name,
            held_out=k,
            accuracy=round(evaluation.metrics["accuracy"], 4),
            macro_f1=round(evaluation.metrics["macro_f1"], 4),
        )
    return model, outcome


@dataclass
class _Fitted:
    """A fitted split: the served model, and the probabilities of any manifest item under it and under
    the selection run (trained on train only: what validation, calibration and the rule see)."""

    model: keras.Model
    fit: FitResult
    from_scratch: bool
    served: Callable[[np.ndarray], np.ndarray]
    selection: Callable[[np.ndarray], np.ndarray]
    served_train: np.ndarray
    refit: FitResult | None = None
    head: dict[str, Any] | None = None  # the frozen-features recipe's head and its choice
    dense_features: Callable[[np.ndarray], np.ndarray] | None = None  # images -> `dense_512` (frozen)


def _fine_tune(
    ts: TrainingSet,
    train_idx: np.ndarray,
    val_idx: np.ndarray,
    *,
    options: TrainOptions,
    random: bool,
    checkpoint_dir: Path,
) -> _Fitted:
    """The `fine-tune` recipe: fit with selection on val, then (grouped split) refit on train + val."""
    name = "random" if random else "grouped"
    bs = options.fit.batch_size
    model, fit, from_scratch = _fit(
        ts, train_idx, val_idx, options=options, fit_config=options.fit, checkpoint_dir=checkpoint_dir / name
    )
    cached = {
        "selection": {
            int(i): p
            for idx in (val_idx, *(ts.indices(s, random=random) for s in ("test", "latest")))
            if len(idx)
            for i, p in zip(idx, _predict(model, ts, idx, bs), strict=True)
        }
    }
    refit, served_train = None, train_idx
    if options.refit and not random and len(val_idx):
        # The selected settings, trained again on every image not held out: the served model.
        served_train = np.sort(np.concatenate([train_idx, val_idx]))
        config = refit_config(fit, options.fit, from_scratch=from_scratch)
        log.info(
            "training_refit_started",
            split=name,
            images=len(served_train),
            epochs=config.epochs_phase1 + config.epochs_phase2,
        )
        model, refit, _ = _fit(
            ts,
            served_train,
            np.zeros(0, np.int64),
            options=options,
            fit_config=config,
            checkpoint_dir=checkpoint_dir / f"{name}-refit",
        )
    served_model = model
    return _Fitted(
        model=model,
        fit=fit,
        from_scratch=from_scratch,
        served=lambda idx: _predict(served_model, ts, idx, bs),
        selection=lambda idx: np.stack([cached["selection"][int(i)] for i in idx]),
        served_train=served_train,
        refit=refit,
    )


def _frozen(
    ts: TrainingSet, train_idx: np.ndarray, val_idx: np.ndarray, *, options: TrainOptions, refit: bool
) -> _Fitted:
    """The `frozen-features` recipe (`training.frozen_recipe`): no epochs, no checkpoints."""
    weights = None if options.weights == "none" else options.weights
    keras.utils.set_random_seed(options.seed)  # random base weights (`--weights none`) repeat too
    frozen = fit_frozen(
        images=ts.images,
        labels=ts.label_indices(),
        train_idx=train_idx,
        val_idx=val_idx,
        classes=ts.manifest.classes,
        build=lambda: build_model(image_size=options.image_size, weights=weights, backbone=options.backbone),
        extractor=Extractor(options.backbone, options.weights, options.image_size, options.frozen.flip),
        config=options.frozen,
        refit=refit and options.refit,
    )
    served_train = (
        np.sort(np.concatenate([train_idx, val_idx]))
        if refit and options.refit and len(val_idx)
        else train_idx
    )
    return _Fitted(
        model=frozen.model,
        fit=FitResult(),
        from_scratch=False,
        served=frozen.served,
        selection=frozen.selection,
        served_train=served_train,
        head=frozen.head,
        dense_features=frozen.dense_features,
    )


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
    """The served model's held-out probabilities per item: for audits, and to check the worker reproduces them."""
    items = ts.manifest.items
    rows = [
        {
            "key": items[i].key,
            "label": items[i].label,
            "held_out": name,
            "probabilities": [float(p) for p in probs],
        }
        for name, evaluation in outcome.evaluations.items()
        for i, probs in zip(evaluation.indices.tolist(), evaluation.probabilities, strict=True)
    ]
    path.write_text(json.dumps({"classes": ts.manifest.classes, "items": rows}, indent=1) + "\n")


def remove_checkpoints(directory: Path) -> int:
    """Delete a finished run's checkpoints (the served weights are in the artifact; a checkpoint also
    holds the optimizer's state, twice the weights again); return the bytes freed. A failed run never
    gets here, so its checkpoints stay for a look at what it had reached."""
    if not directory.is_dir():
        return 0
    freed = sum(f.stat().st_size for f in directory.rglob("*") if f.is_file())
    shutil.rmtree(directory)
    log.info("training_checkpoints_removed", directory=str(directory), bytes_freed=freed)
    return freed


def _card_statements(
    model: keras.Model, ts: TrainingSet, outcome: SplitOutcome, options: TrainOptions, artifact_dir: Path
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The card's `calibration` and `decision` (study rule, abstention, shift detector; the shift
    statistics are written into `artifact_dir`); the shift figures go into the outcome's statements."""
    labels = ts.label_indices()
    train_idx, val_idx = ts.indices("train"), ts.indices("val")
    shift, shift_report = fit_shift_detector(
        model,
        train=(ts.images[train_idx], labels[train_idx]),
        val=ts.images[val_idx],
        held_out={k: ts.images[e.indices] for k, e in outcome.evaluations.items()},
        num_classes=len(ts.manifest.classes),
        quantile=options.shift_quantile,
        directory=artifact_dir,
        batch_size=options.fit.batch_size,
        features=outcome.dense_features,
    )
    decision: dict[str, Any] = {"shift": shift}
    statements = outcome.statements or {}
    if outcome.study_rule is not None:
        rule = outcome.study_rule
        decision["study_rule"] = {"k": rule["k"], "t": rule["t"], "chosen_on": "validation scans"}
    if statements.get("abstention"):
        decision["abstention"] = statements["abstention"]
    outcome.statements = statements | {"shift": shift_report}
    temperature = float(statements.get("temperature", 1.0))
    calibration = {
        "temperature": temperature,
        "method": "temperature scaling, NLL on the validation scans (selection run)"
        if statements
        else "none (no validation set)",
    }
    log.info(
        "training_statements_chosen",
        temperature=round(temperature, 4),
        **{k: v for k, v in decision.get("study_rule", {}).items() if k != "chosen_on"},
        shift_threshold=round(shift["threshold"], 3),
    )
    return calibration, decision


def _recipe_card(options: TrainOptions, outcome: SplitOutcome) -> dict[str, Any]:
    """What made this version: the recipe, and for frozen features the head and its chosen L2."""
    if options.recipe != FROZEN or outcome.head is None:
        return {"name": options.recipe}
    keep = ("extractor", "head", "balanced", "label_smoothing", "steps", "l2", "chosen_on", "refitted_on")
    return {"name": FROZEN, **{k: outcome.head[k] for k in keep}}


def summary_metrics(outcome: SplitOutcome, held_out: str = "test") -> dict[str, Any] | None:
    evaluation = outcome.evaluations.get(held_out)
    if evaluation is None:
        return None
    m = evaluation.metrics
    return {
        "accuracy": m["accuracy"],
        "macro_f1": m["macro_f1"],
        "macro_f1_interval": evaluation.intervals["macro_f1"],
        "macro_roc_auc": m["macro_roc_auc"],
        "n": m["n"],
        "baselines_macro_f1": {b: v["metrics"]["macro_f1"] for b, v in evaluation.baselines.items()},
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
    reader: ArchiveReader | None = None,
) -> TrainedRun:
    """Train, evaluate and save one model version (not yet registered); raise TrainingError when it cannot.

    `reader` opens labelled archive instances wherever the archive keeps them (local folder or S3).
    """
    commit = git_commit()  # now: the code that runs, not whatever is checked out when the run ends
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
        latest_fraction=options.latest_fraction,
        threads=options.threads,
        reader=reader,
        progress=stages("loading images") if stages else None,
        grouping_progress=stages("grouping near-duplicates") if stages else None,
    )
    straddling = straddling_groups(ts)
    if straddling:  # cannot happen by construction; checked because every figure depends on it
        raise TrainingError(f"{len(straddling)} group(s) straddle two splits, e.g. {straddling[0]}")
    run_dir.mkdir(parents=True, exist_ok=True)
    manifest_hash = ts.manifest.write(run_dir / MANIFEST_FILE)

    grouped_model, grouped = _train_and_evaluate(
        ts, random=False, options=options, checkpoint_dir=run_dir / CHECKPOINT_DIR
    )
    random_outcome = None
    if options.compare_random:
        _, random_outcome = _train_and_evaluate(
            ts, random=True, options=options, checkpoint_dir=run_dir / CHECKPOINT_DIR
        )
    examples = _gradcam_examples(grouped_model, ts, grouped, options.gradcam_per_class)

    artifact_dir = model_dir / version
    calibration_card, decision = _card_statements(grouped_model, ts, grouped, options, artifact_dir)
    metrics = {
        "eval_set": "grouped test split of the manifest",
        "grouped_test": summary_metrics(grouped),
        "latest_ids_test": summary_metrics(grouped, "latest"),
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
            "calibration": calibration_card,
            "decision": decision,
            "extra": {
                "manifest_file": MANIFEST_FILE,
                "run_dir": str(run_dir.resolve()),
                "weights_init": options.weights,
                "recipe": _recipe_card(options, grouped),
                "seed": options.seed,
                "determinism": options.determinism,
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
        straddling_groups=len(straddling),
        commit=commit,
    )
    if not options.keep_checkpoints:
        remove_checkpoints(run_dir / CHECKPOINT_DIR)
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
