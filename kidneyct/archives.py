"""Which archive the settings ask for: the local folder (the embedded default) or an S3 bucket.

Only this module knows both; the listener gets something that stores instances and the worker
something that opens the URIs events carry.
"""

from __future__ import annotations

from typing import Any

from kidneyct.settings import Settings
from storage.archive.local import Archive
from storage.archive.reader import ArchiveReader
from storage.archive.s3 import S3Archive, S3Location
from storage.archive.s3_client import S3ClientOptions, make_s3_client


def s3_client_options(settings: Settings) -> S3ClientOptions:
    return S3ClientOptions(
        endpoint_url=settings.s3_endpoint_url,
        verify_tls=settings.s3_verify_tls,
        ca_bundle=settings.s3_ca_bundle,
        max_attempts=settings.s3_max_attempts,
        connect_timeout_s=settings.s3_connect_timeout_s,
        read_timeout_s=settings.s3_read_timeout_s,
        max_pool_connections=max(32, settings.max_associations + settings.decode_workers),
    )


def build_archive(settings: Settings) -> Archive | S3Archive:
    """The listener's archive; the local folder is created if missing."""
    if settings.uses_object_store:
        client = make_s3_client(s3_client_options(settings))
        return S3Archive(
            client, S3Location.parse(str(settings.archive_url)), part_bytes=settings.s3_part_bytes
        )
    archive_dir = settings.resolved_archive_dir()
    archive_dir.mkdir(parents=True, exist_ok=True)
    return Archive(archive_dir)


def build_archive_reader(settings: Settings) -> ArchiveReader:
    """Opens `file://` and `s3://` URIs alike; the S3 client is made on first use."""

    def client() -> Any:
        return make_s3_client(s3_client_options(settings))

    return ArchiveReader(settings.resolved_archive_dir(), s3_client_factory=client)
