"""What a model file says about its architecture, read as data, and whether the server can reproduce it.

A full `.h5` stores its graph as JSON (`model_config`), a `.keras` archive as `config.json`: both are
read here as plain data, never deserialized into layers. From them come the backbone, the pooling of
its feature maps, the head's layers and activations, the input size and, where the file has them,
the class names. A weights-only file says none of this: the person importing it states pooling,
activation, input size and classes (`stated`), and what its tensors do show (the backbone, the width
of the first Dense layer) is checked against that. Everything the builder (`classifier.model.network`:
ResNet50 -> average pooling or Flatten -> Dense(512, relu) -> Dropout -> Dense(classes, softmax))
cannot reproduce is refused in a sentence naming it. Nothing here imports Keras, so a wrong file is
answered before TensorFlow loads.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from common.vocabulary import CLASS_NAMES
from training.h5_weights import SourceWeights, WeightsFileError, read_config, read_weights

SERVED_BACKBONE = "ResNet50"
HIDDEN_UNITS = 512  # the builder's Dense(512)
POOLINGS = ("avg", "flatten", "max")  # what a person may state; only avg and flatten can be served
ACTIVATIONS = ("softmax", "sigmoid", "linear")
BASE_FEATURES = 2048  # channels of ResNet50's last block
RESNET50_CONVOLUTIONS = 53
_POOLING_CLASSES = {"GlobalAveragePooling2D": "avg", "GlobalMaxPooling2D": "max", "Flatten": "flatten"}
_HEAD_CLASSES = {"Dense", "Dropout", "Activation", "Softmax"}
_CONTAINERS = {"Functional", "Model", "Sequential"}
_PIXEL_CLASSES = {"Rescaling", "Normalization", "Lambda", "TFOpLambda", "SlicingOpLambda", "Resizing"}
_RESNET_BLOCK = re.compile(r"^conv(\d)_block(\d+)_")
_RESNET_DEPTHS: dict[tuple[int, ...], str] = {
    (3, 4, 6, 3): "ResNet50",
    (3, 4, 23, 3): "ResNet101",
    (3, 8, 36, 3): "ResNet152",
}
_DENSENET_DEPTHS: dict[tuple[int, ...], str] = {
    (6, 12, 24, 16): "DenseNet121",
    (6, 12, 32, 32): "DenseNet169",
    (6, 12, 48, 32): "DenseNet201",
}
_CONVOLUTIONS = {53: "ResNet50", 104: "ResNet101", 155: "ResNet152"}  # Conv2D layers, for Keras 3 weights


class ImportRefused(Exception):
    """The file does not fit the rebuilt architecture; `problems` names every misfit."""

    MAX_LISTED = 12  # problems named in one message; the rest are counted

    def __init__(self, summary: str, problems: Sequence[str] = ()) -> None:
        self.problems = list(problems)
        listed = "; ".join(self.problems[: self.MAX_LISTED])
        extra = len(self.problems) - self.MAX_LISTED
        more = f" (and {extra} more)" if extra > 0 else ""
        super().__init__(f"{summary}: {listed}{more}" if self.problems else summary)


@dataclass(frozen=True)
class Stated:
    """What the person importing says (None: not said); a weights-only file needs every one."""

    pooling: str | None = None
    activation: str | None = None
    image_size: int | None = None
    classes: tuple[str, ...] | None = None


@dataclass(frozen=True)
class DenseLayer:
    name: str
    units: int | None
    activation: str


@dataclass
class Architecture:
    """The file's architecture as far as it says; `said_by` tells where each part came from."""

    backbone: str | None = None  # "ResNet50", "ResNet101", "MobileNetV2", ... or None: unknown
    pooling: str | None = None
    dense: list[DenseLayer] = field(default_factory=list)
    output_activation: str | None = None
    image_size: int | None = None
    classes: tuple[str, ...] | None = None
    other_layers: list[str] = field(default_factory=list)  # head layers the builder has no place for
    preprocessing_layers: list[str] = field(default_factory=list)  # layers that may transform the pixels
    said_by: str = "config"  # config | stated

    def as_dict(self) -> dict[str, Any]:
        return {
            "backbone": self.backbone,
            "pooling": self.pooling,
            "dense": [(d.units, d.activation) for d in self.dense],
            "output_activation": self.output_activation,
            "image_size": self.image_size,
            "classes": list(self.classes) if self.classes else None,
            "said_by": self.said_by,
        }


