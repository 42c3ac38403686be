"""Notebook-style model files for the import tests, written by tf-keras (Keras 2) or Keras 3.

Run as a script in its own process (`python tests/model_files_kit.py tf_keras|keras DIR`): tf-keras
and Keras 3 are different packages, and a test process that has built Keras 3 models should not
also build tf-keras ones. For every shape it writes the full model (`<shape>.h5`), its weights only
(`<shape>_w.h5` for tf-keras, `<shape>.weights.h5` for Keras 3; Keras 3 also `<shape>.keras`), and
the original's own predictions (`<shape>.npy`) on `inputs(size)` fed as the notebook fed them. Random weights with fixed seeds; BatchNorm statistics are randomised too, so a
tensor copied to the wrong place cannot go unnoticed.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

# shape -> (input size, head, normalization, class order, number of classes)
SHAPES: dict[str, tuple[int, str, str, list[str]]] = {
    "gap": (32, "avg", "caffe", ["Cyst", "Normal", "Stone", "Tumor"]),
    "flatten": (64, "flatten", "rescale", ["Cyst", "Normal", "Stone", "Tumor"]),
    "seq": (32, "avg", "tf", ["Tumor", "Stone", "Normal", "Cyst"]),
    "pool": (32, "avg", "torch", ["Cyst", "Normal", "Stone", "Tumor"]),
}
THREE_CLASSES = "three"  # a 3-class model, for the refusal tests
# Issue 24's table: models of a shape the server cannot reproduce, each of which must be refused in
# words (`python tests/model_files_kit.py WRITER DIR foreign`). shape -> (input size, normalization).
FOREIGN: dict[str, tuple[int, str]] = {
    # ResNet50(pooling="max") -> Dense(512) -> Dropout -> Dense(4); 64 px: at 32 px the feature map is
    # 1x1, where max and average pooling are the same thing
    "maxpool": (64, "caffe"),
    "sigmoid": (32, "caffe"),  # the seed's head with a sigmoid output
    "resnet101": (32, "caffe"),
    "mobilenetv2": (32, "tf"),
    "seed": (32, "caffe"),  # the seed's own shape, servable: for the acceptance and class-order tests
}


def inputs(size: int, n: int = 16) -> np.ndarray:
    """Raw [0, 255] pixels that differ in structure, as CT slices do (gradients, a bright or dark disk,
    noise), gray replicated to RGB as the workers feed, the first four in colour. Noise alone would
    give a random network nearly the same features for every input."""
    rng = np.random.default_rng(size)
    yy, xx = np.mgrid[0:size, 0:size] / (size - 1)
    x = np.empty((n, size, size, 3), dtype=np.float32)
    for i in range(n):
        a, b, c = rng.uniform(-1, 1, 3)
        cy, cx, r, level = (
            rng.uniform(0.2, 0.8),
            rng.uniform(0.2, 0.8),
            rng.uniform(0.1, 0.4),
            rng.uniform(-1, 1),
        )
        disk = level * (((yy - cy) ** 2 + (xx - cx) ** 2) < r * r)
        gray = np.clip(
            0.5 + 0.5 * (a * xx + b * yy) + 0.3 * c + 0.5 * disk + rng.normal(0, 0.05, xx.shape), 0, 1
        )
        gains = rng.uniform(0.3, 1.0, 3) if i < 4 else np.ones(3)
        x[i] = 255.0 * gray[..., None] * gains
    return x


def _normalize(k: Any, x: np.ndarray, mode: str) -> np.ndarray:
    """What the notebook did to the pixels, with the writer's own functions."""
    if mode == "caffe":
        return np.asarray(k.applications.resnet50.preprocess_input(x.copy()))
    if mode == "torch":
        return np.asarray(k.applications.imagenet_utils.preprocess_input(x.copy(), mode="torch"))
    if mode == "tf":
        return x / 127.5 - 1.0
    return x / 255.0  # rescale


def _randomise_batchnorm(k: Any, model: Any, rng: np.random.Generator) -> None:
    for layer in _all_layers(model):
        if isinstance(layer, k.layers.BatchNormalization):
            gamma, beta, mean, var = (np.asarray(w) for w in layer.get_weights())
            layer.set_weights(
                [
                    rng.uniform(0.5, 1.5, gamma.shape),
                    rng.normal(0.0, 0.1, beta.shape),
                    rng.normal(0.0, 0.1, mean.shape),
                    rng.uniform(0.5, 1.5, var.shape),
                ]
            )


