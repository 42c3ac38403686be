"""Results back to PACS, end to end with Orthanc (Debian) as the destination.

A synthetic study sent to `kidneyct serve` is classified; its Structured Report and heat map wait in
the outbox while the PACS is down, arrive once it is up, are valid DICOM (dciodvfy, dsrdump), carry
the values of the `study_results` row, and a late instance makes a new revision that replaces the
old one. A sender killed mid-delivery leaves nothing half done: after a restart everything is
delivered once, and a resend replaces instead of duplicating.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import highdicom as hd
import pydicom
import pytest
from classifier_kit import make_tiny_artifact, register
from e2e_kit import kafka_postgres_env, kidneyct, kidneyct_env, query, run_kidneyct, wait_for
from kafka import KafkaConsumer
from orthanc_kit import ORTHANC, OrthancServer, StallingProxy, free_port
from pydicom.dataset import Dataset
from sqlalchemy import text

import migrations
from classifier.report import codes as result_codes
from kidneyct.send_files import send_files
from storage.db.engine import make_engine, make_session_factory
from training.synth.generate import generate

SR_CLASS = "1.2.840.10008.5.1.4.1.1.88.34"
PMAP_CLASS = "1.2.840.10008.5.1.4.1.1.30"
SC_CLASS = "1.2.840.10008.5.1.4.1.1.7"
ISSUER = "HOSPITAL-A"


@pytest.fixture(autouse=True)
def _tools() -> None:
    for tool in (ORTHANC, "dciodvfy", "dsrdump"):
        if shutil.which(tool) is None:
            pytest.fail(f"{tool} is not installed (Debian packages orthanc, dicom3tools, dcmtk)")


def _synthetic_study(folder: Path, *, slices: int, seed: int) -> tuple[list[Path], Dataset]:
    """One Stone study, its files in slice order, each with an accession number issuer added."""
    rows = generate(folder, studies=1, slices=slices, classes=["Stone"], seed=seed, size=64)
    paths = sorted((folder / r.path for r in rows), key=lambda p: int(pydicom.dcmread(p).InstanceNumber))
    for path in paths:
        ds = pydicom.dcmread(path)
        issuer = Dataset()
        issuer.LocalNamespaceEntityID = ISSUER
        ds.IssuerOfAccessionNumberSequence = [issuer]
        ds.save_as(path)
    return paths, pydicom.dcmread(paths[0], stop_before_pixels=True)


def _register_tiny_model(tmp_path: Path, url: str) -> None:
    engine = make_engine(url)
    directory, sha = make_tiny_artifact(tmp_path / "model", "tiny-1", seed=3)
    register(make_session_factory(engine), version="tiny-1", directory=directory, sha256=sha, active=True)
    engine.dispose()


def _study_row(url: str, study: str) -> dict[str, Any] | None:
    rows = query(url, "SELECT * FROM study_results WHERE study_instance_uid = :s", s=study)
    return dict(rows[0]._mapping) if rows else None


def _execute(url: str, sql: str) -> None:
    engine = make_engine(url)
    try:
        with engine.begin() as conn:
            conn.execute(text(sql))
    finally:
        engine.dispose()


def _dciodvfy_errors(path: Path) -> list[str]:
    out = subprocess.run(["dciodvfy", str(path)], capture_output=True, text=True, check=False)
    return [line for line in (out.stdout + out.stderr).splitlines() if line.startswith("Error")]


def _by_class(instances: list[dict[str, Any]], sop_class: str) -> list[dict[str, Any]]:
    return [i for i in instances if i.get("SOPClassUID") == sop_class]


def _sr_values(path: Path) -> dict[str, Any]:
    """What a reader finds in our SR, read back with highdicom."""
    sr = hd.sr.srread(path)
    group = sr.content.get_image_measurement_groups()[0]
    return {
        "label": result_codes.label_of_finding(group.finding_type.value),
        "probabilities": {
            result_codes.label_of_probability(m.name.value): m.value for m in group.get_measurements()
        },
        "key_slices": [s.referenced_sop_instance_uid for s in group.source_images],
        "verification": sr.VerificationFlag,
        "series_description": sr.SeriesDescription,
        "predecessors": [
            item.ReferencedSOPInstanceUID
            for study in sr.get("PredecessorDocumentsSequence", [])
            for series in study.ReferencedSeriesSequence
            for item in series.ReferencedSOPSequence
        ],
        "study_instance_uid": sr.StudyInstanceUID,
        "patient_name": str(sr.PatientName),
    }


def _assert_sr_matches_row(sr: dict[str, Any], row: dict[str, Any], source: Dataset) -> None:
    assert sr["label"] == row["label"]
    assert sr["probabilities"] == pytest.approx(
        {c: row[f"p_{c.lower()}"] for c in ("Cyst", "Normal", "Stone", "Tumor")}, abs=1e-6
    )
    assert sr["key_slices"] == row["key_slices"].split()
    assert sr["verification"] == "UNVERIFIED"
    assert "not for diagnostic use" in sr["series_description"]
    assert sr["study_instance_uid"] == source.StudyInstanceUID
    assert sr["patient_name"] == str(source.PatientName)  # the PACS files it with the patient's study


def _study_messages(bootstrap: str, topic: str) -> list[dict[str, Any]]:
    consumer = KafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        group_id=None,
        consumer_timeout_ms=5000,
    )
    try:
        return [json.loads(m.value) for m in consumer]
    finally:
        consumer.close()


@pytest.mark.slow
def test_sr_and_parametric_map_reach_orthanc_once_it_is_up_and_a_late_instance_replaces_them(
    tmp_path: Path, kafka_bootstrap: str, postgres_url: str, unique_name
) -> None:
    """Destination down: the result waits; up: SR + Parametric Map arrive valid, equal to the row; a
    late instance makes revision 2, which names revision 1 as its predecessor."""
    migrations.upgrade(postgres_url)
    _register_tiny_model(tmp_path, postgres_url)
    paths, source = _synthetic_study(tmp_path / "synth", slices=5, seed=7)
    study = str(source.StudyInstanceUID)
    orthanc_dicom, orthanc_http = free_port(), free_port()
    env = kafka_postgres_env(
        tmp_path / "data",
        bootstrap=kafka_bootstrap,
        database_url=postgres_url,
        unique_name=unique_name,
        study_stable_age_s=2,
        batch_size=8,
        result_destinations=f"ORTHANC@127.0.0.1:{orthanc_dicom}",
        result_heatmap="pmap",
        result_retry_initial_s=0.5,
        result_retry_max_s=1,
        result_poll_s=0.3,
        acse_timeout_s=5,
    )
    run_kidneyct(["kafka", "init"], env)
    log_path = tmp_path / "serve.log"
    with kidneyct(["serve"], env, log_path) as server:
        port = int(server.wait_event("listener_started")["port"])
        assert all(r.ok for r in send_files("127.0.0.1", port, paths[:4], called_ae="KIDNEYCT"))

        # The PACS is down: the result waits in the outbox, attempts counted.
        wait_for(
            lambda: (query(postgres_url, "SELECT MIN(attempts) FROM result_deliveries")[0][0] or 0) >= 2,
            timeout_s=240,
            what="two failed delivery attempts",
        )
        row = _study_row(postgres_url, study)
        assert row is not None and row["delivery_state"] == "pending" and row["revision"] == 1

        orthanc = OrthancServer(tmp_path / "orthanc", dicom_port=orthanc_dicom, http_port=orthanc_http)
        try:
            row = wait_for(
                lambda: (r := _study_row(postgres_url, study)) and r["delivery_state"] == "delivered" and r,
                timeout_s=120,
                what="the delivery once Orthanc is up",
            )
            assert row["accession_number"] == source.AccessionNumber
            assert row["accession_number_issuer"] == ISSUER
            assert row["n_instances"] == 4 and row["n_failed"] == 0 and row["n_skipped"] == 0
            assert row["first_received_at"] <= row["last_received_at"]
            assert bool(row["from_active_model"]) and len(row["key_slices"].split()) == 2

            instances = orthanc.instances_of_study(study)
            srs, pmaps = _by_class(instances, SR_CLASS), _by_class(instances, PMAP_CLASS)
            assert len(srs) == 1 and len(pmaps) == 1, [i.get("SOPClassUID") for i in instances]
            sr_path, pmap_path = tmp_path / "sr1.dcm", tmp_path / "pmap1.dcm"
            sr_path.write_bytes(orthanc.file(srs[0]["ID"]))
            pmap_path.write_bytes(orthanc.file(pmaps[0]["ID"]))
            assert _dciodvfy_errors(sr_path) == []
            assert _dciodvfy_errors(pmap_path) == []
            dump = subprocess.run(
                ["dsrdump", str(sr_path)], capture_output=True, text=True, check=True
            ).stdout
            meaning = result_codes.FINDING_CODES[row["label"]][1]
            assert (
                f'CODE:(,,"Finding")=({result_codes.FINDING_CODES[row["label"]][0]},SCT,"{meaning}")' in dump
            )
            first_sr = _sr_values(sr_path)
            _assert_sr_matches_row(first_sr, row, source)
            assert first_sr["predecessors"] == []
            pmap = pydicom.dcmread(pmap_path)
            assert pmap.NumberOfFrames == len({*row["key_slices"].split()})

            # A late instance re-opens the study: revision 2 replaces revision 1.
            assert all(r.ok for r in send_files("127.0.0.1", port, paths[4:], called_ae="KIDNEYCT"))
            row2 = wait_for(
                lambda: (
                    (r := _study_row(postgres_url, study))
                    and r["revision"] == 2
                    and r["delivery_state"] == "delivered"
                    and r
                ),
                timeout_s=180,
                what="revision 2 delivered",
            )
            assert row2["n_instances"] == 5
            srs = _by_class(orthanc.instances_of_study(study), SR_CLASS)
            assert len(srs) == 2  # one per revision
            newest = max(srs, key=lambda i: int(i["InstanceNumber"]))
            sr2_path = tmp_path / "sr2.dcm"
            sr2_path.write_bytes(orthanc.file(newest["ID"]))
            second_sr = _sr_values(sr2_path)
            _assert_sr_matches_row(second_sr, row2, source)
            old_uid = pydicom.dcmread(sr_path).SOPInstanceUID
            assert second_sr["predecessors"] == [old_uid]
            assert pydicom.dcmread(sr2_path).SOPInstanceUID != old_uid
        finally:
            orthanc.stop()

    messages = [
        m
        for m in _study_messages(kafka_bootstrap, env["KIDNEYCT_TOPIC_RESULTS"])
        if m["type"] == "study_complete"
    ]
    assert sorted(m["revision"] for m in messages) == [1, 2]
    assert {(m["accession_number"], m["accession_number_issuer"]) for m in messages} == {
        (source.AccessionNumber, ISSUER)
    }
    # Patient data is in the SR (it must be) but never in logs or events.
    logs = log_path.read_text()
    events = json.dumps(_study_messages(kafka_bootstrap, env["KIDNEYCT_TOPIC_RESULTS"]))
    for value in (str(source.PatientName), str(source.PatientID)):
        assert value not in logs and value not in events


@pytest.mark.slow
def test_sender_killed_mid_delivery_delivers_after_restart_and_a_resend_duplicates_nothing(
    tmp_path: Path,
) -> None:
    """SIGKILL while an object is half sent: `kidneyct send-results` delivers everything later, once
    per object in Orthanc (Secondary Captures this time); sending all again replaces, adds nothing."""
    data = tmp_path / "data"
    url = f"sqlite:///{(data / 'kidneyct.db').resolve()}"
    data.mkdir()
    migrations.upgrade(url)
    _register_tiny_model(tmp_path, url)
    paths, source = _synthetic_study(tmp_path / "synth", slices=3, seed=8)
    study = str(source.StudyInstanceUID)
    orthanc = OrthancServer(tmp_path / "orthanc")
    # The association request is a few hundred bytes: stalling after 3,000 stops inside a C-STORE.
    proxy = StallingProxy(orthanc.dicom_port, stall_after=3000)
    env = kidneyct_env(
        data,
        study_stable_age_s=2,
        batch_size=8,
        result_destinations=f"ORTHANC@127.0.0.1:{proxy.port}",
        result_heatmap="sc",
        result_poll_s=0.3,
        result_lease_s=3,
        dimse_timeout_s=120,
    )
    try:
        with kidneyct(["serve"], env, tmp_path / "serve.log") as server:
            port = int(server.wait_event("listener_started")["port"])
            assert all(r.ok for r in send_files("127.0.0.1", port, paths, called_ae="KIDNEYCT"))
            assert proxy.stalled.wait(240), "the sender never got as far as a C-STORE"
            server.kill()
        pending = query(url, "SELECT state, attempts, claimed_until FROM result_deliveries")
        assert len(pending) == 3 and all(s == "pending" and a == 0 for s, a, _ in pending)
        assert any(claimed is not None for _, _, claimed in pending)
        assert _by_class(orthanc.instances_of_study(study), SR_CLASS) == []

        proxy.release()
        with kidneyct(["send-results"], env, tmp_path / "sender.log"):
            wait_for(
                lambda: _study_row(url, study)["delivery_state"] == "delivered",
                timeout_s=120,
                what="delivery after the restart",
            )
        instances = orthanc.instances_of_study(study)
        assert len(_by_class(instances, SR_CLASS)) == 1
        scs = _by_class(instances, SC_CLASS)
        assert len(scs) == 2
        sc_path = tmp_path / "sc.dcm"
        sc_path.write_bytes(orthanc.file(scs[0]["ID"]))
        assert _dciodvfy_errors(sc_path) == []
        assert pydicom.dcmread(sc_path).StudyInstanceUID == study

        # Resend everything (as after a crash between the PACS' answer and our commit).
        _execute(
            url, "UPDATE result_deliveries SET state = 'pending', next_attempt_at = '2000-01-01 00:00:00'"
        )
        run_kidneyct(["send-results", "--once"], env)
        assert query(url, "SELECT COUNT(*) FROM result_deliveries WHERE state = 'delivered'")[0][0] == 3
        again = orthanc.instances_of_study(study)
        assert sorted(i["SOPInstanceUID"] for i in again) == sorted(i["SOPInstanceUID"] for i in instances)
    finally:
        proxy.close()
        orthanc.stop()
