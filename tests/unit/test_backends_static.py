"""Static check: the model, inference and training code uses no TensorFlow, so it runs on JAX and PyTorch."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
CHECKED_PACKAGES = ("classifier", "training")
FORBIDDEN_MODULES = ("tensorflow", "tf_keras", "jax", "torch")
# (file, reason) of documented backend-specific corners; keep empty unless one is unavoidable.
ALLOWED: dict[str, str] = {
    "classifier/model/backend_gpus.py": "Keras 3 cannot list physical GPUs; each backend is asked for its count",
    "training/legacy_keras.py": "loads a Keras 2 file with tf-keras (optional extra, imported lazily) for "
    "the model import's parity check; the imported model itself is Keras 3",
}


def python_files() -> list[Path]:
    return sorted(p for package in CHECKED_PACKAGES for p in (REPO / package).rglob("*.py"))


def backend_uses(source: str) -> list[str]:
    """Imports of a backend library, and `tf.` attribute uses, in `source`."""
    found = []
    for node in ast.walk(ast.parse(source)):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module]
        found += [f"line {node.lineno}: import {n}" for n in names if n.split(".")[0] in FORBIDDEN_MODULES]
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "tf":
            found.append(f"line {node.lineno}: tf.{node.attr}")
    return found


def test_checker_finds_backend_imports() -> None:
    """The checker itself flags `import tensorflow as tf`, `from jax import numpy` and `tf.` calls."""
    source = (
        "import tensorflow as tf\nfrom jax import numpy\nimport torch.nn\nx = tf.constant(1)\nimport keras\n"
    )
    assert backend_uses(source) == [
        "line 1: import tensorflow",
        "line 2: import jax",
        "line 3: import torch.nn",
        "line 4: tf.constant",
    ]


def test_there_are_files_to_check() -> None:
    """The walk really finds the model and the trainer (a wrong root would pass vacuously)."""
    names = {p.relative_to(REPO).as_posix() for p in python_files()}
    assert {
        "classifier/model/network.py",
        "classifier/model/artifact.py",
        "training/fit.py",
        "classifier/report/gradcam.py",
    } <= names


@pytest.mark.parametrize("path", python_files(), ids=lambda p: p.relative_to(REPO).as_posix())
def test_no_backend_specific_code(path: Path) -> None:
    """Only `keras`, `keras.ops` and numpy: no TensorFlow, JAX or PyTorch imports or `tf.` calls."""
    rel = path.relative_to(REPO).as_posix()
    uses = backend_uses(path.read_text())
    if rel in ALLOWED:
        pytest.skip(f"documented backend-specific corner: {ALLOWED[rel]}")
    assert uses == [], f"{rel} uses a backend directly: {uses}"
