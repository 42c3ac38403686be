"""The run's report: `report.json` (every number), `report.md` (readable) and the PNG figures beside them."""

from __future__ import annotations

import json
import platform
import subprocess
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any

import keras

from training import plots
from training.baseline import BASELINE_LABELS, unavailable_baselines
from training.manifest import Manifest
from training.report_statements import statements_section

if TYPE_CHECKING:
    from training.run import SetEvaluation, SplitOutcome, TrainOptions

FIGURES = {
    "histogram": "class_histogram.png",
    "confusion_grouped": "confusion_grouped.png",
    "confusion_latest": "confusion_latest.png",
    "confusion_random": "confusion_random.png",
    "curves_grouped": "learning_curves_grouped.png",
    "curves_random": "learning_curves_random.png",
    "reliability_grouped": "reliability_grouped.png",
    "reliability_latest": "reliability_latest.png",
    "reliability_grouped_calibrated": "reliability_grouped_calibrated.png",
    "reliability_latest_calibrated": "reliability_latest_calibrated.png",
    "gradcam": "gradcam.png",
}
LIBRARIES = ("keras", "tensorflow", "jax", "numpy", "pillow", "pydicom", "imagehash", "matplotlib")
HELD_OUT_TITLES = {
    "test": "grouped test (held-out scans)",
    "latest": "latest IDs (held-out block)",
}


def library_versions() -> dict[str, str | None]:
    out: dict[str, str | None] = {}
    for name in LIBRARIES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def git_commit(directory: Path | None = None) -> str | None:
    """The commit of the code that ran (with `+dirty` if it had uncommitted changes), or None outside git."""
    where = directory or Path(__file__).resolve().parent
    try:
        head = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=where, capture_output=True, text=True, check=True, timeout=10
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=where,
            capture_output=True,
            text=True,
            check=True,
            timeout=10,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return head + ("+dirty" if dirty else "")


def _evaluation_json(evaluation: SetEvaluation) -> dict[str, Any]:
    return {
        "n": evaluation.metrics["n"],
        "metrics": evaluation.metrics,
        "intervals": evaluation.intervals,
        "calibration": evaluation.calibration,
        "normal_vs_abnormal": evaluation.normal_vs_abnormal,
        "baselines": evaluation.baselines,
        "versus_baselines": evaluation.versus_baselines,
        "selection_model_metrics": evaluation.selection_metrics,
    }


def _outcome_json(outcome: SplitOutcome) -> dict[str, Any]:
    return {
        "counts": outcome.counts,
        "groups": outcome.groups,
        "held_out": {k: _evaluation_json(v) for k, v in outcome.evaluations.items()},
        "test": outcome.test_metrics,
        "val": outcome.val_metrics,
        "nearest_neighbour_test": outcome.nearest_neighbour_metrics,
        "training": outcome.fit.to_json(),
        "selected_epochs": outcome.selected_epochs,
        "refit": outcome.refit.to_json() if outcome.refit is not None else None,
        "study_rule": outcome.study_rule,
        "statements": outcome.statements,
        "from_scratch": outcome.from_scratch,
        "head": outcome.head,
    }


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def _ci(point: float, bounds: list[float]) -> str:
    return f"{point:.3f} [{bounds[0]:.2f}, {bounds[1]:.2f}]"


