"""Rebuild a notebook's fine-tuned ResNet50 from its file: the seed's "Functional-API reconstruction".

The stored graph is never deserialized. The architecture comes from `classifier.model.network.build_model`
(pooling, activations and input size read from the file's config as data, or stated for a
weights-only file: `training.file_architecture`, which refuses what the builder cannot reproduce);
then every tensor is copied by layer name and shape: the base's layers by their ResNet50 names,
the head's two Dense layers by their order (notebooks leave them auto-named `dense`, `dense_1`, ...).
A tensor of the file that nothing takes, a variable of the model that nothing fills, or a shape
that differs is refused, each one named; so nothing random remains in a rebuilt model.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import keras
import numpy as np

from classifier.model.network import HEAD_LAYERS, build_model, get_base
from common.vocabulary import CLASS_NAMES
from training.file_architecture import ImportRefused, Stated, leaf_layers, read_architecture, read_source
from training.h5_weights import SourceWeights, auto_names

__all__ = ["ImportRefused", "ImportSpec", "Rebuilt", "read_source", "rebuild"]


@dataclass(frozen=True)
class ImportSpec:
    """What the file does not say (or what the user insists on); None: not said.

    A full model's config says pooling, activation and input size; a weights-only file needs every
    one stated (`training.file_architecture.from_statement`), the class order included.
    """

    source_classes: tuple[str, ...] | None = None  # the order of the file's outputs
    image_size: int | None = None
    head: str | None = None  # the pooling: avg | flatten | max
    activation: str | None = None  # of the output layer: softmax | sigmoid | linear
    normalization: str = "caffe"
    dropout: float = 0.4

    def stated(self) -> Stated:
        return Stated(
            pooling=self.head,
            activation=self.activation,
            image_size=self.image_size,
            classes=self.source_classes,
        )


@dataclass
class Rebuilt:
    model: keras.Model
    head: str
    image_size: int
    source: dict[str, Any] = field(default_factory=dict)  # what the file was, for the model card
    tensors_copied: int = 0
    source_classes: tuple[str, ...] = CLASS_NAMES  # the order of the file's outputs
    preprocessing_layers: list[str] = field(default_factory=list)  # the file's, before its base


def rebuild(path: str | Path, spec: ImportSpec, source: SourceWeights | None = None) -> Rebuilt:
    """Read `path` (or use `source`, read already), rebuild the model it holds and copy its tensors in;
    `ImportRefused` on any misfit, in words before any tensor is compared."""
    source = source if source is not None else read_source(path)
    arch = read_architecture(source, spec.stated())
    head_layers = _head_layers(source)
    if arch.pooling is None or arch.image_size is None:
        raise ImportRefused(f"{source.path.name} does not say its pooling or input size: state them")
    model = build_model(
        image_size=arch.image_size,
        weights=None,
        dropout=spec.dropout,
        num_classes=len(CLASS_NAMES),
        head=arch.pooling,
        normalization=spec.normalization,
    )
    base = get_base(model)
    if source.format in ("keras3-weights-h5", "keras-v3"):
        _rename_auto(source, base)
        head_layers = _head_layers(source)
    classes = arch.classes or CLASS_NAMES
    copied = _copy(model, source, head_layers, classes)
    return Rebuilt(
        model=model,
        head=arch.pooling,
        image_size=arch.image_size,
        source={**_describe(source, head_layers), "architecture": arch.as_dict()},
        tensors_copied=copied,
        source_classes=classes,
        preprocessing_layers=list(arch.preprocessing_layers),
    )


# --- what the file says -----------------------------------------------------------------------
def _head_layers(source: SourceWeights) -> list[str]:
    """Layers with tensors that are not ResNet50's (`conv*`), in file order: the head's Dense layers."""
    return [name for name in source.layers_with_weights() if not _is_resnet_layer(name)]


def _is_resnet_layer(name: str) -> bool:
    return name.startswith(("conv", "batch_normalization"))


def _rename_auto(source: SourceWeights, base: keras.Model) -> None:
    """Keras 3 weight files name layers by class and counter: give the base's layers their names."""
    mapping = auto_names([(type(layer).__name__, layer.name) for layer in base.layers])
    renamed: dict[str, np.ndarray] = {}
    for key, value in source.tensors.items():
        layer, kind = key.rsplit("/", 1)
        renamed[f"{mapping.get(layer, layer)}/{kind}"] = value
    source.tensors = renamed
    source.layer_names = [mapping.get(n, n) for n in source.layer_names]


