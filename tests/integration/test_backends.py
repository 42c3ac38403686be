"""The classifier and trainer under every installed Keras backend, on the same weights and inputs.

Keras picks its backend once, at import, so each backend runs `tests/backend_probe.py` in its own
subprocess. The first backend builds the reference artifact; every backend loads it, predicts on a
real DICOM slice and synthetic ones, round-trips an artifact, runs Grad-CAM and one epoch of each
training phase (the probe asserts all that), and the probabilities must agree across backends.

Self-contained (no conftest fixtures), so the GPU check runs it with `--noconftest` on a machine
without Kafka, PostgreSQL or TensorFlow: there, JAX is compared with PyTorch.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from importlib.util import find_spec
from pathlib import Path

import numpy as np
import pytest

PROBE = Path(__file__).resolve().parents[1] / "backend_probe.py"
BACKENDS = ("tensorflow", "jax", "torch")
# Installed by the `dev` extra, so CI must have them; torch is only checked where it is installed.
REQUIRED_IN_CI = ("tensorflow", "jax")
PROBABILITY_TOLERANCE = 1e-4
PROBE_TIMEOUT_S = 900

pytestmark = pytest.mark.slow


def installed_backends() -> list[str]:
    return [name for name in BACKENDS if find_spec(name) is not None]


def run_probe(backend: str, reference: Path, work: Path) -> dict:
    """Run the probe under `backend`; its arrays and its JSON summary."""
    out = work / f"{backend}.npz"
    env = {**os.environ, "KERAS_BACKEND": backend}
    proc = subprocess.run(
        [
            sys.executable,
            str(PROBE),
            "--reference",
            str(reference),
            "--work",
            str(work / backend),
            "--out",
            str(out),
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=PROBE_TIMEOUT_S,
    )
    assert proc.returncode == 0, f"{backend} probe failed:\n{proc.stdout[-4000:]}\n{proc.stderr[-8000:]}"
    with np.load(out) as data:
        result = {key: data[key] for key in data.files}
    result["meta"] = json.loads(str(result["meta"]))
    return result


@pytest.fixture(scope="module")
def backend_results(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict]:
    """Every installed backend's probe results, the first one having built the reference artifact."""
    in_ci = os.environ.get("CI", "").lower() in {"1", "true", "yes"}
    missing = [name for name in REQUIRED_IN_CI if find_spec(name) is None]
    if in_ci and missing:
        pytest.fail(f"CI=true and Keras backends {missing} are not installed (the dev extra has them)")
    backends = installed_backends()
    if len(backends) < 2:
        pytest.skip(f"need two Keras backends to compare, found {backends}")
    root = tmp_path_factory.mktemp("backends")
    return {name: run_probe(name, root / "reference", root) for name in backends}


def test_every_backend_reports_itself_and_loads_the_reference(backend_results: dict[str, dict]) -> None:
    """Each subprocess really ran its own backend and loaded the first backend's artifact."""
    first = next(iter(backend_results))
    for name, result in backend_results.items():
        assert result["meta"]["backend"] == name
        assert result["meta"]["reference_backend"] == first


def test_inputs_are_identical_across_backends(backend_results: dict[str, dict]) -> None:
    """DICOM decoding, windowing and resizing are numpy/PIL only: bit-identical under every backend."""
    results = list(backend_results.values())
    for other in results[1:]:
        np.testing.assert_array_equal(other["inputs"], results[0]["inputs"])


def test_probabilities_agree_across_backends(backend_results: dict[str, dict]) -> None:
    """Same weights, same inputs: the softmax outputs agree to 1e-4 and pick the same classes."""
    names = list(backend_results)
    reference = backend_results[names[0]]["probs"]
    assert reference.min() > 1e-3  # not saturated, or agreement would prove nothing
    for name in names[1:]:
        probs = backend_results[name]["probs"]
        diff = float(np.abs(probs - reference).max())
        assert diff < PROBABILITY_TOLERANCE, f"{name} vs {names[0]}: max |dp| = {diff:.2e}"
        np.testing.assert_array_equal(probs.argmax(axis=1), reference.argmax(axis=1))


def test_gradcam_logits_agree_across_backends(backend_results: dict[str, dict]) -> None:
    """Grad-CAM's feature maps and head logits agree across backends, and so do its heat maps."""
    names = list(backend_results)
    first = backend_results[names[0]]
    for name in names[1:]:
        np.testing.assert_allclose(backend_results[name]["logits"], first["logits"], atol=1e-3, rtol=1e-4)
        np.testing.assert_allclose(backend_results[name]["heatmaps"], first["heatmaps"], atol=1e-3)


def test_both_training_phases_train_under_every_backend(backend_results: dict[str, dict]) -> None:
    """Phase 1 moves only the head and phase 2 also conv5, with finite losses, on every backend."""
    for name, result in backend_results.items():
        meta = result["meta"]
        assert meta["moved_phase1"] == ["head"], name
        assert meta["moved_phase2"] == ["conv5", "head"], name
        assert all(np.isfinite(meta["phase1_loss"] + meta["phase2_loss"])), name
