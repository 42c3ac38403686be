"""`kidneyct label`, `kidneyct dataset`, `kidneyct train` and `kidneyct models`: wiring only."""

from __future__ import annotations

import datetime as dt
import os
import sys
from pathlib import Path

import click
import structlog
from sqlalchemy.orm import Session, sessionmaker

from common.progress import progress_bars, progress_wanted
from common.vocabulary import CLASS_NAMES
from kidneyct.database import make_database
from kidneyct.settings import Settings

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
    from storage.labels import add_label
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
    type=click.Choice(["resnet50", "efficientnetb0", "densenet121"]),
    default="resnet50",
    show_default=True,
    help="keras.applications base; ResNet50 is the served architecture, the others are lighter options.",
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
) -> None:
    """Train on all labelled data, evaluate honestly, and register the result as a candidate version."""
    from classifier.device import DeviceError, parse_device, pin_device, prefer_onednn

    prefer_onednn(os.environ)  # ~4x faster training steps on CPU; before Keras is imported below
    chosen = device or settings.device
    # The default `cpu` is not pinned: a trainer with no device configured may use whatever it finds.
    if device is not None or chosen != "cpu":
        try:
            pin_device(parse_device(chosen), os.environ)  # before Keras is imported below
        except DeviceError as exc:
            raise click.BadParameter(str(exc), param_hint="--device") from exc
    from classifier.model import BACKBONE_UNFREEZE_FROM
    from classifier.preprocess import Window
    from kidneyct.archives import build_archive_reader
    from storage.archive_reader import ArchiveUnavailable
    from training.data import AugmentConfig
    from training.dedup import GroupingParams
    from training.fit import FitConfig
    from training.registry import (
        make_version,
        new_labels_since_last_version,
        register_candidate,
        training_due,
    )
    from training.run import TrainingError, TrainOptions, run_training
    from training.split import SplitFractions

    _require_device(chosen)
    sessions = _sessions(settings)
    with sessions() as session:
        new = new_labels_since_last_version(session)
    if not training_due(new_labels=new, min_new_labels=min_new_labels):
        log.info("training_skipped", new_labels=new, min_new_labels=min_new_labels)
        click.echo(
            f"{new} new label(s) since the last model version, fewer than {min_new_labels}: nothing to do"
        )
        return
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
    try:
        fractions = SplitFractions(
            train=1.0 - val_fraction - test_fraction, val=val_fraction, test=test_fraction
        )
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from exc
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


def _require_device(chosen: str) -> None:
    """`--device gpu:N` on a host without that GPU is an error, not a silent CPU run."""
    import keras

    from classifier.device import DeviceError, parse_device, require_device

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
    """Show every model version with its status and grouped-split macro-F1."""
    from storage.model_versions import list_model_versions

    with _sessions(settings)() as session:
        versions = list_model_versions(session)
    if not versions:
        click.echo("no model versions")
        return
    click.echo(f"{'VERSION':<20} {'STATUS':<10} {'CREATED':<20} {'MACRO-F1':>8}  {'MANIFEST':<12} NOTE")
    for v in versions:
        f1 = ((v.metrics or {}).get("grouped_test") or {}).get("macro_f1")
        click.echo(
            f"{v.version:<20} {v.status:<10} {v.created_at:%Y-%m-%d %H:%M:%S} "
            f"{'-' if f1 is None else f'{f1:.3f}':>8}  {(v.manifest_hash or '-')[:12]:<12} {v.promotion_note or ''}"
        )


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
    from classifier.errors import ArtifactError
    from kidneyct.archives import build_archive_reader
    from kidneyct.backfill import backfill, backfill_window
    from storage.archive_reader import ArchiveUnavailable
    from storage.shadow_models import set_shadow
    from training.promotion import PromotionError, promote

    if force and not (reason or "").strip():
        raise click.BadParameter("--force needs --reason TEXT (it is recorded with the promotion)")
    window = backfill_window(backfill_since)
    try:
        with _sessions(settings).begin() as session:
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
    click.echo(decision.reason)
    if not decision.promote:
        raise click.ClickException(f"{version} not promoted (use --force to override; it will be recorded)")
    if window is not None:
        click.echo(backfill(settings, _sessions(settings), version=version, window=window))


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
    help="The model's outputs in the notebook's order, comma-separated (default: Cyst,Normal,Stone,Tumor, "
    "flow_from_directory's alphabetical order).",
)
@click.option(
    "--image-size",
    type=click.IntRange(min=32),
    default=None,
    help="Input size (default: from the file, else settings).",
)
@click.option(
    "--head",
    type=click.Choice(["avg", "flatten"]),
    default=None,
    help="Pooling of the head (default: from the file).",
)
@click.option("--window", default=None, help="DICOM window CENTER,WIDTH in HU (default: settings).")
@click.option(
    "--version", "version", default=None, help="Version name (default: import time, e.g. 20261129T160000Z)."
)
@click.option("--force", is_flag=True, help="Register even when parity is above 1e-4 (recorded in the card).")
@click.option("--no-parity", is_flag=True, help="Do not load the original to compare (the card says so).")
@click.pass_obj
def import_command(
    settings: Settings,
    path: Path,
    preprocessing: str | None,
    classes: str | None,
    image_size: int | None,
    head: str | None,
    window: str | None,
    version: str | None,
    force: bool,
    no_parity: bool,
) -> None:
    """Register a candidate from a notebook's .h5 / .weights.h5 / .keras file, or an exported artifact folder."""
    from training.model_transfer import TransferError, import_artifact_dir, register_imported

    sessions = _sessions(settings)
    if path.is_dir():
        if any(v is not None for v in (preprocessing, classes, image_size, head, window, version)):
            raise click.UsageError(
                "an exported artifact folder carries its own card: give no model-file options"
            )
        try:
            with sessions.begin() as session:
                row = import_artifact_dir(
                    session, source=path, model_dir=settings.resolved_model_dir(), now=_now()
                )
                name = row.version
        except TransferError as exc:
            raise click.ClickException(str(exc)) from exc
        log.info("model_version_imported", version=name, source="artifact", status="candidate")
        click.echo(f"registered candidate {name} from the artifact folder {path}")
        return
    imported = _import_file(
        settings, path, preprocessing, classes, image_size, head, window, version, force, no_parity
    )
    try:
        with sessions.begin() as session:
            register_imported(session, card=imported.card, artifact_dir=imported.artifact_dir, now=_now())
    except BaseException:
        import shutil

        shutil.rmtree(imported.artifact_dir, ignore_errors=True)  # nothing registered: nothing kept
        raise
    parity = imported.parity
    figure = f"max abs diff {parity.max_abs_diff:.2e} ({parity.loader})" if parity.checked else parity.note
    log.info(
        "model_version_imported", version=imported.card.version, source="file", parity=parity.max_abs_diff
    )
    click.echo(
        f"registered candidate {imported.card.version}: head {imported.card.head}, {imported.card.image_size} px, "
        f"preprocessing {imported.card.normalization}; parity: {figure}"
    )


