"""Training speed on this machine: images per second of phase 1 (head only) and phase 2 (conv5 + head).

Baseline, measured in the same run at the same size and batch: the bare model's batched `predict`
(a forward pass only). The ratio says what a training step costs relative to inference.
The first epoch of each phase traces the graph and is not timed.

    python benchmarks/training_throughput.py --sizes 224 96 --images 64 --epochs 2
"""

from __future__ import annotations

import argparse
import platform
import time

import keras
import numpy as np

from classifier.model import build_model, set_trainable_for_phase
from training.data import ImageSequence
from training.fit import class_weights


def _seconds(fn) -> float:  # type: ignore[no-untyped-def]
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


def measure(size: int, n_images: int, epochs: int, batch_size: int) -> list[dict[str, float | int | str]]:
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
    for phase, lr in ((1, 1e-3), (2, 1e-5)):
        set_trainable_for_phase(model, phase)  # type: ignore[arg-type]
        model.compile(
            optimizer=keras.optimizers.Adam(lr), loss="categorical_crossentropy", metrics=["accuracy"]
        )
        weights = class_weights(labels, 4)
        model.fit(seq, epochs=1, class_weight=weights, verbose=0)  # trace
        seconds = _seconds(lambda w=weights: model.fit(seq, epochs=epochs, class_weight=w, verbose=0))
        train_ips = n_images * epochs / seconds
        rows.append(
            {
                "size": size,
                "phase": phase,
                "train_ips": train_ips,
                "predict_ips": predict_ips,
                "ratio": train_ips / predict_ips,
            }
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes", type=int, nargs="+", default=[224, 96])
    parser.add_argument("--images", type=int, default=64, help="training images per epoch")
    parser.add_argument("--epochs", type=int, default=2, help="timed epochs per phase")
    parser.add_argument("--batch-size", type=int, default=32)
    args = parser.parse_args()
    print(
        f"# keras {keras.__version__} ({keras.backend.backend()}), {platform.processor() or platform.machine()}, "
        f"batch {args.batch_size}, {args.images} images x {args.epochs} timed epochs"
    )
    print(f"{'size':>5} {'phase':>5} {'train img/s':>12} {'predict img/s':>14} {'train/predict':>14}")
    for size in args.sizes:
        for row in measure(size, args.images, args.epochs, args.batch_size):
            print(
                f"{row['size']:>5} {row['phase']:>5} {row['train_ips']:>12.1f} {row['predict_ips']:>14.1f} {row['ratio']:>14.2f}"
            )


if __name__ == "__main__":
    main()
