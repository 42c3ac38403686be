"""The report's PNG figures, drawn with matplotlib's Agg backend (no display needed).

Each function draws one figure into one file and closes it, so a long training run does not
accumulate open figures.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # before pyplot: the trainer runs on headless machines

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402


def class_histogram(
    counts: Mapping[str, Mapping[str, int]], classes: Sequence[str], path: Path, title: str
) -> None:
    """Bars of images per class, one bar colour per split (`counts[split][class]`)."""
    fig, ax = plt.subplots(figsize=(7, 4))
    x = np.arange(len(classes))
    width = 0.8 / max(1, len(counts))
    for i, (split, per_class) in enumerate(counts.items()):
        values = [per_class.get(c, 0) for c in classes]
        bars = ax.bar(x + i * width - 0.4 + width / 2, values, width, label=split)
        ax.bar_label(bars, fontsize=7)
    ax.set_xticks(x, classes)
    ax.set_ylabel("images")
    ax.set_title(title)
    ax.margins(y=0.1)  # room for the count labels above the tallest bars
    # Below the axis, in one row: inside it, "best" still covered a bar when all bars are tall.
    ax.legend(
        loc="upper center", bbox_to_anchor=(0.5, -0.1), ncol=max(1, len(counts)), fontsize=8, frameon=False
    )
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def confusion(
    matrix: Sequence[Sequence[int]],
    classes: Sequence[str],
    path: Path,
    title: str,
    *,
    xlabel: str = "predicted",
    ylabel: str = "true",
) -> None:
    """The confusion matrix with counts in each cell; rows are the truth.

    Counts are white on the dark half of the colour scale and black on the light half, so every
    number stays readable.
    """
    m = np.asarray(matrix)
    fig, ax = plt.subplots(figsize=(4.8, 4.2))
    ax.imshow(m, cmap="Blues")
    ax.set_xticks(range(len(classes)), classes, rotation=30)
    ax.set_yticks(range(len(classes)), classes)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    peak = m.max() if m.size else 0
    for (r, c), value in np.ndenumerate(m):
        ax.text(c, r, str(value), ha="center", va="center", color="white" if value > peak / 2 else "black")
    ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def learning_curves(
    phases: Mapping[str, Mapping[str, Any]], path: Path, title: str, selected_epoch: int | None = None
) -> None:
    """Loss and accuracy per epoch of both phases on one axis, the phase boundary and the selected epoch marked."""
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    offset = 0
    for name, phase in phases.items():
        history = phase["history"]
        epochs = np.arange(1, len(history.get("loss", [])) + 1) + offset
        for ax, metric in zip(axes, ("loss", "accuracy"), strict=True):
            if metric == "accuracy" and history.get("val_balanced_accuracy"):
                ax.plot(
                    epochs,
                    history["val_balanced_accuracy"],
                    ":",
                    marker="s",
                    ms=3,
                    label=f"{name} val_balanced_accuracy (selects)",
                )
            for prefix, style in (("", "-"), ("val_", "--")):
                values = history.get(prefix + metric)
                if values:
                    ax.plot(
                        epochs, values, style, marker="o", ms=3, label=f"{name} {prefix or 'train_'}{metric}"
                    )
        if offset and len(epochs):
            for ax in axes:  # the boundary between the previous phase and this one
                ax.axvline(offset + 0.5, color="grey", lw=0.5, ls=":")
        offset += len(epochs)
    if selected_epoch is not None:
        for ax in axes:
            ax.axvline(selected_epoch, color="red", lw=1.2, ls="--", label=f"selected epoch {selected_epoch}")
    for ax, metric in zip(axes, ("loss", "accuracy"), strict=True):
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # epochs are whole numbers
        ax.set_xlabel("epoch (both phases)" if len(phases) > 1 else "epoch")
        ax.set_ylabel(metric)
        ax.legend(fontsize=7)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def gradcam_grid(
    images: np.ndarray,
    heatmaps: np.ndarray,
    captions: Sequence[str],
    path: Path,
    title: str,
    columns: int = 4,
) -> None:
    """Each image in grey with its heat map overlaid (jet, semi-transparent) and a caption."""
    n = len(images)
    rows = max(1, -(-n // columns))
    # Constrained layout reserves each caption's height above its image (tight_layout ignores the
    # titles of axes turned off, so second-row captions ran into the images above them).
    fig, axes = plt.subplots(
        rows, columns, figsize=(2.6 * columns, 2.9 * rows + 0.4), squeeze=False, layout="constrained"
    )
    for ax in axes.flat:
        ax.set_axis_off()
    for ax, image, heat, caption in zip(axes.flat, images, heatmaps, captions, strict=False):
        ax.imshow(image[..., 0] if image.ndim == 3 else image, cmap="gray", vmin=0, vmax=255)
        ax.imshow(heat, cmap="jet", alpha=0.35, vmin=0, vmax=1)
        ax.set_title(caption, fontsize=8, pad=4)
    fig.suptitle(title)
    fig.savefig(path, dpi=100)
    plt.close(fig)


def reliability_diagram(bins: Sequence[Mapping[str, Any]], path: Path, title: str, ece: float) -> None:
    """Accuracy against mean confidence per confidence bin (bar width: the bin), with counts; the diagonal is perfect."""
    fig, ax = plt.subplots(figsize=(5, 4.4))
    ax.plot([0, 1], [0, 1], color="grey", lw=1, ls="--", label="perfectly calibrated")
    for row in bins:
        if not row["count"]:
            continue
        width = row["high"] - row["low"]
        ax.bar(
            row["low"],
            row["accuracy"],
            width=width,
            align="edge",
            color="tab:blue",
            alpha=0.7,
            edgecolor="black",
            lw=0.5,
        )
        ax.plot(row["confidence"], row["accuracy"], "o", color="tab:red", ms=4)
        ax.text(
            row["low"] + width / 2,
            min(row["accuracy"] + 0.02, 0.95),
            str(row["count"]),
            ha="center",
            fontsize=7,
        )
    ax.plot([], [], "o", color="tab:red", ms=4, label="mean confidence of the bin")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_xlabel("top-class probability (confidence)")
    ax.set_ylabel("accuracy in the bin (n above the bar)")
    ax.set_title(f"{title}\nECE {ece:.3f}", fontsize=10)
    ax.legend(fontsize=7, loc="upper left")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
