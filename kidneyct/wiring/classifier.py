"""Builds a `Worker` from the settings: shared by `kidneyct worker` and `kidneyct serve` so the two
cannot wire a worker differently."""

from __future__ import annotations

import functools
import threading
from dataclasses import dataclass

from sqlalchemy.orm import Session, sessionmaker

from classifier.report.build import ResultConfig
from classifier.worker.batching import BatchPolicy
from classifier.worker.decoding import Decode, DecodeLimits, decode_event
from classifier.worker.loop import Worker, WorkerConfig
from classifier.worker.metrics import WorkerMetrics
from delivery.destinations import parse_destinations
from kidneyct.archives import build_archive_reader
from kidneyct.settings import Settings
from kidneyct.streams import make_consumer, make_publisher
from storage.stream.contract import Consumer, Publisher


@dataclass
class WiredWorker:
    worker: Worker
    consumer: Consumer
    publisher: Publisher

    def close(self) -> None:
        """Release the stream clients (after `worker.run` returned)."""
        self.consumer.close()
        self.publisher.close()


def worker_config(settings: Settings, *, batch_size: int | None = None) -> WorkerConfig:
    """The worker's configuration; ValueError names a bad result setting."""
    return WorkerConfig(
        archive=build_archive_reader(settings),
        topic_results=settings.topic_results,
        topic_dead_letter=settings.topic_dead_letter,
        batch=BatchPolicy(
            max_size=batch_size or settings.batch_size, max_wait_s=settings.batch_max_wait_ms / 1000
        ),
        rule=settings.study_rule()[0],
        rule_from_settings=settings.study_rule()[1],
        max_shifted_fraction=settings.study_max_shifted_fraction,
        stable_age_s=settings.study_stable_age_s,
        release_grace_s=settings.study_release_grace_s,
        decode_workers=settings.decode_workers,
        model_poll_s=settings.model_poll_s,
        dead_letter_window=settings.dead_letter_limit_window,
        dead_letter_ratio=settings.dead_letter_limit_ratio,
        results=ResultConfig(
            destinations=tuple(str(d) for d in parse_destinations(settings.result_destinations)),
            heatmap=settings.result_heatmap,
        ),
    )


def worker_decode(settings: Settings) -> Decode:
    """The worker's decoding under the listener's memory budget: no instance, received or
    reprocessed, decodes past `max_decoded_bytes`."""
    return functools.partial(
        decode_event, limits=DecodeLimits(settings.max_decoded_bytes, settings.max_deflate_ratio)
    )


def build_worker(
    settings: Settings,
    sessions: sessionmaker[Session],
    *,
    metrics: WorkerMetrics,
    batch_size: int | None = None,
    doorbell: threading.Condition | None = None,
) -> WiredWorker:
    """A worker in the consumer group of the settings, with its own consumer and publisher.

    `doorbell`: the process's embedded-queue doorbell, when its listener publishes in the same process.
    """
    consumer = make_consumer(
        settings,
        sessions,
        group_id=settings.consumer_group,
        topics=[settings.topic_instances],
        doorbell=doorbell,
    )
    publisher = make_publisher(settings, sessions, doorbell=doorbell)
    worker = Worker(
        consumer=consumer,
        publisher=publisher,
        session_factory=sessions,
        config=worker_config(settings, batch_size=batch_size),
        metrics=metrics,
        decode=worker_decode(settings),
    )
    return WiredWorker(worker, consumer, publisher)
