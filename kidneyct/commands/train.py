"""`kidneyct train`: train on every label, evaluate on held-out scans, register a candidate version.

Every refusal that needs no Keras (schema, nothing due, nothing labelled, missing ImageNet weights,
bad fractions) comes before Keras is imported.
"""

from __future__ import annotations

import datetime as dt
import os
import sys

import click
import structlog
from sqlalchemy.orm import Session, sessionmaker

from common.progress import progress_bars, progress_wanted
from kidneyct.database import make_database
from kidneyct.settings import Settings

log = structlog.get_logger(__name__)


def _require_imagenet_weights(weights: str, backbone: str) -> None:
    """`--weights imagenet` that cannot be had: one line saying what is missing, before Keras loads."""
    if weights == "imagenet" and backbone == "resnet50":  # air-gapped sites: say which file is missing
        from training.imagenet import ImagenetWeightsUnavailable, ensure_imagenet_weights

        try:
            ensure_imagenet_weights(environ=os.environ)
        except ImagenetWeightsUnavailable as exc:
            raise click.ClickException(str(exc)) from exc
    if weights == "imagenet" and backbone == "efficientnet_lite0":  # an optional extra: is it installed?
        from classifier.model.lite0_weights import PretrainedWeightsMissing, imagenet_weights_path

        try:
            imagenet_weights_path()
        except PretrainedWeightsMissing as exc:
            raise click.ClickException(str(exc)) from exc


