"""What any process decodes, defined once (common/decodable.py): the memory budget from the header,
the codestream's own size, the image kinds, and deflate inflated in a stream under a cap."""

from __future__ import annotations

import io
import zlib

import numpy as np
import pytest
from pydicom import dcmread
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset
from pydicom.encaps import generate_frames

from common.decodable import (
    DEFLATE_RATIO_FLOOR,
    NotDecodable,
    check_budget,
    check_frame_header,
    check_supported_image,
    decoded_bytes,
    inflate_capped,
)
from fuzz import bombs


def _image(**values: object) -> Dataset:
    ds = Dataset()
    ds.Rows, ds.Columns, ds.BitsAllocated, ds.SamplesPerPixel = 512, 512, 16, 1
    for keyword, value in values.items():
        setattr(ds, keyword, value)
    return ds


def _first_frame(name: str) -> tuple[Dataset, bytes]:
    ds = dcmread(get_testdata_file(name))
    return ds, next(generate_frames(ds.PixelData, number_of_frames=int(ds.get("NumberOfFrames", 1))))


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        ({}, 512 * 512 * 2),
        ({"NumberOfFrames": 300}, 512 * 512 * 2 * 300),
        ({"BitsAllocated": 12}, 512 * 512 * 2),  # 12 bits decode to two bytes a sample
        ({"BitsAllocated": 1}, 512 * 512),  # 1-bit data decodes to a byte a pixel
        ({"SamplesPerPixel": 3, "BitsAllocated": 8}, 512 * 512 * 3),
    ],
)
def test_decoded_size_is_rows_columns_samples_bytes_frames(values: dict[str, object], expected: int) -> None:
    """Rows x Columns x SamplesPerPixel x bytes per sample x NumberOfFrames."""
    assert decoded_bytes(_image(**values)) == expected


def test_over_the_budget_is_refused_before_decoding() -> None:
    """65535 x 65535 at 8 bits (4 GiB) is over a 512 MiB budget; 512 x 512 is not."""
    assert check_budget(_image(), 512 * 1024**2) == 512 * 512 * 2
    with pytest.raises(NotDecodable, match="over the budget") as caught:
        check_budget(_image(Rows=65535, Columns=65535, BitsAllocated=8), 512 * 1024**2)
    assert caught.value.over_budget


@pytest.mark.parametrize("keyword", ["Rows", "Columns", "BitsAllocated"])
def test_missing_or_zero_dimensions_are_not_decodable(keyword: str) -> None:
    """Without a positive Rows, Columns or BitsAllocated no size can be known: refused."""
    with pytest.raises(NotDecodable, match=keyword):
        decoded_bytes(_image(**{keyword: 0}))


@pytest.mark.parametrize("value", ["MONOCHROME1", "MONOCHROME2"])
def test_grayscale_images_are_supported(value: str) -> None:
    """MONOCHROME1 and MONOCHROME2 with one sample per pixel are what the classifier decodes."""
    check_supported_image(_image(PhotometricInterpretation=value))


@pytest.mark.parametrize(
    "values",
    [
        {"PhotometricInterpretation": "MONOCHROME2\xa0"},
        {"PhotometricInterpretation": " MONOCHROME2"},
        {"PhotometricInterpretation": "MONOCHROME2\t"},
        {"PhotometricInterpretation": "RGB", "SamplesPerPixel": 3},
        {"PhotometricInterpretation": "MONOCHROME2", "SamplesPerPixel": 3},
    ],
)
def test_other_images_are_not_supported(values: dict[str, object]) -> None:
    """Odd whitespace, colour or several samples: not an image the classifier decodes."""
    with pytest.raises(NotDecodable):
        check_supported_image(_image(**values))


@pytest.mark.parametrize(
    "name", ["693_J2KR.dcm", "JPEG2000.dcm", "JPEG-LL.dcm", "emri_small_jpeg_ls_lossless.dcm"]
)
def test_a_codestream_declaring_the_header_size_passes(name: str) -> None:
    """JPEG 2000 (SIZ), JPEG lossless and JPEG-LS (SOF) frames of real files match their headers."""
    ds, frame = _first_frame(name)
    check_frame_header(frame, rows=ds.Rows, columns=ds.Columns, samples=ds.SamplesPerPixel)


