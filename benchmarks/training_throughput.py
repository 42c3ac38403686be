"""Training speed on this machine: images per second of fine-tuning phase 1 (head only), phase 2
(conv5 + head) and from-scratch training (every layer), with TensorFlow's oneDNN CPU kernels off and on.

Baselines, measured in the same run at the same size and batch: the bare model's batched `predict`
(a forward pass only; train/predict says what a training step costs relative to inference), and the
same measurement with oneDNN off (the speed-up column). Each oneDNN setting runs in its own process,
since TensorFlow reads TF_ENABLE_ONEDNN_OPTS once at import. The first epoch of each phase traces
the graph and is not timed.

    python benchmarks/training_throughput.py --sizes 224 96 --images 32 --epochs 1 --batch-size 16
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time

import keras
import numpy as np


def _seconds(fn) -> float:  # type: ignore[no-untyped-def]
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


def measure(size: int, n_images: int, epochs: int, batch_size: int) -> list[dict[str, float | int | str]]:
    from classifier.model.network import build_model, set_trainable_for_phase
    from training.data import ImageSequence
    from training.fit import class_weights

    rng = np.random.default_rng(0)
    images = rng.uniform(0, 255, (n_images, size, size, 1)).astype(np.float32)
    labels = rng.integers(0, 4, n_images)
    seq = ImageSequence(images, labels, num_classes=4, batch_size=batch_size, shuffle=True, seed=0)
    keras.utils.set_random_seed(0)
    model = build_model(image_size=size, weights=None)
    x = np.repeat(images, 3, axis=-1)
    model.predict(x, batch_size=batch_size, verbose=0)  # trace
    predict_ips = n_images / _seconds(lambda: model.predict(x, batch_size=batch_size, verbose=0))
    rows = []
    for name, phase, lr in (("1", 1, 1e-3), ("2", 2, 1e-5), ("scratch", 1, 1e-3)):
        if name == "scratch":
            keras.utils.set_random_seed(0)
            model = build_model(image_size=size, weights=None, from_scratch=True)
        set_trainable_for_phase(model, phase, from_scratch=name == "scratch")  # type: ignore[arg-type]
        model.compile(
            optimizer=keras.optimizers.Adam(lr), loss="categorical_crossentropy", metrics=["accuracy"]
        )
        weights = class_weights(labels, 4)
        model.fit(seq, epochs=1, class_weight=weights, verbose=0)  # trace
        seconds = _seconds(lambda w=weights, m=model: m.fit(seq, epochs=epochs, class_weight=w, verbose=0))
        train_ips = n_images * epochs / seconds
        rows.append(
            {
                "size": size,
                "phase": name,
                "train_ips": train_ips,
                "predict_ips": predict_ips,
                "ratio": train_ips / predict_ips,
            }
        )
    return rows


def _child(onednn: str, args: argparse.Namespace) -> list[dict[str, float | int | str]]:
    """Measure in a fresh process with TF_ENABLE_ONEDNN_OPTS set (TensorFlow reads it at import)."""
    env = dict(os.environ, TF_ENABLE_ONEDNN_OPTS="1" if onednn == "on" else "0", TF_CPP_MIN_LOG_LEVEL="2")
    command = [sys.executable, __file__, "--child", "--sizes", *map(str, args.sizes)]
    command += [
        "--images",
        str(args.images),
        "--epochs",
        str(args.epochs),
        "--batch-size",
        str(args.batch_size),
    ]
    out = subprocess.run(command, env=env, check=True, capture_output=True, text=True).stdout
    return [json.loads(line) for line in out.splitlines() if line.startswith("{")]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes", type=int, nargs="+", default=[224, 96])
    parser.add_argument("--images", type=int, default=64, help="training images per epoch")
    parser.add_argument("--epochs", type=int, default=2, help="timed epochs per phase")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        for size in args.sizes:
            for row in measure(size, args.images, args.epochs, args.batch_size):
                print(json.dumps(row), flush=True)
        return
    print(
        f"# {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, batch {args.batch_size}, "
        f"{args.images} images x {args.epochs} timed epochs; phase scratch = every layer from random weights"
    )
    off, on = _child("off", args), _child("on", args)
    print(
        f"{'size':>5} {'phase':>8} {'train off':>10} {'train on':>9} {'speed-up':>9} "
        f"{'predict off':>12} {'predict on':>11} {'train/predict on':>17}"
    )
    for a, b in zip(off, on, strict=True):
        print(
            f"{a['size']:>5} {a['phase']:>8} {a['train_ips']:>10.1f} {b['train_ips']:>9.1f} "
            f"{b['train_ips'] / a['train_ips']:>9.2f} {a['predict_ips']:>12.1f} {b['predict_ips']:>11.1f} "
            f"{b['ratio']:>17.2f}"
        )


if __name__ == "__main__":
    main()
