"""`kidneyct models compare`: agreement matrix, per-class changes and accuracy against labels, from the
rows of `storage.db.comparison` (one per label under A, label under B, ground truth, with a count)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from common.vocabulary import CLASS_NAMES
from storage.db.comparison import ComparisonRow


def summarize(rows: Sequence[ComparisonRow], *, version_a: str, version_b: str, level: str) -> dict[str, Any]:
    """Everything the command prints, as plain data (also its `--json`)."""
    matrix = {a: dict.fromkeys(CLASS_NAMES, 0) for a in CLASS_NAMES}
    for r in rows:
        matrix[r.label_a][r.label_b] += r.n
    n = sum(r.n for r in rows)
    agree = sum(matrix[c][c] for c in CLASS_NAMES)
    changes = {
        c: {
            "a": sum(matrix[c].values()),
            "b": sum(matrix[x][c] for x in CLASS_NAMES),
            "kept": matrix[c][c],
            "gained": sum(matrix[x][c] for x in CLASS_NAMES if x != c),
            "lost": sum(matrix[c][x] for x in CLASS_NAMES if x != c),
        }
        for c in CLASS_NAMES
    }
    labelled = [r for r in rows if r.truth is not None]
    n_labelled = sum(r.n for r in labelled)
    accuracy = None
    if n_labelled:
        right_a = sum(r.n for r in labelled if r.label_a == r.truth)
        right_b = sum(r.n for r in labelled if r.label_b == r.truth)
        accuracy = {
            "n_labelled": n_labelled,
            version_a: right_a / n_labelled,
            version_b: right_b / n_labelled,
            "fixed_by_b": sum(r.n for r in labelled if r.label_a != r.truth and r.label_b == r.truth),
            "broken_by_b": sum(r.n for r in labelled if r.label_a == r.truth and r.label_b != r.truth),
        }
    return {
        "level": level,
        "version_a": version_a,
        "version_b": version_b,
        "n": n,
        "agreement": agree / n if n else None,
        "kappa": _kappa(matrix, n),
        "matrix": matrix,
        "per_class": changes,
        "accuracy": accuracy,
    }


def _kappa(matrix: dict[str, dict[str, int]], n: int) -> float | None:
    """Cohen's kappa: agreement beyond what the two label distributions give by chance."""
    if not n:
        return None
    observed = sum(matrix[c][c] for c in CLASS_NAMES) / n
    expected = sum(sum(matrix[c].values()) * sum(matrix[x][c] for x in CLASS_NAMES) for c in CLASS_NAMES) / (
        n * n
    )
    return None if expected == 1.0 else (observed - expected) / (1.0 - expected)


def render(summary: dict[str, Any]) -> str:
    """The human-readable report."""
    a, b, what = summary["version_a"], summary["version_b"], summary["level"]
    unit = "studies" if what == "study" else "instance frames"
    lines = [f"{summary['n']} {unit} classified by both {a} (A) and {b} (B)"]
    if not summary["n"]:
        return lines[0] + "\n"
    lines.append(
        f"agreement {summary['agreement']:.3f}"
        + ("" if summary["kappa"] is None else f", Cohen's kappa {summary['kappa']:.3f}")
    )
    width = max(len(c) for c in CLASS_NAMES) + 2
    lines += [
        "",
        "rows: A's label, columns: B's label",
        "A \\ B".ljust(width) + "".join(c.rjust(width) for c in CLASS_NAMES),
    ]
    for c in CLASS_NAMES:
        lines.append(c.ljust(width) + "".join(str(summary["matrix"][c][x]).rjust(width) for x in CLASS_NAMES))
    lines += ["", f"{'class':<{width}}{'A':>6}{'B':>6}{'kept':>6}{'gained':>8}{'lost':>6}"]
    for c, v in summary["per_class"].items():
        lines.append(f"{c:<{width}}{v['a']:>6}{v['b']:>6}{v['kept']:>6}{v['gained']:>8}{v['lost']:>6}")
    acc = summary["accuracy"]
    lines.append("")
    if acc is None:
        lines.append("no labels for these: no accuracy (label them with `kidneyct label`)")
    else:
        lines.append(
            f"against {acc['n_labelled']} labelled: accuracy A {acc[a]:.3f}, B {acc[b]:.3f}; "
            f"B fixed {acc['fixed_by_b']}, broke {acc['broken_by_b']}"
        )
    return "\n".join(lines) + "\n"
