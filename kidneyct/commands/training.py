"""`kidneyct label`, `kidneyct dataset`, `kidneyct train` and `kidneyct models`: wiring only."""

from __future__ import annotations

import datetime as dt
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click
import structlog
from sqlalchemy.orm import Session, sessionmaker

from common.progress import progress_bars, progress_wanted
from common.vocabulary import CLASS_NAMES
from kidneyct.database import make_database
from kidneyct.settings import Settings

if TYPE_CHECKING:
    from storage.db.tables import ModelVersion

log = structlog.get_logger(__name__)


def _sessions(settings: Settings) -> sessionmaker[Session]:
    # make_database creates the embedded default's folder: a missing schema is then reported as such.
    return make_database(settings)


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


@click.command()
@click.option("--instance", "instance_uid", help="SOP Instance UID to label.")
@click.option("--study", "study_uid", help="Study Instance UID to label (every instance of the study).")
@click.option("--class", "label", help=f"One of {', '.join(CLASS_NAMES)} (case-insensitive).")
@click.option(
    "--csv",
    "csv_path",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Read many labels.",
)
@click.option("--source", default="manual", show_default=True, help="Where the label comes from.")
@click.option("--annotator", default=None, help="Who gave the label.")
@click.pass_obj
def label(
    settings: Settings,
    instance_uid: str | None,
    study_uid: str | None,
    label: str | None,
    csv_path: Path | None,
    source: str,
    annotator: str | None,
) -> None:
    """Record a ground-truth label for an instance or a study, or many from a CSV file."""
    from storage.db.labels import add_label
    from training.label_input import LabelInputError, make_row, read_csv

    try:
        if csv_path is not None:
            if instance_uid or study_uid or label:
                raise LabelInputError("give either --csv or --instance/--study with --class, not both")
            rows = read_csv(csv_path, default_source=source, default_annotator=annotator)
        else:
            if not label:
                raise LabelInputError(f"give the label with --class ({', '.join(CLASS_NAMES)})")
            rows = [
                make_row(
                    label=label or "",
                    source=source,
                    annotator=annotator,
                    instance=instance_uid,
                    study=study_uid,
                    where="label",
                )
            ]
    except LabelInputError as exc:
        raise click.ClickException(str(exc)) from exc
    now = _now()
    with _sessions(settings).begin() as session:  # all rows or none
        for row in rows:
            add_label(
                session,
                label=row.label,
                source=row.source,
                annotator=row.annotator,
                sop_instance_uid=row.sop_instance_uid,
                study_instance_uid=row.study_instance_uid,
                now=now,
            )
    log.info("labels_recorded", count=len(rows))
    click.echo(f"recorded {len(rows)} label(s)")


@click.group()
def dataset() -> None:
    """Register labelled image folders as training data."""


