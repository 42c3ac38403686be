"""`kidneyct evaluate`: a model version (or artifact) on a labelled folder it has never seen.

The folder holds one sub-folder per class (`<root>/<Class>/...`, any depth below), with JPG/PNG images
or DICOM files. Every file goes through exactly the serving preprocessing (`classifier.model.preprocess`:
DICOM decoded, modality-LUT'd and windowed with the model card's window; images read as 8-bit grey;
both padded square and resized to the card's input size), so the numbers are what the workers would
produce. Intervals resample groups (DICOM: the study; images: the trainer's near-duplicate groups),
and DICOM studies also get the study rule's (k, t) label, as the service writes it.
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
import structlog

from classifier.model.calibration import apply_temperature
from classifier.model.preprocess import Window, dicom_to_frames, image_file_to_frames, to_model_input
from classifier.study.evidence import CURRENT
from classifier.study.rule import StudyRule, study_label
from classifier.worker.errors import DecodeError
from training.bootstrap import metric_intervals
from training.dedup import GroupingParams, fingerprint, group_items, kaggle_id
from training.evaluate import calibration, classification_metrics, normal_vs_abnormal
from training.report_statements import folder_statements
from training.statements import held_out_statements

log = structlog.get_logger(__name__)


class EvaluationInputError(Exception):
    """The folder cannot be evaluated; the message says why."""


@dataclass(frozen=True, slots=True)
class Slice:
    path: Path
    frame: int
    label: str
    study: str | None  # DICOM StudyInstanceUID
    gray: np.ndarray


def _class_folders(root: Path, classes: Sequence[str]) -> dict[str, Path]:
    by_lower = {c.lower(): c for c in classes}
    found = {
        by_lower[p.name.lower()]: p
        for p in sorted(root.iterdir())
        if p.is_dir() and p.name.lower() in by_lower
    }
    if not found:
        raise EvaluationInputError(f"{root} has no class folders ({', '.join(classes)})")
    return found


def require_files(root: Path) -> None:
    """Refuse a folder with no file at all under it, before a model is loaded to read them."""
    if not any(p.is_file() and not p.name.startswith(".") for p in root.rglob("*")):
        raise EvaluationInputError(f"{root} holds no file: expected {root}/<Class>/<images or DICOM>")


def _read(path: Path, label: str, window: Window) -> list[Slice]:
    """The file's slices: every frame of a DICOM instance, or one image."""
    if pydicom.misc.is_dicom(str(path)):
        ds = pydicom.dcmread(str(path))
        frames = dicom_to_frames(ds, window)
        study = str(ds.get("StudyInstanceUID", "") or "") or None
        return [Slice(path, i, label, study, f) for i, f in enumerate(frames)]
    return [Slice(path, 0, label, None, image_file_to_frames(path)[0])]


def read_labelled_folder(
    root: Path, classes: Sequence[str], window: Window
) -> tuple[list[Slice], list[dict[str, str]]]:
    """Every readable slice under `root`'s class folders, and the files skipped with their reason."""
    slices: list[Slice] = []
    skipped: list[dict[str, str]] = []
    for label, folder in _class_folders(root, classes).items():
        for path in sorted(p for p in folder.rglob("*") if p.is_file() and not p.name.startswith(".")):
            try:
                slices.extend(_read(path, label, window))
            except (DecodeError, pydicom.errors.InvalidDicomError, ValueError, OSError) as exc:
                skipped.append({"path": str(path), "reason": f"{type(exc).__name__}: {exc}"})
    if not slices:
        raise EvaluationInputError(f"no readable image or DICOM file under {root}")
    return slices, skipped


def _scan_ids(slices: Sequence[Slice]) -> list[tuple[str, str, int] | None]:
    """(folder, prefix, N) of each image named `<Class>- (N).jpg`; None for DICOM and other names."""
    return [
        (str(s.path.parent), *parsed) if s.study is None and (parsed := kaggle_id(s.path.name)) else None
        for s in slices
    ]


def images_without_scan_id(slices: Sequence[Slice]) -> tuple[int, int]:
    """(images whose names carry no scan ID, images): DICOM slices are grouped by study instead."""
    images = [s for s in slices if s.study is None]
    return sum(1 for i in _scan_ids(images) if i is None), len(images)


def grouping_warning(slices: Sequence[Slice]) -> str | None:
    """Say so when images carry no scan ID in their names: they are grouped by similarity alone.

    Chains of consecutive IDs are what keeps a scan's slices together; without them only
    near-identical pictures (perceptual hash) are joined, so one scan can count as many groups and
    the intervals come out narrower than the data supports.
    """
    unnamed, images = images_without_scan_id(slices)
    if not unnamed:
        return None
    return (
        f"{unnamed} of {images} images have no scan ID in their file name (`<Class>- (N).jpg`): they "
        "are grouped by image similarity alone (perceptual hash), which can split a scan into many groups "
        "and make the intervals too narrow; name the files by scan order, or evaluate DICOM (grouped by study)"
    )


def slice_groups(slices: Sequence[Slice]) -> list[str]:
    """DICOM: the study; images: the trainer's near-duplicate groups (chains of IDs, perceptual hashes)."""
    fps = [fingerprint(s.gray) for s in slices]
    ids = _scan_ids(slices)
    grouping = group_items(
        fps, group_keys=[s.study and f"study:{s.study}" for s in slices], ids=ids, params=GroupingParams()
    )
    return [f"{slices[g].path}#{slices[g].frame}" for g in grouping.group_of]


