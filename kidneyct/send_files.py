"""A C-STORE sender (SCU) for the demo and the benchmarks: files go out byte for byte.

Each file is sent as stored (chunked send: no decoding and re-encoding), over one association per
call, proposing exactly the SOP class and transfer syntax of each file.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import structlog
from pydicom import dcmread
from pynetdicom import AE

from common.pynetdicom_switches import chunked_send

log = structlog.get_logger(__name__)

SUCCESS = 0x0000
NO_STATUS = -1  # the association ended before the listener answered


@dataclass(frozen=True, slots=True)
class StoreResult:
    path: Path
    status: int

    @property
    def ok(self) -> bool:
        return self.status == SUCCESS


class AssociationRefused(Exception):
    """The listener did not accept the association."""


def presentation_contexts(paths: Sequence[Path]) -> list[tuple[str, str]]:
    pairs = []
    for path in paths:
        meta = dcmread(path, stop_before_pixels=True).file_meta
        pairs.append((str(meta.MediaStorageSOPClassUID), str(meta.TransferSyntaxUID)))
    return list(dict.fromkeys(pairs))


def send_files(
    host: str,
    port: int,
    paths: Sequence[Path],
    *,
    called_ae: str,
    calling_ae: str = "KIDNEYCT-SCU",
    timeout_s: float = 30.0,
    on_result: Callable[[StoreResult], None] | None = None,
) -> list[StoreResult]:
    """C-STORE `paths` in order over one association; a result per file, NO_STATUS after an abort."""
    ae = AE(ae_title=calling_ae)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = timeout_s
    for sop_class, syntax in presentation_contexts(paths):
        ae.add_requested_context(sop_class, [syntax])
    results: list[StoreResult] = []
    with chunked_send():
        assoc = ae.associate(host, port, ae_title=called_ae)
        if not assoc.is_established:
            raise AssociationRefused(f"{called_ae}@{host}:{port} did not accept the association")
        for path in paths:
            status = NO_STATUS
            if assoc.is_established:
                try:
                    answer = assoc.send_c_store(path)
                    status = int(answer.Status) if "Status" in answer else NO_STATUS
                except (RuntimeError, OSError) as exc:
                    log.warning("c_store_failed", error=str(exc))
            result = StoreResult(path, status)
            results.append(result)
            if on_result is not None:
                on_result(result)
        if assoc.is_established:
            assoc.release()
    return results