@dataset.command("import-folder")
@click.argument("root", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--source", default=None, help="Source name recorded with each image (default: folder:<name>).")
@click.option(
    "--progress/--no-progress",
    default=None,
    help="Progress bars on stderr (default: only on a terminal, never with JSON logs).",
)
@click.pass_obj
def import_folder_command(settings: Settings, root: Path, source: str | None, progress: bool | None) -> None:
    """Register ROOT/{Cyst,Normal,Stone,Tumor}/*.jpg in place (nothing is copied)."""
    from training.importer import ImportFolderError, import_folder

    try:
        with (
            progress_bars(progress_wanted(progress, log_format=settings.log_format)) as stages,
            _sessions(settings).begin() as session,
        ):
            summary = import_folder(
                session,
                root=root,
                classes=CLASS_NAMES,
                source=source or f"folder:{root.resolve().name}",
                now=_now(),
                progress=stages("hashing and registering images"),
            )
    except ImportFolderError as exc:
        raise click.ClickException(str(exc)) from exc
    per_class = ", ".join(f"{c} {n}" for c, n in sorted(summary.per_class.items()))
    click.echo(
        f"{summary.created} new, {summary.updated} changed, {summary.unchanged} unchanged ({per_class})"
    )
    for entry in summary.ignored:
        click.echo(f"ignored: {entry}", err=True)


@click.command()
@click.option(
    "--weights", default="imagenet", show_default=True, help="imagenet | none | weights file | artifact dir."
)
@click.option(
    "--image-size", type=click.IntRange(min=32), default=None, help="Input size (default: settings)."
)
@click.option("--epochs-phase1", type=click.IntRange(min=0), default=5, show_default=True)
@click.option("--epochs-phase2", type=click.IntRange(min=0), default=5, show_default=True)
@click.option("--lr-phase1", type=float, default=1e-3, show_default=True)
@click.option("--lr-phase2", type=float, default=1e-5, show_default=True)
@click.option("--batch-size", type=click.IntRange(min=1), default=32, show_default=True)
@click.option("--patience", type=click.IntRange(min=1), default=3, show_default=True, help="Early stopping.")
@click.option(
    "--unfreeze-from",
    default=None,
    help="Phase 2 trains base layers from here on (default: the backbone's last block, conv5_ for ResNet50).",
)
@click.option(
    "--backbone",
    type=click.Choice(["resnet50", "efficientnetb0", "densenet121", "tiny"]),
    default="resnet50",
    show_default=True,
    help="keras.applications base; ResNet50 is the served architecture, the others are lighter options "
    "(tiny: four conv blocks from scratch, the demo's).",
)
@click.option("--val-fraction", type=float, default=0.15, show_default=True)
@click.option("--test-fraction", type=float, default=0.15, show_default=True)
@click.option("--seed", type=int, default=42, show_default=True)
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
@click.option("--phash-max-distance", type=int, default=2, show_default=True)
@click.option("--chain-min-correlation", type=float, default=0.85, show_default=True)
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

    sessions = _sessions(settings)
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
    if (
        weights == "imagenet" and backbone == "resnet50"
    ):  # air-gapped sites: say at once which file is missing
        from training.imagenet import ImagenetWeightsUnavailable, ensure_imagenet_weights

        try:
            ensure_imagenet_weights(environ=os.environ)
        except ImagenetWeightsUnavailable as exc:
            raise click.ClickException(str(exc)) from exc
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
        determinism=determinism_status(os.environ),
        keep_checkpoints=keep_checkpoints,
    )
    started = _now()
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
        register_candidate(session, run=run, now=_now())
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


@click.group()
def models() -> None:
    """List, promote, import, export, shadow and compare model versions."""


@models.command("list")
@click.pass_obj
def list_command(settings: Settings) -> None:
    """Show every model version: status (and shadow), macro-F1 on each held-out set (the set named), parity
    and acceptance of an import, and the promotion note (a forced promotion's reason included)."""
    from storage.db.model_versions import list_model_versions

    with _sessions(settings)() as session:
        versions = list_model_versions(session)
    if not versions:
        click.echo("no model versions")
        return
    click.echo("\n".join(version_table(versions)))


# The card's metrics entries `models list` shows, and the held-out set each was computed on.
LISTED_FIGURES = {
    "grouped_test": ("TEST-F1", "the run's grouped test split (whole scans never trained or selected on)"),
    "latest_ids_test": ("LATEST-F1", "the run's latest-IDs block (the highest IDs of each class, held out)"),
}


def _f1(metrics: dict[str, Any] | None, key: str) -> str:
    entry = (metrics or {}).get(key) or {}
    f1, n = entry.get("macro_f1"), entry.get("n")
    if f1 is None:
        return "-"
    return f"{f1:.3f}" + (f" n={n}" if n is not None else "")


