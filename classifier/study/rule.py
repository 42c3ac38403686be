"""The study label rule and study completeness: pure decisions, `now` passed in.

Label rule: an abnormal class (Cyst, Stone, Tumor) labels the study when at least `k` slices give
it a probability of at least `t`; when several qualify, the clinically most urgent wins
(Tumor, then Stone, then Cyst), so a tumour is never hidden behind many cyst slices. Otherwise
the study is Normal.

Completeness: a study result is complete when no instance of the study arrived and none was
(re)computed for `stable_age_s`, and no instance of it is still waiting to be processed; or, when
the association that carried it was released (a release hint) and nothing arrived after, the same
after the shorter `grace_s`.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass

NORMAL = "Normal"
# Most urgent first: the order in which qualifying abnormal classes win the study label.
ABNORMAL_PRIORITY: tuple[str, ...] = ("Tumor", "Stone", "Cyst")


@dataclass(frozen=True, slots=True)
class StudyRule:
    min_slices: int  # k
    min_probability: float  # t

    def __post_init__(self) -> None:
        if self.min_slices < 1:
            raise ValueError(f"k (min slices) must be at least 1, got {self.min_slices}")
        if not 0.0 <= self.min_probability <= 1.0:
            raise ValueError(f"t (min probability) must be within [0, 1], got {self.min_probability}")


DEFAULT_STUDY_RULE = StudyRule(2, 0.5)  # for a model card without a tuned rule


def study_label(n_confident: Mapping[str, int], rule: StudyRule) -> str:
    """The study label from the number of slices per class with probability >= t."""
    for name in ABNORMAL_PRIORITY:
        if n_confident.get(name, 0) >= rule.min_slices:
            return name
    return NORMAL


def completion_cutoff(now: dt.datetime, stable_age_s: float) -> dt.datetime:
    """Activity at or before this moment is old enough for a study to be complete."""
    return now - dt.timedelta(seconds=stable_age_s)


def is_complete(
    *,
    last_received_at: dt.datetime,
    last_updated_at: dt.datetime,
    pending_instances: int,
    now: dt.datetime,
    stable_age_s: float,
) -> bool:
    """Whether a study result may be announced as complete."""
    cutoff = completion_cutoff(now, stable_age_s)
    return pending_instances == 0 and last_received_at <= cutoff and last_updated_at <= cutoff


def is_complete_after_release(
    *,
    last_received_at: dt.datetime,
    last_updated_at: dt.datetime,
    pending_instances: int,
    released_at: dt.datetime,
    now: dt.datetime,
    grace_s: float,
) -> bool:
    """Whether a study whose association was released may be complete before the stable-age timer:
    nothing of it arrived after that release, and the release and its last activity are `grace_s` old."""
    return (
        last_received_at <= released_at
        and released_at <= completion_cutoff(now, grace_s)
        and is_complete(
            last_received_at=last_received_at,
            last_updated_at=last_updated_at,
            pending_instances=pending_instances,
            now=now,
            stable_age_s=grace_s,
        )
    )
