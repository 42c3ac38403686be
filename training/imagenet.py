"""Where `--weights imagenet` comes from, and a quick check that it can be had before training starts.

Keras downloads ResNet50's ImageNet weights once into its cache (`$KERAS_HOME/models`, default
`~/.keras/models`). Hospitals are often air-gapped: there the download would hang or fail deep in
a run. So the trainer looks for the cached file first, tries the download host for a few seconds
only when the file is missing, and otherwise stops at once, naming the file and where to put it.
"""

from __future__ import annotations

import socket
from collections.abc import Mapping
from pathlib import Path
from urllib.parse import urlparse

WEIGHTS_FILE = "resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5"
WEIGHTS_URL = f"https://storage.googleapis.com/tensorflow/keras-applications/resnet/{WEIGHTS_FILE}"
CONNECT_TIMEOUT_S = 5.0


class ImagenetWeightsUnavailable(Exception):
    """The ImageNet weights are neither cached nor downloadable; the message says what to do."""


def keras_cache_file(environ: Mapping[str, str]) -> Path:
    """Where Keras looks for (and would download) the ImageNet weights."""
    home = environ.get("KERAS_HOME") or str(Path("~/.keras").expanduser())
    return Path(home) / "models" / WEIGHTS_FILE


def _reachable(url: str, timeout_s: float) -> bool:
    parsed = urlparse(url)
    try:
        with socket.create_connection((parsed.hostname or "", parsed.port or 443), timeout=timeout_s):
            return True
    except OSError:
        return False


def ensure_imagenet_weights(
    *, environ: Mapping[str, str], url: str = WEIGHTS_URL, timeout_s: float = CONNECT_TIMEOUT_S
) -> Path:
    """The cached file's path when it is there or can be downloaded; `ImagenetWeightsUnavailable` otherwise."""
    cached = keras_cache_file(environ)
    if cached.is_file() or _reachable(url, timeout_s):
        return cached
    raise ImagenetWeightsUnavailable(
        f"--weights imagenet needs ResNet50's ImageNet weights, {WEIGHTS_FILE} (94 MB), and this machine can "
        f"neither find them nor download them ({url} is unreachable). Copy that file to {cached} "
        f"(Keras' cache: $KERAS_HOME/models, default ~/.keras/models), or give its path: --weights /path/to/{WEIGHTS_FILE}"
    )
