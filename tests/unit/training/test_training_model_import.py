"""Importing a notebook's ResNet50: every shape and writer rebuilt exactly, bad files refused, Grad-CAM works.

The model files are written by `tests/model_files_kit.py` in subprocesses (tf-keras and Keras 3 are
different packages), once per session: tiny (32 px, 64 px for the Flatten head), random weights.
"""

from __future__ import annotations

import datetime as dt
import shutil
import subprocess
import sys
from pathlib import Path

import h5py
import keras
import numpy as np
import pytest
from click.testing import CliRunner
from model_files_kit import SHAPES, inputs

import migrations
from classifier.model.artifact import load_artifact, read_card
from classifier.model.preprocess import KIDNEY_WINDOW
from classifier.report.gradcam import grad_cam, head_logits, head_weights
from common.vocabulary import CLASS_NAMES
from kidneyct.cli import cli
from storage.db.engine import make_engine, make_session_factory
from storage.db.model_versions import list_model_versions
from training.model_import import ImportOptions, import_model_file
from training.rebuild import ImportRefused, ImportSpec, rebuild

pytestmark = pytest.mark.slow
KIT = Path(__file__).resolve().parents[2] / "model_files_kit.py"
T0 = dt.datetime(2026, 11, 29, 12, 0, tzinfo=dt.UTC)
WRITERS = {"tf_keras": ("_w.h5",), "keras": (".weights.h5", ".keras")}


def _tf_keras_installed() -> bool:
    probe = subprocess.run([sys.executable, "-c", "import tf_keras"], capture_output=True, check=False)
    return probe.returncode == 0


@pytest.fixture(scope="session")
def model_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """writer -> folder of its files; both writers run at once in their own processes."""
    root = tmp_path_factory.mktemp("model-files")
    writers = [w for w in WRITERS if w == "keras" or _tf_keras_installed()]
    procs = {
        w: subprocess.Popen(
            [sys.executable, str(KIT), w, str(root / w)],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env={**__import__("os").environ, "TF_CPP_MIN_LOG_LEVEL": "3"},
        )
        for w in writers
    }
    for w, proc in procs.items():
        out, _ = proc.communicate(timeout=900)
        assert proc.returncode == 0, f"{w} could not write the model files:\n{out[-3000:]}"
    return {w: root / w for w in writers}


def _folder(model_files: dict[str, Path], writer: str) -> Path:
    if writer not in model_files:
        pytest.skip("tf-keras is not installed (pip install 'kidneyct[legacy]')")
    return model_files[writer]


def _spec(shape: str, *, weights_only: bool = False) -> ImportSpec:
    """What the notebook says; a weights-only file needs pooling, activation and size stated too."""
    size, head, mode, classes = SHAPES[shape]
    if not weights_only:
        return ImportSpec(source_classes=tuple(classes), normalization=mode)
    return ImportSpec(
        source_classes=tuple(classes), image_size=size, head=head, activation="softmax", normalization=mode
    )


def _reordered(shape: str, probabilities: np.ndarray) -> np.ndarray:
    classes = SHAPES[shape][3]
    return probabilities[:, [classes.index(c) for c in CLASS_NAMES]]


CASES = [
    (writer, shape, suffix)
    for writer, suffixes in WRITERS.items()
    for shape in SHAPES
    for suffix in (".h5", *suffixes)
]


@pytest.mark.parametrize(("writer", "shape", "suffix"), CASES)
def test_rebuilt_model_predicts_what_the_original_predicted(
    model_files: dict[str, Path], writer: str, shape: str, suffix: str
) -> None:
    """Every notebook shape, full model or weights only, from either writer: the same probabilities within 1e-5."""
    path = _folder(model_files, writer) / f"{shape}{suffix}"
    rebuilt = rebuild(path, _spec(shape, weights_only=suffix != ".h5" and suffix != ".keras"))
    size, head = SHAPES[shape][:2]
    assert (rebuilt.image_size, rebuilt.head) == (size, head)
    assert rebuilt.tensors_copied == len(rebuilt.model.weights) == 322
    original = _reordered(shape, np.load(path.parent / f"{shape}.npy"))
    assert (
        original.std(axis=0).max() > 1e-3
    )  # the inputs tell the classes apart: the comparison means something
    actual = np.asarray(rebuilt.model.predict(inputs(size), verbose=0))
    np.testing.assert_allclose(actual, original, atol=1e-5, rtol=0)


