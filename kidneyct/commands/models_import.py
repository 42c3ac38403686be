"""`kidneyct models import PATH`: register a candidate from a notebook's model file or an exported folder.

Arguments, the file's architecture (read with h5py) and the database schema are checked before Keras
is imported.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import click
import structlog
from sqlalchemy.orm import Session, sessionmaker

from kidneyct.commands.options import MODEL_VERSION, option
from kidneyct.database import make_database
from kidneyct.settings import Settings

log = structlog.get_logger(__name__)


@click.command("import")
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
@option(
    MODEL_VERSION,
    "version",
    hidden_aliases=["--version"],
    default=None,
    help="The new model version's name (default: import time, e.g. 20261129T160000Z).",
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

            register_imported(
                session, card=imported.card, artifact_dir=imported.artifact_dir, now=dt.datetime.now(dt.UTC)
            )
    except BaseException:
        import shutil

        shutil.rmtree(imported.artifact_dir, ignore_errors=True)  # nothing registered: nothing kept
        raise
    _report_import(imported)


def _import_artifact_folder(settings: Settings, path: Path) -> None:
    from training.model_transfer import TransferError, import_artifact_dir

    try:
        with make_database(settings).begin() as session:
            row = import_artifact_dir(
                session, source=path, model_dir=settings.resolved_model_dir(), now=dt.datetime.now(dt.UTC)
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
    name = version or dt.datetime.now(dt.UTC).astimezone(dt.UTC).strftime(
        "%Y%m%dT%H%M%SZ"
    )  # training.registry.make_version
    return _FileImport(source, arch, spec_kwargs, win, name, classes_from)


def _refuse_registered(sessions: sessionmaker[Session], version: str) -> None:
    from storage.db.model_versions import get_model_version

    with sessions() as session:
        if get_model_version(session, version=version) is not None:
            raise click.ClickException(
                f"model version {version} is already registered: choose another {MODEL_VERSION}"
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
            path,
            options,
            model_dir=settings.resolved_model_dir(),
            now=dt.datetime.now(dt.UTC),
            source=request.source,
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
