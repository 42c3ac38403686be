"""A Deflated Explicit VR Little Endian dataset (PS3.5 A.5) made checkable without inflating it in
memory: pydicom would `zlib.decompress` all of it at once, so 1 MB on the wire could become 1 GiB.

The dataset is inflated in a stream, a chunk at a time and never past the memory budget, into an
anonymous temporary file (removed by the system however the process ends) that carries the same
file meta with the Explicit VR Little Endian transfer syntax; the checks read that file. What is
archived is still the dataset exactly as received.
"""

from __future__ import annotations

import contextlib
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from pydicom.filebase import DicomFileLike
from pydicom.filewriter import write_file_meta_info
from pydicom.uid import ExplicitVRLittleEndian

from common.decodable import NotDecodable, inflate_capped, read_file_meta
from common.files import from_start
from ingest.statuses import Failure
from ingest.validation import InvalidInstance


@contextlib.contextmanager
def inflated(
    source: Path | BinaryIO, *, max_bytes: int, max_ratio: int | None = None
) -> Iterator[tuple[BinaryIO, int]]:
    """The inflated dataset as a Part 10 file in Explicit VR Little Endian, and its size in bytes.

    `InvalidInstance(DECODED_TOO_LARGE)` as soon as it would inflate past `max_bytes` (or, once
    large, past `max_ratio` times its deflated size: common.decodable),
    `InvalidInstance(UNDECODABLE)` when it is no deflate stream.
    """
    with from_start(source) as fp, tempfile.TemporaryFile() as out:
        try:
            meta = read_file_meta(fp)
        except NotDecodable as exc:
            raise InvalidInstance(Failure.UNDECODABLE, str(exc)) from exc
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        out.write(b"\x00" * 128 + b"DICM")
        write_file_meta_info(DicomFileLike(out), meta, enforce_standard=False)
        try:
            inflate_capped(fp, out, max_bytes, max_ratio=max_ratio)
        except NotDecodable as exc:
            failure = Failure.DECODED_TOO_LARGE if exc.over_budget else Failure.UNDECODABLE
            raise InvalidInstance(failure, str(exc)) from exc
        size = out.tell()
        out.seek(0)
        yield out, size