@pytest.mark.parametrize(
    ("writer", "shape"), [("keras", "gap"), ("tf_keras", "seq"), ("tf_keras", "flatten")]
)
def test_import_measures_parity_and_writes_a_card_the_worker_rebuilds(
    model_files: dict[str, Path], tmp_path: Path, writer: str, shape: str
) -> None:
    """The original is loaded by its own Keras; the figure lands in the card; load_artifact rebuilds the same graph."""
    path = _folder(model_files, writer) / f"{shape}.h5"
    options = ImportOptions(spec=_spec(shape), window=KIDNEY_WINDOW, version="v-import")
    imported = import_model_file(path, options, model_dir=tmp_path / "models", now=T0)
    parity = imported.card.extra["import"]["parity"]
    assert parity["checked"] and parity["inputs"] >= 16
    assert parity["max_abs_diff"] < 1e-5
    assert parity["loader"].startswith("tf-keras" if writer == "tf_keras" else "keras")
    card = read_card(imported.artifact_dir)
    assert (card.head, card.normalization) == (SHAPES[shape][1], SHAPES[shape][2])
    model, _ = load_artifact(imported.artifact_dir, expected_sha256=card.weights_sha256)
    x = inputs(SHAPES[shape][0])
    expected = _reordered(shape, np.load(path.parent / f"{shape}.npy"))
    np.testing.assert_allclose(np.asarray(model.predict(x, verbose=0)), expected, atol=1e-5, rtol=0)


def test_weights_only_import_says_parity_was_not_checked(
    model_files: dict[str, Path], tmp_path: Path
) -> None:
    """A weights-only file has no graph: the card says parity was not checked, and why."""
    path = model_files["keras"] / "gap.weights.h5"
    options = ImportOptions(spec=_spec("gap", weights_only=True), window=KIDNEY_WINDOW, version="v-w")
    imported = import_model_file(path, options, model_dir=tmp_path / "models", now=T0)
    parity = imported.card.extra["import"]["parity"]
    assert not parity["checked"] and parity["max_abs_diff"] is None
    assert "weights-only" in parity["note"]


def test_a_head_the_builder_cannot_make_is_refused_in_words_before_parity(tmp_path: Path) -> None:
    """A head with tanh instead of relu has the same tensors: the config says tanh, and the refusal says so."""
    keras.utils.set_random_seed(5)
    base = keras.applications.ResNet50(include_top=False, weights=None, input_shape=(32, 32, 3))
    x = keras.layers.GlobalAveragePooling2D()(base.output)
    x = keras.layers.Dense(512, activation="tanh")(x)
    out = keras.layers.Dense(4, activation="softmax")(keras.layers.Dropout(0.4)(x))
    path = tmp_path / "tanh.h5"
    keras.Model(base.input, out).save(path)
    models = tmp_path / "models"
    options = ImportOptions(
        spec=ImportSpec(normalization="caffe"), window=KIDNEY_WINDOW, version="v1", force=True
    )
    with pytest.raises(ImportRefused, match=r"first Dense layer is Dense\(512, tanh\)"):
        import_model_file(path, options, model_dir=models, now=T0)
    assert not models.exists() or not any(models.iterdir())  # nothing written, --force or not


# --- bad files: a clear error, nothing registered ----------------------------------------------------
@pytest.fixture
def site(tmp_path: Path) -> dict[str, str]:
    data = tmp_path / "site"
    data.mkdir()
    migrations.upgrade(f"sqlite:///{data / 'kidneyct.db'}")
    return {"KIDNEYCT_DATA_DIR": str(data), "KIDNEYCT_LOG_FORMAT": "json"}


def _import(env: dict[str, str], path: Path, *extra: str) -> tuple[int, str]:
    result = CliRunner().invoke(
        cli, ["models", "import", str(path), "--preprocessing", "caffe", "--no-parity", *extra], env=env
    )
    return result.exit_code, result.output


def _registered(env: dict[str, str]) -> list[str]:
    engine = make_engine(f"sqlite:///{Path(env['KIDNEYCT_DATA_DIR']) / 'kidneyct.db'}")
    try:
        with make_session_factory(engine)() as session:
            return [v.version for v in list_model_versions(session)]
    finally:
        engine.dispose()


def _model_dir_is_empty(env: dict[str, str]) -> bool:
    models = Path(env["KIDNEYCT_DATA_DIR"]) / "models"
    return not models.exists() or not any(models.iterdir())


def _copy(src: Path, dst: Path) -> Path:
    shutil.copyfile(src, dst)
    return dst


