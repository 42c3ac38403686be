"""The write step: a batch's rows in one transaction, then the other models' rows in theirs.

The batch is written whole (`writer.write_batch`, retried through outages). When the database
refuses it on its data (a value that does not fit a column), each event is written in its own
transaction instead: one that still does not fit becomes poison (recorded without the values that
do not fit, dead-lettered, committed past), so one bad event never stalls the partition.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import structlog
from sqlalchemy.orm import Session, sessionmaker

from classifier.model.serving import ServingModel
from classifier.study.policy import PolicySettings
from classifier.worker.decoding import PoisonInstance
from classifier.worker.errors import ValueDoesNotFit
from classifier.worker.predict import Predicted
from classifier.worker.retrying import Retry
from classifier.worker.shadow import VersionBatch, write_version
from classifier.worker.writer import BatchWritten, write_batch
from storage.failures import DataFailure

log = structlog.get_logger(__name__)


@dataclass(frozen=True, slots=True)
class Written:
    """What the batch became in the database: what to publish, what to dead-letter, rows added."""

    predicted: list[Predicted]
    poisoned: list[PoisonInstance]
    new_rows: int
    other_rows: int = 0


@dataclass(frozen=True, kw_only=True)
class WriteBatch:
    sessions: sessionmaker[Session]
    retry: Retry
    policy: PolicySettings
    utcnow: Callable[[], dt.datetime]

    def __call__(
        self,
        serving: ServingModel,
        predicted: list[Predicted],
        poisoned: list[PoisonInstance],
        others: Sequence[VersionBatch] = (),
    ) -> Written:
        try:
            written = self._write(serving, predicted, poisoned, step="write_batch")
            result = Written(list(written.predicted), poisoned, written.new_prediction_rows)
        except DataFailure as exc:
            events = len(predicted) + len(poisoned)
            log.warning("batch_write_refused_data", error=type(exc.__cause__).__name__, events=events)
            result = self._one_by_one(serving, predicted, poisoned)
        log_poisoned(result.poisoned)
        return dataclasses.replace(result, other_rows=self._write_others(others))

    def _one_by_one(
        self, serving: ServingModel, predicted: list[Predicted], poisoned: list[PoisonInstance]
    ) -> Written:
        kept: list[Predicted] = []
        new_rows = 0
        failed: list[PoisonInstance] = []
        for p in predicted:
            try:
                written = self._write(serving, [p], [])
            except DataFailure as exc:
                error = ValueDoesNotFit(f"a value does not fit the database: {type(exc.__cause__).__name__}")
                failed.append(PoisonInstance(p.instance.record, p.instance.event, error))
                continue
            kept.extend(written.predicted)
            new_rows += written.new_prediction_rows
        for poison in [*poisoned, *failed]:
            self._record_poison(serving, poison)
        return Written(kept, [*poisoned, *failed], new_rows)

    def _record_poison(self, serving: ServingModel, poison: PoisonInstance) -> None:
        """As it is, then with only the values a row needs; if neither fits, the dead letter keeps it."""
        for candidate in (poison, _bare(poison)):
            try:
                self._write(serving, [], [candidate])
                return
            except DataFailure:
                continue
        log.error("instance_not_recordable", offset=poison.record.offset, partition=poison.record.partition)

    def _write(
        self,
        serving: ServingModel,
        predicted: list[Predicted],
        poisoned: list[PoisonInstance],
        *,
        step: str = "write_instance",
    ) -> BatchWritten:
        """One transaction, retried through outages; `DataFailure` when refused on the data."""

        def write() -> BatchWritten:
            with self.sessions.begin() as session:
                return write_batch(
                    session,
                    predicted=predicted,
                    poisoned=poisoned,
                    model_version_id=serving.model_version_id,
                    policy=self.policy.policy(serving.card.decision),
                    now=self.utcnow(),
                )

        written = self.retry(step, write)
        for sop_instance_uid in sorted(written.reclassified):
            log.warning("instance_reclassified", sop_instance_uid=sop_instance_uid, reason="content_changed")
        return written

    def _write_others(self, batches: Sequence[VersionBatch]) -> int:
        """Shadow and reprocess predictions, after the active batch's transaction; a write refused on
        the data is logged and skipped (the active rows are in; the dead letter is the active path's)."""
        new_rows = 0
        for batch in batches:
            try:
                new_rows += self.retry(f"write_{batch.role}", lambda b=batch: self._write_version(b))  # type: ignore[misc]
            except DataFailure as exc:
                log.error(
                    "other_model_write_refused",
                    model_version=batch.model.version,
                    role=batch.role,
                    error=type(exc.__cause__).__name__,
                )
        return new_rows

    def _write_version(self, batch: VersionBatch) -> int:
        with self.sessions.begin() as session:
            return write_version(
                session,
                predicted=batch.predicted,
                model_version_id=batch.model.model_version_id,
                policy=self.policy.policy(batch.model.card.decision),
                now=self.utcnow(),
            )


def log_poisoned(poisoned: Sequence[PoisonInstance]) -> None:
    """One `instance_poisoned` line per poison event: UIDs, state, reason and where it was read."""
    for p in poisoned:
        log.warning(
            "instance_poisoned",
            sop_instance_uid=p.event.sop_instance_uid if p.event else None,
            state=p.error.state,
            reason=p.error.reason,
            offset=p.record.offset,
            partition=p.record.partition,
        )


def _bare(poison: PoisonInstance) -> PoisonInstance:
    """The poison with only the values an instance row needs (the others may be what did not fit)."""
    if poison.event is None:
        return poison
    event = dataclasses.replace(poison.event, instance_number=None, number_of_frames=1, modality=None)
    return PoisonInstance(poison.record, event, poison.error)
