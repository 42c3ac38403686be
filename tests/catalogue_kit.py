"""Catalogue rows for archived instances, for tests that put labelled studies in place without a listener."""

from __future__ import annotations

import datetime as dt

from pydicom.dataset import Dataset

from storage.db.tables import Instance, Series


def catalogued_instance(
    ds: Dataset,
    series: Series,
    *,
    archive_uri: str,
    now: dt.datetime,
    sha256: str = "0" * 64,
    size_bytes: int = 1,
) -> Instance:
    """The `instances` row of the single-frame instance `ds`, archived at `archive_uri` and processed."""
    return Instance(
        sop_instance_uid=ds.SOPInstanceUID,
        series=series,
        sop_class_uid=ds.SOPClassUID,
        transfer_syntax_uid=ds.file_meta.TransferSyntaxUID,
        archive_uri=archive_uri,
        sha256=sha256,
        size_bytes=size_bytes,
        number_of_frames=1,
        received_at=now,
        state="processed",
        updated_at=now,
    )
