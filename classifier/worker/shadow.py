"""The models a worker runs besides the active one: shadow models on live traffic, and the versions
that reprocess events ask for.

A shadow predicts on the tensors the active model's batch was decoded into (one decode, two
predictions) unless its preprocessing differs (input size, window), when it decodes its own. What
these models predict is written under their own version, in a transaction after the active batch's
and before the offsets are committed, so a crash in between replays the batch and the unique
(instance, frame, version) key keeps the rows exactly once. Their study results are marked `shadow`
(unless the version is the active one by then): the completion sweep never announces them on the
results topic nor puts them in the outbox for PACS, and nothing of theirs is published per instance.
"""

from __future__ import annotations

import datetime as dt
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import structlog
from sqlalchemy import select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from classifier.model.serving import ServingModel
from classifier.study.policy import StudyPolicy
from classifier.worker.decoding import DecodedInstance, Outcome, PoisonInstance, Preprocessing
from classifier.worker.errors import ArtifactError, PoisonError
from classifier.worker.every import Every
from classifier.worker.metrics import WorkerMetrics
from classifier.worker.predict import Predicted, predict
from classifier.worker.writer import prediction_rows, recompute_studies
from storage.db.model_versions import get_model_version
from storage.db.results import insert_predictions, study_ids_of_instances
from storage.db.shadow_models import shadow_versions
from storage.db.tables import Instance, ModelVersion
from storage.db.uid_conflicts import uid_conflicts

log = structlog.get_logger(__name__)

# Decode again for another preprocessing, through the worker's decode step (which counts decodes).
Redecode = Callable[[DecodedInstance, Preprocessing], Outcome]
# Reprocess targets kept loaded besides the shadows (each costs a model's memory).
MAX_REPROCESS_MODELS = 2


class ModelVersionUnavailable(PoisonError):
    """A reprocess event names a model version that is not registered or whose artifact fails its checks."""


@dataclass(frozen=True, slots=True)
class VersionBatch:
    """What one non-active model predicted for part of a batch."""

    model: ServingModel
    role: str  # "shadow" or "reprocess"
    predicted: list[Predicted]