def study_accuracy(
    slices: Sequence[Slice], probabilities: np.ndarray, classes: Sequence[str], rule: StudyRule
) -> dict[str, Any] | None:
    """The study rule's label per DICOM study against the study's (majority) folder label."""
    studies: dict[str, list[int]] = {}
    for i, s in enumerate(slices):
        if s.study is not None:
            studies.setdefault(s.study, []).append(i)
    if not studies:
        return None
    correct = 0
    for members in studies.values():
        labels = [slices[i].label for i in members]
        truth = max(set(labels), key=labels.count)
        confident = {
            c: int((probabilities[members, k] >= rule.min_probability).sum()) for k, c in enumerate(classes)
        }
        correct += study_label(confident, rule) == truth
    return {
        "studies": len(studies),
        "correct": correct,
        "accuracy": correct / len(studies),
        "k": rule.min_slices,
        "t": rule.min_probability,
    }


def evaluate_folder(
    model: Any,
    *,
    image_size: int,
    window: Window,
    classes: Sequence[str],
    root: Path,
    rule: StudyRule,
    batch_size: int = 32,
    seed: int = 0,
    per_slice_csv: Path | None = None,
    temperature: float = 1.0,
    min_evidence: float = 0.0,
    evidence_definition: str = CURRENT,
) -> dict[str, Any]:
    """Every metric of `model` on the labelled folder, as a JSON-ready dict. The probabilities are
    calibrated with `temperature` (the card's) as the service does; `statements` gives ECE before and
    after, slice- and scan-level figures side by side and the risk-coverage curves (`training.statements`);
    with `per_slice_csv`, every slice's (calibrated) probabilities are written there too."""
    slices, skipped = read_labelled_folder(root, classes, window)
    inputs = to_model_input([s.gray for s in slices], image_size)
    raw = np.asarray(model.predict(inputs, batch_size=batch_size, verbose=0), dtype=np.float64)
    probabilities = apply_temperature(raw, temperature)
    truth = np.asarray([list(classes).index(s.label) for s in slices])
    groups = slice_groups(slices)
    warning = grouping_warning(slices)
    if warning is not None:  # counts only: a hospital's file names can carry patient data
        unnamed, images = images_without_scan_id(slices)
        log.warning("evaluation_grouped_by_similarity", images_without_scan_id=unnamed, images=images)
    if per_slice_csv is not None:
        write_per_slice(per_slice_csv, slices, probabilities, groups, classes)
    log.info("evaluation_done", slices=len(slices), skipped=len(skipped), groups=len(set(groups)))
    return {
        "root": str(root),
        "slices": len(slices),
        "groups": len(set(groups)),
        "grouping_warning": warning,
        "skipped": skipped,
        "metrics": classification_metrics(truth, probabilities, classes),
        "intervals": metric_intervals(truth, probabilities, groups, classes, seed=seed),
        "calibration": calibration(truth, probabilities),
        "normal_vs_abnormal": normal_vs_abnormal(truth, probabilities, classes),
        "study_level": study_accuracy(slices, probabilities, classes, rule),
        "statements": {
            "temperature": temperature,
            "held_out": {
                "folder": held_out_statements(
                    raw,
                    truth,
                    groups,
                    classes,
                    temperature=temperature,
                    rule=rule,
                    min_evidence=min_evidence,
                    evidence_definition=evidence_definition,
                    seed=seed,
                )
            },
        },
    }


def write_per_slice(
    path: Path,
    slices: Sequence[Slice],
    probabilities: np.ndarray,
    groups: Sequence[str],
    classes: Sequence[str],
) -> None:
    """One CSV row per slice: file, frame, true label, group, predicted class and every class's probability."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as out:
        writer = csv.writer(out)
        writer.writerow(["path", "frame", "label", "group", "predicted", *(f"p_{c}" for c in classes)])
        for s, p, g in zip(slices, probabilities, groups, strict=True):
            predicted = classes[int(np.argmax(p))]
            writer.writerow([str(s.path), s.frame, s.label, g, predicted, *(f"{float(v):.6f}" for v in p)])


def markdown(result: dict[str, Any], model_name: str) -> str:
    m, ci = result["metrics"], result["intervals"]
    lines = [
        f"# Evaluation of {model_name} on {result['root']}",
        "",
        f"{result['slices']} slices in {result['groups']} groups; {len(result['skipped'])} files skipped.",
        "",
        *([f"**Warning**: {result['grouping_warning']}.", ""] if result.get("grouping_warning") else []),
        f"- macro-F1 {m['macro_f1']:.3f} [{ci['macro_f1'][0]:.3f}, {ci['macro_f1'][1]:.3f}] "
        "(95 % group-bootstrap interval)",
        f"- accuracy {m['accuracy']:.3f} [{ci['accuracy'][0]:.3f}, {ci['accuracy'][1]:.3f}]",
        f"- ECE {result['calibration']['ece']:.3f}, mean confidence {result['calibration']['mean_confidence']:.3f}",
    ]
    nva = result["normal_vs_abnormal"]
    if nva:
        lines.append(
            f"- abnormal vs Normal: sensitivity {nva['sensitivity']:.3f}, specificity {nva['specificity']:.3f}"
        )
    study = result["study_level"]
    if study:
        lines.append(
            f"- study rule (k={study['k']}, t={study['t']}): {study['correct']}/{study['studies']} studies right"
        )
    lines += ["", *folder_statements(result["statements"])]
    lines += ["", "| class | precision | recall | F1 [95 % interval] | support |", "|---|---|---|---|---|"]
    for cls, v in m["per_class"].items():
        f1_ci = ci["per_class"][cls]["f1"]
        lines.append(
            f"| {cls} | {v['precision']:.3f} | {v['recall']:.3f} | {v['f1']:.3f} [{f1_ci[0]:.2f}, {f1_ci[1]:.2f}] "
            f"| {v['support']} |"
        )
    return "\n".join(lines) + "\n"
