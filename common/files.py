"""File helpers every layer needs: a content hash, a file or stream read from its start, and the local
path of a `file://` URI."""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Iterator
from pathlib import Path
from typing import IO, BinaryIO
from urllib.parse import unquote, urlparse

CHUNK_BYTES = 1 << 20


def sha256_stream(f: IO[bytes]) -> str:
    """Hex SHA-256 of what is left to read in `f`, read in 1 MiB chunks."""
    return sha256_and_size(f)[0]


def sha256_and_size(f: IO[bytes]) -> tuple[str, int]:
    """Hex SHA-256 and length in bytes of what is left to read in `f`, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    size = 0
    for chunk in iter(lambda: f.read(CHUNK_BYTES), b""):
        digest.update(chunk)
        size += len(chunk)
    return digest.hexdigest(), size


def sha256_file(path: Path) -> str:
    """Hex SHA-256 of the file at `path`."""
    with path.open("rb") as f:
        return sha256_stream(f)


@contextlib.contextmanager
def from_start(source: Path | BinaryIO) -> Iterator[BinaryIO]:
    """`source` opened (a path) or rewound (a stream) to its first byte; a stream is rewound again after,
    so the next reader starts where this one did."""
    if isinstance(source, Path):
        with source.open("rb") as fp:
            yield fp
        return
    source.seek(0)
    try:
        yield source
    finally:
        source.seek(0)


def file_uri_path(uri: str) -> str | None:
    """The local path of a `file:` URI (percent-decoded); None for anything else."""
    if not uri.startswith("file:"):
        return None
    return unquote(urlparse(uri).path)
