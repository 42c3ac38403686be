"""The decode step: a batch's events decoded in threads while the previous batch predicts.

`submit` hands the events to the pool; `join` waits for their outcomes, waits out an object store
outage (the event stays uncommitted meanwhile) and decodes again an instance decoded for the
previous model when the active model changed in between.
"""

from __future__ import annotations

from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field

from classifier.worker.decoding import Decode, DecodedInstance, Outcome, Preprocessing
from classifier.worker.intake import Intake
from classifier.worker.metrics import WorkerMetrics
from classifier.worker.retrying import Retry
from storage.archive.reader import ArchiveReader, ArchiveUnavailable
from storage.stream.contract import Record
from storage.stream.events import InstanceEvent


@dataclass
class InFlight:
    """A collected batch: its parsed records and the decodes of its events under way."""

    intake: Intake
    futures: list[Future[Outcome]]

    @property
    def records(self) -> list[Record]:
        return self.intake.records


@dataclass(kw_only=True)
class DecodeInThreads:
    decode_one: Decode
    reader: ArchiveReader
    workers: int
    metrics: WorkerMetrics
    retry: Retry
    _pool: ThreadPoolExecutor = field(init=False)

    def __post_init__(self) -> None:
        self._pool = ThreadPoolExecutor(max_workers=self.workers, thread_name_prefix="decode")

    def submit(self, intake: Intake, preprocessing: Preprocessing) -> InFlight:
        futures = [self._pool.submit(self.decode, r, e, preprocessing) for r, e in intake.events]
        return InFlight(intake, futures)

    def join(self, batch: InFlight, preprocessing: Preprocessing) -> list[Outcome]:
        """The outcome of every event of `batch`, decoded for `preprocessing`."""
        return [
            self._outcome(future, record, event, preprocessing)
            for future, (record, event) in zip(batch.futures, batch.intake.events, strict=True)
        ]

    def decode(self, record: Record, event: InstanceEvent, preprocessing: Preprocessing) -> Outcome:
        self.metrics.decodes.inc()
        return self.decode_one(record, event, preprocessing, self.reader)

    def again(self, d: DecodedInstance, preprocessing: Preprocessing) -> Outcome:
        """`d` decoded for another preprocessing (another model's input size or window)."""
        return self.decode(d.record, d.event, preprocessing)

    def shutdown(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)

    def _outcome(
        self, future: Future[Outcome], record: Record, event: InstanceEvent, preprocessing: Preprocessing
    ) -> Outcome:
        try:
            outcome = future.result()
        except ArchiveUnavailable:
            outcome = self.retry("read_archive", lambda: self.decode(record, event, preprocessing))
        if isinstance(outcome, DecodedInstance) and outcome.preprocessing != preprocessing:
            # Decoded for the previous model before a switch: decode again for this one.
            outcome = self.decode(record, event, preprocessing)
        return outcome
