"""Heat maps back on the source frame, and the overlay a viewer shows."""

from __future__ import annotations

import numpy as np

from classifier.model.preprocess import to_model_input
from classifier.report.build import without_flat_maps
from classifier.report.heatmap import overlay_rgb, to_source_geometry


def test_a_heat_map_goes_back_onto_a_non_square_source_frame() -> None:
    """The inverse of pad-to-square + resize: a hot spot lands where it was in the source."""
    rows, columns = 40, 80
    frame = np.zeros((rows, columns), dtype=np.uint8)
    frame[10:20, 60:70] = 255
    model_input = to_model_input(frame, 32)[0, ..., 0] / 255.0  # the hot spot, as the model sees it
    back = to_source_geometry(model_input, rows, columns)
    assert back.shape == (rows, columns)
    hot = np.unravel_index(int(np.argmax(back)), back.shape)
    assert 10 <= hot[0] < 20 and 60 <= hot[1] < 70
    assert back[30:, :40].max() < 0.05  # far from the spot stays cold


def test_the_overlay_keeps_cold_pixels_grey_and_colours_hot_ones() -> None:
    """Where the map is 0 the slice shows unchanged; where it is 1 the colour dominates."""
    gray = np.full((4, 4), 100, dtype=np.uint8)
    heat = np.zeros((4, 4))
    heat[0, 0] = 1.0
    rgb = overlay_rgb(gray, heat)
    assert rgb.shape == (4, 4, 3) and rgb.dtype == np.uint8
    assert (rgb[1:, 1:] == 100).all()
    assert len(set(rgb[0, 0].tolist())) > 1  # coloured, no longer grey


def test_a_map_without_spatial_variation_is_sent_empty() -> None:
    """A 1x1 last feature map (input under 64 px) cannot localize: no hot overlay over the whole slice."""
    cams = np.stack([np.ones((4, 4)), np.eye(4)]).astype(np.float32)
    out = without_flat_maps(cams)
    assert (out[0] == 0).all() and (out[1] == np.eye(4)).all()


def test_a_plain_renderer_shows_the_parametric_maps_hot_spot_bright(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """dcmj2pnm with its defaults (no windowing) shows the hot square white, the rest black; dciodvfy is clean."""
    import shutil
    import subprocess

    import pydicom
    import pytest
    from PIL import Image
    from pydicom.data import get_testdata_file
    from test_classifier_result_sr_statements import _report

    from classifier.report.heatmap import build_parametric_map

    if not (shutil.which("dcmj2pnm") and shutil.which("dciodvfy")):
        pytest.skip("DCMTK's dcmj2pnm and dicom3tools' dciodvfy are needed")
    source = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    heat = np.zeros((source.Rows, source.Columns))
    heat[40:80, 40:80] = 1.0
    path, png = tmp_path / "pmap.dcm", tmp_path / "pmap.png"
    build_parametric_map(_report(source, None), [source], [heat]).save_as(path, enforce_file_format=True)
    subprocess.run(["dcmj2pnm", "--write-png", str(path), str(png)], check=True, capture_output=True)
    shown = np.asarray(Image.open(png))
    assert shown.shape == (source.Rows, source.Columns)
    assert shown[60, 60] > 200 and shown[10, 10] < 10
    out = subprocess.run(["dciodvfy", str(path)], capture_output=True, text=True, check=False)
    assert [line for line in (out.stdout + out.stderr).splitlines() if line.startswith("Error")] == []
