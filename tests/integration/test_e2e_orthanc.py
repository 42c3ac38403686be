"""A real PACS: Orthanc is given studies over its REST API and pushes them to `kidneyct serve`
(Kafka + PostgreSQL) with C-STORE; every instance ends with a prediction."""

from __future__ import annotations

import json
import shutil
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
from classifier_kit import make_tiny_artifact, register
from e2e_kit import (
    completed_studies,
    kafka_postgres_env,
    kidneyct,
    predicted_sops,
    query,
    run_kidneyct,
    wait_for,
)
from orthanc_kit import ORTHANC, OrthancServer
from pydicom.uid import ExplicitVRLittleEndian, JPEG2000Lossless

import migrations
from storage.db.engine import make_engine, make_session_factory
from training.synth.generate import generate


@pytest.fixture
def orthanc_root(tmp_path: Path) -> Iterator[Path]:
    if shutil.which(ORTHANC) is None:
        pytest.fail("Orthanc is not installed (Debian package orthanc)")
    root = tmp_path / "orthanc"
    root.mkdir()
    yield root


@pytest.mark.slow
def test_orthanc_pushes_studies_to_kidneyct_and_every_instance_gets_a_prediction(
    tmp_path: Path, orthanc_root: Path, kafka_bootstrap: str, postgres_url: str, unique_name
) -> None:
    """Studies uploaded to Orthanc and pushed with /modalities/kidneyct/store all end with predictions and results."""
    migrations.upgrade(postgres_url)
    engine = make_engine(postgres_url)
    directory, sha = make_tiny_artifact(tmp_path / "model", "tiny-1", seed=3)
    register(make_session_factory(engine), version="tiny-1", directory=directory, sha256=sha, active=True)
    engine.dispose()
    rows = generate(tmp_path / "plain", studies=2, slices=5, classes=["Cyst", "Tumor"], seed=5, size=64)
    rows += generate(
        tmp_path / "j2k",
        studies=1,
        slices=4,
        classes=["Stone"],
        seed=6,
        size=64,
        transfer_syntax=JPEG2000Lossless,
    )
    paths = [tmp_path / "plain" / r.path for r in rows[:10]] + [tmp_path / "j2k" / r.path for r in rows[10:]]
    env = kafka_postgres_env(
        tmp_path / "data",
        bootstrap=kafka_bootstrap,
        database_url=postgres_url,
        unique_name=unique_name,
        study_stable_age_s=2,
        batch_size=8,
    )
    run_kidneyct(["kafka", "init"], env)

    with kidneyct(["serve"], env, tmp_path / "serve.log") as server:
        port = int(server.wait_event("listener_started")["port"])
        orthanc = OrthancServer(orthanc_root, our_port=port)
        try:
            studies = set()
            for path in paths:
                answer = orthanc.request("POST", "/instances", path.read_bytes())
                assert answer["Status"] == "Success", answer
                studies.add(answer["ParentStudy"])
            assert len(studies) == 3
            pushed = orthanc.request(
                "POST",
                "/modalities/kidneyct/store",
                json.dumps({"Resources": sorted(studies), "Synchronous": True}).encode(),
            )
            assert pushed["InstancesCount"] == len(paths) and pushed["FailedInstancesCount"] == 0, pushed
        finally:
            orthanc.stop()
        wanted = {r.sop_instance_uid for r in rows}
        counts = wait_for(
            lambda: (c := predicted_sops(postgres_url)) and wanted <= c.keys() and c,
            timeout_s=240,
            what="a prediction for every instance Orthanc pushed",
        )
        done = wait_for(
            lambda: (c := completed_studies(postgres_url)) and len(c) == 3 and c,
            timeout_s=60,
            what="three complete study results",
        )
    assert {sop: counts[sop] for sop in wanted} == dict.fromkeys(wanted, 1)
    assert Counter(n for n, _label in done.values()) == Counter({5: 2, 4: 1})
    calling = query(postgres_url, "SELECT DISTINCT calling_ae FROM instances")
    assert [tuple(r) for r in calling] == [("ORTHANC",)]
    syntaxes = {u for (u,) in query(postgres_url, "SELECT DISTINCT transfer_syntax_uid FROM instances")}
    assert syntaxes <= {ExplicitVRLittleEndian, JPEG2000Lossless, "1.2.840.10008.1.2"}
