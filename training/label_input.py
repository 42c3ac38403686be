"""Labels from the command line or a CSV file, validated before anything is written.

CSV columns (header required): `label` and exactly one of `sop_instance_uid` / `study_instance_uid`
per row; optional `source` and `annotator` override the command's defaults.
"""

from __future__ import annotations

import csv
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from common.vocabulary import CLASS_NAMES, UID_LENGTH, is_valid_uid


class LabelInputError(ValueError):
    """A label row that cannot be recorded; the message names the row and the problem."""


@dataclass(frozen=True, slots=True)
class LabelRow:
    label: str
    source: str
    annotator: str | None
    sop_instance_uid: str | None = None
    study_instance_uid: str | None = None


def normalise_class(value: str, classes: Sequence[str] = CLASS_NAMES) -> str | None:
    """The canonical class name for `value` (case-insensitive), or None."""
    return {c.lower(): c for c in classes}.get(value.strip().lower())


def make_row(
    *, label: str, source: str, annotator: str | None, instance: str | None, study: str | None, where: str
) -> LabelRow:
    cls = normalise_class(label)
    if cls is None:
        raise LabelInputError(f"{where}: unknown class {label!r}; expected one of {', '.join(CLASS_NAMES)}")
    instance, study = (instance or "").strip() or None, (study or "").strip() or None
    if (instance is None) == (study is None):
        raise LabelInputError(f"{where}: give exactly one of an instance UID or a study UID")
    uid = instance or study or ""
    if len(uid) > UID_LENGTH:
        raise LabelInputError(f"{where}: UID longer than {UID_LENGTH} characters")
    if not is_valid_uid(uid):
        # A label on a UID that no study can have would be recorded and never match anything.
        raise LabelInputError(f"{where}: {uid!r} is not a DICOM UID (digits and dots, e.g. 1.2.840.1)")
    if not source.strip():
        raise LabelInputError(f"{where}: empty source")
    return LabelRow(
        label=cls,
        source=source.strip(),
        annotator=(annotator or "").strip() or None,
        sop_instance_uid=instance,
        study_instance_uid=study,
    )


def read_csv(path: Path, *, default_source: str, default_annotator: str | None) -> list[LabelRow]:
    """Every row of a label CSV, or LabelInputError naming the first bad row (nothing half-written)."""
    with path.open(newline="", encoding="utf-8-sig") as f:
        reader = csv.DictReader(f)
        fields = set(reader.fieldnames or ())
        if "label" not in fields or not fields & {"sop_instance_uid", "study_instance_uid"}:
            raise LabelInputError(
                f"{path}: the header needs `label` and `sop_instance_uid` and/or `study_instance_uid`; got {sorted(fields)}"
            )
        return list(_rows(reader, path, default_source, default_annotator))


def _rows(
    reader: Iterable[dict[str, str]], path: Path, default_source: str, default_annotator: str | None
) -> Iterable[LabelRow]:
    for line, record in enumerate(reader, start=2):
        yield make_row(
            label=record.get("label") or "",
            source=record.get("source") or default_source,
            annotator=record.get("annotator") or default_annotator,
            instance=record.get("sop_instance_uid"),
            study=record.get("study_instance_uid"),
            where=f"{path.name} line {line}",
        )
