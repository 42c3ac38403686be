"""A DICOM SR's content tree in words: one line per content item, indented by depth.

References (UIDREF, IMAGE, COMPOSITE) are left out: UIDs mean nothing to a reader.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import pydicom
from pydicom.dataset import Dataset

_SKIPPED = frozenset({"UIDREF", "IMAGE", "COMPOSITE", "WAVEFORM", "SCOORD", "SCOORD3D", "TCOORD"})


@dataclass(frozen=True, slots=True)
class SrLine:
    depth: int
    name: str
    value: str


def _meaning(item: Dataset, sequence: str) -> str:
    seq = item.get(sequence)
    return str(seq[0].get("CodeMeaning", "")) if seq else ""


def _value(item: Dataset) -> str:
    kind = str(item.get("ValueType", ""))
    if kind == "TEXT":
        return str(item.get("TextValue", ""))
    if kind == "CODE":
        return _meaning(item, "ConceptCodeSequence")
    if kind == "NUM":
        measured = item.get("MeasuredValueSequence")
        if not measured:
            return ""
        unit = _meaning(measured[0], "MeasurementUnitsCodeSequence")
        return f"{measured[0].get('NumericValue', '')} {unit if unit not in ('', 'no units') else ''}".strip()
    if kind in ("DATETIME", "DATE", "TIME", "PNAME"):
        return ""  # dates and names are the observer's context, not the finding
    return ""


def _walk(items: object, depth: int, out: list[SrLine]) -> None:
    for item in items or []:  # type: ignore[attr-defined]
        kind = str(item.get("ValueType", ""))
        if kind in _SKIPPED or kind in ("DATETIME", "DATE", "TIME", "PNAME"):
            continue
        name = _meaning(item, "ConceptNameCodeSequence")
        out.append(SrLine(depth, name, _value(item)))
        _walk(item.get("ContentSequence"), depth + 1, out)


def sr_lines(sr: Dataset | bytes) -> list[SrLine]:
    """The SR's title and content items in document order."""
    ds = pydicom.dcmread(io.BytesIO(sr)) if isinstance(sr, bytes) else sr
    out = [SrLine(0, _meaning(ds, "ConceptNameCodeSequence"), "")]
    _walk(ds.get("ContentSequence"), 1, out)
    return out
