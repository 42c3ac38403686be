"""The same data, options and seed give the same weights, figures and report: two tiny runs in one process."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import pytest
from PIL import Image

import migrations
from common.vocabulary import CLASS_NAMES
from storage.db.engine import make_engine, make_session_factory
from training.data import AugmentConfig
from training.fit import FitConfig
from training.importer import import_folder
from training.run import TrainOptions, run_training

# Two ResNet50 fits and their evaluations: minutes on a quiet CPU, far more on a loaded 2-core box.
pytestmark = [pytest.mark.slow, pytest.mark.timeout(2700)]

NOW = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
# What may differ between two runs of one command: wall time, and the names the run gives itself.
VOLATILE = {"seconds", "images_per_second", "version", "run_dir", "commit"}


def _write_scans(root: Path, *, scans: int = 6, slices: int = 4, size: int = 32) -> None:
    """`root/<Class>/<Class>- (N).jpg`: a few 'scans' per class of drifting slices, classes by brightness."""
    rng = np.random.default_rng(0)
    for c, name in enumerate(CLASS_NAMES):
        (root / name).mkdir(parents=True)
        for s in range(scans):
            base = rng.normal(60 + 40 * c, 20, (size, size))
            for k in range(slices):
                img = np.clip(np.roll(base, k, axis=0) + rng.normal(0, 2, base.shape), 0, 255)
                n = s * slices + k + 1
                Image.fromarray(img.astype(np.uint8)).save(root / name / f"{name}- ({n}).jpg", quality=95)


def _stable(value: Any) -> Any:
    """The report without what legitimately varies (timings, version names)."""
    if isinstance(value, dict):
        return {k: _stable(v) for k, v in value.items() if k not in VOLATILE}
    if isinstance(value, list):
        return [_stable(v) for v in value]
    return value


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory: pytest.TempPathFactory) -> list[dict[str, Any]]:
    root = tmp_path_factory.mktemp("reproducible")
    _write_scans(root / "images")
    url = f"sqlite:///{root / 'kidneyct.db'}"
    migrations.upgrade(url)
    sessions = make_session_factory(make_engine(url))
    with sessions.begin() as session:
        import_folder(session, root=root / "images", classes=CLASS_NAMES, source="test", now=NOW)
    options = TrainOptions(
        image_size=32,
        weights="none",
        fit=FitConfig(epochs_phase1=1, epochs_phase2=0, batch_size=16, verbose=0),
        seed=11,
        augment=AugmentConfig(),  # the augmentation is the randomness most worth pinning
        compare_random=False,
        refit=False,
        gradcam_per_class=0,
        threads=1,
    )
    runs = []
    for version in ("run-a", "run-b"):
        run = run_training(
            sessions,
            options=options,
            version=version,
            run_dir=root / "runs" / version,
            model_dir=root / "models",
        )
        runs.append({"run": run, "weights": _weights(run.artifact_dir / run.card.weights_file)})
    return runs


def _weights(path: Path) -> list[tuple[str, np.ndarray]]:
    """Every array of a weights file with its path, in file order (read directly: no model rebuild)."""
    arrays: list[tuple[str, np.ndarray]] = []
    with h5py.File(path) as h5:
        h5.visititems(
            lambda name, obj: arrays.append((name, obj[()])) if isinstance(obj, h5py.Dataset) else None
        )
    return arrays


def test_two_runs_give_bit_identical_weights(two_runs: list[dict[str, Any]]) -> None:
    """Every weight of the served artifact is the same to the bit.

    (The weights files' hashes match between two processes, as two `kidneyct train` commands are;
    within one process Keras numbers the second model's auto-named objects on, and the names are in
    the file.)"""
    a, b = (r["weights"] for r in two_runs)
    assert len(a) == len(b) > 300  # ResNet50 and the head
    assert [name for name, _ in a] == [name for name, _ in b]
    assert all(np.array_equal(x, y) for (_, x), (_, y) in zip(a, b, strict=True))


def test_a_finished_run_removes_its_checkpoints(two_runs: list[dict[str, Any]]) -> None:
    """Without keep_checkpoints the run folder keeps no checkpoint; the artifact loads (checked above)."""
    for r in two_runs:
        assert not (r["run"].run_dir / "checkpoints").exists()
        assert (r["run"].run_dir / "report.json").is_file()


def test_two_runs_give_the_same_report_and_figures(two_runs: list[dict[str, Any]]) -> None:
    """report.json matches apart from timings and names; every figure file is byte-identical."""
    a, b = (r["run"] for r in two_runs)
    report_a = json.loads((a.run_dir / "report.json").read_text())
    report_b = json.loads((b.run_dir / "report.json").read_text())
    assert _stable(report_a) == _stable(report_b)
    assert report_a["figures"], "the run drew no figures"
    for name in report_a["figures"].values():
        assert _digest(a.run_dir / name) == _digest(b.run_dir / name), name
    predictions = [json.loads((r.run_dir / "test_predictions.json").read_text()) for r in (a, b)]
    assert predictions[0] == predictions[1]
