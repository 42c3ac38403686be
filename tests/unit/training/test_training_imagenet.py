"""`train --weights imagenet` on an air-gapped machine: the missing file is named at once, with where it goes."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from training.imagenet import (
    WEIGHTS_FILE,
    ImagenetWeightsUnavailable,
    ensure_imagenet_weights,
    keras_cache_file,
)

UNREACHABLE = "https://127.0.0.1:9/weights.h5"  # the discard port: refused at once


def test_missing_and_unreachable_weights_name_the_file_and_the_folder(tmp_path: Path) -> None:
    """No cached file and no route to the download: an error naming the file, the folder and --weights PATH."""
    environ = {"KERAS_HOME": str(tmp_path / "keras")}
    started = time.monotonic()
    with pytest.raises(ImagenetWeightsUnavailable) as caught:
        ensure_imagenet_weights(environ=environ, url=UNREACHABLE, timeout_s=2.0)
    assert time.monotonic() - started < 10
    message = str(caught.value)
    assert WEIGHTS_FILE in message
    assert str(tmp_path / "keras" / "models" / WEIGHTS_FILE) in message
    assert "--weights /path/to/" in message


def test_a_copied_in_file_is_used_without_the_network(tmp_path: Path) -> None:
    """Once the file is in Keras' cache, no download is needed (the URL is never tried)."""
    environ = {"KERAS_HOME": str(tmp_path)}
    cached = keras_cache_file(environ)
    cached.parent.mkdir(parents=True)
    cached.write_bytes(b"weights")
    assert ensure_imagenet_weights(environ=environ, url=UNREACHABLE) == cached


def test_default_cache_is_under_the_home_folder() -> None:
    """Without KERAS_HOME Keras uses ~/.keras/models."""
    assert keras_cache_file({}) == Path("~/.keras/models").expanduser() / WEIGHTS_FILE


def test_weights_path_takes_a_copied_base_weights_file(tmp_path: Path) -> None:
    """`--weights PATH` loads a ResNet50 base weights file into the classifier's base, tensor for tensor."""
    import keras
    import numpy as np

    from classifier.model.network import get_base
    from training.run import make_model

    keras.utils.set_random_seed(4)
    base = keras.applications.ResNet50(include_top=False, weights=None, input_shape=(32, 32, 3))
    path = tmp_path / "resnet50_notop.weights.h5"
    base.save_weights(path)
    model, from_scratch = make_model(32, str(path))
    assert not from_scratch
    loaded = get_base(model).get_layer("conv5_block3_3_conv").get_weights()[0]
    np.testing.assert_array_equal(loaded, base.get_layer("conv5_block3_3_conv").get_weights()[0])
