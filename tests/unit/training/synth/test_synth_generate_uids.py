"""A seeded synthetic set can repeat itself exactly (the demo's split follows the UIDs, so its model
depends on them); without `uid_entropy` every set gets new UIDs."""

from __future__ import annotations

from pathlib import Path

import pydicom

from training.synth.generate import generate


def _uids(out: Path, **kwargs: object) -> list[tuple[str, str, str]]:
    rows = generate(out, studies=2, slices=2, classes=["Normal", "Stone"], seed=3, size=32, **kwargs)  # type: ignore[arg-type]
    found = []
    for row in rows:
        ds = pydicom.dcmread(out / row.path, stop_before_pixels=True)
        found.append((ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID))
    return found


def test_the_same_entropy_gives_the_same_uids(tmp_path: Path) -> None:
    first = _uids(tmp_path / "a", uid_entropy="demo:3")
    assert first == _uids(tmp_path / "b", uid_entropy="demo:3")
    assert len({sop for _, _, sop in first}) == len(first)  # still one UID per instance
    assert first != _uids(tmp_path / "c", uid_entropy="demo:4")


def test_without_entropy_every_set_is_new(tmp_path: Path) -> None:
    first, second = _uids(tmp_path / "a"), _uids(tmp_path / "b")
    assert not {sop for _, _, sop in first} & {sop for _, _, sop in second}


def test_an_enhanced_set_repeats_too(tmp_path: Path) -> None:
    def enhanced(out: Path) -> tuple[str, str]:
        rows = generate(
            out, studies=1, slices=3, classes=["Cyst"], seed=1, size=32, enhanced=True, uid_entropy="x"
        )
        ds = pydicom.dcmread(out / rows[0].path, stop_before_pixels=True)
        return ds.SOPInstanceUID, ds.SeriesInstanceUID

    assert enhanced(tmp_path / "a") == enhanced(tmp_path / "b")
