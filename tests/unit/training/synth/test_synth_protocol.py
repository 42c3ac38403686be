"""Scan protocols: the targeted kidney protocol frames both kidneys, and the DICOM geometry says where."""

from __future__ import annotations

import shutil
import subprocess

import numpy as np
import pydicom
import pytest
from pydicom.pixels import apply_rescale

from training.synth.generate import study_seed, write_study
from training.synth.phantom import ABDOMEN, KIDNEY, make_phantom, render_study

SEEDS = range(6)


@pytest.mark.parametrize("seed", SEEDS)
def test_kidney_protocol_frames_both_kidneys_in_a_thin_slab(seed: int) -> None:
    """Both kidneys fit the targeted field of view, and the slab of thin slices crosses both."""
    phantom = make_phantom(study_class="Normal", seed=seed, n_slices=12, protocol=KIDNEY)
    half = KIDNEY.fov_mm / 2
    cx, cy = phantom.center_xy
    z = np.array(phantom.z_positions)
    assert np.allclose(np.diff(z), -KIDNEY.spacing_mm)  # top first, evenly spaced
    for kidney in phantom.kidneys:
        x, y, kz = kidney.shape.center
        reach = max(kidney.shape.radii[:2])
        assert abs(x - cx) + reach < half and abs(y - cy) + reach < half
        assert np.all(np.abs(z - kz) < kidney.shape.radii[2])


@pytest.mark.parametrize("study_class", ["Cyst", "Stone", "Tumor"])
@pytest.mark.parametrize("seed", SEEDS)
def test_kidney_protocol_lesion_shows_on_the_slab(study_class: str, seed: int) -> None:
    """Whatever the draw, the lesion crosses at least one slice, and larger lesions cross several."""
    phantom = make_phantom(study_class=study_class, seed=seed, n_slices=12, protocol=KIDNEY)
    _, classes = render_study(phantom, 64)
    shown = classes.count(study_class)
    assert shown >= 1
    if study_class != "Stone":
        assert shown >= 3  # 14 mm cysts and 30 mm tumours over 3 mm slices


def test_protocol_moves_the_slices_not_the_patient() -> None:
    """The same seed draws the same anatomy whatever the protocol; field of view, slices and phase differ."""
    abdomen = make_phantom(study_class="Normal", seed=3, n_slices=12, protocol=ABDOMEN)
    kidney = make_phantom(study_class="Normal", seed=3, n_slices=12, protocol=KIDNEY)
    assert [k.shape for k in abdomen.kidneys] == [k.shape for k in kidney.kidneys]
    assert abdomen.body == kidney.body and abdomen.liver == kidney.liver
    # Nephrographic phase: the medulla enhances like the cortex; corticomedullary: it stays darker.
    assert all(k.medulla_hu == k.cortex_hu for k in kidney.kidneys)
    assert all(k.medulla_hu < k.cortex_hu for k in abdomen.kidneys)
    assert (abdomen.fov_mm, kidney.fov_mm) == (ABDOMEN.fov_mm, KIDNEY.fov_mm)
    assert abdomen.center_xy == (0.0, 0.0) and kidney.center_xy != (0.0, 0.0)
    assert abdomen.z_positions != kidney.z_positions


@pytest.mark.parametrize("protocol", [ABDOMEN, KIDNEY], ids=lambda p: p.name)
def test_image_position_and_spacing_locate_the_aorta(tmp_path, protocol) -> None:  # type: ignore[no-untyped-def]
    """The pixel that ImagePositionPatient and PixelSpacing put at the aorta's centre shows enhanced blood."""
    size = 128
    write_study(tmp_path, number=1, study_class="Normal", seed=9, slices=4, size=size, protocol=protocol)
    phantom = make_phantom(study_class="Normal", seed=study_seed(9, 1), n_slices=4, protocol=protocol)
    aorta_x, aorta_y = 12.0, phantom.spine_y - 30.0  # where the phantom draws it (radius 11 mm)
    for path in sorted(tmp_path.glob("study-0001/*.dcm")):
        ds = pydicom.dcmread(path)
        x0, y0, _ = (float(v) for v in ds.ImagePositionPatient)
        row_spacing, col_spacing = (float(v) for v in ds.PixelSpacing)
        assert float(ds.ReconstructionDiameter) == pytest.approx(protocol.fov_mm)
        col = round((aorta_x - x0) / col_spacing)
        row = round((aorta_y - y0) / row_spacing)
        hu = apply_rescale(ds.pixel_array, ds)
        assert hu[row - 1 : row + 2, col - 1 : col + 2].mean() > 140, (path.name, row, col)


@pytest.mark.integration  # a Debian package's binary: `make test` installs it, `make check` does not
def test_kidney_protocol_passes_dciodvfy(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """The targeted geometry (off-centre origin, reconstruction diameter) is still a valid CT image."""
    dciodvfy = shutil.which("dciodvfy")
    if dciodvfy is None:
        pytest.skip("dciodvfy is not installed")  # test_synth_dicom.py fails CI on its absence
    write_study(tmp_path, number=1, study_class="Cyst", seed=2, slices=2, size=64, protocol=KIDNEY)
    for path in sorted(tmp_path.glob("study-0001/*.dcm")):
        report = subprocess.run([dciodvfy, str(path)], capture_output=True, text=True, check=False)
        text = report.stdout + report.stderr
        assert "Error" not in text and "Warning" not in text, text


@pytest.mark.parametrize("study_class", ["Cyst", "Stone", "Tumor"])
def test_lesion_scale_grows_the_lesion_and_nothing_else(study_class: str) -> None:
    """Scale 1.8 multiplies the lesion's radii by 1.8 and leaves the anatomy as drawn."""
    plain = make_phantom(study_class=study_class, seed=4, n_slices=12, protocol=KIDNEY)
    grown = make_phantom(study_class=study_class, seed=4, n_slices=12, protocol=KIDNEY, lesion_scale=1.8)
    assert np.allclose(np.array(grown.lesion.shape.radii), 1.8 * np.array(plain.lesion.shape.radii))
    assert grown.kidneys == plain.kidneys and grown.z_positions == plain.z_positions
    _, plain_classes = render_study(plain, 64)
    _, grown_classes = render_study(grown, 64)
    assert grown_classes.count(study_class) >= plain_classes.count(study_class)


def test_lesion_scale_must_be_positive() -> None:
    with pytest.raises(ValueError, match="lesion_scale"):
        make_phantom(study_class="Cyst", seed=0, n_slices=4, lesion_scale=0.0)
