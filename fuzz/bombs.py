"""Small C-STORE datasets that decode (or inflate) to gigabytes, and the header values a listener
must not normalise (issue 23, items 1, 2, 7, 8). Each returns the dataset bytes (no file meta).

- `rle_bomb`: RLE Lossless, Rows = Columns = 65535, 16 bits, a few hundred bytes of segments: an RLE
  decoder sizes its output from Rows x Columns (4 GiB per segment, two segments), not from the data.
- `deflate_bomb`: Deflated Explicit VR Little Endian, a valid header and `inflated_mib` MiB of zero
  pixels (Rows = Columns = 8192, 16 bits, as many frames as fit): about 1 KB per MiB on the wire.
- `j2k_bomb`: JPEG 2000 whose codestream SIZ marker declares 65535 x 65535 (the DICOM header's Rows
  and Columns too, or still 512 x 512 with `dicom_dims_too=False`).
- `native_bomb`: native pixel data of a few bytes, Rows = Columns = 65535 and many frames.
"""

from __future__ import annotations

import struct
import zlib

from pydicom.dataset import Dataset
from pydicom.encaps import encapsulate, generate_frames

from fuzz import datasets

ABSURD = 65535


def rle_bomb(segment_bytes: int = 128) -> tuple[Dataset, bytes]:
    ds = datasets.ct_slice()
    ds.Rows = ds.Columns = ABSURD  # 16 bits: two segments of 65535 x 65535 bytes each
    # Each segment: replicate runs (0x81: 128 copies of the next byte), far too few for the image.
    segment = bytes([0x81, 0x00]) * (segment_bytes // 2)
    header = struct.pack("<16I", 2, 64, 64 + len(segment), *([0] * 13))
    ds.PixelData = encapsulate([header + segment * 2])
    ds["PixelData"].VR = "OB"
    ds["PixelData"].is_undefined_length = True  # encapsulated, as PS3.5 A.4 requires
    return ds, datasets.encode(ds, implicit=False)


def deflate_bomb(inflated_mib: int = 1024) -> tuple[Dataset, bytes]:
    """Raw deflate (PS3.5 A.5) of a valid explicit VR dataset with `inflated_mib` MiB of zero pixels."""
    ds = datasets.ct_slice()
    frame_bytes = 8192 * 8192 * 2
    frames = max(inflated_mib * 1024**2 // frame_bytes, 1)
    ds.Rows = ds.Columns = 8192
    ds.NumberOfFrames = frames
    del ds.PixelData
    header = datasets.encode(ds, implicit=False)
    pixel_length = frame_bytes * frames
    element = b"\xe0\x7f\x10\x00OW\x00\x00" + struct.pack("<I", pixel_length)
    compressor = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    out = [compressor.compress(header + element)]
    chunk = bytes(16 * 1024**2)
    for _ in range(pixel_length // len(chunk)):
        out.append(compressor.compress(chunk))
    out.append(compressor.flush())
    return ds, b"".join(out)


def j2k_bomb(*, dicom_dims_too: bool = True) -> tuple[Dataset, bytes]:
    ds = datasets.j2k_slice()
    frame = bytearray(next(generate_frames(ds.PixelData, number_of_frames=1)))
    siz = frame.find(b"\xff\x51") + 2
    # Xsiz, Ysiz (image), then XTsiz, YTsiz (one tile as large as the image).
    struct.pack_into(">II", frame, siz + 4, ABSURD, ABSURD)
    struct.pack_into(">II", frame, siz + 20, ABSURD, ABSURD)
    ds.PixelData = encapsulate([bytes(frame)])
    if dicom_dims_too:
        ds.Rows = ds.Columns = ABSURD
    return ds, datasets.encode(ds, implicit=False)


def native_bomb(frames: int = 1000) -> tuple[Dataset, bytes]:
    ds = datasets.ct_slice()
    ds.Rows = ds.Columns = ABSURD
    ds.NumberOfFrames = frames
    ds.PixelData = bytes(64)
    return ds, datasets.encode(ds, implicit=False)


def photometric_with(value: bytes) -> tuple[Dataset, bytes]:
    """A valid slice whose PhotometricInterpretation is exactly `value` on the wire."""
    ds = datasets.ct_slice()
    data = datasets.with_raw_value(datasets.encode(ds, implicit=False), "PhotometricInterpretation", value)
    return ds, data


def uid_with(keyword: str, value: bytes) -> tuple[Dataset, bytes]:
    """A valid slice whose UID element `keyword` is exactly `value` on the wire."""
    return uid_with_value(datasets.ct_slice(), keyword, value)


def uid_with_value(ds: Dataset, keyword: str, value: bytes) -> tuple[Dataset, bytes]:
    """`ds` encoded with its UID element `keyword` exactly `value` on the wire."""
    return ds, datasets.with_raw_value(datasets.encode(ds, implicit=False), keyword, value)