def version_table(versions: Sequence[ModelVersion]) -> list[str]:
    """The table of `models list`, then a legend naming the held-out set behind every figure."""
    widths = (20, 17, 20, 14, 14, 13, 18, 12)
    head = (
        "VERSION",
        "STATUS",
        "CREATED",
        *(label for label, _ in LISTED_FIGURES.values()),
        "PARITY",
        "ACCEPTANCE",
        "MANIFEST",
    )
    lines = [" ".join(f"{h:<{w}}" for h, w in zip(head, widths, strict=True)) + " NOTE"]
    for v in versions:
        status = f"{v.status}+shadow" if v.shadow and v.status != "active" else v.status
        parity, acceptance = _import_columns(v.card or {})
        cells = (
            v.version,
            status,
            f"{v.created_at:%Y-%m-%d %H:%M:%S}",
            *(_f1(v.metrics, key) for key in LISTED_FIGURES),
            parity,
            acceptance,
            (v.manifest_hash or "-")[:12],
        )
        lines.append(
            " ".join(f"{c:<{w}}" for c, w in zip(cells, widths, strict=True)) + f" {v.promotion_note or ''}"
        )
    lines += [""] + [f"{label}: macro-F1 on {what}; n = slices." for label, what in LISTED_FIGURES.values()]
    lines.append(
        "NOTE: the promotion gate's figures, recomputed at promotion on the test split and the latest IDs "
        "together (for an imported version: the active model's), so they differ from both columns."
    )
    return lines


def _import_columns(card: dict) -> tuple[str, str]:  # type: ignore[type-arg]
    """PARITY and ACCEPTANCE of `models list`: `-` for a version trained here (its gate is its test split)."""
    record = (card.get("extra") or {}).get("import")
    if not isinstance(record, dict):
        return "-", "-"
    parity = record.get("parity") or {}
    if parity.get("checked"):
        figure = f"{parity['max_abs_diff']:.1e}" + (" FORCED" if record.get("forced") else "")
    else:
        figure = "not checked"
    accepted = record.get("acceptance")
    if not accepted:
        return figure, "none"
    return figure, f"acc {accepted['accuracy']:.3f} n={accepted['slices']}"


@models.command("promote")
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
                session, row, active, force=force, force_reason=reason, now=_now()
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
    from training.promotion import PromotionError, promote

    try:
        with sessions.begin() as session:
            decision = promote(
                session,
                version=version,
                force=force,
                now=_now(),
                force_reason=reason,
                reader=build_archive_reader(settings),
            )
            if decision.promote:
                set_shadow(session, version=version, on=False)  # the active model is nobody's shadow
    except (PromotionError, ArtifactError, ArchiveUnavailable) as exc:
        raise click.ClickException(str(exc)) from exc
    return decision


