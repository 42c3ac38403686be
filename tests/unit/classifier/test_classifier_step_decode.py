"""The decode step: events decoded in threads, outages of the object store waited out, an instance
decoded for a model that was switched away from decoded again."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
from worker_steps_kit import event, metrics, preprocessing, record

from classifier.worker.decode_step import DecodeInThreads
from classifier.worker.decoding import DecodedInstance, Outcome, PoisonInstance, Preprocessing
from classifier.worker.errors import ArchiveFileMissing
from classifier.worker.intake import parse_records
from classifier.worker.retrying import Retry
from storage.archive.reader import ArchiveReader, ArchiveUnavailable
from storage.failures import Backoff
from storage.stream.contract import Record
from storage.stream.events import InstanceEvent


class Decoder:
    """Decodes to zeros of the asked size; instance 2's file is missing; the first `outages` calls fail."""

    def __init__(self, outages: int = 0) -> None:
        self.outages = outages
        self.calls: list[tuple[int, int]] = []  # (instance number, image size)
        self._lock = threading.Lock()

    def __call__(
        self, record: Record, event: InstanceEvent, pre: Preprocessing, reader: ArchiveReader
    ) -> Outcome:
        with self._lock:
            self.calls.append((event.instance_number or 0, pre.image_size))
            if self.outages:
                self.outages -= 1
                raise ArchiveUnavailable("object store does not answer")
        if event.instance_number == 2:
            return PoisonInstance(record, event, ArchiveFileMissing("gone"))
        tensors = np.zeros((1, pre.image_size, pre.image_size, 3), dtype=np.float32)
        return DecodedInstance(record, event, None, "CT", tensors, pre)


def _step(decoder: Decoder, tmp_path: Path):  # noqa: ANN202
    m = metrics()
    retry = Retry(stop=threading.Event(), backoff=Backoff(0.01, 0.01), metrics=m)
    return DecodeInThreads(
        decode_one=decoder, reader=ArchiveReader(tmp_path), workers=2, metrics=m, retry=retry
    ), m


def _intake(*numbers: int):  # noqa: ANN202
    return parse_records([record(i, event(n).to_json()) for i, n in enumerate(numbers)])


def test_outcomes_come_back_in_record_order_and_count_as_decodes(tmp_path: Path) -> None:
    """Decoded and poison outcomes in the order of the records; each decode counted once."""
    decoder = Decoder()
    step, m = _step(decoder, tmp_path)
    try:
        batch = step.submit(_intake(1, 2, 3), preprocessing(4))
        outcomes = step.join(batch, preprocessing(4))
    finally:
        step.shutdown()
    assert [o.event.instance_number for o in outcomes if o.event] == [1, 2, 3]
    assert [type(o).__name__ for o in outcomes] == ["DecodedInstance", "PoisonInstance", "DecodedInstance"]
    assert m.registry.get_sample_value("kidneyct_worker_decodes_total") == 3


def test_an_object_store_outage_is_retried_not_poison(tmp_path: Path) -> None:
    """A decode that raises ArchiveUnavailable is retried with backoff until the store answers."""
    decoder = Decoder(outages=2)
    step, m = _step(decoder, tmp_path)
    try:
        outcomes = step.join(step.submit(_intake(1), preprocessing(4)), preprocessing(4))
    finally:
        step.shutdown()
    assert isinstance(outcomes[0], DecodedInstance)
    assert (
        m.registry.get_sample_value("kidneyct_worker_dependency_retries_total", {"action": "read_archive"})
        == 1
    )


def test_decoded_for_the_previous_model_is_decoded_again(tmp_path: Path) -> None:
    """A model switch between submit and join (another input size): decoded again for the new one."""
    decoder = Decoder()
    step, _ = _step(decoder, tmp_path)
    try:
        outcomes = step.join(step.submit(_intake(1), preprocessing(4)), preprocessing(8))
        again = step.again(outcomes[0], preprocessing(16))  # type: ignore[arg-type]
    finally:
        step.shutdown()
    assert isinstance(outcomes[0], DecodedInstance) and outcomes[0].preprocessing == preprocessing(8)
    assert isinstance(again, DecodedInstance) and again.tensors.shape[1] == 16
    assert decoder.calls == [(1, 4), (1, 8), (1, 16)]
