"""What any kidneyct process agrees to decode, defined once for the listener and the worker, so
that the listener never answers success for an instance the worker then cannot (or must not) decode.

- The image kinds the classifier decodes: one sample per pixel, MONOCHROME1 or MONOCHROME2 exactly
  as received (a value with odd whitespace such as a non-breaking space is not one of them).
- The memory budget: the decoded size of an instance (Rows x Columns x SamplesPerPixel x bytes per
  sample x NumberOfFrames) must not exceed `max_decoded_bytes`. It is checked from the header, before
  any decoder (RLE, JPEG, JPEG-LS, JPEG 2000) allocates, and a compressed frame's own header (the
  JPEG SOF or JPEG 2000 SIZ marker) must declare the size the DICOM header does, since the decoder
  sizes its output from the codestream, not from Rows and Columns.
- A Deflated Explicit VR Little Endian dataset is inflated in a stream, never to more than the budget,
  and never past `max_deflate_ratio` times the deflated bytes read once it passes DEFLATE_RATIO_FLOOR.

Every refusal is a `NotDecodable` whose message names attributes and sizes, never values.
"""

from __future__ import annotations

import struct
import zlib
from typing import IO, Any, BinaryIO, cast

# The default budget, 512 MiB of decoded pixels per instance. A CT slice (512 x 512, 16 bits) is
# 0.5 MiB; 1024 x 1024 is 2 MiB. 512 MiB holds a 1,024-frame Enhanced CT of 512 x 512 (a thin-slice
# abdomen of 80 cm at 0.625 mm) or 256 frames of 1024 x 1024, while one instance stays well inside a
# worker's memory: decoding holds the stored pixels plus their 8-bit window (1.5 x the budget).
DEFAULT_MAX_DECODED_BYTES = 512 * 1024**2

# The modalities the classifier classifies; the listener holds them to what the worker decodes.
CLASSIFIED_MODALITIES: frozenset[str] = frozenset({"CT"})
SUPPORTED_PHOTOMETRIC: frozenset[str] = frozenset({"MONOCHROME1", "MONOCHROME2"})
SUPPORTED_SAMPLES_PER_PIXEL = 1

# CT pixel data deflates about 2-4x; a ratio over 100 on a large dataset is a decompression bomb.
# Under the floor (a small, zero-padded dataset may well deflate 1000x) the ratio is not held.
DEFAULT_MAX_DEFLATE_RATIO = 100
DEFLATE_RATIO_FLOOR = 16 * 1024**2

_INFLATE_CHUNK = 1024**2


class NotDecodable(ValueError):
    """An instance this service does not decode; `over_budget` when only its size is the reason."""

    def __init__(self, detail: str, *, over_budget: bool = False) -> None:
        super().__init__(detail)
        self.over_budget = over_budget


def check_supported_image(ds: Any) -> None:
    """`NotDecodable` unless `ds` is a grayscale image the classifier decodes (values as received)."""
    samples = _int_or_none(_value(ds, "SamplesPerPixel", SUPPORTED_SAMPLES_PER_PIXEL))
    if samples != SUPPORTED_SAMPLES_PER_PIXEL:
        raise NotDecodable("not a grayscale image: SamplesPerPixel is not 1")
    photometric = _value(ds, "PhotometricInterpretation", "MONOCHROME2")
    if not isinstance(photometric, str) or photometric not in SUPPORTED_PHOTOMETRIC:
        raise NotDecodable("unsupported PhotometricInterpretation (MONOCHROME1 or MONOCHROME2 only)")


def decoded_bytes(ds: Any) -> int:
    """Rows x Columns x SamplesPerPixel x bytes per sample x NumberOfFrames: what decoding allocates."""
    sizes = {}
    for keyword in ("Rows", "Columns", "BitsAllocated"):
        value = _int_or_none(_value(ds, keyword, None))
        if value is None or value <= 0:
            raise NotDecodable(f"{keyword} is missing or not a positive number")
        sizes[keyword] = value
    samples = _int_or_none(_value(ds, "SamplesPerPixel", 1)) or 1
    frames = _int_or_none(_value(ds, "NumberOfFrames", 1)) or 1
    bytes_per_sample = (sizes["BitsAllocated"] + 7) // 8  # 1-bit data decodes to a byte per pixel
    return sizes["Rows"] * sizes["Columns"] * max(samples, 1) * bytes_per_sample * max(frames, 1)


def check_budget(ds: Any, max_decoded_bytes: int) -> int:
    """The decoded size; `NotDecodable(over_budget=True)` when it exceeds `max_decoded_bytes`."""
    size = decoded_bytes(ds)
    if size > max_decoded_bytes:
        raise NotDecodable(
            f"decoded pixel data would be {size} bytes, over the budget of {max_decoded_bytes}",
            over_budget=True,
        )
    return size


def check_frame_header(frame: bytes, *, rows: int, columns: int, samples: int) -> None:
    """A compressed frame's codestream must declare the DICOM header's size (JPEG SOF, JPEG 2000 SIZ).

    Only the first bytes of the frame are needed. Formats without such a header (RLE: sized from
    Rows and Columns) pass.
    """
    declared = _codestream_size(frame)
    if declared is None:
        return
    if declared != (rows, columns, samples):
        raise NotDecodable(
            f"the codestream declares {declared[0]} x {declared[1]} x {declared[2]}, "
            f"the header {rows} x {columns} x {samples}",
            over_budget=declared[0] * declared[1] * declared[2] > rows * columns * samples,
        )


