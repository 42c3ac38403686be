"""Grouped and random splits: groups never straddle splits; stratified; reproducible."""

from __future__ import annotations

from collections import Counter

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from training.split import SPLITS, SplitFractions, grouped_split, random_split

CLASSES = ("Cyst", "Normal", "Stone", "Tumor")

items = st.lists(st.tuples(st.sampled_from(CLASSES), st.integers(0, 30)), min_size=1, max_size=300)


@settings(max_examples=200, deadline=None)
@given(items=items, seed=st.integers(0, 2**32 - 1))
def test_a_group_never_falls_on_two_sides(items: list[tuple[str, int]], seed: int) -> None:
    """Every member of a group gets the same split, whatever the labels, groups and seed."""
    labels = [label for label, _ in items]
    groups = [group for _, group in items]
    splits = grouped_split(labels, groups, fractions=SplitFractions(), seed=seed)
    assert len(splits) == len(items)
    assert set(splits) <= set(SPLITS)
    split_of: dict[int, str] = {}
    for group, split in zip(groups, splits, strict=True):
        assert split_of.setdefault(group, split) == split


@settings(max_examples=50, deadline=None)
@given(items=items, seed=st.integers(0, 2**32 - 1))
def test_same_seed_same_split(items: list[tuple[str, int]], seed: int) -> None:
    """The split is a function of the data and the seed only."""
    labels = [label for label, _ in items]
    groups = [group for _, group in items]
    first = grouped_split(labels, groups, fractions=SplitFractions(), seed=seed)
    assert grouped_split(labels, groups, fractions=SplitFractions(), seed=seed) == first


def test_every_split_gets_each_class_when_there_are_enough_groups() -> None:
    """With ten groups per class, train, val and test each hold every class."""
    labels = [c for c in CLASSES for _ in range(100)]
    groups = [f"{c}-{i // 10}" for c in CLASSES for i in range(100)]
    splits = grouped_split(labels, groups, fractions=SplitFractions(), seed=3)
    for split in SPLITS:
        assert {label for label, s in zip(labels, splits, strict=True) if s == split} == set(CLASSES)


def test_random_split_is_stratified_close_to_the_fractions() -> None:
    """An image-level split of 100 per class gives 70/15/15 of each class."""
    labels = [c for c in CLASSES for _ in range(100)]
    splits = random_split(labels, fractions=SplitFractions(), seed=1)
    counts = Counter(zip(labels, splits, strict=True))
    for c in CLASSES:
        assert (counts[c, "train"], counts[c, "val"], counts[c, "test"]) == (70, 15, 15)


def test_different_seeds_give_different_random_splits() -> None:
    """The seed matters: two seeds do not give the same image-level split."""
    labels = [c for c in CLASSES for _ in range(50)]
    a = random_split(labels, fractions=SplitFractions(), seed=1)
    b = random_split(labels, fractions=SplitFractions(), seed=2)
    assert a != b


@pytest.mark.parametrize("fractions", [(0.5, 0.5, 0.5), (0.0, 0.5, 0.5), (1.2, -0.1, -0.1)])
def test_bad_fractions_are_refused(fractions: tuple[float, float, float]) -> None:
    """Fractions that do not sum to one, or leave nothing to train on, raise ValueError."""
    with pytest.raises(ValueError, match="split fractions"):
        SplitFractions(*fractions)


def test_latest_block_takes_the_highest_ids_of_each_class_and_whole_groups() -> None:
    """The top fraction of each class's IDs is held out; a group reaching into it goes whole; unnumbered items never."""
    from training.split import latest_block

    labels = ["A"] * 10 + ["B"] * 10 + ["A"]
    numbers: list[int | None] = list(range(1, 11)) + list(range(1, 11)) + [None]
    groups = [f"a{n // 3}" for n in range(1, 11)] + [f"b{n}" for n in range(1, 11)] + ["dicom"]
    chosen = latest_block(labels, numbers, groups, fraction=0.2)
    # A: IDs 10 and 9 are the top 20 %; 9 shares group a3 with ID 10 only (9 // 3 == 3, 10 // 3 == 3),
    # and a3 also holds no other; B: IDs 10 and 9, each its own group.
    assert [n for n, c, label in zip(numbers, chosen, labels, strict=True) if c and label == "A"] == [9, 10]
    assert [n for n, c, label in zip(numbers, chosen, labels, strict=True) if c and label == "B"] == [9, 10]
    assert not chosen[-1]
    wide = latest_block(labels, numbers, groups, fraction=0.1)  # only A's ID 10, but its group a3 holds 9 too
    assert [n for n, c, label in zip(numbers, wide, labels, strict=True) if c and label == "A"] == [9, 10]
    assert latest_block(labels, numbers, groups, fraction=0.0) == [False] * len(labels)
