"""The instance archive: one DICOM file per SOP instance at `<root>/<study>/<series>/<sop>.dcm`.

A stored file is durable when `store_*` returns: it is written to a temporary file in the target
directory, fsynced, renamed over the final name (atomic on POSIX), and the directory is fsynced,
so a crash leaves either the old file, the new one, or nothing, never a torn file. `place_*` does
all but the last step: the file is complete and visible at its final path, and `sync_entry` then
makes its directory entry durable; a caller can overlap other work (the publish) with that fsync. Paths are built
only from strictly valid DICOM UIDs, so no sender-controlled string can leave the archive root.

Nothing received is ever overwritten: the same content sent again is the same file, and different
content under the same SOP Instance UID is kept beside the first as `<sop>.<sha256 prefix>.dcm`
(`ArchivedFile.replaced_sha256` then names the content it supersedes), so every event's path and
sha256 keep matching a file.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, Protocol

from common.files import CHUNK_BYTES, sha256_and_size, sha256_file
from common.vocabulary import is_valid_uid

_TEMP_PREFIX = ".incoming-"
_VERSION_DIGITS = 16  # of the sha256 in a later version's name: 64 bits, no collision in practice


class ArchiveError(Exception):
    """The archive could not store a file (disk full, not writable, ...): retry later."""


@dataclass(frozen=True, slots=True, kw_only=True)
class StoredCopy:
    """One instance's content as an archive (local or S3) stored it."""

    uri: str
    sha256: str
    size_bytes: int
    # The sha256 of the instance's first copy when this one holds different content (a re-send).
    replaced_sha256: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class ArchivedFile(StoredCopy):
    path: Path  # the file at `uri`, whose directory entry `sync_entry` makes durable


class StoredInstance(Protocol):
    """What an archive says about one stored instance (a local file or an object)."""

    @property
    def uri(self) -> str: ...
    @property
    def sha256(self) -> str: ...
    @property
    def size_bytes(self) -> int: ...
    @property
    def replaced_sha256(self) -> str | None: ...


class InstanceArchive(Protocol):
    """Where the listener stores instances: the local `Archive` or `storage.archive.s3.S3Archive`."""

    def place_file(
        self, source: Path, *, study_uid: str, series_uid: str, sop_uid: str
    ) -> StoredInstance: ...

    def place_stream(
        self, source: BinaryIO, *, study_uid: str, series_uid: str, sop_uid: str
    ) -> StoredInstance: ...

    def sync_entry(self, archived: Any) -> None: ...


class Archive:
    """Durable, atomic storage of received instances under `root`.

    `link_sources=True` lets `store_file` hard-link a source on the same file system instead of
    copying it (the received temporary file becomes the archived file without a second write).
    """

    def __init__(self, root: Path, *, link_sources: bool = True) -> None:
        self.root = root
        self._link_sources = link_sources

    def path_for(self, *, study_uid: str, series_uid: str, sop_uid: str) -> Path:
        check_instance_uids(study_uid=study_uid, series_uid=series_uid, sop_uid=sop_uid)
        return self.root / study_uid / series_uid / f"{sop_uid}.dcm"

    def place_file(self, source: Path, *, study_uid: str, series_uid: str, sop_uid: str) -> ArchivedFile:
        """Put the file at `source` in place with its data fsynced; `sync_entry` must follow."""

        def write(temp: Path) -> tuple[str, int]:
            if self._link_sources and _try_link(source, temp):
                return _hash_and_sync(temp)
            with source.open("rb") as src:
                return _copy_and_sync(src, temp)

        return self._place(write, study_uid=study_uid, series_uid=series_uid, sop_uid=sop_uid)

    def place_stream(
        self, source: BinaryIO, *, study_uid: str, series_uid: str, sop_uid: str
    ) -> ArchivedFile:
        """Put what `source` yields in place with its data fsynced; `sync_entry` must follow."""
        return self._place(
            lambda temp: _copy_and_sync(source, temp),
            study_uid=study_uid,
            series_uid=series_uid,
            sop_uid=sop_uid,
        )

    def _place(
        self, write: Callable[[Path], tuple[str, int]], *, study_uid: str, series_uid: str, sop_uid: str
    ) -> ArchivedFile:
        """`write` fills a temporary file beside the final name (returning its sha256 and size, data
        fsynced), which then takes the final name, or its version name for other content."""
        final = self.path_for(study_uid=study_uid, series_uid=series_uid, sop_uid=sop_uid)
        try:
            self._make_dirs(final.parent)
            temp = final.parent / f"{_TEMP_PREFIX}{uuid.uuid4().hex}"
            with _removed_on_failure(temp):
                digest, size = write(temp)
                path, replaced = _settle(temp, final, digest)
        except OSError as exc:
            raise ArchiveError(f"cannot archive {sop_uid}: {exc.strerror or exc}") from exc
        return ArchivedFile(
            path=path, uri=path.resolve().as_uri(), sha256=digest, size_bytes=size, replaced_sha256=replaced
        )

    def sync_entry(self, archived: ArchivedFile) -> None:
        """Make a placed file's directory entry durable (fsync of its directory after the rename)."""
        try:
            _fsync_dir(archived.path.parent)
        except OSError as exc:
            raise ArchiveError(f"cannot sync the archive directory: {exc.strerror or exc}") from exc

    def _make_dirs(self, directory: Path) -> None:
        """Create missing directories, fsyncing each parent so the new entries survive a crash."""
        missing: list[Path] = []
        current = directory
        while not current.is_dir():
            missing.append(current)
            current = current.parent
        for path in reversed(missing):
            try:
                path.mkdir()
            except FileExistsError:
                continue  # another association created it first; its creator syncs the parent
            _fsync_dir(path.parent)


