"""The listener's memory budget and its agreement with the worker (issue 23, items 1, 2, 7, 8):
bombs are refused before anything decodes them, deflate is inflated in a stream under a cap, what
the worker would not decode is refused, and UIDs are judged as received."""

from __future__ import annotations

import io
import resource
import zlib
from pathlib import Path

import numpy as np
import pytest
from ingest_support import MemoryPublisher
from prometheus_client import CollectorRegistry
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.filewriter import write_file_meta_info
from pydicom.uid import (
    CTImageStorage,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRLittleEndian,
    JPEG2000Lossless,
    RLELossless,
)
from structlog.testing import capture_logs

from classifier.model import preprocess
from common import decodable
from fuzz import bombs, datasets
from ingest import content_checks, statuses
from ingest.ingestor import Ingestor, ReceivedInstance
from ingest.metrics import IngestMetrics
from storage.archive.local import Archive
from storage.stream.events import InstanceEvent

MiB = 1024**2


def _ingestor(
    tmp_path: Path,
    publisher: MemoryPublisher,
    *,
    budget: int = decodable.DEFAULT_MAX_DECODED_BYTES,
    ratio: int = decodable.DEFAULT_MAX_DEFLATE_RATIO,
) -> Ingestor:
    return Ingestor(
        archive=Archive(tmp_path / "archive"),
        publisher=publisher,
        topic="kidneyct.instances",
        metrics=IngestMetrics(CollectorRegistry()),
        max_instance_bytes=10**9,
        image_sop_classes=frozenset({CTImageStorage}),
        max_decoded_bytes=budget,
        max_deflate_ratio=ratio,
    )


def _received(ds: Dataset, data: bytes, syntax: str, *, sop_instance: str | None = None) -> ReceivedInstance:
    """The dataset as pynetdicom's chunked receive leaves it: file meta from the command, then the bytes."""
    buffer = io.BytesIO()
    buffer.write(b"\x00" * 128 + b"DICM")
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = CTImageStorage
    meta.MediaStorageSOPInstanceUID = str(ds.SOPInstanceUID)
    meta.TransferSyntaxUID = syntax
    write_file_meta_info(buffer, meta)
    buffer.write(data)
    buffer.seek(0)
    return ReceivedInstance(
        source=buffer,
        size_bytes=len(buffer.getvalue()),
        requested_sop_class=CTImageStorage,
        requested_sop_instance=sop_instance or str(ds.SOPInstanceUID),
        transfer_syntax_uid=syntax,
        calling_ae="FUZZER",
    )


def _ingest(ingestor: Ingestor, received: ReceivedInstance) -> tuple[int, list[dict[str, object]]]:
    with capture_logs() as logs:
        status = ingestor.ingest(received)
    return status, [e for e in logs if e["event"] == "instance_rejected"]


def _peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


@pytest.mark.parametrize(
    ("build", "syntax"),
    [
        (bombs.rle_bomb, RLELossless),
        (bombs.j2k_bomb, JPEG2000Lossless),
        (lambda: bombs.j2k_bomb(dicom_dims_too=False), JPEG2000Lossless),
        (bombs.native_bomb, ExplicitVRLittleEndian),
    ],
    ids=["rle_65535", "j2k_65535", "j2k_siz_only_65535", "native_65535"],
)
def test_a_bomb_is_refused_as_too_large_before_decoding(tmp_path: Path, build, syntax: str) -> None:  # type: ignore[no-untyped-def]
    """A few kilobytes declaring gigabytes: 0xC004, reason decoded_too_large, nothing stored, no memory spent."""
    publisher = MemoryPublisher()
    ds, data = build()
    before = _peak_mib()
    status, [rejected] = _ingest(_ingestor(tmp_path, publisher), _received(ds, data, syntax))
    assert status == statuses.CANNOT_UNDERSTAND_PIXEL_DATA == 0xC004
    assert rejected["reason"] == "decoded_too_large" and rejected["status"] == "0xC004"
    assert _peak_mib() - before < 100
    assert publisher.records == [] and not (tmp_path / "archive").exists()


def test_a_deflate_bomb_is_refused_while_inflating(tmp_path: Path) -> None:
    """64 MiB of pixels deflated to 64 KB, under a 16 MiB budget: refused while inflating, memory flat."""
    publisher = MemoryPublisher()
    ds, data = bombs.deflate_bomb(128)
    before = _peak_mib()
    received = _received(ds, data, DeflatedExplicitVRLittleEndian)
    status, [rejected] = _ingest(_ingestor(tmp_path, publisher, budget=16 * MiB), received)
    assert status == 0xC004 and rejected["reason"] == "decoded_too_large"
    assert "inflates to more than the budget" in str(rejected["detail"])
    assert _peak_mib() - before < 64
    assert publisher.records == []