class OtherModels:
    """Shadow models (polled from the database like the active one) and reprocess targets (loaded on demand)."""

    def __init__(
        self,
        *,
        sessions: sessionmaker[Session],
        load_model: Callable[[ModelVersion], ServingModel],
        metrics: WorkerMetrics,
        redecode: Redecode,
        batch_size: int,
        poll: Every,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._sessions = sessions
        self._load_model = load_model
        self._metrics = metrics
        self._redecode = redecode
        self._batch_size = batch_size
        self._poll = poll
        self._clock = clock
        self._shadows: dict[int, ServingModel] = {}
        self._refused: set[tuple[int, str]] = set()
        self._reprocess: OrderedDict[str, ServingModel] = OrderedDict()

    @property
    def shadows(self) -> list[ServingModel]:
        return list(self._shadows.values())

    # --- which models ------------------------------------------------------------------------
    def refresh(self, *, force: bool = False) -> None:
        """Load new shadow versions and drop those turned off (every `poll`, between batches)."""
        if force:
            self._poll.restart()
        elif not self._poll.due():
            return
        try:
            with self._sessions() as session:
                rows = shadow_versions(session)
        except SQLAlchemyError as exc:
            log.warning("shadow_check_failed", error=type(exc).__name__)
            return
        wanted = {row.id: row for row in rows}
        for model_id in [i for i in self._shadows if i not in wanted]:
            log.info("shadow_model_stopped", model_version=self._shadows.pop(model_id).version)
        for model_id, row in wanted.items():
            if model_id in self._shadows or (model_id, row.sha256) in self._refused:
                continue
            try:
                self._shadows[model_id] = self._load_model(row)
            except ArtifactError as exc:
                self._refused.add((model_id, row.sha256))  # said once, not once per poll
                log.error("shadow_model_refused", model_version=row.version, error=str(exc))
                continue
            self._metrics.model_switches.inc()
            log.info("shadow_model_loaded", model_version=row.version)

    def split(
        self, active: ServingModel, decoded: Sequence[DecodedInstance]
    ) -> tuple[list[DecodedInstance], list[DecodedInstance]]:
        """(for the active model, for another version): live events and reprocess events asking for
        the active version go the usual way; the others are classified under what they ask for."""
        own: list[DecodedInstance] = []
        other: list[DecodedInstance] = []
        for d in decoded:
            target = d.event.reprocess_model_version
            (other if target is not None and target != active.version else own).append(d)
        return own, other

    def _model_named(self, version: str) -> ServingModel | None:
        for shadow in self._shadows.values():
            if shadow.version == version:
                return shadow
        if version in self._reprocess:
            self._reprocess.move_to_end(version)
            return self._reprocess[version]
        with self._sessions() as session:
            row = get_model_version(session, version=version)
        if row is None:
            raise ModelVersionUnavailable(f"no model version {version!r}")
        try:
            model = self._load_model(row)
        except ArtifactError as exc:
            raise ModelVersionUnavailable(f"model version {version!r} cannot be loaded: {exc}") from exc
        self._reprocess[version] = model
        while len(self._reprocess) > MAX_REPROCESS_MODELS:
            self._reprocess.popitem(last=False)
        log.info("reprocess_model_loaded", model_version=version)
        return model

    # --- predicting ----------------------------------------------------------------------------
    def predict(
        self, active_instances: Sequence[DecodedInstance], other: Sequence[DecodedInstance]
    ) -> tuple[list[VersionBatch], list[PoisonInstance]]:
        """Shadows on what the active model predicted, reprocess targets on their events. A reprocess
        event whose version cannot be loaded is poison without an instance row (dead-lettered only)."""
        batches = [
            VersionBatch(shadow, "shadow", self._run(shadow, "shadow", active_instances))
            for shadow in self._shadows.values()
            if active_instances
        ]
        poisoned: list[PoisonInstance] = []
        by_version: dict[str, list[DecodedInstance]] = {}
        for d in other:
            by_version.setdefault(d.event.reprocess_model_version or "", []).append(d)
        for version, items in by_version.items():
            try:
                model = self._model_named(version)
            except ModelVersionUnavailable as exc:
                poisoned.extend(PoisonInstance(d.record, None, exc) for d in items)
                continue
            if model is not None:
                batches.append(VersionBatch(model, "reprocess", self._run(model, "reprocess", items)))
        return batches, poisoned

    def _inputs(self, model: ServingModel, d: DecodedInstance) -> DecodedInstance | None:
        """`d` when decoded for this model's preprocessing; otherwise decoded again for it."""
        if d.preprocessing == model.preprocessing:
            return d
        again = self._redecode(d, model.preprocessing)
        if isinstance(again, PoisonInstance):
            log.warning("other_model_decode_failed", model_version=model.version, reason=again.error.reason)
            return None
        return again

    def _run(self, model: ServingModel, role: str, instances: Sequence[DecodedInstance]) -> list[Predicted]:
        inputs = [x for x in (self._inputs(model, d) for d in instances) if x is not None]
        if not inputs:
            return []
        started = self._clock()
        predicted = predict(model, inputs, self._batch_size)
        labels = {"model_version": model.version, "role": role}
        self._metrics.version_predict_seconds.labels(**labels).observe(self._clock() - started)
        self._metrics.version_frames_predicted.labels(**labels).inc(
            sum(len(p.probabilities) for p in predicted)
        )
        return predicted


def write_version(
    session: Session,
    *,
    predicted: Sequence[Predicted],
    model_version_id: int,
    policy: StudyPolicy,
    now: dt.datetime,
) -> int:
    """Insert one non-active model's predictions (instances already recorded) and recompute its study
    results, marked `shadow` unless the version is the active one by now. Never commits; returns the
    new prediction rows. Instance states and the active model's rows are left alone; an instance whose
    SOP Instance UID belongs to another study (`storage.db.uid_conflicts`) is left out."""
    pairs = [(p.instance.event.sop_instance_uid, p.instance.event.study_instance_uid) for p in predicted]
    conflicts = uid_conflicts(session, instances=pairs)
    predicted = [p for p, pair in zip(predicted, pairs, strict=True) if pair not in conflicts]
    uids = [p.instance.event.sop_instance_uid for p in predicted]
    if not uids:
        return 0
    instance_ids: dict[str, int] = {
        uid: id_
        for uid, id_ in session.execute(
            select(Instance.sop_instance_uid, Instance.id).where(Instance.sop_instance_uid.in_(uids))
        )
    }
    rows = [
        row
        for p in predicted
        if p.instance.event.sop_instance_uid in instance_ids
        for row in prediction_rows(p)
    ]
    missing = len(set(uids) - instance_ids.keys())
    if missing:
        log.warning("other_model_instances_unrecorded", count=missing)
    new_ids = insert_predictions(
        session, predictions=rows, instance_ids=instance_ids, model_version_id=model_version_id, now=now
    )
    active = session.scalar(select(ModelVersion.id).where(ModelVersion.status == "active"))
    recompute_studies(
        session,
        study_ids=study_ids_of_instances(session, instance_ids=new_ids),
        model_version_id=model_version_id,
        policy=policy,
        now=now,
        shadow=model_version_id != active,
    )
    by_id = {instance_ids[u] for u in uids if u in instance_ids} & new_ids
    return sum(
        len(p.probabilities)
        for p in predicted
        if instance_ids.get(p.instance.event.sop_instance_uid) in by_id
    )
