"""Exact duplicates and near-duplicate groups, so that no split can be won by matching neighbours.

Every item gets a fingerprint of its decoded pixels. Items are joined (union-find) when they have
the same pixels, share a grouping key (DICOM: the study), have perceptual hashes within a small
Hamming distance, or are consecutive IDs of the Kaggle layout (`Cyst- (41).jpg`, `Cyst- (42).jpg`)
whose thumbnails correlate highly. Exact duplicates are joined *before* one copy is dropped, so a
chain that ran through a dropped copy still reaches the kept one.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import imagehash
import numpy as np
from PIL import Image

THUMB_SIZE = 64
# `Cyst- (41).jpg` -> ("Cyst", 41): the Kaggle kidney-CT naming, where consecutive IDs are neighbouring slices.
KAGGLE_ID = re.compile(r"^(?P<prefix>.+?)-\s*\((?P<n>\d+)\)\.[A-Za-z0-9]+$")


@dataclass(frozen=True, slots=True)
class Fingerprint:
    pixel_sha256: str  # of the decoded pixels and their shape: equal pixels, equal hash
    phash: np.ndarray  # 64 bools (8x8 DCT perceptual hash)
    thumb: np.ndarray  # THUMB_SIZE^2 float32, zero mean and unit norm: a dot product is Pearson's r


@dataclass(frozen=True, slots=True)
class GroupingParams:
    """Measured on the 5,995-slice real sample (docs/training.md): consecutive slices of one scan correlate
    at r >= 0.99, IDs missing inside a Normal scan leave gaps of up to 20 that still correlate >= 0.92,
    and scan boundaries fall to 0.2-0.8; pHash at 4 bits joined Cyst with Tumor scans (6 mixed groups),
    at 2 bits none."""

    phash_max_distance: int = 2
    chain_min_correlation: float = 0.85
    chain_max_gap: int = 20


@dataclass(frozen=True, slots=True)
class Grouping:
    group_of: list[int]  # per item: a group id (the smallest member index)
    keep: list[bool]  # per item: False for the later copies of exact duplicates
    duplicate_of: dict[int, int]  # dropped item index -> kept item index
    links: dict[str, int]  # how many joins each rule made


def fingerprint(gray: np.ndarray) -> Fingerprint:
    """The fingerprint of a 2-D grayscale uint8 image."""
    if gray.ndim != 2:
        raise ValueError(f"expected a 2-D grayscale image, got shape {gray.shape}")
    pixels = np.ascontiguousarray(gray, dtype=np.uint8)
    digest = hashlib.sha256(f"{pixels.shape}".encode() + pixels.tobytes()).hexdigest()
    image = Image.fromarray(pixels, mode="L")
    phash = np.asarray(imagehash.phash(image).hash, dtype=bool).reshape(-1)
    thumb = np.asarray(image.resize((THUMB_SIZE, THUMB_SIZE), Image.Resampling.BILINEAR), dtype=np.float32)
    thumb = thumb.reshape(-1) - thumb.mean()
    norm = float(np.linalg.norm(thumb))
    thumb = thumb / norm if norm > 0 else thumb  # a flat image correlates with nothing
    return Fingerprint(pixel_sha256=digest, phash=phash, thumb=thumb)


def kaggle_id(file_name: str) -> tuple[str, int] | None:
    """(prefix, N) of a `<Class>- (N).jpg` file name, or None for any other name."""
    match = KAGGLE_ID.match(file_name)
    return (match["prefix"], int(match["n"])) if match else None


class _UnionFind:
    def __init__(self, n: int) -> None:
        self.parent = list(range(n))

    def find(self, i: int) -> int:
        while self.parent[i] != i:
            self.parent[i] = self.parent[self.parent[i]]
            i = self.parent[i]
        return i

    def union(self, a: int, b: int) -> bool:
        ra, rb = self.find(a), self.find(b)
        if ra == rb:
            return False
        self.parent[max(ra, rb)] = min(ra, rb)
        return True


def phash_pairs(
    hashes: np.ndarray,
    max_distance: int,
    chunk: int = 1024,
    progress: Callable[[int, int], None] | None = None,
) -> list[tuple[int, int]]:
    """Index pairs (i < j) whose hashes differ in at most `max_distance` bits; chunked to bound memory.

    `progress(done, total)` is told the images compared so far (the all-pairs step is the slow one)."""
    bits = hashes.astype(np.float32)
    ones = bits.sum(axis=1)
    pairs: list[tuple[int, int]] = []
    for start in range(0, len(bits), chunk):
        block = bits[start : start + chunk]
        # Hamming distance of 0/1 vectors: |a| + |b| - 2 a.b
        distance = ones[start : start + chunk, None] + ones[None, :] - 2.0 * (block @ bits.T)
        rows, cols = np.nonzero(distance <= max_distance + 0.5)
        pairs.extend(
            (start + r, c) for r, c in zip(rows.tolist(), cols.tolist(), strict=True) if start + r < c
        )
        if progress is not None:
            progress(min(start + chunk, len(bits)), len(bits))
    return pairs


def chain_pairs(
    ids: Sequence[tuple[str, str, int] | None], thumbs: np.ndarray, min_correlation: float, max_gap: int
) -> list[tuple[int, int]]:
    """Pairs of neighbouring IDs (same folder and prefix, IDs at most `max_gap` apart) that correlate highly."""
    by_series: dict[tuple[str, str], list[tuple[int, int]]] = {}
    for index, item_id in enumerate(ids):
        if item_id is not None:
            folder, prefix, n = item_id
            by_series.setdefault((folder, prefix), []).append((n, index))
    pairs: list[tuple[int, int]] = []
    for members in by_series.values():
        members.sort()
        for (n1, i1), (n2, i2) in zip(members, members[1:], strict=False):
            if n2 - n1 <= max_gap and float(thumbs[i1] @ thumbs[i2]) >= min_correlation:
                pairs.append((min(i1, i2), max(i1, i2)))
    return pairs


def group_items(
    fingerprints: Sequence[Fingerprint],
    *,
    group_keys: Sequence[str | None],
    ids: Sequence[tuple[str, str, int] | None],
    params: GroupingParams,
    progress: Callable[[int, int], None] | None = None,
) -> Grouping:
    """Join near-duplicates into groups and mark the later copies of exact duplicates for dropping.

    `group_keys` forces items into one group (e.g. every slice of one DICOM study); `ids` are the
    (folder, prefix, N) of Kaggle-style file names, or None.
    """
    n = len(fingerprints)
    if not (len(group_keys) == len(ids) == n):
        raise ValueError("fingerprints, group_keys and ids must have the same length")
    uf = _UnionFind(n)
    links = {"exact": 0, "key": 0, "phash": 0, "chain": 0}

    first_with_pixels: dict[str, int] = {}
    duplicate_of: dict[int, int] = {}
    for i, fp in enumerate(fingerprints):
        kept = first_with_pixels.setdefault(fp.pixel_sha256, i)
        if kept != i:
            duplicate_of[i] = kept
            links["exact"] += uf.union(kept, i)

    first_with_key: dict[str, int] = {}
    for i, key in enumerate(group_keys):
        if key is not None:
            links["key"] += uf.union(first_with_key.setdefault(key, i), i)

    if n:
        hashes = np.stack([fp.phash for fp in fingerprints])
        thumbs = np.stack([fp.thumb for fp in fingerprints])
        for a, b in phash_pairs(hashes, params.phash_max_distance, progress=progress):
            links["phash"] += uf.union(a, b)
        for a, b in chain_pairs(ids, thumbs, params.chain_min_correlation, params.chain_max_gap):
            links["chain"] += uf.union(a, b)

    return Grouping(
        group_of=[uf.find(i) for i in range(n)],
        keep=[i not in duplicate_of for i in range(n)],
        duplicate_of=duplicate_of,
        links=links,
    )
