"""Reprocess and backfill through real streams: the embedded default (SQLite + database queue) and
Kafka + PostgreSQL. Workers run in-process against the real stream clients the settings choose."""

from __future__ import annotations

import datetime as dt
import io
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pydicom
import pytest
from classifier_kit import caching_loader, make_tiny_artifact, register, wait_for, write_instance
from click.testing import CliRunner
from orthanc_kit import OrthancServer
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

import migrations
from classifier.model.serving import ServingModel
from classifier.report.build import ResultConfig
from classifier.report.sr import SR_SOP_CLASS_UID
from classifier.study.rule import StudyRule
from classifier.worker.batching import BatchPolicy
from classifier.worker.loop import Worker, WorkerConfig
from kidneyct.cli import cli
from kidneyct.reprocess.queue import queue_reprocess
from kidneyct.settings import Settings
from kidneyct.streams import make_consumer, make_publisher
from storage.archive.reader import ArchiveReader
from storage.db.engine import make_engine, make_session_factory
from storage.db.reprocess import Selection
from storage.db.tables import ModelVersion, Prediction, Study, StudyPrediction
from storage.stream.events import InstanceEvent
from storage.stream.kafka_stream import ensure_topics

pytestmark = [pytest.mark.slow]
ANY_SLICE = StudyRule(min_slices=1, min_probability=0.0)  # every study labelled by its first slice


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[str, str]]:
    root = tmp_path_factory.mktemp("models")
    return {v: make_tiny_artifact(root / v, v, seed) for v, seed in (("A", 21), ("B", 22))}


@pytest.fixture(scope="module")
def loader() -> Callable[[ModelVersion], ServingModel]:
    return caching_loader()


@dataclass
class Stack:
    settings: Settings
    env: dict[str, str]
    sessions: sessionmaker[Session]
    archive: Path
    loader: Callable[[ModelVersion], ServingModel]
    ids: dict[str, int]

    def send(self, events: list[InstanceEvent]) -> None:
        publisher = make_publisher(self.settings, self.sessions)
        try:
            for e in events:
                publisher.publish(self.settings.topic_instances, e.key, e.to_json())
        finally:
            publisher.close()

    def rows(self, version: str) -> dict[str, int]:
        """Prediction rows per SOP Instance UID under `version`."""
        from storage.db.tables import Instance

        with self.sessions() as s:
            rows = s.execute(
                select(Instance.sop_instance_uid, func.count())
                .join(Prediction, Prediction.instance_id == Instance.id)
                .where(Prediction.model_version_id == self.ids[version])
                .group_by(Instance.sop_instance_uid)
            )
            return {uid: int(n) for uid, n in rows}

    def study_labels(self, version: str) -> dict[int, tuple[str, bool]]:
        with self.sessions() as s:
            rows = s.execute(
                select(StudyPrediction.study_id, StudyPrediction.label, StudyPrediction.shadow).where(
                    StudyPrediction.model_version_id == self.ids[version]
                )
            )
            return {sid: (label, shadow) for sid, label, shadow in rows}


@pytest.fixture(params=["embedded", pytest.param("kafka", marks=[pytest.mark.kafka, pytest.mark.postgres])])
def stack(
    request: pytest.FixtureRequest,
    tmp_path: Path,
    unique_name: Callable[[str], str],
    artifacts: dict[str, tuple[str, str]],
    loader: Callable[[ModelVersion], ServingModel],
) -> Iterator[Stack]:
    env = {"KIDNEYCT_DATA_DIR": str(tmp_path / "data"), "KIDNEYCT_LOG_FORMAT": "json"}
    if request.param == "kafka":
        url = request.getfixturevalue("postgres_url")
        bootstrap = request.getfixturevalue("kafka_bootstrap")
        env |= {
            "KIDNEYCT_KAFKA_BOOTSTRAP": bootstrap,
            "KIDNEYCT_TOPIC_INSTANCES": unique_name("instances"),
            "KIDNEYCT_TOPIC_RESULTS": unique_name("results"),
            "KIDNEYCT_TOPIC_DEAD_LETTER": unique_name("dlq"),
        }
    else:
        url = f"sqlite:///{tmp_path / 'kidneyct.db'}"
    env["KIDNEYCT_DATABASE_URL"] = url
    settings = Settings(**{k.removeprefix("KIDNEYCT_").lower(): v for k, v in env.items()})
    if settings.uses_kafka:
        from kidneyct.streams import kafka_connection

        ensure_topics(
            kafka_connection(settings),
            [settings.topic_instances, settings.topic_results, settings.topic_dead_letter],
            partitions=2,
            replication_factor=1,
        )
    migrations.upgrade(url)
    engine = make_engine(url)
    sessions = make_session_factory(engine)
    ids = {
        v: register(sessions, version=v, directory=d, sha256=sha, active=(v == "A"))
        for v, (d, sha) in artifacts.items()
    }
    archive = tmp_path / "archive"
    archive.mkdir()
    yield Stack(settings, env, sessions, archive, loader, ids)
    engine.dispose()