def test_a_256_mib_deflate_bomb_under_the_budget_is_refused_by_its_ratio(tmp_path: Path) -> None:
    """263 KB inflating to 256 MiB, under the default 512 MiB budget: 0xC004 once past 16 MiB at
    over 100x, the reason logged, memory bounded."""
    publisher = MemoryPublisher()
    ds, data = bombs.deflate_bomb(256)
    before = _peak_mib()
    received = _received(ds, data, DeflatedExplicitVRLittleEndian)
    status, [rejected] = _ingest(_ingestor(tmp_path, publisher), received)
    assert status == 0xC004 and rejected["reason"] == "decoded_too_large"
    assert "more than 100 times" in str(rejected["detail"])
    assert _peak_mib() - before < 64
    assert publisher.records == []


def test_a_large_deflated_ct_at_a_normal_ratio_is_stored(tmp_path: Path) -> None:
    """40 frames of 512 x 512 noisy 12-bit pixels (20 MiB, deflating about 2x): past the floor, stored."""
    publisher = MemoryPublisher()
    ds = datasets.ct_slice()
    ds.Rows = ds.Columns = 512
    ds.NumberOfFrames = 40
    rng = np.random.default_rng(3)
    pixels = 1000 + (np.arange(40 * 512 * 512) % 512) + rng.integers(0, 64, 40 * 512 * 512)
    ds.PixelData = pixels.astype("<u2").tobytes()
    received = _received(ds, _deflated(ds), DeflatedExplicitVRLittleEndian)
    status, rejected = _ingest(_ingestor(tmp_path, publisher, ratio=100), received)
    assert (status, rejected) == (statuses.SUCCESS, [])
    assert len(publisher.records) == 1


def _deflated(ds: Dataset) -> bytes:
    compressor = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    return compressor.compress(datasets.encode(ds, implicit=False)) + compressor.flush()


def test_a_valid_deflated_slice_is_stored_as_received(tmp_path: Path) -> None:
    """Under the budget a deflated slice is checked as what it inflates to, and archived as it came."""
    publisher = MemoryPublisher()
    ds = datasets.ct_slice()
    received = _received(ds, _deflated(ds), DeflatedExplicitVRLittleEndian)
    sent = received.source.getvalue()  # type: ignore[union-attr]
    status, rejected = _ingest(_ingestor(tmp_path, publisher), received)
    assert (status, rejected) == (statuses.SUCCESS, [])
    event = InstanceEvent.from_json(publisher.records[0][2])
    assert event.sop_instance_uid == ds.SOPInstanceUID
    assert Path(event.archive_uri.removeprefix("file://")).read_bytes() == sent


def test_a_deflated_slice_that_lies_about_its_pixels_is_refused(tmp_path: Path) -> None:
    """The inflated dataset gets the same pixel-length check as any native one."""
    ds = datasets.truncated_pixels(datasets.ct_slice(), 1000)
    received = _received(ds, _deflated(ds), DeflatedExplicitVRLittleEndian)
    status, [rejected] = _ingest(_ingestor(tmp_path, MemoryPublisher()), received)
    assert status == 0xC004 and rejected["reason"] == "pixel_data_invalid"


def test_deflate_that_is_no_deflate_stream_is_undecodable(tmp_path: Path) -> None:
    """Random bytes on a deflate context: 0xC000, nothing inflated."""
    ds = datasets.ct_slice()
    status, [rejected] = _ingest(
        _ingestor(tmp_path, MemoryPublisher()), _received(ds, b"\xff" * 4000, DeflatedExplicitVRLittleEndian)
    )
    assert status == statuses.CANNOT_UNDERSTAND and rejected["reason"] == "undecodable"


def test_an_instance_just_under_the_budget_is_stored(tmp_path: Path) -> None:
    """The budget is a ceiling, not a guess: CT_small (32 KiB of pixels) passes a 32 KiB budget."""
    ds = datasets.ct_slice()
    received = _received(ds, datasets.encode(ds, implicit=False), ExplicitVRLittleEndian)
    status, _ = _ingest(_ingestor(tmp_path, MemoryPublisher(), budget=128 * 128 * 2), received)
    assert status == statuses.SUCCESS