def refuse_by_config(path: str | Path) -> None:
    """Refuse a full model file the server cannot reproduce from its config alone, before any tensor is
    read (a ResNet101 file is hundreds of MB): the quick answer of `models import`."""
    config = read_config(path)
    if config is not None:
        problems = refusals(from_config(config))
        if problems:
            raise ImportRefused(f"{Path(path).name} cannot be served as it is", problems)


def read_source(path: str | Path) -> SourceWeights:
    """The file's tensors and config (h5py only); `ImportRefused` when it is no Keras file."""
    try:
        source = read_weights(path)
    except WeightsFileError as exc:
        raise ImportRefused(str(exc)) from exc
    if not source.tensors:
        raise ImportRefused(f"{path} holds no tensors")
    return source


# --- reading a stored config as data ---------------------------------------------------------------
def leaf_layers(config: Any) -> Iterator[tuple[str, dict[str, Any], list[str]]]:
    """(class name, config, containers) of every layer that is not a model, in stored order."""
    yield from _leaves(config, [])


def _leaves(entry: Any, containers: list[str]) -> Iterator[tuple[str, dict[str, Any], list[str]]]:
    if isinstance(entry, list):
        for item in entry:
            yield from _leaves(item, containers)
        return
    if not isinstance(entry, dict):
        return
    cfg = entry.get("config")
    if "class_name" not in entry or not isinstance(cfg, dict):
        for value in entry.values():
            yield from _leaves(value, containers)
        return
    if entry["class_name"] in _CONTAINERS or isinstance(cfg.get("layers"), list):
        name = str(cfg.get("name") or entry.get("name") or entry["class_name"])
        yield from _leaves(cfg.get("layers", []), [*containers, name])
        return
    yield str(entry["class_name"]), cfg, containers


def _activation(value: Any) -> str:
    """A stored activation: a name, or a serialized object whose config names it."""
    if isinstance(value, dict):
        inner = value.get("config")
        value = inner.get("name") if isinstance(inner, dict) else value.get("class_name")
    return str(value or "linear").lower()


def input_size(config: Any) -> int | None:
    for _, cfg, _ in leaf_layers(config):
        shape = cfg.get("batch_input_shape") or cfg.get("batch_shape")
        if isinstance(shape, list) and len(shape) == 4 and shape[1] and shape[1] == shape[2]:
            return int(shape[1])
    return None


def from_config(config: dict[str, Any], class_names: Sequence[str] | None = None) -> Architecture:
    """The architecture a stored model config describes."""
    leaves = [(c, cfg) for c, cfg, _ in leaf_layers(config) if c != "InputLayer"]
    start = next((i for i, (c, _) in enumerate(leaves) if c in _POOLING_CLASSES), None)
    base = leaves if start is None else leaves[:start]
    head = [] if start is None else leaves[start:]
    if start is None:  # no pooling: the head is whatever Dense-like layers end the model
        while base and base[-1][0] in _HEAD_CLASSES:
            head.insert(0, base.pop())
    arch = Architecture(
        backbone=backbone_of_names([str(cfg.get("name", "")) for _, cfg in base]),
        pooling=None if start is None else _POOLING_CLASSES[leaves[start][0]],
        image_size=input_size(config),
        classes=tuple(class_names) if class_names else None,
        preprocessing_layers=[f"{c} {cfg.get('name')!r}" for c, cfg in base if c in _PIXEL_CLASSES],
    )
    for class_name, cfg in head[1:] if start is not None else head:
        _read_head_layer(arch, class_name, cfg)
    return arch


def _read_head_layer(arch: Architecture, class_name: str, cfg: dict[str, Any]) -> None:
    name = str(cfg.get("name", class_name))
    if class_name == "Dense":
        units = cfg.get("units")
        dense = DenseLayer(
            name, int(units) if units is not None else None, _activation(cfg.get("activation"))
        )
        arch.dense.append(dense)
        arch.output_activation = dense.activation
    elif class_name == "Activation" and arch.dense:
        arch.output_activation = _activation(cfg.get("activation"))
    elif class_name == "Softmax" and arch.dense:
        arch.output_activation = "softmax"
    elif class_name != "Dropout":
        arch.other_layers.append(f"{class_name} {name!r}")


def backbone_of_names(names: Sequence[str]) -> str | None:
    """Which keras.applications base these layer names belong to; None when none is recognised."""
    if not names:
        return None
    joined = " ".join(names)
    blocks: dict[int, int] = {}
    for name in names:
        match = _RESNET_BLOCK.match(name)
        if match:
            stage, block = int(match.group(1)), int(match.group(2))
            blocks[stage] = max(blocks.get(stage, 0), block)
    depths = tuple(blocks.get(stage, 0) for stage in (2, 3, 4, 5))
    if "_concat" in joined or "pool2_conv" in joined:
        return _DENSENET_DEPTHS.get(depths, "a DenseNet")
    if blocks:
        resnet = _RESNET_DEPTHS.get(depths, f"a ResNet with {sum(depths)} blocks")
        return f"{resnet}V2" if "preact" in joined and resnet in _RESNET_DEPTHS.values() else resnet
    return _other_family(names, joined)


