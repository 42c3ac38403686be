"""The trainer and the promotion gate read labelled instances from an S3 archive, as the workers do.

A site whose listener archives to a bucket has no local copy of its studies: `kidneyct train` and
`kidneyct models promote` open the `s3://` URIs through the same reader as the workers. Real S3
(SeaweedFS) and a real SQLite catalogue; no model is fitted here (loading is the part that differs).
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import numpy as np
import pydicom
import pytest
from catalogue_kit import catalogued_instance
from pydicom.data import get_testdata_file
from pydicom.uid import generate_uid
from seaweed_process import SeaweedProcess

import migrations
from classifier.model.preprocess import KIDNEY_WINDOW, dicom_to_frames, to_model_input
from storage.archive.reader import ArchiveReader, ArchiveUnavailable
from storage.archive.s3 import S3Archive, S3Location
from storage.archive.s3_client import S3ClientOptions, make_s3_client
from storage.db.engine import make_engine, make_session_factory
from storage.db.labels import add_label
from storage.db.tables import Series, Study
from training.dedup import GroupingParams
from training.split import SplitFractions
from training.trainset import build_training_set, collect_sources, load_model_inputs

NOW = dt.datetime(2026, 11, 29, tzinfo=dt.UTC)
SIZE = 32


def _archive_labelled_study(tmp_path: Path, url: str, archive: S3Archive, *, slices: int) -> list[Path]:
    """`slices` CT instances (each shifted, so no two share pixels) uploaded to S3 and catalogued, the study
    labelled Stone, plus one catalogued instance whose object was never uploaded. Returns the local copies."""
    migrations.upgrade(url)
    sessions = make_session_factory(make_engine(url))
    study_uid, series_uid = generate_uid(), generate_uid()
    local: list[Path] = []
    with sessions.begin() as session:
        study = Study(study_instance_uid=study_uid, first_received_at=NOW, last_received_at=NOW)
        series = Series(series_instance_uid=series_uid, study=study, modality="CT")
        session.add_all([study, series])
        for i in range(slices + 1):
            ds = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
            ds.StudyInstanceUID, ds.SeriesInstanceUID = study_uid, series_uid
            ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
            ds.PixelData = np.roll(ds.pixel_array, 7 * i, axis=1).tobytes()
            path = tmp_path / f"{i}.dcm"
            ds.save_as(path, enforce_file_format=True)
            if i < slices:
                stored = archive.place_file(
                    path, study_uid=study_uid, series_uid=series_uid, sop_uid=ds.SOPInstanceUID
                )
                uri, digest = stored.uri, stored.sha256
                local.append(path)
            else:  # catalogued, but its object is gone
                uri, digest = f"s3://{archive.location.bucket}/missing/{ds.SOPInstanceUID}.dcm", "0" * 64
            session.add(
                catalogued_instance(
                    ds, series, archive_uri=uri, now=NOW, sha256=digest, size_bytes=path.stat().st_size
                )
            )
        session.flush()
        add_label(session, study_instance_uid=study_uid, label="Stone", source="test", now=NOW)
    return local


def _training_set(url: str, reader: ArchiveReader | None):  # noqa: ANN202 - TrainingSet
    with make_session_factory(make_engine(url))() as session:
        sources = collect_sources(session)
    return build_training_set(
        sources,
        classes=["Cyst", "Normal", "Stone", "Tumor"],
        image_size=SIZE,
        window=KIDNEY_WINDOW,
        grouping=GroupingParams(),
        fractions=SplitFractions(),
        seed=0,
        reader=reader,
    )


def test_trainer_decodes_s3_instances_as_the_local_files_and_lists_a_missing_object(
    tmp_path: Path, s3_server: SeaweedProcess, s3_archive_url: str
) -> None:
    """Every uploaded slice decodes to exactly the local file's model input; the missing object is skipped by name."""
    url = f"sqlite:///{tmp_path / 'kidneyct.db'}"
    archive = S3Archive(s3_server.client(), S3Location.parse(s3_archive_url), part_bytes=5 << 20)
    local = _archive_labelled_study(tmp_path, url, archive, slices=3)
    reader = ArchiveReader(tmp_path / "no-local-archive", s3_client_factory=s3_server.client)

    ts = _training_set(url, reader)

    assert len(ts.manifest.items) == 3 and all(i.path.startswith("s3://") for i in ts.manifest.items)
    (skipped,) = ts.manifest.skipped
    assert skipped["reason"].startswith("file missing: no object at s3://")
    expected = sorted(
        to_model_input(dicom_to_frames(p, KIDNEY_WINDOW)[0], SIZE)[0, :, :, 0].sum() for p in local
    )
    assert sorted(ts.images[..., 0].sum(axis=(1, 2))) == pytest.approx(expected)
    # The promotion gate reloads the same items through the same reader.
    again = load_model_inputs(ts.manifest.items, image_size=SIZE, window=KIDNEY_WINDOW, reader=reader)
    np.testing.assert_array_equal(again[..., :1], ts.images)


def test_an_object_store_that_is_down_stops_the_run_instead_of_shrinking_the_set(
    tmp_path: Path, s3_server: SeaweedProcess, s3_archive_url: str
) -> None:
    """An outage is not a missing file: the run fails, rather than train on whatever happened to load."""
    url = f"sqlite:///{tmp_path / 'kidneyct.db'}"
    archive = S3Archive(s3_server.client(), S3Location.parse(s3_archive_url), part_bytes=5 << 20)
    _archive_labelled_study(tmp_path, url, archive, slices=2)
    options = S3ClientOptions(endpoint_url="http://127.0.0.1:9", max_attempts=1, connect_timeout_s=1.0)
    dead = ArchiveReader(tmp_path, s3_client_factory=lambda: make_s3_client(options))
    with pytest.raises(ArchiveUnavailable):
        _training_set(url, dead)
