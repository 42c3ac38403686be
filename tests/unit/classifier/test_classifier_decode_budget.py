"""The worker's decoding keeps the listener's memory budget and image definition (issue 23): a file in
the archive (received by an older listener, or reprocessed) is failed before anything decodes it."""

from __future__ import annotations

import dataclasses
import hashlib
import resource
import zlib
from pathlib import Path

import pytest
from classifier_kit import write_instance
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.filewriter import write_file_meta_info
from pydicom.uid import CTImageStorage, DeflatedExplicitVRLittleEndian, JPEG2000Lossless, RLELossless

from classifier.model.preprocess import KIDNEY_WINDOW
from classifier.worker.decoding import DecodedInstance, PoisonInstance, Preprocessing, decode_record
from classifier.worker.errors import DecodeError
from fuzz import bombs, datasets
from storage.stream.contract import Record

PRE = Preprocessing(image_size=32, window=KIDNEY_WINDOW)
MiB = 1024**2


def _archived(archive: Path, ds: Dataset, data: bytes, syntax: str) -> Record:
    """`data` archived as the listener would have (file meta, then the bytes as received); its event."""
    path = archive / f"{ds.SOPInstanceUID}.dcm"
    with path.open("wb") as f:
        f.write(b"\x00" * 128 + b"DICM")
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = CTImageStorage
        meta.MediaStorageSOPInstanceUID = str(ds.SOPInstanceUID)
        meta.TransferSyntaxUID = syntax
        write_file_meta_info(f, meta)
        f.write(data)
    template = write_instance(archive)
    content = path.read_bytes()
    event = dataclasses.replace(
        template,
        sop_instance_uid=str(ds.SOPInstanceUID),
        transfer_syntax_uid=syntax,
        archive_uri=path.as_uri(),
        sha256=hashlib.sha256(content).hexdigest(),
        size_bytes=len(content),
    )
    return Record("instances", 0, 0, b"key", event.to_json())


def _poison(outcome: object) -> str:
    assert isinstance(outcome, PoisonInstance) and isinstance(outcome.error, DecodeError)
    return str(outcome.error)


def _peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


@pytest.mark.parametrize(
    ("build", "syntax"),
    [
        (bombs.rle_bomb, RLELossless),
        (bombs.j2k_bomb, JPEG2000Lossless),
        (lambda: bombs.j2k_bomb(dicom_dims_too=False), JPEG2000Lossless),
    ],
    ids=["rle_65535", "j2k_65535", "j2k_siz_only_65535"],
)
def test_an_archived_bomb_fails_before_decoding(tmp_path: Path, build, syntax: str) -> None:  # type: ignore[no-untyped-def]
    """A bomb already in the archive is failed (DecodeError), no decoder run, memory flat."""
    ds, data = build()
    before = _peak_mib()
    reason = _poison(decode_record(_archived(tmp_path, ds, data, syntax), PRE, tmp_path))
    assert "over the budget" in reason or "65535 x 65535" in reason
    assert _peak_mib() - before < 100


def test_an_archived_deflate_bomb_is_inflated_only_up_to_the_budget(tmp_path: Path) -> None:
    """128 MiB deflated to 128 KB against a 16 MiB budget: failed while inflating, memory flat."""
    ds, data = bombs.deflate_bomb(128)
    record = _archived(tmp_path, ds, data, DeflatedExplicitVRLittleEndian)
    before = _peak_mib()
    reason = _poison(decode_record(record, PRE, tmp_path, max_decoded_bytes=16 * MiB))
    assert "inflates to more than the budget" in reason
    assert _peak_mib() - before < 64


def test_an_archived_256_mib_deflate_bomb_fails_by_its_ratio(tmp_path: Path) -> None:
    """263 KB inflating to 256 MiB, under the default budget: failed once past 16 MiB at over 100x."""
    ds, data = bombs.deflate_bomb(256)
    record = _archived(tmp_path, ds, data, DeflatedExplicitVRLittleEndian)
    before = _peak_mib()
    reason = _poison(decode_record(record, PRE, tmp_path))
    assert "more than 100 times" in reason
    assert _peak_mib() - before < 64


def test_a_deflated_slice_under_the_budget_decodes(tmp_path: Path) -> None:
    """Deflated Explicit VR Little Endian still decodes to the same tensors as its native twin."""
    ds = datasets.ct_slice()
    compressor = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    data = compressor.compress(datasets.encode(ds, implicit=False)) + compressor.flush()
    outcome = decode_record(_archived(tmp_path, ds, data, DeflatedExplicitVRLittleEndian), PRE, tmp_path)
    assert isinstance(outcome, DecodedInstance) and outcome.tensors.shape == (1, 32, 32, 3)


def test_the_worker_budget_is_the_same_ceiling(tmp_path: Path) -> None:
    """CT_small (32 KiB of pixels) decodes under a 32 KiB budget and fails under one byte less."""
    record = Record("instances", 0, 0, b"key", write_instance(tmp_path).to_json())
    assert isinstance(decode_record(record, PRE, tmp_path, max_decoded_bytes=128 * 128 * 2), DecodedInstance)
    assert "over the budget" in _poison(
        decode_record(record, PRE, tmp_path, max_decoded_bytes=128 * 128 * 2 - 1)
    )


def test_an_archived_odd_photometric_interpretation_fails_as_the_listener_would_refuse_it(
    tmp_path: Path,
) -> None:
    """'MONOCHROME2\\xa0' (accepted by an older listener) fails with the shared definition's reason."""
    ds, data = bombs.photometric_with(b"MONOCHROME2\xa0")
    reason = _poison(decode_record(_archived(tmp_path, ds, data, "1.2.840.10008.1.2.1"), PRE, tmp_path))
    assert "PhotometricInterpretation" in reason
