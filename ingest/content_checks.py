"""Checks that a dataset's content can be what its header says, so that a sender is never told
success for an instance the worker could only fail on (docs/conformance.md lists each decision):

- the dataset is encoded as its declared transfer syntax says (explicit or implicit VR);
- native pixel data is exactly Rows x Columns x Frames x Samples x BitsAllocated long, and lies
  within the received bytes; encapsulated pixel data has the undefined length PS3.5 A.4 requires;
- the decoded size fits the memory budget, and the first compressed frame's own header (JPEG SOF,
  JPEG 2000 SIZ) declares the size the DICOM header does (`common.decodable`), before any decoding;
- with `decode_first_frame`, the first frame of compressed pixel data decodes (one frame only,
  however many the instance has), and only once the checks above have passed.

All are cheap except the decode, which costs one frame's decode per compressed instance.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, BinaryIO

from pydicom.dataset import Dataset
from pydicom.filereader import read_dataset, read_preamble
from pydicom.uid import UID, DeflatedExplicitVRLittleEndian

from common.decodable import NotDecodable, check_budget, check_frame_header, check_supported_image
from common.files import from_start
from ingest.statuses import Failure
from ingest.validation import InvalidInstance, invalid_if_raises

PIXEL_DATA = 0x7FE00010
UNDEFINED_LENGTH = 0xFFFFFFFF
_IMAGE_ATTRIBUTES = ("Rows", "Columns", "BitsAllocated", "SamplesPerPixel")
# The first bytes of the first fragment hold a codestream's frame header (SOF or SIZ).
_FRAME_HEAD_BYTES = 64 * 1024
_ITEM_TAG = b"\xfe\xff\x00\xe0"


def check_encoding(source: Path | BinaryIO, transfer_syntax_uid: str) -> None:
    """`InvalidInstance(ENCODING_MISMATCH)` when the first element is in the other VR encoding.

    The same test pydicom applies (is the VR field two upper-case letters?); pydicom only warns
    and reads on, which would hide a sender that mislabels what it sends.
    """
    syntax = UID(transfer_syntax_uid)
    if syntax == DeflatedExplicitVRLittleEndian or not syntax.is_transfer_syntax:
        return  # a deflate stream has no readable first element; unknown syntaxes were never accepted
    first = _first_element_bytes(source)
    if len(first) < 6:
        return  # an empty dataset: the UID checks refuse it
    looks_explicit = 0x40 < first[4] < 0x5B and 0x40 < first[5] < 0x5B
    if looks_explicit == syntax.is_implicit_VR:
        found = "explicit" if looks_explicit else "implicit"
        raise InvalidInstance(
            Failure.ENCODING_MISMATCH,
            f"dataset is encoded in {found} VR, not as its transfer syntax {syntax.name} declares",
        )


def check_pixel_data(ds: Dataset, *, transfer_syntax_uid: str, size_bytes: int) -> None:
    """`InvalidInstance(PIXEL_DATA_INVALID)` when the pixel data cannot match the image header."""
    raw = _raw_element(ds, PIXEL_DATA)
    if raw is None:
        raise InvalidInstance(Failure.PIXEL_DATA_INVALID, "no Pixel Data")
    syntax = UID(transfer_syntax_uid)
    length, undefined = _length(raw)
    if syntax.is_encapsulated:
        if not undefined:
            raise InvalidInstance(
                Failure.PIXEL_DATA_INVALID, "compressed Pixel Data must be encapsulated (undefined length)"
            )
        return
    if undefined:
        raise InvalidInstance(Failure.PIXEL_DATA_INVALID, "native Pixel Data must have a defined length")
    expected = expected_native_length(ds)
    if length not in (expected, expected + 1):  # +1: the even-length pad of 1-bit or odd data
        raise InvalidInstance(
            Failure.PIXEL_DATA_INVALID,
            f"Pixel Data is {length} bytes, the image header needs {expected}",
        )
    value_tell = getattr(raw, "value_tell", None)
    if (
        syntax != DeflatedExplicitVRLittleEndian
        and value_tell is not None
        and value_tell + length > size_bytes
    ):
        raise InvalidInstance(Failure.PIXEL_DATA_INVALID, "Pixel Data runs past the end of the dataset")


def expected_native_length(ds: Dataset) -> int:
    """Rows x Columns x Frames x Samples x BitsAllocated, in bytes (PS3.5 8.1.1)."""
    values: dict[str, int] = {}
    for keyword in _IMAGE_ATTRIBUTES:
        value = _positive_int(ds, keyword)
        if value is None:
            raise InvalidInstance(
                Failure.PIXEL_DATA_INVALID, f"{keyword} is missing or not a positive number"
            )
        values[keyword] = value
    frames = _positive_int(ds, "NumberOfFrames") or 1
    bits = values["Rows"] * values["Columns"] * frames * values["SamplesPerPixel"] * values["BitsAllocated"]
    return (bits + 7) // 8


def check_decodable(ds: Dataset, *, max_decoded_bytes: int, image: bool) -> None:
    """`InvalidInstance` before any decoding: for an `image` the worker classifies, one it would not
    decode (UNSUPPORTED_IMAGE); for any pixel data, a decoded size over the memory budget
    (DECODED_TOO_LARGE) or none that can be known (PIXEL_DATA_INVALID)."""
    try:
        if image:
            check_supported_image(ds)
    except NotDecodable as exc:
        raise InvalidInstance(Failure.UNSUPPORTED_IMAGE, str(exc)) from exc
    try:
        check_budget(ds, max_decoded_bytes)
    except NotDecodable as exc:
        failure = Failure.DECODED_TOO_LARGE if exc.over_budget else Failure.PIXEL_DATA_INVALID
        raise InvalidInstance(failure, str(exc)) from exc


def check_first_frame_header(source: Path | BinaryIO, ds: Dataset, *, transfer_syntax_uid: str) -> None:
    """The first compressed frame's codestream must declare Rows x Columns x SamplesPerPixel; read
    from its first 64 KiB, never decoded."""
    if not UID(transfer_syntax_uid).is_encapsulated:
        return
    head = _first_fragment_head(source, _raw_element(ds, PIXEL_DATA))
    try:
        check_frame_header(
            head,
            rows=int(ds.Rows),
            columns=int(ds.Columns),
            samples=int(ds.get("SamplesPerPixel", 1)),
        )
    except NotDecodable as exc:
        raise InvalidInstance(_failure_of(exc), str(exc)) from exc


def _failure_of(exc: NotDecodable) -> Failure:
    return Failure.DECODED_TOO_LARGE if exc.over_budget else Failure.UNSUPPORTED_IMAGE


def _first_fragment_head(source: Path | BinaryIO, raw: Any) -> bytes:
    """The first bytes of the first fragment after the Basic Offset Table (PS3.5 A.4)."""
    value_tell = getattr(raw, "value_tell", None)
    if value_tell is None:
        raise InvalidInstance(Failure.PIXEL_DATA_INVALID, "compressed Pixel Data cannot be located")
    with from_start(source) as fp:
        fp.seek(value_tell)
        fp.seek(_item_length(fp), 1)  # the offset table
        return bytes(fp.read(min(_item_length(fp), _FRAME_HEAD_BYTES)))


def _item_length(fp: BinaryIO) -> int:
    item = fp.read(8)
    if len(item) < 8 or item[:4] != _ITEM_TAG:
        raise InvalidInstance(Failure.PIXEL_DATA_INVALID, "compressed Pixel Data has no fragment")
    return int.from_bytes(item[4:], "little")


def check_first_frame_decodes(source: Path | BinaryIO, *, transfer_syntax_uid: str) -> None:
    """Decode the first frame of compressed pixel data; `InvalidInstance(PIXEL_DATA_INVALID)` if it fails."""
    if not UID(transfer_syntax_uid).is_encapsulated:
        return
    from pydicom.pixels import pixel_array

    with (
        invalid_if_raises(Failure.PIXEL_DATA_INVALID, "the first frame does not decode"),
        from_start(source) as readable,
    ):
        pixel_array(readable, index=0)


def _raw_element(ds: Dataset, tag: int) -> Any:
    with invalid_if_raises(Failure.UNDECODABLE, "Pixel Data cannot be read"):
        return ds.get_item(tag, keep_deferred=True)  # its length and offset, never its bytes


def _length(element: Any) -> tuple[int, bool]:
    """(value length, undefined length?) of a raw (deferred) or an already converted element."""
    if hasattr(element, "length"):  # RawDataElement: nothing read yet
        length = int(element.length)
        return length, length == UNDEFINED_LENGTH
    undefined = bool(getattr(element, "is_undefined_length", False))
    value = element.value
    return (len(value) if value is not None else 0), undefined


def _positive_int(ds: Dataset, keyword: str) -> int | None:
    try:
        value = int(ds.get(keyword))
    except Exception:  # noqa: BLE001 - missing, multi-valued or corrupt: not a usable number
        return None
    return value if value > 0 else None


def _first_element_bytes(source: Path | BinaryIO) -> bytes:
    """The 6 bytes after the file meta: the first element's tag and VR (or length)."""
    with from_start(source) as fp:
        with invalid_if_raises(Failure.UNDECODABLE, "file meta cannot be read"):
            read_preamble(fp, False)
            read_dataset(fp, is_implicit_VR=False, is_little_endian=True, stop_when=_not_file_meta)
        return bytes(fp.read(6))


def _not_file_meta(tag: Any, _vr: Any, _length: int) -> bool:
    return bool(tag.group != 2)
