"""The deterministic-kernel variables the trainer sets before the backend is imported."""

from __future__ import annotations

from training.determinism import XLA_DETERMINISM_FLAG, determinism_status, prefer_determinism


def test_every_backend_gets_its_determinism_variable() -> None:
    """An empty environment gets TensorFlow's, cuBLAS's and XLA's switches, and the status records them."""
    env: dict[str, str] = {}
    prefer_determinism(env)
    assert env["TF_DETERMINISTIC_OPS"] == "1"
    assert env["CUBLAS_WORKSPACE_CONFIG"] == ":4096:8"
    assert env["XLA_FLAGS"] == XLA_DETERMINISM_FLAG
    assert determinism_status(env)["TF_DETERMINISTIC_OPS"] == "1"


def test_a_site_setting_is_kept_and_other_xla_flags_survive() -> None:
    """A variable the site set (e.g. determinism off for speed) stays; XLA flags are appended to, not replaced."""
    env = {"TF_DETERMINISTIC_OPS": "0", "XLA_FLAGS": "--xla_force_host_platform_device_count=2"}
    prefer_determinism(env)
    assert env["TF_DETERMINISTIC_OPS"] == "0"
    assert env["XLA_FLAGS"] == f"--xla_force_host_platform_device_count=2 {XLA_DETERMINISM_FLAG}"
    prefer_determinism(env)  # twice: no second copy
    assert env["XLA_FLAGS"].count("xla_gpu_deterministic_ops") == 1


def test_it_says_when_it_comes_too_late() -> None:
    """Once a backend is imported the variables can no longer apply, and the function says so."""
    import keras  # noqa: F401  (the point: a backend is loaded)

    assert prefer_determinism({}) is False
