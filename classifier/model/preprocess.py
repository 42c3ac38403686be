"""From a DICOM instance or a training image to the model's input tensor.

DICOM: decode the pixels (pydicom with the pylibjpeg codec plugins), apply the modality LUT
(RescaleSlope/Intercept, also from enhanced multi-frame functional groups) to get Hounsfield
units, apply a window, invert MONOCHROME1, blank pixel padding, and give 8-bit frames, one per
frame of the instance. Training JPG/PNG files are already windowed 8-bit images and take the same
path from there: pad to a square (keeping the anatomy's aspect ratio), resize, replicate to three
channels. The model graph does the rest (see `classifier.model.network`), so the tensors here are raw
[0, 255] floats.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from os import PathLike
from typing import IO

import numpy as np
import pydicom
from PIL import Image
from pydicom.dataset import Dataset

from classifier.worker.errors import DecodeError
from common.decodable import NotDecodable, check_supported_image
from common.vocabulary import KIDNEY_WINDOW_CENTER_HU, KIDNEY_WINDOW_WIDTH_HU

PREPROCESSING_ID = "kidneyct-v1"
PREPROCESSING_DESCRIPTION = (
    "DICOM: modality LUT to HU, linear window clip((HU-(c-w/2))/w,0,1)*255 rounded to uint8, MONOCHROME1 "
    "inverted, pixel padding set to 0. Images: 8-bit grayscale. Then: zero-pad to square (centred), "
    "bilinear resize to image_size, replicate to 3 channels, float32 in [0,255]; in-graph ResNet50 "
    "caffe normalisation (RGB->BGR, minus ImageNet means)."
)


@dataclass(frozen=True, slots=True)
class Window:
    """A linear VOI window in Hounsfield units."""

    center: float
    width: float

    def __post_init__(self) -> None:
        if self.width <= 0:
            raise ValueError(f"window width must be positive, got {self.width}")

    def as_dict(self) -> dict[str, float]:
        return {"center": self.center, "width": self.width}


# A soft-tissue/abdomen window: kidneys, cysts and tumours in contrast; stones saturate white.
KIDNEY_WINDOW = Window(center=KIDNEY_WINDOW_CENTER_HU, width=KIDNEY_WINDOW_WIDTH_HU)


def read_dataset(source: str | PathLike[str] | IO[bytes] | Dataset) -> Dataset:
    """The dataset itself, or the file read from `source`; not-DICOM raises `DecodeError`."""
    if isinstance(source, Dataset):
        return source
    try:
        return pydicom.dcmread(source)
    except (pydicom.errors.InvalidDicomError, EOFError, ValueError, KeyError) as exc:
        raise DecodeError(f"not a readable DICOM file: {exc}") from exc


def _stored_pixels(ds: Dataset) -> np.ndarray:
    """Stored values as [frames, rows, columns]."""
    if "PixelData" not in ds and "FloatPixelData" not in ds and "DoubleFloatPixelData" not in ds:
        raise DecodeError("no pixel data")
    try:
        check_supported_image(ds)  # the listener refuses by the same definition
    except NotDecodable as exc:
        raise DecodeError(str(exc)) from exc
    try:
        arr = ds.pixel_array
    except Exception as exc:  # any codec failure (truncated stream, missing plugin) is this event's fault
        raise DecodeError(f"pixel data cannot be decoded: {type(exc).__name__}: {exc}") from exc
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    if arr.ndim == 2 and frames <= 1:
        arr = arr[np.newaxis]
    if arr.ndim != 3 or arr.shape[0] != frames or min(arr.shape[1:]) < 1:
        raise DecodeError(f"unexpected pixel array shape {arr.shape} for {frames} frame(s)")
    return arr


def _pixel_value_transformation(item: Dataset | None) -> tuple[float, float] | None:
    if item is None:
        return None
    seq = item.get("PixelValueTransformationSequence")
    if not seq:
        return None
    return float(seq[0].get("RescaleSlope", 1.0)), float(seq[0].get("RescaleIntercept", 0.0))


def rescale_parameters(ds: Dataset, n_frames: int) -> list[tuple[float, float]]:
    """(slope, intercept) per frame: top-level attributes, else the enhanced functional groups."""
    if "RescaleSlope" in ds or "RescaleIntercept" in ds:
        pair = (float(ds.get("RescaleSlope", 1.0)), float(ds.get("RescaleIntercept", 0.0)))
        return [pair] * n_frames
    shared_seq = ds.get("SharedFunctionalGroupsSequence")
    shared = _pixel_value_transformation(shared_seq[0] if shared_seq else None)
    per_frame = ds.get("PerFrameFunctionalGroupsSequence") or []
    params = []
    for i in range(n_frames):
        own = _pixel_value_transformation(per_frame[i]) if i < len(per_frame) else None
        params.append(own or shared or (1.0, 0.0))
    return params


def padding_mask(ds: Dataset, stored: np.ndarray) -> np.ndarray | None:
    """True where the stored value is Pixel Padding (a value, or a range up to the range limit)."""
    if "PixelPaddingValue" not in ds:
        return None
    value = int(ds.PixelPaddingValue)
    limit = ds.get("PixelPaddingRangeLimit")
    if limit is None:
        return stored == value
    low, high = sorted((value, int(limit)))
    return (stored >= low) & (stored <= high)


def dicom_to_hu(source: str | PathLike[str] | Dataset) -> tuple[np.ndarray, np.ndarray | None]:
    """Hounsfield units as float32 [frames, rows, columns] and the padding mask (or None)."""
    ds = read_dataset(source)
    stored = _stored_pixels(ds)
    return _hu_from_stored(ds, stored), padding_mask(ds, stored)


def _hu_from_stored(ds: Dataset, stored: np.ndarray) -> np.ndarray:
    if "ModalityLUTSequence" in ds:
        # A lookup table rather than a linear rescale: rare for CT, but let pydicom apply it.
        from pydicom.pixels import apply_modality_lut

        return np.asarray(apply_modality_lut(stored, ds), dtype=np.float32)
    hu = stored.astype(np.float32)
    for i, (slope, intercept) in enumerate(rescale_parameters(ds, stored.shape[0])):
        hu[i] = hu[i] * np.float32(slope) + np.float32(intercept)
    return hu


def apply_window(hu: np.ndarray, window: Window) -> np.ndarray:
    """A linear window from HU to uint8: c - w/2 and below -> 0, c + w/2 and above -> 255."""
    low = window.center - window.width / 2.0
    scaled = np.clip((hu - np.float32(low)) / np.float32(window.width), 0.0, 1.0) * np.float32(255.0)
    return np.rint(scaled).astype(np.uint8)


def _window_integer_pixels(
    stored: np.ndarray, params: list[tuple[float, float]], window: Window
) -> np.ndarray:
    """Rescale + window of integer stored values through a lookup table: the same float32 arithmetic
    as `apply_window(dicom_to_hu(...))`, done once per distinct stored value instead of per pixel."""
    out = np.empty(stored.shape, dtype=np.uint8)
    for pair in set(params):
        idx = [i for i, p in enumerate(params) if p == pair]
        part = stored[idx]
        low, high = int(part.min()), int(part.max())
        values = np.arange(low, high + 1, dtype=np.float32) * np.float32(pair[0]) + np.float32(pair[1])
        lut = apply_window(values, window)
        out[idx] = lut[part.astype(np.int64) - low]
    return out


def dicom_to_frames(source: str | PathLike[str] | Dataset, window: Window = KIDNEY_WINDOW) -> np.ndarray:
    """Windowed 8-bit frames [frames, rows, columns] of a grayscale DICOM instance."""
    ds = read_dataset(source)
    stored = _stored_pixels(ds)
    if "ModalityLUTSequence" not in ds and np.issubdtype(stored.dtype, np.integer):
        frames = _window_integer_pixels(stored, rescale_parameters(ds, stored.shape[0]), window)
    else:
        frames = apply_window(_hu_from_stored(ds, stored), window)
    mask = padding_mask(ds, stored)
    if str(ds.get("PhotometricInterpretation")) == "MONOCHROME1":
        frames = np.uint8(255) - frames
    if mask is not None:
        frames[mask] = 0  # padding is "no data": show it as background, whatever the photometry
    return frames


def pad_to_square(frame: np.ndarray) -> np.ndarray:
    """Centre `frame` on a zero (black) square, so resizing keeps the anatomy's aspect ratio."""
    rows, cols = frame.shape
    side = max(rows, cols)
    if rows == cols:
        return frame
    out = np.zeros((side, side), dtype=frame.dtype)
    top, left = (side - rows) // 2, (side - cols) // 2
    out[top : top + rows, left : left + cols] = frame
    return out


