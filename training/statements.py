"""What training decides about the statements the served model makes, and how well they hold.

On the validation scans, as predicted by the selection run (trained on train only; the served model
is refitted on train + val, so its own validation predictions would be training predictions): the
temperature (`training.calibrate`), the study rule (k, t), and the evidence a scan needs to be
answered for a target accuracy among answered scans. The served model inherits them. On the held-out sets:
ECE before and after calibration, slice- and scan-level figures side by side, and the risk-coverage
curve (coverage, and accuracy among answered, at several thresholds), each with group-bootstrap
intervals (resampling scans).

A scan is a group of the manifest (for DICOM, the study): its label is `training.study_tuning.study_truth`
of its slices' labels (the most urgent abnormal class shown on any slice, else the majority), its answer the study rule's on the calibrated probabilities, its evidence that of the worker
(`classifier.study.evidence`): by default the definition a new card gets (`CURRENT`), so the threshold
chosen on validation means what the served model will compute; `kidneyct evaluate` passes its card's.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from classifier.model.calibration import apply_temperature
from classifier.study.evidence import CURRENT
from classifier.study.policy import StudyPolicy, decide
from classifier.study.rule import StudyRule
from training.bootstrap import group_draw_weights, interval, metric_intervals
from training.evaluate import calibration, classification_metrics
from training.study_tuning import study_truth

RISK_COVERAGE_THRESHOLDS: tuple[float, ...] = (0.0, 0.5, 0.6, 0.7, 0.8, 0.9)
N_BOOT = 1000


@dataclass(frozen=True)
class Scans:
    """Per scan: its true class index, the rule's answer (class index) and the answer's evidence."""

    ids: list[str]
    truth: np.ndarray
    answer: np.ndarray
    evidence: np.ndarray
    definition: str = CURRENT  # what `evidence` is (`classifier.study.evidence`)


def scans_of(
    probabilities: np.ndarray,
    groups: Sequence[str],
    labels: Sequence[int] | np.ndarray,
    classes: Sequence[str],
    rule: StudyRule,
    evidence_definition: str = CURRENT,
) -> Scans:
    """Each group's true label (`study_truth`), the rule's answer on the (calibrated) probabilities and its
    evidence under `evidence_definition` (`classifier.study.evidence`)."""
    members: dict[str, list[int]] = {}
    for i, g in enumerate(groups):
        members.setdefault(str(g), []).append(i)
    policy = StudyPolicy(rule=rule, rule_source="training", evidence=evidence_definition)
    y = np.asarray(labels, dtype=np.int64)
    truth, answer, evidence = [], [], []
    for idx in members.values():
        truth.append(list(classes).index(study_truth([classes[int(k)] for k in y[idx]])))
        p = probabilities[idx]
        d = decide(
            slice_probabilities={c: p[:, k].tolist() for k, c in enumerate(classes)},
            n_shifted=0,
            policy=policy,
        )
        answer.append(list(classes).index(d.label))
        evidence.append(d.evidence)
    return Scans(
        list(members),
        np.asarray(truth),
        np.asarray(answer),
        np.asarray(evidence, dtype=np.float64),
        definition=evidence_definition,
    )


def choose_min_evidence(scans: Scans, target_accuracy: float) -> dict[str, Any]:
    """The lowest evidence threshold whose answered scans reach `target_accuracy` (most coverage);
    when none does, 1.0 + epsilon (every scan indeterminate), said so in `reached`. `evidence` names the
    definition the threshold was chosen on: the card carries it, and the worker computes the same."""
    right = scans.answer == scans.truth
    for threshold in np.unique(np.concatenate([[0.0], scans.evidence])):
        answered = scans.evidence >= threshold
        if answered.any() and right[answered].mean() >= target_accuracy:
            return {
                "min_evidence": float(threshold),
                "evidence": scans.definition,
                "target_accuracy": target_accuracy,
                "reached": True,
                "val_coverage": float(answered.mean()),
                "val_accuracy_answered": float(right[answered].mean()),
                "val_scans": len(right),
            }
    return {
        "min_evidence": 1.000001,
        "evidence": scans.definition,
        "target_accuracy": target_accuracy,
        "reached": False,
        "val_coverage": 0.0,
        "val_accuracy_answered": None,
        "val_scans": len(right),
    }


def risk_coverage(
    confidence: np.ndarray,
    correct: np.ndarray,
    groups: Sequence[str],
    thresholds: Sequence[float],
    seed: int = 0,
) -> list[dict[str, Any]]:
    """At each threshold: coverage (share answered: confidence >= threshold) and accuracy among answered,
    with 95 % intervals resampling `groups` (scans)."""
    weights = group_draw_weights(list(groups), N_BOOT, seed) if len(groups) else np.zeros((N_BOOT, 0))
    rows = []
    for t in sorted(set(float(x) for x in thresholds)):
        answered = confidence >= t
        n_answered = weights @ answered
        cov = n_answered / np.maximum(weights.sum(axis=1), 1e-12)
        acc = np.divide(
            weights @ (answered & correct),
            n_answered,
            out=np.full(len(weights), np.nan),
            where=n_answered > 0,
        )
        rows.append(
            {
                "threshold": t,
                "coverage": float(answered.mean()) if len(answered) else 0.0,
                "coverage_interval": interval(cov) if len(answered) else None,
                "answered": int(answered.sum()),
                "accuracy_answered": float(correct[answered].mean()) if answered.any() else None,
                "accuracy_interval": interval(acc[~np.isnan(acc)])
                if answered.any() and (~np.isnan(acc)).any()
                else None,
            }
        )
    return rows


def held_out_statements(
    probabilities: np.ndarray,
    labels: np.ndarray,
    groups: Sequence[str],
    classes: Sequence[str],
    *,
    temperature: float,
    rule: StudyRule,
    min_evidence: float,
    seed: int = 0,
    evidence_definition: str = CURRENT,
) -> dict[str, Any]:
    """Calibration before/after, slice- and scan-level figures, and both risk-coverage curves on one
    held-out set; scans answered by their evidence under `evidence_definition` (the card's)."""
    calibrated = apply_temperature(probabilities, temperature)
    scans = scans_of(calibrated, groups, labels, classes, rule, evidence_definition)
    one_hot = np.eye(len(classes))[scans.answer] if len(scans.ids) else np.zeros((0, len(classes)))
    thresholds = sorted({*RISK_COVERAGE_THRESHOLDS, round(min_evidence, 6)} - {1.000001})
    slice_right = calibrated.argmax(axis=1) == labels
    answered = scans.evidence >= min_evidence
    scan_right = scans.answer == scans.truth
    return {
        "calibration_before": calibration(labels, probabilities),
        "calibration_after": calibration(labels, calibrated),
        "slice": {
            "metrics": classification_metrics(labels, calibrated, classes),
            "intervals": metric_intervals(labels, calibrated, groups, classes, seed=seed),
            "risk_coverage": risk_coverage(
                calibrated.max(axis=1), slice_right, groups, RISK_COVERAGE_THRESHOLDS, seed
            ),
        },
        "scan": {
            "metrics": classification_metrics(scans.truth, one_hot, classes),
            "intervals": metric_intervals(scans.truth, one_hot, scans.ids, classes, seed=seed),
            "risk_coverage": risk_coverage(scans.evidence, scan_right, scans.ids, thresholds, seed),
            "at_chosen_threshold": {
                "min_evidence": min_evidence,
                "evidence": evidence_definition,
                "scans": len(scans.ids),
                "answered": int(answered.sum()),
                "coverage": float(answered.mean()) if len(answered) else 0.0,
                "accuracy_answered": float(scan_right[answered].mean()) if answered.any() else None,
            },
        },
    }
