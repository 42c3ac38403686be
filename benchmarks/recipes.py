"""The recipe table: heads on frozen pretrained features, each lever over 3 seeds, beside the panel's baselines.

Every row uses the trainer's own grouped split of the whole sample (`training.split`, seed 42 for the
split itself: exact duplicates dropped, groups that follow scans, the latest 15 % of each class's IDs
held out), fits on train + val (what the served model is fitted on) with the setting chosen on the
validation scans by a fit on train alone, and scores the grouped test and the latest-IDs block. The
seed is the head's: for the deterministic logistic head it only permutes the order of the training
rows (so the spread shows that the fit does not depend on it), for the MLP head it is Keras' seed.
Features are extracted once per (backbone, size, flip) and cached (`training.frozen_features`).

    nice -n 10 python benchmarks/recipes.py --out /tmp/recipes
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from classifier.model.device import prefer_onednn

prefer_onednn(os.environ)  # before Keras is imported, as `kidneyct train` does

import keras  # noqa: E402
import numpy as np  # noqa: E402

from benchmarks.training_choices import folder_sources  # noqa: E402
from classifier.model.network import build_model  # noqa: E402
from classifier.model.preprocess import Window  # noqa: E402
from common.vocabulary import CLASS_NAMES  # noqa: E402
from training.baseline import (  # noqa: E402
    FROZEN_LITE0,
    FROZEN_SIZE,
    baseline_probabilities,
    logistic_frozen_lite0_predict,
)
from training.bootstrap import metric_intervals  # noqa: E402
from training.dedup import GroupingParams  # noqa: E402
from training.evaluate import classification_metrics  # noqa: E402
from training.frozen_features import Extractor, feature_store  # noqa: E402
from training.frozen_recipe import FrozenConfig, choose_l2  # noqa: E402
from training.linear_head import fit_linear_head  # noqa: E402
from training.split import SplitFractions  # noqa: E402
from training.trainset import TrainingSet, build_training_set, load_model_inputs  # noqa: E402

DEFAULT_DATA = Path("/work/shared/data/kidney-ct-sample")
HELD_OUT = ("test", "latest")
SEEDS = (0, 1, 2)
MLP_EPOCHS = 25
_CHOSEN: dict[Any, tuple[float, list[dict[str, float]]]] = {}  # lever -> (L2, validation scores)


@dataclass(frozen=True)
class Lever:
    name: str
    size: int = 224
    flip: bool = False
    head: str = "linear"  # linear | mlp | mlp-ensemble
    balanced: bool = True
    label_smoothing: float = 0.0
    l2: float | None = None  # None: chosen on validation from the recipe's grid


LEVERS = (
    Lever("linear, balanced, L2 chosen on val (the recipe)"),
    Lever("linear, L2 0.001", l2=0.001),
    Lever("linear, L2 0.01", l2=0.01),
    Lever("linear, L2 0.1", l2=0.1),
    Lever("linear, L2 1", l2=1.0),
    Lever("linear, not class-balanced", balanced=False),
    Lever("linear, label smoothing 0.1", label_smoothing=0.1),
    Lever("linear, flip TTA (features of image and mirror averaged)", flip=True),
    Lever("linear, 128 px input", size=128),
    Lever("MLP Dense(512)+Dropout(0.4), Adam, epoch chosen on val", head="mlp"),
    Lever("MLP, ensemble of 3 seeds", head="mlp-ensemble"),
)


@dataclass
class Data:
    ts: TrainingSet
    labels: np.ndarray
    groups: list[str]
    idx: dict[str, np.ndarray]  # train, val, fit (train + val), test, latest


def linear_probs(lever: Lever, f: np.ndarray, d: Data, seed: int) -> tuple[np.ndarray, dict[str, Any]]:
    config = FrozenConfig(balanced=lever.balanced, label_smoothing=lever.label_smoothing)
    info: dict[str, Any] = {}
    l2 = lever.l2
    if l2 is None:  # deterministic: chosen once per lever, whatever the seed
        if lever not in _CHOSEN:
            _CHOSEN[lever] = choose_l2(f, d.labels, d.idx["train"], d.idx["val"], list(CLASS_NAMES), config)
        l2, scores = _CHOSEN[lever]
        info["val_scores"] = scores
    info["l2"] = l2
    order = np.random.default_rng(seed).permutation(d.idx["fit"])  # the seed: row order only
    head = fit_linear_head(
        f[order], d.labels[order], len(CLASS_NAMES), l2=l2, balanced=lever.balanced,
        label_smoothing=lever.label_smoothing,
    )  # fmt: skip
    return head.probabilities(f), info


def _mlp(f: np.ndarray, y: np.ndarray, seed: int, epochs: int, val: tuple[np.ndarray, np.ndarray] | None):
    keras.utils.set_random_seed(seed)
    mean, scale = f.mean(axis=0), f.std(axis=0) + 1e-6
    model = keras.Sequential(
        [
            keras.Input((f.shape[1],)),
            keras.layers.Dense(512, activation="relu"),
            keras.layers.Dropout(0.4),
            keras.layers.Dense(len(CLASS_NAMES), activation="softmax"),
        ]
    )
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="categorical_crossentropy")
    counts = np.bincount(y, minlength=len(CLASS_NAMES))
    weights = {c: len(y) / (len(CLASS_NAMES) * max(n, 1)) for c, n in enumerate(counts)}
    history = []
    for _ in range(epochs):
        model.fit((f - mean) / scale, np.eye(len(CLASS_NAMES))[y], epochs=1, batch_size=64,
                  class_weight=weights, verbose=0, shuffle=True)  # fmt: skip
        if val is not None:
            p = model.predict((val[0] - mean) / scale, verbose=0)
            history.append(classification_metrics(val[1], p, CLASS_NAMES)["macro_f1"])
    return (lambda x: np.asarray(model.predict((x - mean) / scale, verbose=0))), history


def mlp_probs(f: np.ndarray, d: Data, seed: int) -> tuple[np.ndarray, dict[str, Any]]:
    """Epoch chosen on val by a fit on train, then refitted on train + val for that many epochs."""
    tr, va = d.idx["train"], d.idx["val"]
    _, history = _mlp(f[tr], d.labels[tr], seed, MLP_EPOCHS, (f[va], d.labels[va]))
    epochs = int(np.argmax(history)) + 1
    predict, _ = _mlp(f[d.idx["fit"]], d.labels[d.idx["fit"]], seed, epochs, None)
    return predict(f), {"epochs": epochs}


def lever_probs(lever: Lever, f: np.ndarray, d: Data, seed: int) -> tuple[np.ndarray, dict[str, Any]]:
    if lever.head == "linear":
        return linear_probs(lever, f, d, seed)
    if lever.head == "mlp":
        return mlp_probs(f, d, seed)
    runs = [mlp_probs(f, d, 10 * (seed + 1) + i) for i in range(3)]  # three other seeds per ensemble
    return np.mean([p for p, _ in runs], axis=0), {"epochs": [i["epochs"] for _, i in runs]}


def score(probs: np.ndarray, d: Data, with_interval: bool = False) -> dict[str, Any]:
    out = {}
    for name in HELD_OUT:
        idx = d.idx[name]
        m = classification_metrics(d.labels[idx], probs[idx], CLASS_NAMES)
        out[name] = {"macro_f1": m["macro_f1"], "accuracy": m["accuracy"]}
        if with_interval:
            out[name]["interval"] = metric_intervals(
                d.labels[idx], probs[idx], [d.groups[i] for i in idx], CLASS_NAMES
            )["macro_f1"]
    return out


def features_for(
    lever: Lever, d: Data, args: argparse.Namespace, images: Callable[[int], np.ndarray]
) -> tuple[np.ndarray, float]:
    extractor = Extractor(args.backbone, args.weights, lever.size, lever.flip)
    weights = None if args.weights == "none" else args.weights
    started = time.perf_counter()
    store = feature_store(
        extractor,
        lambda: build_model(image_size=lever.size, weights=weights, backbone=args.backbone),
        args.cache,
    )
    f = store(images(lever.size))
    return f, time.perf_counter() - started


def measure(
    lever: Lever, d: Data, args: argparse.Namespace, images: Callable[[int], np.ndarray]
) -> dict[str, Any]:
    f, feature_seconds = features_for(lever, d, args, images)
    runs = []
    for seed in SEEDS:
        started = time.perf_counter()
        probs, info = lever_probs(lever, f, d, seed)
        runs.append(
            {"seed": seed, "seconds": time.perf_counter() - started, **info, **score(probs, d, seed == 0)}
        )
    row: dict[str, Any] = {"lever": lever.name, "feature_seconds": feature_seconds, "runs": runs}
    for name in HELD_OUT:
        values = [r[name]["macro_f1"] for r in runs]
        row[name] = {"mean": float(np.mean(values)), "spread": float(max(values) - min(values))}
    return row


def baselines(d: Data, args: argparse.Namespace, images: Callable[[int], np.ndarray]) -> dict[str, Any]:
    """The panel's baselines, fitted on train + val like the served model, on the same slices (pixels
    at 64 px as `models promote` loads them, the frozen Lite0 baseline at its 224 px)."""
    fit = d.idx["fit"]
    out: dict[str, Any] = {}
    px, full = images(64), images(FROZEN_SIZE)
    for name in HELD_OUT:
        idx = d.idx[name]
        started = time.perf_counter()
        probs = baseline_probabilities(px[fit], d.labels[fit], px[idx], len(CLASS_NAMES), frozen=False)
        pixel_seconds = time.perf_counter() - started
        started = time.perf_counter()
        probs[FROZEN_LITE0] = logistic_frozen_lite0_predict(
            full[fit], d.labels[fit], full[idx], len(CLASS_NAMES), feature_cache=args.cache
        )
        frozen_seconds = time.perf_counter() - started
        for b, p in probs.items():
            m = classification_metrics(d.labels[idx], p, CLASS_NAMES)
            entry = out.setdefault(b, {"seconds": 0.0})
            entry["seconds"] += frozen_seconds if b == FROZEN_LITE0 else pixel_seconds / 3
            entry[name] = {
                "macro_f1": m["macro_f1"],
                "interval": metric_intervals(d.labels[idx], p, [d.groups[i] for i in idx], CLASS_NAMES)[
                    "macro_f1"
                ],
            }
    return out


def _cell(row: dict[str, Any], name: str) -> str:
    return f"{row[name]['mean']:.3f} ± {row[name]['spread']:.3f}"


def markdown(result: dict[str, Any]) -> str:
    lines = [
        f"Machine: {result['machine']}; load average before / after: {result['load_before']} / "
        f"{result.get('load_after', '-')}. Extractor: {result['backbone']} ({result['weights']}).",
        "",
        "| model | seeds | grouped test macro-F1, mean ± spread (max-min) | latest IDs macro-F1, mean ± spread "
        "| seed 0: grouped test [95 % CI] | seed 0: latest IDs [95 % CI] | features s | head s per seed |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, b in result["baselines"].items():
        t, la = b["test"], b["latest"]
        lines.append(
            f"| baseline: {name} | - (deterministic) | {t['macro_f1']:.3f} | {la['macro_f1']:.3f} | "
            f"[{t['interval'][0]:.2f}, {t['interval'][1]:.2f}] | [{la['interval'][0]:.2f}, {la['interval'][1]:.2f}] | - | "
            f"{b['seconds']:.0f} |"
        )
    lines.append(
        "| ResNet50 from random weights, 64 px, fine-tune recipe (real-data run of commit 4ffa067; 1 seed) | 1 "
        "| 0.395 | 0.403 | 0.395 [0.17, 0.48] | 0.403 [0.23, 0.53] | - | 1,971 (whole run) |"
    )
    for row in result["rows"]:
        r0 = row["runs"][0]
        ci = {n: r0[n]["interval"] for n in HELD_OUT}
        lines.append(
            f"| {row['lever']} | {len(row['runs'])} | {_cell(row, 'test')} | {_cell(row, 'latest')} | "
            f"{r0['test']['macro_f1']:.3f} [{ci['test'][0]:.2f}, {ci['test'][1]:.2f}] | "
            f"{r0['latest']['macro_f1']:.3f} [{ci['latest'][0]:.2f}, {ci['latest'][1]:.2f}] | "
            f"{row['feature_seconds']:.0f} | {np.mean([r['seconds'] for r in row['runs']]):.1f} |"
        )
    return "\n".join(lines) + "\n"


def load_data(args: argparse.Namespace) -> Data:
    ts = build_training_set(
        folder_sources(args.data, args.limit), classes=CLASS_NAMES, image_size=224,
        window=Window(40.0, 400.0), grouping=GroupingParams(), fractions=SplitFractions(),
        seed=42, latest_fraction=0.15,
    )  # fmt: skip
    idx = {s: ts.indices(s) for s in ("train", "val", *HELD_OUT)}
    idx["fit"] = np.sort(np.concatenate([idx["train"], idx["val"]]))
    return Data(ts, ts.label_indices(), [i.group for i in ts.manifest.items], idx)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--backbone", default="efficientnet_lite0")
    parser.add_argument("--weights", default="imagenet")
    parser.add_argument(
        "--limit", type=int, default=None, help="at most this many files per class (smoke tests)"
    )
    parser.add_argument(
        "--levers", nargs="*", type=int, default=None, help="indices into LEVERS (default all)"
    )
    parser.add_argument("--cache", type=Path, default=Path("/tmp/kidneyct-feature-cache"))
    parser.add_argument("--out", type=Path, default=Path("recipes"))
    parser.add_argument(
        "--previous", type=Path, default=None, help="recipes.json of an earlier run: its rows come first"
    )
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    d = load_data(args)
    cache: dict[int, np.ndarray] = {224: d.ts.images}

    def images(size: int) -> np.ndarray:
        if size not in cache:
            cache[size] = load_model_inputs(d.ts.manifest.items, image_size=size, window=Window(40.0, 400.0))[
                ..., :1
            ]
        return cache[size]

    result: dict[str, Any] = {
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, keras "
        f"{keras.__version__} on {keras.backend.backend()}",
        "load_before": " ".join(f"{x:.1f}" for x in os.getloadavg()),
        "backbone": args.backbone,
        "weights": args.weights,
        "sets": {
            n: {"images": len(d.idx[n]), "groups": len({d.groups[i] for i in d.idx[n]})}
            for n in ("fit", *HELD_OUT)
        },
        "baselines": baselines(d, args, images),
        "rows": [],
    }
    if args.previous is not None:
        result["rows"] = json.loads(args.previous.read_text())["rows"]
    levers = [LEVERS[i] for i in args.levers] if args.levers is not None else list(LEVERS)
    for lever in levers:
        result["rows"].append(measure(lever, d, args, images))
        result["load_after"] = " ".join(f"{x:.1f}" for x in os.getloadavg())
        result["wall_seconds"] = time.perf_counter() - started
        (args.out / "recipes.json").write_text(json.dumps(result, indent=1))
        (args.out / "recipes.md").write_text(markdown(result))
        print(markdown(result), flush=True)


if __name__ == "__main__":
    main()
