"""Opens what an event's `archive_uri` names, wherever it is: a local file or an S3 object.

A worker on another host needs no shared disk: an `s3://` object is streamed (in ranged parts)
into a spooled temporary file, in memory while small and on local disk past `spool_bytes`.
"""

from __future__ import annotations

import contextlib
import tempfile
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

from botocore.exceptions import BotoCoreError, ClientError

from common.files import file_uri_path
from storage.archive.s3 import download, object_missing

_SPOOL_BYTES = 64 << 20


class ArchiveUnavailable(Exception):  # noqa: N818 - reads as the condition, as StreamUnavailable
    """The object store did not answer (after botocore's retries): try again later, the object is not lost."""


class ArchiveReader:
    """Opens archive URIs; relative paths are relative to `archive_dir` (the local archive)."""

    def __init__(
        self,
        archive_dir: Path,
        *,
        s3_client_factory: Callable[[], Any] | None = None,
        spool_bytes: int = _SPOOL_BYTES,
    ) -> None:
        self.archive_dir = archive_dir
        self._s3_factory = s3_client_factory
        self._s3: Any = None
        self._lock = threading.Lock()
        self._spool_bytes = spool_bytes

    def describe(self) -> str:
        """Where this reader looks, for an operator's message."""
        return f"{self.archive_dir} (local) and s3:// objects" if self._s3_factory else str(self.archive_dir)

    @contextlib.contextmanager
    def open(self, uri: str) -> Iterator[IO[bytes]]:
        """The content at `uri`, positioned at 0; OSError when it cannot be read."""
        if uri.startswith("s3://"):
            with self._open_s3(uri) as f:
                yield f
            return
        with local_path(uri, self.archive_dir).open("rb") as f:
            yield f

    @contextlib.contextmanager
    def _open_s3(self, uri: str) -> Iterator[IO[bytes]]:
        client = self._client()
        with tempfile.SpooledTemporaryFile(max_size=self._spool_bytes) as spool:
            try:
                download(client, uri, spool)
            except ValueError as exc:
                raise OSError(f"not an object URI: {uri}") from exc
            except (BotoCoreError, ClientError) as exc:
                if object_missing(exc):
                    raise OSError(f"no object at {uri}") from exc
                raise ArchiveUnavailable(f"object store unavailable: {type(exc).__name__}") from exc
            spool.seek(0)
            yield spool  # type: ignore[misc]

    def _client(self) -> Any:
        with self._lock:
            if self._s3 is None:
                if self._s3_factory is None:
                    raise OSError("s3:// URI but no object store is configured (KIDNEYCT_S3_* settings)")
                self._s3 = self._s3_factory()
            return self._s3


def local_path(archive_uri: str, archive_dir: Path) -> Path:
    """A `file://` URI or a path; relative paths are relative to the archive folder."""
    local = file_uri_path(archive_uri)
    if local is not None:
        return Path(local)
    path = Path(archive_uri)
    return path if path.is_absolute() else archive_dir / path
