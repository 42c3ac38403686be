"""`scripts/gpu-check.sh run --cpu --serving` works end to end on the CPU with a tiny model: the GPU
run's serving step (bf16 bare model, whole worker, decode rate) prints its numbers and exits 0."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[2]


def test_the_gpu_checks_serving_run_works_on_the_cpu_at_a_tiny_size(tmp_path: Path) -> None:
    """Exit 0; one table row of bare img/s, worker img/s and worker/bare; the decode rates; logs in $OUT."""
    jax = pytest.importorskip("jax")  # the script runs Keras on JAX, as on the GPU machines
    assert jax is not None
    env = {k: v for k, v in os.environ.items() if not k.startswith("KIDNEYCT_")}
    # `python3` in the script is this interpreter's (the venv's), as on the GPU machine it is the image's.
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env["OUT"] = str(tmp_path / "out")
    result = subprocess.run(
        ["bash", str(REPO / "scripts" / "gpu-check.sh"), "run", "--cpu", "--serving"],
        env=env,
        capture_output=True,
        text=True,
        timeout=540,
        check=False,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    serving = (tmp_path / "out" / "serving.log").read_text()
    assert "backend=jax" in serving and "dtype=bfloat16" in serving and "image_size=32" in serving
    row = re.search(r"^\s+4\s+([\d.]+)\s+([\d.]+)\s+([\d.]+)$", serving, re.MULTILINE)
    assert row is not None, serving
    bare, worker, ratio = (float(g) for g in row.groups())
    assert bare > 0 and worker > 0 and ratio == pytest.approx(worker / bare, abs=0.01)
    assert re.search(r"decode img/s: 1 thread [\d.]+, 2 threads [\d.]+", serving), serving
    assert "== done in" in output and "exit 0" in output
