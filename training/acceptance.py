"""An acceptance test with the site's own labelled images (`kidneyct models import ... --acceptance FOLDER`).

The rebuilt model classifies the folder through exactly the serving preprocessing, and its accuracy,
per-class recall and confusion matrix go into the model card. It catches what parity cannot: a wrong
class order (parity compares the file with itself), a weights-only file whose pooling or activation
was stated wrongly, a model that never learnt this site's scans. The folder is either split into class
folders (`FOLDER/<Class>/*.jpg|png|dcm`, as `kidneyct evaluate` reads), or holds DICOM files anywhere
below it with a label CSV in `kidneyct label --csv`'s format (`label` and `sop_instance_uid` and/or
`study_instance_uid`).

A site's first model is promoted on this result alone, so it must clear a floor (`FLOOR_ACCURACY`)
and be better than chance on every class, each class with at least `MIN_PER_CLASS` slices.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
import structlog

from classifier.model.preprocess import Window, dicom_to_frames, to_model_input
from classifier.worker.errors import DecodeError
from training.evaluate import classification_metrics
from training.external_eval import EvaluationInputError, read_labelled_folder
from training.label_input import LabelInputError, read_csv

log = structlog.get_logger(__name__)

FLOOR_ACCURACY = 0.80  # a first model's acceptance accuracy must reach this (docs/training.md)
MIN_PER_CLASS = 5  # slices of each class an acceptance result needs to say anything about that class


class AcceptanceError(ValueError):
    """The acceptance folder cannot be read; the message says why."""


def read_dicom_with_labels(
    root: Path, labels_csv: Path, classes: Sequence[str], window: Window
) -> tuple[list[np.ndarray], list[str]]:
    """Every frame of the DICOM files under `root` that the CSV labels (by instance, else by study)."""
    try:
        rows = read_csv(labels_csv, default_source="acceptance", default_annotator=None)
    except LabelInputError as exc:
        raise AcceptanceError(str(exc)) from exc
    by_instance = {r.sop_instance_uid: r.label for r in rows if r.sop_instance_uid}
    by_study = {r.study_instance_uid: r.label for r in rows if r.study_instance_uid}
    frames: list[np.ndarray] = []
    labels: list[str] = []
    for path in sorted(p for p in root.rglob("*") if p.is_file() and pydicom.misc.is_dicom(str(p))):
        try:
            ds = pydicom.dcmread(str(path))
            label = by_instance.get(str(ds.SOPInstanceUID)) or by_study.get(str(ds.StudyInstanceUID))
            if label is None or label not in classes:
                continue
            for frame in dicom_to_frames(ds, window):
                frames.append(frame)
                labels.append(label)
        except (DecodeError, pydicom.errors.InvalidDicomError, ValueError, OSError, AttributeError) as exc:
            log.warning("acceptance_file_skipped", path=str(path), reason=type(exc).__name__)
    if not frames:
        raise AcceptanceError(f"no DICOM file under {root} is labelled by {labels_csv.name}")
    return frames, labels


def read_acceptance_set(
    root: Path, classes: Sequence[str], window: Window, labels_csv: Path | None
) -> tuple[list[np.ndarray], list[str]]:
    if labels_csv is not None:
        return read_dicom_with_labels(root, labels_csv, classes, window)
    try:
        slices, _ = read_labelled_folder(root, classes, window)
    except EvaluationInputError as exc:
        raise AcceptanceError(f"{exc}; or give --acceptance-labels CSV for a folder of DICOM files") from exc
    return [s.gray for s in slices], [s.label for s in slices]


def run_acceptance(
    model: Any,
    *,
    image_size: int,
    window: Window,
    classes: Sequence[str],
    root: Path,
    labels_csv: Path | None = None,
) -> dict[str, Any]:
    """The model on the site's labelled folder: accuracy, recall and support per class, confusion matrix."""
    frames, labels = read_acceptance_set(root, classes, window, labels_csv)
    probabilities = np.asarray(
        model.predict(to_model_input(frames, image_size), batch_size=32, verbose=0), dtype=np.float64
    )
    truth = np.asarray([list(classes).index(label) for label in labels])
    metrics = classification_metrics(truth, probabilities, classes)
    result = {
        "folder": str(root),
        "labels_csv": str(labels_csv) if labels_csv else None,
        "slices": len(labels),
        "accuracy": metrics["accuracy"],
        "macro_f1": metrics["macro_f1"],
        "recall": {c: metrics["per_class"][c]["recall"] for c in classes},
        "support": {c: metrics["per_class"][c]["support"] for c in classes},
        "confusion_matrix": metrics["confusion_matrix"],
        "classes": list(classes),
    }
    log.info("acceptance_measured", slices=result["slices"], accuracy=round(result["accuracy"], 4))
    return result


def first_model_shortfalls(acceptance: dict[str, Any]) -> list[str]:
    """Why an acceptance result does not admit a site's first model (empty: it does)."""
    classes = acceptance["classes"]
    chance = 1.0 / len(classes)
    problems = []
    if acceptance["accuracy"] < FLOOR_ACCURACY:
        problems.append(f"accuracy {acceptance['accuracy']:.3f} is below the floor {FLOOR_ACCURACY:.2f}")
    for name in classes:
        support, recall = acceptance["support"][name], acceptance["recall"][name]
        if support < MIN_PER_CLASS:
            problems.append(
                f"{name} has {support} slice(s) in the acceptance set; at least {MIN_PER_CLASS} needed"
            )
        elif recall <= chance:
            problems.append(f"{name} recall {recall:.3f} is not above chance ({chance:.2f})")
    return problems
