"""Pin a worker process to one device, before any deep-learning backend is imported.

`gpu:N` exposes only GPU N to the process (CUDA_VISIBLE_DEVICES), which every backend honours
(TensorFlow, JAX, PyTorch), and the process then sees it as its only GPU. `cpu` hides all GPUs.
This must run before `keras` is imported: afterwards the backend has already enumerated devices.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Callable, MutableMapping
from dataclasses import dataclass

from classifier.model.backend_gpus import visible_gpus

BACKEND_MODULES = ("keras", "tensorflow", "jax", "torch")
_DEVICE = re.compile(r"^(cpu|gpu:(\d+))$")


class DeviceError(ValueError):
    """A device string that is not `cpu` or `gpu:N`, or pinning too late."""


@dataclass(frozen=True, slots=True)
class Device:
    kind: str  # "cpu" or "gpu"
    index: int | None = None

    def __str__(self) -> str:
        return "cpu" if self.kind == "cpu" else f"gpu:{self.index}"


def parse_device(text: str) -> Device:
    match = _DEVICE.match(text.strip().lower())
    if match is None:
        raise DeviceError(f"device must be `cpu` or `gpu:N`, got {text!r}")
    if match.group(1) == "cpu":
        return Device("cpu")
    return Device("gpu", int(match.group(2)))


def device_environment(device: Device) -> dict[str, str]:
    """The environment variables that pin a process to `device`."""
    if device.kind == "cpu":
        # "-1" hides every GPU from CUDA; JAX also needs to be told not to look for one.
        return {"CUDA_VISIBLE_DEVICES": "-1", "JAX_PLATFORMS": "cpu"}
    return {"CUDA_VISIBLE_DEVICES": str(device.index)}


def pin_device(device: Device, environ: MutableMapping[str, str]) -> None:
    """Write `device`'s variables into `environ`; refuse once a backend is already imported."""
    loaded = [name for name in BACKEND_MODULES if name in sys.modules]
    if loaded:
        raise DeviceError(f"pin the device before importing {', '.join(loaded)}")
    environ.update(device_environment(device))


# TensorFlow's default CPU kernels for convolution gradients (Eigen) cost time in proportion to the
# filter size, whatever the image size: on this project's AVX2 CPU a training step that reaches
# conv5 (512x512x3x3 and 2048-channel 1x1 filters) took ~5 s at 96 px as at 224 px. TensorFlow
# enables its oneDNN kernels by default only on CPUs with AVX-512 VNNI/AMX; with them the same step
# is ~4x faster. Other backends ignore the variable.
ONEDNN_ENVIRONMENT = {"TF_ENABLE_ONEDNN_OPTS": "1"}


def prefer_onednn(environ: MutableMapping[str, str]) -> bool:
    """Ask TensorFlow for oneDNN CPU kernels unless the environment already decides; True if it can apply.

    Must run before TensorFlow is imported (it reads the variable once); returns False afterwards.
    """
    for name, value in ONEDNN_ENVIRONMENT.items():
        environ.setdefault(name, value)
    return "tensorflow" not in sys.modules


def require_device(device: Device, backend: str, count_gpus: Callable[[str], int] = visible_gpus) -> None:
    """Refuse `gpu:N` when the backend sees no GPU, instead of silently running on the CPU."""
    if device.kind != "gpu":
        return
    if count_gpus(backend) < 1:
        raise DeviceError(
            f"{device} was asked for, but the {backend} backend sees no GPU there: check that GPU "
            f"{device.index} exists (nvidia-smi -L) and that a GPU build is installed (pip install '.[gpu]')"
        )
