"""Images per second of the whole classifier worker against the bare model, in one run.

For each batch size: (1) the bare model on pre-decoded tensors, batched, two ways:
`predict_on_batch` per batch (the call the worker makes; the ratio's baseline) and one
`model.predict(batch_size=b)` over all of them, (2) the whole worker: events in the embedded queue ->
decode threads -> predict -> one SQLite transaction per batch -> offsets committed, timed until the
last offset is committed, and (3) one `model.predict` call per image, the way the seed notebook runs
it. The worker uses the same Keras model object as the bare runs, so all share one traced predict
function.

On TensorFlow's CPU backend `model.predict` alternates between two speeds on the 2-core box
(12.4 or 20-22 img/s at 224 px, run to run, at any batch size), while `predict_on_batch` stays at
the fast one; a ratio against `model.predict` therefore read 1.36 or 0.88 for the same worker.

    python benchmarks/classifier_throughput.py --image-size 224 --batch-sizes 8,16,32 --images 64
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import tempfile
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import keras
import numpy as np
import pydicom
from pydicom.data import get_testdata_file
from pydicom.uid import generate_uid
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

import migrations
from classifier.model.artifact import read_card, save_artifact
from classifier.model.network import build_model
from classifier.model.preprocess import KIDNEY_WINDOW, dicom_to_frames, to_model_input
from classifier.model.serving import ServingModel
from classifier.study.rule import StudyRule
from classifier.worker.batching import BatchPolicy
from classifier.worker.decoding import Preprocessing
from classifier.worker.loop import Worker, WorkerConfig
from classifier.worker.metrics import WorkerMetrics
from common.log import configure_logging
from storage.archive.reader import ArchiveReader
from storage.db.engine import make_engine, make_session_factory
from storage.db.model_versions import activate_model_version, register_model_version
from storage.db.tables import ModelVersion, QueueMessage
from storage.stream.contract import TopicPartition
from storage.stream.db_queue import DatabaseQueueConsumer, DatabaseQueuePublisher
from storage.stream.events import InstanceEvent

TOPIC = "kidneyct.instances"
SOURCE = "693_UNCR.dcm"  # a real 512x512 CT slice, uncompressed
NOW = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)


class WatchedConsumer(DatabaseQueueConsumer):
    """The embedded queue's consumer, which says when an offset past `target` is committed: the
    benchmark's clock stops then without polling the database (a 10 ms poll cost the 2-core box
    4 ms of CPU per image, about 5 % of the model's)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.target = -1
        self.done = threading.Event()

    def commit(self, offsets: Mapping[TopicPartition, int]) -> None:
        super().commit(offsets)
        if any(offset > self.target for offset in offsets.values()):
            self.done.set()


class NullPublisher:
    """Results go nowhere: the benchmark measures consume -> predict -> commit."""

    def publish(self, topic: str, key: bytes, value: bytes) -> None:
        pass

    def close(self) -> None:
        pass


def write_archive(archive: Path, n: int) -> list[InstanceEvent]:
    template = pydicom.dcmread(get_testdata_file(SOURCE))
    events = []
    study = generate_uid()
    for i in range(n):
        ds = template.copy()
        sop = generate_uid()
        ds.StudyInstanceUID, ds.SOPInstanceUID = study, sop
        ds.file_meta.MediaStorageSOPInstanceUID = sop
        path = archive / f"{sop}.dcm"
        ds.save_as(path, enforce_file_format=True)
        data = path.read_bytes()
        events.append(
            InstanceEvent(
                study_instance_uid=study,
                series_instance_uid=str(ds.SeriesInstanceUID),
                sop_instance_uid=sop,
                sop_class_uid=str(ds.SOPClassUID),
                transfer_syntax_uid=str(ds.file_meta.TransferSyntaxUID),
                modality="CT",
                archive_uri=path.as_uri(),
                sha256=hashlib.sha256(data).hexdigest(),
                size_bytes=len(data),
                calling_ae="BENCH",
                received_at=NOW,
                instance_number=i + 1,
                number_of_frames=1,
            )
        )
    return events


def run_worker(
    root: Path,
    model: keras.Model,
    artifact: Path,
    events: list[InstanceEvent],
    batch: int,
    *,
    decode_workers: int = 2,
) -> float:
    """Seconds from the worker's first poll to the commit of the last offset."""
    url = f"sqlite:///{root / f'bench-{batch}-{time.monotonic_ns()}.db'}"
    migrations.upgrade(url)
    engine = make_engine(url)
    sessions = make_session_factory(engine)
    with sessions.begin() as s:
        register_model_version(
            s,
            version="bench",
            artifact_uri=str(artifact),
            sha256="-",
            card={},
            metrics={},
            manifest_hash=None,
            now=NOW,
        )
        activate_model_version(s, version="bench", now=NOW)
    publisher = DatabaseQueuePublisher(sessions)
    for e in events:
        publisher.publish(TOPIC, e.key, e.to_json())
    card = read_card(artifact)
    worker, consumer = bench_worker(
        sessions,
        root,
        batch=batch,
        load_model=lambda row: ServingModel(row.id, row.version, model, card),
        decode_workers=decode_workers,
    )
    elapsed = drain(worker, sessions, consumer)
    engine.dispose()
    return elapsed


