"""Parity of `kidneyct models import` for every notebook shape and writer: the README's parity table.

Writes tiny notebook-style models (random weights, BatchNorm statistics randomised) with tf-keras (Keras 2)
and Keras 3 in their own processes (`tests/model_files_kit.py`), imports each full `.h5` the way
`kidneyct models import` does, and prints the largest absolute probability difference between the
original (loaded by its own Keras) and the rebuilt model on 16 fixed inputs, beside the import's bar
(1e-4: above it the import is refused). Correctness is asserted by the tests
(`tests/unit/training/test_training_model_import.py`); this script only produces the figures.

    python benchmarks/import_parity.py
"""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
KIT = ROOT / "tests" / "model_files_kit.py"
WRITERS = ("tf_keras", "keras")
BAR = 1e-4


def write_model_files(root: Path) -> list[str]:
    """Both writers at once, each in its own process; tf-keras only where it is installed."""
    has_tf_keras = (
        subprocess.run([sys.executable, "-c", "import tf_keras"], capture_output=True).returncode == 0
    )
    writers = [w for w in WRITERS if w == "keras" or has_tf_keras]
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    procs = {w: subprocess.Popen([sys.executable, str(KIT), w, str(root / w)], env=env) for w in writers}
    for writer, proc in procs.items():
        if proc.wait() != 0:
            raise SystemExit(f"{writer} could not write the model files")
    return writers


def main() -> None:
    sys.path.insert(0, str(ROOT / "tests"))
    from model_files_kit import SHAPES  # noqa: PLC0415 (tests/ is not a package)

    from classifier.model.preprocess import KIDNEY_WINDOW
    from training.model_import import ImportOptions, import_model_file
    from training.rebuild import ImportSpec

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        writers = write_model_files(root)
        print(f"| shape (full .h5) | {' | '.join(writers)} | bar |")
        print(f"|---|{'---|' * len(writers)}---|")
        for shape, (size, head, mode, classes) in SHAPES.items():
            spec = ImportSpec(
                source_classes=tuple(classes), normalization=mode
            )  # the full file says the rest
            cells = []
            for writer in writers:
                options = ImportOptions(spec=spec, window=KIDNEY_WINDOW, version=f"{writer}-{shape}")
                imported = import_model_file(
                    root / writer / f"{shape}.h5",
                    options,
                    model_dir=root / "models",
                    now=dt.datetime.now(dt.UTC),
                )
                cells.append(f"{imported.parity.max_abs_diff:.1e}")
            print(f"| {shape}, {size} px, {head}, {mode} | {' | '.join(cells)} | {BAR:.0e} |")


if __name__ == "__main__":
    main()