def check_instance_uids(*, study_uid: str, series_uid: str, sop_uid: str) -> None:
    """ValueError unless all three are valid DICOM UIDs: an archive name is built only from them."""
    for name, uid in (("study", study_uid), ("series", series_uid), ("sop", sop_uid)):
        if not is_valid_uid(uid):
            raise ValueError(f"{name} UID is not a valid DICOM UID")


def version_path(final: Path, sha256: str) -> Path:
    """Where different content under the same SOP Instance UID is kept beside the first file."""
    return final.with_name(f"{final.stem}.{sha256[:_VERSION_DIGITS]}.dcm")


def _settle(temp: Path, final: Path, digest: str) -> tuple[Path, str | None]:
    """Give the complete `temp` its name without overwriting other content: `final` if free or
    identical, else its version name. Returns the path and the sha256 of `final`'s content when
    that differs (None otherwise). `temp` is gone afterwards."""
    first = _place_unless_other(temp, final, digest)
    if first is None:
        return final, None
    versioned = version_path(final, digest)
    if _place_unless_other(temp, versioned, digest) is not None:
        raise OSError(errno.EEXIST, f"{versioned.name} holds other content")  # a sha256 prefix collision
    return versioned, first


def _place_unless_other(temp: Path, target: Path, digest: str) -> str | None:
    """Move `temp` to `target` if `target` is free or holds the same bytes (None); else leave
    `temp` and return the sha256 of what `target` holds."""
    try:
        os.link(temp, target)  # atomic: fails if the name exists, even against a concurrent store
    except FileExistsError:
        existing = sha256_file(target)
        if existing != digest:
            return existing
    except OSError as exc:
        if exc.errno not in (errno.EPERM, errno.EMLINK, errno.ENOTSUP, errno.EOPNOTSUPP):
            raise
        # No hard links here: check, then rename (a concurrent store of other content could race).
        if target.exists() and (existing := sha256_file(target)) != digest:
            return existing
        os.replace(temp, target)
        return None
    temp.unlink()
    return None


def _try_link(source: Path, target: Path) -> bool:
    try:
        os.link(source, target)
    except OSError as exc:
        # Another file system, or one without hard links: fall back to copying.
        if exc.errno in (errno.EXDEV, errno.EPERM, errno.EMLINK, errno.ENOTSUP, errno.EOPNOTSUPP):
            return False
        raise
    return True


def _hash_and_sync(path: Path) -> tuple[str, int]:
    with path.open("rb") as f:
        hashed = sha256_and_size(f)
        os.fsync(f.fileno())
    return hashed


def _copy_and_sync(source: BinaryIO, target: Path) -> tuple[str, int]:
    digest = hashlib.sha256()
    size = 0
    with target.open("xb") as out:
        for chunk in iter(lambda: source.read(CHUNK_BYTES), b""):
            digest.update(chunk)
            out.write(chunk)
            size += len(chunk)
        out.flush()
        os.fsync(out.fileno())
    return digest.hexdigest(), size


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextlib.contextmanager
def _removed_on_failure(temp: Path) -> Iterator[None]:
    try:
        yield
    except BaseException:
        with contextlib.suppress(OSError):
            temp.unlink()
        raise