def _columns(report: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """(title, held-out evaluation) pairs: grouped test, latest IDs, random test."""
    cols = [(HELD_OUT_TITLES[k], v) for k, v in report["grouped"]["held_out"].items()]
    if report.get("random"):
        cols.append(("random image-level split", report["random"]["held_out"]["test"]))
    return cols


def _side_by_side(report: dict[str, Any]) -> list[str]:
    cols = _columns(report)
    lines = [
        "| macro-F1 [95 % group-bootstrap interval] | " + " | ".join(t for t, _ in cols) + " |",
        "|---|" + "---|" * len(cols),
        "| test images (groups) | "
        + " | ".join(f"{e['n']} ({e['intervals']['groups']})" for _, e in cols)
        + " |",
        "| **network (served model)** | "
        + " | ".join(_ci(e["metrics"]["macro_f1"], e["intervals"]["macro_f1"]) for _, e in cols)
        + " |",
    ]
    if any(e.get("selection_model_metrics") for _, e in cols):
        cells = [
            _fmt((e.get("selection_model_metrics") or {}).get("macro_f1"))
            if e.get("selection_model_metrics")
            else "-"
            for _, e in cols
        ]
        lines.append("| network trained on train only (selection run) | " + " | ".join(cells) + " |")
    missing = {n: why for n, why in unavailable_baselines().items() if n not in cols[0][1]["baselines"]}
    for name, why in missing.items():  # said, not silently dropped
        lines.append(
            f"| {BASELINE_LABELS[name]}: unavailable ({why}) | " + " | ".join("-" for _ in cols) + " |"
        )
    present = {n: lab for n, lab in BASELINE_LABELS.items() if n in cols[0][1]["baselines"]}
    for name, label in present.items():
        lines.append(
            f"| {label} | "
            + " | ".join(
                _ci(
                    e["baselines"][name]["metrics"]["macro_f1"], e["baselines"][name]["intervals"]["macro_f1"]
                )
                for _, e in cols
            )
            + " |"
        )
    for name, label in ((n, lab.split(",")[0]) for n, lab in present.items()):
        lines.append(
            f"| network minus {label} (paired) | "
            + " | ".join(
                _ci(e["versus_baselines"][name]["difference"], e["versus_baselines"][name]["interval"])
                for _, e in cols
            )
            + " |"
        )
    lines.append("| network accuracy | " + " | ".join(_fmt(e["metrics"]["accuracy"]) for _, e in cols) + " |")
    lines.append(
        "| network macro ROC AUC | " + " | ".join(_fmt(e["metrics"]["macro_roc_auc"]) for _, e in cols) + " |"
    )
    lines.append(
        "| sensitivity / specificity, abnormal vs Normal | "
        + " | ".join(
            f"{e['normal_vs_abnormal']['sensitivity']:.3f} / {e['normal_vs_abnormal']['specificity']:.3f}"
            if e.get("normal_vs_abnormal")
            else "n/a"
            for _, e in cols
        )
        + " |"
    )
    lines.append(
        "| ECE (mean confidence) | "
        + " | ".join(
            f"{e['calibration']['ece']:.3f} ({_fmt(e['calibration']['mean_confidence'])})" for _, e in cols
        )
        + " |"
    )
    return lines


def _groups_table(report: dict[str, Any]) -> list[str]:
    g = report["grouped"]
    classes = report["classes"]
    lines = ["| split | " + " | ".join(classes) + " | images |", "|---|" + "---|" * (len(classes) + 1)]
    for split, per_class in g["groups"].items():
        images = sum(g["counts"][split].values())
        cells = [f"{per_class[c]} ({g['counts'][split][c]})" for c in classes]
        lines.append(f"| {split} | " + " | ".join(cells) + f" | {images} |")
    return lines


def _per_class(title: str, evaluation: dict[str, Any]) -> list[str]:
    lines = [
        f"**{title}**",
        "",
        "| class | precision | recall | F1 [95 % interval] | ROC AUC | support |",
        "|---|---|---|---|---|---|",
    ]
    for cls, m in evaluation["metrics"]["per_class"].items():
        ci = evaluation["intervals"]["per_class"][cls]
        lines.append(
            f"| {cls} | {_fmt(m['precision'])} | {_fmt(m['recall'])} | {_ci(m['f1'], ci['f1'])} | "
            f"{_fmt(m['roc_auc'])} | {m['support']} |"
        )
    return lines + [""]


def _study_rule_line(rule: dict[str, Any] | None) -> str:
    if rule is None:
        return "Study rule: no scans in both the validation and the test split, so (k, t) was not tuned."
    return (
        f"Study rule: k = {rule['k']}, t = {rule['t']} chosen on {rule['val_studies']} validation scans "
        f"(calibrated probabilities, accuracy {rule['val_accuracy']:.3f}; carried by the model card); on the test scans {rule['test_right']}/{rule['test_studies']} "
        f"right ({rule['test_accuracy']:.3f})."
    )


def _selection_line(g: dict[str, Any]) -> str:
    head = g.get("head")
    if head:  # the frozen-features recipe: no epochs, an L2 strength chosen on validation
        scores = ", ".join(f"{s['l2']:g}: {s['val_macro_f1']:.3f}" for s in head["l2_scores"])
        return (
            f"Recipe frozen-features: {head['head']} on frozen `{head['extractor']}` features "
            f"({'class-balanced' if head['balanced'] else 'unweighted'}, {head['steps']} steps); L2 "
            f"{head['l2']:g} chosen on {head['chosen_on']} (validation macro-F1 per L2: {scores or 'none'}); "
            f"the served head was fitted on {head['refitted_on']}. Features {head['feature_seconds']:.0f} s "
            f"(cached per image), head {head['head_seconds']:.1f} s."
        )
    return (
        f"Model selection: the epoch with the best class-balanced validation accuracy, "
        f"{g['selected_epochs']} (of {sum(p['epochs_run'] for p in g['training'].values())} run); "
        + (
            f"the served model was refitted on train + val for {g['selected_epochs']} epoch(s)."
            if g.get("refit")
            else "no refit (the served model is the selection run's)."
        )
    )


def _markdown(report: dict[str, Any]) -> str:
    g = report["grouped"]
    ds = report["dataset"]
    env = report["environment"]
    lines = [
        f"# Training report: {report['version']}",
        "",
        f"Manifest `{report['manifest_hash']}`: {ds['items']} images in {ds['groups']} groups (scans); "
        f"{ds['duplicates_dropped']} exact duplicates dropped, {ds['skipped']} unreadable items skipped; "
        f"groups straddling two splits: {ds['straddling_groups']}. Image size {report['config']['image_size']} px, "
        f"backbone {report['config'].get('backbone', 'resnet50')}, initial weights `{report['config']['weights']}`"
        + (" (from scratch)" if g.get("from_scratch") else "")
        + f", seed {report['config']['seed']}. Code {env['commit'] or 'unknown'}; "
        + ", ".join(f"{k} {v}" for k, v in env["libraries"].items() if v)
        + f"; Keras backend {env['backend']}.",
        "",
        "Held-out sets: the **grouped test** split holds whole scans (groups) drawn at random from the older "
        "IDs; the **latest IDs** block holds the highest IDs of each class (whole scans), like scans that "
        "arrive after the training data: the honest proxy for new patients. The **random** split assigns "
        "single images (as most published results do) and measures near-duplicate matching. The baselines "
        "(1-nearest-neighbour and a class-weighted ridge classifier on standardised 32x32 pixels) are fitted "
        "on the same training images as the served network. Intervals resample groups, not images.",
        "",
        "## Network and baselines, side by side",
        "",
        *_side_by_side(report),
        "",
        _selection_line(g),
        "",
        _study_rule_line(g.get("study_rule")),
        "",
        *statements_section(g.get("statements")),
        "## Groups (scans) per split and class, images in brackets",
        "",
        *_groups_table(report),
        "",
        f"Grouping: {json.dumps({k: v for k, v in ds['grouping'].items() if k != 'window'})}.",
        "",
        "## Per class",
        "",
    ]
    for title, evaluation in _columns(report):
        lines += _per_class(title, evaluation)
    lines += ["## Figures", ""]
    for key, title in (
        ("histogram", "Images per class and split"),
        ("confusion_grouped", "Confusion matrix, grouped test"),
        ("confusion_latest", "Confusion matrix, latest IDs"),
        ("confusion_random", "Confusion matrix, random split"),
        ("curves_grouped", "Learning curves of the selection run, grouped split (selected epoch marked)"),
        ("curves_random", "Learning curves, random split"),
        ("reliability_grouped", "Reliability diagram, grouped test"),
        ("reliability_latest", "Reliability diagram, latest IDs"),
        ("reliability_grouped_calibrated", "Reliability diagram, grouped test, after temperature scaling"),
        ("reliability_latest_calibrated", "Reliability diagram, latest IDs, after temperature scaling"),
        ("gradcam", "Grad-CAM, test images of the grouped split"),
    ):
        if key in report["figures"]:
            lines += [f"### {title}", "", f"![{title}]({report['figures'][key]})", ""]
        elif key == "gradcam" and report.get("gradcam_skipped"):
            lines += [f"### {title}", "", f"Not drawn: {report['gradcam_skipped']}.", ""]
    return "\n".join(lines) + "\n"


def _figures(
    run_dir: Path,
    classes: list[str],
    grouped: SplitOutcome,
    random: SplitOutcome | None,
    gradcam: dict[str, Any],
) -> dict[str, str]:
    figures: dict[str, str] = {}
    hist_counts = {f"grouped {s}": c for s, c in grouped.counts.items()}
    if random is not None:
        hist_counts |= {f"random {s}": c for s, c in random.counts.items() if s == "test"}
    plots.class_histogram(hist_counts, classes, run_dir / FIGURES["histogram"], "Images per class")
    figures["histogram"] = FIGURES["histogram"]
    for key, evaluation in grouped.evaluations.items():
        name = "grouped" if key == "test" else "latest"
        plots.confusion(
            evaluation.metrics["confusion_matrix"],
            classes,
            run_dir / FIGURES[f"confusion_{name}"],
            HELD_OUT_TITLES[key],
        )
        plots.reliability_diagram(
            evaluation.calibration["bins"],
            run_dir / FIGURES[f"reliability_{name}"],
            HELD_OUT_TITLES[key],
            evaluation.calibration["ece"],
        )
        figures[f"confusion_{name}"] = FIGURES[f"confusion_{name}"]
        figures[f"reliability_{name}"] = FIGURES[f"reliability_{name}"]
        after = ((grouped.statements or {}).get("held_out") or {}).get(key, {}).get("calibration_after")
        if after is not None:
            calibrated = f"reliability_{name}_calibrated"
            plots.reliability_diagram(
                after["bins"],
                run_dir / FIGURES[calibrated],
                f"{HELD_OUT_TITLES[key]}, calibrated",
                after["ece"],
            )
            figures[calibrated] = FIGURES[calibrated]
    _learning_curves(grouped, "curves_grouped", "grouped split", run_dir, figures)
    if random is not None:
        plots.confusion(
            random.test_metrics["confusion_matrix"],
            classes,
            run_dir / FIGURES["confusion_random"],
            "random split",
        )
        figures["confusion_random"] = FIGURES["confusion_random"]
        _learning_curves(random, "curves_random", "random split", run_dir, figures)
    if len(gradcam["captions"]):
        plots.gradcam_grid(
            gradcam["images"],
            gradcam["heatmaps"],
            gradcam["captions"],
            run_dir / FIGURES["gradcam"],
            "Grad-CAM (grouped split, test)",
        )
        figures["gradcam"] = FIGURES["gradcam"]
    return figures


def _learning_curves(
    outcome: SplitOutcome, name: str, title: str, run_dir: Path, figures: dict[str, str]
) -> None:
    """The split's learning curves, when it has epochs to draw (the frozen-features recipe has none)."""
    if outcome.fit.phases:
        plots.learning_curves(outcome.fit.to_json(), run_dir / FIGURES[name], title, outcome.selected_epochs)
        figures[name] = FIGURES[name]


def write_report(
    run_dir: Path,
    *,
    version: str,
    manifest: Manifest,
    manifest_hash: str,
    grouped: SplitOutcome,
    random: SplitOutcome | None,
    gradcam: dict[str, Any],
    options: TrainOptions,
    reload_max_abs_diff: float,
    straddling_groups: int = 0,
    commit: str | None = None,
) -> dict[str, Any]:
    """Write report.json, report.md and the figures into `run_dir`; return the report dict."""
    classes = manifest.classes
    figures = _figures(run_dir, classes, grouped, random, gradcam)
    report: dict[str, Any] = {
        "version": version,
        "gradcam_skipped": gradcam.get("skipped"),
        "manifest_hash": manifest_hash,
        "classes": classes,
        "dataset": {
            "items": len(manifest.items),
            "groups": len({i.group for i in manifest.items}),
            "duplicates_dropped": len(manifest.dropped_duplicates),
            "skipped": len(manifest.skipped),
            "straddling_groups": straddling_groups,
            "grouping": manifest.grouping,
        },
        "config": {
            "image_size": options.image_size,
            "backbone": options.backbone,
            "weights": options.weights,
            "recipe": options.recipe,
            "seed": options.seed,
            "fractions": manifest.fractions,
            "refit": options.refit,
            "fit": {k: getattr(options.fit, k) for k in options.fit.__dataclass_fields__ if k != "verbose"},
            "augment": None
            if options.augment is None
            else {k: getattr(options.augment, k) for k in options.augment.__dataclass_fields__},
        },
        "environment": {
            "keras": keras.__version__,
            "backend": keras.backend.backend(),
            "machine": platform.machine(),
            "python": platform.python_version(),
            "commit": commit if commit is not None else git_commit(),
            "libraries": library_versions(),
        },
        "grouped": _outcome_json(grouped),
        "random": _outcome_json(random) if random is not None else None,
        "artifact_reload_max_abs_diff": reload_max_abs_diff,
        "figures": figures,
    }
    (run_dir / "report.json").write_text(json.dumps(report, indent=1) + "\n")
    (run_dir / "report.md").write_text(_markdown(report))
    return report
