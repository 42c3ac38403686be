"""The run's report: `report.json` (every number), `report.md` (readable) and the PNG figures beside them."""

from __future__ import annotations

import json
import platform
from pathlib import Path
from typing import TYPE_CHECKING, Any

import keras

from training import plots
from training.manifest import Manifest

if TYPE_CHECKING:
    from training.run import SplitOutcome, TrainOptions

FIGURES = {
    "histogram": "class_histogram.png",
    "confusion_grouped": "confusion_grouped.png",
    "confusion_random": "confusion_random.png",
    "curves_grouped": "learning_curves_grouped.png",
    "curves_random": "learning_curves_random.png",
    "gradcam": "gradcam.png",
}


def _outcome_json(outcome: SplitOutcome) -> dict[str, Any]:
    return {
        "counts": outcome.counts,
        "test": outcome.test_metrics,
        "val": outcome.val_metrics,
        "nearest_neighbour_test": outcome.nearest_neighbour_metrics,
        "training": outcome.fit.to_json(),
        "from_scratch": outcome.from_scratch,
    }


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def _markdown(report: dict[str, Any]) -> str:
    g, r = report["grouped"], report.get("random")
    columns = [("grouped split", g)] + ([("random image-level split", r)] if r else [])
    lines = [
        f"# Training report: {report['version']}",
        "",
        f"Manifest `{report['manifest_hash']}`: {report['dataset']['items']} images in "
        f"{report['dataset']['groups']} near-duplicate groups; {report['dataset']['duplicates_dropped']} exact "
        f"duplicates dropped, {report['dataset']['skipped']} unreadable items skipped. Image size "
        f"{report['config']['image_size']} px, initial weights `{report['config']['weights']}`"
        + (
            " (from scratch: phase 1 trains every layer, BatchNorm included; phase 2 skipped)"
            if g.get("from_scratch")
            else ""
        )
        + f", seed "
        f"{report['config']['seed']}, Keras {report['environment']['keras']} on {report['environment']['backend']}.",
        "",
        "The grouped split keeps every group of near-duplicates (a DICOM study; a chain of consecutive, highly "
        "correlated slice IDs; a perceptual-hash cluster) on one side. The random split assigns single images, as "
        "most published results on the Kaggle kidney-CT data do: neighbouring slices of one scan then sit on both "
        "sides, so it measures near-duplicate matching rather than generalisation. The 1-nearest-neighbour row "
        "(raw 32x32 pixels, no learning) shows how much of a score such matching alone explains.",
        "",
        "## Test metrics",
        "",
        "| metric | " + " | ".join(name for name, _ in columns) + " |",
        "|---|" + "---|" * len(columns),
    ]
    for key, label in (
        ("n", "test images"),
        ("accuracy", "accuracy"),
        ("macro_f1", "macro-F1"),
        ("macro_roc_auc", "macro ROC AUC (one-vs-rest)"),
    ):
        cells = [str(o["test"][key]) if key == "n" else _fmt(o["test"][key]) for _, o in columns]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    nn_cells = [_fmt(o["nearest_neighbour_test"]["accuracy"]) for _, o in columns]
    lines.append("| 1-NN raw-pixel accuracy (no learning) | " + " | ".join(nn_cells) + " |")
    for phase in ("phase1", "phase2"):
        if phase in g["training"]:
            cells = [
                f"{o['training'][phase]['images_per_second']:.1f}" if phase in o["training"] else "n/a"
                for _, o in columns
            ]
            lines.append(f"| training images/s, {phase} | " + " | ".join(cells) + " |")
    lines += ["", "## Per class (test)", ""]
    for name, o in columns:
        lines += [
            f"**{name}**",
            "",
            "| class | precision | recall | F1 | ROC AUC | support |",
            "|---|---|---|---|---|---|",
        ]
        for cls, m in o["test"]["per_class"].items():
            lines.append(
                f"| {cls} | {_fmt(m['precision'])} | {_fmt(m['recall'])} | {_fmt(m['f1'])} | {_fmt(m['roc_auc'])} | {m['support']} |"
            )
        lines.append("")
    lines += ["## Figures", ""]
    for key, title in (
        ("histogram", "Images per class and split"),
        ("confusion_grouped", "Confusion matrix, grouped split"),
        ("confusion_random", "Confusion matrix, random split"),
        ("curves_grouped", "Learning curves, grouped split (both phases)"),
        ("curves_random", "Learning curves, random split (both phases)"),
        ("gradcam", "Grad-CAM, test images of the grouped split"),
    ):
        if key in report["figures"]:
            lines += [f"### {title}", "", f"![{title}]({report['figures'][key]})", ""]
        elif key == "gradcam" and report.get("gradcam_skipped"):
            lines += [f"### {title}", "", f"Not drawn: {report['gradcam_skipped']}.", ""]
    return "\n".join(lines) + "\n"


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
) -> dict[str, Any]:
    """Write report.json, report.md and the figures into `run_dir`; return the report dict."""
    classes = manifest.classes
    figures: dict[str, str] = {}
    hist_counts = {f"grouped {s}": c for s, c in grouped.counts.items()}
    if random is not None:
        hist_counts |= {f"random {s}": c for s, c in random.counts.items() if s == "test"}
    plots.class_histogram(hist_counts, classes, run_dir / FIGURES["histogram"], "Images per class")
    figures["histogram"] = FIGURES["histogram"]
    for outcome in [grouped] + ([random] if random is not None else []):
        key = outcome.name
        plots.confusion(
            outcome.test_metrics["confusion_matrix"],
            classes,
            run_dir / FIGURES[f"confusion_{key}"],
            f"{key} split (test)",
        )
        plots.learning_curves(outcome.fit.to_json(), run_dir / FIGURES[f"curves_{key}"], f"{key} split")
        figures[f"confusion_{key}"] = FIGURES[f"confusion_{key}"]
        figures[f"curves_{key}"] = FIGURES[f"curves_{key}"]
    if len(gradcam["captions"]):
        plots.gradcam_grid(
            gradcam["images"],
            gradcam["heatmaps"],
            gradcam["captions"],
            run_dir / FIGURES["gradcam"],
            "Grad-CAM (grouped split, test)",
        )
        figures["gradcam"] = FIGURES["gradcam"]

    report: dict[str, Any] = {
        "version": version,
        "gradcam_skipped": gradcam.get("skipped"),
        "manifest_hash": manifest_hash,
        "dataset": {
            "items": len(manifest.items),
            "groups": len({i.group for i in manifest.items}),
            "duplicates_dropped": len(manifest.dropped_duplicates),
            "skipped": len(manifest.skipped),
            "grouping": manifest.grouping,
        },
        "config": {
            "image_size": options.image_size,
            "weights": options.weights,
            "seed": options.seed,
            "fractions": manifest.fractions,
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
        },
        "grouped": _outcome_json(grouped),
        "random": _outcome_json(random) if random is not None else None,
        "artifact_reload_max_abs_diff": reload_max_abs_diff,
        "figures": figures,
    }
    (run_dir / "report.json").write_text(json.dumps(report, indent=1) + "\n")
    (run_dir / "report.md").write_text(_markdown(report))
    return report
