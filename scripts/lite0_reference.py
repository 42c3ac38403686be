"""EfficientNet-Lite0's forward pass in plain numpy, straight from the source's torch state dict.

Written apart from the Keras port (`classifier.model.lite0`): no Keras, no layer names, no weight
transposes shared with it. It follows the source (a lukemelas-style EfficientNet with Lite's
changes): TensorFlow "SAME" padding (the source's Conv2dStaticSamePadding: the extra row and column
of an odd total go at the bottom and right), convolutions computed on (out, in, kh, kw) kernels as
given, BatchNorm with eps 1e-3, ReLU6, no squeeze-excitation, a residual add where a block keeps
its shape. Slow and exact (float64): the yardstick `scripts/verify_lite0.py` and the unit tests
compare the port with.
"""

from __future__ import annotations

import math

import numpy as np

EPS = 1e-3
# Each of the 16 blocks' stride (EfficientNet-B0's table: the state dict holds no strides).
STRIDES = (1, 2, 1, 2, 1, 2, 1, 1, 1, 1, 1, 2, 1, 1, 1, 1)


def _same_pad(x: np.ndarray, kernel: int, stride: int) -> np.ndarray:
    """x [N, H, W, C] padded as TensorFlow's SAME: total max((ceil(H/s)-1)*s+k-H, 0), the odd one after."""
    pads = []
    for size in x.shape[1:3]:
        total = max((math.ceil(size / stride) - 1) * stride + kernel - size, 0)
        pads.append((total // 2, total - total // 2))
    return np.pad(x, ((0, 0), pads[0], pads[1], (0, 0)))


def _patches(x: np.ndarray, kernel: int, stride: int) -> np.ndarray:
    """[N, OH, OW, kh, kw, C] windows of the SAME-padded input."""
    p = _same_pad(x, kernel, stride)
    n, h, w, c = p.shape
    oh, ow = (h - kernel) // stride + 1, (w - kernel) // stride + 1
    s = p.strides
    return np.lib.stride_tricks.as_strided(
        p,
        shape=(n, oh, ow, kernel, kernel, c),
        strides=(s[0], s[1] * stride, s[2] * stride, s[1], s[2], s[3]),
        writeable=False,
    )


def conv(x: np.ndarray, weight: np.ndarray, stride: int = 1) -> np.ndarray:
    """A dense convolution, weight [out, in, kh, kw] (torch's layout), no bias."""
    return np.einsum("nhwijc,ocij->nhwo", _patches(x, weight.shape[2], stride), weight, optimize=True)


def depthwise(x: np.ndarray, weight: np.ndarray, stride: int) -> np.ndarray:
    """A depthwise convolution, weight [C, 1, kh, kw]."""
    return np.einsum("nhwijc,cij->nhwc", _patches(x, weight.shape[2], stride), weight[:, 0], optimize=True)


def batch_norm(x: np.ndarray, sd: dict[str, np.ndarray], prefix: str) -> np.ndarray:
    g, b = sd[f"{prefix}.weight"], sd[f"{prefix}.bias"]
    mean, var = sd[f"{prefix}.running_mean"], sd[f"{prefix}.running_var"]
    return (x - mean) / np.sqrt(var + EPS) * g + b


def relu6(x: np.ndarray) -> np.ndarray:
    return np.clip(x, 0.0, 6.0)


def block(x: np.ndarray, sd: dict[str, np.ndarray], index: int) -> np.ndarray:
    p = f"_blocks.{index}"
    h = x
    if f"{p}._expand_conv.weight" in sd:
        h = relu6(batch_norm(conv(h, sd[f"{p}._expand_conv.weight"]), sd, f"{p}._bn0"))
    h = relu6(batch_norm(depthwise(h, sd[f"{p}._depthwise_conv.weight"], STRIDES[index]), sd, f"{p}._bn1"))
    h = batch_norm(conv(h, sd[f"{p}._project_conv.weight"]), sd, f"{p}._bn2")
    if STRIDES[index] == 1 and h.shape == x.shape:
        h = h + x
    return h


def features(x: np.ndarray, sd: dict[str, np.ndarray]) -> np.ndarray:
    """Normalised input [N, H, W, 3] -> the head's [N, h, w, 1280] feature maps (float64)."""
    sd = {k: v.astype(np.float64) for k, v in sd.items()}
    h = relu6(batch_norm(conv(x.astype(np.float64), sd["_conv_stem.weight"], 2), sd, "_bn0"))
    for index in range(len(STRIDES)):
        h = block(h, sd, index)
    return relu6(batch_norm(conv(h, sd["_conv_head.weight"]), sd, "_bn1"))


def pooled_and_logits(x: np.ndarray, sd: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """(average-pooled features [N, 1280], ImageNet logits [N, 1000]) of a normalised input."""
    pooled = features(x, sd).mean(axis=(1, 2))
    return pooled, pooled @ sd["_fc.weight"].T.astype(np.float64) + sd["_fc.bias"]