# --- copying ---------------------------------------------------------------------------------
def _copy(model: keras.Model, source: SourceWeights, head_layers: list[str], classes: Sequence[str]) -> int:
    """Assign every variable of `model` from `source`, or refuse naming every misfit."""
    problems: list[str] = []
    plan: list[tuple[Any, np.ndarray]] = []
    used: set[str] = set()
    for layer in get_base(model).layers:
        for variable in layer.weights:
            _plan_one(plan, problems, used, source, variable, f"{layer.name}/{variable.name}")
    dense_512, predictions = (model.get_layer(name) for name in (HEAD_LAYERS[1], HEAD_LAYERS[3]))
    if len(head_layers) != 2:
        problems.append(
            f"the head has {len(head_layers)} layer(s) with weights ({', '.join(head_layers) or 'none'}); "
            "expected 2: Dense(512) then Dense(classes)"
        )
    else:
        perm = _class_permutation(classes, source, head_layers[1])
        for variable in dense_512.weights:
            _plan_one(plan, problems, used, source, variable, f"{head_layers[0]}/{variable.name}")
        for variable in predictions.weights:
            key = f"{head_layers[1]}/{variable.name}"
            _plan_one(plan, problems, used, source, variable, key, columns=perm)
    unmapped = [key for key in source.tensors if key not in used]
    if len(head_layers) != 2:
        unmapped = [k for k in unmapped if k.rsplit("/", 1)[0] not in head_layers]
    problems.extend(f"{key}: in the file, but no layer of the rebuilt model takes it" for key in unmapped)
    if problems:
        raise ImportRefused(
            f"{source.path} does not fit the rebuilt ResNet50 ({len(problems)} problem(s))", problems
        )
    filled = {id(variable) for variable, _ in plan}
    empty = [v.path for v in model.weights if id(v) not in filled]
    if empty:  # cannot happen while base and head are all covered above; never leave randomness
        raise ImportRefused("variables of the rebuilt model were left unfilled", empty)
    for variable, value in plan:
        variable.assign(value.astype(variable.dtype))
    return len(plan)


def _plan_one(
    plan: list[tuple[Any, np.ndarray]],
    problems: list[str],
    used: set[str],
    source: SourceWeights,
    variable: Any,
    key: str,
    columns: list[int] | None = None,
) -> None:
    value = source.tensors.get(key)
    if value is None:
        problems.append(f"{key}: the rebuilt model needs it ({tuple(variable.shape)}), the file lacks it")
        return
    used.add(key)
    if columns is not None and value.ndim >= 1 and value.shape[-1] == len(columns):
        value = value[..., columns]
    if tuple(value.shape) != tuple(variable.shape):
        problems.append(
            f"{key}: shape {tuple(value.shape)} in the file, {tuple(variable.shape)} in the rebuilt model"
        )
        return
    plan.append((variable, value))


def _class_permutation(source_classes: Sequence[str], source: SourceWeights, output_layer: str) -> list[int]:
    """Column j of our output is column perm[j] of the file's (classes reordered to `CLASS_NAMES`)."""
    kernel = source.tensors.get(f"{output_layer}/kernel")
    n = int(kernel.shape[-1]) if kernel is not None else len(source_classes)
    if n != len(source_classes):
        raise ImportRefused(
            f"the file's output layer {output_layer} has {n} classes, but {len(source_classes)} are expected "
            f"({', '.join(source_classes)}); give --classes in the notebook's order"
        )
    return [list(source_classes).index(name) for name in CLASS_NAMES]


def _describe(source: SourceWeights, head_layers: list[str]) -> dict[str, Any]:
    model_class = source.config.get("class_name") if source.config else None
    pooled_inside = any(
        class_name == "GlobalAveragePooling2D" and cfg.get("name") == "avg_pool"
        for class_name, cfg, _ in leaf_layers(source.config)
    )
    return {
        "file": source.path.name,
        "format": source.format,
        "keras_version": source.keras_version,
        "full_model": source.full_model,
        "model_class": model_class,
        "nested_base": source.nested_in[0] if source.nested_in else None,
        "base_pooling_avg": pooled_inside,
        "head_layers": head_layers,
    }
