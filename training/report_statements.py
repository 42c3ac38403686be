"""The training report's section on the statements: calibration, slice vs scan level, risk-coverage, shift."""

from __future__ import annotations

from typing import Any

from classifier.study.evidence import LEGACY, describe_evidence

TITLES = {"test": "grouped test", "latest": "latest IDs", "folder": "this folder"}


def _f(value: float | None, digits: int = 3) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def _ci(point: float | None, bounds: list[float] | None) -> str:
    if point is None:
        return "n/a"
    return f"{point:.3f}" + (f" [{bounds[0]:.2f}, {bounds[1]:.2f}]" if bounds else "")


def _calibration(held: dict[str, Any]) -> list[str]:
    lines = ["| ECE (mean confidence) | before calibration | after |", "|---|---|---|"]
    for name, h in held.items():
        b, a = h["calibration_before"], h["calibration_after"]
        lines.append(
            f"| {TITLES.get(name, name)} | {_f(b['ece'])} ({_f(b['mean_confidence'])}) | "
            f"{_f(a['ece'])} ({_f(a['mean_confidence'])}) |"
        )
    return lines


def _levels(held: dict[str, Any]) -> list[str]:
    lines = [
        "| [95 % group-bootstrap interval] | "
        + " | ".join(f"{TITLES.get(n, n)} {lvl}" for n in held for lvl in ("slices", "scans"))
        + " |",
        "|---|" + "---|" * (2 * len(held)),
    ]
    for metric in ("accuracy", "macro_f1"):
        cells = [
            _ci(h[lvl]["metrics"][metric], h[lvl]["intervals"][metric])
            for h in held.values()
            for lvl in ("slice", "scan")
        ]
        lines.append(f"| {metric} | " + " | ".join(cells) + " |")
    lines.append(
        "| n | "
        + " | ".join(str(h[lvl]["metrics"]["n"]) for h in held.values() for lvl in ("slice", "scan"))
        + " |"
    )
    return lines


def _risk_coverage(name: str, level: str, rows: list[dict[str, Any]]) -> list[str]:
    what = "top calibrated probability" if level == "slice" else "scan evidence"
    lines = [
        f"**{TITLES.get(name, name)}, {level} level** (answered when the {what} >= threshold)",
        "",
        "| threshold | coverage [95 %] | answered | accuracy among answered [95 %] |",
        "|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['threshold']:.3f} | {_ci(r['coverage'], r['coverage_interval'])} | {r['answered']} | "
            f"{_ci(r['accuracy_answered'], r['accuracy_interval'])} |"
        )
    return lines + [""]


def statements_section(statements: dict[str, Any] | None) -> list[str]:
    """Markdown lines; a note when the run had no validation scans to choose them on."""
    if not statements or "held_out" not in statements:
        return [
            "## Statements",
            "",
            "No validation scans: no calibration, study rule or abstention threshold was chosen.",
            "",
        ]
    a = statements["abstention"]
    held = statements["held_out"]
    lines = [
        "## Statements: calibration, abstention, scans, shift",
        "",
        f"Temperature T = {statements['temperature']:.3f} (fitted on the validation scans' NLL; applied by the served model).",
        "",
        *_calibration(held),
        "",
        f"Abstention: a scan (study) is answered when its evidence, "
        f"{describe_evidence(a.get('evidence', LEGACY))}, reaches {a['min_evidence']:.3f}, chosen on {a['val_scans']} validation scans for accuracy {a['target_accuracy']:.2f} "
        f"among answered ({'reached: coverage ' + _f(a['val_coverage']) if a['reached'] else 'not reachable on validation: every scan is indeterminate'}).",
        "",
    ]
    for name, h in held.items():
        c = h["scan"]["at_chosen_threshold"]
        lines.append(
            f"- {TITLES.get(name, name)}: {c['answered']}/{c['scans']} scans answered (coverage {_f(c['coverage'])}), "
            f"accuracy among answered {_f(c['accuracy_answered'])}."
        )
    lines += [
        "",
        "### Slice level and scan level, side by side",
        "",
        *_levels(held),
        "",
        "### Risk-coverage",
        "",
    ]
    for name, h in held.items():
        for level in ("slice", "scan"):
            lines += _risk_coverage(name, level, h[level]["risk_coverage"])
    shift = statements.get("shift")
    if shift:
        lines += [
            "### Shift detection",
            "",
            f"Threshold {shift['threshold']:.2f} (the {shift['quantile']:.0%} quantile of the validation images' scores).",
            "",
            "| images | n | flagged |",
            "|---|---|---|",
            *[
                f"| {TITLES.get(k, k)} | {v['images']} | {v['flagged']:.3f} |"
                for k, v in shift["flagged_share"].items()
            ],
            "",
        ]
    return lines


def folder_statements(statements: dict[str, Any]) -> list[str]:
    """`kidneyct evaluate`'s lines: ECE before/after, slices vs scans (groups), risk-coverage at the chosen threshold."""
    (h,) = statements["held_out"].values()
    c = h["scan"]["at_chosen_threshold"]
    lines = [
        f"Calibrated with the model card's temperature T = {statements['temperature']:.3f}.",
        "",
        *_calibration(statements["held_out"]),
        "",
        *_levels(statements["held_out"]),
        "",
        f"At the card's evidence threshold {c['min_evidence']:.3f} ({describe_evidence(c.get('evidence', LEGACY))}): {c['answered']}/{c['scans']} scans answered "
        f"(coverage {_f(c['coverage'])}), accuracy among answered {_f(c['accuracy_answered'])}.",
        "",
    ]
    for level in ("slice", "scan"):
        lines += _risk_coverage("folder", level, h[level]["risk_coverage"])
    return lines
