"""Parsing of the archive URL and the object keys of the S3 archive (no server needed)."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from kidneyct.settings import Settings
from storage.archive.s3 import S3Archive, S3Location, split_s3_uri, version_key


def test_s3_location_parses_bucket_and_prefix() -> None:
    assert S3Location.parse("s3://pacs-archive/kidneyct/") == S3Location("pacs-archive", "kidneyct")
    assert S3Location.parse("s3://pacs-archive") == S3Location("pacs-archive", "")
    assert split_s3_uri("s3://b/p/1.2/3.4/5.6.dcm") == ("b", "p/1.2/3.4/5.6.dcm")
    for bad in ("s3://", "file:///x", "s3:///prefix"):
        with pytest.raises(ValueError):
            S3Location.parse(bad)


def test_keys_are_built_only_from_valid_uids() -> None:
    archive = S3Archive(client=None, location=S3Location("b", "arch"))
    assert (
        archive.key_for(study_uid="1.2", series_uid="1.2.3", sop_uid="1.2.3.4")
        == "arch/1.2/1.2.3/1.2.3.4.dcm"
    )
    with pytest.raises(ValueError):
        archive.key_for(study_uid="../etc", series_uid="1.2.3", sop_uid="1.2.3.4")
    assert version_key("arch/1/2/3.dcm", "ab" * 32) == f"arch/1/2/3.{'ab' * 8}.dcm"


def test_parts_below_the_s3_minimum_are_refused() -> None:
    with pytest.raises(ValueError):
        S3Archive(client=None, location=S3Location("b", ""), part_bytes=1 << 20)


def test_archive_url_selects_the_object_store_or_a_local_folder(tmp_path: Path) -> None:
    s3 = Settings(archive_url="s3://bucket/prefix", data_dir=tmp_path)
    assert s3.uses_object_store
    local = Settings(archive_url=str(tmp_path / "arch"), data_dir=tmp_path)
    assert not local.uses_object_store and local.resolved_archive_dir() == tmp_path / "arch"
    assert Settings(data_dir=tmp_path).resolved_archive_dir() == tmp_path / "archive"
    for bad in ("http://bucket/x", "s3:///x"):
        with pytest.raises(ValidationError):
            Settings(archive_url=bad)