@models.command("import")
@click.argument("path", type=click.Path(exists=True, path_type=Path))
@click.option(
    "--preprocessing",
    type=click.Choice(["caffe", "tf", "torch", "rescale", "none"]),
    default=None,
    help="What the notebook did to [0,255] pixels before the model (required for a model file): "
    "caffe = ResNet50's preprocess_input, tf = x/127.5-1, torch = ImageNet mean/std, "
    "rescale = x/255 (ImageDataGenerator(rescale=1./255)), none.",
)
@click.option(
    "--classes",
    default=None,
    help="The model's outputs in the notebook's order, comma-separated (required for weights only; "
    "a full model file that does not record them is taken as Cyst,Normal,Stone,Tumor, "
    "flow_from_directory's alphabetical order: check it with --acceptance).",
)
@click.option(
    "--image-size",
    type=click.IntRange(min=32),
    default=None,
    help="Input size (required for weights only; a full model file says it).",
)
@click.option(
    "--pooling",
    "--head",
    "pooling",
    type=click.Choice(["avg", "flatten", "max"]),
    default=None,
    help="How the head pools the base's features (required for weights only; a full model file says it). "
    "max cannot be served: a file that pools by max is refused.",
)
@click.option(
    "--activation",
    type=click.Choice(["softmax", "sigmoid", "linear"]),
    default=None,
    help="The output layer's activation (required for weights only; a full model file says it). "
    "Only softmax can be served.",
)
@click.option("--window", default=None, help="DICOM window CENTER,WIDTH in HU (default: settings).")
@click.option(
    "--version", "version", default=None, help="Version name (default: import time, e.g. 20261129T160000Z)."
)
@click.option(
    "--acceptance",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    default=None,
    help="A labelled folder of the site's own images (FOLDER/<Class>/*.jpg|png|dcm): the rebuilt model "
    "is evaluated on it and accuracy, per-class recall and the confusion matrix go into the card.",
)
@click.option(
    "--acceptance-labels",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help="With --acceptance: a CSV labelling the DICOM files of a folder that is not split into class "
    "folders, in `kidneyct label --csv`'s format (label, and sop_instance_uid and/or study_instance_uid).",
)
@click.option("--force", is_flag=True, help="Register even when parity is above 1e-4 (recorded in the card).")
@click.option("--no-parity", is_flag=True, help="Do not load the original to compare (the card says so).")
@click.pass_obj
def import_command(  # noqa: PLR0913 - the command's options
    settings: Settings,
    path: Path,
    preprocessing: str | None,
    classes: str | None,
    image_size: int | None,
    pooling: str | None,
    activation: str | None,
    window: str | None,
    version: str | None,
    acceptance: Path | None,
    acceptance_labels: Path | None,
    force: bool,
    no_parity: bool,
) -> None:
    """Register a candidate from a notebook's .h5 / .weights.h5 / .keras file, or an exported artifact folder.

    Arguments, the file's architecture (read as data) and the database schema are checked before
    Keras is loaded: a refusal comes in seconds.
    """
    from kidneyct.database import open_database

    file_options = (preprocessing, classes, image_size, pooling, activation, window, version, acceptance)
    if path.is_dir():
        if any(v is not None for v in file_options):
            raise click.UsageError(
                "an exported artifact folder carries its own card: give no model-file options"
            )
        _import_artifact_folder(settings, path)
        return
    if acceptance_labels is not None and acceptance is None:
        raise click.UsageError("--acceptance-labels labels the files of --acceptance FOLDER: give both")
    if preprocessing is None:
        raise click.UsageError(
            "--preprocessing is required for a model file: say what the notebook fed the model "
            "(caffe | tf | torch | rescale | none); parity cannot detect a wrong choice"
        )
    sessions = open_database(settings)  # refuses a database `kidneyct db upgrade` never ran on
    request = _check_file_import(
        settings,
        path,
        preprocessing=preprocessing,
        classes=classes,
        stated=(pooling, activation, image_size),
        window=window,
        version=version,
    )
    _refuse_registered(sessions, request.version)
    imported = _import_file(
        settings, path, request, force=force, no_parity=no_parity, acceptance=(acceptance, acceptance_labels)
    )
    try:
        with sessions.begin() as session:
            from training.model_transfer import register_imported

            register_imported(session, card=imported.card, artifact_dir=imported.artifact_dir, now=_now())
    except BaseException:
        import shutil

        shutil.rmtree(imported.artifact_dir, ignore_errors=True)  # nothing registered: nothing kept
        raise
    _report_import(imported)


def _import_artifact_folder(settings: Settings, path: Path) -> None:
    from training.model_transfer import TransferError, import_artifact_dir

    try:
        with _sessions(settings).begin() as session:
            row = import_artifact_dir(
                session, source=path, model_dir=settings.resolved_model_dir(), now=_now()
            )
            name = row.version
    except TransferError as exc:
        raise click.ClickException(str(exc)) from exc
    log.info("model_version_imported", version=name, source="artifact", status="candidate")
    click.echo(f"registered candidate {name} from the artifact folder {path}")


def _report_import(imported) -> None:  # type: ignore[no-untyped-def]
    parity = imported.parity
    figure = f"max abs diff {parity.max_abs_diff:.2e} ({parity.loader})" if parity.checked else parity.note
    log.info(
        "model_version_imported", version=imported.card.version, source="file", parity=parity.max_abs_diff
    )
    info = imported.card.extra["import"]
    click.echo(
        f"registered candidate {imported.card.version}: head {imported.card.head}, {imported.card.image_size} px, "
        f"preprocessing {imported.card.normalization}, classes {','.join(info['source_classes'])} "
        f"({info['classes_from']}); parity: {figure}"
    )
    accepted = info.get("acceptance")
    if accepted is not None:
        recall = ", ".join(f"{c} {r:.2f}" for c, r in accepted["recall"].items())
        click.echo(
            f"acceptance: accuracy {accepted['accuracy']:.3f} on {accepted['slices']} slice(s); recall {recall}"
        )


class _FileImport:
    """The checked, Keras-free part of a model-file import: what `_import_file` then rebuilds."""

    def __init__(self, source, architecture, spec_kwargs, window, version, classes_from):  # type: ignore[no-untyped-def]
        self.source = source
        self.architecture = architecture
        self.spec_kwargs = spec_kwargs
        self.window = window
        self.version = version
        self.classes_from = classes_from