def _all_layers(model: Any) -> list[Any]:
    out = []
    for layer in model.layers:
        out.append(layer)
        if hasattr(layer, "layers"):
            out.extend(_all_layers(layer))
    return out


def build_foreign(k: Any, shape: str, size: int) -> Any:
    """A model of issue 24's table: the seed's head on another base, pooling or output activation."""
    layers = k.layers
    shape_in = (size, size, 3)
    if shape == "maxpool":
        base = k.applications.ResNet50(include_top=False, weights=None, input_shape=shape_in, pooling="max")
    elif shape == "resnet101":
        base = k.applications.ResNet101(include_top=False, weights=None, input_shape=shape_in, pooling="avg")
    elif shape == "mobilenetv2":
        base = k.applications.MobileNetV2(
            include_top=False, weights=None, input_shape=shape_in, pooling="avg"
        )
    else:
        base = k.applications.ResNet50(include_top=False, weights=None, input_shape=shape_in, pooling="avg")
    x = layers.Dropout(0.4)(layers.Dense(512, activation="relu")(base.output))
    activation = "sigmoid" if shape == "sigmoid" else "softmax"
    return k.Model(base.input, layers.Dense(4, activation=activation)(x))


def build(k: Any, shape: str, size: int, head: str, classes: int) -> Any:
    layers = k.layers
    pooled = shape == "pool"
    base = k.applications.ResNet50(
        include_top=False, weights=None, input_shape=(size, size, 3), pooling="avg" if pooled else None
    )
    if shape == "seq":
        return k.Sequential(
            [
                base,
                layers.GlobalAveragePooling2D(),
                layers.Dense(512, activation="relu"),
                layers.Dropout(0.4),
                layers.Dense(classes, activation="softmax"),
            ]
        )
    x = base.output
    if not pooled:
        x = layers.Flatten()(x) if head == "flatten" else layers.GlobalAveragePooling2D()(x)
    x = layers.Dense(512, activation="relu")(x)
    x = layers.Dropout(0.4)(x)
    return k.Model(base.input, layers.Dense(classes, activation="softmax")(x))


def _save(k: Any, writer: str, model: Any, out: Path, shape: str, fed: np.ndarray) -> None:
    np.save(out / f"{shape}.npy", np.asarray(model.predict(fed, verbose=0)))
    model.save(out / f"{shape}.h5")
    if writer == "tf_keras":
        model.save_weights(out / f"{shape}_w.h5")
    else:
        model.save_weights(out / f"{shape}.weights.h5")
        model.save(out / f"{shape}.keras")


def write_foreign(k: Any, writer: str, out: Path) -> None:
    for i, (shape, (size, mode)) in enumerate(FOREIGN.items()):
        if shape == "seed" and writer != "keras":
            continue
        k.utils.set_random_seed(200 + i)
        model = build_foreign(k, shape, size)
        _randomise_batchnorm(k, model, np.random.default_rng(50 + i))
        _save(k, writer, model, out, shape, _normalize(k, inputs(size), mode))


def write(writer: str, out: Path, which: str = "shapes") -> None:
    if writer == "tf_keras":
        import tf_keras as k
    else:
        import keras as k
    out.mkdir(parents=True, exist_ok=True)
    if which == "foreign":
        write_foreign(k, writer, out)
        (out / "done.json").write_text(json.dumps({"writer": writer, "keras_version": k.__version__}))
        return
    for i, (shape, (size, head, mode, classes)) in enumerate(
        [*SHAPES.items(), (THREE_CLASSES, SHAPES["gap"])]
    ):
        k.utils.set_random_seed(100 + i)
        n = 3 if shape == THREE_CLASSES else len(classes)
        model = build(k, shape if shape != THREE_CLASSES else "gap", size, head, n)
        _randomise_batchnorm(k, model, np.random.default_rng(i))
        x = inputs(size)
        _save(k, writer, model, out, shape, _normalize(k, x, mode))
    (out / "done.json").write_text(json.dumps({"writer": writer, "keras_version": k.__version__}))


if __name__ == "__main__":
    write(sys.argv[1], Path(sys.argv[2]), *sys.argv[3:4])