class RunningWorker:
    """A worker in the classifier group on the stack's real stream, in a thread."""

    def __init__(
        self,
        stack: Stack,
        *,
        rule: StudyRule = ANY_SLICE,
        sweep_interval_s: float = 3600.0,
        results: ResultConfig | None = None,
    ) -> None:
        s = stack.settings
        self.consumer = make_consumer(
            s, stack.sessions, group_id=s.consumer_group, topics=[s.topic_instances]
        )
        self.publisher = make_publisher(s, stack.sessions)
        self.worker = Worker(
            consumer=self.consumer,
            publisher=self.publisher,
            session_factory=stack.sessions,
            config=WorkerConfig(
                archive=ArchiveReader(stack.archive),
                topic_results=s.topic_results,
                topic_dead_letter=s.topic_dead_letter,
                batch=BatchPolicy(max_size=4, max_wait_s=0.05, idle_wait_s=0.1),
                rule=rule,
                model_poll_s=0.2,
                stable_age_s=0.5,
                sweep_interval_s=sweep_interval_s,
                retry_initial_s=0.1,
                results=results or ResultConfig(),
            ),
            load_model=stack.loader,
        )
        self.worker.start()
        self.thread = threading.Thread(target=self.worker.run, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.worker.request_stop()
        self.thread.join(timeout=60)
        assert not self.thread.is_alive()
        self.consumer.close()
        self.publisher.close()


def _studies(stack: Stack, n_studies: int, per_study: int, received_at: dt.datetime) -> list[InstanceEvent]:
    events = []
    for i in range(n_studies):
        study = generate_uid()
        events += [
            write_instance(stack.archive, study=study, accession=f"ACC{i}", received_at=received_at)
            for _ in range(per_study)
        ]
    return events


def _cli(stack: Stack, args: list[str]) -> str:
    result = CliRunner().invoke(cli, args, env=stack.env, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.output


def test_promote_with_backfill_adds_one_row_per_version_and_keeps_the_old_label(stack: Stack) -> None:
    """Three studies classified by A; `models promote B --backfill-since 7d`: every instance has exactly
    one row per version, A's study labels are unchanged, and a second reprocess adds nothing."""
    now = dt.datetime.now(dt.UTC)
    events = _studies(stack, 3, 2, now - dt.timedelta(hours=1))
    running = RunningWorker(stack)
    try:
        stack.send(events)
        wait_for(lambda: len(stack.rows("A")) == len(events), timeout_s=120)
        labels_a = stack.study_labels("A")
        out = _cli(stack, ["models", "promote", "B", "--force", "--reason", "test", "--backfill-since", "7d"])
        assert "backfill: queued 6 instance(s) of 3 study(ies) for model version B" in out
        wait_for(lambda: len(stack.rows("B")) == len(events), timeout_s=120)
        assert set(stack.rows("A").values()) == {1} and set(stack.rows("B").values()) == {1}
        assert stack.study_labels("A") == labels_a
        assert len(stack.study_labels("B")) == 3

        again = _cli(stack, ["reprocess", "--all", "--model-version", "B", "--no-progress"])
        assert "queued 0 instance(s)" in again and "6 already classified" in again
        # Even events published again (the worker's own idempotence, not only the selection's):
        with stack.sessions() as s:
            uid = s.scalars(select(Study.study_instance_uid)).first()
        assert uid is not None
        publisher = make_publisher(stack.settings, stack.sessions)
        for e in [e for e in events if e.study_instance_uid == uid]:
            publisher.publish(stack.settings.topic_instances, e.key, e.reprocessed_under("B").to_json())
            publisher.publish(stack.settings.topic_instances, e.key, e.reprocessed_under("A").to_json())
        publisher.close()
        # A new instance of that study (classified by B, now active), behind the replays on its
        # partition: once it is in, the replays were handled.
        marker = write_instance(stack.archive, study=uid, received_at=now)
        stack.send([marker])
        wait_for(lambda: marker.sop_instance_uid in stack.rows("B"), timeout_s=120)
        assert set(stack.rows("A").values()) == {1} and set(stack.rows("B").values()) == {1}
        assert len(stack.rows("A")) == len(events) and len(stack.rows("B")) == len(events) + 1
    finally:
        running.stop()


def test_reprocess_under_a_candidate_while_new_studies_arrive(stack: Stack) -> None:
    """Reprocess under B (not active) while new studies arrive: every instance ends with exactly one row
    under A and the old ones one under B; nothing lost, nothing doubled; B's results stay shadow."""
    now = dt.datetime.now(dt.UTC)
    old = _studies(stack, 3, 2, now - dt.timedelta(days=2))
    running = RunningWorker(stack)
    try:
        stack.send(old)
        wait_for(lambda: len(stack.rows("A")) == len(old), timeout_s=120)
        new = _studies(stack, 3, 2, now)
        sender = threading.Thread(target=stack.send, args=(new,))
        sender.start()
        queued = queue_reprocess(
            stack.settings,
            stack.sessions,
            selection=Selection(received_until=now - dt.timedelta(days=1)),
            model_version="B",
        )
        sender.join()
        assert queued.instances == len(old)
        wait_for(
            lambda: len(stack.rows("A")) == len(old) + len(new) and len(stack.rows("B")) == len(old),
            timeout_s=120,
        )
        assert set(stack.rows("A").values()) == {1} and set(stack.rows("B").values()) == {1}
        assert set(stack.rows("B")) == {e.sop_instance_uid for e in old}
        assert all(shadow for _, shadow in stack.study_labels("B").values())
        assert not any(shadow for _, shadow in stack.study_labels("A").values())
    finally:
        running.stop()


def _results(stack: Stack) -> list[dict]:
    """Every message on the results topic (the embedded queue's rows, or the Kafka topic from the start)."""
    import json

    s = stack.settings
    if not s.uses_kafka:
        from storage.db.tables import QueueMessage

        with stack.sessions() as session:
            values = session.scalars(select(QueueMessage.value).where(QueueMessage.topic == s.topic_results))
            return [json.loads(v) for v in values]
    from kafka import KafkaConsumer

    consumer = KafkaConsumer(
        s.topic_results,
        bootstrap_servers=s.kafka_bootstrap,
        auto_offset_reset="earliest",
        consumer_timeout_ms=3000,
    )
    try:
        return [json.loads(m.value) for m in consumer]
    finally:
        consumer.close()


def test_shadow_model_on_live_traffic_stays_out_of_the_clinical_results(stack: Stack) -> None:
    """B shadowing A on live studies: one decode per instance, rows under both, B's study results
    completed quietly; the results topic carries A's instance and study messages only."""
    from storage.db.shadow_models import set_shadow

    with stack.sessions.begin() as s:
        set_shadow(s, version="B", on=True)
    running = RunningWorker(stack)
    try:
        events = _studies(stack, 2, 2, dt.datetime.now(dt.UTC))
        stack.send(events)
        wait_for(
            lambda: len(stack.rows("A")) == len(events) and len(stack.rows("B")) == len(events), timeout_s=120
        )
        decodes = running.worker._metrics.registry.get_sample_value("kidneyct_worker_decodes_total")  # noqa: SLF001
        assert decodes == len(events)
        wait_for(
            lambda: (
                running.worker.sweep_completed_studies() >= 0 and all(c for c in _complete(stack).values())
            ),
            timeout_s=30,
        )
    finally:
        running.stop()
    assert {label_shadow[1] for label_shadow in stack.study_labels("B").values()} == {True}
    assert {label_shadow[1] for label_shadow in stack.study_labels("A").values()} == {False}
    messages = _results(stack)
    assert {m["model_version"] for m in messages} == {"A"}
    assert sorted(m["type"] for m in messages).count("study_complete") == 2
    assert sum(m["type"] == "instance_result" for m in messages) == len(events)


def _complete(stack: Stack) -> dict[tuple[int, int], bool]:
    with stack.sessions() as s:
        rows = s.execute(
            select(StudyPrediction.study_id, StudyPrediction.model_version_id, StudyPrediction.complete)
        )
        return {(sid, mid): bool(c) for sid, mid, c in rows}


def _constant_artifact(directory: Path, version: str, label: str) -> tuple[str, str]:
    """A real 32x32 model that answers `label` for every input (its output layer's bias decides)."""
    import keras
    import numpy as np
    from classifier_kit import TINY_SIZE

    from classifier.model.artifact import save_artifact
    from classifier.model.network import HEAD_LAYERS, build_model
    from common.vocabulary import CLASS_NAMES

    keras.utils.set_random_seed(1)
    model = build_model(image_size=TINY_SIZE, weights=None)
    kernel, bias = model.get_layer(HEAD_LAYERS[3]).get_weights()
    bias = np.full_like(bias, -10.0)
    bias[CLASS_NAMES.index(label)] = 10.0
    model.get_layer(HEAD_LAYERS[3]).set_weights([np.zeros_like(kernel), bias])
    card = save_artifact(model, directory, {"version": version, "metrics": {"macro_f1": 0.5}})
    return str(directory), card.weights_sha256


def test_promoting_a_shadowed_version_sends_its_changed_results_as_new_revisions(
    stack: Stack, tmp_path: Path
) -> None:
    """Issue 24: reprocess under a candidate (its results complete quietly), then `models promote ...
    --backfill-since`: the backfill queues nothing (the rows exist), yet every study whose label changed
    gets the new version's report revision, its SR in the outbox for PACS."""
    from storage.db.tables import ResultDelivery, ResultObject, ResultReport

    for version, label in (("N", "Normal"), ("T", "Tumor")):
        directory, sha = _constant_artifact(tmp_path / version, version, label)
        stack.ids[version] = register(
            stack.sessions, version=version, directory=directory, sha256=sha, active=False
        )
    _cli(stack, ["models", "promote", "N", "--force", "--reason", "test setup"])
    events = _studies(stack, 2, 2, dt.datetime.now(dt.UTC) - dt.timedelta(hours=1))
    studies = {e.study_instance_uid for e in events}

    def reports(version: str) -> dict[str, tuple[int, str]]:
        with stack.sessions() as s:
            rows = s.execute(
                select(Study.study_instance_uid, ResultReport.revision, ResultReport.label)
                .join(Study, Study.id == ResultReport.study_id)
                .where(ResultReport.model_version_id == stack.ids[version])
            )
            return {uid: (revision, label) for uid, revision, label in rows}

    running = RunningWorker(
        stack,
        rule=StudyRule(min_slices=1, min_probability=0.5),
        sweep_interval_s=0.2,
        results=ResultConfig(destinations=("PACS@127.0.0.1:104",), heatmap="none"),
    )
    try:
        stack.send(events)
        wait_for(lambda: set(reports("N")) == studies, timeout_s=120)
        queue_reprocess(
            stack.settings, stack.sessions, selection=Selection(everything=True), model_version="T"
        )

        def quietly_complete() -> bool:
            with stack.sessions() as s:
                done = s.scalar(
                    select(func.count()).where(
                        StudyPrediction.model_version_id == stack.ids["T"], StudyPrediction.complete.is_(True)
                    )
                )
            return done == len(studies)

        wait_for(quietly_complete, timeout_s=120)
        assert reports("T") == {}  # a shadow's results are never reported
        out = _cli(stack, ["models", "promote", "T", "--force", "--reason", "test", "--backfill-since", "7d"])
        assert "queued 0 instance(s)" in out
        assert "2 study result(s) of T differ from what PACS was sent" in out
        wait_for(lambda: set(reports("T")) == studies, timeout_s=120)
        assert reports("T") == dict.fromkeys(studies, (2, "Tumor"))
        assert reports("N") == dict.fromkeys(studies, (1, "Normal"))
        with stack.sessions() as s:
            pending = s.execute(
                select(ResultObject.kind, ResultDelivery.state)
                .join(ResultDelivery, ResultDelivery.object_id == ResultObject.id)
                .join(ResultReport, ResultReport.id == ResultObject.report_id)
                .where(ResultReport.model_version_id == stack.ids["T"])
            ).all()
        assert sorted(pending) == [("sr", "pending"), ("sr", "pending")]
    finally:
        running.stop()


def _sr_text(ds: Dataset) -> dict[str, list[str]]:
    """Every TEXT item of an SR's content tree, by concept name (pydicom only, no SR library)."""
    found: dict[str, list[str]] = {}
    for item in ds.get("ContentSequence", []):
        if item.get("ValueType") == "TEXT":
            found.setdefault(item.ConceptNameCodeSequence[0].CodeMeaning, []).append(str(item.TextValue))
        for name, values in _sr_text(item).items():
            found.setdefault(name, []).extend(values)
    return found


def _received_srs(orthanc: OrthancServer, study: str) -> set[tuple[str, str, str]]:
    """(model version, "report revision N" parameter, instance number) of every SR Orthanc holds for the study."""
    out = set()
    for instance in orthanc.instances_of_study(study):
        if instance.get("SOPClassUID") != SR_SOP_CLASS_UID:
            continue
        ds = pydicom.dcmread(io.BytesIO(orthanc.file(instance["ID"])))
        texts = _sr_text(ds)
        (version,) = texts["Algorithm Version"]
        (revision,) = [p for p in texts["Algorithm Parameters"] if p.startswith("report revision")]
        out.add((version, revision, str(ds.InstanceNumber)))
    return out


@pytest.mark.parametrize("stack", ["embedded"], indirect=True)
def test_promoting_a_shadowed_version_delivers_its_new_revisions_to_orthanc_only_where_the_label_changed(
    stack: Stack, tmp_path: Path
) -> None:
    """Issue 24, end to end: U reported Tumor by M, C1 and C2 Normal by N; all three reprocessed under T
    (Tumor for every input), then `models promote T --backfill-since 7d` with the result sender wired
    as `kidneyct serve` wires it: Orthanc ends with T's revision-2 SR for C1 and C2, and for U only
    M's revision 1 (its label did not change)."""
    from prometheus_client import CollectorRegistry

    from delivery.metrics import SenderMetrics
    from kidneyct.wiring.classifier import worker_config
    from kidneyct.wiring.delivery import build_sender
    from storage.db.tables import ResultDelivery, ResultReport

    for version, label in (("M", "Tumor"), ("N", "Normal"), ("T", "Tumor")):
        directory, sha = _constant_artifact(tmp_path / version, version, label)
        stack.ids[version] = register(
            stack.sessions, version=version, directory=directory, sha256=sha, active=False
        )
    orthanc = OrthancServer(tmp_path / "orthanc")
    settings = stack.settings.model_copy(
        update={
            "result_destinations": f"ORTHANC@127.0.0.1:{orthanc.dicom_port}",
            "result_heatmap": "none",
            "result_poll_s": 0.2,
        }
    )
    results = worker_config(settings).results
    stop = threading.Event()
    sender = build_sender(settings, stack.sessions, SenderMetrics(CollectorRegistry()))
    sending = threading.Thread(target=sender.run, args=(stop,), daemon=True)
    sending.start()
    rule = StudyRule(min_slices=1, min_probability=0.5)
    received_at = dt.datetime.now(dt.UTC) - dt.timedelta(hours=1)

    def reports(version: str) -> dict[str, tuple[int, str]]:
        with stack.sessions() as s:
            rows = s.execute(
                select(Study.study_instance_uid, ResultReport.revision, ResultReport.label)
                .join(Study, Study.id == ResultReport.study_id)
                .where(ResultReport.model_version_id == stack.ids[version])
            )
            return {uid: (revision, label) for uid, revision, label in rows}

    def classify_under(version: str, n_studies: int) -> set[str]:
        """Studies sent while `version` is active (a fresh worker, so no model poll to wait for)."""
        _cli(stack, ["models", "promote", version, "--force", "--reason", "test setup"])
        events = _studies(stack, n_studies, 2, received_at)
        studies = {e.study_instance_uid for e in events}
        running = RunningWorker(stack, rule=rule, sweep_interval_s=0.2, results=results)
        try:
            stack.send(events)
            wait_for(lambda: set(reports(version)) == studies, timeout_s=120)
        finally:
            running.stop()
        return studies

    def undelivered() -> int:
        with stack.sessions() as s:
            return int(s.scalar(select(func.count()).where(ResultDelivery.state != "delivered")) or 0)

    try:
        unchanged = classify_under("M", 1)
        changed = classify_under("N", 2)
        running = RunningWorker(stack, rule=rule, sweep_interval_s=0.2, results=results)
        try:
            queue_reprocess(settings, stack.sessions, selection=Selection(everything=True), model_version="T")
            wait_for(
                lambda: sum(c for (_, mid), c in _complete(stack).items() if mid == stack.ids["T"]) == 3,
                timeout_s=120,
            )
            out = _cli(
                stack, ["models", "promote", "T", "--force", "--reason", "test", "--backfill-since", "7d"]
            )
            assert "queued 0 instance(s)" in out
            assert "2 study result(s) of T differ from what PACS was sent" in out
            wait_for(lambda: set(reports("T")) == changed, timeout_s=120)
        finally:
            running.stop()
        wait_for(lambda: undelivered() == 0, timeout_s=120)
        for study in changed:
            assert _received_srs(orthanc, study) == {
                ("N", "report revision 1", "1"),
                ("T", "report revision 2", "2"),
            }
        (study,) = unchanged
        assert _received_srs(orthanc, study) == {("M", "report revision 1", "1")}
        assert reports("T") == dict.fromkeys(changed, (2, "Tumor"))
    finally:
        stop.set()
        sending.join(timeout=60)
        orthanc.stop()
