"""The GPU check's serving run: the bare model in bf16 under XLA, the whole worker serving that same
model from pre-archived instances, and how fast the host's cores decode, in one run.

For each batch size: the bare model's batched predict on pre-decoded tensors (the compiled XLA
function: JAX always compiles; TensorFlow with `jit_compile=True`), then the whole worker (embedded
queue -> decode threads -> predict -> SQLite -> commit, `classifier_throughput.run_worker`), as
img/s and worker/bare. Then the decode rate (archive file -> model tensors, `decode_record`) with
1 thread and with `--decode-workers` threads: when it is below the bare rate, the worker cannot
reach the bare model's pace with that many decode threads on this host.

    python benchmarks/gpu_serving.py --image-size 224 --batch-sizes 32,64 --images 512
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import keras
import numpy as np
from classifier_throughput import run_worker as worker_seconds
from classifier_throughput import write_archive

from classifier.model.artifact import save_artifact
from classifier.model.network import build_model
from classifier.model.preprocess import KIDNEY_WINDOW
from classifier.worker.decoding import DecodedInstance, Preprocessing, decode_record
from common.log import configure_logging
from storage.stream.contract import Record
from storage.stream.events import InstanceEvent


def decode_rate(events: list[InstanceEvent], pre: Preprocessing, archive: Path, threads: int) -> float:
    """Images per second from archive file to model tensors with `threads` decode threads."""
    records = [Record("bench", 0, i, e.key, e.to_json()) for i, e in enumerate(events)]
    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=threads) as pool:
        outcomes = list(pool.map(lambda r: decode_record(r, pre, archive), records))
    elapsed = time.perf_counter() - started
    bad = [o for o in outcomes if not isinstance(o, DecodedInstance)]
    if bad:
        raise SystemExit(f"{len(bad)} instances did not decode: {bad[0]}")
    return len(records) / elapsed


def bare_rate(model: keras.Model, tensors: np.ndarray, batch: int) -> float:
    """Images per second of batched predict on the compiled function (blocks on the results)."""
    started = time.perf_counter()
    for i in range(0, len(tensors), batch):
        np.asarray(model.predict_on_batch(tensors[i : i + batch]))
    return len(tensors) / (time.perf_counter() - started)


def build(image_size: int, dtype: str) -> keras.Model:
    if dtype == "bfloat16":
        keras.config.set_dtype_policy("mixed_bfloat16")  # bf16 compute, float32 weights
    keras.utils.set_random_seed(0)
    model = build_model(image_size=image_size, weights=None)
    if keras.backend.backend() == "tensorflow":
        model.compile(jit_compile=True)  # XLA (JAX compiles with XLA always)
    return model


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--batch-sizes", default="32,64")
    parser.add_argument("--images", type=int, default=512)
    parser.add_argument("--repeats", type=int, default=2, help="alternating runs per batch size (best)")
    parser.add_argument("--dtype", choices=["bfloat16", "float32"], default="bfloat16")
    parser.add_argument("--decode-workers", type=int, default=os.cpu_count() or 1)
    args = parser.parse_args()
    configure_logging(fmt="console", level="warning")
    sizes = [int(b) for b in args.batch_sizes.split(",")]

    with tempfile.TemporaryDirectory(prefix="kidneyct-gpu-") as tmp:
        root = Path(tmp)
        model = build(args.image_size, args.dtype)
        artifact = root / "model"
        save_artifact(model, artifact, {"version": "bench"})
        events = write_archive(root, args.images)
        pre = Preprocessing(args.image_size, KIDNEY_WINDOW)
        decoded = [decode_record(Record("b", 0, 0, e.key, e.to_json()), pre, root) for e in events]
        tensors = np.concatenate([d.tensors for d in decoded if isinstance(d, DecodedInstance)])
        print(
            f"backend={keras.backend.backend()} devices={_devices()} dtype={args.dtype} "
            f"image_size={args.image_size} images={args.images} decode_workers={args.decode_workers} "
            f"host_cpus={os.cpu_count()}",
            flush=True,
        )
        for b in sizes:  # compile every shape first (the last partial batch too), outside the timings
            model.predict_on_batch(tensors[:b])
            if len(tensors) % b:
                model.predict_on_batch(tensors[: len(tensors) % b])
        print(f"{'batch':>5} {'bare img/s':>11} {'worker img/s':>13} {'worker/bare':>12}", flush=True)
        for b in sizes:
            bare_runs, worker_runs = [], []
            for _ in range(args.repeats):
                bare_runs.append(bare_rate(model, tensors, b))
                seconds = worker_seconds(root, model, artifact, events, b, decode_workers=args.decode_workers)
                worker_runs.append(args.images / seconds)
            bare, worker = max(bare_runs), max(worker_runs)
            print(f"{b:>5} {bare:>11.1f} {worker:>13.1f} {worker / bare:>12.2f}", flush=True)
        one = decode_rate(events, pre, root, 1)
        many = decode_rate(events, pre, root, args.decode_workers)
        print(f"decode img/s: 1 thread {one:.1f}, {args.decode_workers} threads {many:.1f}", flush=True)


def _devices() -> str:
    if keras.backend.backend() != "jax":
        return "-"
    import jax  # only under the JAX backend (the GPU machines)

    return ",".join(d.platform for d in jax.devices())


if __name__ == "__main__":
    main()
