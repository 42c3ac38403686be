"""File helpers every layer needs: a content hash, and the local path of a `file://` URI."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import IO
from urllib.parse import unquote, urlparse

CHUNK_BYTES = 1 << 20


def sha256_stream(f: IO[bytes]) -> str:
    """Hex SHA-256 of what is left to read in `f`, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    for chunk in iter(lambda: f.read(CHUNK_BYTES), b""):
        digest.update(chunk)
    return digest.hexdigest()


def sha256_file(path: Path) -> str:
    """Hex SHA-256 of the file at `path`."""
    with path.open("rb") as f:
        return sha256_stream(f)


def file_uri_path(uri: str) -> str | None:
    """The local path of a `file:` URI (percent-decoded); None for anything else."""
    if not uri.startswith("file:"):
        return None
    return unquote(urlparse(uri).path)