def _other_family(names: Sequence[str], joined: str) -> str | None:
    if "expanded_conv" in joined:
        return (
            "MobileNetV3" if "expanded_conv_project_bn" in joined and "multiply" in joined else "MobileNetV2"
        )
    if "conv_dw_1" in joined:
        return "MobileNet"
    if "block1_conv1" in joined:
        return "VGG19" if "block5_conv4" in joined else "VGG16"
    if "stem_conv" in joined:
        return "an EfficientNet"
    if any(n.startswith(("block35", "mixed")) for n in names):
        return "an Inception network"
    return None


def backbone_of_weights(source: SourceWeights) -> str | None:
    """The base as a weights-only file's tensors show it: by layer names, or by counting convolutions."""
    names = [*source.layer_names, *(key.rsplit("/", 1)[0] for key in source.tensors)]
    said = backbone_of_names(names)
    if said is not None:
        return said
    stems = [re.sub(r"_\d+$", "", name) for name in source.layer_names]
    if "depthwise_conv2d" in stems:
        return "a network with depthwise convolutions (MobileNet or EfficientNet)"
    convolutions = stems.count("conv2d")
    if convolutions:
        return _CONVOLUTIONS.get(convolutions, f"a network with {convolutions} convolution layers")
    return None


# --- the weights-only file: what the person states, checked against the tensors ----------------------
def from_statement(source: SourceWeights, stated: Stated) -> Architecture:
    """The architecture of a weights-only file, from `stated`; refuses when something is not stated."""
    missing = [
        flag
        for flag, value in (
            ("--pooling avg|flatten|max", stated.pooling),
            ("--activation softmax|sigmoid|linear", stated.activation),
            ("--image-size N", stated.image_size),
            ("--classes A,B,C,D", stated.classes),
        )
        if value is None
    ]
    if missing:
        raise ImportRefused(
            f"{source.path.name} holds weights only: it does not say how its features are pooled, which "
            "activation its output uses, what input size it takes or in which order its classes are; "
            f"state them: {', '.join(missing)}"
        )
    return Architecture(
        backbone=backbone_of_weights(source),
        pooling=stated.pooling,
        output_activation=stated.activation,
        image_size=stated.image_size,
        classes=stated.classes,
        said_by="stated",
    )


# --- what the builder can reproduce ------------------------------------------------------------------
def refusals(arch: Architecture) -> list[str]:
    """One sentence per part of `arch` the served model cannot reproduce (empty: it can be served)."""
    problems: list[str] = []
    if arch.backbone is not None and arch.backbone != SERVED_BACKBONE:
        problems.append(f"only {SERVED_BACKBONE} can be served; this file holds {arch.backbone}")
    if arch.pooling == "max":
        problems.append(
            "the file pools the base's feature maps with global max pooling (GlobalMaxPooling2D, "
            "pooling='max'); the served model pools by average or Flatten, which gives other outputs"
        )
    elif arch.said_by == "config" and arch.pooling is None:
        problems.append("the file has no pooling layer (GlobalAveragePooling2D or Flatten) after its base")
    problems.extend(_activation_refusals(arch))
    if arch.other_layers:
        problems.append(
            f"the head holds {', '.join(arch.other_layers)}, which the served head "
            f"(Dense({HIDDEN_UNITS}, relu) -> Dropout -> Dense(classes, softmax)) has no place for"
        )
    return problems


def _activation_refusals(arch: Architecture) -> list[str]:
    problems: list[str] = []
    output = arch.output_activation
    if output == "sigmoid":
        problems.append(
            "the output layer uses sigmoid: its outputs are independent per class and need not sum to 1; "
            "the served model applies softmax to the same layer, which gives other probabilities"
        )
    elif output in ("linear", None) and (arch.dense or arch.said_by == "stated"):
        problems.append(
            "the output layer has no activation (linear logits); the served model outputs softmax probabilities"
        )
    elif output is not None and output != "softmax":
        problems.append(f"the output layer uses {output}; the served model uses softmax")
    if arch.said_by == "config" and len(arch.dense) != 2:
        described = ", ".join(f"Dense({d.units}, {d.activation})" for d in arch.dense) or "none"
        problems.append(
            f"the head has {len(arch.dense)} Dense layer(s) ({described}); the served head has two: "
            f"Dense({HIDDEN_UNITS}, relu) then Dense(classes, softmax)"
        )
    elif arch.dense:
        hidden = arch.dense[0]
        if hidden.units != HIDDEN_UNITS or hidden.activation != "relu":
            problems.append(
                f"the head's first Dense layer is Dense({hidden.units}, {hidden.activation}); "
                f"the served head's is Dense({HIDDEN_UNITS}, relu)"
            )
    return problems


