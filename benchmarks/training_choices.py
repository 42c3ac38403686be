"""Training choices measured on the real sample: input size, augmentation and backbone against CPU time.

Every configuration trains from random weights on the SAME grouped split (the trainer's own: exact
duplicates dropped, groups that follow scans, the latest 15 % of each class's IDs held out, seed 42)
for the same fixed budget (`--epochs` over the same training images; no validation, no early stopping,
nothing selected on any test set), and is scored on the grouped test split (older IDs, held-out scans)
and the latest-IDs block, with 95 % group-bootstrap intervals, beside 1-NN and ridge on 32x32 pixels
fitted on the same training images. Writes a markdown table and a JSON file; each configuration is
appended as it finishes, so a run stopped early keeps what it measured.

    nice -n 10 python benchmarks/training_choices.py --epochs 2 \\
        --configs resnet50:64:aug resnet50:64:noaug efficientnetb0:64:aug resnet50:96:aug resnet50:128:aug
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from classifier.model.device import prefer_onednn

prefer_onednn(os.environ)  # before Keras is imported, as `kidneyct train` does

import keras  # noqa: E402
import numpy as np  # noqa: E402

from classifier.model.network import build_model  # noqa: E402
from classifier.model.preprocess import Window  # noqa: E402
from common.vocabulary import CLASS_NAMES  # noqa: E402
from training.baseline import baseline_probabilities  # noqa: E402
from training.bootstrap import metric_intervals, paired_macro_f1_difference  # noqa: E402
from training.data import AugmentConfig, Augmenter, ImageSequence, to_three_channels  # noqa: E402
from training.dedup import GroupingParams, kaggle_id  # noqa: E402
from training.evaluate import classification_metrics  # noqa: E402
from training.fit import FitConfig, fit_two_phase  # noqa: E402
from training.split import SplitFractions  # noqa: E402
from training.trainset import SourceItem, TrainingSet, build_training_set, load_model_inputs  # noqa: E402

DEFAULT_DATA = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "kidney-ct-sample"
HELD_OUT = ("test", "latest")


@dataclass(frozen=True)
class Choice:
    backbone: str
    size: int
    augment: bool
    epochs: int | None = (
        None  # None: --epochs (a smaller budget for a size that does not fit, said in the table)
    )

    @classmethod
    def parse(cls, text: str) -> Choice:
        """`backbone:size:aug|noaug[:epochs]`."""
        backbone, size, augment, *epochs = text.split(":")
        if augment not in ("aug", "noaug"):
            raise argparse.ArgumentTypeError(f"augmentation must be aug or noaug, got {augment!r}")
        return cls(backbone, int(size), augment == "aug", int(epochs[0]) if epochs else None)

    @property
    def label(self) -> str:
        return f"{self.backbone}, {self.size} px, augmentation {'on' if self.augment else 'off'}"


def folder_sources(root: Path, limit: int | None) -> list[SourceItem]:
    """Every `<Class>/<Class>- (N).jpg` under root, as `kidneyct dataset import-folder` registers them."""
    items = []
    for label in CLASS_NAMES:
        paths = sorted((root / label).glob("*.jpg"))
        for path in paths[:limit] if limit else paths:
            parsed = kaggle_id(path.name)
            items.append(
                SourceItem(
                    key=f"image:{path}",
                    source="image",
                    path=str(path),
                    frame=None,
                    label=label,
                    file_sha256=hashlib.sha256(path.read_bytes()).hexdigest(),
                    group_key=None,
                    kaggle_id=(str(path.parent), *parsed) if parsed else None,
                )
            )
    return sorted(items, key=lambda i: i.key)


def scores(
    y: np.ndarray, probs: np.ndarray, groups: list[str], baselines: dict[str, np.ndarray] | None
) -> dict[str, Any]:
    metrics = classification_metrics(y, probs, CLASS_NAMES)
    out: dict[str, Any] = {
        "macro_f1": metrics["macro_f1"],
        "accuracy": metrics["accuracy"],
        "interval": metric_intervals(y, probs, groups, CLASS_NAMES)["macro_f1"],
        "per_class_f1": {c: metrics["per_class"][c]["f1"] for c in CLASS_NAMES},
    }
    if baselines:
        diff = paired_macro_f1_difference(y, probs, baselines, groups, len(CLASS_NAMES))
        out["minus"] = {
            name: {"difference": d["difference"], "interval": d["interval"]} for name, d in diff.items()
        }
    return out


def images_at(ts: TrainingSet, size: int, cache: dict[int, np.ndarray]) -> np.ndarray:
    """[N, S, S, 1] model inputs of every manifest item at `size`, decoded through the serving preprocessing."""
    if size not in cache:
        cache[size] = load_model_inputs(ts.manifest.items, image_size=size, window=Window(40.0, 400.0))[
            ..., :1
        ]
    return cache[size]


def measure(
    choice: Choice,
    ts: TrainingSet,
    train_idx: np.ndarray,
    held_out: dict[str, np.ndarray],
    baselines: dict[str, dict[str, np.ndarray]],
    *,
    args: argparse.Namespace,
    cache: dict[int, np.ndarray],
) -> dict[str, Any]:
    images = images_at(ts, choice.size, cache)
    labels = ts.label_indices()
    groups = [i.group for i in ts.manifest.items]
    keras.backend.clear_session()
    keras.utils.set_random_seed(args.seed)
    model = build_model(image_size=choice.size, weights=None, from_scratch=True, backbone=choice.backbone)
    train = ImageSequence(
        images[train_idx],
        labels[train_idx],
        num_classes=len(CLASS_NAMES),
        batch_size=args.batch_size,
        shuffle=True,
        seed=args.seed,
        augmenter=Augmenter(AugmentConfig(), seed=args.seed) if choice.augment else None,
    )
    epochs = choice.epochs or args.epochs
    config = FitConfig(epochs_phase1=epochs, epochs_phase2=0, batch_size=args.batch_size, verbose=2)
    started = time.perf_counter()
    fit = fit_two_phase(
        model, train=train, train_labels=labels[train_idx], val=None,
        num_classes=len(CLASS_NAMES), config=config, from_scratch=True,
    )  # fmt: skip
    fit_seconds = time.perf_counter() - started
    row: dict[str, Any] = {
        "choice": choice.label,
        "backbone": choice.backbone,
        "size": choice.size,
        "augment": choice.augment,
        "epochs": epochs,
        "train_images": len(train_idx),
        "fit_seconds": fit_seconds,
        "train_loss": fit.phases[0].history.get("loss"),
        "sets": {},
    }
    started = time.perf_counter()
    for name, idx in held_out.items():
        probs = model.predict(to_three_channels(images[idx]), batch_size=64, verbose=0)
        row["sets"][name] = scores(labels[idx], probs, [groups[i] for i in idx], baselines[name])
    row["predict_seconds"] = time.perf_counter() - started
    return row


def _ci(entry: dict[str, Any]) -> str:
    low, high = entry["interval"]
    return f"{entry['macro_f1']:.3f} [{low:.2f}, {high:.2f}]"


def _diff(entry: dict[str, Any], name: str) -> str:
    d = entry["minus"][name]
    return f"{d['difference']:+.3f} [{d['interval'][0]:+.2f}, {d['interval'][1]:+.2f}]"


def markdown(result: dict[str, Any]) -> str:
    sizes = result["sets"]
    lines = [
        f"Machine: {result['machine']}; load average before / after: {result['load_before']} / "
        f"{result.get('load_after', '-')}; run under `nice -n 10`.",
        f"Same grouped split for every row (seed {result['seed']}): {result['train_images']} training "
        f"slices; grouped test {sizes['test']['images']} slices ({sizes['test']['groups']} scans), latest IDs "
        f"{sizes['latest']['images']} slices ({sizes['latest']['groups']} scans). Each network: "
        f"{result['epochs']} epoch(s) (unless the row says otherwise) from random weights, batch {result['batch_size']}, no selection.",
        "",
        "| model | epochs | fit wall s | predict s | macro-F1 grouped test [95 % CI] | macro-F1 latest IDs [95 % CI] "
        "| minus ridge, test | minus ridge, latest |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, entry in result["baselines"].items():
        lines.append(
            f"| {name} (32x32 pixels) | - | {entry['seconds']:.0f} | - | {_ci(entry['test'])} | "
            f"{_ci(entry['latest'])} | - | - |"
        )
    for row in result["rows"]:
        t, latest = row["sets"]["test"], row["sets"]["latest"]
        lines.append(
            f"| {row['choice']} | {row['epochs']} | {row['fit_seconds']:.0f} | {row['predict_seconds']:.0f} | {_ci(t)} | "
            f"{_ci(latest)} | {_diff(t, 'ridge')} | {_diff(latest, 'ridge')} |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--configs", type=Choice.parse, nargs="+", required=True)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument(
        "--limit", type=int, default=None, help="at most this many files per class (smoke tests)"
    )
    parser.add_argument("--out", type=Path, default=Path("training_choices"))
    parser.add_argument(
        "--previous",
        type=Path,
        default=None,
        help="training_choices.json of an earlier run on the same split: its rows come first in the table",
    )
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    result: dict[str, Any] = {
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, keras "
        f"{keras.__version__} on {keras.backend.backend()}",
        "load_before": " ".join(f"{x:.1f}" for x in os.getloadavg()),
        "seed": args.seed,
        "epochs": args.epochs,
        "batch_size": args.batch_size,
        "rows": [],
    }
    started = time.perf_counter()
    ts = build_training_set(
        folder_sources(args.data, args.limit), classes=CLASS_NAMES, image_size=64,
        window=Window(40.0, 400.0), grouping=GroupingParams(), fractions=SplitFractions(),
        seed=args.seed, latest_fraction=0.15,
    )  # fmt: skip
    result["split_seconds"] = time.perf_counter() - started
    cache = {64: ts.images}
    labels = ts.label_indices()
    groups = [i.group for i in ts.manifest.items]
    train_idx = ts.indices("train")
    held_out = {name: ts.indices(name) for name in HELD_OUT}
    result["train_images"] = len(train_idx)
    result["sets"] = {
        n: {"images": len(idx), "groups": len({groups[i] for i in idx})} for n, idx in held_out.items()
    }
    baselines: dict[str, dict[str, np.ndarray]] = {}
    result["baselines"] = {}
    for name, idx in held_out.items():
        t0 = time.perf_counter()
        baselines[name] = baseline_probabilities(
            ts.images[train_idx], labels[train_idx], ts.images[idx], len(CLASS_NAMES)
        )
        seconds = time.perf_counter() - t0
        for b, probs in baselines[name].items():
            entry = result["baselines"].setdefault(b, {"seconds": 0.0})
            entry["seconds"] += seconds
            entry[name] = scores(labels[idx], probs, [groups[i] for i in idx], None)
    if args.previous is not None:
        previous = json.loads(args.previous.read_text())
        if (previous["seed"], previous["train_images"], previous["sets"]) != (
            args.seed,
            result["train_images"],
            result["sets"],
        ):
            raise SystemExit(f"{args.previous} was measured on another split")
        result["rows"] = previous["rows"]
        result["load_before"] = previous["load_before"]
    print(markdown(result), flush=True)
    for choice in args.configs:
        result["rows"].append(measure(choice, ts, train_idx, held_out, baselines, args=args, cache=cache))
        result["load_after"] = " ".join(f"{x:.1f}" for x in os.getloadavg())
        result["wall_seconds"] = time.perf_counter() - started
        (args.out / "training_choices.json").write_text(json.dumps(result, indent=2))
        (args.out / "training_choices.md").write_text(markdown(result))
        print(markdown(result), flush=True)


if __name__ == "__main__":
    main()
