"""How many GPUs a Keras backend sees: the one place the classifier asks a backend library directly.

Keras 3 has no backend-neutral way to list physical devices, so each backend is asked in its own
terms, importing only the library of the backend that runs (tests/unit/test_backends_static.py
allows this file by name).
"""

from __future__ import annotations


def visible_gpus(backend: str) -> int:
    """How many GPUs the Keras backend sees (after pinning)."""
    if backend == "tensorflow":
        import tensorflow as tf

        return len(tf.config.list_physical_devices("GPU"))
    if backend == "jax":
        import jax

        return sum(1 for d in jax.devices() if d.platform == "gpu")
    if backend == "torch":
        import torch

        return int(torch.cuda.device_count())
    return 0
