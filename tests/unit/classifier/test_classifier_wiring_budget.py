"""The worker `kidneyct worker` and `kidneyct serve` build decodes under KIDNEYCT_MAX_DECODED_BYTES."""

from __future__ import annotations

from pathlib import Path

from classifier_kit import write_instance

from classifier.model.preprocess import KIDNEY_WINDOW
from classifier.worker.decoding import DecodedInstance, PoisonInstance, Preprocessing
from classifier.worker.errors import DecodeError
from kidneyct.settings import Settings
from kidneyct.wiring.classifier import worker_decode
from storage.archive.reader import ArchiveReader
from storage.stream.contract import Record

PRE = Preprocessing(image_size=32, window=KIDNEY_WINDOW)


def test_the_wired_decode_keeps_the_configured_budget(tmp_path: Path) -> None:
    """CT_small (32 KiB of pixels) decodes under the default budget and fails under a 16 KiB one."""
    event = write_instance(tmp_path)
    record = Record("instances", 0, 0, b"key", event.to_json())
    reader = ArchiveReader(tmp_path)
    assert isinstance(worker_decode(Settings())(record, event, PRE, reader), DecodedInstance)
    outcome = worker_decode(Settings(max_decoded_bytes=16 * 1024))(record, event, PRE, reader)
    assert isinstance(outcome, PoisonInstance) and isinstance(outcome.error, DecodeError)
    assert "over the budget of 16384" in str(outcome.error)
