"""DCMTK `storescu` -> `kidneyct listen` -> Kafka -> `kidneyct worker` -> PostgreSQL `study_results`,
with uncompressed, RLE, JPEG 2000 and Enhanced CT multi-frame instances."""

from __future__ import annotations

import subprocess
import time
from collections import Counter
from pathlib import Path

import pytest
from classifier_kit import make_tiny_artifact, register
from e2e_kit import (
    completed_studies,
    dcmtk_tool,
    kafka_postgres_env,
    kidneyct,
    query,
    run_kidneyct,
    wait_for,
)
from pydicom.uid import ExplicitVRLittleEndian, JPEG2000Lossless, RLELossless

import migrations
from storage.db.engine import make_engine, make_session_factory
from training.synth.generate import generate
from training.synth.truth import TruthRow

# Once the last instance is sent, every study must be complete in SQL within this bound.
RESULT_BOUND_S = 120.0
STABLE_AGE_S = 2


def _register_tiny_model(url: str, tmp_path: Path) -> None:
    engine = make_engine(url)
    directory, sha = make_tiny_artifact(tmp_path / "model", "tiny-1", seed=2)
    register(make_session_factory(engine), version="tiny-1", directory=directory, sha256=sha, active=True)
    engine.dispose()


@pytest.mark.slow
def test_storescu_study_mix_reaches_study_results_over_sql_within_a_bound(
    tmp_path: Path, kafka_bootstrap: str, postgres_url: str, unique_name
) -> None:
    """Four studies (plain, RLE, JPEG 2000, Enhanced CT multi-frame) sent by storescu are complete in study_results in time."""
    storescu = dcmtk_tool("storescu")
    if storescu is None:
        pytest.fail("DCMTK storescu is not installed (Debian package dcmtk)")
    migrations.upgrade(postgres_url)
    _register_tiny_model(postgres_url, tmp_path)
    synth = tmp_path / "synth"
    rows: list[TruthRow] = []
    for number, (cls, syntax, enhanced, slices) in enumerate(
        [
            ("Tumor", ExplicitVRLittleEndian, False, 6),
            ("Cyst", RLELossless, False, 4),
            ("Stone", JPEG2000Lossless, False, 4),
            ("Normal", RLELossless, True, 5),
        ],
        start=1,
    ):
        rows += generate(
            synth / str(number),
            studies=1,
            slices=slices,
            classes=[cls],
            seed=number,
            size=64,
            transfer_syntax=syntax,
            enhanced=enhanced,
        )
    env = kafka_postgres_env(
        tmp_path / "data",
        bootstrap=kafka_bootstrap,
        database_url=postgres_url,
        unique_name=unique_name,
        archive_dir=tmp_path / "archive",
        study_stable_age_s=STABLE_AGE_S,
        batch_size=8,
        model_poll_s=1,
    )
    run_kidneyct(["kafka", "init"], env)

    with (
        kidneyct(["listen"], env, tmp_path / "listen.log") as listener,
        kidneyct(["worker"], env, tmp_path / "worker.log") as worker,
    ):
        port = int(listener.wait_event("listener_started")["port"])
        # storescu proposes one family of transfer syntaxes per run: one run per family, as a PACS would.
        for flag, folders in (("-xe", ["1"]), ("-xr", ["2", "4"]), ("-xv", ["3"])):
            files = sorted(str(p) for folder in folders for p in (synth / folder).glob("study-*/*.dcm"))
            sent = subprocess.run(
                [storescu, flag, "-aet", "DCMTK", "-aec", "KIDNEYCT", "127.0.0.1", str(port), *files],
                capture_output=True,
                text=True,
                check=False,
                timeout=120,
            )
            assert sent.returncode == 0, sent.stdout + sent.stderr
            assert "E:" not in sent.stdout + sent.stderr
        sent_at = time.monotonic()
        studies = {r.study_instance_uid for r in rows}
        done = wait_for(
            lambda: (c := completed_studies(postgres_url)) and (studies <= c.keys()) and c,
            timeout_s=RESULT_BOUND_S + 120,  # + the worker's start-up (TensorFlow import, model load)
            what="complete results of all four studies",
        )
        worker.wait_event("worker_started", timeout_s=1)
        # Measured from the later of the last send and the worker being ready.
        assert time.monotonic() - max(sent_at, worker.seen_at("worker_started")) < RESULT_BOUND_S

    frames_per_study = Counter(r.study_instance_uid for r in rows)
    instances_per_study = {
        s: len({r.sop_instance_uid for r in rows if r.study_instance_uid == s}) for s in studies
    }
    assert {s: done[s][0] for s in studies} == instances_per_study
    # One prediction per frame: the multi-frame instance has one row per frame, numbered from 0.
    predicted = query(
        postgres_url,
        "SELECT study_instance_uid, sop_instance_uid, frame FROM instance_results",
    )
    assert Counter(r[0] for r in predicted) == frames_per_study
    enhanced_sop = next(r.sop_instance_uid for r in rows if r.path.endswith("enhanced.dcm"))
    assert sorted(r[2] for r in predicted if r[1] == enhanced_sop) == [0, 1, 2, 3, 4]
    syntaxes = {
        uid
        for (uid,) in query(
            postgres_url, "SELECT DISTINCT transfer_syntax_uid FROM instances WHERE state = 'processed'"
        )
    }
    assert syntaxes == {ExplicitVRLittleEndian, RLELossless, JPEG2000Lossless}
    accessions = query(postgres_url, "SELECT study_instance_uid, accession_number FROM study_results")
    assert {uid: acc for uid, acc in accessions} == {r.study_instance_uid: r.accession_number for r in rows}
