"""Ask the deep-learning backend for deterministic kernels, before it is imported.

The trainer seeds everything it draws (`keras.utils.set_random_seed`, the data order and the
augmentation, `training.data`); what is left is the backend's choice of kernels. Some (TensorFlow's
GPU reductions, cuDNN's autotuned convolutions, XLA's GPU scatter) sum in an order that varies
between runs. The variables below make each backend pick deterministic kernels (or refuse an op
that has none) without a line of backend-specific code in the trainer. They are read once, when the
backend is imported, so this must run before `keras` is imported; a variable the environment
already sets is left as it is (a site may turn determinism off for speed).
"""

from __future__ import annotations

import sys
from collections.abc import MutableMapping

DETERMINISM_ENVIRONMENT = {
    # TensorFlow: the same as tf.config.experimental.enable_op_determinism().
    "TF_DETERMINISTIC_OPS": "1",
    # PyTorch's cuBLAS needs a fixed workspace to be deterministic (torch's own switch,
    # torch.use_deterministic_algorithms, is code: see docs/training.md, "Reproducible runs").
    "CUBLAS_WORKSPACE_CONFIG": ":4096:8",
}
XLA_DETERMINISM_FLAG = "--xla_gpu_deterministic_ops=true"  # JAX (and TF's XLA) on a GPU


def prefer_determinism(environ: MutableMapping[str, str]) -> bool:
    """Write the deterministic-kernel variables into `environ` unless it already decides.

    Returns whether they can still apply (no backend imported yet).
    """
    for name, value in DETERMINISM_ENVIRONMENT.items():
        environ.setdefault(name, value)
    xla = environ.get("XLA_FLAGS", "")
    if "xla_gpu_deterministic_ops" not in xla:
        environ["XLA_FLAGS"] = f"{xla} {XLA_DETERMINISM_FLAG}".strip()
    return not any(name in sys.modules for name in ("keras", "tensorflow", "jax", "torch"))


def determinism_status(environ: MutableMapping[str, str]) -> dict[str, str | None]:
    """What the run's report records: each variable as the process saw it."""
    return {name: environ.get(name) for name in (*DETERMINISM_ENVIRONMENT, "XLA_FLAGS")}
