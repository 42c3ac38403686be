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

from classifier import messages
from classifier.batching import BatchPolicy, next_poll
from classifier.decoding import DecodedInstance, Outcome, PoisonInstance, decode_record
from classifier.errors import ArtifactError, NoActiveModel
from classifier.metrics import WorkerMetrics
from classifier.serving import ServingModel, load_serving_model
from classifier.study_rule import StudyRule, completion_cutoff, is_complete
from classifier.writer import Predicted, write_batch
from storage.model_versions import get_active_model_version
from storage.models import CLASS_NAMES, ModelVersion, StudyPrediction
from storage.results import PROBABILITY_COLUMNS, IncompleteStudy, incomplete_studies, mark_study_complete
from storage.stream import Consumer, Publisher, Record, StreamUnavailable, TopicPartition, next_offsets

log = structlog.get_logger(__name__)

T = TypeVar("T")
RECOVERABLE = (SQLAlchemyError, StreamUnavailable)
MAX_COMMIT_ATTEMPTS = 5


@dataclass(frozen=True)
class WorkerConfig:
    archive_dir: Path
    topic_results: str
    topic_dead_letter: str
    batch: BatchPolicy
    rule: StudyRule
    stable_age_s: float = 60.0
    decode_workers: int = 2
    model_poll_s: float = 5.0
    sweep_interval_s: float = 1.0
    retry_initial_s: float = 0.5
    retry_max_s: float = 30.0


@dataclass
class _Batch:
    records: list[Record]
    futures: list[Future[Outcome]] = field(default_factory=list)


class Abandoned(Exception):
    """Stop was requested while an outage kept a batch from finishing: nothing was committed."""


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
        self._uncommitted: dict[TopicPartition, int] = {}
        self._commit_failures = 0
        self.batches_done = 0  # for tests and benchmarks: batches fully written

    # --- control --------------------------------------------------------------------------
    def request_stop(self) -> None:
        """Finish the batches in hand and return from `run` (safe from a signal handler)."""
        self._stop.set()

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
        self._metrics.model_ready.set(1)
        self._next_model_check = self._clock() + self._config.model_poll_s
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
        archive_dir = self._config.archive_dir
        futures = [self._pool.submit(decode_record, r, preprocessing, archive_dir) for r in records]
        return _Batch(records=records, futures=futures)

    # --- one batch ---------------------------------------------------------------------------
    def _finish(self, batch: _Batch) -> None:
        with structlog.contextvars.bound_contextvars(model_version=self.serving.version):
            self._finish_batch(batch)

    def _finish_batch(self, batch: _Batch) -> None:
        serving = self.serving
        outcomes = [f.result() for f in batch.futures]
        decoded: list[DecodedInstance] = []
        poisoned: list[PoisonInstance] = []
        for outcome in outcomes:
            if isinstance(outcome, DecodedInstance) and outcome.preprocessing != serving.preprocessing:
                # Decoded for the previous model before a switch: decode again for this one.
                outcome = decode_record(outcome.record, serving.preprocessing, self._config.archive_dir)
            (decoded if isinstance(outcome, DecodedInstance) else poisoned).append(outcome)

        started = self._clock()
        predicted = self._predict(serving, decoded)
        predict_s = self._clock() - started
        for p in poisoned:
            log.warning(
                "instance_poisoned",
                sop_instance_uid=p.event.sop_instance_uid if p.event else None,
                state=p.error.state,
                reason=p.error.reason,
                offset=p.record.offset,
                partition=p.record.partition,
            )

        def write() -> int:
            with self._sessions.begin() as session:
                written = write_batch(
                    session,
                    predicted=predicted,
                    poisoned=poisoned,
                    model_version_id=serving.model_version_id,
                    rule=self._config.rule,
                    now=self._utcnow(),
                )
            return written.new_prediction_rows

        started = self._clock()
        new_rows = self._retry("write_batch", write)
        write_s = self._clock() - started
        self._retry("publish_results", lambda: self._publish(serving, predicted, poisoned))
        for tp, offset in next_offsets(batch.records).items():
            self._uncommitted[tp] = max(offset, self._uncommitted.get(tp, 0))
        self._commit_offsets()
        self.batches_done += 1
        self._record_batch(predicted, poisoned, predict_s=predict_s, write_s=write_s)
        log.info(
            "batch_processed",
            events=len(batch.records),
            frames=sum(len(p.probabilities) for p in predicted),
            poisoned=len(poisoned),
            new_prediction_rows=new_rows,
            predict_s=round(predict_s, 4),
            write_s=round(write_s, 4),
        )

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
        probabilities = serving.predict(tensors, self._config.batch.max_size)
        out, start = [], 0
        for d in decoded:
            n = len(d.tensors)
            out.append(Predicted(d, probabilities[start : start + n]))
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
        log.info("model_switched", previous=current.version, model_version=row.version)

    def _maybe_sweep(self) -> None:
        now_mono = self._clock()
        if now_mono < self._next_sweep:
            return
        self._next_sweep = now_mono + self._config.sweep_interval_s
        try:
            self.sweep_completed_studies()
        except RECOVERABLE as exc:
            log.warning("study_sweep_failed", error=f"{type(exc).__name__}: {exc}")

    def sweep_completed_studies(self) -> int:
        """Mark stable studies complete and announce them.

        Three short steps, so that no database transaction is open while publishing (on the
        embedded default the publisher writes to the same SQLite file): read the candidates,
        announce them (at-least-once), then mark each complete unless it was re-opened meanwhile.
        """
        now = self._utcnow()
        stable_age_s = self._config.stable_age_s
        announcements: list[tuple[IncompleteStudy, bytes, str, str]] = []
        with self._sessions() as session:
            for candidate in incomplete_studies(session, cutoff=completion_cutoff(now, stable_age_s)):
                if not is_complete(
                    last_received_at=candidate.last_received_at,
                    last_updated_at=candidate.updated_at,
                    pending_instances=candidate.pending_instances,
                    now=now,
                    stable_age_s=stable_age_s,
                ):
                    continue
                row = session.get(StudyPrediction, candidate.study_prediction_id)
                version = session.get(ModelVersion, candidate.model_version_id)
                if row is None or version is None:
                    continue
                value = messages.study_complete(
                    study_instance_uid=candidate.study_instance_uid,
                    model_version=version.version,
                    label=row.label,
                    max_probability={
                        c: getattr(row, col) for c, col in zip(CLASS_NAMES, PROBABILITY_COLUMNS, strict=True)
                    },
                    n_predicted={c: getattr(row, f"n_{c.lower()}") for c in CLASS_NAMES},
                    n_instances=row.n_instances,
                    completed_at=now,
                )
                announcements.append((candidate, value, version.version, row.label))
        for candidate, value, _, _ in announcements:
            self._publisher.publish(self._config.topic_results, candidate.study_instance_uid.encode(), value)
        done = 0
        with self._sessions.begin() as session:
            for candidate, _, version_name, label in announcements:
                marked = mark_study_complete(
                    session,
                    study_prediction_id=candidate.study_prediction_id,
                    expected_updated_at=candidate.updated_at,
                    now=now,
                )
                if marked:
                    done += 1
                    log.info(
                        "study_completed",
                        study_instance_uid=candidate.study_instance_uid,
                        model_version=version_name,
                        label=label,
                    )
        self._metrics.studies_completed.inc(done)
        return done

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


def _count(batch: _Batch | None) -> int:
    return len(batch.records) if batch is not None else 0
