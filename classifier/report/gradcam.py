"""Grad-CAM heat maps for the classifier, backend-agnostic.

Grad-CAM weighs the last convolutional feature maps A_k by the spatial mean of d(logit_c)/dA_k.
Our head is global average pooling (or Flatten) -> Dense(512, relu) -> Dropout -> Dense(softmax),
so that gradient has a closed form: with p = mean(A) (or p = flatten(A)) and z = W1 p + b1, it is
W1 (relu'(z) * W2[:, c]) divided by h w at every position (or, for Flatten, that vector reshaped to
h x w x K, one gradient per position). We therefore need only the feature maps (one `predict` of
the base, run by whichever backend Keras uses) and the head's weights as numpy arrays: no
GradientTape, no jax.grad, no autograd, and exactly the Grad-CAM of the paper (dropout is off at
inference). Every model `classifier.model.network.build_model` makes, imported ones included, has this form.
"""

from __future__ import annotations

from dataclasses import dataclass

import keras
import numpy as np
from PIL import Image

from classifier.model.network import HEAD_LAYERS, PREPROCESS_NAME, get_base, head_of

# Below 2x2 the last feature map has one position: the "heat map" is one uniform tint.
MIN_FEATURE_SIDE = 2


def too_small_for_heatmaps(model: keras.Model) -> str | None:
    """Why Grad-CAM maps of `model` would say nothing (its last feature map is 1x1), or None.

    ResNet50 downsamples 32x: at 32 px the map is 1x1, at 64 px 2x2. (Going back to an earlier
    block would need real gradients through conv5, which the closed form here avoids.)
    """
    h, w = feature_model(model).output_shape[1:3]
    if h is not None and w is not None and min(h, w) < MIN_FEATURE_SIDE:
        size = model.input_shape[1]
        return (
            f"at {size} px the last feature map is {h}x{w}, so each Grad-CAM map would be one uniform tint; "
            f"train at --image-size {32 * MIN_FEATURE_SIDE} or more for heat maps"
        )
    return None


@dataclass(frozen=True, slots=True)
class GradCam:
    heatmaps: np.ndarray  # [N, S, S] in [0, 1], upsampled to the input size
    logits: np.ndarray  # [N, classes], the head's pre-softmax scores
    class_index: np.ndarray  # [N], the class each map explains


def feature_model(model: keras.Model) -> keras.Model:
    """Input pixels -> the base's last feature maps, sharing the model's layers and weights."""
    inputs = keras.Input(shape=model.input_shape[1:], name="pixels")
    x = model.get_layer(PREPROCESS_NAME)(inputs)
    x = get_base(model)(x, training=False)
    return keras.Model(inputs, x, name="gradcam_features")


def head_weights(model: keras.Model) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    dense, out = model.get_layer(HEAD_LAYERS[1]), model.get_layer(HEAD_LAYERS[3])
    w1, b1 = (keras.ops.convert_to_numpy(v).astype(np.float64) for v in dense.weights)
    w2, b2 = (keras.ops.convert_to_numpy(v).astype(np.float64) for v in out.weights)
    return w1, b1, w2, b2


def head_logits(
    features: np.ndarray, weights: tuple[np.ndarray, ...], head: str = "avg"
) -> tuple[np.ndarray, np.ndarray]:
    """(logits, hidden pre-activation) of the head for feature maps [N, h, w, K]."""
    w1, b1, w2, b2 = weights
    f = features.astype(np.float64)
    pooled = f.reshape(len(f), -1) if head == "flatten" else f.mean(axis=(1, 2))
    z = pooled @ w1 + b1
    return np.maximum(z, 0.0) @ w2 + b2, z


def logit_gradient(
    features: np.ndarray, weights: tuple[np.ndarray, ...], class_index: np.ndarray, head: str = "avg"
) -> np.ndarray:
    """Grad-CAM's channel weights: the spatial mean of d(logit_c)/dA, [N, K]."""
    w1, _, w2, _ = weights
    _, z = head_logits(features, weights, head)
    n, h, w, k = features.shape
    upstream = (z > 0) * w2[:, class_index].T  # [N, 512]
    if head == "flatten":  # one gradient per position: average them
        return (upstream @ w1.T).reshape(n, h, w, k).mean(axis=(1, 2))
    return (upstream @ w1.T) / float(h * w)  # the same at every position


def grad_cam(
    model: keras.Model,
    images: np.ndarray,
    class_index: np.ndarray | None = None,
    features_of: keras.Model | None = None,
) -> GradCam:
    """Heat maps of `images` ([N, S, S, 3] model input) for `class_index` (default: the predicted class).

    `features_of` is `feature_model(model)` built once by a caller that explains many batches (the
    worker), so its predict function is traced once."""
    extractor = features_of if features_of is not None else feature_model(model)
    features = np.asarray(extractor.predict_on_batch(images), dtype=np.float64)
    weights = head_weights(model)
    head = head_of(model)
    logits, _ = head_logits(features, weights, head)
    chosen = logits.argmax(axis=1) if class_index is None else np.asarray(class_index, dtype=np.int64)
    alpha = logit_gradient(features, weights, chosen, head)  # [N, K]
    cams = np.maximum(np.einsum("nhwk,nk->nhw", features, alpha), 0.0)
    size = images.shape[1]
    maps = np.empty((len(images), size, size), dtype=np.float32)
    for i, cam in enumerate(cams):
        peak = cam.max()
        scaled = (cam / peak if peak > 0 else cam).astype(np.float32)
        maps[i] = np.asarray(
            Image.fromarray(scaled, mode="F").resize((size, size), Image.Resampling.BILINEAR)
        )
    return GradCam(heatmaps=np.clip(maps, 0.0, 1.0), logits=logits, class_index=chosen)