def _import_file(  # noqa: PLR0913 - the command's options, passed through
    settings: Settings,
    path: Path,
    preprocessing: str | None,
    classes: str | None,
    image_size: int | None,
    head: str | None,
    window: str | None,
    version: str | None,
    force: bool,
    no_parity: bool,
):  # type: ignore[no-untyped-def]
    from classifier.preprocess import Window
    from training.model_import import ImportOptions, import_model_file, parse_classes
    from training.rebuild import ImportRefused, ImportSpec
    from training.registry import make_version

    if preprocessing is None:
        raise click.UsageError(
            "--preprocessing is required for a model file: say what the notebook fed the model "
            "(caffe | tf | torch | rescale | none); parity cannot detect a wrong choice"
        )
    try:
        win = _parse_window(window) if window else Window(settings.window_center, settings.window_width)
        options = ImportOptions(
            spec=ImportSpec(
                source_classes=parse_classes(classes),
                image_size=image_size,
                default_image_size=settings.image_size,
                head=head,
                normalization=preprocessing,
            ),
            window=win,
            version=version or make_version(_now()),
            force=force,
            check_parity=not no_parity,
        )
        with _sessions(settings)() as session:
            from storage.model_versions import get_model_version

            if get_model_version(session, version=options.version) is not None:
                raise ImportRefused(
                    f"model version {options.version} is already registered: choose another --version"
                )
        return import_model_file(path, options, model_dir=settings.resolved_model_dir(), now=_now())
    except (ImportRefused, ValueError) as exc:
        raise click.ClickException(str(exc)) from exc


def _parse_window(text: str):  # type: ignore[no-untyped-def]
    from classifier.preprocess import Window

    try:
        center, width = (float(part) for part in text.split(","))
    except ValueError as exc:
        raise ValueError(f"--window must be CENTER,WIDTH in HU, got {text!r}") from exc
    return Window(center=center, width=width)


@models.command("export")
@click.argument("version")
@click.argument("directory", type=click.Path(file_okay=False, path_type=Path))
@click.pass_obj
def export_command(settings: Settings, version: str, directory: Path) -> None:
    """Write VERSION's artifact, card and registration to DIRECTORY (for `models import DIRECTORY` elsewhere)."""
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
    study_k: int | None,
    study_t: float | None,
) -> None:
    """Evaluate a model on ROOT/<Class>/... (images or DICOM), through the serving preprocessing."""
    import json

    from classifier.artifact import load_artifact
    from classifier.errors import ArtifactError
    from classifier.study_policy import PolicySettings
    from classifier.study_rule import StudyRule
    from storage.model_versions import get_model_version
    from training import plots
    from training.external_eval import EvaluationInputError, evaluate_folder, markdown
    from training.trainset import path_from_uri

    if (version is None) == (artifact is None):
        raise click.BadParameter("give exactly one of --version and --artifact")
    try:
        if version is not None:
            with _sessions(settings)() as session:
                row = get_model_version(session, version=version)
                if row is None:
                    raise click.ClickException(f"no model version {version!r}")
                directory, sha = Path(path_from_uri(row.artifact_uri)), row.sha256
        else:
            directory, sha = artifact, None  # type: ignore[assignment]
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
            temperature=card.temperature,
            min_evidence=policy.min_evidence,
        )
    except (ArtifactError, EvaluationInputError) as exc:
        raise click.ClickException(str(exc)) from exc
    result["model"] = {"version": card.version, "artifact": str(directory), "image_size": card.image_size}
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


def _add_comparison_commands() -> None:
    """`models shadow` and `models compare` live in their own modules (light: no Keras at import)."""
    from kidneyct.commands.models_compare import compare_command
    from kidneyct.commands.models_shadow import shadow_command

    models.add_command(shadow_command)
    models.add_command(compare_command)


_add_comparison_commands()
