"""Issue 24: no wrong model reaches patients.

The models of the issue's table (max pooling, a sigmoid output, ResNet101, MobileNetV2), written by
Keras 3 and tf-keras as full `.h5`, weights only and `.keras`, are each refused with a sentence naming
the real difference, before Keras is needed; parity failures name the variant the file matches; a wrong
class order shows up in the acceptance result; `models list` shows parity, acceptance and the notes.
The files are written once per session by `tests/model_files_kit.py ... foreign` in subprocesses.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import pytest
from click.testing import CliRunner
from model_files_kit import FOREIGN, inputs
from PIL import Image

import migrations
from classifier.model.preprocess import image_file_to_frames, to_model_input
from common.vocabulary import CLASS_NAMES
from kidneyct.cli import cli
from training.parity_variants import Variant, failure_message, variant_differences
from training.rebuild import ImportSpec, rebuild

pytestmark = pytest.mark.slow
KIT = Path(__file__).resolve().parents[2] / "model_files_kit.py"
WEIGHTS = {"keras": ".weights.h5", "tf_keras": "_w.h5"}
ORDER = ",".join(CLASS_NAMES)
# shape -> (what a weights-only file's owner states truthfully, the phrase its refusal must contain)
TABLE = {
    "maxpool": (("--pooling", "max", "--activation", "softmax"), "global max pooling"),
    "sigmoid": (("--pooling", "avg", "--activation", "sigmoid"), "the output layer uses sigmoid"),
    "resnet101": (("--pooling", "avg", "--activation", "softmax"), "only ResNet50 can be served"),
    "mobilenetv2": (("--pooling", "avg", "--activation", "softmax"), "only ResNet50 can be served"),
}


def _tf_keras_installed() -> bool:
    probe = subprocess.run([sys.executable, "-c", "import tf_keras"], capture_output=True, check=False)
    return probe.returncode == 0


@pytest.fixture(scope="session")
def foreign_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """writer -> folder of the table's files; both writers at once, each in its own process."""
    root = tmp_path_factory.mktemp("foreign-model-files")
    writers = [w for w in WEIGHTS if w == "keras" or _tf_keras_installed()]
    procs = {
        w: subprocess.Popen(
            [sys.executable, str(KIT), w, str(root / w), "foreign"],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"},
        )
        for w in writers
    }
    for w, proc in procs.items():
        out, _ = proc.communicate(timeout=1200)
        assert proc.returncode == 0, f"{w} could not write the model files:\n{out[-3000:]}"
    return {w: root / w for w in writers}


@pytest.fixture
def site(tmp_path: Path) -> dict[str, str]:
    data = tmp_path / "site"
    data.mkdir()
    migrations.upgrade(f"sqlite:///{data / 'kidneyct.db'}")
    return {"KIDNEYCT_DATA_DIR": str(data), "KIDNEYCT_LOG_FORMAT": "json"}


def _run(env: dict[str, str], *args: str) -> tuple[int, str]:
    result = CliRunner().invoke(cli, list(args), env=env)
    return result.exit_code, result.output


def _folder(files: dict[str, Path], writer: str) -> Path:
    if writer not in files:
        pytest.skip("tf-keras is not installed (pip install 'kidneyct[legacy]')")
    return files[writer]


CASES = [
    (writer, shape, suffix)
    for writer in WEIGHTS
    for shape in TABLE
    for suffix in (".h5", WEIGHTS[writer], *((".keras",) if writer == "keras" else ()))
]


@pytest.mark.parametrize(("writer", "shape", "suffix"), CASES)
def test_the_issue_table_is_refused_in_words(
    foreign_files: dict[str, Path], site: dict[str, str], writer: str, shape: str, suffix: str
) -> None:
    """Each model of the table, in each format: refused with a sentence naming the real difference, nothing kept."""
    path = _folder(foreign_files, writer) / f"{shape}{suffix}"
    stated, phrase = TABLE[shape]
    weights_only = suffix == WEIGHTS[writer]
    size = str(FOREIGN[shape][0])
    extra = (*stated, "--image-size", size, "--classes", ORDER) if weights_only else ()
    code, output = _run(site, "models", "import", str(path), "--preprocessing", "caffe", *extra)
    assert code == 1, output
    assert phrase in output, output
    if shape == "resnet101":
        assert "this file holds ResNet101" in output
    if shape == "mobilenetv2" and not (writer == "keras" and weights_only):
        assert (
            "this file holds MobileNetV2" in output
        )  # Keras 3 weights name no layer: "depthwise convolutions"
    assert "problem(s)" not in output and "--force" not in output
    assert _run(site, "models", "list")[1].strip() == "no model versions"


