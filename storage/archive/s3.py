"""The instance archive on S3-compatible object storage: `s3://<bucket>/<prefix>/<study>/<series>/<sop>.dcm`.

The same promise as the local `Archive`: `place_*` returns only after the object store acknowledged
the PUT (S3 acknowledges a PUT only once the object is durable), so `sync_entry` has nothing left
to do. Large instances go up as a multipart upload read part by part from the received file, so at
most one part (`part_bytes`) is in memory per association. The same re-send policy: nothing is ever
overwritten (conditional `If-None-Match: *` writes); the same content sent again is the same
object, and different content under the same SOP Instance UID is kept beside the first as
`<sop>.<sha256 prefix>.dcm`. Every object carries its sha256 as user metadata, which is how a
re-send is compared without reading the object back.

Failures of the object store (unreachable, refusing, throttling past botocore's retries) raise
`ArchiveError`, which the listener answers with 0xA700 so the sender retries.
"""

from __future__ import annotations

import contextlib
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, BinaryIO

from botocore.exceptions import BotoCoreError, ClientError

from common.files import sha256_and_size
from storage.archive.local import ArchiveError, StoredCopy, check_instance_uids

_CHUNK_BYTES = 1 << 20
_VERSION_DIGITS = 16  # as the local archive's version names
_SHA256_KEY = "sha256"
_SPOOL_BYTES = 32 << 20  # a stream source is spooled to disk past this size before upload
_PRECONDITION_CODES = frozenset({"PreconditionFailed", "412", "ConditionalRequestConflict"})
_MISSING_CODES = frozenset({"404", "NoSuchKey", "NotFound"})


@dataclass(frozen=True, slots=True)
class S3Location:
    bucket: str
    prefix: str

    @classmethod
    def parse(cls, url: str) -> S3Location:
        """`s3://bucket` or `s3://bucket/some/prefix`; ValueError otherwise."""
        if not url.startswith("s3://"):
            raise ValueError("an S3 archive URL starts with s3://")
        bucket, _, prefix = url.removeprefix("s3://").partition("/")
        if not bucket:
            raise ValueError("the S3 archive URL names no bucket")
        return cls(bucket=bucket, prefix=prefix.strip("/"))


def split_s3_uri(uri: str) -> tuple[str, str]:
    """(bucket, key) of an `s3://bucket/key` object URI."""
    location = S3Location.parse(uri)
    if not location.prefix:
        raise ValueError("the S3 URI names no object")
    return location.bucket, location.prefix


