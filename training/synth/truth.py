"""`truth.csv`: the true class of every slice (frame) of the synthetic studies, beside the files.

A slice that does not cross the lesion is Normal; `study_class` is the lesion's class for every
slice of the study. Frames are numbered from 0; a single-frame instance has frame 0.
"""

from __future__ import annotations

import csv
from collections.abc import Iterable
from dataclasses import asdict, dataclass, fields
from pathlib import Path

TRUTH_FILE = "truth.csv"


@dataclass(frozen=True, slots=True)
class TruthRow:
    study_instance_uid: str
    series_instance_uid: str
    sop_instance_uid: str
    frame: int
    slice_index: int
    slice_class: str
    study_class: str
    accession_number: str
    path: str  # relative to the folder holding truth.csv

    @classmethod
    def columns(cls) -> list[str]:
        return [f.name for f in fields(cls)]


def write_truth(path: Path, rows: Iterable[TruthRow]) -> None:
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=TruthRow.columns())
        writer.writeheader()
        for row in rows:
            writer.writerow(asdict(row))


def read_truth(path: Path) -> list[TruthRow]:
    """Rows of a `truth.csv` (or of the one inside a folder)."""
    if path.is_dir():
        path = path / TRUTH_FILE
    with path.open(newline="") as f:
        return [_truth_row(row) for row in csv.DictReader(f)]


def _truth_row(row: dict[str, str]) -> TruthRow:
    """A CSV row as text, with its two number columns as numbers."""
    return TruthRow(
        **{name: row[name] for name in TruthRow.columns() if name not in ("frame", "slice_index")},
        frame=int(row["frame"]),
        slice_index=int(row["slice_index"]),
    )


def study_truth(rows: Iterable[TruthRow]) -> dict[str, str]:
    """Study Instance UID -> the study's true class."""
    return {r.study_instance_uid: r.study_class for r in rows}