def test_a_weights_only_file_needs_pooling_activation_size_and_classes(
    foreign_files: dict[str, Path], site: dict[str, str]
) -> None:
    """The table's first row went in as average-pooled at 224 px: now every unknown must be stated."""
    path = foreign_files["keras"] / "maxpool.weights.h5"
    code, output = _run(site, "models", "import", str(path), "--preprocessing", "caffe", "--pooling", "avg")
    assert code == 1
    for flag in ("--activation", "--image-size", "--classes"):
        assert flag in output
    assert "--pooling avg|flatten|max" not in output  # stated, so not asked for


@pytest.mark.parametrize(
    ("shape", "matches"), [("maxpool", ("max", "softmax")), ("sigmoid", ("avg", "sigmoid"))]
)
def test_a_parity_failure_names_the_variant_the_file_matches(
    foreign_files: dict[str, Path], shape: str, matches: tuple[str, str]
) -> None:
    """Rebuilt as the seed's head, the file differs; the variant the builder knows that it matches is named,
    and --force is not suggested (no preprocessing could explain it)."""
    size = FOREIGN[shape][0]
    spec = ImportSpec(source_classes=CLASS_NAMES, image_size=size, head="avg", activation="softmax")
    rebuilt = rebuild(foreign_files["keras"] / f"{shape}.weights.h5", spec)
    fed = np.asarray(keras.applications.resnet50.preprocess_input(inputs(size).copy()))
    expected = np.load(foreign_files["keras"] / f"{shape}.npy")
    variants = variant_differences(rebuilt.model, fed, expected)
    assert (variants[0].pooling, variants[0].activation) == matches
    assert variants[0].max_abs_diff < 1e-4
    imported = next(v for v in variants if (v.pooling, v.activation) == ("avg", "softmax"))
    assert imported.max_abs_diff > 1e-2  # what the old import served
    message = failure_message(
        max_abs_diff=imported.max_abs_diff,
        limit=1e-4,
        inputs=len(fed),
        imported=imported,
        variants=variants,
        preprocessing_layers=[],
    )
    assert ("max pooling" if shape == "maxpool" else "sigmoid output") in message
    assert "cannot be imported" in message and "--force" not in message


def test_force_is_suggested_only_where_preprocessing_could_explain_the_difference() -> None:
    """No variant explains the difference: with pixel layers in the graph --force is offered, without them not."""
    imported = Variant("avg", "softmax", 0.3)
    worse = [imported, Variant("max", "softmax", 0.5)]
    common = {"max_abs_diff": 0.3, "limit": 1e-4, "inputs": 16, "imported": imported, "variants": worse}
    with_layers = failure_message(**common, preprocessing_layers=["Rescaling 'rescaling'"])
    without = failure_message(**common, preprocessing_layers=[])
    assert "--force" in with_layers and "Rescaling 'rescaling'" in with_layers
    assert "--force" not in without and "cannot be imported" in without


def _labelled_folder(model: keras.Model, root: Path, n: int = 24) -> dict[str, int]:
    """Grey PNGs labelled with what `model` (in our class order) says of them through the serving
    preprocessing: the right model scores 1.0 on them, a wrong class order cannot."""
    images = inputs(32, n=n).mean(axis=-1).astype(np.uint8)
    staging = root.parent / "staging"
    staging.mkdir()
    paths = []
    for i, image in enumerate(images):
        paths.append(staging / f"{i:03d}.png")
        Image.fromarray(image).save(paths[-1])
    x = to_model_input([image_file_to_frames(p)[0] for p in paths], 32)
    labels = [CLASS_NAMES[k] for k in np.asarray(model.predict(x, verbose=0)).argmax(axis=1)]
    counts: dict[str, int] = {}
    for path, label in zip(paths, labels, strict=True):
        (root / label).mkdir(parents=True, exist_ok=True)
        path.rename(root / label / path.name)
        counts[label] = counts.get(label, 0) + 1
    return counts