class S3Archive:
    """Durable, never-overwriting storage of received instances in one bucket under one prefix."""

    def __init__(self, client: Any, location: S3Location, *, part_bytes: int = 16 << 20) -> None:
        if part_bytes < 5 << 20:
            raise ValueError("S3 parts are at least 5 MiB")
        self._client = client
        self.location = location
        self._part_bytes = part_bytes

    def key_for(self, *, study_uid: str, series_uid: str, sop_uid: str) -> str:
        check_instance_uids(study_uid=study_uid, series_uid=series_uid, sop_uid=sop_uid)
        relative = f"{study_uid}/{series_uid}/{sop_uid}.dcm"
        return f"{self.location.prefix}/{relative}" if self.location.prefix else relative

    def place_file(self, source: Path, *, study_uid: str, series_uid: str, sop_uid: str) -> StoredCopy:
        """Upload the file at `source` (left in place) as the given instance; durable on return."""
        key = self.key_for(study_uid=study_uid, series_uid=series_uid, sop_uid=sop_uid)
        try:
            digest, size = _hash_file(source)
            return self._settle(source, key, digest, size)
        except OSError as exc:
            raise ArchiveError(f"cannot read the received file of {sop_uid}: {exc.strerror or exc}") from exc
        except (BotoCoreError, ClientError) as exc:
            raise ArchiveError(f"object store refused {sop_uid}: {_describe(exc)}") from exc

    def place_stream(self, source: BinaryIO, *, study_uid: str, series_uid: str, sop_uid: str) -> StoredCopy:
        """Upload what `source` yields (spooled to disk when large, never whole in memory)."""
        with tempfile.NamedTemporaryFile(prefix="kidneyct-s3-") as spool:
            for chunk in iter(lambda: source.read(_CHUNK_BYTES), b""):
                spool.write(chunk)
            spool.flush()
            return self.place_file(
                Path(spool.name), study_uid=study_uid, series_uid=series_uid, sop_uid=sop_uid
            )

    def sync_entry(self, archived: object) -> None:
        """Nothing to do: the object store acknowledged the PUT only once the object was durable."""

    def _settle(self, source: Path, key: str, digest: str, size: int) -> StoredCopy:
        existing = self._put_unless_exists(source, key, digest, size)
        if existing is None or existing == digest:
            return StoredCopy(uri=self._uri(key), sha256=digest, size_bytes=size)
        versioned = version_key(key, digest)
        other = self._put_unless_exists(source, versioned, digest, size)
        if other is not None and other != digest:
            raise ArchiveError(f"{versioned} holds other content")  # a sha256 prefix collision
        return StoredCopy(uri=self._uri(versioned), sha256=digest, size_bytes=size, replaced_sha256=existing)

    def _put_unless_exists(self, source: Path, key: str, digest: str, size: int) -> str | None:
        """Write `key` unless it exists (None); else return the sha256 the existing object holds."""
        bucket = self.location.bucket
        try:
            if size <= self._part_bytes:
                with source.open("rb") as body:
                    self._client.put_object(
                        Bucket=bucket, Key=key, Body=body, IfNoneMatch="*", Metadata={_SHA256_KEY: digest}
                    )
            else:
                self._multipart(source, key, digest)
        except ClientError as exc:
            if _code(exc) not in _PRECONDITION_CODES:
                raise
            head = self._client.head_object(Bucket=bucket, Key=key)
            return str(head.get("Metadata", {}).get(_SHA256_KEY, ""))
        return None

    def _multipart(self, source: Path, key: str, digest: str) -> None:
        """Upload `source` part by part: one part in memory at a time; aborted on any failure."""
        bucket = self.location.bucket
        upload = self._client.create_multipart_upload(Bucket=bucket, Key=key, Metadata={_SHA256_KEY: digest})
        upload_id = upload["UploadId"]
        try:
            parts = []
            with source.open("rb") as f:
                number = 1
                while part := f.read(self._part_bytes):
                    answer = self._client.upload_part(
                        Bucket=bucket, Key=key, UploadId=upload_id, PartNumber=number, Body=part
                    )
                    parts.append({"ETag": answer["ETag"], "PartNumber": number})
                    number += 1
                    del part
            self._client.complete_multipart_upload(
                Bucket=bucket, Key=key, UploadId=upload_id, MultipartUpload={"Parts": parts}, IfNoneMatch="*"
            )
        except BaseException:
            _abort_quietly(self._client, bucket, key, upload_id)
            raise

    def _uri(self, key: str) -> str:
        return f"s3://{self.location.bucket}/{key}"


def version_key(key: str, sha256: str) -> str:
    """Where different content under the same SOP Instance UID is kept beside the first object."""
    return f"{key.removesuffix('.dcm')}.{sha256[:_VERSION_DIGITS]}.dcm"


def download(client: Any, uri: str, target: IO[bytes]) -> None:
    """Stream the object at `uri` into `target` (in ranged parts; never whole in memory)."""
    bucket, key = split_s3_uri(uri)
    client.download_fileobj(bucket, key, target)


def object_missing(exc: BaseException) -> bool:
    return isinstance(exc, ClientError) and _code(exc) in _MISSING_CODES


def _abort_quietly(client: Any, bucket: str, key: str, upload_id: str) -> None:
    # What is left after a failed abort is cleaned up by the bucket's rule for incomplete uploads.
    with contextlib.suppress(BotoCoreError, ClientError):
        client.abort_multipart_upload(Bucket=bucket, Key=key, UploadId=upload_id)


def _hash_file(path: Path) -> tuple[str, int]:
    with path.open("rb") as f:
        return sha256_and_size(f)


def _code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


def _describe(exc: BaseException) -> str:
    if isinstance(exc, ClientError):
        return _code(exc) or type(exc).__name__
    return type(exc).__name__
