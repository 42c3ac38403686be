"""Registering a finished run as a candidate model version, and deciding when a new run is due."""

from __future__ import annotations

import dataclasses
import datetime as dt
from typing import TYPE_CHECKING

from sqlalchemy.orm import Session

from storage.db.datasets import count_dataset_images_since
from storage.db.labels import count_labels_since
from storage.db.model_versions import list_model_versions, register_model_version
from storage.db.tables import ModelVersion

if TYPE_CHECKING:  # training.run loads Keras; `kidneyct train` checks its inputs before that
    from training.run import TrainedRun


def make_version(now: dt.datetime) -> str:
    """A sortable version name from the run's start time (UTC), e.g. `20260311T142501Z`."""
    return now.astimezone(dt.UTC).strftime("%Y%m%dT%H%M%SZ")


def register_candidate(session: Session, *, run: TrainedRun, now: dt.datetime) -> ModelVersion:
    """Record the run's artifact, card, metrics and manifest hash as a `candidate` version (caller commits)."""
    return register_model_version(
        session,
        version=run.version,
        artifact_uri=run.artifact_dir.resolve().as_uri(),
        sha256=run.card.weights_sha256,
        card=dataclasses.asdict(run.card),
        metrics=run.card.metrics,
        manifest_hash=run.manifest_hash,
        now=now,
        status="candidate",
    )


def new_labels_since_last_version(session: Session) -> int:
    """Labels and imported images recorded after the newest model version was registered (all, if none)."""
    versions = list_model_versions(session)
    since = max((v.created_at for v in versions), default=None)
    return count_labels_since(session, since=since) + count_dataset_images_since(session, since=since)


def training_due(*, new_labels: int, min_new_labels: int) -> bool:
    """Whether a scheduled run should train: at least `min_new_labels` arrived (0 always trains)."""
    return new_labels >= min_new_labels
