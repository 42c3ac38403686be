"""Datasets a careful archive must refuse (or knowingly accept), built from a valid CT slice.

Each returns the encoded dataset bytes (no file meta), as a C-STORE carries them.
"""

from __future__ import annotations

import random
from copy import deepcopy

from pydicom import dcmread
from pydicom.data import get_testdata_file
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset
from pydicom.encaps import encapsulate, generate_frames
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_dataset
from pydicom.uid import generate_uid


def ct_slice(*, new_uids: bool = True) -> Dataset:
    """pydicom's CT_small (128 x 128, 16 bits, native), with fresh UIDs."""
    ds = dcmread(str(get_testdata_file("CT_small.dcm")))
    if new_uids:
        ds.StudyInstanceUID = generate_uid()
        ds.SeriesInstanceUID = generate_uid()
        ds.SOPInstanceUID = generate_uid()
    return ds


def j2k_slice() -> Dataset:
    """pydicom's 693_J2KR (JPEG 2000 lossless), with fresh UIDs."""
    ds = dcmread(str(get_testdata_file("693_J2KR.dcm")))
    ds.StudyInstanceUID = generate_uid()
    ds.SeriesInstanceUID = generate_uid()
    ds.SOPInstanceUID = generate_uid()
    return ds


def encode(ds: Dataset, *, implicit: bool) -> bytes:
    """The dataset encoded little endian, implicit or explicit VR, without file meta."""
    fp = DicomBytesIO()
    fp.is_implicit_VR = implicit
    fp.is_little_endian = True
    write_dataset(fp, ds)  # writes the dataset's elements only, never its file meta
    return fp.getvalue()


def with_element(ds: Dataset, keyword: str, vr: str, value: object) -> Dataset:
    """A copy with `keyword` re-encoded with another VR (for example a UID sent as LO)."""
    out = deepcopy(ds)
    tag = out.data_element(keyword).tag  # type: ignore[union-attr]
    del out[tag]
    out.add(DataElement(tag, vr, value))
    return out


def truncated_pixels(ds: Dataset, keep: int) -> Dataset:
    out = deepcopy(ds)
    out.PixelData = bytes(out.PixelData[:keep])
    return out


def j2k_with_random_payload(ds: Dataset, seed: int = 0) -> Dataset:
    """The codestream's headers kept up to the first tile's data (SOD marker), the rest random."""
    out = deepcopy(ds)
    frame = next(generate_frames(out.PixelData, number_of_frames=1))
    start = frame.find(b"\xff\x93") + 2  # after SOD: entropy-coded data
    rng = random.Random(seed)
    body = bytes(rng.randrange(256) for _ in range(len(frame) - start - 2))
    out.PixelData = encapsulate([frame[:start] + body + b"\xff\xd9"])
    return out


def with_raw_value(data: bytes, keyword: str, value: bytes) -> bytes:
    """Explicit VR bytes with one short-form element's value replaced by exactly `value`: pydicom's
    writer would strip the leading or trailing whitespace this is meant to carry."""
    from pydicom.datadict import tag_for_keyword

    tag = tag_for_keyword(keyword)
    assert tag is not None
    key = (tag >> 16).to_bytes(2, "little") + (tag & 0xFFFF).to_bytes(2, "little")
    at = data.find(key)
    vr = data[at + 4 : at + 6]
    old_length = int.from_bytes(data[at + 6 : at + 8], "little")
    head = key + vr + len(value).to_bytes(2, "little")
    return data[:at] + head + value + data[at + 8 + old_length :]
