"""The phantom: reproducible, anatomical HU ranges, class-specific lesions only where they are."""

from __future__ import annotations

import numpy as np
import pytest

from training.synth.phantom import _Canvas, make_phantom, render_slice, render_study

SIZE = 128


def _lesion_pixels(study_class: str, seed: int, size: int = SIZE) -> tuple[np.ndarray, object]:
    """HU of the pixels that differ between the study and its lesion-free twin, on the lesion's centre slice."""
    phantom = make_phantom(study_class=study_class, seed=seed, n_slices=16)
    z = phantom.lesion.shape.center[2]
    with_lesion, _ = render_slice(phantom, z, size, noise_seed=1)
    without, _ = render_slice(
        phantom.__class__(**{**phantom.__dict__, "lesion": None}), z, size, noise_seed=1
    )
    changed = np.abs(with_lesion - without) > 1e-3
    return with_lesion[changed], phantom


def test_same_seed_same_pixels_other_seed_other_pixels() -> None:
    """A seed fixes the whole study; another seed gives another patient."""
    a, ca = render_study(make_phantom(study_class="Tumor", seed=7, n_slices=6), 64)
    b, cb = render_study(make_phantom(study_class="Tumor", seed=7, n_slices=6), 64)
    c, _ = render_study(make_phantom(study_class="Tumor", seed=8, n_slices=6), 64)
    assert np.array_equal(a, b) and ca == cb
    assert not np.allclose(a, c)


def test_anatomy_has_air_fat_soft_tissue_bone_and_bowel_gas() -> None:
    """A mid-abdomen slice holds the tissues a real one does, each in its HU range."""
    phantom = make_phantom(study_class="Normal", seed=3, n_slices=10)
    hu, _ = render_slice(phantom, phantom.z_positions[5], 256, noise_seed=0)
    corner = hu[:10, :10]
    assert np.all(corner < -900)  # air outside the body
    body = hu[100:160, 20:236]
    assert np.count_nonzero((body > -130) & (body < -70)) > 200  # fat
    assert np.count_nonzero((hu > 20) & (hu < 80)) > 2000  # muscle and soft tissue
    assert np.count_nonzero(hu > 500) > 30  # vertebra
    cavity = hu[60:140, 60:196]
    assert np.count_nonzero(cavity < -900) > 10  # gas in bowel loops inside the abdomen
    assert np.count_nonzero(hu > 130) > 50  # enhancing renal cortex and aorta


def test_normal_study_has_no_lesion_and_only_normal_slices() -> None:
    """A Normal study draws no lesion; every slice's truth is Normal."""
    phantom = make_phantom(study_class="Normal", seed=5, n_slices=8)
    _, classes = render_study(phantom, 64)
    assert phantom.lesion is None
    assert classes == ["Normal"] * 8


@pytest.mark.parametrize("study_class", ["Cyst", "Stone", "Tumor"])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_lesion_shows_only_on_the_slices_that_cross_it(study_class: str, seed: int) -> None:
    """Slices crossing the lesion carry its class; slices beyond its extent are Normal."""
    phantom = make_phantom(study_class=study_class, seed=seed, n_slices=24)
    _, classes = render_study(phantom, 64)
    lesion = phantom.lesion
    cz, rz = lesion.shape.center[2], lesion.shape.radii[2]
    assert study_class in classes
    for z, cls in zip(phantom.z_positions, classes, strict=True):
        if abs(z - cz) >= rz:
            assert cls == "Normal"
    assert classes[phantom.z_positions.index(cz)] == study_class
    assert classes.count("Normal") > 0


@pytest.mark.parametrize("seed", range(4))
def test_cyst_is_near_water_and_homogeneous(seed: int) -> None:
    """Cyst pixels sit near water density (0-20 HU plus noise)."""
    pixels, phantom = _lesion_pixels("Cyst", seed)
    core = np.median(pixels)
    assert 0 - 10 <= core <= 20 + 10
    assert 7 <= phantom.lesion.shape.radii[0] <= 22


@pytest.mark.parametrize("seed", range(4))
def test_stone_is_small_very_dense_and_in_the_collecting_system(seed: int) -> None:
    """A stone reaches 400-1500 HU, is a few mm across and lies in the kidney's medial sinus."""
    pixels, phantom = _lesion_pixels("Stone", seed, size=256)
    assert 400 - 60 <= pixels.max() <= 1500 + 60
    stone = phantom.lesion.shape
    assert max(stone.radii) <= 5.0
    kidney = min(
        phantom.kidneys,
        key=lambda k: np.hypot(k.shape.center[0] - stone.center[0], k.shape.center[1] - stone.center[1]),
    )
    k = kidney.shape
    local = np.array(stone.center) - np.array(k.center)
    c, s = np.cos(k.angle), np.sin(k.angle)
    u, v = c * local[0] + s * local[1], -s * local[0] + c * local[1]
    rho = np.sqrt((u / k.radii[0]) ** 2 + (v / k.radii[1]) ** 2 + (local[2] / k.radii[2]) ** 2)
    assert rho < 0.5  # deep in the kidney, where the pelvis and calyces are
    assert u * kidney.medial_sign > -0.2 * k.radii[0]  # on the hilum's side


def test_stone_survives_small_image_sizes() -> None:
    """Even at 32x32 the stone's slice is marked (partial volume keeps it visible)."""
    for seed in range(3):
        phantom = make_phantom(study_class="Stone", seed=seed, n_slices=8)
        _, classes = render_study(phantom, 32)
        assert "Stone" in classes


@pytest.mark.parametrize("seed", range(4))
def test_tumor_is_solid_heterogeneous_and_deforms_the_kidney(seed: int) -> None:
    """A tumour averages 30-60 HU, is more textured than noise alone, and bulges out of the kidney."""
    pixels, phantom = _lesion_pixels("Tumor", seed)
    solid = pixels[(pixels > 0) & (pixels < 100)]
    assert 25 <= np.median(solid) <= 65
    assert np.std(pixels) > phantom.noise_hu
    # Deformation: some tumour pixels lie outside the kidney's own outline.
    tumour, kidney = phantom.lesion.shape, None
    kidney = min(
        phantom.kidneys,
        key=lambda k: np.hypot(k.shape.center[0] - tumour.center[0], k.shape.center[1] - tumour.center[1]),
    )
    cv = _Canvas(SIZE, tumour.center[2])
    rho_kidney = cv.ellipse(kidney.shape)[0]
    rho_tumour = cv.ellipse(tumour)[0]
    assert np.count_nonzero((rho_tumour < 0.9) & (rho_kidney > 1.05)) > 0


def test_noise_and_sizes_vary_with_the_seed() -> None:
    """Seeds change noise level, lesion size and lesion position."""
    phantoms = [make_phantom(study_class="Cyst", seed=s, n_slices=8) for s in range(6)]
    assert len({round(p.noise_hu, 3) for p in phantoms}) == 6
    assert len({round(p.lesion.shape.radii[0], 3) for p in phantoms}) == 6
    assert len({p.lesion.shape.center for p in phantoms}) == 6


def test_unknown_class_and_empty_study_are_refused() -> None:
    """A class outside the four, or zero slices, is a clear error."""
    with pytest.raises(ValueError, match="unknown class"):
        make_phantom(study_class="Polyp", seed=0, n_slices=4)
    with pytest.raises(ValueError, match="at least one slice"):
        make_phantom(study_class="Normal", seed=0, n_slices=0)
