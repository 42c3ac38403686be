"""The classifier worker: consume instance events, decode, predict in batches, write, commit.

One loop iteration: collect a batch (size or time), hand its records to the decode threads, then
finish the previous batch (predict, one database transaction, publish results and dead letters,
commit offsets) while the new one decodes, so inference does not wait for decoding.

Nothing is lost: offsets are committed only after the database commit and the publishes. When the
database or the results stream is down the worker keeps the batch in hand and retries with
backoff; it commits nothing meanwhile. A stop request (SIGTERM) finishes the batches in hand and
returns; during an outage it returns at once without committing, and the batch is re-delivered.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import numpy as np
import structlog
from prometheus_client import CollectorRegistry
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from classifier.model.serving import ServingModel, load_serving_model
from classifier.report.build import ResultConfig
from classifier.worker import messages
from classifier.worker.batching import BatchPolicy, next_poll
from classifier.worker.db_errors import DbErrorKind, classify, is_database_error
from classifier.worker.dead_letter_limit import DeadLetterLimit
from classifier.worker.decoding import (
    DecodedInstance,
    Outcome,
    PoisonInstance,
    Preprocessing,
    decode_record,
    received_at,
)
from classifier.worker.errors import (
    ArchiveFileMissing,
    ArtifactError,
    DeadLetterLimitExceeded,
    NoActiveModel,
    ValueDoesNotFit,
)
from classifier.worker.metrics import WorkerMetrics
from classifier.worker.release_hints import split_hints
from classifier.worker.reprocess_events import is_reprocess
from classifier.worker.shadow import Decode, OtherModels, VersionBatch, write_version
from classifier.worker.study_completion import CompletionOptions, StudyCompletion
from classifier.worker.study_policy import DEFAULT_MAX_SHIFTED_FRACTION, PolicySettings
from classifier.worker.study_rule import StudyRule
from classifier.worker.writer import Predicted, conflicting_instances, write_batch
from common.errors import SchemaMissing
from storage.archive.reader import ArchiveReader, ArchiveUnavailable
from storage.db.model_versions import get_active_model_version
from storage.db.tables import ModelVersion
from storage.stream.contract import (
    Consumer,
    Publisher,
    Record,
    StreamUnavailable,
    TopicPartition,
    next_offsets,
)
from storage.stream.events import ReleaseHint

log = structlog.get_logger(__name__)

T = TypeVar("T")
RECOVERABLE = (SQLAlchemyError, OverflowError, StreamUnavailable, ArchiveUnavailable)
MAX_COMMIT_ATTEMPTS = 5


@dataclass(frozen=True)
class WorkerConfig:
    archive_dir: Path
    topic_results: str
    topic_dead_letter: str
    batch: BatchPolicy
    rule: StudyRule  # when a model card carries no study rule, or always with `rule_from_settings`
    rule_from_settings: bool = False
    max_shifted_fraction: float = DEFAULT_MAX_SHIFTED_FRACTION
    stable_age_s: float = 60.0
    release_grace_s: float = 3.0
    decode_workers: int = 2
    model_poll_s: float = 5.0
    sweep_interval_s: float = 1.0
    retry_initial_s: float = 0.5
    retry_max_s: float = 30.0
    # Stop when this share of the last `dead_letter_window` events could not read their archive file.
    dead_letter_window: int = 50
    dead_letter_ratio: float = 0.5
    results: ResultConfig = field(default_factory=ResultConfig)
    # Opens the URIs events carry (local files and s3:// objects); None: `archive_dir` only.
    archive_reader: ArchiveReader | None = None

    @property
    def policy_settings(self) -> PolicySettings:
        return PolicySettings(
            fallback=self.rule,
            override=self.rule_from_settings,
            max_shifted_fraction=self.max_shifted_fraction,
        )

    def reader(self) -> ArchiveReader:
        return self.archive_reader if self.archive_reader is not None else ArchiveReader(self.archive_dir)


@dataclass
class _Batch:
    records: list[Record]
    futures: list[Future[Outcome]] = field(default_factory=list)
    hints: list[tuple[Record, ReleaseHint]] = field(default_factory=list)  # not decoded: no futures


class Abandoned(Exception):
    """Stop was requested while an outage kept a batch from finishing: nothing was committed."""


class _DataProblem(Exception):
    """A write failed on the batch's own data (not an outage): write its events one by one."""