def test_a_codestream_declaring_more_than_the_header_is_refused() -> None:
    """A JPEG 2000 SIZ of 65535 x 65535 under a 512 x 512 header: refused, as over the budget."""
    ds, data = bombs.j2k_bomb(dicom_dims_too=False)
    frame = next(generate_frames(ds.PixelData, number_of_frames=1))
    with pytest.raises(NotDecodable, match="65535 x 65535") as caught:
        check_frame_header(frame, rows=512, columns=512, samples=1)
    assert caught.value.over_budget


def test_a_jpeg_frame_of_another_size_is_refused() -> None:
    """A JPEG SOF that disagrees with Rows and Columns is refused (not as over budget when smaller)."""
    ds, frame = _first_frame("JPEG-LL.dcm")
    with pytest.raises(NotDecodable) as caught:
        check_frame_header(frame, rows=ds.Rows * 2, columns=ds.Columns, samples=1)
    assert not caught.value.over_budget


def test_rle_frames_have_no_codestream_header_to_check() -> None:
    """RLE is sized from Rows and Columns alone: the budget covers it."""
    ds, frame = _first_frame("MR_small_RLE.dcm")
    check_frame_header(frame, rows=1, columns=1, samples=1)


def _deflate(data: bytes) -> bytes:
    compressor = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    return compressor.compress(data) + compressor.flush()


def test_inflating_under_the_cap_gives_the_data() -> None:
    """A deflate stream under the cap inflates to exactly its data."""
    data = bytes(range(256)) * 4000
    target = io.BytesIO()
    assert inflate_capped(io.BytesIO(_deflate(data)), target, len(data)) == len(data)
    assert target.getvalue() == data


def test_inflating_stops_at_the_cap_without_holding_the_rest() -> None:
    """64 MiB of zeros (64 KB deflated) against a 4 MiB cap: refused, at most 4 MiB ever written."""
    target = io.BytesIO()
    with pytest.raises(NotDecodable, match="inflates to more") as caught:
        inflate_capped(io.BytesIO(_deflate(bytes(64 * 1024**2))), target, 4 * 1024**2)
    assert caught.value.over_budget
    assert len(target.getvalue()) <= 4 * 1024**2


def test_a_broken_deflate_stream_is_not_decodable() -> None:
    """Bytes that are no deflate stream: refused, but not as over budget."""
    with pytest.raises(NotDecodable) as caught:
        inflate_capped(io.BytesIO(b"\xff" * 100), io.BytesIO(), 10**6)
    assert not caught.value.over_budget


def test_inflating_past_the_ratio_stops_soon_after_the_floor() -> None:
    """256 MiB of zeros (about 256 KB deflated, 1000x) under a 512 MiB cap but a 100x ratio: refused
    as over budget once past the 16 MiB floor, never much more than the floor written."""
    target = io.BytesIO()
    with pytest.raises(NotDecodable, match="more than 100 times") as caught:
        inflate_capped(io.BytesIO(_deflate(bytes(256 * 1024**2))), target, 512 * 1024**2, max_ratio=100)
    assert caught.value.over_budget
    assert len(target.getvalue()) <= DEFLATE_RATIO_FLOOR + 1024**2


def test_a_small_zero_padded_stream_passes_the_ratio_under_the_floor() -> None:
    """8 MiB of zeros deflate 1000x, but under the floor the ratio is not held."""
    data = bytes(8 * 1024**2)
    assert inflate_capped(io.BytesIO(_deflate(data)), io.BytesIO(), len(data), max_ratio=100) == len(data)


def test_a_large_stream_at_a_ct_like_ratio_passes() -> None:
    """24 MiB of 12-bit noisy pixels (deflating about 2x) pass a 100x ratio past the floor."""
    data = _ct_like_pixels(24 * 1024**2)
    assert inflate_capped(io.BytesIO(_deflate(data)), io.BytesIO(), len(data), max_ratio=100) == len(data)


def _ct_like_pixels(size: int) -> bytes:
    """Little-endian 16-bit values of a smooth field plus a few bits of noise, as CT deflates."""
    rng = np.random.default_rng(7)
    values = 1000 + (np.arange(size // 2) % 512) + rng.integers(0, 64, size // 2)
    return values.astype("<u2").tobytes()