def _bad_files(model_files: dict[str, Path], tmp: Path) -> dict[str, tuple[Path, str]]:
    """name -> (file, a phrase its error must contain)."""
    k3 = model_files["keras"]
    truncated = tmp / "truncated.h5"
    truncated.write_bytes((k3 / "gap.h5").read_bytes()[: 1 << 20])
    not_hdf5 = tmp / "notes.h5"
    not_hdf5.write_text("this is a notebook's README, not a model\n")
    missing = _copy(k3 / "gap.h5", tmp / "missing.h5")
    with h5py.File(missing, "r+") as f:
        del f["model_weights/conv5_block3_3_bn"]
    extra = _copy(k3 / "gap.h5", tmp / "extra.h5")
    with h5py.File(extra, "r+") as f:
        group = f["model_weights"].create_group("dense_extra")
        group.attrs["weight_names"] = [b"dense_extra/kernel", b"dense_extra/bias"]
        group.create_dataset("dense_extra/kernel", data=np.zeros((4, 4), "float32"))
        group.create_dataset("dense_extra/bias", data=np.zeros((4,), "float32"))
        names = [
            n if isinstance(n, bytes) else str(n).encode() for n in f["model_weights"].attrs["layer_names"]
        ]
        names.append(b"dense_extra")
        f["model_weights"].attrs["layer_names"] = names
    wrong = _copy(k3 / "gap.h5", tmp / "wrong.h5")
    with h5py.File(wrong, "r+") as f:
        del f["model_weights/conv1_conv/conv1_conv/kernel"]
        f["model_weights/conv1_conv"].create_dataset(
            "conv1_conv/kernel", data=np.zeros((3, 3, 3, 64), "float32")
        )
    other = tmp / "other.keras"
    keras.utils.set_random_seed(3)
    tiny = keras.Sequential(
        [
            keras.Input((32, 32, 3)),
            keras.layers.Conv2D(8, 3),
            keras.layers.GlobalAveragePooling2D(),
            keras.layers.Dense(4),
        ]
    )
    tiny.save(other)
    return {
        "truncated": (truncated, "not a readable HDF5"),
        "not-hdf5": (not_hdf5, "not a readable HDF5"),
        "three-classes": (k3 / "three.h5", "has 3 classes, but 4 are expected"),
        "missing-layer": (missing, "conv5_block3_3_bn/gamma: the rebuilt model needs it"),
        "extra-layer": (extra, "dense_extra"),
        "wrong-shape": (wrong, "conv1_conv/kernel: shape (3, 3, 3, 64) in the file, (7, 7, 3, 64)"),
        "other-architecture": (other, "the output layer has no activation (linear logits)"),
    }


def test_bad_files_are_refused_by_name_and_register_nothing(
    model_files: dict[str, Path], tmp_path: Path, site: dict[str, str]
) -> None:
    """Truncated, not HDF5, 3 classes, a missing or extra layer, a wrong shape, another architecture: refused, nothing kept."""
    for name, (path, phrase) in _bad_files(model_files, tmp_path).items():
        code, output = _import(site, path, "--model-version", f"bad-{name}")
        assert code == 1, f"{name}: {output}"
        assert phrase in output, f"{name}: {output}"
        assert _registered(site) == [], name
        assert _model_dir_is_empty(site), name


def test_a_good_import_through_the_cli_registers_one_candidate(
    model_files: dict[str, Path], site: dict[str, str]
) -> None:
    """The same command on a good file registers a candidate whose artifact the worker can load."""
    stated = (
        "--image-size",
        "32",
        "--pooling",
        "avg",
        "--activation",
        "softmax",
        "--classes",
        "Cyst,Normal,Stone,Tumor",
    )
    code, output = _import(site, model_files["keras"] / "pool.weights.h5", *stated, "--model-version", "ok-1")
    assert code == 0, output
    assert "registered candidate ok-1" in output
    assert _registered(site) == ["ok-1"]
    code, output = _import(site, model_files["keras"] / "pool.weights.h5", *stated, "--model-version", "ok-1")
    assert code == 1 and "already registered" in output


def test_model_file_import_needs_the_preprocessing(
    model_files: dict[str, Path], site: dict[str, str]
) -> None:
    """Without --preprocessing the command refuses: parity cannot catch a wrong normalisation."""
    result = CliRunner().invoke(cli, ["models", "import", str(model_files["keras"] / "gap.h5")], env=site)
    assert result.exit_code == 2 and "--preprocessing is required" in result.output


# --- Grad-CAM ----------------------------------------------------------------------------------
@pytest.mark.parametrize("shape", ["seq", "flatten"])
def test_grad_cam_on_an_imported_model_is_not_constant(model_files: dict[str, Path], shape: str) -> None:
    """The nested Sequential (which breaks Grad-CAM in the notebook) and the Flatten head both give real heat maps."""
    # 64 px at least: at 32 px the feature map is 1x1 and any heat map is flat. The weights-only file
    # lets the GAP model be rebuilt at 64 px (its weights do not depend on the input size).
    spec = ImportSpec(
        source_classes=tuple(SHAPES[shape][3]),
        image_size=64,
        head=SHAPES[shape][1],
        activation="softmax",
        normalization=SHAPES[shape][2],
    )
    rebuilt = rebuild(model_files["keras"] / f"{shape}.weights.h5", spec)
    x = inputs(64)[:4]
    cam = grad_cam(rebuilt.model, x)
    assert cam.heatmaps.shape == (4, *x.shape[1:3])
    assert all(m.max() - m.min() > 0.1 for m in cam.heatmaps)
    # The closed-form head (the gradient's source) reproduces the model's own probabilities.
    from classifier.report.gradcam import feature_model

    features = np.asarray(feature_model(rebuilt.model).predict(x, verbose=0))
    logits, _ = head_logits(features, head_weights(rebuilt.model), rebuilt.head)
    softmax = np.exp(logits - logits.max(1, keepdims=True))
    softmax /= softmax.sum(1, keepdims=True)
    np.testing.assert_allclose(softmax, rebuilt.model.predict(x, verbose=0), atol=1e-5)
