"""Complete study results as the worker leaves them, for the review station's tests: synthetic CT
slices in an archive folder, their catalogue rows and predictions, a complete study result, and a
report with a real SR and Parametric Map (a heat map drawn by hand, no model needed)."""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import ssl
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pydicom
from sqlalchemy.orm import Session

from classifier.report.build import encode
from classifier.report.contents import StudyReport
from classifier.report.heatmap import build_parametric_map
from classifier.report.sr import build_sr
from classifier.study.rule import StudyRule
from common.vocabulary import CLASS_NAMES
from storage.db.outbox import add_report
from storage.db.report_inputs import KeySlice
from storage.db.tables import ModelVersion, Prediction, Series, Study, StudyPrediction
from tests.catalogue_kit import catalogued_instance
from training.synth.generate import write_study

NOW = dt.datetime(2026, 12, 1, 9, 0, tzinfo=dt.UTC)
WINDOW = {"center": 40.0, "width": 400.0}


def add_model(
    session: Session, version: str, *, status: str = "active", created_at: dt.datetime = NOW
) -> ModelVersion:
    card = {
        "version": version,
        "classes": list(CLASS_NAMES),
        "image_size": 64,
        "window": WINDOW,
        "weights_sha256": "0" * 64,
        "weights_file": "model.weights.h5",
    }
    row = ModelVersion(
        version=version,
        artifact_uri=f"file:///models/{version}",
        sha256="0" * 64,
        card=card,
        metrics={},
        status=status,
        created_at=created_at,
    )
    session.add(row)
    session.flush()
    return row


def _probabilities(label: str, strength: float) -> dict[str, float]:
    rest = (1.0 - strength) / (len(CLASS_NAMES) - 1)
    return {c: (strength if c == label else rest) for c in CLASS_NAMES}


def _blob(rows: int, columns: int) -> np.ndarray:
    y, x = np.mgrid[0:rows, 0:columns]
    return np.exp(-(((y - rows / 2) ** 2 + (x - columns / 3) ** 2) / (2 * (rows / 8) ** 2))).astype(
        np.float32
    )


def completed_study(
    session: Session,
    archive_dir: Path,
    *,
    model: ModelVersion,
    number: int,
    label: str,
    completed_at: dt.datetime = NOW,
    slices: int = 3,
    size: int = 64,
    seed: int = 7,
) -> Study:
    """One study, classified `label` by `model`, complete, with its report (SR and Parametric Map)."""
    truth = write_study(archive_dir, number=number, study_class=label, seed=seed, slices=slices, size=size)
    datasets = [pydicom.dcmread(archive_dir / t.path) for t in truth]
    study = Study(
        study_instance_uid=truth[0].study_instance_uid,
        accession_number=truth[0].accession_number,
        first_received_at=completed_at - dt.timedelta(seconds=90),
        last_received_at=completed_at - dt.timedelta(seconds=60),
    )
    series = Series(series_instance_uid=truth[0].series_instance_uid, study=study, modality="CT")
    probs = _probabilities(label, 0.9)
    for ds, t in zip(datasets, truth, strict=True):
        instance = catalogued_instance(ds, series, archive_uri=t.path, now=completed_at)
        session.add(instance)
        session.flush()
        session.add(
            Prediction(
                instance_id=instance.id,
                frame=0,
                model_version_id=model.id,
                label=label,
                created_at=completed_at,
                **{f"p_{c.lower()}": p for c, p in probs.items()},
            )
        )
    session.add(
        StudyPrediction(
            study_id=study.id,
            model_version_id=model.id,
            label=label,
            n_instances=slices,
            complete=True,
            completed_at=completed_at,
            updated_at=completed_at,
            **{f"p_{c.lower()}": p for c, p in probs.items()},
            **{f"n_{c.lower()}": (slices if c == label else 0) for c in CLASS_NAMES},
        )
    )
    session.flush()
    keys = tuple(
        KeySlice(str(ds.SOPInstanceUID), str(ds.SeriesInstanceUID), str(ds.SOPClassUID), 0, 1, t.path, 0.9)
        for ds, t in list(zip(datasets, truth, strict=True))[:2]
    )
    report = StudyReport(
        study_instance_uid=study.study_instance_uid,
        model_version=model.version,
        revision=1,
        label=label,
        max_probability=probs,
        n_instances=slices,
        rule=StudyRule(2, 0.5),
        key_slices=keys,
        completed_at=completed_at,
    )
    evidence = datasets[:2]
    heat = [_blob(int(ds.Rows), int(ds.Columns)) for ds in evidence]
    objects = [
        encode("sr", build_sr(report, evidence)),
        encode("pmap", build_parametric_map(report, evidence, heat)),
    ]
    add_report(
        session,
        study_id=study.id,
        model_version_id=model.id,
        revision=1,
        label=label,
        key_slices=keys,
        objects=objects,
        destinations=["PACS@127.0.0.1:104"],
        build_error=None,
        now=completed_at,
    )
    return study


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def kidneyct_review(
    env: dict[str, str], log_path: Path, health_url: str
) -> Iterator[subprocess.Popen[bytes]]:
    """`kidneyct review` as the installed command, with `env` (KIDNEYCT_* of the caller's environment
    dropped), until it answers `health_url`; stopped with SIGTERM afterwards."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("KIDNEYCT_")}
    script = str(Path(sys.executable).parent / "kidneyct")
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [script, "review"], env={**clean, **env}, stdout=log, stderr=subprocess.STDOUT
        )
        try:
            _wait_until_up(health_url, process)
            yield process
        finally:
            process.terminate()
            process.wait(timeout=30)


def _wait_until_up(url: str, process: subprocess.Popen[bytes], timeout_s: float = 60.0) -> None:
    context = ssl._create_unverified_context()  # a self-signed test certificate
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"kidneyct review exited with {process.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=2, context=context) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.2)
    raise AssertionError("kidneyct review did not answer")