@click.command(short_help="Train, evaluate and register a candidate model version.")
@click.option(
    "--weights", default="imagenet", show_default=True, help="imagenet | none | weights file | artifact dir."
)
@click.option(
    "--image-size", type=click.IntRange(min=32), default=None, help="Input size (default: settings)."
)
@click.option(
    "--epochs-phase1",
    type=click.IntRange(min=0),
    default=5,
    show_default=True,
    help="Epochs of phase 1 (the head only, the base frozen).",
)
@click.option(
    "--epochs-phase2",
    type=click.IntRange(min=0),
    default=5,
    show_default=True,
    help="Epochs of phase 2 (fine-tuning from --unfreeze-from on); 0 skips it.",
)
@click.option("--lr-phase1", type=float, default=1e-3, show_default=True, help="Learning rate of phase 1.")
@click.option("--lr-phase2", type=float, default=1e-5, show_default=True, help="Learning rate of phase 2.")
@click.option(
    "--batch-size",
    type=click.IntRange(min=1),
    default=32,
    show_default=True,
    help="Images per training step.",
)
@click.option("--patience", type=click.IntRange(min=1), default=3, show_default=True, help="Early stopping.")
@click.option(
    "--unfreeze-from",
    default=None,
    help="Phase 2 trains base layers from here on (default: the backbone's last block, conv5_ for ResNet50).",
)
@click.option(
    "--backbone",
    type=click.Choice(["resnet50", "efficientnetb0", "densenet121", "tiny", "efficientnet_lite0"]),
    default="resnet50",
    show_default=True,
    help="The base network: ResNet50 is the served architecture; efficientnetb0 and densenet121 "
    "(keras.applications) are lighter options; tiny: four conv blocks from scratch, the demo's; "
    "efficientnet_lite0: this project's port, its ImageNet weights from the 'pretrained' extra (no "
    "download), the frozen-features recipe's extractor.",
)
@click.option(
    "--recipe",
    type=click.Choice(["fine-tune", "frozen-features"]),
    default="fine-tune",
    show_default=True,
    help="fine-tune: train the network (two phases, or from scratch); frozen-features: keep the pretrained "
    "backbone frozen and fit a deterministic logistic head on its features (docs/training.md).",
)
@click.option(
    "--val-fraction",
    type=float,
    default=0.15,
    show_default=True,
    help="Share of the groups (whole scans) held out to choose the epoch and calibrate.",
)
@click.option(
    "--test-fraction",
    type=float,
    default=0.15,
    show_default=True,
    help="Share of the groups (whole scans) held out to measure the model.",
)
@click.option(
    "--seed", type=int, default=42, show_default=True, help="Seed of the split and of the training run."
)
@click.option(
    "--min-new-labels",
    type=click.IntRange(min=0),
    default=0,
    show_default=True,
    help="Do nothing unless this many labels/images arrived since the last model version.",
)
@click.option(
    "--random-split/--no-random-split",
    default=True,
    show_default=True,
    help="Also train on a random image-level split for comparison.",
)
@click.option(
    "--no-augment", is_flag=True, help="Turn off augmentation (shift, rotation, zoom, window, intensity)."
)
@click.option(
    "--phash-max-distance",
    type=int,
    default=2,
    show_default=True,
    help="Images whose perceptual hashes differ by at most this many bits are one group.",
)
@click.option(
    "--chain-min-correlation",
    type=float,
    default=0.85,
    show_default=True,
    help="Slices with nearby IDs at least this correlated are chained into one scan (one group).",
)
@click.option(
    "--chain-max-gap",
    type=click.IntRange(min=1),
    default=20,
    show_default=True,
    help="Largest ID step a chain of slices (one scan) may bridge.",
)
@click.option(
    "--latest-fraction",
    type=click.FloatRange(0.0, 0.5),
    default=0.15,
    show_default=True,
    help="Hold out the highest IDs of each class (whole scans) as a second test set; 0 turns it off.",
)
@click.option(
    "--refit/--no-refit",
    default=True,
    show_default=True,
    help="After choosing the epoch on the validation set, train again on train + val for that many epochs.",
)
@click.option(
    "--device", default=None, help="`cpu` or `gpu:N` (default: KIDNEYCT_DEVICE when it names a GPU)."
)
@click.option(
    "--progress/--no-progress",
    default=None,
    help="Progress bars on stderr (default: only on a terminal, never with JSON logs).",
)
@click.option(
    "--keep-checkpoints",
    is_flag=True,
    help="Keep the run's per-phase best-weights checkpoints (with optimizer state) after it finishes.",
)
@click.pass_obj
def train(
    settings: Settings,
    weights: str,
    image_size: int | None,
    epochs_phase1: int,
    epochs_phase2: int,
    lr_phase1: float,
    lr_phase2: float,
    batch_size: int,
    patience: int,
    unfreeze_from: str | None,
    backbone: str,
    recipe: str,
    val_fraction: float,
    test_fraction: float,
    seed: int,
    min_new_labels: int,
    random_split: bool,
    no_augment: bool,
    phash_max_distance: int,
    chain_min_correlation: float,
    chain_max_gap: int,
    latest_fraction: float,
    refit: bool,
    device: str | None,
    progress: bool | None,
    keep_checkpoints: bool,
) -> None:
    """Train on all labelled data, evaluate honestly, and register the result as a candidate version."""
    from classifier.model.device import DeviceError, parse_device, pin_device, prefer_onednn
    from training.determinism import determinism_status, prefer_determinism

    prefer_onednn(os.environ)  # ~4x faster training steps on CPU; before Keras is imported below
    prefer_determinism(os.environ)  # the same run gives the same weights; before Keras is imported
    chosen = device or settings.device
    # The default `cpu` is not pinned: a trainer with no device configured may use whatever it finds.
    if device is not None or chosen != "cpu":
        try:
            pin_device(parse_device(chosen), os.environ)  # before Keras is imported below
        except DeviceError as exc:
            raise click.BadParameter(str(exc), param_hint="--device") from exc
    # Everything that can be refused without Keras is checked first: a wrong input is answered at once.
    from kidneyct.database import require_schema
    from training.registry import new_labels_since_last_version, training_due

    sessions = make_database(settings)
    require_schema(sessions)
    with sessions() as session:
        new = new_labels_since_last_version(session)
    if not training_due(new_labels=new, min_new_labels=min_new_labels):
        log.info("training_skipped", new_labels=new, min_new_labels=min_new_labels)
        click.echo(
            f"{new} new label(s) since the last model version, fewer than {min_new_labels}: nothing to do"
        )
        return
    _require_labelled(sessions)
    # Checked once training is due (a scheduled `--min-new-labels` run with nothing to do needs no
    # weights), and before any image is read: air-gapped sites learn at once which file is missing.
    _require_imagenet_weights(weights, backbone)
    from training.split import SplitFractions

    try:
        fractions = SplitFractions(
            train=1.0 - val_fraction - test_fraction, val=val_fraction, test=test_fraction
        )
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from exc
    from classifier.model.network import BACKBONE_UNFREEZE_FROM
    from classifier.model.preprocess import Window
    from kidneyct.archives import build_archive_reader
    from storage.archive.reader import ArchiveUnavailable
    from training.data import AugmentConfig
    from training.dedup import GroupingParams
    from training.fit import FitConfig
    from training.frozen_features import FEATURE_CACHE_DIR
    from training.frozen_recipe import FrozenConfig
    from training.registry import make_version, register_candidate
    from training.run import TrainingError, TrainOptions, run_training

    _require_device(chosen)
    options = TrainOptions(
        image_size=image_size or settings.image_size,
        weights=weights,
        fit=FitConfig(
            epochs_phase1=epochs_phase1,
            epochs_phase2=epochs_phase2,
            lr_phase1=lr_phase1,
            lr_phase2=lr_phase2,
            batch_size=batch_size,
            patience=patience,
            unfreeze_from=unfreeze_from or BACKBONE_UNFREEZE_FROM[backbone],
            verbose=1 if sys.stderr.isatty() else 2,
        ),
        seed=seed,
        fractions=fractions,
        grouping=GroupingParams(
            phash_max_distance=phash_max_distance,
            chain_min_correlation=chain_min_correlation,
            chain_max_gap=chain_max_gap,
        ),
        window=Window(settings.window_center, settings.window_width),
        augment=None if no_augment else AugmentConfig(),
        target_accuracy=settings.abstain_target_accuracy,
        compare_random=random_split,
        latest_fraction=latest_fraction,
        refit=refit,
        backbone=backbone,
        recipe=recipe,
        frozen=FrozenConfig(cache_dir=settings.resolved_train_dir() / FEATURE_CACHE_DIR),
        determinism=determinism_status(os.environ),
        keep_checkpoints=keep_checkpoints,
    )
    started = dt.datetime.now(dt.UTC)
    version = make_version(started)
    try:
        with progress_bars(progress_wanted(progress, log_format=settings.log_format)) as stages:
            run = run_training(
                sessions,
                options=options,
                version=version,
                run_dir=settings.resolved_train_dir() / version,
                model_dir=settings.resolved_model_dir(),
                stages=stages,
                reader=build_archive_reader(settings),
            )
    except (TrainingError, ArchiveUnavailable) as exc:
        raise click.ClickException(str(exc)) from exc
    with sessions.begin() as session:
        register_candidate(session, run=run, now=dt.datetime.now(dt.UTC))
    log.info("model_version_registered", version=version, status="candidate")
    g = run.grouped.test_metrics
    ci = run.grouped.evaluations["test"].intervals["macro_f1"]
    line = (
        f"registered candidate {version}: grouped-split macro-F1 {g['macro_f1']:.3f} "
        f"[{ci[0]:.2f}, {ci[1]:.2f}], accuracy {g['accuracy']:.3f}"
    )
    if "latest" in run.grouped.evaluations:
        line += f"; latest-IDs macro-F1 {run.grouped.evaluations['latest'].metrics['macro_f1']:.3f}"
    baselines = run.grouped.evaluations["test"].baselines
    line += "; baselines " + ", ".join(f"{b} {v['metrics']['macro_f1']:.3f}" for b, v in baselines.items())
    if run.random is not None:
        line += f"; random-split macro-F1 {run.random.test_metrics['macro_f1']:.3f}"
    click.echo(line + f"\nreport: {run.run_dir / 'report.md'}")


def _require_labelled(sessions: sessionmaker[Session]) -> None:
    """Refuse, before Keras loads, a database with nothing labelled to train on."""
    from storage.db.datasets import count_dataset_images_since
    from storage.db.labels import count_labels_since

    with sessions() as session:
        labelled = count_labels_since(session, since=None) + count_dataset_images_since(session, since=None)
    if labelled == 0:
        raise click.ClickException(
            "nothing to train on: record labels (`kidneyct label`) or register a folder "
            "(`kidneyct dataset import-folder`) first"
        )


def _require_device(chosen: str) -> None:
    """`--device gpu:N` on a host without that GPU is an error, not a silent CPU run."""
    import keras

    from classifier.model.device import DeviceError, parse_device, require_device

    try:
        require_device(parse_device(chosen), keras.backend.backend())
    except DeviceError as exc:
        raise click.BadParameter(str(exc), param_hint="--device") from exc
