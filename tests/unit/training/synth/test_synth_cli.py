"""`kidneyct synth`: files, truth.csv, class cycling, montage and bad options."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pydicom
from click.testing import CliRunner

from kidneyct.cli import cli
from training.synth.truth import read_truth, study_truth


def test_synth_writes_studies_and_a_matching_truth_csv(tmp_path: Path) -> None:
    """Every truth row names a file with its UIDs; studies cycle through the classes given."""
    out = tmp_path / "synth"
    result = CliRunner().invoke(
        cli,
        [
            "synth",
            "--out",
            str(out),
            "--studies",
            "3",
            "--slices",
            "5",
            "--image-size",
            "32",
            "--classes",
            "Stone,Normal",
            "--seed",
            "2",
        ],
    )
    assert result.exit_code == 0, result.output
    rows = read_truth(out / "truth.csv")
    assert len(rows) == 15
    assert Counter(study_truth(rows).values()) == {"Stone": 2, "Normal": 1}
    for row in rows:
        ds = pydicom.dcmread(out / row.path, stop_before_pixels=True)
        assert ds.SOPInstanceUID == row.sop_instance_uid
        assert ds.StudyInstanceUID == row.study_instance_uid
        assert ds.SeriesInstanceUID == row.series_instance_uid
        assert ds.AccessionNumber == row.accession_number
        assert int(ds.InstanceNumber) == row.slice_index + 1 and row.frame == 0
        assert row.slice_class in {"Normal", row.study_class}
    stone_rows = [r for r in rows if r.study_class == "Stone"]
    assert any(r.slice_class == "Stone" for r in stone_rows)
    assert any(r.slice_class == "Normal" for r in stone_rows)


def test_synth_enhanced_writes_one_multiframe_instance_per_study(tmp_path: Path) -> None:
    """--enhanced: one file per study, a truth row per frame, frames numbered from 0."""
    out = tmp_path / "mf"
    result = CliRunner().invoke(
        cli,
        [
            "synth",
            "--out",
            str(out),
            "--studies",
            "1",
            "--slices",
            "4",
            "--image-size",
            "32",
            "--enhanced",
            "--transfer-syntax",
            "rle",
        ],
    )
    assert result.exit_code == 0, result.output
    rows = read_truth(out)
    assert [r.frame for r in rows] == [0, 1, 2, 3]
    assert len({r.sop_instance_uid for r in rows}) == 1
    ds = pydicom.dcmread(out / rows[0].path)
    assert int(ds.NumberOfFrames) == 4 and ds.pixel_array.shape == (4, 32, 32)


def test_synth_montage_is_a_png(tmp_path: Path) -> None:
    """--montage saves a PNG with a row per class."""
    png = tmp_path / "m.png"
    result = CliRunner().invoke(
        cli,
        [
            "synth",
            "--out",
            str(tmp_path / "o"),
            "--studies",
            "1",
            "--slices",
            "1",
            "--image-size",
            "16",
            "--montage",
            str(png),
        ],
    )
    assert result.exit_code == 0, result.output
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_the_montage_shows_lesions_at_the_studies_scale(tmp_path: Path) -> None:
    """--lesion-scale reaches the montage (the demo's examples show the lesions its model learned);
    Normal has no lesion, so only the abnormal rows change."""
    import numpy as np

    from training.synth.montage import montage
    from training.synth.phantom import KIDNEY

    size = 64
    plain = np.asarray(montage(seed=3, size=size, protocol=KIDNEY))
    large = np.asarray(montage(seed=3, size=size, protocol=KIDNEY, lesion_scale=1.8))
    # Each row below its class name and above the caption (which names the scale).
    rows = {
        c: slice(r * size + 20, (r + 1) * size - 16)
        for r, c in enumerate(["Cyst", "Normal", "Stone", "Tumor"])
    }
    assert np.array_equal(plain[rows["Normal"]], large[rows["Normal"]])
    assert not np.array_equal(plain[rows["Tumor"]], large[rows["Tumor"]])
    assert not np.array_equal(plain[rows["Cyst"]], large[rows["Cyst"]])


def test_synth_refuses_unknown_classes(tmp_path: Path) -> None:
    """An unknown class is a usage error that names the valid ones; nothing is written."""
    result = CliRunner().invoke(cli, ["synth", "--out", str(tmp_path / "x"), "--classes", "Cyst,Polyp"])
    assert result.exit_code == 2
    assert "Cyst, Normal, Stone, Tumor" in result.output
    assert not (tmp_path / "x").exists()
