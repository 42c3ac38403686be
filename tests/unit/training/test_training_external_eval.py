"""`kidneyct evaluate`'s folder evaluation: per-slice probabilities, and a warning when scan IDs are unreadable."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
from PIL import Image
from structlog.testing import capture_logs

from classifier.model.preprocess import KIDNEY_WINDOW
from classifier.study.rule import StudyRule
from common.vocabulary import CLASS_NAMES
from training.external_eval import evaluate_folder, markdown


class BrightnessModel:
    """A stand-in classifier: the brighter the slice, the later the class (what the folder below encodes)."""

    def predict(self, inputs: np.ndarray, batch_size: int = 32, verbose: int = 0) -> np.ndarray:
        level = inputs.reshape(len(inputs), -1).mean(axis=1) / 255.0
        logits = -((level[:, None] - np.linspace(0.2, 0.8, len(CLASS_NAMES))[None, :]) ** 2) * 50
        e = np.exp(logits - logits.max(axis=1, keepdims=True))
        return e / e.sum(axis=1, keepdims=True)


def _folder(root: Path, name: str) -> Path:
    """Three slices per class; `name` formats each file's name from (class, number)."""
    rng = np.random.default_rng(0)
    for c, cls in enumerate(CLASS_NAMES):
        (root / cls).mkdir(parents=True)
        for n in range(1, 4):
            img = np.clip(rng.normal(50 + 50 * c, 5, (32, 32)), 0, 255).astype(np.uint8)
            Image.fromarray(img).save(root / cls / name.format(cls=cls, n=n))
    return root


def _evaluate(root: Path, per_slice: Path | None = None) -> dict:  # type: ignore[type-arg]
    return evaluate_folder(
        BrightnessModel(),
        image_size=32,
        window=KIDNEY_WINDOW,
        classes=CLASS_NAMES,
        root=root,
        rule=StudyRule(2, 0.5),
        per_slice_csv=per_slice,
    )


def test_per_slice_file_holds_every_slices_probabilities(tmp_path: Path) -> None:
    """One row per slice with its label, group, predicted class and probabilities summing to 1."""
    out = tmp_path / "out" / "slices.csv"
    result = _evaluate(_folder(tmp_path / "data", "{cls}- ({n}).png"), out)
    rows = list(csv.DictReader(out.open()))
    assert len(rows) == result["slices"] == 12
    assert list(rows[0]) == ["path", "frame", "label", "group", "predicted", *(f"p_{c}" for c in CLASS_NAMES)]
    for row in rows:
        p = [float(row[f"p_{c}"]) for c in CLASS_NAMES]
        assert abs(sum(p) - 1) < 1e-4
        assert row["predicted"] == CLASS_NAMES[int(np.argmax(p))]
    assert sorted({r["label"] for r in rows}) == sorted(CLASS_NAMES)


def test_named_scans_give_no_warning(tmp_path: Path) -> None:
    """Files named `<Class>- (N)` are grouped by scan-ID chains: no warning, none in the report."""
    with capture_logs() as logs:
        result = _evaluate(_folder(tmp_path, "{cls}- ({n}).png"))
    assert result["grouping_warning"] is None
    assert not [e for e in logs if e["event"] == "evaluation_grouped_by_similarity"]
    assert "Warning" not in markdown(result, "v1")


def test_unreadable_scan_ids_are_warned_about(tmp_path: Path) -> None:
    """Other names: the result, the report and a log line (counts only, no file names) say that grouping fell back to similarity."""
    with capture_logs() as logs:
        result = _evaluate(_folder(tmp_path, "slice_{cls}_{n}.png"))
    assert result["grouping_warning"].startswith("12 of 12 images have no scan ID")
    (event,) = [e for e in logs if e["event"] == "evaluation_grouped_by_similarity"]
    assert event["images_without_scan_id"] == 12 and event["log_level"] == "warning"
    assert "slice_" not in str(event)
    assert "**Warning**: 12 of 12 images" in markdown(result, "v1")