def _utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class Worker:
    def __init__(
        self,
        *,
        consumer: Consumer,
        publisher: Publisher,
        session_factory: sessionmaker[Session],
        config: WorkerConfig,
        metrics: WorkerMetrics | None = None,
        load_model: Callable[[ModelVersion], ServingModel] = load_serving_model,
        clock: Callable[[], float] = time.monotonic,
        utcnow: Callable[[], dt.datetime] = _utcnow,
        decode: Decode = decode_record,
    ) -> None:
        self._consumer = consumer
        self._publisher = publisher
        self._sessions = session_factory
        self._config = config
        self._metrics = metrics or WorkerMetrics(CollectorRegistry())
        self._load_model = load_model
        self._clock = clock
        self._utcnow = utcnow
        self._stop = threading.Event()
        self._pool = ThreadPoolExecutor(max_workers=config.decode_workers, thread_name_prefix="decode")
        self._serving: ServingModel | None = None
        self._next_model_check = 0.0
        self._next_sweep = 0.0
        self._completion = StudyCompletion(
            sessions=session_factory,
            options=CompletionOptions(
                topic_results=config.topic_results,
                stable_age_s=config.stable_age_s,
                policy=config.policy_settings,
                results=config.results,
                reader=config.reader,
                release_grace_s=config.release_grace_s,
            ),
            metrics=self._metrics,
            clock=clock,
        )
        self._uncommitted: dict[TopicPartition, int] = {}
        self._commit_failures = 0
        self._dead_letters = DeadLetterLimit(window=config.dead_letter_window, ratio=config.dead_letter_ratio)
        self.batches_done = 0  # for tests and benchmarks: batches fully written
        self._decode_one = decode
        # Shadow models and reprocess targets: predicted beside the active model, kept out of the clinical path.
        self._others = OtherModels(
            sessions=session_factory,
            load_model=load_model,
            metrics=self._metrics,
            decode=decode,
            reader=config.reader,
            batch_size=config.batch.max_size,
            poll_s=config.model_poll_s,
            clock=clock,
        )

    # --- control --------------------------------------------------------------------------
    def request_stop(self) -> None:
        """Finish the batches in hand and return from `run` (safe from a signal handler)."""
        self._stop.set()

    @property
    def model_loaded(self) -> bool:
        """For readiness: a model version is loaded and the worker can predict."""
        return self._serving is not None

    @property
    def serving(self) -> ServingModel:
        if self._serving is None:
            raise NoActiveModel("no model loaded yet")
        return self._serving

    def start(self) -> ServingModel:
        """Load the active model version; `NoActiveModel` when there is none."""
        row = self._retry("read_active_model", self._read_active)
        if row is None:
            raise NoActiveModel(
                "no active model version: train one (`kidneyct train`) and make it active "
                "(`kidneyct models promote VERSION`)"
            )
        self._serving = self._load_model(row)
        self._metrics.model_switches.inc()
        self._publish_model_info()
        self._metrics.model_ready.set(1)
        self._next_model_check = self._clock() + self._config.model_poll_s
        self._others.refresh(force=True)
        log.info(
            "model_loaded", model_version=self._serving.version, image_size=self._serving.card.image_size
        )
        return self._serving

    def start_when_model_active(self) -> bool:
        """`start`, waiting (every `model_poll_s`) while no model is active or its artifact is unusable.

        A site's first worker starts before its first model exists: it says so once in its log,
        reports not-ready (`kidneyct_worker_model_ready` 0) and keeps polling instead of exiting, so
        a supervisor (`restart: unless-stopped`) sees no crash loop. False when stopped meanwhile.
        """
        said = None
        while not self._stop.is_set():
            try:
                self.start()
                return True
            except (NoActiveModel, ArtifactError) as exc:
                self._metrics.model_ready.set(0)
                if str(exc) != said:  # once per reason, not once per poll
                    event = (
                        "waiting_for_active_model"
                        if isinstance(exc, NoActiveModel)
                        else "active_model_unusable"
                    )
                    log.warning(event, reason=str(exc), poll_s=self._config.model_poll_s)
                    said = str(exc)
            self._stop.wait(self._config.model_poll_s)
        return False

    def run(self) -> None:
        """Consume until `request_stop`; returns after the batches in hand are committed."""
        if self._serving is None:
            self.start()
        pending: _Batch | None = None
        try:
            while True:
                stopping = self._stop.is_set()
                records = [] if stopping else self._collect()
                incoming = self._submit(records) if records else None
                if pending is not None:
                    self._finish(pending)
                pending = incoming
                if pending is None:
                    self._commit_offsets()  # idle: retry a commit that failed
                    if self._stop.is_set():
                        break
                self._maybe_sweep()
                self._maybe_switch_model()
                self._others.refresh()
        except Abandoned:
            log.warning("worker_stopped_during_outage", uncommitted_records=_count(pending))
        finally:
            self._pool.shutdown(wait=True, cancel_futures=True)
        log.info("worker_stopped", batches=self.batches_done)

    # --- batching and decoding ---------------------------------------------------------------
    def _collect(self) -> list[Record]:
        records: list[Record] = []
        first_at: float | None = None
        while not self._stop.is_set():
            plan = next_poll(self._config.batch, n_pending=len(records), first_at=first_at, now=self._clock())
            if plan.done:
                break
            try:
                got = self._consumer.poll(plan.max_records, plan.timeout_s)
            except StreamUnavailable as exc:
                log.warning("stream_poll_failed", error=str(exc))
                self._stop.wait(self._config.retry_initial_s)
                break
            if got and first_at is None:
                first_at = self._clock()
            records.extend(got)
            if not records:
                break  # idle: let the loop sweep studies, look for a new model and check for stop
        return records

    def _submit(self, records: list[Record]) -> _Batch:
        preprocessing = self.serving.preprocessing
        reader = self._config.reader()
        instances, hints = split_hints(records)
        futures = [self._pool.submit(self._decode, r, preprocessing, reader) for r in instances]
        return _Batch(records=instances, futures=futures, hints=hints)

    # --- one batch ---------------------------------------------------------------------------
    def _finish(self, batch: _Batch) -> None:
        # A hint's offset is committed with the batch's rows (or alone), and noted only after them.
        for tp, offset in next_offsets([r for r, _ in batch.hints]).items():
            self._uncommitted[tp] = max(offset, self._uncommitted.get(tp, 0))
        if batch.records:
            with structlog.contextvars.bound_contextvars(model_version=self.serving.version):
                self._finish_batch(batch)
        else:
            self._commit_offsets()
        self._completion.note_released([h for _, h in batch.hints])

    def _finish_batch(self, batch: _Batch) -> None:
        serving = self.serving
        outcomes = [self._outcome(f, r) for f, r in zip(batch.futures, batch.records, strict=True)]
        decoded: list[DecodedInstance] = []
        poisoned: list[PoisonInstance] = []
        for outcome in outcomes:
            if isinstance(outcome, DecodedInstance) and outcome.preprocessing != serving.preprocessing:
                # Decoded for the previous model before a switch: decode again for this one.
                outcome = self._decode(outcome.record, serving.preprocessing, self._config.reader())
            if isinstance(outcome, DecodedInstance):
                decoded.append(outcome)
            else:
                poisoned.append(outcome)
        self._check_dead_letter_limit(outcomes)
        decoded = self._without_uid_conflicts(decoded)
        decoded, for_other_versions = self._others.split(serving, decoded)

        started = self._clock()
        predicted = self._predict(serving, decoded)
        predict_s = self._clock() - started
        # Loading a reprocess target reads the database, a shadow may decode again: outages are waited out.
        others, unavailable = self._retry(
            "predict_other_models", lambda: self._others.predict(decoded, for_other_versions)
        )
        poisoned.extend(unavailable)
        for p in poisoned:
            log.warning(
                "instance_poisoned",
                sop_instance_uid=p.event.sop_instance_uid if p.event else None,
                state=p.error.state,
                reason=p.error.reason,
                offset=p.record.offset,
                partition=p.record.partition,
            )

        started = self._clock()
        try:
            new_rows = self._write(serving, predicted, poisoned, step="write_batch")
        except _DataProblem as exc:
            log.warning("batch_write_refused_data", error=type(exc.__cause__).__name__, events=len(outcomes))
            predicted, poisoned, new_rows = self._write_one_by_one(serving, predicted, poisoned)
        other_rows = self._write_others(others)
        write_s = self._clock() - started
        self._retry("publish_results", lambda: self._publish(serving, predicted, poisoned))
        for tp, offset in next_offsets(batch.records).items():
            self._uncommitted[tp] = max(offset, self._uncommitted.get(tp, 0))
        self._commit_offsets()
        self.batches_done += 1
        self._record_batch(predicted, poisoned, predict_s=predict_s, write_s=write_s)
        self._record_latency([p for p in predicted if not is_reprocess(p.instance.record)])
        log.info(
            "batch_processed",
            events=len(batch.records),
            frames=sum(len(p.probabilities) for p in predicted),
            poisoned=len(poisoned),
            new_prediction_rows=new_rows,
            other_model_rows=other_rows,
            predict_s=round(predict_s, 4),
            write_s=round(write_s, 4),
        )

    def _without_uid_conflicts(self, decoded: list[DecodedInstance]) -> list[DecodedInstance]:
        """Without the instances whose SOP Instance UID another study has: never predicted nor
        announced (`storage.db.uid_conflicts`); their offsets are committed with the batch."""
        if not decoded:
            return decoded

        def check() -> set[tuple[str, str]]:
            with self._sessions() as session:
                return conflicting_instances(session, [d.event for d in decoded])

        conflicts = self._retry("check_uid_conflicts", check)
        return [d for d in decoded if (d.event.sop_instance_uid, d.event.study_instance_uid) not in conflicts]

    def _write_one_by_one(
        self, serving: ServingModel, predicted: list[Predicted], poisoned: list[PoisonInstance]
    ) -> tuple[list[Predicted], list[PoisonInstance], int]:
        """Each event in its own transaction: one whose values do not fit the database becomes
        poison (recorded without the values that do not fit, dead-lettered, committed past)."""
        kept: list[Predicted] = []
        new_rows = 0
        failed: list[PoisonInstance] = []
        for p in predicted:
            try:
                new_rows += self._write(serving, [p], [])
                kept.append(p)
            except _DataProblem as exc:
                error = ValueDoesNotFit(f"a value does not fit the database: {type(exc.__cause__).__name__}")
                failed.append(PoisonInstance(p.instance.record, p.instance.event, error))
        for poison in [*poisoned, *failed]:
            # As it is, then with only the values a row needs; if neither fits, the dead letter keeps it.
            for candidate in (poison, _bare(poison)):
                try:
                    self._write(serving, [], [candidate])
                    break
                except _DataProblem:
                    continue
            else:
                log.error(
                    "instance_not_recordable", offset=poison.record.offset, partition=poison.record.partition
                )
        for f in failed:
            log.warning(
                "instance_poisoned",
                sop_instance_uid=f.event.sop_instance_uid if f.event else None,
                state=f.error.state,
                reason=f.error.reason,
                offset=f.record.offset,
                partition=f.record.partition,
            )
        return kept, [*poisoned, *failed], new_rows

    def _write(
        self,
        serving: ServingModel,
        predicted: list[Predicted],
        poisoned: list[PoisonInstance],
        *,
        step: str = "write_instance",
    ) -> int:
        """Write in one transaction, retried through outages; returns the new prediction rows."""

        def write() -> int:
            with self._sessions.begin() as session:
                written = write_batch(
                    session,
                    predicted=predicted,
                    poisoned=poisoned,
                    model_version_id=serving.model_version_id,
                    policy=self._config.policy_settings.policy(serving.card.decision),
                    now=self._utcnow(),
                )
            for sop_instance_uid in sorted(written.reclassified):
                log.warning(
                    "instance_reclassified", sop_instance_uid=sop_instance_uid, reason="content_changed"
                )
            return written.new_prediction_rows

        return self._retry(step, write)

    def _decode(self, record: Record, preprocessing: Preprocessing, reader: ArchiveReader) -> Outcome:
        self._metrics.decodes.inc()
        return self._decode_one(record, preprocessing, reader)

    def _write_others(self, batches: list[VersionBatch]) -> int:
        """Shadow and reprocess predictions, after the active batch's transaction; a write refused on
        the data is logged and skipped (the active rows are in; the dead letter is the active path's)."""

        def write(batch: VersionBatch) -> int:
            with self._sessions.begin() as session:
                return write_version(
                    session,
                    predicted=batch.predicted,
                    model_version_id=batch.model.model_version_id,
                    policy=self._config.policy_settings.policy(batch.model.card.decision),
                    now=self._utcnow(),
                )

        new_rows = 0
        for batch in batches:
            try:
                new_rows += self._retry(f"write_{batch.role}", lambda b=batch: write(b))  # type: ignore[misc]
            except _DataProblem as exc:
                log.error(
                    "other_model_write_refused",
                    model_version=batch.model.version,
                    role=batch.role,
                    error=type(exc.__cause__).__name__,
                )
        return new_rows

    def _outcome(self, future: Future[Outcome], record: Record) -> Outcome:
        """A decode's outcome; an object store outage is waited out (the event stays uncommitted)."""
        try:
            return future.result()
        except ArchiveUnavailable:
            reader = self._config.reader()
            return self._retry(
                "read_archive", lambda: self._decode(record, self.serving.preprocessing, reader)
            )

    def _check_dead_letter_limit(self, outcomes: list[Outcome]) -> None:
        self._dead_letters.observe(
            isinstance(o, PoisonInstance) and isinstance(o.error, ArchiveFileMissing) for o in outcomes
        )
        if not self._dead_letters.tripped:
            return
        message = (
            f"{self._dead_letters.unreadable} of the last {self._dead_letters.window} events could not "
            f"read their archived file from {self._config.reader().describe()}: is the archive mounted (or the object store reachable) and "
            "readable? Stopping without committing this batch (it is delivered again after a restart)."
        )
        log.error(
            "dead_letter_limit_exceeded",
            unreadable=self._dead_letters.unreadable,
            window=self._dead_letters.window,
        )
        raise DeadLetterLimitExceeded(message)

    def _record_batch(
        self, predicted: list[Predicted], poisoned: list[PoisonInstance], *, predict_s: float, write_s: float
    ) -> None:
        m = self._metrics
        m.events.inc(len(predicted) + len(poisoned))
        m.frames_predicted.inc(sum(len(p.probabilities) for p in predicted))
        for p in poisoned:
            m.instances_poisoned.labels(state=p.error.state).inc()
        if predicted:
            m.predict_seconds.observe(predict_s)
        m.write_seconds.observe(write_s)

    def _record_latency(self, predicted: list[Predicted]) -> None:
        """C-STORE success (the event's received_at) to prediction rows committed, per instance."""
        now = self._utcnow()
        for p in predicted:
            seconds = (now - received_at(p.instance.event)).total_seconds()
            self._metrics.store_to_prediction_seconds.observe(max(0.0, seconds))

    def _update_backlog(self) -> None:
        backlog = getattr(self._consumer, "backlog", None)  # optional: Kafka and the embedded queue have it
        if backlog is None:
            return
        try:
            value = backlog()
        except RECOVERABLE as exc:
            log.debug("backlog_unknown", error=type(exc).__name__)
            return
        if value is not None:
            self._metrics.backlog.set(value)

    def _commit_offsets(self) -> None:
        """Commit what is written; a failed commit is retried with the next one (or when idle)."""
        if not self._uncommitted:
            return
        try:
            self._consumer.commit(dict(self._uncommitted))
        except StreamUnavailable as exc:
            # The rows are in the database: at worst a replay of these records writes nothing new.
            self._commit_failures += 1
            log.warning("offset_commit_failed", error=str(exc), attempt=self._commit_failures)
            if self._commit_failures >= MAX_COMMIT_ATTEMPTS:
                # Most likely a rebalance moved the partitions away; their new owner replays them.
                self._uncommitted.clear()
                self._commit_failures = 0
            return
        self._uncommitted.clear()
        self._commit_failures = 0

    def _predict(self, serving: ServingModel, decoded: list[DecodedInstance]) -> list[Predicted]:
        if not decoded:
            return []
        tensors = np.concatenate([d.tensors for d in decoded])
        scored = serving.score(tensors, self._config.batch.max_size)
        if scored.shifted is not None:
            self._metrics.frames_shifted.inc(int(scored.shifted.sum()))
        out, start = [], 0
        for d in decoded:
            n = len(d.tensors)
            part = slice(start, start + n)
            out.append(
                Predicted(
                    d,
                    scored.probabilities[part],
                    None if scored.shift_scores is None else scored.shift_scores[part],
                    None if scored.shifted is None else scored.shifted[part],
                )
            )
            start += n
        return out

    def _publish(
        self, serving: ServingModel, predicted: list[Predicted], poisoned: list[PoisonInstance]
    ) -> None:
        for p in predicted:
            e = p.instance.event
            value = messages.instance_result(
                study_instance_uid=e.study_instance_uid,
                series_instance_uid=e.series_instance_uid,
                sop_instance_uid=e.sop_instance_uid,
                model_version=serving.version,
                probabilities=p.probabilities.tolist(),
            )
            self._publisher.publish(self._config.topic_results, e.key, value)
        for poison in poisoned:
            value = messages.dead_letter(
                poison.record,
                reason=poison.error.reason,
                state=poison.error.state,
                sop_instance_uid=poison.event.sop_instance_uid if poison.event else None,
            )
            self._publisher.publish(self._config.topic_dead_letter, poison.record.key or b"", value)

    # --- between batches ---------------------------------------------------------------------
    def _read_active(self) -> ModelVersion | None:
        with self._sessions() as session:
            return get_active_model_version(session)

    def _maybe_switch_model(self) -> None:
        if self._clock() < self._next_model_check:
            return
        self._next_model_check = self._clock() + self._config.model_poll_s
        try:
            row = self._read_active()
        except SQLAlchemyError as exc:
            log.warning("model_check_failed", error=type(exc).__name__)
            return
        current = self.serving
        if row is None:
            log.warning("no_active_model_keeps_serving", model_version=current.version)
            return
        if row.id == current.model_version_id:
            return
        try:
            self._serving = self._load_model(row)
        except ArtifactError as exc:
            log.error("model_switch_refused", model_version=row.version, error=str(exc))
            return
        self._metrics.model_switches.inc()
        self._publish_model_info()
        log.info("model_switched", previous=current.version, model_version=row.version)

    def _publish_model_info(self) -> None:
        serving = self.serving
        self._metrics.model.info({"version": serving.version, "image_size": str(serving.card.image_size)})

    def _maybe_sweep(self) -> None:
        now_mono = self._clock()
        if now_mono < self._next_sweep:
            return
        self._next_sweep = now_mono + self._config.sweep_interval_s
        self._update_backlog()
        try:
            self.sweep_completed_studies()
        except RECOVERABLE as exc:
            log.warning("study_sweep_failed", error=f"{type(exc).__name__}: {exc}")

    def sweep_completed_studies(self) -> int:
        """Mark stable studies complete, announce them and queue their reports (classifier.worker.study_completion)."""
        return self._completion.sweep(self._utcnow(), publisher=self._publisher, serving=self._serving)

    # --- retries -----------------------------------------------------------------------------
    def _retry(self, what: str, action: Callable[[], T]) -> T:
        """Run `action` until it succeeds; back off on outages; `Abandoned` if stopped meanwhile."""
        delay = self._config.retry_initial_s
        attempt = 0
        while True:
            attempt += 1
            try:
                result = action()
            except RECOVERABLE as exc:
                if is_database_error(exc):
                    kind = classify(exc)
                    if kind is DbErrorKind.SCHEMA_MISSING:
                        raise SchemaMissing() from exc
                    if kind is DbErrorKind.DATA:
                        raise _DataProblem(what) from exc
                self._metrics.dependency_retries.labels(action=what).inc()
                log.warning(
                    "dependency_unavailable",
                    action=what,
                    attempt=attempt,
                    retry_in_s=delay,
                    error=f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}",
                )
                if self._stop.wait(delay):
                    raise Abandoned(what) from exc
                delay = min(delay * 2, self._config.retry_max_s)
                continue
            if attempt > 1:
                log.info("dependency_recovered", action=what, attempts=attempt)
            return result


def _bare(poison: PoisonInstance) -> PoisonInstance:
    """The poison with only the values an instance row needs (the others may be what did not fit)."""
    if poison.event is None:
        return poison
    event = dataclasses.replace(poison.event, instance_number=None, number_of_frames=1, modality=None)
    return PoisonInstance(poison.record, event, poison.error)


def _count(batch: _Batch | None) -> int:
    return len(batch.records) if batch is not None else 0
