"""The durable, atomic instance archive (storage/archive/local.py)."""

from __future__ import annotations

import hashlib
import io
import threading
from pathlib import Path
from typing import BinaryIO

import pytest

from common.vocabulary import is_valid_uid
from storage.archive.local import Archive, ArchivedFile, ArchiveError

STUDY, SERIES, SOP = "1.2.3", "1.2.3.4", "1.2.3.4.5"


def _source(tmp_path: Path, content: bytes = b"DICOM-ish bytes" * 1000) -> Path:
    path = tmp_path / "incoming.dcm"
    path.write_bytes(content)
    return path


def _store_file(archive: Archive, source: Path, **uids: str) -> ArchivedFile:
    """What the listener does with a received file: put it in place, then make its entry durable."""
    archived = archive.place_file(source, **uids)
    archive.sync_entry(archived)
    return archived


def _store_stream(archive: Archive, source: BinaryIO, **uids: str) -> ArchivedFile:
    """What the listener does with a received stream: put it in place, then make its entry durable."""
    archived = archive.place_stream(source, **uids)
    archive.sync_entry(archived)
    return archived


def _leftovers(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if p.name.startswith(".incoming-")]


def test_a_file_writes_uid_path_with_sha256_and_size(tmp_path: Path) -> None:
    """The file lands at <root>/<study>/<series>/<sop>.dcm with its sha256 and size."""
    source = _source(tmp_path)
    archived = _store_file(
        Archive(tmp_path / "archive"), source, study_uid=STUDY, series_uid=SERIES, sop_uid=SOP
    )
    assert archived.path == tmp_path / "archive" / STUDY / SERIES / f"{SOP}.dcm"
    assert archived.path.read_bytes() == source.read_bytes()
    assert archived.sha256 == hashlib.sha256(source.read_bytes()).hexdigest()
    assert archived.size_bytes == source.stat().st_size
    assert archived.uri == archived.path.resolve().as_uri()
    assert _leftovers(tmp_path / "archive") == []


def test_a_file_hard_links_on_the_same_file_system(tmp_path: Path) -> None:
    """With linking on, the archived file is the received file (no second write)."""
    source = _source(tmp_path)
    archived = _store_file(
        Archive(tmp_path / "archive"), source, study_uid=STUDY, series_uid=SERIES, sop_uid=SOP
    )
    assert archived.path.stat().st_ino == source.stat().st_ino
    source.unlink()  # pynetdicom deletes its temporary file after the handler
    assert archived.path.read_bytes().startswith(b"DICOM-ish")


def test_a_file_copies_when_linking_is_off(tmp_path: Path) -> None:
    """The copy path yields an independent file with the same bytes and hash."""
    source = _source(tmp_path)
    archive = Archive(tmp_path / "archive", link_sources=False)
    archived = _store_file(archive, source, study_uid=STUDY, series_uid=SERIES, sop_uid=SOP)
    assert archived.path.stat().st_ino != source.stat().st_ino
    assert archived.sha256 == hashlib.sha256(source.read_bytes()).hexdigest()


def test_a_stream_reads_a_stream(tmp_path: Path) -> None:
    """A stream is archived in chunks with its hash."""
    content = bytes(range(256)) * 10_000  # larger than one chunk
    archived = _store_stream(
        Archive(tmp_path), io.BytesIO(content), study_uid=STUDY, series_uid=SERIES, sop_uid=SOP
    )
    assert archived.path.read_bytes() == content
    assert archived.sha256 == hashlib.sha256(content).hexdigest()


def test_resent_instance_with_the_same_content_is_the_same_file(tmp_path: Path) -> None:
    """Storing the same bytes again under the same SOP instance keeps one file, nothing replaced."""
    archive = Archive(tmp_path / "archive")
    first = _store_stream(archive, io.BytesIO(b"first"), study_uid=STUDY, series_uid=SERIES, sop_uid=SOP)
    again = _store_stream(archive, io.BytesIO(b"first"), study_uid=STUDY, series_uid=SERIES, sop_uid=SOP)
    assert again == first and again.replaced_sha256 is None
    assert len(list((tmp_path / "archive").rglob("*"))) == 3  # study, series, one file; no temp left


@pytest.mark.parametrize("kind", ["stream", "file"])
def test_resent_instance_with_other_content_keeps_both_versions(tmp_path: Path, kind: str) -> None:
    """Different content under the same SOP instance never overwrites the first file: both are kept,
    each at a path whose content matches its sha256, and the second names the one it supersedes."""
    archive = Archive(tmp_path / "archive")

    def store(data: bytes) -> ArchivedFile:
        if kind == "stream":
            return _store_stream(archive, io.BytesIO(data), study_uid=STUDY, series_uid=SERIES, sop_uid=SOP)
        source = tmp_path / f"src-{len(data)}"
        source.write_bytes(data)
        return _store_file(archive, source, study_uid=STUDY, series_uid=SERIES, sop_uid=SOP)

    first = store(b"first")
    second = store(b"second!")
    third = store(b"second!")
    assert first.path.read_bytes() == b"first" and second.path.read_bytes() == b"second!"
    assert second.path != first.path and second.replaced_sha256 == first.sha256
    assert third.path == second.path
    assert hashlib.sha256(second.path.read_bytes()).hexdigest() == second.sha256
    assert len(list((tmp_path / "archive").rglob("*.dcm"))) == 2


