"""Key slices and their heat maps as PNG: each slice at its own resolution, in the window the worker used.

The slice goes through the classifier's own decoding and windowing (`classifier.model.preprocess`), so the
reader sees what the model saw before resizing. The heat map comes from the report's Parametric
Map (values 0..1, drawn in the same colours as the worker's Secondary Capture) as a transparent
layer the page stacks on the slice, or, where the site sends Secondary Captures, the burned-in picture.
"""

from __future__ import annotations

import io

import numpy as np
import pydicom
from matplotlib import colormaps
from PIL import Image
from pydicom.dataset import Dataset

from classifier.model.preprocess import Window, dicom_to_frames
from classifier.report.heatmap import OVERLAY_ALPHA, PMAP_SCALE
from storage.archive.reader import ArchiveReader


class NoImage(LookupError):
    """The slice or its heat map cannot be shown (gone from the archive, not in the report)."""


def png(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG", optimize=False)
    return buffer.getvalue()


def slice_png(reader: ArchiveReader, *, archive_uri: str, frame: int, window: Window) -> bytes:
    """The windowed 8-bit slice [rows, columns] of `archive_uri`, frame `frame`."""
    try:
        with reader.open(archive_uri) as f:
            ds = pydicom.dcmread(f)
    except OSError as exc:
        raise NoImage("the slice is not in the archive") from exc
    frames = dicom_to_frames(ds, window)
    if not 0 <= frame < frames.shape[0]:
        raise NoImage("the report names a frame the instance does not have")
    return png(frames[frame])


def heat_rgba(heatmap: np.ndarray) -> np.ndarray:
    """A heat map 0..1 as RGBA: the worker's jet colours, more opaque where hotter."""
    rgba = np.zeros((*heatmap.shape, 4), dtype=np.uint8)
    rgba[..., :3] = np.rint(colormaps["jet"](heatmap)[..., :3] * 255.0).astype(np.uint8)
    rgba[..., 3] = np.rint(np.clip(OVERLAY_ALPHA * heatmap, 0.0, 1.0) * 255.0).astype(np.uint8)
    return rgba


def _frame_sources(pmap: Dataset) -> list[str]:
    """The SOP Instance UID of the slice each frame of a Parametric Map was derived from."""
    out = []
    for item in pmap.get("PerFrameFunctionalGroupsSequence", []):
        try:
            out.append(str(item.DerivationImageSequence[0].SourceImageSequence[0].ReferencedSOPInstanceUID))
        except (AttributeError, IndexError):
            out.append("")
    return out


def pmap_overlay_png(pmap_bytes: bytes, *, sop_instance_uid: str) -> bytes:
    """The RGBA heat map layer of one key slice from the report's Parametric Map."""
    pmap = pydicom.dcmread(io.BytesIO(pmap_bytes))
    sources = _frame_sources(pmap)
    if sop_instance_uid not in sources:
        raise NoImage("the heat map does not cover this slice")
    stored = np.asarray(pmap.pixel_array)
    stored = stored[np.newaxis] if stored.ndim == 2 else stored
    heat = stored[sources.index(sop_instance_uid)].astype(np.float32) / PMAP_SCALE
    return png(heat_rgba(np.clip(heat, 0.0, 1.0)))


def sc_overlay_png(sc_objects: list[bytes], *, sop_instance_uid: str) -> bytes:
    """The Secondary Capture (slice with the heat map burned in) made from one key slice."""
    for data in sc_objects:
        sc = pydicom.dcmread(io.BytesIO(data))
        refs = [str(r.ReferencedSOPInstanceUID) for r in sc.get("SourceImageSequence", [])]
        if sop_instance_uid in refs:
            return png(np.asarray(sc.pixel_array, dtype=np.uint8))
    raise NoImage("no Secondary Capture of this slice")
