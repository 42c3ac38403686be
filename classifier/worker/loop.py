"""The classifier worker: the pipeline's steps composed in one place, and what runs between batches.

One batch goes through these steps, each its own module, in this order (commit last):

    collect -> intake -> decode -> predict (active model, then shadow/reprocess models)
            -> write (one transaction; one by one when refused on the data) -> publish -> commit

`run` overlaps three batches so that the model is not kept waiting: while batch k predicts in the
worker thread, batch k+1 decodes in the decode threads and batch k-1's rows and results are written
in the writer thread (one batch at a time, in order); batch k-1's offsets are committed, from the
worker thread, once its write and publish are done. With a batch in hand the collect step takes
only what is waiting, so at low arrival rates a batch never waits for the next instance.
Between batches, beside the pipeline: the study-completion sweep (`study_completion`), the active
model's switch (`active_model`) and the other models' poll (`shadow`).

Nothing is lost: offsets are committed only after the database commit and the publishes. When the
database or the results stream is down a step keeps the batch in hand and retries with backoff
(`storage.failures.retry_outages`); nothing is committed meanwhile. A stop request (SIGTERM)
finishes the batches in hand and returns; during an outage it returns at once without committing,
and the batch is re-delivered.
"""

from __future__ import annotations

import datetime as dt
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field

import structlog
from prometheus_client import CollectorRegistry
from sqlalchemy.orm import Session, sessionmaker

from classifier.model.serving import ServingModel, load_serving_model
from classifier.report.build import ResultConfig
from classifier.study.policy import DEFAULT_MAX_SHIFTED_FRACTION, PolicySettings
from classifier.study.rule import StudyRule
from classifier.worker.active_model import ActiveModel
from classifier.worker.batching import BatchPolicy
from classifier.worker.collect import Collect
from classifier.worker.commit import CommitOffsets
from classifier.worker.dead_letter_limit import DeadLetterLimit, stop_if_archive_unreadable
from classifier.worker.decode_step import DecodeInThreads, InFlight
from classifier.worker.decoding import Decode, DecodedInstance, PoisonInstance, decode_event
from classifier.worker.every import Every
from classifier.worker.intake import parse_records
from classifier.worker.metrics import WorkerMetrics
from classifier.worker.predict import ActivePredict, Predicted
from classifier.worker.publish import PublishResults
from classifier.worker.retrying import Retry
from classifier.worker.shadow import OtherModels, VersionBatch
from classifier.worker.study_completion import CompletionOptions, StudyCompletion
from classifier.worker.write_step import WriteBatch, Written
from storage.archive.reader import ArchiveReader
from storage.db.tables import ModelVersion
from storage.failures import Abandoned, Backoff, FailureKind, failure_kind
from storage.stream.contract import Consumer, Publisher

log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class WorkerConfig:
    archive: ArchiveReader  # opens the URIs events carry (local files and s3:// objects)
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

    @property
    def policy_settings(self) -> PolicySettings:
        return PolicySettings(
            fallback=self.rule,
            override=self.rule_from_settings,
            max_shifted_fraction=self.max_shifted_fraction,
        )


@dataclass(frozen=True, slots=True)
class PredictedBatch:
    """What a batch's predict step hands the writer."""

    predicted: list[Predicted]
    poisoned: list[PoisonInstance]
    others: list[VersionBatch]
    predict_s: float


