"""The training-set manifest: every item, its class, content hashes, group and split; its hash goes into the model card.

The hash covers everything that decides what a model learned from and was judged on (items, their
pixels' hashes, labels, groups, splits, the seed and the grouping parameters), in canonical JSON, so
two runs with the same manifest hash trained and evaluated on exactly the same data.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

MANIFEST_FORMAT = 1
ItemSource = Literal["dicom", "image"]


@dataclass(frozen=True, slots=True)
class ManifestItem:
    key: str  # "image:<path>" or "dicom:<SOP Instance UID>#<frame>"
    source: ItemSource
    path: str
    frame: int | None
    label: str
    file_sha256: str
    pixel_sha256: str
    group: str
    split: str  # grouped split: train, val or test
    random_split: str  # image-level split, only for the comparison figure


@dataclass(frozen=True, slots=True)
class Manifest:
    classes: list[str]
    seed: int
    fractions: dict[str, float]
    grouping: dict[str, Any]
    items: list[ManifestItem]
    dropped_duplicates: list[dict[str, str]] = field(default_factory=list)
    skipped: list[dict[str, str]] = field(default_factory=list)  # unreadable items and why
    format: int = MANIFEST_FORMAT

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    def canonical_bytes(self) -> bytes:
        return json.dumps(self.to_json(), sort_keys=True, separators=(",", ":")).encode()

    def hash(self) -> str:
        return hashlib.sha256(self.canonical_bytes()).hexdigest()

    def write(self, path: Path) -> str:
        """Write the manifest as JSON (with its hash) and return the hash."""
        digest = self.hash()
        path.write_text(json.dumps({"hash": digest, **self.to_json()}, indent=1, sort_keys=True) + "\n")
        return digest

    @classmethod
    def read(cls, path: Path) -> Manifest:
        """Read a manifest and refuse one whose content no longer matches its recorded hash."""
        data = json.loads(path.read_text())
        recorded = data.pop("hash", None)
        items = [ManifestItem(**item) for item in data.pop("items")]
        manifest = cls(items=items, **data)
        if recorded is not None and recorded != manifest.hash():
            raise ValueError(f"manifest {path} was changed after it was written (hash mismatch)")
        return manifest
