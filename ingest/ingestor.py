"""What happens to one received instance, in order: check it, archive it durably, publish its
event and wait for the acknowledgement; only then is the answer success.

The publish overlaps the archive's last step: once the file is complete (data fsynced) and renamed
into place, its event goes out, and the directory fsync runs while the broker acknowledges. Both
must succeed before the answer is success. If the directory fsync fails after the event went out,
the answer is a failure and the sender retries; a consumer meanwhile finds the complete file at
the event's path (or, after a crash, no file, which it marks failed until the retry's event).

This knows nothing of pynetdicom: `handlers.py` turns a C-STORE event into a `ReceivedInstance`.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Protocol, runtime_checkable

import structlog

from common.decodable import DEFAULT_MAX_DECODED_BYTES, DEFAULT_MAX_DEFLATE_RATIO
from ingest import statuses
from ingest.instance_checks import InstanceChecks
from ingest.metrics import IngestMetrics
from ingest.release_hints import ReleaseHints
from ingest.statuses import Failure
from ingest.validation import InstanceHeader, InvalidInstance
from storage.archive.local import ArchiveError, InstanceArchive, StoredInstance
from storage.stream.contract import Publisher, StreamUnavailable
from storage.stream.events import InstanceEvent

log = structlog.get_logger(__name__)


def utc_now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


@dataclass(frozen=True, slots=True)
class ReceivedInstance:
    """A C-STORE dataset as received: a file in DICOM File Format (chunked receive) or a stream."""

    source: Path | BinaryIO
    size_bytes: int
    requested_sop_class: str
    requested_sop_instance: str
    transfer_syntax_uid: str
    calling_ae: str | None
    # The negotiated presentation context's abstract syntax: the dataset must be of this class.
    context_sop_class: str | None = None
    # The association that carried it (any key unique while it is open), for release hints.
    association: int | None = None


class PendingPublish(Protocol):
    def wait(self) -> None: ...


@runtime_checkable
class OverlappingPublisher(Protocol):
    """A publisher that can hand an event over now and wait for its acknowledgement later."""

    def begin_publish(self, topic: str, key: bytes, value: bytes) -> PendingPublish: ...


class _Published:
    """The pending publish of a publisher that already waited for the acknowledgement."""

    def wait(self) -> None:
        return None


class Ingestor:
    def __init__(
        self,
        *,
        archive: InstanceArchive,
        publisher: Publisher,
        topic: str,
        metrics: IngestMetrics,
        max_instance_bytes: int,
        image_sop_classes: frozenset[str] = frozenset(),
        decode_first_frame: bool = True,
        max_decoded_bytes: int = DEFAULT_MAX_DECODED_BYTES,
        max_deflate_ratio: int = DEFAULT_MAX_DEFLATE_RATIO,
        clock: Callable[[], dt.datetime] = utc_now,
        release_hints: ReleaseHints | None = None,
    ) -> None:
        self._archive = archive
        self._publisher = publisher
        self._topic = topic
        self._metrics = metrics
        self._checks = InstanceChecks(
            max_instance_bytes=max_instance_bytes,
            image_sop_classes=image_sop_classes,
            decode_first_frame=decode_first_frame,
            max_decoded_bytes=max_decoded_bytes,
            max_deflate_ratio=max_deflate_ratio,
        )
        self._clock = clock
        self._release_hints = release_hints

    def ingest(self, received: ReceivedInstance) -> int:
        """Store one instance; returns the DICOM status to answer. Never raises."""
        started = time.perf_counter()
        received_at = self._clock()
        self._metrics.instances_received.inc()
        self._metrics.received_bytes.inc(received.size_bytes)
        try:
            header = self._checks.check(received)
            archived = self._store_and_publish(received, header, received_at)
        except InvalidInstance as exc:
            return self._reject(exc.failure, exc.detail)
        except ArchiveError as exc:
            return self._reject(Failure.ARCHIVE_FAILED, str(exc))
        except StreamUnavailable as exc:
            return self._reject(Failure.PUBLISH_FAILED, str(exc))
        except Exception:  # noqa: BLE001 - a bug must be answered with a failure, never success
            log.exception("instance_ingest_crashed")
            return self._reject(Failure.INTERNAL_ERROR, "unexpected error")
        finally:
            self._metrics.store_seconds.observe(time.perf_counter() - started)
        self._metrics.instances_stored.inc()
        if self._release_hints is not None and received.association is not None:
            self._release_hints.stored(received.association, header.study_instance_uid)
        self._report_stored(header, archived)
        return statuses.SUCCESS

    def _report_stored(self, header: InstanceHeader, archived: StoredInstance) -> None:
        stored = log.bind(sop_instance_uid=header.sop_instance_uid, sha256=archived.sha256)
        if archived.replaced_sha256 is not None:
            self._metrics.instances_replaced.inc()
            stored.warning(
                "instance_replaced", previous_sha256=archived.replaced_sha256, archive_uri=archived.uri
            )
        stored.info(
            "instance_stored",
            study_instance_uid=header.study_instance_uid,
            modality=header.modality,
            size_bytes=archived.size_bytes,
        )

    def _store_and_publish(
        self, received: ReceivedInstance, header: InstanceHeader, received_at: dt.datetime
    ) -> StoredInstance:
        archive_started = time.perf_counter()
        archived = self._place(received, header)
        archive_seconds = time.perf_counter() - archive_started
        publish_started = time.perf_counter()
        pending = self._begin_publish(self._event(received, header, archived, received_at))
        sync_started = time.perf_counter()
        self._archive.sync_entry(archived)  # overlaps the broker's round trip
        self._metrics.archive_seconds.observe(archive_seconds + time.perf_counter() - sync_started)
        pending.wait()
        self._metrics.publish_seconds.observe(time.perf_counter() - publish_started)
        return archived

    def _place(self, received: ReceivedInstance, header: InstanceHeader) -> StoredInstance:
        uids = {
            "study_uid": header.study_instance_uid,
            "series_uid": header.series_instance_uid,
            "sop_uid": header.sop_instance_uid,
        }
        if isinstance(received.source, Path):
            return self._archive.place_file(received.source, **uids)
        received.source.seek(0)  # read_header read part of the stream
        return self._archive.place_stream(received.source, **uids)

    def _begin_publish(self, event: InstanceEvent) -> PendingPublish:
        if isinstance(self._publisher, OverlappingPublisher):
            return self._publisher.begin_publish(self._topic, event.key, event.to_json())
        self._publisher.publish(self._topic, event.key, event.to_json())
        return _Published()

    @staticmethod
    def _event(
        received: ReceivedInstance, header: InstanceHeader, archived: StoredInstance, received_at: dt.datetime
    ) -> InstanceEvent:
        return InstanceEvent(
            study_instance_uid=header.study_instance_uid,
            series_instance_uid=header.series_instance_uid,
            sop_instance_uid=header.sop_instance_uid,
            sop_class_uid=header.sop_class_uid,
            transfer_syntax_uid=received.transfer_syntax_uid,
            modality=header.modality,
            archive_uri=archived.uri,
            sha256=archived.sha256,
            size_bytes=archived.size_bytes,
            calling_ae=received.calling_ae,
            received_at=received_at,
            instance_number=header.instance_number,
            number_of_frames=header.number_of_frames,
        )

    def _reject(self, failure: Failure, detail: str) -> int:
        status = statuses.STATUS_FOR_FAILURE[failure]
        self._metrics.instances_rejected.labels(reason=failure.value).inc()
        # Our own faults are errors (someone must act); a bad dataset is the sender's problem.
        level = log.error if failure in _OUR_FAULTS else log.warning
        level("instance_rejected", reason=failure.value, detail=detail, status=f"0x{status:04X}")
        return status


_OUR_FAULTS = frozenset({Failure.ARCHIVE_FAILED, Failure.PUBLISH_FAILED, Failure.INTERNAL_ERROR})
