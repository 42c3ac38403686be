"""What one shadow model costs a worker: images per second without and with one, side by side in one run.

Both runs are the whole worker (events in the embedded queue -> decode threads -> predict -> SQLite
transaction(s) -> offsets committed, timed until the last offset is committed), alternated `--repeats`
times (medians: the CPU is shared). With a shadow each batch is decoded once and predicted twice, so
the second model should cost about one more predict, not one more decode; the bare batched predict
of one model, measured in the same run, says what one predict costs. The decode counter shows the
one decode per instance.

    python benchmarks/shadow_cost.py --image-size 64 --images 48 --batch-size 16 --repeats 3
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

import keras
import numpy as np
from classifier_throughput import TOPIC, bench_worker, drain, write_archive
from prometheus_client import CollectorRegistry

import migrations
from classifier.model.artifact import read_card, save_artifact
from classifier.model.network import build_model
from classifier.model.preprocess import KIDNEY_WINDOW, dicom_to_frames, to_model_input
from classifier.model.serving import ServingModel
from classifier.worker.decoding import Preprocessing
from classifier.worker.metrics import WorkerMetrics
from common.log import configure_logging
from storage.db.engine import make_engine, make_session_factory
from storage.db.model_versions import activate_model_version, register_model_version
from storage.db.shadow_models import set_shadow
from storage.stream.db_queue import DatabaseQueuePublisher
from storage.stream.events import InstanceEvent

NOW = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)


def run_worker(
    root: Path,
    models: dict[str, tuple[keras.Model, Path]],
    events: list[InstanceEvent],
    batch: int,
    shadow: bool,
) -> tuple[float, float]:
    """(seconds from the first poll to the last offset's commit, decodes per instance)."""
    url = f"sqlite:///{root / f'bench-{time.monotonic_ns()}.db'}"
    migrations.upgrade(url)
    engine = make_engine(url)
    sessions = make_session_factory(engine)
    with sessions.begin() as s:
        for version, (_, artifact) in models.items():
            register_model_version(
                s,
                version=version,
                artifact_uri=str(artifact),
                sha256="-",
                card={},
                metrics={},
                manifest_hash=None,
                now=NOW,
            )
        activate_model_version(s, version="active", now=NOW)
        if shadow:
            set_shadow(s, version="shadow", on=True)
    publisher = DatabaseQueuePublisher(sessions)
    for e in events:
        publisher.publish(TOPIC, e.key, e.to_json())
    metrics = WorkerMetrics(CollectorRegistry())
    worker, consumer = bench_worker(
        sessions,
        root,
        batch=batch,
        metrics=metrics,
        load_model=lambda row: ServingModel(
            row.id, row.version, models[row.version][0], read_card(models[row.version][1])
        ),
    )
    elapsed = drain(worker, sessions, consumer)
    engine.dispose()
    decodes = metrics.registry.get_sample_value("kidneyct_worker_decodes_total") or 0.0
    return elapsed, decodes / len(events)


def machine() -> str:
    cpu = "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    return f"{platform.machine()} {cpu}, {os.cpu_count()} cores, load {load:.1f}, keras {keras.__version__} ({keras.backend.backend()})"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--images", type=int, default=48)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=3, help="alternating runs of each (median)")
    args = parser.parse_args()
    configure_logging(fmt="console", level="warning")
    with tempfile.TemporaryDirectory(prefix="kidneyct-shadow-bench-") as tmp:
        root = Path(tmp)
        models: dict[str, tuple[keras.Model, Path]] = {}
        for version, seed in (("active", 0), ("shadow", 1)):
            keras.utils.set_random_seed(seed)
            model = build_model(image_size=args.image_size, weights=None)
            save_artifact(model, root / version, {"version": version})
            models[version] = (model, root / version)
        events = write_archive(root, args.images)
        pre = Preprocessing(args.image_size, KIDNEY_WINDOW)
        tensors = np.concatenate(
            [
                to_model_input(dicom_to_frames(Path(e.archive_uri[7:]), pre.window), pre.image_size)
                for e in events
            ]
        )
        b = args.batch_size
        for model, _ in models.values():  # trace every shape the runs see
            for n in (b, max(1, b // 2), 1, 2, args.images % b or b):
                model.predict_on_batch(tensors[:n])
        print(f"machine: {machine()}")
        print(f"image_size={args.image_size} images={args.images} batch={b} source=693_UNCR.dcm (512x512 CT)")
        bare, plain, shadowed, decodes = [], [], [], []
        for _ in range(args.repeats):
            started = time.perf_counter()
            for i in range(0, len(tensors), b):
                models["active"][0].predict_on_batch(tensors[i : i + b])
            bare.append(len(tensors) / (time.perf_counter() - started))
            seconds, _ = run_worker(root, models, events, b, shadow=False)
            plain.append(args.images / seconds)
            seconds, per_instance = run_worker(root, models, events, b, shadow=True)
            shadowed.append(args.images / seconds)
            decodes.append(per_instance)
        one, without, with_shadow = (statistics.median(x) for x in (bare, plain, shadowed))
        print(f"{'':<38}{'img/s (median)':>15}  runs")
        print(f"{'bare batched predict, one model':<38}{one:>15.1f}  {', '.join(f'{x:.1f}' for x in bare)}")
        print(f"{'worker, active only':<38}{without:>15.1f}  {', '.join(f'{x:.1f}' for x in plain)}")
        print(
            f"{'worker, active + one shadow':<38}{with_shadow:>15.1f}  {', '.join(f'{x:.1f}' for x in shadowed)}"
        )
        print(f"with / without shadow: {with_shadow / without:.2f}")
        # If the shadow only adds one predict per image: 1 / (1/without + 1/one).
        print(
            f"expected if the shadow costs exactly one more predict: {1 / (1 / without + 1 / one):.1f} img/s"
        )
        print(f"decodes per instance with the shadow: {statistics.median(decodes):.2f}")


if __name__ == "__main__":
    main()
