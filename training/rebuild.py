"""Rebuild a notebook's fine-tuned ResNet50 from its file: the seed's "Functional-API reconstruction".

The stored graph is never deserialized. The architecture comes from `classifier.model.build_model`
(head and input size read from the file's config, its layer names or its tensor shapes, or given);
then every tensor is copied by layer name and shape: the base's layers by their ResNet50 names,
the head's two Dense layers by their order (notebooks leave them auto-named `dense`, `dense_1`, ...).
A tensor of the file that nothing takes, a variable of the model that nothing fills, or a shape
that differs is refused, each one named; so nothing random remains in a rebuilt model.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import keras
import numpy as np

from classifier.model import HEAD_LAYERS, HEADS, build_model, get_base
from common.vocabulary import CLASS_NAMES
from training.h5_weights import SourceWeights, WeightsFileError, auto_names, read_weights

BASE_FEATURES = 2048  # channels of ResNet50's last block
MAX_LISTED = 12  # problems named in one error message; the rest are counted


class ImportRefused(Exception):
    """The file does not fit the rebuilt architecture; `problems` names every misfit."""

    def __init__(self, summary: str, problems: Sequence[str] = ()) -> None:
        self.problems = list(problems)
        listed = "; ".join(self.problems[:MAX_LISTED])
        more = f" (and {len(self.problems) - MAX_LISTED} more)" if len(self.problems) > MAX_LISTED else ""
        super().__init__(f"{summary}: {listed}{more}" if self.problems else summary)


@dataclass(frozen=True)
class ImportSpec:
    """What the file does not say (or what the user insists on)."""

    source_classes: tuple[str, ...] = CLASS_NAMES  # the order of the file's outputs
    image_size: int | None = None  # None: from the file, else `default_image_size`
    default_image_size: int = 224
    head: str | None = None  # None: from the file
    normalization: str = "caffe"
    dropout: float = 0.4


@dataclass
class Rebuilt:
    model: keras.Model
    head: str
    image_size: int
    source: dict[str, Any] = field(default_factory=dict)  # what the file was, for the model card
    tensors_copied: int = 0


def rebuild(path: str | Path, spec: ImportSpec) -> Rebuilt:
    """Read `path`, rebuild the model it holds and copy its tensors in; `ImportRefused` on any misfit."""
    try:
        source = read_weights(path)
    except WeightsFileError as exc:
        raise ImportRefused(str(exc)) from exc
    if not source.tensors:
        raise ImportRefused(f"{path} holds no tensors")
    head_layers = _head_layers(source)
    head = _choose_head(source, spec, head_layers)
    image_size = _choose_image_size(source, spec, head, head_layers)
    model = build_model(
        image_size=image_size,
        weights=None,
        dropout=spec.dropout,
        num_classes=len(CLASS_NAMES),
        head=head,
        normalization=spec.normalization,
    )
    base = get_base(model)
    if source.format in ("keras3-weights-h5", "keras-v3"):
        _rename_auto(source, base)
        head_layers = _head_layers(source)
    copied = _copy(model, source, head_layers, spec)
    return Rebuilt(
        model=model,
        head=head,
        image_size=image_size,
        source=_describe(source, head_layers),
        tensors_copied=copied,
    )


# --- what the file says -----------------------------------------------------------------------
def _config_layers(config: Any) -> Iterator[dict[str, Any]]:
    """Every layer entry of a stored model config, nested models included (read as JSON data)."""
    if isinstance(config, dict):
        if "class_name" in config and isinstance(config.get("config"), dict):
            yield config
        for value in config.values():
            yield from _config_layers(value)
    elif isinstance(config, list):
        for value in config:
            yield from _config_layers(value)


def _config_input_size(config: dict[str, Any] | None) -> int | None:
    for layer in _config_layers(config):
        cfg = layer["config"]
        shape = cfg.get("batch_input_shape") or cfg.get("batch_shape")
        if isinstance(shape, list) and len(shape) == 4 and shape[1] and shape[1] == shape[2]:
            return int(shape[1])
    return None


def _file_head(source: SourceWeights) -> str | None:
    """`flatten` or `avg` as the file's config or layer names say; None when they say nothing."""
    classes = {layer["class_name"] for layer in _config_layers(source.config)}
    names = [n.lower() for n in source.layer_names]
    if "Flatten" in classes or any(n.startswith("flatten") for n in names):
        return "flatten"
    if "GlobalAveragePooling2D" in classes or any(
        n.startswith(("global_average_pooling", "avg_pool")) for n in names
    ):
        return "avg"
    return None


def _head_layers(source: SourceWeights) -> list[str]:
    """Layers with tensors that are not ResNet50's (`conv*`), in file order: the head's Dense layers."""
    return [name for name in source.layers_with_weights() if not _is_resnet_layer(name)]


def _is_resnet_layer(name: str) -> bool:
    return name.startswith(("conv", "batch_normalization"))


def _choose_head(source: SourceWeights, spec: ImportSpec, head_layers: list[str]) -> str:
    said = _file_head(source)
    if spec.head is not None:
        if spec.head not in HEADS:
            raise ImportRefused(f"--head must be one of {HEADS}, got {spec.head!r}")
        if said is not None and said != spec.head:
            raise ImportRefused(f"--head {spec.head} contradicts the file, whose head is {said}")
        return spec.head
    if said is not None:
        return said
    rows = _first_kernel_rows(source, head_layers)
    return "flatten" if rows is not None and rows > BASE_FEATURES else "avg"


def _first_kernel_rows(source: SourceWeights, head_layers: list[str]) -> int | None:
    kernel = source.tensors.get(f"{head_layers[0]}/kernel") if head_layers else None
    return int(kernel.shape[0]) if kernel is not None and kernel.ndim == 2 else None


def _choose_image_size(source: SourceWeights, spec: ImportSpec, head: str, head_layers: list[str]) -> int:
    said = _config_input_size(source.config)
    if spec.image_size is not None:
        if said is not None and said != spec.image_size:
            raise ImportRefused(f"--image-size {spec.image_size} contradicts the file, which takes {said} px")
        return spec.image_size
    if said is not None:
        return said
    rows = _first_kernel_rows(source, head_layers)
    if head == "flatten" and rows is not None and rows % BASE_FEATURES == 0:
        side = round((rows // BASE_FEATURES) ** 0.5)
        if side * side * BASE_FEATURES == rows:
            return 32 * side  # ResNet50 reduces 32x; the Flatten kernel fixes the feature map's side
    return spec.default_image_size


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
def _copy(model: keras.Model, source: SourceWeights, head_layers: list[str], spec: ImportSpec) -> int:
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
        perm = _class_permutation(spec.source_classes, source, head_layers[1])
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
        layer["class_name"] == "GlobalAveragePooling2D" and layer["config"].get("name") == "avg_pool"
        for layer in _config_layers(source.config)
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
