"""Builds a completed study's report objects (SR, heat map) in the worker that holds the model.

The key slices are read back from the archive. The SR needs only their attributes; the heat map
(Grad-CAM for the study label's class) runs on the worker's model and device, for the key slices of
each study completed in one sweep. Errors building one study's objects are returned to the caller,
which records them and completes the study anyway (its SQL result does not depend on them).
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from typing import Any

import numpy as np
import pydicom
from pydicom.dataset import Dataset

from classifier.model.preprocess import dicom_to_frames, to_model_input
from classifier.model.serving import ServingModel
from classifier.report.contents import HEATMAP_MODES, StudyReport
from classifier.report.heatmap import build_parametric_map, build_secondary_capture, to_source_geometry
from classifier.report.sr import build_sr
from common.vocabulary import CLASS_NAMES
from storage.archive.reader import ArchiveReader
from storage.db.outbox import NewObject


@dataclass(frozen=True)
class ResultConfig:
    destinations: tuple[str, ...] = ()  # AE@host:port; none: reports are recorded but nothing is built
    heatmap: str = "pmap"

    def __post_init__(self) -> None:
        if self.heatmap not in HEATMAP_MODES:
            raise ValueError(f"heat map mode must be one of {HEATMAP_MODES}, got {self.heatmap!r}")


class HeatMapper:
    """Grad-CAM with the feature extractor of the serving model built (and traced) once."""

    def __init__(self) -> None:
        self._model_version_id: int | None = None
        self._features: Any = None

    def maps(self, serving: ServingModel, tensors: np.ndarray, class_index: int) -> np.ndarray:
        from classifier.report.gradcam import feature_model, grad_cam

        if self._model_version_id != serving.model_version_id:
            self._features = feature_model(serving.model)
            self._model_version_id = serving.model_version_id
        chosen = np.full(len(tensors), class_index, dtype=np.int64)
        return grad_cam(serving.model, tensors, chosen, features_of=self._features).heatmaps


def without_flat_maps(cams: np.ndarray) -> np.ndarray:
    """Maps with no spatial variation become 0. A model whose last feature map is 1x1 (input under
    64 px: ResNet50 downsamples 32x) cannot localize; its normalized map would be 1 everywhere and
    paint the whole slice as hot."""
    flat = (cams.max(axis=(1, 2)) - cams.min(axis=(1, 2))) <= 1e-6
    return np.where(flat[:, np.newaxis, np.newaxis], 0.0, cams).astype(np.float32)


def encode(kind: str, ds: Dataset) -> NewObject:
    """A DICOM object as Part 10 file bytes, ready for the outbox."""
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return NewObject(
        kind=kind,
        sop_class_uid=str(ds.SOPClassUID),
        sop_instance_uid=str(ds.SOPInstanceUID),
        dataset=buffer.getvalue(),
    )


def read_key_slices(report: StudyReport, reader: ArchiveReader) -> list[Dataset]:
    """The key slices' archived datasets, one per key slice (a multi-frame instance is read once)."""
    read: dict[str, Dataset] = {}
    for key in report.key_slices:
        if key.sop_instance_uid not in read:
            with reader.open(key.archive_uri) as f:
                read[key.sop_instance_uid] = pydicom.dcmread(f)
    return [read[k.sop_instance_uid] for k in report.key_slices]


def build_objects(
    report: StudyReport,
    *,
    archive: ArchiveReader,
    heatmap: str,
    serving: ServingModel | None,
    mapper: HeatMapper,
) -> list[NewObject]:
    """The SR, and the heat map when asked for and `serving` is the report's model."""
    datasets = read_key_slices(report, archive)
    evidence = list({str(ds.SOPInstanceUID): ds for ds in datasets}.values())
    objects = [encode("sr", build_sr(report, evidence))]
    if heatmap == "none" or serving is None:
        return objects
    grays = [
        dicom_to_frames(ds, serving.preprocessing.window)[k.frame]
        for ds, k in zip(datasets, report.key_slices, strict=True)
    ]
    tensors = to_model_input(grays, serving.preprocessing.image_size)
    cams = without_flat_maps(mapper.maps(serving, tensors, CLASS_NAMES.index(report.label)))
    on_source = [to_source_geometry(cam, *gray.shape) for cam, gray in zip(cams, grays, strict=True)]
    if heatmap == "sc":
        for i, (ds, gray, cam) in enumerate(zip(datasets, grays, on_source, strict=True)):
            objects.append(encode("sc", build_secondary_capture(report, i, ds, gray, cam)))
        return objects
    # A Parametric Map's frames reference single-frame slices of one series: the top slice's.
    first = report.key_slices[0]
    chosen = [
        i
        for i, k in enumerate(report.key_slices)
        if k.number_of_frames == 1 and k.series_instance_uid == first.series_instance_uid
    ]
    if chosen:
        pmap = build_parametric_map(report, [datasets[i] for i in chosen], [on_source[i] for i in chosen])
        objects.append(encode("pmap", pmap))
    return objects