@pytest.mark.parametrize(
    "uids",
    [
        {"study_uid": "../../etc", "series_uid": SERIES, "sop_uid": SOP},
        {"study_uid": STUDY, "series_uid": "1.2/../3", "sop_uid": SOP},
        {"study_uid": STUDY, "series_uid": SERIES, "sop_uid": ""},
        {"study_uid": STUDY, "series_uid": SERIES, "sop_uid": "1." + "1" * 64},
        {"study_uid": STUDY, "series_uid": SERIES, "sop_uid": "1.02.3"},
    ],
)
def test_invalid_uid_is_refused_and_nothing_written(tmp_path: Path, uids: dict[str, str]) -> None:
    """Only valid UIDs become path components: traversal and junk raise before any write."""
    with pytest.raises(ValueError, match="not a valid DICOM UID"):
        _store_stream(Archive(tmp_path / "archive"), io.BytesIO(b"x"), **uids)
    assert not (tmp_path / "archive").exists()
    assert list(tmp_path.rglob("*")) == []


def test_uid_syntax() -> None:
    """PS3.5 9.1 UID syntax: digits and dots, no leading zeros, at most 64 characters."""
    assert is_valid_uid("1.2.840.10008.5.1.4.1.1.2")
    assert is_valid_uid("0.1")
    assert not is_valid_uid("1..2")
    assert not is_valid_uid("1.2.")
    assert not is_valid_uid("1.2a")
    assert not is_valid_uid("1." + "2" * 63)


def test_archive_root_that_is_a_file_raises_archive_error(tmp_path: Path) -> None:
    """A broken archive location is an ArchiveError (a retryable failure), not a crash."""
    root = tmp_path / "archive"
    root.write_bytes(b"not a directory")
    with pytest.raises(ArchiveError):
        _store_stream(Archive(root), io.BytesIO(b"x"), study_uid=STUDY, series_uid=SERIES, sop_uid=SOP)


class _FailingStream(io.RawIOBase):
    """Yields one chunk, then fails like a disk read error."""

    def __init__(self) -> None:
        self._sent = False

    def read(self, size: int = -1) -> bytes:
        if self._sent:
            raise OSError(5, "Input/output error")
        self._sent = True
        return b"partial"


def test_failed_write_leaves_neither_temp_nor_final_file(tmp_path: Path) -> None:
    """A write that fails midway removes its temporary file and never creates the final name."""
    archive = Archive(tmp_path / "archive")
    with pytest.raises(ArchiveError):
        _store_stream(archive, _FailingStream(), study_uid=STUDY, series_uid=SERIES, sop_uid=SOP)  # type: ignore[arg-type]
    assert not archive.path_for(study_uid=STUDY, series_uid=SERIES, sop_uid=SOP).exists()
    assert _leftovers(tmp_path / "archive") == []


def test_concurrent_stores_into_one_series(tmp_path: Path) -> None:
    """Parallel associations writing one new series all succeed (directory creation races)."""
    archive = Archive(tmp_path / "archive")
    errors: list[BaseException] = []

    def store(i: int) -> None:
        try:
            _store_stream(
                archive, io.BytesIO(b"%d" % i), study_uid=STUDY, series_uid=SERIES, sop_uid=f"{SOP}.{i}"
            )
        except BaseException as exc:  # noqa: BLE001 - collected and asserted below
            errors.append(exc)

    threads = [threading.Thread(target=store, args=(i,)) for i in range(1, 17)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert len(list((tmp_path / "archive" / STUDY / SERIES).glob("*.dcm"))) == 16


@pytest.mark.parametrize("kind", ["file", "stream"])
def test_placed_file_is_complete_at_its_path_before_the_entry_sync(tmp_path: Path, kind: str) -> None:
    """place_* leaves the whole file at its final path (no temp file); sync_entry then succeeds."""
    source = _source(tmp_path)
    archive = Archive(tmp_path / "archive")
    uids = {"study_uid": STUDY, "series_uid": SERIES, "sop_uid": SOP}
    if kind == "file":
        placed = archive.place_file(source, **uids)
    else:
        placed = archive.place_stream(io.BytesIO(source.read_bytes()), **uids)
    assert placed.path.read_bytes() == source.read_bytes()
    assert placed.sha256 == hashlib.sha256(source.read_bytes()).hexdigest()
    assert _leftovers(tmp_path / "archive") == []
    archive.sync_entry(placed)


def test_entry_sync_of_a_vanished_directory_raises_archive_error(tmp_path: Path) -> None:
    """A directory that cannot be opened for its fsync is an ArchiveError (answered 0xA700), not OSError."""
    archive = Archive(tmp_path / "archive")
    placed = archive.place_file(_source(tmp_path), study_uid=STUDY, series_uid=SERIES, sop_uid=SOP)
    placed.path.unlink()
    placed.path.parent.rmdir()
    with pytest.raises(ArchiveError, match="cannot sync the archive directory"):
        archive.sync_entry(placed)
