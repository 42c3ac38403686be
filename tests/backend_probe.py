"""Exercise the model, artifact, preprocessing, training and Grad-CAM code under ONE Keras backend.

Run as a subprocess with KERAS_BACKEND set (Keras picks its backend at import, so one process can
only ever test one):

    KERAS_BACKEND=jax python tests/backend_probe.py --reference DIR --work DIR --out result.npz

`--reference` is an artifact directory: when it holds no artifact yet, this run builds a seeded
model at 32 px and saves it there, so later runs under other backends load the very same weights.
Every check that can be decided inside one backend is asserted here (the process exits non-zero);
the numbers to compare across backends go to `--out` for `tests/integration/test_backends.py`.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # run as a script: make the repository's packages importable
    sys.path.insert(0, str(REPO))

IMAGE_SIZE = 32  # the smallest ResNet50 input; the backend question does not depend on the size
DICOM_SOURCE = "CT_small.dcm"  # a real CT slice shipped inside pydicom itself
N_SYNTHETIC = 3
TRAIN_IMAGES = 8


def probe_inputs() -> np.ndarray:
    """A real DICOM slice through the full preprocessing, plus seeded synthetic slices: [4, S, S, 3]."""
    from pydicom.data import get_testdata_file

    from classifier.model.preprocess import KIDNEY_WINDOW, dicom_to_frames, to_model_input

    frames = dicom_to_frames(get_testdata_file(DICOM_SOURCE), KIDNEY_WINDOW)
    real = to_model_input(frames, IMAGE_SIZE)
    rng = np.random.default_rng(7)
    synthetic = rng.uniform(0, 255, (N_SYNTHETIC, IMAGE_SIZE, IMAGE_SIZE, 3)).astype(np.float32)
    return np.concatenate([real, synthetic])


def train_images() -> np.ndarray:
    """Seeded one-channel training slices [N, S, S, 1] in [0, 255]."""
    rng = np.random.default_rng(3)
    return rng.uniform(0, 255, (TRAIN_IMAGES, IMAGE_SIZE, IMAGE_SIZE, 1)).astype(np.float32)


def calibrate_head(model, images: np.ndarray) -> None:  # type: ignore[no-untyped-def]
    """Scale Dense(512)'s kernel so the largest logit on `images` is about 2.

    A random ResNet50 has no ImageNet BatchNorm statistics, so its features are huge and the softmax
    saturates: probabilities of exactly 0 and 1 compare equal across backends whatever the maths,
    and clipped cross-entropy has zero gradients, so training would move nothing. The biases are
    zero at initialisation, so scaling the kernel scales the logits by the same factor.
    """
    from classifier.report.gradcam import feature_model, head_logits, head_weights

    features = np.asarray(feature_model(model).predict(images, verbose=0), dtype=np.float64)
    logits, _ = head_logits(features, head_weights(model))
    dense = model.get_layer("dense_512")
    dense.kernel.assign(keras_numpy(dense.kernel) * (2.0 / np.abs(logits).max()))


def keras_numpy(variable) -> np.ndarray:  # type: ignore[no-untyped-def]
    import keras

    return np.array(keras.ops.convert_to_numpy(variable))


def weights_of(layer) -> list[np.ndarray]:  # type: ignore[no-untyped-def]
    return [keras_numpy(v) for v in layer.weights]


def changed(before: list[np.ndarray], after: list[np.ndarray]) -> bool:
    return any(not np.array_equal(b, a) for b, a in zip(before, after, strict=True))


WATCHED = {  # layer -> where it lives; what each phase may and may not move
    "head": ("predictions", False),
    "conv5": ("conv5_block3_3_conv", True),
    "conv1": ("conv1_conv", True),
    "bn5": ("conv5_block3_3_bn", True),
}


def watched_weights(model) -> dict[str, list[np.ndarray]]:  # type: ignore[no-untyped-def]
    from classifier.model.network import get_base

    base = get_base(model)
    return {
        name: weights_of(base.get_layer(layer) if in_base else model.get_layer(layer))
        for name, (layer, in_base) in WATCHED.items()
    }


def train_one_phase(reference: Path, phase: int) -> tuple[list[float], list[str]]:
    """One epoch of `phase` on tiny augmented data from the reference weights: (losses, moved layers).

    Each phase starts from the calibrated reference: after a step at phase 1's learning rate a
    random base's huge features saturate the softmax again, and a saturated phase 2 moves nothing
    on any backend (clipped cross-entropy), which would hide whether phase 2 trains at all.
    """
    from classifier.model.artifact import load_artifact
    from training.data import AugmentConfig, Augmenter, ImageSequence
    from training.fit import FitConfig, fit_two_phase

    model, _ = load_artifact(reference)
    images, labels = train_images(), np.arange(TRAIN_IMAGES) % 4
    train = ImageSequence(
        images,
        labels,
        num_classes=4,
        batch_size=4,
        shuffle=True,
        seed=0,
        augmenter=Augmenter(AugmentConfig(), seed=0),
    )
    before = watched_weights(model)
    config = FitConfig(epochs_phase1=int(phase == 1), epochs_phase2=int(phase == 2), batch_size=4, verbose=0)
    fit = fit_two_phase(model, train=train, train_labels=labels, val=None, num_classes=4, config=config)
    after = watched_weights(model)
    moved = sorted(name for name in WATCHED if changed(before[name], after[name]))
    return fit.phases[0].history["loss"], moved


def train_two_phases(reference: Path, result: dict) -> None:
    """Both fine-tuning phases train exactly the layers they should, with finite losses."""
    result["phase1_loss"], result["moved_phase1"] = train_one_phase(reference, 1)
    result["phase2_loss"], result["moved_phase2"] = train_one_phase(reference, 2)
    losses = result["phase1_loss"] + result["phase2_loss"]
    assert all(np.isfinite(losses)), f"non-finite training loss {losses}"
    # Phase 1 trains the head only; phase 2 also conv5; conv1 and BatchNorm never move.
    assert result["moved_phase1"] == ["head"], result["moved_phase1"]
    assert result["moved_phase2"] == ["conv5", "head"], result["moved_phase2"]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--reference", type=Path, required=True, help="artifact directory to load (made if empty)"
    )
    parser.add_argument("--work", type=Path, required=True, help="scratch directory for this backend")
    parser.add_argument("--out", type=Path, required=True, help="where to write the results (.npz)")
    args = parser.parse_args()

    import keras

    from classifier.model.artifact import CARD_FILE, load_artifact, read_card, save_artifact
    from classifier.model.network import build_model
    from classifier.report.gradcam import grad_cam

    result: dict = {"backend": keras.backend.backend(), "keras_version": keras.__version__}
    if not (args.reference / CARD_FILE).exists():
        keras.utils.set_random_seed(0)
        reference = build_model(image_size=IMAGE_SIZE, weights=None)
        calibrate_head(reference, np.concatenate([probe_inputs(), train_images()[:, :, :, [0, 0, 0]]]))
        save_artifact(reference, args.reference, {"version": "probe"})
    result["reference_backend"] = read_card(args.reference).backend

    inputs = probe_inputs()
    model, card = load_artifact(args.reference, expected_image_size=IMAGE_SIZE)
    probs = np.asarray(model.predict(inputs, verbose=0), dtype=np.float64)
    assert probs.shape == (len(inputs), 4), probs.shape
    assert np.allclose(probs.sum(axis=1), 1.0, atol=1e-5), probs.sum(axis=1)
    # A calibrated head keeps the softmax away from 0 and 1, so the cross-backend comparison means something.
    assert probs.min() > 1e-3, probs

    # Save under this backend and load back: the round trip must not change a single probability.
    own = save_artifact(model, args.work / "artifact", {"version": "roundtrip"})
    assert own.backend == keras.backend.backend(), own.backend
    reloaded, _ = load_artifact(args.work / "artifact", expected_sha256=own.weights_sha256)
    roundtrip = np.asarray(reloaded.predict(inputs, verbose=0), dtype=np.float64)
    result["roundtrip_max_abs_diff"] = float(np.abs(roundtrip - probs).max())
    assert result["roundtrip_max_abs_diff"] == 0.0, result["roundtrip_max_abs_diff"]

    cam = grad_cam(model, inputs)
    softmax = np.exp(cam.logits - cam.logits.max(axis=1, keepdims=True))
    softmax /= softmax.sum(axis=1, keepdims=True)
    result["gradcam_vs_predict_max_abs_diff"] = float(np.abs(softmax - probs).max())
    assert result["gradcam_vs_predict_max_abs_diff"] < 1e-4, result["gradcam_vs_predict_max_abs_diff"]
    assert cam.heatmaps.shape == (len(inputs), IMAGE_SIZE, IMAGE_SIZE), cam.heatmaps.shape
    assert cam.heatmaps.min() >= 0.0 and cam.heatmaps.max() <= 1.0
    assert np.array_equal(cam.class_index, probs.argmax(axis=1))

    train_two_phases(args.reference, result)

    args.out.parent.mkdir(parents=True, exist_ok=True)
    np.savez(
        args.out,
        inputs=inputs,
        probs=probs,
        logits=cam.logits,
        heatmaps=cam.heatmaps,
        meta=np.array(json.dumps(result)),
    )
    print(json.dumps(result))


if __name__ == "__main__":
    main()
