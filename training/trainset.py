"""The training set: labelled archive instances and imported images, decoded, de-duplicated, grouped and split.

Every item goes through the classifier's own preprocessing (`classifier.model.preprocess`), so the trainer
sees exactly the tensors a worker would. An item whose file is gone or cannot be decoded is left out
and listed in the manifest with its reason, never silently dropped.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import structlog
from sqlalchemy.orm import Session

from classifier.model.preprocess import (
    Window,
    dicom_to_frames,
    image_file_to_frames,
    read_dataset,
    to_model_input,
)
from classifier.worker.errors import DecodeError
from common.files import file_uri_path
from storage.archive.reader import ArchiveReader
from storage.db.datasets import list_dataset_images
from storage.db.labels import labelled_instances
from training.dedup import Fingerprint, GroupingParams, fingerprint, group_items, kaggle_id
from training.manifest import Manifest, ManifestItem
from training.split import SplitFractions, grouped_split, latest_block, random_split

log = structlog.get_logger(__name__)


@dataclass(frozen=True, slots=True)
class SourceItem:
    key: str
    source: str  # "dicom" or "image"
    path: str
    frame: int | None
    label: str
    file_sha256: str
    group_key: str | None  # DICOM: the study, so all its slices stay together
    kaggle_id: tuple[str, str, int] | None  # (folder, prefix, N) of `<Class>- (N).jpg`


@dataclass
class TrainingSet:
    manifest: Manifest
    images: np.ndarray  # [N, S, S, 1] float32 in [0, 255], aligned with manifest.items

    def indices(self, split: str, *, random: bool = False) -> np.ndarray:
        column = [(i.random_split if random else i.split) == split for i in self.manifest.items]
        return np.flatnonzero(np.asarray(column, dtype=bool))

    def label_indices(self) -> np.ndarray:
        classes = self.manifest.classes
        return np.asarray([classes.index(i.label) for i in self.manifest.items], dtype=np.int64)


def _kaggle_number(item: SourceItem) -> int | None:
    """N of `<Class>- (N).jpg`, or None for a name outside that pattern."""
    return item.kaggle_id[2] if item.kaggle_id else None


def path_from_uri(uri: str) -> str:
    """A local path from an archive URI (`file:///...`) or a plain path."""
    return file_uri_path(uri) or uri


def collect_sources(session: Session) -> list[SourceItem]:
    """Every labelled item the database knows, one per DICOM frame or imported image, ordered by key."""
    items: list[SourceItem] = []
    for inst in labelled_instances(session):
        for frame in range(inst.number_of_frames):
            items.append(
                SourceItem(
                    key=f"dicom:{inst.sop_instance_uid}#{frame}",
                    source="dicom",
                    path=path_from_uri(inst.archive_uri),
                    frame=frame,
                    label=inst.label,
                    file_sha256=inst.sha256,
                    group_key=f"study:{inst.study_instance_uid}",
                    kaggle_id=None,
                )
            )
    for image in list_dataset_images(session):
        path = Path(image.path)
        parsed = kaggle_id(path.name)
        items.append(
            SourceItem(
                key=f"image:{image.path}",
                source="image",
                path=image.path,
                frame=None,
                label=image.label,
                file_sha256=image.sha256,
                group_key=None,
                kaggle_id=(str(path.parent), *parsed) if parsed else None,
            )
        )
    return sorted(items, key=lambda i: i.key)


def load_gray(
    item: SourceItem | ManifestItem, window: Window, reader: ArchiveReader | None = None
) -> np.ndarray:
    """The item's 8-bit grayscale frame, through the classifier's preprocessing.

    DICOM items are archive URIs: with a `reader` they are opened wherever the archive keeps them (a
    local folder or an S3 bucket), as the workers open them; without one, only local paths work.
    """
    if item.source == "dicom":
        if reader is None:
            frames = dicom_to_frames(item.path, window)
        else:
            with reader.open(item.path) as f:
                frames = dicom_to_frames(read_dataset(f), window)
        frame = item.frame or 0
        if frame >= len(frames):
            raise DecodeError(f"frame {frame} asked of an instance with {len(frames)} frame(s)")
        return frames[frame]
    return image_file_to_frames(item.path)[0]


def _load_one(
    item: SourceItem, window: Window, image_size: int, reader: ArchiveReader | None
) -> tuple[np.ndarray, Fingerprint] | str:
    try:
        gray = load_gray(item, window, reader)
    except OSError as exc:  # gone; an object store that is down raises ArchiveUnavailable and stops the run
        return f"file missing: {exc}"
    except DecodeError as exc:
        return f"cannot decode: {exc}"
    return to_model_input(gray, image_size)[0, :, :, :1], fingerprint(gray)


def load_model_inputs(
    items: Sequence[ManifestItem],
    *,
    image_size: int,
    window: Window,
    threads: int = 4,
    reader: ArchiveReader | None = None,
) -> np.ndarray:
    """[N, S, S, 3] model inputs of manifest items (for evaluating any model version on the same set)."""

    def one(item: ManifestItem) -> np.ndarray:
        return to_model_input(load_gray(item, window, reader), image_size)[0]

    with ThreadPoolExecutor(max_workers=threads) as pool:
        return (
            np.stack(list(pool.map(one, items)))
            if items
            else np.zeros((0, image_size, image_size, 3), np.float32)
        )


def build_training_set(
    sources: Sequence[SourceItem],
    *,
    classes: Sequence[str],
    image_size: int,
    window: Window,
    grouping: GroupingParams,
    fractions: SplitFractions,
    seed: int,
    latest_fraction: float = 0.0,
    threads: int = 4,
    reader: ArchiveReader | None = None,
    progress: Callable[[int, int], None] | None = None,
    grouping_progress: Callable[[int, int], None] | None = None,
) -> TrainingSet:
    """Decode every source once, drop exact duplicates, group near-duplicates and split both ways.

    With `latest_fraction`, the top fraction of each class's Kaggle IDs (whole scans) is held out as
    the `latest` split, and train/val/test are drawn from the rest: the honest proxy for scans that
    arrive after everything the model learnt from.
    """
    loaded: list[tuple[np.ndarray, Fingerprint] | str] = []
    with ThreadPoolExecutor(max_workers=threads) as pool:
        for done, result in enumerate(
            pool.map(lambda s: _load_one(s, window, image_size, reader), sources), start=1
        ):
            loaded.append(result)
            if progress is not None:
                progress(done, len(sources))
    skipped = [
        {"key": s.key, "reason": r} for s, r in zip(sources, loaded, strict=True) if isinstance(r, str)
    ]
    for entry in skipped:
        log.warning("training_item_skipped", key=entry["key"], reason=entry["reason"])
    ok = [(s, r) for s, r in zip(sources, loaded, strict=True) if not isinstance(r, str)]
    good_sources = [s for s, _ in ok]
    grouped = group_items(
        [r[1] for _, r in ok],
        group_keys=[s.group_key for s in good_sources],
        ids=[s.kaggle_id for s in good_sources],
        params=grouping,
        progress=grouping_progress,
    )
    kept = [i for i, keep in enumerate(grouped.keep) if keep]
    labels = [good_sources[i].label for i in kept]
    groups = [good_sources[grouped.group_of[i]].key for i in kept]  # a group is named by its first item
    numbers = [_kaggle_number(good_sources[i]) for i in kept]
    latest = latest_block(labels, numbers, groups, fraction=latest_fraction)
    older = [i for i, is_latest in enumerate(latest) if not is_latest]
    older_splits = grouped_split(
        [labels[i] for i in older], [groups[i] for i in older], fractions=fractions, seed=seed
    )
    splits = ["latest"] * len(kept)
    for i, split in zip(older, older_splits, strict=True):
        splits[i] = split
    randoms = random_split(labels, fractions=fractions, seed=seed)
    items = [
        ManifestItem(
            key=good_sources[i].key,
            source=good_sources[i].source,  # type: ignore[arg-type]
            path=good_sources[i].path,
            frame=good_sources[i].frame,
            label=good_sources[i].label,
            file_sha256=good_sources[i].file_sha256,
            pixel_sha256=ok[i][1][1].pixel_sha256,  # type: ignore[index]
            group=group,
            split=split,
            random_split=rnd,
        )
        for i, group, split, rnd in zip(kept, groups, splits, randoms, strict=True)
    ]
    dropped = [
        {"key": good_sources[d].key, "duplicate_of": good_sources[k].key}
        for d, k in sorted(grouped.duplicate_of.items())
    ]
    log.info(
        "training_set_built",
        items=len(items),
        groups=len(set(groups)),
        duplicates_dropped=len(dropped),
        skipped=len(skipped),
        links=grouped.links,
    )
    manifest = Manifest(
        classes=list(classes),
        seed=seed,
        fractions={
            "train": fractions.train,
            "val": fractions.val,
            "test": fractions.test,
            **({"latest": latest_fraction} if latest_fraction else {}),
        },
        grouping={
            "phash_max_distance": grouping.phash_max_distance,
            "chain_min_correlation": grouping.chain_min_correlation,
            "chain_max_gap": grouping.chain_max_gap,
            "links": grouped.links,
            "image_size": image_size,
            "window": window.as_dict(),
        },
        items=items,
        dropped_duplicates=dropped,
        skipped=skipped,
    )
    images = (
        np.stack([ok[i][1][0] for i in kept])  # type: ignore[index]
        if kept
        else np.zeros((0, image_size, image_size, 1), np.float32)
    )
    return TrainingSet(manifest=manifest, images=images)