def test_a_wrong_class_order_shows_up_in_the_acceptance_result(
    foreign_files: dict[str, Path], site: dict[str, str], tmp_path: Path
) -> None:
    """Parity cannot see a wrong --classes order (1e-7 either way); the site's labelled images can: the
    card and `models list` show it, and the version cannot become the first model."""
    path = foreign_files["keras"] / "seed.keras"
    right = rebuild(path, ImportSpec(source_classes=CLASS_NAMES, normalization="caffe"))
    folder = tmp_path / "acceptance"
    assert sum(_labelled_folder(right.model, folder).values()) == 24
    common = ("models", "import", str(path), "--preprocessing", "caffe", "--acceptance", str(folder))
    code, output = _run(site, *common, "--classes", ORDER, "--model-version", "right")
    assert code == 0, output
    assert "acceptance: accuracy 1.000 on 24 slice(s)" in output
    wrong_order = ",".join(CLASS_NAMES[1:] + CLASS_NAMES[:1])  # every class moved: nothing right by luck
    code, output = _run(site, *common, "--classes", wrong_order, "--model-version", "wrong")
    assert code == 0, output
    assert "max abs diff" in output  # parity passes: the file agrees with itself
    assert "acceptance: accuracy 0.000 on 24 slice(s)" in output
    code, listing = _run(site, "models", "list")
    lines = {line.split()[0]: line for line in listing.splitlines()[1:] if line.strip()}
    assert "acc 1.000 n=24" in lines["right"] and "acc 0.000 n=24" in lines["wrong"]
    assert "not checked" not in lines["wrong"]
    code, output = _run(site, "models", "promote", "wrong")
    assert code == 1 and "below the floor" in output
    code, output = _run(site, "models", "promote", "wrong", "--force", "--reason", "drill: known bad order")
    assert code == 0, output
    code, listing = _run(site, "models", "list")
    assert "FORCED (reason: drill: known bad order)" in listing


def test_an_unchecked_import_cannot_be_promoted_without_acceptance(
    foreign_files: dict[str, Path], site: dict[str, str]
) -> None:
    """The table's first row, stated wrongly as average pooling: imported (a weights-only file cannot tell),
    listed as 'not checked', and not promoted without an acceptance result."""
    path = foreign_files["keras"] / "maxpool.weights.h5"
    stated = ("--pooling", "avg", "--activation", "softmax", "--image-size", "64", "--classes", ORDER)
    code, output = _run(
        site, "models", "import", str(path), "--preprocessing", "caffe", *stated, "--model-version", "w"
    )
    assert code == 0, output
    listing = _run(site, "models", "list")[1]
    assert "not checked" in listing and "none" in listing
    code, output = _run(site, "models", "promote", "w")
    assert code == 1 and "parity was not checked" in output and "--acceptance" in output


def test_refusals_come_before_keras_is_imported(foreign_files: dict[str, Path], tmp_path: Path) -> None:
    """A typo, a missing schema, a foreign file and an unknown version are answered without loading Keras."""
    site = tmp_path / "no-schema"
    script = f"""
import sys
from click.testing import CliRunner
from kidneyct.cli import cli
env = {{"KIDNEYCT_DATA_DIR": {str(site)!r}}}
runs = [
    ["models", "import", {str(tmp_path / "typo.h5")!r}, "--preprocessing", "caffe"],
    ["models", "import", {str(foreign_files["keras"] / "resnet101.keras")!r}, "--preprocessing", "caffe"],
    ["models", "promote", "nosuch"],
]
for args in runs:
    print(CliRunner().invoke(cli, args, env=env).output.strip())
print("keras loaded:", "keras" in sys.modules, "tensorflow" in sys.modules)
"""
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True, timeout=120
    ).stdout
    assert "does not exist" in out
    assert out.count("kidneyct db upgrade") == 2
    assert "keras loaded: False False" in out