def inflate_capped(
    source: IO[bytes], target: IO[bytes], max_bytes: int, *, max_ratio: int | None = None
) -> int:
    """Inflate the raw deflate stream `source` (PS3.5 A.5) into `target`, a chunk at a time; returns
    the bytes written, or `NotDecodable(over_budget=True)` as soon as more than `max_bytes` would be,
    or (past DEFLATE_RATIO_FLOOR) more than `max_ratio` times the deflated bytes consumed."""
    inflater = zlib.decompressobj(-zlib.MAX_WBITS)
    written = 0
    read = 0
    pending = b""
    while True:
        if not pending:
            pending = source.read(_INFLATE_CHUNK)
            if not pending:
                break
            read += len(pending)
        try:
            out = inflater.decompress(pending, _INFLATE_CHUNK)
        except zlib.error as exc:
            raise NotDecodable("the deflated dataset is not a valid deflate stream") from exc
        pending = inflater.unconsumed_tail
        written = _write_capped(target, out, written, max_bytes)
        _check_ratio(written, read - len(pending), max_ratio)
        if inflater.eof:
            break
    written = _write_capped(target, inflater.flush(), written, max_bytes)
    _check_ratio(written, read - len(pending), max_ratio)
    return written


def _check_ratio(written: int, consumed: int, max_ratio: int | None) -> None:
    if max_ratio is None or written <= DEFLATE_RATIO_FLOOR:
        return
    if written > max_ratio * max(consumed, 1):
        raise NotDecodable(
            f"the deflated dataset inflates more than {max_ratio} times its {consumed} deflated bytes "
            f"(already {written} bytes)",
            over_budget=True,
        )


def read_file_meta(fp: IO[bytes]) -> Any:
    """The file meta (a pydicom `FileMetaDataset`) of the Part 10 file at `fp`'s start; `fp` is
    left at the first byte of the dataset. `NotDecodable` when it cannot be read."""
    from pydicom.dataset import FileMetaDataset
    from pydicom.filereader import read_dataset, read_preamble

    stream = cast(BinaryIO, fp)
    try:
        read_preamble(stream, False)
        meta = read_dataset(stream, is_implicit_VR=False, is_little_endian=True, stop_when=_not_file_meta)
    except Exception as exc:  # noqa: BLE001 - pydicom raises many types for corrupt input
        raise NotDecodable("file meta cannot be read") from exc
    return FileMetaDataset(meta)


def _not_file_meta(tag: Any, _vr: Any, _length: int) -> bool:
    return bool(tag.group != 2)


def _write_capped(target: IO[bytes], data: bytes, written: int, max_bytes: int) -> int:
    if written + len(data) > max_bytes:
        raise NotDecodable(
            f"the deflated dataset inflates to more than the budget of {max_bytes} bytes", over_budget=True
        )
    target.write(data)
    return written + len(data)


def _codestream_size(frame: bytes) -> tuple[int, int, int] | None:
    """(rows, columns, components) a JPEG or JPEG 2000 codestream declares, if it is one."""
    siz = frame.find(b"\xff\x4f\xff\x51")  # JPEG 2000: SOC then SIZ (also inside a JP2 wrapper)
    if siz >= 0:
        return _j2k_size(frame, siz + 4)
    if frame.startswith(b"\xff\xd8"):
        return _jpeg_size(frame)
    return None


def _j2k_size(frame: bytes, at: int) -> tuple[int, int, int]:
    # SIZ: Lsiz Rsiz (2 bytes each), Xsiz Ysiz XOsiz YOsiz XTsiz YTsiz XTOsiz YTOsiz (4 each), Csiz (2).
    if len(frame) < at + 38:
        raise NotDecodable("the JPEG 2000 SIZ marker is cut short")
    xsiz, ysiz, xosiz, yosiz = struct.unpack_from(">IIII", frame, at + 4)
    (components,) = struct.unpack_from(">H", frame, at + 36)
    return max(ysiz - yosiz, 0), max(xsiz - xosiz, 0), components


_JPEG_SOF = frozenset({*range(0xC0, 0xD0), 0xF7}) - {0xC4, 0xC8, 0xCC}  # SOF0-15, JPEG-LS SOF55


def _jpeg_size(frame: bytes) -> tuple[int, int, int]:
    at = 2
    while at + 4 <= len(frame):
        if frame[at] != 0xFF:
            raise NotDecodable("the JPEG codestream has no frame header where one belongs")
        marker = frame[at + 1]
        if marker == 0xFF:  # fill byte
            at += 1
            continue
        (length,) = struct.unpack_from(">H", frame, at + 2)
        if marker in _JPEG_SOF:
            if at + 10 > len(frame):
                break
            rows, columns = struct.unpack_from(">HH", frame, at + 5)
            return rows, columns, frame[at + 9]
        at += 2 + length
    raise NotDecodable("the JPEG codestream has no frame header (SOF) in its first bytes")


def _value(ds: Any, keyword: str, default: Any) -> Any:
    """One element's value; a corrupt one (pydicom converts lazily and raises many types) is None."""
    try:
        return ds.get(keyword, default)
    except Exception:  # noqa: BLE001 - hostile input
        return None


def _int_or_none(value: Any) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None
