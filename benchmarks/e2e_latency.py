"""End-to-end latency of `kidneyct serve`: C-STORE success -> prediction row, and a 200-slice study.

For each backend (the embedded default: SQLite + database queue; and Kafka + PostgreSQL):
  1. start `kidneyct serve` as a subprocess with an active model (ResNet50, random weights, at
     --image-size: the timing does not depend on what the weights learned);
  2. send --instances synthetic CT slices at a steady --rate over one association, noting the wall
     time of each C-STORE success, and read each instance's `predictions.created_at`;
  3. send one --study-slices study as fast as possible and time first send -> last prediction row.
Then, in this process, the bare model's time for the same study slices in one batched call.

Prints p50/p95/p99 and the ratio of the served study to the bare batched call.

    python benchmarks/e2e_latency.py --instances 1000 --rate 10 \
        --kafka 127.0.0.1:19092 --postgres postgresql+psycopg://postgres@127.0.0.1:15432/postgres
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

import numpy as np
from sqlalchemy import create_engine, text

ROOT = Path(__file__).resolve().parents[1]
KIDNEYCT = str(Path(sys.executable).with_name("kidneyct"))


def _percentiles(values: list[float]) -> dict[str, float]:
    a = np.asarray(values)
    return {
        "p50": float(np.percentile(a, 50)),
        "p95": float(np.percentile(a, 95)),
        "p99": float(np.percentile(a, 99)),
    }


def _make_model(directory: Path, image_size: int) -> tuple[str, str]:
    import keras

    from classifier.model.artifact import save_artifact
    from classifier.model.network import build_model

    keras.utils.set_random_seed(0)
    card = save_artifact(build_model(image_size=image_size, weights=None), directory, {"version": "bench"})
    return str(directory), card.weights_sha256


def _prepare_database(url: str, artifact: tuple[str, str], image_size: int) -> None:
    import migrations
    from storage.db.engine import make_engine, make_session_factory
    from storage.db.model_versions import activate_model_version, register_model_version

    migrations.upgrade(url)
    engine = make_engine(url)
    now = dt.datetime.now(dt.UTC)
    with make_session_factory(engine).begin() as session:
        register_model_version(
            session,
            version="bench",
            artifact_uri=artifact[0],
            sha256=artifact[1],
            card={"image_size": image_size},
            metrics={},
            manifest_hash=None,
            now=now,
        )
        activate_model_version(session, version="bench", now=now)
    engine.dispose()


def _start_serve(env: dict[str, str], log: Path) -> tuple[subprocess.Popen[str], int]:
    proc = subprocess.Popen(
        [KIDNEYCT, "serve"], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    port: list[int] = []
    ready = threading.Event()

    def read() -> None:
        assert proc.stdout is not None
        with log.open("w") as f:
            for line in proc.stdout:
                f.write(line)
                try:
                    event = json.loads(line)
                except json.JSONDecodeError:
                    continue
                if isinstance(event, dict) and event.get("event") == "listener_started":
                    port.append(int(event["port"]))
                if isinstance(event, dict) and event.get("event") == "model_loaded":
                    ready.set()

    threading.Thread(target=read, daemon=True).start()
    if not ready.wait(300) or not port:
        proc.kill()
        raise SystemExit(f"kidneyct serve did not start; see {log}")
    return proc, port[0]


def _created_at(url: str, sops: list[str]) -> dict[str, float]:
    engine = create_engine(url)
    out: dict[str, float] = {}
    with engine.connect() as conn:
        for row in conn.execute(
            text(
                "SELECT i.sop_instance_uid, MIN(p.created_at) FROM predictions p "
                "JOIN instances i ON i.id = p.instance_id GROUP BY i.sop_instance_uid"
            )
        ):
            value = row[1]
            if isinstance(value, str):
                value = dt.datetime.fromisoformat(value)
            if value.tzinfo is None:
                value = value.replace(tzinfo=dt.UTC)
            out[row[0]] = value.timestamp()
    engine.dispose()
    return {s: out[s] for s in sops if s in out}


def _wait_all(url: str, sops: list[str], timeout_s: float) -> dict[str, float]:
    deadline = time.monotonic() + timeout_s
    while True:
        got = _created_at(url, sops)
        if len(got) == len(sops) or time.monotonic() > deadline:
            return got
        time.sleep(0.5)


def run_backend(
    name: str,
    env: dict[str, str],
    url: str,
    files: dict[str, Path],
    study: dict[str, Path],
    rate: float,
    work: Path,
) -> dict:
    from kidneyct.send_files import send_files

    proc, port = _start_serve(env, work / f"serve-{name}.log")
    try:
        acked: dict[str, float] = {}
        sop_of = {p: s for s, p in files.items()}
        start = time.monotonic()
        paths = list(files.values())

        def paced(result) -> None:  # type: ignore[no-untyped-def]
            if result.ok:
                acked[sop_of[result.path]] = time.time()
            # Steady rate: the next send waits for its slot.
            slot = start + len(acked) / rate
            delay = slot - time.monotonic()
            if delay > 0:
                time.sleep(delay)

        send_files("127.0.0.1", port, paths, called_ae="KIDNEYCT", on_result=paced)
        done = _wait_all(url, list(acked), timeout_s=600)
        latencies = [done[s] - acked[s] for s in acked if s in done]
        # The 200-slice study, as fast as the link allows.
        first = time.time()
        send_files("127.0.0.1", port, list(study.values()), called_ae="KIDNEYCT")
        sent = time.time()
        study_done = _wait_all(url, list(study), timeout_s=600)
        last = max(study_done.values())
    finally:
        proc.terminate()
        proc.wait(timeout=120)
    return {
        "acked": len(acked),
        "predicted": len(latencies),
        "latency": _percentiles(latencies),
        "study_s": last - first,
        "study_send_s": sent - first,
        "study_predicted": len(study_done),
    }


def bare_model(study: dict[str, Path], image_size: int, artifact: str) -> dict[str, float]:
    from classifier.model.artifact import load_artifact
    from classifier.model.preprocess import Window, dicom_to_frames, to_model_input

    model, _card = load_artifact(artifact)
    t0 = time.perf_counter()
    batch = np.concatenate(
        [to_model_input(dicom_to_frames(p, Window(40.0, 400.0))[0], image_size) for p in study.values()]
    )
    t1 = time.perf_counter()
    model.predict(batch, batch_size=len(batch), verbose=0)  # warm-up: trace the graph for this shape once
    t2 = time.perf_counter()
    model.predict(batch, batch_size=len(batch), verbose=0)
    t3 = time.perf_counter()
    return {"decode_s": t1 - t0, "predict_s": t3 - t2}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--instances", type=int, default=1000)
    parser.add_argument("--rate", type=float, default=10.0, help="instances per second")
    parser.add_argument("--study-slices", type=int, default=200)
    parser.add_argument("--size", type=int, default=128, help="synthetic image size")
    parser.add_argument("--image-size", type=int, default=64, help="model input size")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument(
        "--kafka", default=None, help="bootstrap of a real broker (else the Kafka run is skipped)"
    )
    parser.add_argument(
        "--postgres", default=None, help="URL of a PostgreSQL server (a fresh database is made)"
    )
    parser.add_argument("--work", type=Path, default=None)
    parser.add_argument(
        "--backends", default="embedded,kafka+postgres", help="comma-separated: embedded, kafka+postgres"
    )
    args = parser.parse_args()
    os.environ.setdefault("CUDA_VISIBLE_DEVICES", "-1")

    from training.synth.generate import generate

    work = args.work or Path(tempfile.mkdtemp(prefix="kidneyct-bench-"))
    per_study = 20
    rows = generate(
        work / "stream",
        studies=-(-args.instances // per_study),
        slices=per_study,
        classes=["Normal", "Stone"],
        seed=1,
        size=args.size,
    )[: args.instances]
    files = {r.sop_instance_uid: work / "stream" / r.path for r in rows}
    artifact = _make_model(work / "model", args.image_size)

    def env_for(data: Path, **extra: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("KIDNEYCT_")}
        env.update(
            {
                "KIDNEYCT_DATA_DIR": str(data),
                "KIDNEYCT_LOG_FORMAT": "json",
                "KIDNEYCT_DICOM_HOST": "127.0.0.1",
                "KIDNEYCT_DICOM_PORT": "0",
                "KIDNEYCT_BATCH_SIZE": str(args.batch_size),
                "TF_CPP_MIN_LOG_LEVEL": "2",
            }
        )
        env.update(extra)
        return env

    results = {}
    wanted = set(args.backends.split(","))
    backends: list[tuple[str, str | None]] = [("embedded", None)] if "embedded" in wanted else []
    if args.kafka and args.postgres and "kafka+postgres" in wanted:
        backends.append(("kafka+postgres", args.kafka))
    for name, bootstrap in backends:
        study_rows = generate(
            work / f"study-{name}",
            studies=1,
            slices=args.study_slices,
            classes=["Tumor"],
            seed=2,
            size=args.size,
        )
        study = {r.sop_instance_uid: work / f"study-{name}" / r.path for r in study_rows}
        data = work / f"data-{name}"
        data.mkdir(parents=True, exist_ok=True)
        if bootstrap is None:
            url = f"sqlite:///{data / 'kidneyct.db'}"
            env = env_for(data)
        else:
            db = f"bench_{uuid.uuid4().hex[:8]}"
            engine = create_engine(args.postgres, isolation_level="AUTOCOMMIT")
            with engine.connect() as conn:
                conn.execute(text(f'CREATE DATABASE "{db}"'))
            engine.dispose()
            url = args.postgres.rsplit("/", 1)[0] + f"/{db}"
            suffix = uuid.uuid4().hex[:8]
            env = env_for(
                data,
                KIDNEYCT_KAFKA_BOOTSTRAP=bootstrap,
                KIDNEYCT_DATABASE_URL=url,
                KIDNEYCT_TOPIC_INSTANCES=f"bench-{suffix}-instances",
                KIDNEYCT_TOPIC_RESULTS=f"bench-{suffix}-results",
                KIDNEYCT_TOPIC_DEAD_LETTER=f"bench-{suffix}-dlq",
                KIDNEYCT_CONSUMER_GROUP=f"bench-{suffix}",
            )
            subprocess.run([KIDNEYCT, "kafka", "init"], env=env, check=True, capture_output=True)
        _prepare_database(url, artifact, args.image_size)
        print(f"running {name} ...", flush=True)
        results[name] = run_backend(
            name,
            env,
            url,
            files if name == "embedded" else _fresh_copy(files, work, name),
            study,
            args.rate,
            work,
        )
    bare = bare_model(study, args.image_size, artifact[0])

    print(
        f"\nC-STORE success -> prediction row, {args.instances} instances at {args.rate:g}/s "
        f"(ResNet50 at {args.image_size}x{args.image_size}, batch {args.batch_size}, 2-core CPU)"
    )
    print(f"{'backend':<16} {'p50 ms':>8} {'p95 ms':>8} {'p99 ms':>8} {'predicted':>10}")
    for name, r in results.items():
        lat = r["latency"]
        print(
            f"{name:<16} {lat['p50'] * 1e3:8.0f} {lat['p95'] * 1e3:8.0f} {lat['p99'] * 1e3:8.0f} {r['predicted']:>5}/{r['acked']}"
        )
    print(
        f"\n{args.study_slices}-slice study: first C-STORE -> last prediction row, vs the bare model's one batched call"
    )
    print(f"bare model: decode {bare['decode_s']:.2f} s + predict {bare['predict_s']:.2f} s (one call)")
    for name, r in results.items():
        ratio = r["study_s"] / bare["predict_s"]
        ratio_all = r["study_s"] / (bare["predict_s"] + bare["decode_s"])
        print(
            f"{name:<16} {r['study_s']:.2f} s (sending took {r['study_send_s']:.2f} s): "
            f"{ratio:.1f}x the bare predict, {ratio_all:.1f}x bare decode+predict"
        )


def _fresh_copy(files: dict[str, Path], work: Path, name: str) -> dict[str, Path]:
    """New UIDs for the second backend's stream, so both see never-seen instances."""
    from training.synth.generate import generate

    n = len(files)
    rows = generate(
        work / f"stream-{name}", studies=-(-n // 20), slices=20, classes=["Normal", "Stone"], seed=1, size=128
    )[:n]
    return {r.sop_instance_uid: work / f"stream-{name}" / r.path for r in rows}


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    main()