def bench_worker(
    sessions: sessionmaker[Session],
    archive_dir: Path,
    *,
    batch: int,
    load_model: Callable[[ModelVersion], ServingModel],
    metrics: WorkerMetrics | None = None,
    decode_workers: int = 2,
) -> tuple[Worker, WatchedConsumer]:
    """A worker on the embedded queue's TOPIC (group "bench") that publishes nowhere and never
    sweeps or polls for models during a run, and its consumer (for `drain`)."""
    consumer = WatchedConsumer(sessions, group_id="bench", topics=[TOPIC])
    worker = Worker(
        consumer=consumer,
        publisher=NullPublisher(),
        session_factory=sessions,
        config=WorkerConfig(
            archive=ArchiveReader(archive_dir),
            topic_results="results",
            topic_dead_letter="dlq",
            batch=BatchPolicy(max_size=batch, max_wait_s=0.05),
            rule=StudyRule(2, 0.5),
            model_poll_s=3600,
            sweep_interval_s=3600,
            decode_workers=decode_workers,
        ),
        metrics=metrics,
        load_model=load_model,
    )
    return worker, consumer


def drain(worker: Worker, sessions: sessionmaker[Session], consumer: WatchedConsumer) -> float:
    """Start `worker`, run it in a thread until its `consumer` committed the queue's last message; seconds."""
    worker.start()
    with sessions() as s:
        last = int(s.scalar(select(QueueMessage.id).order_by(QueueMessage.id.desc()).limit(1)) or 0)
    consumer.target = last
    thread = threading.Thread(target=worker.run, daemon=True)
    started = time.perf_counter()
    thread.start()
    consumer.done.wait()
    elapsed = time.perf_counter() - started
    worker.request_stop()
    thread.join()
    return elapsed


def bare_batched(model: keras.Model, tensors: np.ndarray, batch: int) -> float:
    """Images per second of `predict_on_batch` over `tensors` in batches of `batch`."""
    started = time.perf_counter()
    for i in range(0, len(tensors), batch):
        model.predict_on_batch(tensors[i : i + batch])
    return len(tensors) / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--batch-sizes", default="8,16,32")
    parser.add_argument("--images", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3, help="alternating runs per batch size (median)")
    parser.add_argument(
        "--per-image", type=int, default=16, help="images for the one-predict-per-image baseline"
    )
    args = parser.parse_args()
    configure_logging(fmt="console", level="warning")  # per-batch log lines would drown the table
    sizes = [int(b) for b in args.batch_sizes.split(",")]

    with tempfile.TemporaryDirectory(prefix="kidneyct-bench-") as tmp:
        root = Path(tmp)
        keras.utils.set_random_seed(0)
        model = build_model(image_size=args.image_size, weights=None)
        artifact = root / "model"
        save_artifact(model, artifact, {"version": "bench"})
        events = write_archive(root, args.images)
        pre = Preprocessing(args.image_size, KIDNEY_WINDOW)
        tensors = np.concatenate(
            [
                to_model_input(dicom_to_frames(Path(e.archive_uri[7:]), pre.window), pre.image_size)
                for e in events
            ]
        )
        print(
            f"backend={keras.backend.backend()} image_size={args.image_size} images={args.images} source={SOURCE}"
        )
        # Warm up every shape the runs will see, so no run pays for tracing.
        for b in sizes:
            model.predict(tensors[:b], batch_size=b, verbose=0)
            model.predict_on_batch(tensors[:b])
            model.predict_on_batch(tensors[: max(1, b // 2)])
        model.predict(tensors[:1], verbose=0)

        started = time.perf_counter()
        for i in range(args.per_image):
            model.predict(tensors[i : i + 1], verbose=0)
        per_image = args.per_image / (time.perf_counter() - started)

        print(
            f"{'batch':>5} {'bare img/s':>11} {'worker img/s':>13} {'worker/bare':>12}"
            f" {'model.predict img/s':>20} {'per-image img/s':>16}"
        )
        for b in sizes:
            # Alternate bare and worker runs and take medians: other load on a shared CPU drifts.
            bare_runs, worker_runs, predict_runs = [], [], []
            for _ in range(args.repeats):
                bare_runs.append(bare_batched(model, tensors, b))
                worker_runs.append(args.images / run_worker(root, model, artifact, events, b))
                started = time.perf_counter()
                model.predict(tensors, batch_size=b, verbose=0)
                predict_runs.append(args.images / (time.perf_counter() - started))
            bare, worker = float(np.median(bare_runs)), float(np.median(worker_runs))
            print(
                f"{b:>5} {bare:>11.2f} {worker:>13.2f} {worker / bare:>12.2f}"
                f" {float(np.median(predict_runs)):>20.2f} {per_image:>16.2f}",
                flush=True,
            )


if __name__ == "__main__":
    main()
