"""DICOM and image files to model tensors: codecs, HU, window, photometry, padding, shapes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
import pytest
from PIL import Image
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from classifier.model.preprocess import (
    KIDNEY_WINDOW,
    Window,
    apply_window,
    dicom_to_frames,
    dicom_to_hu,
    image_file_to_model_input,
    to_model_input,
)
from classifier.worker.errors import DecodeError


def synthetic_ct(
    hu: np.ndarray, *, slope: float = 1.0, intercept: float = -1024.0, photometric: str = "MONOCHROME2"
) -> Dataset:
    """An in-memory CT dataset whose stored values give `hu` after the rescale."""
    stored = np.rint((hu - intercept) / slope).astype(np.int16)
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPInstanceUID = generate_uid()
    ds.Modality = "CT"
    ds.Rows, ds.Columns = stored.shape
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = photometric
    ds.BitsAllocated = ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 1
    ds.RescaleSlope, ds.RescaleIntercept = slope, intercept
    ds.PixelData = stored.tobytes()
    return ds


@pytest.mark.parametrize(
    ("compressed", "original"),
    [
        ("693_J2KR.dcm", "693_UNCR.dcm"),  # CT, JPEG 2000 lossless
        ("emri_small_jpeg_2k_lossless.dcm", "emri_small.dcm"),  # multi-frame JPEG 2000 lossless
        ("emri_small_jpeg_ls_lossless.dcm", "emri_small.dcm"),  # JPEG-LS lossless
        ("emri_small_RLE.dcm", "emri_small.dcm"),  # RLE lossless
        ("emri_small_big_endian.dcm", "emri_small.dcm"),  # explicit VR big endian
    ],
)
def test_lossless_transfer_syntaxes_give_the_same_tensor(compressed: str, original: str) -> None:
    """A losslessly compressed file and its uncompressed original give identical model tensors."""
    a = to_model_input(dicom_to_frames(get_testdata_file(compressed), Window(300, 2000)), 64)
    b = to_model_input(dicom_to_frames(get_testdata_file(original), Window(300, 2000)), 64)
    assert a.shape == b.shape and a.shape[1:] == (64, 64, 3)
    assert a.std() > 0  # not a blank image that would match anything
    np.testing.assert_array_equal(a, b)


def test_modality_lut_gives_hounsfield_units() -> None:
    """Stored values are rescaled with slope and intercept into HU."""
    hu = np.array([[-1000.0, 0.0], [40.0, 1000.0]])
    out, mask = dicom_to_hu(synthetic_ct(hu, slope=2.0, intercept=-1024.0))
    np.testing.assert_allclose(out[0], hu, atol=1.0)
    assert mask is None


def test_window_maps_its_edges_to_black_and_white() -> None:
    """Window 40/400: -160 HU and below is 0, 240 HU and above is 255, the centre is mid-grey."""
    hu = np.array([[-1000.0, -160.0, 40.0], [240.0, 3000.0, -60.0]], dtype=np.float32)
    out = apply_window(hu, KIDNEY_WINDOW)
    assert out.dtype == np.uint8
    assert out.tolist() == [[0, 0, 128], [255, 255, 64]]


def test_monochrome1_is_inverted() -> None:
    """MONOCHROME1 shows low values white: inverting it gives the MONOCHROME2 picture."""
    hu = np.array([[-500.0, 40.0], [100.0, 500.0]])
    m2 = dicom_to_frames(synthetic_ct(hu))
    m1 = dicom_to_frames(synthetic_ct(hu, photometric="MONOCHROME1"))
    np.testing.assert_array_equal(m1, 255 - m2)


def test_pixel_padding_is_black_even_inside_the_window() -> None:
    """Pixels equal to PixelPaddingValue become 0 whatever HU they would map to."""
    hu = np.full((4, 4), 40.0)
    ds = synthetic_ct(hu)
    ds.PixelPaddingValue = int(np.int16(40 + 1024))
    frames = dicom_to_frames(ds)
    assert frames.max() == 0


def test_real_padded_ct_blanks_its_padding() -> None:
    """693_UNCR.dcm pads with -2000: those pixels are 0 and the body is not."""
    ds = pydicom.dcmread(get_testdata_file("693_UNCR.dcm"))
    stored = ds.pixel_array
    frames = dicom_to_frames(ds, Window(40, 4000))
    padded = stored == int(ds.PixelPaddingValue)
    assert padded.any() and (frames[0][padded] == 0).all()
    assert frames[0][~padded].mean() > 10


def test_enhanced_multiframe_ct_uses_functional_group_rescale() -> None:
    """eCT_Supplemental has no top-level rescale: the shared functional group's intercept applies."""
    ds = pydicom.dcmread(get_testdata_file("eCT_Supplemental.dcm"))
    hu, _ = dicom_to_hu(ds)
    assert hu.shape == (2, 512, 512)
    np.testing.assert_allclose(hu, ds.pixel_array.astype(np.float32) - 1024.0)
    assert to_model_input(dicom_to_frames(ds), 32).shape == (2, 32, 32, 3)


