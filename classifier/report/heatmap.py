"""The heat map of a report's key slices, as DICOM: a Parametric Map or a Secondary Capture.

The Grad-CAM map is computed on the model input (the frame padded to a square and resized), so it
is mapped back onto the source frame first: resized to the square's side, then the padding is cut.
A Parametric Map keeps the values (0..1, stored over the whole 16-bit range, 0..65535, so that a plain
renderer without windowing, such as `dcmj2pnm`'s defaults, shows hot as white; a VOI LUT window says
the same) on the source frames' geometry, and a viewer overlays it; a Secondary Capture is the windowed slice with the map burned in, in colour,
for a PACS that cannot show Parametric Maps.
"""

from __future__ import annotations

from collections.abc import Sequence

import highdicom as hd
import numpy as np
from matplotlib import colormaps
from PIL import Image
from pydicom.dataset import Dataset

from classifier.report import codes as rc
from classifier.report.contents import (
    PMAP_SERIES_NUMBER,
    SC_SERIES_NUMBER,
    StudyReport,
    object_uid,
    series_uid,
)

PMAP_SCALE = 65535  # stored value = round(Grad-CAM value * 65535): the full unsigned 16-bit range
OVERLAY_ALPHA = 0.5  # opacity of the hottest pixels; cold pixels stay plain grey


def to_source_geometry(heatmap: np.ndarray, rows: int, columns: int) -> np.ndarray:
    """A square model-input heat map [S, S] back on a source frame [rows, columns] (inverse of the
    preprocessing's pad-to-square and resize)."""
    side = max(rows, columns)
    square = Image.fromarray(heatmap.astype(np.float32), mode="F").resize(
        (side, side), Image.Resampling.BILINEAR
    )
    top, left = (side - rows) // 2, (side - columns) // 2
    return np.clip(np.asarray(square)[top : top + rows, left : left + columns], 0.0, 1.0)


def overlay_rgb(gray: np.ndarray, heatmap: np.ndarray) -> np.ndarray:
    """The grey slice [rows, columns] (uint8) with the heat map in the jet colours, more opaque where hotter."""
    colours = colormaps["jet"](heatmap)[..., :3] * 255.0
    alpha = (OVERLAY_ALPHA * heatmap)[..., np.newaxis]
    base = np.repeat(gray[..., np.newaxis].astype(np.float64), 3, axis=2)
    return np.clip(base * (1.0 - alpha) + colours * alpha, 0, 255).astype(np.uint8)


def caption(report: StudyReport) -> str:
    """What the map shows. An indeterminate study's map is of the label the rule alone would give: say
    so, so that a map seen without its SR is not read as that finding."""
    if report.indeterminate:
        return f"Grad-CAM of {report.label} (study indeterminate)"
    return f"Grad-CAM of {report.label}"


def build_parametric_map(
    report: StudyReport, sources: Sequence[Dataset], heatmaps: Sequence[np.ndarray]
) -> hd.pm.ParametricMap:
    """One Parametric Map with a frame per key slice (single-frame slices of one series)."""
    stored = np.stack([np.rint(h * PMAP_SCALE) for h in heatmaps]).astype(np.uint16)
    mapping = hd.pm.RealWorldValueMapping(
        lut_label="GRADCAM",
        lut_explanation=f"{caption(report)}, 0 (cold) to 1 (hot)"[:64],
        unit=rc.NO_UNITS,
        value_range=(0, PMAP_SCALE),
        slope=1.0 / PMAP_SCALE,
        intercept=0.0,
        quantity_definition=rc.GRADCAM,
    )
    pmap = hd.pm.ParametricMap(
        source_images=list(sources),
        pixel_array=stored,
        series_instance_uid=series_uid(report.study_instance_uid, report.model_version, "pmap"),
        series_number=PMAP_SERIES_NUMBER,
        sop_instance_uid=object_uid(report.study_instance_uid, report.model_version, report.revision, "pmap"),
        instance_number=report.revision,
        manufacturer=rc.MANUFACTURER,
        manufacturer_model_name="kidneyct classifier",
        software_versions=report.model_version,
        device_serial_number="0",
        contains_recognizable_visual_features=False,
        real_world_value_mappings=[mapping],
        voi_lut_transformations=[
            hd.VOILUTTransformation(
                window_center=(PMAP_SCALE + 1) / 2,
                window_width=PMAP_SCALE + 1,
                window_explanation="GRADCAM 0..1",
            )
        ],
        content_label="GRADCAM",
        content_description=caption(report)[:64],
    )
    pmap.SeriesDescription = rc.SERIES_DESCRIPTION
    pmap.BodyPartExamined = body_part(sources[0])
    return pmap


def body_part(source: Dataset) -> str:
    """The source's body part (kidney CT is abdominal); without one, validators ask for laterality."""
    return str(source.get("BodyPartExamined", "") or "ABDOMEN")


def _pixel_spacing(source: Dataset) -> tuple[float, ...] | None:
    return tuple(float(v) for v in source.PixelSpacing) if "PixelSpacing" in source else None


def _patient_orientation(source: Dataset) -> tuple[str, str]:
    """Row and column directions as patient letters, from Image Orientation (Patient)."""
    iop = [float(v) for v in source.get("ImageOrientationPatient", [1, 0, 0, 0, 1, 0])]

    def letter(vector: list[float]) -> str:
        axis = int(np.argmax(np.abs(vector)))
        return ("L", "P", "H")[axis] if vector[axis] > 0 else ("R", "A", "F")[axis]

    return letter(iop[:3]), letter(iop[3:])


def build_secondary_capture(
    report: StudyReport, index: int, source: Dataset, gray: np.ndarray, heatmap: np.ndarray
) -> hd.sc.SCImage:
    """Key slice `index` windowed, with its heat map burned in (RGB)."""
    sc = hd.sc.SCImage.from_ref_dataset(
        ref_dataset=source,
        pixel_array=overlay_rgb(gray, heatmap),
        photometric_interpretation="RGB",
        bits_allocated=8,
        coordinate_system="PATIENT",
        series_instance_uid=series_uid(report.study_instance_uid, report.model_version, "sc"),
        series_number=SC_SERIES_NUMBER,
        sop_instance_uid=object_uid(
            report.study_instance_uid, report.model_version, report.revision, f"sc:{index}"
        ),
        instance_number=report.revision * 100 + index + 1,
        manufacturer=rc.MANUFACTURER,
        # highdicom annotates tuple[int, int] but takes (and needs) the source's decimal spacing.
        pixel_spacing=_pixel_spacing(source),  # type: ignore[arg-type]
        patient_orientation=_patient_orientation(source),
        transfer_syntax_uid="1.2.840.10008.1.2.1",
    )
    sc.SeriesDescription = rc.SERIES_DESCRIPTION
    sc.ImageComments = f"{caption(report)} burned in; AI result, not for diagnostic use"
    sc.BurnedInAnnotation = "NO"
    # Which slice this picture shows, so a viewer can link the two.
    reference = Dataset()
    reference.ReferencedSOPClassUID = source.SOPClassUID
    reference.ReferencedSOPInstanceUID = source.SOPInstanceUID
    sc.SourceImageSequence = [reference]
    sc.DerivationDescription = f"{caption(report)} by model {report.model_version}, overlaid"[:1024]
    sc.BodyPartExamined = body_part(source)
    return sc