@dataclass(frozen=True, slots=True)
class Writing:
    """A predicted batch whose rows and results the writer thread is writing."""

    batch: InFlight
    future: Future[tuple[Written, float]]
    predict_s: float


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
        decode: Decode = decode_event,
    ) -> None:
        self._consumer = consumer
        self._publisher = publisher
        self._config = config
        self._metrics = metrics or WorkerMetrics(CollectorRegistry())
        self._clock = clock
        self._utcnow = utcnow
        self._stop = threading.Event()
        self._sweep = Every(config.sweep_interval_s, clock)
        self.batches_done = 0  # for tests and benchmarks: batches fully written
        self._dead_letters = DeadLetterLimit(window=config.dead_letter_window, ratio=config.dead_letter_ratio)
        retry = Retry(
            stop=self._stop,
            backoff=Backoff(config.retry_initial_s, config.retry_max_s),
            metrics=self._metrics,
        )
        self._retry = retry
        # The pipeline's steps, in order.
        self._collect = Collect(
            consumer=consumer,
            policy=config.batch,
            stop=self._stop,
            clock=clock,
            retry_s=config.retry_initial_s,
        )
        self._decode = DecodeInThreads(
            decode_one=decode,
            reader=config.archive,
            workers=config.decode_workers,
            metrics=self._metrics,
            retry=retry,
        )
        self._predict = ActivePredict(metrics=self._metrics, batch_size=config.batch.max_size)
        # Shadow models and reprocess targets: predicted beside the active model, kept out of the clinical path.
        self._others = OtherModels(
            sessions=session_factory,
            load_model=load_model,
            metrics=self._metrics,
            redecode=self._decode.again,
            batch_size=config.batch.max_size,
            poll=Every(config.model_poll_s, clock),
            clock=clock,
        )
        self._write = WriteBatch(
            sessions=session_factory, retry=retry, policy=config.policy_settings, utcnow=utcnow
        )
        self._publish = PublishResults(
            publisher=publisher,
            topic_results=config.topic_results,
            topic_dead_letter=config.topic_dead_letter,
            retry=retry,
        )
        self._commit = CommitOffsets(consumer)
        # Writes one batch's rows and results while the worker thread predicts the next batch.
        self._writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="write")
        # Beside the pipeline, between batches.
        self._active = ActiveModel(
            sessions=session_factory,
            load_model=load_model,
            metrics=self._metrics,
            retry=retry,
            poll=Every(config.model_poll_s, clock),
        )
        self._completion = StudyCompletion(
            sessions=session_factory,
            options=CompletionOptions(
                topic_results=config.topic_results,
                stable_age_s=config.stable_age_s,
                policy=config.policy_settings,
                results=config.results,
                reader=lambda: config.archive,
                release_grace_s=config.release_grace_s,
            ),
            metrics=self._metrics,
            clock=clock,
        )

    # --- control --------------------------------------------------------------------------
    def request_stop(self) -> None:
        """Finish the batches in hand and return from `run` (safe from a signal handler)."""
        self._stop.set()

    @property
    def model_loaded(self) -> bool:
        """For readiness: a model version is loaded and the worker can predict."""
        return self._active.loaded

    @property
    def serving(self) -> ServingModel:
        return self._active.serving

    def start(self) -> ServingModel:
        """Load the active model version (`NoActiveModel` when there is none) and the shadows."""
        serving = self._active.start()
        self._others.refresh(force=True)
        return serving

    def start_when_model_active(self) -> bool:
        """`start`, waiting while no model is active or its artifact is unusable (`ActiveModel.wait_until_loaded`)."""
        if not self._active.wait_until_loaded(self._stop):
            return False
        self._others.refresh(force=True)
        return True

    def run(self) -> None:
        """Consume until `request_stop`; returns after the batches in hand are committed."""
        if not self._active.loaded:
            self.start()
        pending: InFlight | None = None  # collected, decoding
        writing: Writing | None = None  # predicted, its rows being written in the writer thread
        try:
            while True:
                # With a batch in hand, take only what is waiting: never hold a batch for an idle wait.
                in_hand = pending is not None or writing is not None
                records = [] if self._stop.is_set() else self._collect(wait=not in_hand)
                incoming = (
                    self._decode.submit(parse_records(records), self.serving.preprocessing)
                    if records
                    else None
                )
                if pending is not None:
                    writing = self._finish(pending, writing)
                elif writing is not None:
                    self._complete(writing)
                    writing = None
                pending = incoming
                if pending is None and writing is None:
                    self._commit()  # idle: retry a commit that failed
                    if self._stop.is_set():
                        break
                self._between_batches()
        except Abandoned:
            held = [b for b in (pending, writing.batch if writing else None) if b is not None]
            uncommitted = sum(len(b.records) for b in held)
            log.warning("worker_stopped_during_outage", uncommitted_records=uncommitted)
        finally:
            self._stop.set()  # a write retrying through an outage gives up: its offsets stay uncommitted
            self._writer.shutdown(wait=True, cancel_futures=True)
            self._decode.shutdown()
        log.info("worker_stopped", batches=self.batches_done)

    # --- one batch ---------------------------------------------------------------------------
    def _finish(self, batch: InFlight, writing: Writing | None) -> Writing | None:
        """Predict `batch` while the previous batch's rows are written, then hand its rows to the writer."""
        if not batch.records:  # release hints only: noted after every row before them is written
            if writing is not None:
                self._complete(writing)
            self._commit.add([r for r, _ in batch.intake.hints])
            self._commit()
            self._completion.note_released([h for _, h in batch.intake.hints])
            return None
        serving = self.serving
        with structlog.contextvars.bound_contextvars(model_version=serving.version):
            predicted = self._predict_batch(serving, batch)
            if writing is not None:
                self._complete(writing)
            future = self._writer.submit(self._write_and_publish, serving, predicted)
            return Writing(batch, future, predicted.predict_s)

    def _predict_batch(self, serving: ServingModel, batch: InFlight) -> PredictedBatch:
        """Decode join, the active model's predictions and the other models' (each raises `Abandoned`
        when stopped during an outage)."""
        outcomes = [*batch.intake.invalid, *self._decode.join(batch, serving.preprocessing)]
        stop_if_archive_unreadable(self._dead_letters, outcomes, archive=self._config.archive.describe())
        decoded = [o for o in outcomes if isinstance(o, DecodedInstance)]
        poisoned = [o for o in outcomes if isinstance(o, PoisonInstance)]
        live, for_other_versions = self._others.split(serving, decoded)

        started = self._clock()
        predicted = self._predict(serving, live)
        predict_s = self._clock() - started
        # Loading a reprocess target reads the database, a shadow may decode again: outages are waited out.
        others, unavailable = self._retry(
            "predict_other_models", lambda: self._others.predict(live, for_other_versions)
        )
        return PredictedBatch(predicted, [*poisoned, *unavailable], others, predict_s)

    def _write_and_publish(self, serving: ServingModel, batch: PredictedBatch) -> tuple[Written, float]:
        """In the writer thread, one batch at a time and in order: its rows, then its results."""
        with structlog.contextvars.bound_contextvars(model_version=serving.version):
            started = self._clock()
            written = self._write(serving, batch.predicted, batch.poisoned, batch.others)
            write_s = self._clock() - started
            self._publish(serving.version, written.predicted, written.poisoned)
        return written, write_s

    def _complete(self, writing: Writing) -> None:
        """Wait for a batch's rows and results, then commit its offsets (hints' with them) and note its hints."""
        written, write_s = writing.future.result()  # re-raises what the writer raised (`Abandoned`)
        batch = writing.batch
        self._commit.add([r for r, _ in batch.intake.hints])
        self._commit.add(batch.records)
        self._commit()
        self.batches_done += 1
        self._report(batch, written, predict_s=writing.predict_s, write_s=write_s)
        self._completion.note_released([h for _, h in batch.intake.hints])

    def _report(self, batch: InFlight, written: Written, *, predict_s: float, write_s: float) -> None:
        m = self._metrics
        m.events.inc(len(written.predicted) + len(written.poisoned))
        m.frames_predicted.inc(sum(len(p.probabilities) for p in written.predicted))
        for p in written.poisoned:
            m.instances_poisoned.labels(state=p.error.state).inc()
        if written.predicted:
            m.predict_seconds.observe(predict_s)
        m.write_seconds.observe(write_s)
        self._record_latency([p for p in written.predicted if not p.instance.event.is_reprocess])
        log.info(
            "batch_processed",
            events=len(batch.records),
            frames=sum(len(p.probabilities) for p in written.predicted),
            poisoned=len(written.poisoned),
            new_prediction_rows=written.new_rows,
            other_model_rows=written.other_rows,
            predict_s=round(predict_s, 4),
            write_s=round(write_s, 4),
        )

    def _record_latency(self, predicted: list[Predicted]) -> None:
        """C-STORE success (the event's received_at) to prediction rows committed, per instance."""
        now = self._utcnow()
        for p in predicted:
            seconds = (now - p.instance.event.received_at).total_seconds()
            self._metrics.store_to_prediction_seconds.observe(max(0.0, seconds))

    # --- between batches ---------------------------------------------------------------------
    def _between_batches(self) -> None:
        self._maybe_sweep()
        self._active.maybe_switch()
        self._others.refresh()

    def _maybe_sweep(self) -> None:
        if not self._sweep.due():
            return
        self._update_backlog()
        try:
            self.sweep_completed_studies()
        except Exception as exc:
            if failure_kind(exc) is FailureKind.OTHER:
                raise
            log.warning("study_sweep_failed", error=f"{type(exc).__name__}: {exc}")

    def _update_backlog(self) -> None:
        try:
            value = self._consumer.backlog()
        except Exception as exc:
            if failure_kind(exc) is FailureKind.OTHER:
                raise
            log.debug("backlog_unknown", error=type(exc).__name__)
            return
        if value is not None:
            self._metrics.backlog.set(value)

    def sweep_completed_studies(self) -> int:
        """Mark stable studies complete, announce them and queue their reports (classifier.worker.study_completion)."""
        return self._completion.sweep(
            self._utcnow(), publisher=self._publisher, serving=self._active.serving_or_none
        )
