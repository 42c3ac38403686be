"""Write a set of synthetic studies: phantom -> slices -> DICOM files, plus `truth.csv`."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import structlog
from pydicom.uid import UID, ExplicitVRLittleEndian

from training.synth.dicom_writer import Geometry, StudyIdentity, ct_slice, enhanced_ct, save
from training.synth.phantom import ABDOMEN, ScanProtocol, make_phantom, render_study
from training.synth.truth import TRUTH_FILE, TruthRow, write_truth

log = structlog.get_logger(__name__)

# Studies are dated from here, one hour apart, so a set is reproducible
# (its UIDs too when `uid_entropy` is given).
FIRST_STUDY_AT = dt.datetime(2024, 1, 1, 8, 0, 0)


def study_seed(seed: int, number: int) -> int:
    """Independent, reproducible seed of study `number` in a set drawn with `seed`."""
    return int(np.random.SeedSequence([seed, number]).generate_state(1)[0])


def write_study(
    out: Path,
    *,
    number: int,
    study_class: str,
    seed: int,
    slices: int,
    size: int,
    transfer_syntax: UID = ExplicitVRLittleEndian,
    enhanced: bool = False,
    protocol: ScanProtocol = ABDOMEN,
    lesion_scale: float = 1.0,
    uid_entropy: str | None = None,
) -> list[TruthRow]:
    """Write study `number` under `out/study-NNNN/` and return its truth rows (paths relative to `out`)."""
    s = study_seed(seed, number)
    phantom = make_phantom(
        study_class=study_class, seed=s, n_slices=slices, protocol=protocol, lesion_scale=lesion_scale
    )
    volume, classes = render_study(phantom, size)
    ident = StudyIdentity.new(
        number=number,
        seed=seed,
        acquired_at=FIRST_STUDY_AT + dt.timedelta(hours=number),
        uid_entropy=uid_entropy,
    )
    geometry = Geometry(
        size, phantom.fov_mm / size, phantom.slice_spacing_mm, phantom.z_positions, phantom.center_xy
    )
    folder = f"study-{number:04d}"
    rows = []
    if enhanced:
        ds = enhanced_ct(volume, ident=ident, geometry=geometry)
        rel = f"{folder}/enhanced.dcm"
        save(ds, out / rel, transfer_syntax)
        instances = [(ds, rel, i, i) for i in range(slices)]
    else:
        instances = []
        for i in range(slices):
            ds = ct_slice(volume[i], ident=ident, geometry=geometry, index=i)
            rel = f"{folder}/IM{i + 1:04d}.dcm"
            save(ds, out / rel, transfer_syntax)
            instances.append((ds, rel, 0, i))
    for ds, rel, frame, index in instances:
        rows.append(
            TruthRow(
                study_instance_uid=ident.study_instance_uid,
                series_instance_uid=str(ds.SeriesInstanceUID),
                sop_instance_uid=str(ds.SOPInstanceUID),
                frame=frame,
                slice_index=index,
                slice_class=classes[index],
                study_class=study_class,
                accession_number=ident.accession_number,
                path=rel,
            )
        )
    return rows


def generate(
    out: Path,
    *,
    studies: int,
    slices: int,
    classes: Sequence[str],
    seed: int,
    size: int,
    transfer_syntax: UID = ExplicitVRLittleEndian,
    enhanced: bool = False,
    protocol: ScanProtocol = ABDOMEN,
    lesion_scale: float = 1.0,
    first_number: int = 1,
    progress: Callable[[int, int, str], None] | None = None,
    uid_entropy: str | None = None,
) -> list[TruthRow]:
    """Write `studies` studies cycling through `classes`, then `out/truth.csv`; return all truth rows."""
    if not classes:
        raise ValueError("at least one class is needed")
    out.mkdir(parents=True, exist_ok=True)
    rows: list[TruthRow] = []
    for k in range(studies):
        number = first_number + k
        study_class = classes[k % len(classes)]
        rows += write_study(
            out,
            number=number,
            study_class=study_class,
            seed=seed,
            slices=slices,
            size=size,
            transfer_syntax=transfer_syntax,
            enhanced=enhanced,
            protocol=protocol,
            lesion_scale=lesion_scale,
            uid_entropy=uid_entropy,
        )
        log.debug("synthetic_study_written", number=number, study_class=study_class, slices=slices)
        if progress is not None:
            progress(k + 1, studies, study_class)
    write_truth(out / TRUTH_FILE, rows)
    return rows
