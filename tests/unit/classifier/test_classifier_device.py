"""Device strings and pinning."""

from __future__ import annotations

import pytest

from classifier.model.device import Device, DeviceError, device_environment, parse_device, pin_device


def test_parse_cpu_and_gpu() -> None:
    """`cpu` and `gpu:N` parse; whitespace and case do not matter."""
    assert parse_device("cpu") == Device("cpu")
    assert parse_device(" GPU:3 ") == Device("gpu", 3)
    assert str(parse_device("gpu:0")) == "gpu:0"


@pytest.mark.parametrize("text", ["gpu", "gpu:-1", "cuda:0", "tpu:0", ""])
def test_bad_device_strings_are_refused(text: str) -> None:
    """Anything but `cpu` or `gpu:N` is a clear error."""
    with pytest.raises(DeviceError, match="cpu"):
        parse_device(text)


def test_gpu_n_exposes_only_that_gpu() -> None:
    """gpu:2 sets CUDA_VISIBLE_DEVICES to 2, which every backend honours."""
    assert device_environment(Device("gpu", 2)) == {"CUDA_VISIBLE_DEVICES": "2"}


def test_cpu_hides_every_gpu() -> None:
    """cpu hides all GPUs from CUDA and from JAX."""
    assert device_environment(Device("cpu")) == {"CUDA_VISIBLE_DEVICES": "-1", "JAX_PLATFORMS": "cpu"}


def test_pinning_after_keras_import_is_refused() -> None:
    """Once keras is imported the devices are enumerated: pinning then is an error."""
    import keras  # noqa: F401

    env: dict[str, str] = {}
    with pytest.raises(DeviceError, match="before importing"):
        pin_device(Device("gpu", 0), env)
    assert env == {}


def test_prefer_onednn_sets_a_default_and_respects_an_explicit_choice() -> None:
    """oneDNN is asked for unless the environment already says otherwise; the answer says if it can apply."""
    import sys

    from classifier.model.device import prefer_onednn

    env: dict[str, str] = {}
    applies = prefer_onednn(env)
    assert env == {"TF_ENABLE_ONEDNN_OPTS": "1"}
    assert applies == ("tensorflow" not in sys.modules)
    explicit = {"TF_ENABLE_ONEDNN_OPTS": "0"}
    prefer_onednn(explicit)
    assert explicit == {"TF_ENABLE_ONEDNN_OPTS": "0"}