def test_one_byte_over_the_budget_is_refused(tmp_path: Path) -> None:
    """... and refused by a budget one byte smaller."""
    ds = datasets.ct_slice()
    received = _received(ds, datasets.encode(ds, implicit=False), ExplicitVRLittleEndian)
    status, [rejected] = _ingest(_ingestor(tmp_path, MemoryPublisher(), budget=128 * 128 * 2 - 1), received)
    assert status == 0xC004 and rejected["reason"] == "decoded_too_large"


@pytest.mark.parametrize("value", [b"MONOCHROME2\xa0", b" MONOCHROME2", b"MONOCHROME2\t", b"monochrome2 "])
def test_a_photometric_interpretation_the_worker_would_not_decode_is_refused(
    tmp_path: Path, value: bytes
) -> None:
    """Odd whitespace or case: 0xC004, reason unsupported_image (the worker would fail on it)."""
    ds, data = bombs.photometric_with(value)
    status, [rejected] = _ingest(
        _ingestor(tmp_path, MemoryPublisher()), _received(ds, data, ExplicitVRLittleEndian)
    )
    assert status == 0xC004 and rejected["reason"] == "unsupported_image"


def test_a_space_padded_photometric_interpretation_is_stored(tmp_path: Path) -> None:
    """DICOM pads CS values with a trailing space: that is MONOCHROME2, stored."""
    ds, data = bombs.photometric_with(b"MONOCHROME2 ")
    status, _ = _ingest(_ingestor(tmp_path, MemoryPublisher()), _received(ds, data, ExplicitVRLittleEndian))
    assert status == statuses.SUCCESS


def test_the_listener_and_the_worker_share_one_definition() -> None:
    """Both check images with the same function, so what one accepts the other decodes."""
    assert content_checks.check_supported_image is decodable.check_supported_image
    assert preprocess.check_supported_image is decodable.check_supported_image


@pytest.mark.parametrize("keyword", ["StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID"])
@pytest.mark.parametrize("change", [b" %s", b"%s\n", b"%s ", b"%s\x00\x00", b"%s\r\n"])
def test_a_uid_with_whitespace_is_refused_not_normalised(tmp_path: Path, keyword: str, change: bytes) -> None:
    """' 1.2.3', '1.2.3\\n' and the like: 0xC002, never stored under the stripped UID."""
    publisher = MemoryPublisher()
    ds = datasets.ct_slice()
    value = change % str(ds.data_element(keyword).value).encode()  # type: ignore[union-attr]
    _ds, data = bombs.uid_with_value(ds, keyword, value)
    status, [rejected] = _ingest(_ingestor(tmp_path, publisher), _received(ds, data, ExplicitVRLittleEndian))
    assert status == statuses.CANNOT_UNDERSTAND_INVALID_UID and rejected["reason"] == "invalid_uid"
    assert publisher.records == []


def test_a_uid_with_its_one_nul_pad_is_stored_under_the_uid(tmp_path: Path) -> None:
    """PS3.5 6.2: a UI value may end in one NUL pad; that is the UID itself."""
    publisher = MemoryPublisher()
    ds = datasets.ct_slice()
    _ds, data = bombs.uid_with_value(ds, "StudyInstanceUID", str(ds.StudyInstanceUID).encode() + b"\x00")
    status, _ = _ingest(_ingestor(tmp_path, publisher), _received(ds, data, ExplicitVRLittleEndian))
    assert status == statuses.SUCCESS
    assert InstanceEvent.from_json(publisher.records[0][2]).study_instance_uid == ds.StudyInstanceUID


def test_pixel_data_without_a_size_is_invalid_not_too_large(tmp_path: Path) -> None:
    """Columns 0: no decoded size can be known, 0xC004 pixel_data_invalid (not decoded_too_large)."""
    ds = datasets.ct_slice()
    ds.Columns = 0
    received = _received(ds, datasets.encode(ds, implicit=False), ExplicitVRLittleEndian)
    status, [rejected] = _ingest(_ingestor(tmp_path, MemoryPublisher()), received)
    assert status == 0xC004 and rejected["reason"] == "pixel_data_invalid"


def test_a_ct_with_three_samples_per_pixel_is_refused(tmp_path: Path) -> None:
    """A colour CT the worker would fail on (not grayscale): 0xC004 unsupported_image."""
    ds = datasets.ct_slice()
    ds.SamplesPerPixel, ds.PlanarConfiguration = 3, 0
    ds.PixelData = bytes(len(ds.PixelData) * 3)
    received = _received(ds, datasets.encode(ds, implicit=False), ExplicitVRLittleEndian)
    status, [rejected] = _ingest(_ingestor(tmp_path, MemoryPublisher()), received)
    assert status == 0xC004 and rejected["reason"] == "unsupported_image"
