"""Grouped, stratified, seeded train/validation/test splits.

A whole group (a study, a chain of neighbouring slices) always lands in one split. Groups are
stratified by their majority class: within each class, groups are visited in a seeded random
order and each goes to the split furthest below its target share of that class's images. The
random image-level split used for comparison is the same procedure with every image its own group.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Hashable, Sequence
from dataclasses import dataclass

import numpy as np

SPLITS: tuple[str, ...] = ("train", "val", "test")


@dataclass(frozen=True, slots=True)
class SplitFractions:
    train: float = 0.7
    val: float = 0.15
    test: float = 0.15

    def __post_init__(self) -> None:
        values = (self.train, self.val, self.test)
        if any(v < 0 for v in values) or self.train <= 0 or abs(sum(values) - 1.0) > 1e-6:
            raise ValueError(f"split fractions must be non-negative, train > 0, and sum to 1; got {values}")

    def of(self, split: str) -> float:
        return float(getattr(self, split))


def _group_class(labels: Sequence[str]) -> str:
    counts = Counter(labels)
    # Ties go to the alphabetically first class so the result does not depend on item order.
    return min(counts, key=lambda c: (-counts[c], c))


def grouped_split(
    labels: Sequence[str], groups: Sequence[Hashable], *, fractions: SplitFractions, seed: int
) -> list[str]:
    """The split name ("train", "val" or "test") of every item."""
    if len(labels) != len(groups):
        raise ValueError("labels and groups must have the same length")
    members: dict[Hashable, list[int]] = {}
    for index, group in enumerate(groups):
        members.setdefault(group, []).append(index)
    by_class: dict[str, list[Hashable]] = {}
    for group, indices in members.items():
        by_class.setdefault(_group_class([labels[i] for i in indices]), []).append(group)

    rng = np.random.default_rng(seed)
    split_of_group: dict[Hashable, str] = {}
    active = [s for s in SPLITS if fractions.of(s) > 0]
    for cls in sorted(by_class):
        # Sort first so the seeded shuffle does not depend on dict order, then shuffle.
        class_groups = sorted(by_class[cls], key=lambda g: min(members[g]))
        order = rng.permutation(len(class_groups))
        total = sum(len(members[g]) for g in class_groups)
        target = {s: fractions.of(s) * total for s in active}
        filled = dict.fromkeys(active, 0)
        assigned: dict[str, list[Hashable]] = {s: [] for s in active}
        for position in order:
            group = class_groups[int(position)]
            split = max(active, key=lambda s: (target[s] - filled[s], -SPLITS.index(s)))
            assigned[split].append(group)
            filled[split] += len(members[group])
        _give_every_split_a_group(assigned, members, target)
        for split, split_groups in assigned.items():
            for group in split_groups:
                split_of_group[group] = split
    return [split_of_group[g] for g in groups]


def _give_every_split_a_group(
    assigned: dict[str, list[Hashable]], members: dict[Hashable, list[int]], target: dict[str, float]
) -> None:
    """When a class has enough groups, move one from train to any split left without that class."""
    for split in assigned:
        if split == "train" or assigned[split] or len(assigned["train"]) < 2:
            continue
        donor = min(assigned["train"], key=lambda g: (abs(len(members[g]) - target[split]), min(members[g])))
        assigned["train"].remove(donor)
        assigned[split].append(donor)


def random_split(labels: Sequence[str], *, fractions: SplitFractions, seed: int) -> list[str]:
    """A stratified random image-level split: what most published results on this data use."""
    return grouped_split(labels, list(range(len(labels))), fractions=fractions, seed=seed)


def latest_block(
    labels: Sequence[str],
    numbers: Sequence[int | None],
    groups: Sequence[Hashable],
    *,
    fraction: float,
) -> list[bool]:
    """Which items form the held-out block of the latest IDs: the top `fraction` of each class's numbered items.

    Like a temporal split: the highest IDs of a dataset are its latest scans, and a product meets
    scans later than everything it learnt from. A group (scan) with any item in the block goes to the
    block whole, so no scan straddles it. Items without a number (DICOM) are never in it.
    """
    if not 0.0 <= fraction < 1.0:
        raise ValueError(f"the latest-IDs fraction must be in [0, 1), got {fraction}")
    chosen = [False] * len(labels)
    if fraction == 0.0:
        return chosen
    by_class: dict[str, list[tuple[int, int]]] = {}
    for index, (label, number) in enumerate(zip(labels, numbers, strict=True)):
        if number is not None:
            by_class.setdefault(label, []).append((number, index))
    for members in by_class.values():
        members.sort(reverse=True)
        for _, index in members[: int(round(fraction * len(members)))]:
            chosen[index] = True
    in_block = {g for g, c in zip(groups, chosen, strict=True) if c}
    return [g in in_block for g in groups]