def _check_file_import(
    settings: Settings,
    path: Path,
    *,
    preprocessing: str | None,
    classes: str | None,
    stated: tuple[str | None, str | None, int | None],
    window: str | None,
    version: str | None,
) -> _FileImport:
    """Arguments and the file's architecture, read with h5py only: refusals before Keras is imported."""
    from training.file_architecture import (
        ImportRefused,
        Stated,
        parse_classes,
        read_architecture,
        read_source,
        refuse_by_config,
    )

    pooling, activation, image_size = stated
    try:
        win = _window_numbers(window) if window else (settings.window_center, settings.window_width)
        order = parse_classes(classes)
        refuse_by_config(path)
        source = read_source(path)
        arch = read_architecture(
            source, Stated(pooling=pooling, activation=activation, image_size=image_size, classes=order)
        )
    except (ImportRefused, ValueError) as exc:
        raise click.ClickException(str(exc)) from exc
    classes_from = "stated" if order else ("the file's" if source.class_names else "assumed alphabetical")
    spec_kwargs = {
        "source_classes": arch.classes,
        "image_size": arch.image_size,
        "head": arch.pooling,
        "activation": arch.output_activation,
        "normalization": preprocessing,
    }
    name = version or _now().astimezone(dt.UTC).strftime("%Y%m%dT%H%M%SZ")  # training.registry.make_version
    return _FileImport(source, arch, spec_kwargs, win, name, classes_from)


def _refuse_registered(sessions: sessionmaker[Session], version: str) -> None:
    from storage.db.model_versions import get_model_version

    with sessions() as session:
        if get_model_version(session, version=version) is not None:
            raise click.ClickException(
                f"model version {version} is already registered: choose another --version"
            )


def _import_file(  # type: ignore[no-untyped-def]
    settings: Settings,
    path: Path,
    request: _FileImport,
    *,
    force: bool,
    no_parity: bool,
    acceptance: tuple[Path | None, Path | None],
):
    from classifier.model.preprocess import Window
    from training.model_import import ImportOptions, ImportRefused, import_model_file
    from training.rebuild import ImportSpec

    options = ImportOptions(
        spec=ImportSpec(**request.spec_kwargs),
        window=Window(*request.window),
        version=request.version,
        force=force,
        check_parity=not no_parity,
        classes_from=request.classes_from,
        acceptance=acceptance[0],
        acceptance_labels=acceptance[1],
    )
    try:
        return import_model_file(
            path, options, model_dir=settings.resolved_model_dir(), now=_now(), source=request.source
        )
    except (ImportRefused, ValueError) as exc:
        raise click.ClickException(str(exc)) from exc


def _window_numbers(text: str) -> tuple[float, float]:
    """`--window CENTER,WIDTH` as numbers (classifier.model.preprocess, which loads pydicom, is not needed yet)."""
    try:
        center, width = (float(part) for part in text.split(","))
    except ValueError as exc:
        raise ValueError(f"--window must be CENTER,WIDTH in HU, got {text!r}") from exc
    return center, width


@models.command("export")
@click.argument("version")
@click.argument("directory", type=click.Path(file_okay=False, path_type=Path))
@click.pass_obj
def export_command(settings: Settings, version: str, directory: Path) -> None:
    """Write VERSION's artifact, card and registration to DIRECTORY (for `models import DIRECTORY` elsewhere)."""
    from storage.db.model_versions import get_model_version

    with _sessions(settings)() as session:  # an unknown version is answered before Keras loads
        if get_model_version(session, version=version) is None:
            raise click.ClickException(f"no model version {version!r} (see `kidneyct models list`)")
    from training.model_transfer import TransferError, export_version

    try:
        with _sessions(settings)() as session:
            export_version(session, version=version, destination=directory, now=_now())
    except TransferError as exc:
        raise click.ClickException(str(exc)) from exc
    log.info("model_version_exported", version=version)
    click.echo(f"exported {version} to {directory}")


