"""`kidneyct evaluate`: a model on a labelled folder, through the serving preprocessing."""

from __future__ import annotations

from pathlib import Path

import click

from kidneyct.commands.options import MODEL_VERSION, option
from kidneyct.database import make_database
from kidneyct.settings import Settings


@click.command(short_help="Evaluate a model on a labelled folder.")
@click.argument("root", type=click.Path(exists=True, file_okay=False, path_type=Path))
@option(
    MODEL_VERSION, "version", hidden_aliases=["--version"], default=None, help="A registered model version."
)
@click.option(
    "--artifact",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    default=None,
    help=f"A model artifact directory (instead of {MODEL_VERSION}).",
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
    """Evaluate a model on a labelled folder, through the serving preprocessing.

    ROOT holds one folder per class (ROOT/<Class>/...) of images or DICOM files."""
    if (version is None) == (artifact is None):
        raise click.BadParameter(f"give exactly one of {MODEL_VERSION} and --artifact")
    import json

    from training.external_eval import EvaluationInputError, evaluate_folder, markdown, require_files

    try:
        require_files(root)  # before Keras loads: an empty folder is answered at once
    except EvaluationInputError as exc:
        raise click.ClickException(str(exc)) from exc
    directory, sha = _evaluated_artifact(settings, version, artifact)
    from classifier.model.artifact import load_artifact
    from classifier.study.policy import PolicySettings
    from classifier.study.rule import StudyRule
    from classifier.worker.errors import ArtifactError
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
            evidence_definition=policy.evidence,  # the card's: its min_evidence was chosen on it
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

    with make_database(settings)() as session:
        row = get_model_version(session, version=version or "")
        if row is None:
            raise click.ClickException(f"no model version {version!r} (see `kidneyct models list`)")
        return Path(path_from_uri(row.artifact_uri)), row.sha256
