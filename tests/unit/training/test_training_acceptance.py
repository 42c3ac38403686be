"""The acceptance set: DICOM files labelled by a CSV in `kidneyct label --csv`'s format, and the first-model floor."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from classifier_kit import write_instance

from classifier.model.preprocess import KIDNEY_WINDOW
from common.vocabulary import CLASS_NAMES
from training.acceptance import (
    FLOOR_ACCURACY,
    AcceptanceError,
    first_model_shortfalls,
    read_acceptance_set,
    run_acceptance,
)


class _Answers:
    """A stand-in model answering one class for every slice (the reading, not the model, is under test)."""

    def __init__(self, label: str) -> None:
        self.column = CLASS_NAMES.index(label)

    def predict(self, x: np.ndarray, **_: object) -> np.ndarray:
        out = np.zeros((len(x), len(CLASS_NAMES)))
        out[:, self.column] = 1.0
        return out


def test_dicom_files_are_labelled_by_study_or_instance_and_the_rest_left_out(tmp_path: Path) -> None:
    """A study labelled Tumor (two files), an instance labelled Normal, an unlabelled file left out."""
    folder = tmp_path / "dicom"
    tumor = [write_instance(folder, study="1.2.3.1") for _ in range(2)]
    normal = write_instance(folder, study="1.2.3.2")
    write_instance(folder, study="1.2.3.3")  # not in the CSV
    labels = tmp_path / "labels.csv"
    labels.write_text(
        "study_instance_uid,sop_instance_uid,label\n"
        f"{tumor[0].study_instance_uid},,Tumor\n"
        f",{normal.sop_instance_uid},normal\n"
    )
    frames, found = read_acceptance_set(folder, CLASS_NAMES, KIDNEY_WINDOW, labels)
    assert sorted(found) == ["Normal", "Tumor", "Tumor"] and len(frames) == 3
    result = run_acceptance(
        _Answers("Tumor"),
        image_size=32,
        window=KIDNEY_WINDOW,
        classes=CLASS_NAMES,
        root=folder,
        labels_csv=labels,
    )
    assert result["slices"] == 3 and result["accuracy"] == pytest.approx(2 / 3)
    assert result["recall"]["Tumor"] == 1.0 and result["recall"]["Normal"] == 0.0
    assert result["confusion_matrix"][CLASS_NAMES.index("Normal")][CLASS_NAMES.index("Tumor")] == 1


def test_a_folder_nothing_labels_is_refused(tmp_path: Path) -> None:
    """DICOM files the CSV does not name: refused in words, not scored on nothing."""
    folder = tmp_path / "dicom"
    write_instance(folder, study="1.2.3.9")
    labels = tmp_path / "labels.csv"
    labels.write_text("study_instance_uid,label\n1.2.3.1,Tumor\n")
    with pytest.raises(AcceptanceError, match="no DICOM file"):
        read_acceptance_set(folder, CLASS_NAMES, KIDNEY_WINDOW, labels)
    with pytest.raises(AcceptanceError, match="acceptance-labels"):
        read_acceptance_set(folder, CLASS_NAMES, KIDNEY_WINDOW, None)  # no class folders, no CSV


def test_the_first_model_floor() -> None:
    """Accuracy at the floor with every class above chance passes; one class at chance does not."""
    good = {
        "classes": list(CLASS_NAMES),
        "accuracy": FLOOR_ACCURACY,
        "recall": dict.fromkeys(CLASS_NAMES, 0.8),
        "support": dict.fromkeys(CLASS_NAMES, 10),
    }
    assert first_model_shortfalls(good) == []
    at_chance = {**good, "recall": {**good["recall"], "Stone": 0.25}}
    assert first_model_shortfalls(at_chance) == ["Stone recall 0.250 is not above chance (0.25)"]
