"""Registering an image folder in the Kaggle kidney-CT layout (`<root>/{Cyst,Normal,Stone,Tumor}/*.jpg`).

Images are registered in place (absolute path, sha256, class, source), never copied. Class folders
are matched case-insensitively; other folders and non-image files are reported, not guessed at.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import structlog
from sqlalchemy.orm import Session

from common.files import sha256_file
from storage.db.datasets import register_dataset_image

log = structlog.get_logger(__name__)

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png"})


class ImportFolderError(ValueError):
    """The folder is not in the expected layout."""


@dataclass
class ImportSummary:
    created: int = 0
    updated: int = 0
    unchanged: int = 0
    per_class: dict[str, int] = field(default_factory=dict)
    ignored: list[str] = field(default_factory=list)


def find_images(root: Path, classes: Sequence[str]) -> tuple[list[tuple[Path, str]], list[str]]:
    """(image path, class) pairs under the class folders of `root`, sorted; and what was ignored."""
    if not root.is_dir():
        raise ImportFolderError(f"{root} is not a folder")
    by_name = {c.lower(): c for c in classes}
    found: list[tuple[Path, str]] = []
    ignored: list[str] = []
    for folder in sorted(p for p in root.iterdir() if p.is_dir()):
        cls = by_name.get(folder.name.lower())
        if cls is None:
            ignored.append(f"{folder.name}/ (not a class folder)")
            continue
        for path in sorted(folder.iterdir()):
            if path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES:
                found.append((path.resolve(), cls))
            elif path.is_file():
                ignored.append(f"{folder.name}/{path.name} (not a .jpg/.jpeg/.png image)")
    if not found:
        raise ImportFolderError(
            f"no images found under {root}; expected <root>/{{{','.join(classes)}}}/*.jpg (the Kaggle kidney-CT layout)"
        )
    return found, ignored


def import_folder(
    session: Session,
    *,
    root: Path,
    classes: Sequence[str],
    source: str,
    now: dt.datetime,
    progress: Callable[[int, int], None] | None = None,
) -> ImportSummary:
    """Register every image of `root` (caller commits); re-importing the same folder changes nothing."""
    images, ignored = find_images(root, classes)
    summary = ImportSummary(ignored=ignored)
    for done, (path, cls) in enumerate(images, start=1):
        outcome = register_dataset_image(
            session, path=str(path), sha256=sha256_file(path), label=cls, source=source, now=now
        )
        summary.created += outcome.created
        summary.updated += outcome.updated
        summary.unchanged += not (outcome.created or outcome.updated)
        summary.per_class[cls] = summary.per_class.get(cls, 0) + 1
        if progress is not None:
            progress(done, len(images))
    log.info(
        "dataset_folder_imported",
        source=source,
        created=summary.created,
        updated=summary.updated,
        unchanged=summary.unchanged,
        ignored=len(ignored),
    )
    return summary
