"""Synthetic DICOM: valid for dciodvfy, clean for pydicom and dcmdump, correct geometry and HU."""

from __future__ import annotations

import os
import shutil
import subprocess
import warnings
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.pixels import apply_rescale
from pydicom.uid import CTImageStorage, EnhancedCTImageStorage

from training.synth.dicom_writer import TRANSFER_SYNTAXES
from training.synth.generate import generate
from training.synth.phantom import make_phantom, render_study
from training.synth.truth import read_truth

SIZE = 64


def _tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        if os.environ.get("CI", "").lower() in {"1", "true", "yes"}:
            pytest.fail(f"{name} is not installed")
        pytest.skip(f"{name} is not installed")
    return path


@pytest.fixture(scope="module")
def studies(tmp_path_factory: pytest.TempPathFactory) -> dict[tuple[str, bool], Path]:
    """One small Tumor study per transfer syntax, as slices and as one Enhanced CT instance."""
    out = {}
    for ts in TRANSFER_SYNTAXES:
        for enhanced in (False, True):
            folder = tmp_path_factory.mktemp(f"{ts}-{'mf' if enhanced else 'sf'}")
            generate(
                folder,
                studies=1,
                slices=3,
                classes=["Tumor"],
                seed=4,
                size=SIZE,
                transfer_syntax=TRANSFER_SYNTAXES[ts],
                enhanced=enhanced,
            )
            out[(ts, enhanced)] = folder
    return out


def _files(folder: Path) -> list[Path]:
    return sorted(folder.glob("study-*/*.dcm"))


@pytest.mark.integration  # a Debian package's binary: `make test` installs it, `make check` does not
@pytest.mark.parametrize("enhanced", [False, True], ids=["ct", "enhanced-ct"])
@pytest.mark.parametrize("ts", sorted(TRANSFER_SYNTAXES))
def test_dciodvfy_reports_no_errors(studies: dict, ts: str, enhanced: bool) -> None:
    """The DICOM IOD validator finds no error (nor warning) in any file."""
    dciodvfy = _tool("dciodvfy")
    for path in _files(studies[(ts, enhanced)]):
        result = subprocess.run([dciodvfy, str(path)], capture_output=True, text=True, check=False)
        report = result.stdout + result.stderr
        assert "Error" not in report, report
        assert "Warning" not in report, report
        assert ("EnhancedCTImage" if enhanced else "CTImage") in report


@pytest.mark.integration  # a Debian package's binary: `make test` installs it, `make check` does not
@pytest.mark.parametrize("enhanced", [False, True], ids=["ct", "enhanced-ct"])
@pytest.mark.parametrize("ts", sorted(TRANSFER_SYNTAXES))
def test_dcmdump_reads_without_warnings(studies: dict, ts: str, enhanced: bool) -> None:
    """DCMTK parses every file with exit status 0 and no warning or error lines."""
    dcmdump = _tool("dcmdump")
    for path in _files(studies[(ts, enhanced)]):
        result = subprocess.run([dcmdump, "-q", str(path)], capture_output=True, text=True, check=False)
        assert result.returncode == 0, result.stderr
        assert not [line for line in result.stderr.splitlines() if line[:2] in {"W:", "E:", "F:"}]
        assert "(7fe0,0010)" in result.stdout.lower()


@pytest.mark.parametrize("enhanced", [False, True], ids=["ct", "enhanced-ct"])
@pytest.mark.parametrize("ts", sorted(TRANSFER_SYNTAXES))
def test_pixels_decode_without_warnings_to_the_rendered_hounsfield_units(
    studies: dict, ts: str, enhanced: bool
) -> None:
    """pydicom decodes every syntax silently, and the rescale gives back the phantom's HU exactly."""
    rows = read_truth(studies[(ts, enhanced)])
    phantom_hu, _ = render_study(make_phantom(study_class="Tumor", seed=_study_seed(), n_slices=3), SIZE)
    expected = np.clip(np.rint(phantom_hu), -1024, 3071)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for path in _files(studies[(ts, enhanced)]):
            ds = pydicom.dcmread(path)
            if enhanced:  # pydicom's rescale ignores functional groups: read the shared one
                t = ds.SharedFunctionalGroupsSequence[0].PixelValueTransformationSequence[0]
                hu = ds.pixel_array * float(t.RescaleSlope) + float(t.RescaleIntercept)
            else:
                hu = apply_rescale(ds.pixel_array, ds)
            assert ds.PixelRepresentation == 1 and ds.BitsAllocated == 16
            assert str(ds.file_meta.TransferSyntaxUID) == TRANSFER_SYNTAXES[ts]
            if enhanced:
                assert ds.SOPClassUID == EnhancedCTImageStorage and int(ds.NumberOfFrames) == 3
                np.testing.assert_array_equal(hu, expected)
            else:
                assert ds.SOPClassUID == CTImageStorage
                np.testing.assert_array_equal(hu, expected[int(ds.InstanceNumber) - 1])
    assert len(rows) == 3


def _study_seed() -> int:
    from training.synth.generate import study_seed

    return study_seed(4, 1)


def test_series_geometry_uids_and_fake_patient(tmp_path: Path) -> None:
    """512x512 slices: one series per study, consecutive positions, fresh UIDs, an obviously fake patient."""
    generate(tmp_path, studies=2, slices=4, classes=["Normal", "Cyst"], seed=1, size=512)
    by_study: dict[str, list[pydicom.Dataset]] = {}
    for path in _files(tmp_path):
        ds = pydicom.dcmread(path)
        by_study.setdefault(ds.StudyInstanceUID, []).append(ds)
    assert len(by_study) == 2
    sops = set()
    for slices in by_study.values():
        assert len({ds.SeriesInstanceUID for ds in slices}) == 1
        slices.sort(key=lambda ds: int(ds.InstanceNumber))
        z = [float(ds.ImagePositionPatient[2]) for ds in slices]
        steps = np.diff(z)
        assert np.allclose(steps, steps[0]) and steps[0] < 0
        assert np.isclose(abs(steps[0]), float(slices[0].SliceThickness), atol=1e-3)
        assert [float(ds.SliceLocation) for ds in slices] == z
        for ds in slices:
            assert (ds.Rows, ds.Columns) == (512, 512)
            assert ds.RescaleSlope == 1 and ds.RescaleIntercept == -1024
            assert "SYNTHETIC" in str(ds.PatientName) and ds.PatientID.startswith("SYNTH-")
            assert ds.PatientIdentityRemoved == "YES"
            assert ds.Modality == "CT" and ds.AccessionNumber
            sops.add(ds.SOPInstanceUID)
    assert len(sops) == 8


def test_two_runs_with_one_seed_share_pixels_but_not_uids(tmp_path: Path) -> None:
    """UIDs are fresh on every run (a resend is a new study); pixels follow the seed."""
    a = generate(tmp_path / "a", studies=1, slices=2, classes=["Stone"], seed=9, size=32)
    b = generate(tmp_path / "b", studies=1, slices=2, classes=["Stone"], seed=9, size=32)
    assert {r.sop_instance_uid for r in a}.isdisjoint({r.sop_instance_uid for r in b})
    for ra, rb in zip(a, b, strict=True):
        pa = pydicom.dcmread(tmp_path / "a" / ra.path).pixel_array
        pb = pydicom.dcmread(tmp_path / "b" / rb.path).pixel_array
        np.testing.assert_array_equal(pa, pb)