@click.command()
@click.argument("root", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--version", "version", default=None, help="A registered model version.")
@click.option(
    "--artifact",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    default=None,
    help="A model artifact directory (instead of --version).",
)
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Write evaluation.json, evaluation.md and figures here.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the metrics as JSON (for scripts).")
@click.option(
    "--per-slice",
    "per_slice",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Write every slice's class probabilities to this CSV file (path, frame, label, group, predicted, p_*).",
)
@click.option(
    "--study-k",
    type=click.IntRange(min=1),
    default=None,
    help="Study rule k (default: settings, else the model card's).",
)
@click.option(
    "--study-t",
    type=click.FloatRange(0.0, 1.0),
    default=None,
    help="Study rule t (default: settings, else the model card's).",
)
@click.pass_obj
def evaluate(
    settings: Settings,
    root: Path,
    version: str | None,
    artifact: Path | None,
    out: Path | None,
    as_json: bool,
    per_slice: Path | None,
    study_k: int | None,
    study_t: float | None,
) -> None:
    """Evaluate a model on ROOT/<Class>/... (images or DICOM), through the serving preprocessing."""
    if (version is None) == (artifact is None):
        raise click.BadParameter("give exactly one of --version and --artifact")
    import json

    from training.external_eval import EvaluationInputError, evaluate_folder, markdown, require_files

    try:
        require_files(root)  # before Keras loads: an empty folder is answered at once
    except EvaluationInputError as exc:
        raise click.ClickException(str(exc)) from exc
    directory, sha = _evaluated_artifact(settings, version, artifact)
    from classifier.model.artifact import load_artifact
    from classifier.worker.errors import ArtifactError
    from classifier.worker.study_policy import PolicySettings
    from classifier.worker.study_rule import StudyRule
    from training import plots

    try:
        model, card = load_artifact(directory, expected_sha256=sha)
        fallback, override = settings.study_rule()
        policy = PolicySettings(fallback=fallback, override=override).policy(card.decision)
        rule = StudyRule(
            study_k or policy.rule.min_slices,
            policy.rule.min_probability if study_t is None else study_t,
        )
        result = evaluate_folder(
            model,
            image_size=card.image_size,
            window=card.window_obj,
            classes=card.classes,
            root=root,
            rule=rule,
            per_slice_csv=per_slice,
            temperature=card.temperature,
            min_evidence=policy.min_evidence,
        )
    except (ArtifactError, EvaluationInputError) as exc:
        raise click.ClickException(str(exc)) from exc
    result["model"] = {"version": card.version, "artifact": str(directory), "image_size": card.image_size}
    if result["grouping_warning"]:
        click.echo(f"warning: {result['grouping_warning']}", err=True)
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        (out / "evaluation.json").write_text(json.dumps(result, indent=1) + "\n")
        (out / "evaluation.md").write_text(markdown(result, card.version))
        plots.confusion(
            result["metrics"]["confusion_matrix"], card.classes, out / "confusion.png", card.version
        )
        plots.reliability_diagram(
            result["calibration"]["bins"], out / "reliability.png", card.version, result["calibration"]["ece"]
        )
    if as_json:
        click.echo(json.dumps(result, indent=1))
    else:
        click.echo(markdown(result, card.version), nl=False)


def _evaluated_artifact(
    settings: Settings, version: str | None, artifact: Path | None
) -> tuple[Path, str | None]:
    """The artifact directory to evaluate and its expected SHA-256 (None for a bare --artifact)."""
    if artifact is not None:
        return artifact, None
    from storage.db.model_versions import get_model_version
    from training.trainset import path_from_uri

    with _sessions(settings)() as session:
        row = get_model_version(session, version=version or "")
        if row is None:
            raise click.ClickException(f"no model version {version!r} (see `kidneyct models list`)")
        return Path(path_from_uri(row.artifact_uri)), row.sha256


def _add_comparison_commands() -> None:
    """`models shadow` and `models compare` live in their own modules (light: no Keras at import)."""
    from kidneyct.commands.models_compare import compare_command
    from kidneyct.commands.models_shadow import shadow_command

    models.add_command(shadow_command)
    models.add_command(compare_command)


_add_comparison_commands()