def _resize(frame: np.ndarray, image_size: int) -> np.ndarray:
    square = pad_to_square(np.asarray(frame)).astype(np.float32, copy=False)
    if square.shape[0] == image_size:
        return square
    # Float ("F") mode: no second 8-bit rounding; PIL's bilinear widens its support when shrinking.
    resized = Image.fromarray(square, mode="F").resize((image_size, image_size), Image.Resampling.BILINEAR)
    return np.asarray(resized, dtype=np.float32)


def to_model_input(frames: np.ndarray | Sequence[np.ndarray], image_size: int) -> np.ndarray:
    """8-bit (or [0, 255] float) frames [N, H, W] -> float32 [N, S, S, 3] in [0, 255]."""
    if isinstance(frames, np.ndarray) and frames.ndim == 2:
        frames = frames[np.newaxis]
    out = np.empty((len(frames), image_size, image_size, 3), dtype=np.float32)
    for i, frame in enumerate(frames):
        if np.ndim(frame) != 2:
            raise ValueError(f"frame {i} has shape {np.shape(frame)}, expected (rows, columns)")
        out[i] = _resize(frame, image_size)[..., np.newaxis]
    return out


def image_file_to_frames(path: str | PathLike[str]) -> np.ndarray:
    """A JPG/PNG training image as one 8-bit grayscale frame [1, H, W]."""
    try:
        with Image.open(path) as image:
            gray = image.convert("L")
            return np.asarray(gray, dtype=np.uint8)[np.newaxis]
    except (OSError, ValueError) as exc:
        raise DecodeError(f"not a readable image: {exc}") from exc


def image_file_to_model_input(path: str | PathLike[str], image_size: int) -> np.ndarray:
    """A JPG/PNG training image as the model's input, float32 [1, S, S, 3]."""
    return to_model_input(image_file_to_frames(path), image_size)
