"""The study rule's (k, t) chosen on validation studies, measured on test studies (`training.study_tuning`)."""

from __future__ import annotations

import numpy as np

from training.study_tuning import study_truth, tune_and_measure

CLASSES = ["Cyst", "Normal", "Stone", "Tumor"]


def _study(label: str, n: int, stone_p: float, stone_slices: int) -> tuple[np.ndarray, list[str]]:
    """n slices; `stone_slices` of them give Stone `stone_p`, the rest lean Normal."""
    probs = np.tile([0.05, 0.85, 0.05, 0.05], (n, 1))
    probs[:stone_slices] = [0.0, 1 - stone_p, stone_p, 0.0]
    return probs, [label] * n


def _set(studies: list[tuple[str, int, float, int]]) -> tuple[np.ndarray, list[str | None], list[str]]:
    parts = [_study(*s) for s in studies]
    probs = np.concatenate([p for p, _ in parts])
    labels = [label for _, ls in parts for label in ls]
    study_of = [f"s{i}" for i, (p, _) in enumerate(parts) for _ in range(len(p))]
    return probs, study_of, labels


def test_k_and_t_are_chosen_on_validation_and_measured_on_test() -> None:
    """Normal studies have one stray Stone slice at 0.65; Stone studies have 3 at 0.95: k=2 or t>0.65 separates
    them, k=1 t=0.5 does not; the test studies, unseen by the choice, come out right."""
    val = _set(
        [("Normal", 10, 0.65, 1), ("Normal", 10, 0.65, 1), ("Stone", 10, 0.95, 3), ("Stone", 10, 0.95, 3)]
    )
    test = _set([("Normal", 8, 0.65, 1), ("Stone", 8, 0.95, 3), ("Stone", 8, 0.95, 2)])
    result = tune_and_measure(val, test, CLASSES)
    assert result is not None and result["val_accuracy"] == 1.0 and result["val_studies"] == 4
    assert result["k"] == 1 and result["t"] >= 0.7  # the smallest k that works, then the highest t
    assert (result["test_right"], result["test_studies"]) == (3, 3)


def test_no_studies_no_rule() -> None:
    """Image-only data (no DICOM study) gives None rather than a made-up figure."""
    probs = np.tile([0.25] * 4, (3, 1))
    assert (
        tune_and_measure((probs, [None] * 3, ["Cyst"] * 3), (probs, [None] * 3, ["Cyst"] * 3), CLASSES)
        is None
    )


def test_a_study_with_a_few_stone_slices_is_a_stone_study() -> None:
    """A stone shows on 3 of 12 slices: the study's truth is Stone (the most urgent class any slice
    shows), not the Normal majority, so the tuned rule keeps finding stones instead of learning to
    call every stone study Normal."""

    def stone_study(n: int, stone_slices: int) -> tuple[np.ndarray, list[str]]:
        probs, _ = _study("Stone", n, 0.95, stone_slices)
        return probs, ["Stone"] * stone_slices + ["Normal"] * (n - stone_slices)

    parts = [stone_study(12, 3), stone_study(12, 2), _study("Normal", 12, 0.6, 1)]
    probs = np.concatenate([p for p, _ in parts])
    labels = [label for _, ls in parts for label in ls]
    study_of = [f"s{i}" for i, (p, _) in enumerate(parts) for _ in range(len(p))]
    result = tune_and_measure((probs, study_of, labels), (probs, study_of, labels), CLASSES)
    assert result is not None and result["val_accuracy"] == 1.0 and result["k"] <= 2
    assert study_truth(["Normal"] * 9 + ["Stone"] * 3) == "Stone"
    assert study_truth(["Cyst"] * 5 + ["Tumor"]) == "Tumor"  # the most urgent wins, as in the rule
    assert study_truth(["Normal", "Normal"]) == "Normal"
