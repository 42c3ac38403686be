"""The study rule's (k, t) chosen on validation studies and measured on test studies.

The service labels a DICOM study abnormal when at least k slices give an abnormal class a probability
of at least t (`classifier.study.rule`). Which (k, t) suits a model depends on how its probabilities
are spread, so a training run picks them on the validation studies (by study accuracy, ties to the
smaller k and higher t: fewer false alarms) and reports the accuracy they give on the test studies,
which played no part in choosing them.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from classifier.study.rule import ABNORMAL_PRIORITY, StudyRule, study_label

K_GRID: tuple[int, ...] = (1, 2, 3, 5, 8)
T_GRID: tuple[float, ...] = (0.5, 0.6, 0.7, 0.8, 0.9)


def study_truth(names: Sequence[str]) -> str:
    """A study's true class read the way the study rule reads one: the most urgent abnormal class that
    any of its slices shows (Tumor > Stone > Cyst), else the majority (Normal for a DICOM study).

    Not the majority alone: a stone shows on 2-3 slices of a study, whose majority is then Normal, and
    a rule tuned against that truth learns to call every stone study Normal. For image folders, whose
    scans hold one class, both agree.
    """
    for name in ABNORMAL_PRIORITY:
        if name in names:
            return name
    return min(set(names), key=lambda c: (-list(names).count(c), c))


def _studies(study_of: Sequence[str | None], labels: Sequence[str]) -> dict[str, tuple[list[int], str]]:
    """study -> (member indices, true label: `study_truth`)."""
    members: dict[str, list[int]] = {}
    for i, study in enumerate(study_of):
        if study is not None:
            members.setdefault(study, []).append(i)
    out = {}
    for study, idx in members.items():
        out[study] = (idx, study_truth([labels[i] for i in idx]))
    return out


def study_accuracy(
    probabilities: np.ndarray,
    study_of: Sequence[str | None],
    labels: Sequence[str],
    classes: Sequence[str],
    rule: StudyRule,
) -> tuple[int, int]:
    """(studies right, studies) under `rule`."""
    studies = _studies(study_of, labels)
    right = 0
    for idx, truth in studies.values():
        confident = {
            c: int((probabilities[idx, k] >= rule.min_probability).sum()) for k, c in enumerate(classes)
        }
        right += study_label(confident, rule) == truth
    return right, len(studies)


def tune_and_measure(
    val: tuple[np.ndarray, Sequence[str | None], Sequence[str]],
    test: tuple[np.ndarray, Sequence[str | None], Sequence[str]],
    classes: Sequence[str],
) -> dict[str, Any] | None:
    """Choose (k, t) on the validation studies, measure it on the test studies; None without studies in both."""
    if not _studies(val[1], val[2]) or not _studies(test[1], test[2]):
        return None
    scored = []
    for k in K_GRID:
        for t in T_GRID:
            right, n = study_accuracy(val[0], val[1], val[2], classes, StudyRule(k, t))
            scored.append((right / n, -k, t, k))
    best_accuracy, _, t, k = max(scored)
    right, n = study_accuracy(test[0], test[1], test[2], classes, StudyRule(k, t))
    return {
        "k": k,
        "t": t,
        "val_accuracy": best_accuracy,
        "val_studies": len(_studies(val[1], val[2])),
        "test_right": right,
        "test_studies": n,
        "test_accuracy": right / n,
    }