def test_non_square_images_are_padded_not_stretched() -> None:
    """A 2:1 image keeps its aspect: the padded half is black, the image half is not."""
    frame = np.full((16, 32), 200, dtype=np.uint8)
    x = to_model_input(frame, 32)
    assert x.shape == (1, 32, 32, 3)
    assert x[0, 12:20, :, 0].min() == pytest.approx(200.0)  # middle rows: image
    assert x[0, :6, :, 0].max() == 0.0 and x[0, -6:, :, 0].max() == 0.0  # top/bottom: padding
    assert (x[..., 0] == x[..., 1]).all() and (x[..., 1] == x[..., 2]).all()


def test_training_png_and_dicom_frame_share_one_tensor_path(tmp_path: Path) -> None:
    """An 8-bit frame saved as PNG gives the same tensor as the frame itself."""
    frame = dicom_to_frames(get_testdata_file("CT_small.dcm"))[0]
    path = tmp_path / "slice.png"
    Image.fromarray(frame).save(path)
    np.testing.assert_array_equal(image_file_to_model_input(path, 64), to_model_input(frame[None], 64))


def test_color_images_are_refused() -> None:
    """An RGB DICOM is not a CT slice: DecodeError, not a crash."""
    with pytest.raises(DecodeError, match="grayscale"):
        dicom_to_frames(get_testdata_file("SC_rgb.dcm"))


def test_garbage_files_are_refused(tmp_path: Path) -> None:
    """Neither a non-DICOM file nor a non-image file crashes: both raise DecodeError."""
    garbage = tmp_path / "garbage.dcm"
    garbage.write_bytes(b"\x00not dicom at all" * 20)
    with pytest.raises(DecodeError):
        dicom_to_frames(garbage)
    with pytest.raises(DecodeError):
        image_file_to_model_input(garbage, 32)


def test_truncated_pixel_data_is_a_decode_error() -> None:
    """A JPEG 2000 stream cut short raises DecodeError."""
    with pytest.raises(DecodeError):
        dicom_to_frames(get_testdata_file("emri_small_jpeg_2k_lossless_too_short.dcm"))


def test_window_must_have_positive_width() -> None:
    """A zero-width window is a configuration error."""
    with pytest.raises(ValueError):
        Window(40, 0)


@pytest.mark.parametrize(
    ("name", "window"),
    [
        ("693_UNCR.dcm", KIDNEY_WINDOW),
        ("CT_small.dcm", Window(300, 1500)),
        ("eCT_Supplemental.dcm", KIDNEY_WINDOW),
    ],
)
def test_lookup_table_path_equals_per_pixel_arithmetic(name: str, window: Window) -> None:
    """The fast integer lookup table gives exactly the per-pixel HU + window result."""
    ds = pydicom.dcmread(get_testdata_file(name))
    hu, mask = dicom_to_hu(ds)
    expected = apply_window(hu, window)
    if mask is not None:
        expected[mask] = 0
    np.testing.assert_array_equal(dicom_to_frames(ds, window), expected)
