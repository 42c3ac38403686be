"""The manifest's hash pins the data: any change to an item's split, label or pixels changes it."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from training.manifest import Manifest, ManifestItem


def _manifest(**change: str) -> Manifest:
    item = ManifestItem(
        key="image:/d/Cyst/Cyst- (1).jpg",
        source="image",
        path="/d/Cyst/Cyst- (1).jpg",
        frame=None,
        label="Cyst",
        file_sha256="a" * 64,
        pixel_sha256="b" * 64,
        group="g1",
        split="train",
        random_split="test",
    )
    return Manifest(
        classes=["Cyst", "Normal", "Stone", "Tumor"],
        seed=1,
        fractions={"train": 0.7, "val": 0.15, "test": 0.15},
        grouping={"phash_max_distance": 4},
        items=[dataclasses.replace(item, **change)],
    )


def test_hash_is_stable_and_sensitive() -> None:
    """The same content hashes the same; a changed split, label or pixel hash does not."""
    base = _manifest().hash()
    assert _manifest().hash() == base
    for change in ({"split": "test"}, {"label": "Tumor"}, {"pixel_sha256": "c" * 64}):
        assert _manifest(**change).hash() != base


def test_write_read_round_trip(tmp_path: Path) -> None:
    """A written manifest reads back equal, and `write` returns the hash it recorded."""
    path = tmp_path / "manifest.json"
    digest = _manifest().write(path)
    assert json.loads(path.read_text())["hash"] == digest
    assert Manifest.read(path) == _manifest()


def test_a_tampered_manifest_is_refused(tmp_path: Path) -> None:
    """Editing a manifest after it was written makes reading it fail."""
    path = tmp_path / "manifest.json"
    _manifest().write(path)
    data = json.loads(path.read_text())
    data["items"][0]["split"] = "test"
    path.write_text(json.dumps(data))
    with pytest.raises(ValueError, match="hash mismatch"):
        Manifest.read(path)
