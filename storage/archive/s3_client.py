"""The boto3 S3 client the archive uses, with bounded timeouts and botocore's retry with backoff.

Credentials and region come from the standard AWS sources (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY,
AWS_DEFAULT_REGION, AWS_PROFILE, instance roles), read by boto3 itself, never by our code.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
from botocore.config import Config


@dataclass(frozen=True, slots=True)
class S3ClientOptions:
    endpoint_url: str | None = None  # None: AWS S3; else MinIO, Ceph RGW, StorageGRID, SeaweedFS, ...
    verify_tls: bool = True
    ca_bundle: Path | None = None  # a private CA for the endpoint's certificate
    max_attempts: int = (
        5  # botocore "standard" mode: exponential backoff with jitter on throttling/5xx/timeouts
    )
    connect_timeout_s: float = 5.0
    read_timeout_s: float = 30.0
    max_pool_connections: int = 32


def make_s3_client(options: S3ClientOptions) -> Any:
    """A thread-safe S3 client (one per process, shared by the associations or decode threads)."""
    verify: bool | str = str(options.ca_bundle) if options.ca_bundle is not None else options.verify_tls
    config = Config(
        retries={"max_attempts": options.max_attempts, "mode": "standard"},
        connect_timeout=options.connect_timeout_s,
        read_timeout=options.read_timeout_s,
        max_pool_connections=options.max_pool_connections,
        # Path-style addressing works with every S3-compatible store (virtual hosts need DNS per bucket).
        s3={"addressing_style": "path"},
        # Checksums only where the operation requires them: some S3-compatible stores reject the
        # trailing checksums botocore >= 1.36 sends by default.
        request_checksum_calculation="when_required",
        response_checksum_validation="when_required",
    )
    return boto3.session.Session().client(
        "s3", endpoint_url=options.endpoint_url, verify=verify, config=config
    )