def parse_classes(text: str | None) -> tuple[str, ...] | None:
    """`--classes` (comma-separated, the notebook's output order) as our class names; None: not given."""
    if not text:
        return None
    by_lower = {c.lower(): c for c in CLASS_NAMES}
    names = [part.strip() for part in text.split(",") if part.strip()]
    unknown = [n for n in names if n.lower() not in by_lower]
    if unknown:
        raise ImportRefused(f"--classes names {unknown}, which are not among {list(CLASS_NAMES)}")
    resolved = tuple(by_lower[n.lower()] for n in names)
    if len(set(resolved)) != len(resolved):
        raise ImportRefused(f"--classes repeats a class: {names}")
    if set(resolved) != set(CLASS_NAMES):
        missing = sorted(set(CLASS_NAMES) - set(resolved))
        raise ImportRefused(
            f"the model must output the {len(CLASS_NAMES)} classes {list(CLASS_NAMES)}; --classes lacks {missing}"
        )
    return resolved


def check_classes(arch: Architecture, stated: tuple[str, ...] | None) -> tuple[str, ...]:
    """The order of the file's outputs: stated, or the file's own names, or (full models only) ours."""
    if arch.classes is not None and stated is not None and tuple(stated) != arch.classes:
        raise ImportRefused(
            f"--classes {','.join(stated)} contradicts the file, whose classes are {','.join(arch.classes)}"
        )
    order = stated or arch.classes or CLASS_NAMES
    output = arch.dense[-1].units if arch.dense else None
    if output is not None and output != len(order):
        raise ImportRefused(
            f"the file's output layer has {output} classes, but {len(order)} are expected "
            f"({', '.join(order)}); give --classes in the notebook's order"
        )
    return tuple(order)


def check_tensors(arch: Architecture, source: SourceWeights) -> list[str]:
    """What the tensors show against what was stated: the first Dense layer's width fixes the pooling."""
    rows = _first_dense_rows(source)
    if rows is None or arch.pooling is None:
        return []
    if arch.pooling in ("avg", "max") and rows != BASE_FEATURES:
        return [
            f"--pooling {arch.pooling} gives {BASE_FEATURES} features, but the head's first Dense layer takes "
            f"{rows}: the file pools with Flatten (or was trained at another size)"
        ]
    if arch.pooling == "flatten" and arch.image_size is not None:
        side = arch.image_size // 32
        if rows != side * side * BASE_FEATURES:
            return [
                f"--pooling flatten at --image-size {arch.image_size} gives {side * side * BASE_FEATURES} "
                f"features, but the head's first Dense layer takes {rows}"
            ]
    return []


def _first_dense_rows(source: SourceWeights) -> int | None:
    for key, value in source.tensors.items():
        layer = key.rsplit("/", 1)[0]
        if key.endswith("/kernel") and value.ndim == 2 and not layer.startswith(("conv", "batch_norm")):
            return int(value.shape[0])
    return None


def read_architecture(source: SourceWeights, stated: Stated) -> Architecture:
    """The file's architecture (its config, or what is stated for weights only); `ImportRefused` if it
    cannot be served, every reason in words."""
    if source.config is not None:
        arch = from_config(source.config, source.class_names)
        for flag, said, given in (
            ("--pooling", arch.pooling, stated.pooling),
            ("--activation", arch.output_activation, stated.activation),
            ("--image-size", arch.image_size, stated.image_size),
        ):
            if given is not None and said is not None and given != said:
                raise ImportRefused(f"{flag} {given} contradicts the file, which says {said}")
    else:
        arch = from_statement(source, stated)  # an unknown base: the tensor copy names every misfit
    problems = refusals(arch)
    if source.config is None and arch.backbone in (None, SERVED_BACKBONE):  # another base: said already
        problems += check_tensors(arch, source)
    if problems:
        raise ImportRefused(f"{source.path.name} cannot be served as it is", problems)
    arch.classes = check_classes(arch, stated.classes)
    return arch
