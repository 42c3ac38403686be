"""common.files: the one SHA-256 of a file, and the one reading of `file://` URIs."""

from __future__ import annotations

import hashlib
import io
from pathlib import Path

from common.files import CHUNK_BYTES, file_uri_path, sha256_file, sha256_stream


def test_sha256_of_a_file_spanning_several_chunks(tmp_path: Path) -> None:
    """The hash equals hashlib's over the whole content, across chunk boundaries; a stream hashes what is left."""
    data = bytes(range(256)) * (CHUNK_BYTES // 256 * 2 + 3)
    path = tmp_path / "f.bin"
    path.write_bytes(data)
    assert sha256_file(path) == hashlib.sha256(data).hexdigest()
    stream = io.BytesIO(data)
    stream.read(10)
    assert sha256_stream(stream) == hashlib.sha256(data[10:]).hexdigest()


def test_file_uri_path_decodes_file_uris_only() -> None:
    """`file:` URIs give their decoded path; anything else (a plain path, s3://) gives None."""
    assert file_uri_path("file:///archive/1.2/a%20b.dcm") == "/archive/1.2/a b.dcm"
    assert file_uri_path("/archive/1.2/a.dcm") is None
    assert file_uri_path("s3://bucket/key") is None
