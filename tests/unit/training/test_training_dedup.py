"""Exact duplicates are dropped, and near-duplicates (chains, perceptual hashes, study keys) are grouped."""

from __future__ import annotations

import numpy as np
import pytest

from training.dedup import GroupingParams, fingerprint, group_items, kaggle_id


def _scan(seed: int, n: int) -> list[np.ndarray]:
    """`n` neighbouring slices of one synthetic scan: a blob that drifts a pixel per slice."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:64, 0:64]
    cy, cx, r = rng.integers(20, 44), rng.integers(20, 44), rng.integers(6, 14)
    texture = rng.normal(0, 40, (64, 64))
    slices = []
    for i in range(n):
        blob = ((yy - cy - i) ** 2 + (xx - cx) ** 2 < r**2) * 120.0
        slices.append(np.clip(60 + blob + texture + rng.normal(0, 2, (64, 64)), 0, 255).astype(np.uint8))
    return slices


def test_kaggle_ids_are_parsed() -> None:
    """`Cyst- (41).jpg` is ("Cyst", 41); other names have no ID."""
    assert kaggle_id("Cyst- (41).jpg") == ("Cyst", 41)
    assert kaggle_id("Normal-(7).png") == ("Normal", 7)
    assert kaggle_id("slice_041.jpg") is None


def test_exact_duplicates_are_dropped_and_grouped_with_their_original() -> None:
    """The second copy of the same pixels is dropped; it shares the original's group."""
    a, b = _scan(1, 1)[0], _scan(2, 1)[0]
    fps = [fingerprint(a), fingerprint(b), fingerprint(a.copy())]
    g = group_items(fps, group_keys=[None] * 3, ids=[None] * 3, params=GroupingParams(phash_max_distance=-1))
    assert g.keep == [True, True, False]
    assert g.duplicate_of == {2: 0}
    assert g.group_of[2] == g.group_of[0] != g.group_of[1]


def test_consecutive_correlated_ids_form_one_chain_but_unrelated_neighbours_do_not() -> None:
    """IDs 1-4 of one scan chain together; ID 5, a different scan, starts its own group."""
    slices = _scan(3, 4) + _scan(4, 1)
    fps = [fingerprint(s) for s in slices]
    ids = [("Cyst", "Cyst", n) for n in range(1, 6)]
    params = GroupingParams(phash_max_distance=-1, chain_min_correlation=0.9)
    g = group_items(fps, group_keys=[None] * 5, ids=ids, params=params)
    assert len(set(g.group_of[:4])) == 1
    assert g.group_of[4] != g.group_of[0]
    assert g.links["chain"] == 3


def test_a_chain_runs_through_a_dropped_duplicate() -> None:
    """When ID 2 duplicates ID 9 and is dropped, IDs 1, 3 and 9 still end up in one group."""
    s = _scan(5, 3)
    other = _scan(6, 1)[0]
    images = [s[0], s[1], s[2], other, s[1].copy()]
    ids = [("d", "Stone", 1), ("d", "Stone", 2), ("d", "Stone", 3), ("d", "Stone", 8), ("d", "Stone", 9)]
    params = GroupingParams(phash_max_distance=-1, chain_min_correlation=0.9, chain_max_gap=1)
    g = group_items([fingerprint(i) for i in images], group_keys=[None] * 5, ids=ids, params=params)
    assert g.keep == [True, True, True, True, False]
    assert g.group_of[0] == g.group_of[2] == g.group_of[4]
    assert g.group_of[3] != g.group_of[0]


def test_perceptual_hash_groups_a_slightly_changed_copy_without_ids() -> None:
    """A copy with a little noise and no ID is grouped by its perceptual hash, not dropped."""
    a = _scan(7, 1)[0]
    noisy = np.clip(a.astype(int) + np.random.default_rng(0).integers(-2, 3, a.shape), 0, 255).astype(
        np.uint8
    )
    b = _scan(8, 1)[0]
    g = group_items(
        [fingerprint(a), fingerprint(noisy), fingerprint(b)],
        group_keys=[None] * 3,
        ids=[None] * 3,
        params=GroupingParams(phash_max_distance=4),
    )
    assert g.keep == [True, True, True]
    assert g.group_of[0] == g.group_of[1] != g.group_of[2]


def test_group_keys_join_slices_of_one_study() -> None:
    """Items with the same study key are one group even when their pixels differ."""
    images = [_scan(s, 1)[0] for s in (10, 11, 12)]
    g = group_items(
        [fingerprint(i) for i in images],
        group_keys=["study-1", "study-2", "study-1"],
        ids=[None] * 3,
        params=GroupingParams(phash_max_distance=-1),
    )
    assert g.group_of[0] == g.group_of[2] != g.group_of[1]


def test_fingerprint_refuses_colour_images() -> None:
    """Only 2-D grayscale arrays are fingerprinted."""
    with pytest.raises(ValueError, match="grayscale"):
        fingerprint(np.zeros((8, 8, 3), dtype=np.uint8))
