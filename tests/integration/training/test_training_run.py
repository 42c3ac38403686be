"""One real training run on small generated data (32 px, a few epochs), then its artifacts, manifest, worker reload and promotion.

The run goes through `kidneyct train` against a real (SQLite) database holding imported JPG folders and
labelled DICOM instances; tracing ResNet50 dominates its time, so every test here shares that one run.
"""

from __future__ import annotations

import datetime as dt
import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import keras
import numpy as np
import pydicom
import pytest
from catalogue_kit import catalogued_instance
from click.testing import CliRunner
from PIL import Image
from pydicom.data import get_testdata_file
from pydicom.uid import generate_uid

import migrations
from classifier.model.artifact import load_artifact, save_artifact
from classifier.model.preprocess import (
    KIDNEY_WINDOW,
    dicom_to_frames,
    image_file_to_model_input,
    to_model_input,
)
from common.vocabulary import CLASS_NAMES
from kidneyct.cli import cli
from storage.db.engine import make_engine, make_session_factory
from storage.db.labels import add_label
from storage.db.model_versions import (
    get_active_model_version,
    get_model_version,
    list_model_versions,
    register_model_version,
)
from storage.db.tables import Series, Study
from training.baseline import BASELINES
from training.manifest import Manifest
from training.promotion import promote
from training.registry import new_labels_since_last_version, training_due

# Three ResNet50 fits (selection, refit on train + val, random split) share the first test's time;
# their tracing alone takes minutes on a loaded 2-core box.
pytestmark = [pytest.mark.slow, pytest.mark.timeout(1500)]

NOW = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)


def write_kaggle_folder(
    root: Path, *, scans_per_class: int = 5, slices_per_scan: int = 5, size: int = 64
) -> None:
    """`root/<Class>/<Class>- (N).jpg`: per class a few 'scans' of slowly drifting slices, classes by brightness."""
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:size, 0:size] / size
    for c, name in enumerate(CLASS_NAMES):
        folder = root / name
        folder.mkdir(parents=True, exist_ok=True)
        n = 1
        for _ in range(scans_per_class):
            ry, rx = rng.uniform(0.25, 0.45), rng.uniform(0.2, 0.45)
            cy, cx = rng.uniform(0.4, 0.6), rng.uniform(0.4, 0.6)
            blobs, radii, levels = (
                rng.uniform(0.2, 0.8, (4, 2)),
                rng.uniform(0.04, 0.12, 4),
                rng.uniform(-60, 60, 4),
            )
            texture = rng.normal(0, 15, (size, size))
            for k in range(slices_per_scan):
                img = (((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 < 1) * (50.0 + 40 * c)
                for (by, bx), r, level in zip(blobs, radii, levels, strict=True):
                    img += (((yy - by - 0.01 * k) ** 2 + (xx - bx) ** 2) < r**2) * level
                img = np.clip(img + texture + rng.normal(0, 1.5, (size, size)), 0, 255).astype(np.uint8)
                Image.fromarray(img).save(folder / f"{name}- ({n}).jpg", quality=95)
                n += 1
    # An exact duplicate under another ID, as the Kaggle data has.
    shutil.copyfile(root / "Cyst" / "Cyst- (3).jpg", root / "Cyst" / "Cyst- (99).jpg")


def archive_dicom_study(
    session: Any, archive: Path, *, slices: int, shift: int, missing: int = 0
) -> tuple[str, list[str]]:
    """Archive `slices` real CT instances of one new study (pydicom's CT_small, each shifted so no two share
    pixels), plus `missing` instance rows whose files do not exist."""
    study_uid, series_uid = generate_uid(), generate_uid()
    study = Study(study_instance_uid=study_uid, first_received_at=NOW, last_received_at=NOW)
    series = Series(series_instance_uid=series_uid, study=study, modality="CT")
    session.add_all([study, series])
    uids = []
    for i in range(slices + missing):
        ds = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
        ds.StudyInstanceUID, ds.SeriesInstanceUID = study_uid, series_uid
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
        ds.InstanceNumber = i + 1
        pixels = ds.pixel_array
        ds.PixelData = np.roll(pixels, shift + 2 * i, axis=1).astype(pixels.dtype).tobytes()
        path = archive / f"{ds.SOPInstanceUID}.dcm"
        if i < slices:
            ds.save_as(path, enforce_file_format=True)
        uids.append(ds.SOPInstanceUID)
        session.add(catalogued_instance(ds, series, archive_uri=path.resolve().as_uri(), now=NOW))
    session.flush()
    return study_uid, uids


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """Import a folder, label two DICOM studies (one with a missing file), and run `kidneyct train` once."""
    root = tmp_path_factory.mktemp("training-run")
    data_dir, images, archive = root / "data", root / "kaggle", root / "archive"
    data_dir.mkdir()
    archive.mkdir()
    write_kaggle_folder(images)
    url = f"sqlite:///{data_dir / 'kidneyct.db'}"
    migrations.upgrade(url)
    sessions = make_session_factory(make_engine(url))
    with sessions.begin() as session:
        tumor_study, _ = archive_dicom_study(session, archive, slices=3, shift=0)
        stone_study, stone_uids = archive_dicom_study(session, archive, slices=2, shift=40, missing=1)
        add_label(session, study_instance_uid=tumor_study, label="Tumor", source="test", now=NOW)
        add_label(session, study_instance_uid=stone_study, label="Stone", source="test", now=NOW)
    env = {"KIDNEYCT_DATA_DIR": str(data_dir), "KIDNEYCT_DATABASE_URL": url, "KIDNEYCT_LOG_FORMAT": "json"}
    runner = CliRunner()
    imported = runner.invoke(cli, ["dataset", "import-folder", str(images)], env=env)
    assert imported.exit_code == 0, imported.output
    result = runner.invoke(
        cli,
        [
            "train",
            "--weights",
            "none",
            "--image-size",
            "32",
            "--epochs-phase1",
            "2",
            "--epochs-phase2",
            "1",
            "--batch-size",
            "16",
            "--seed",
            "7",
        ],
        env=env,
    )
    assert result.exit_code == 0, result.output
    with sessions() as session:
        (version,) = [v.version for v in list_model_versions(session)]
    yield {
        "url": url,
        "env": env,
        "sessions": sessions,
        "version": version,
        "run_dir": data_dir / "runs" / version,
        "artifact_dir": data_dir / "models" / version,
        "output": result.output,
        "missing_uid": stone_uids[-1],
        "runner": runner,
    }


def test_run_writes_every_artifact_and_registers_a_candidate(trained: dict[str, Any]) -> None:
    """Report, figures, manifest, predictions, checkpoints and the weights+card exist; the DB row is a candidate."""
    run_dir, artifact_dir = trained["run_dir"], trained["artifact_dir"]
    for name in (
        "report.json",
        "report.md",
        "manifest.json",
        "test_predictions.json",
        "class_histogram.png",
        "confusion_grouped.png",
        "confusion_random.png",
        "learning_curves_grouped.png",
        "learning_curves_random.png",
    ):
        assert (run_dir / name).stat().st_size > 0, name
    # At 32 px ResNet50's last feature map is 1x1: no uniform-tint Grad-CAM figure, a note instead.
    assert not (run_dir / "gradcam.png").exists()
    # A finished run removes its checkpoints (without --keep-checkpoints): the artifact holds the weights.
    assert not (run_dir / "checkpoints").exists()
    # --weights none trains from scratch: every layer in phase 1, phase 2 skipped.
    assert list(json.loads((run_dir / "report.json").read_text())["grouped"]["training"]) == ["phase1"]
    card = json.loads((artifact_dir / "model_card.json").read_text())
    assert card["from_scratch"] is True
    manifest_hash = Manifest.read(run_dir / "manifest.json").hash()
    assert card["manifest_hash"] == manifest_hash
    with trained["sessions"]() as session:
        row = get_model_version(session, version=trained["version"])
        assert row is not None and row.status == "candidate"
        assert row.manifest_hash == manifest_hash and row.sha256 == card["weights_sha256"]
        assert row.metrics["grouped_test"]["macro_f1"] == pytest.approx(
            json.loads((run_dir / "report.json").read_text())["grouped"]["test"]["macro_f1"]
        )


def test_report_gives_grouped_and_random_metrics_side_by_side(trained: dict[str, Any]) -> None:
    """report.json has both splits' test metrics and phase 1's history (from scratch); report.md tabulates them."""
    report = json.loads((trained["run_dir"] / "report.json").read_text())
    for split in ("grouped", "random"):
        test = report[split]["test"]
        assert set(test["per_class"]) == set(CLASS_NAMES)
        assert len(test["confusion_matrix"]) == 4 and sum(map(sum, test["confusion_matrix"])) == test["n"]
        assert set(report[split]["training"]) == {"phase1"} and report[split]["from_scratch"] is True
        assert len(report[split]["training"]["phase1"]["history"]["val_loss"]) >= 1
    markdown = (trained["run_dir"] / "report.md").read_text()
    assert (
        "| macro-F1 [95 % group-bootstrap interval] |" in markdown and "random image-level split" in markdown
    )
    assert "Not drawn: at 32 px the last feature map is 1x1" in markdown
    assert "from scratch" in markdown
    assert "latest IDs" in markdown and "ridge" in markdown and "ECE" in markdown


def test_report_puts_baselines_intervals_and_calibration_beside_the_network(trained: dict[str, Any]) -> None:
    """Both held-out sets carry the baselines, group-bootstrap intervals, paired differences and calibration;
    the served model was refitted on train + val for the selected number of epochs."""
    report = json.loads((trained["run_dir"] / "report.json").read_text())
    grouped = report["grouped"]
    assert set(grouped["held_out"]) == {"test", "latest"}
    for evaluation in grouped["held_out"].values():
        low, high = evaluation["intervals"]["macro_f1"]
        assert low <= evaluation["metrics"]["macro_f1"] <= high
        assert set(evaluation["baselines"]) == set(BASELINES)
        assert set(evaluation["versus_baselines"]) == set(BASELINES)
        assert 0.0 <= evaluation["calibration"]["ece"] <= 1.0
        assert sum(b["count"] for b in evaluation["calibration"]["bins"]) == evaluation["n"]
        assert evaluation["selection_model_metrics"]["n"] == evaluation["n"]
    assert 1 <= grouped["selected_epochs"] <= 2
    assert grouped["refit"]["phase1"]["epochs_run"] == grouped["selected_epochs"]
    assert report["dataset"]["straddling_groups"] == 0
    assert report["environment"]["libraries"]["keras"] == keras.__version__
    for name in ("reliability_grouped.png", "reliability_latest.png", "confusion_latest.png"):
        assert (trained["run_dir"] / name).stat().st_size > 0, name


def test_card_carries_the_statements_chosen_on_validation_and_the_report_measures_them(
    trained: dict[str, Any],
) -> None:
    """The card holds T, the study rule, the evidence threshold and the shift detector (its file hashed
    beside the weights); the report gives ECE before/after, slice vs scan level and risk-coverage per held-out set."""
    from classifier.model.serving import load_shift_stats

    card = json.loads((trained["artifact_dir"] / "model_card.json").read_text())
    assert card["calibration"]["temperature"] > 0
    decision = card["decision"]
    assert {"k", "t"} <= set(decision["study_rule"])
    assert decision["abstention"]["min_evidence"] >= 0.0 and decision["abstention"]["target_accuracy"] == 0.9
    assert decision["abstention"]["evidence"] == "deciding_slices"  # what min_evidence was chosen on
    _, loaded = load_artifact(trained["artifact_dir"])
    stats = load_shift_stats(trained["artifact_dir"], loaded)
    assert stats is not None and decision["shift"]["threshold"] > 0
    report = json.loads((trained["run_dir"] / "report.json").read_text())
    statements = report["grouped"]["statements"]
    assert statements["temperature"] == card["calibration"]["temperature"]
    for held in statements["held_out"].values():
        assert {"calibration_before", "calibration_after", "slice", "scan"} <= set(held)
        assert held["scan"]["metrics"]["n"] <= held["slice"]["metrics"]["n"]
        assert held["scan"]["risk_coverage"][0]["coverage"] == 1.0  # threshold 0 answers every scan
    assert statements["shift"]["flagged_share"]["uniform noise"]["images"] > 0
    md = (trained["run_dir"] / "report.md").read_text()
    assert "Risk-coverage" in md and "Slice level and scan level" in md and "before calibration" in md
    assert "over the k slices that decided it" in md


def test_manifest_keeps_groups_whole_and_drops_duplicates(trained: dict[str, Any]) -> None:
    """No group straddles splits; the duplicate copy is dropped; the unreadable DICOM is listed as skipped."""
    manifest = Manifest.read(trained["run_dir"] / "manifest.json")
    split_of_group: dict[str, str] = {}
    for item in manifest.items:
        assert split_of_group.setdefault(item.group, item.split) == item.split
    assert {d["key"].rsplit("/", 1)[-1] for d in manifest.dropped_duplicates} == {"Cyst- (99).jpg"}
    assert not any(i.key.endswith("Cyst- (99).jpg") for i in manifest.items)
    dicom = [i for i in manifest.items if i.source == "dicom"]
    assert len(dicom) == 5 and len({i.group for i in dicom}) == 2  # two studies, one group each
    assert [s["key"] for s in manifest.skipped] == [f"dicom:{trained['missing_uid']}#0"]
    assert "file missing" in manifest.skipped[0]["reason"]
    assert {i.split for i in manifest.items} == {"train", "val", "test", "latest"}
    # The latest block is the highest IDs of each class, whole scans.
    for cls in CLASS_NAMES:
        numbered = sorted(
            (int(i.key.rsplit("(", 1)[1].split(")")[0]), i.split)
            for i in manifest.items
            if i.source == "image" and i.label == cls
        )
        splits = [s for _, s in numbered]
        first_latest = splits.index("latest")
        assert set(splits[first_latest:]) == {"latest"}


def test_worker_path_reproduces_the_trainers_probabilities(trained: dict[str, Any]) -> None:
    """The artifact loaded as the worker loads it predicts the trainer's test probabilities from the files."""
    model, card = load_artifact(trained["artifact_dir"], expected_image_size=32)
    manifest = Manifest.read(trained["artifact_dir"] / "manifest.json")
    by_key = {i.key: i for i in manifest.items}
    recorded = json.loads((trained["run_dir"] / "test_predictions.json").read_text())["items"]
    assert recorded
    inputs = []
    for row in recorded:
        item = by_key[row["key"]]
        if item.source == "dicom":
            inputs.append(
                to_model_input(dicom_to_frames(item.path, card.window_obj), card.image_size)[item.frame or 0]
            )
        else:
            inputs.append(image_file_to_model_input(item.path, card.image_size)[0])
    predicted = np.asarray(model.predict(np.stack(inputs), verbose=0))
    np.testing.assert_allclose(predicted, [r["probabilities"] for r in recorded], atol=1e-5)
    assert card.window == KIDNEY_WINDOW.as_dict()


def _derived_candidate(trained: dict[str, Any], name: str, head: str) -> str:
    """Register a copy of the trained model with a rewritten output layer: 'zero' (constant) or 'oracle'."""
    model, card = load_artifact(trained["artifact_dir"])
    manifest = Manifest.read(trained["artifact_dir"] / "manifest.json")
    out = model.get_layer("predictions")
    kernel, bias = (keras.ops.convert_to_numpy(w) for w in out.weights)
    if head == "zero":  # uniform probabilities: always the first class, macro-F1 at most 0.1 on balanced data
        kernel, bias = np.zeros_like(kernel), np.zeros_like(bias)
    else:  # least squares from the hidden layer to the held-out labels: perfect on the evaluation set
        items = [i for i in manifest.items if i.split in ("test", "latest")]
        inputs = np.stack(
            [
                image_file_to_model_input(i.path, 32)[0]
                if i.source == "image"
                else to_model_input(dicom_to_frames(i.path), 32)[i.frame or 0]
                for i in items
            ]
        )
        hidden = keras.Model(model.input, model.get_layer("dense_512").output).predict(inputs, verbose=0)
        targets = 20.0 * (np.eye(4)[[CLASS_NAMES.index(i.label) for i in items]] - 0.5)
        solution, *_ = np.linalg.lstsq(np.c_[hidden, np.ones(len(hidden))], targets, rcond=None)
        kernel, bias = solution[:-1].astype(np.float32), solution[-1].astype(np.float32)
    out.set_weights([kernel, bias])
    directory = trained["artifact_dir"].parent / name
    new_card = save_artifact(
        model,
        directory,
        {"version": name, "manifest_hash": card.manifest_hash, "extra": {"manifest_file": "manifest.json"}},
    )
    shutil.copyfile(trained["artifact_dir"] / "manifest.json", directory / "manifest.json")
    with trained["sessions"].begin() as session:
        register_model_version(
            session,
            version=name,
            artifact_uri=directory.resolve().as_uri(),
            sha256=new_card.weights_sha256,
            card=json.loads(new_card.to_json()),
            metrics={},
            manifest_hash=card.manifest_hash,
            now=dt.datetime.now(dt.UTC),
        )
    return name


def test_promotion_gates_on_baselines_and_active_model_and_records_force(trained: dict[str, Any]) -> None:
    """Even the first promotion must beat the baselines by more than the uncertainty: a constant model is
    refused with no active model; a perfect one is promoted; a worse one is refused unless forced with a reason."""
    sessions, runner, env = trained["sessions"], trained["runner"], trained["env"]
    oracle = _derived_candidate(trained, "oracle", "oracle")
    constant = _derived_candidate(trained, "constant", "zero")

    first = runner.invoke(cli, ["models", "promote", constant], env=env)
    assert first.exit_code != 0 and "refused" in first.output and "nearest_neighbour" in first.output
    with sessions() as session:
        assert get_active_model_version(session) is None

    with sessions.begin() as session:
        better = promote(session, version=oracle, force=False, now=dt.datetime.now(dt.UTC))
    assert better.promote and not better.forced, better.reason
    assert set(better.comparisons) == set(BASELINES)
    assert all(c["interval"][0] > 0 for c in better.comparisons.values())

    refused = runner.invoke(cli, ["models", "promote", constant], env=env)
    assert refused.exit_code != 0 and "refused" in refused.output and "active oracle" in refused.output
    with sessions() as session:
        assert get_active_model_version(session).version == oracle  # type: ignore[union-attr]
        assert get_model_version(session, version=constant).promotion_note.startswith("refused")  # type: ignore[union-attr]

    no_reason = runner.invoke(cli, ["models", "promote", constant, "--force"], env=env)
    assert no_reason.exit_code != 0 and "--reason" in no_reason.output
    forced = runner.invoke(
        cli, ["models", "promote", constant, "--force", "--reason", "rollback drill"], env=env
    )
    assert forced.exit_code == 0, forced.output
    with sessions() as session:
        active = get_active_model_version(session)
        assert active is not None and active.version == constant
        assert active.promotion_note.startswith("FORCED (reason: rollback drill)")
        assert get_model_version(session, version=oracle).status == "retired"  # type: ignore[union-attr]

    listing = runner.invoke(cli, ["models", "list"], env=env)
    assert listing.exit_code == 0 and constant in listing.output and "FORCED" in listing.output


def test_evaluate_command_scores_a_labelled_folder_through_serving_preprocessing(
    trained: dict[str, Any], tmp_path: Path
) -> None:
    """`kidneyct evaluate` on a version and on an artifact directory: the same numbers, JSON and files written,
    the predictions equal to the artifact's own on the same files."""
    folder = tmp_path / "unseen"
    write_kaggle_folder(folder, scans_per_class=2, slices_per_scan=3)
    runner, env = trained["runner"], trained["env"]
    by_version = runner.invoke(
        cli,
        [
            "evaluate",
            str(folder),
            "--model-version",
            trained["version"],
            "--json",
            "--out",
            str(tmp_path / "o"),
        ],
        env=env,
    )
    assert by_version.exit_code == 0, by_version.output
    # Log lines (one-line JSON) come first; the result is the indented JSON document after them.
    result = json.loads(by_version.output[by_version.output.index("{\n") :])
    assert result["slices"] == 4 * 6 + 1  # the duplicate copy counts: this is a test set, not a training set
    assert result["metrics"]["n"] == result["slices"] and set(result["metrics"]["per_class"]) == set(
        CLASS_NAMES
    )
    low, high = result["intervals"]["macro_f1"]
    assert low <= result["metrics"]["macro_f1"] <= high
    folder_statements = result["statements"]["held_out"]["folder"]
    assert folder_statements["slice"]["metrics"]["n"] == result["slices"]
    assert folder_statements["scan"]["metrics"]["n"] == result["groups"]
    for name in ("evaluation.json", "evaluation.md", "confusion.png", "reliability.png"):
        assert (tmp_path / "o" / name).stat().st_size > 0
    by_dir = runner.invoke(
        cli, ["evaluate", str(folder), "--artifact", str(trained["artifact_dir"]), "--json"], env=env
    )
    assert by_dir.exit_code == 0, by_dir.output
    again = json.loads(by_dir.output[by_dir.output.index("{\n") :])
    assert again["metrics"]["confusion_matrix"] == result["metrics"]["confusion_matrix"]
    model, card = load_artifact(trained["artifact_dir"])
    files = sorted((folder / "Cyst").glob("*.jpg"))
    direct = np.asarray(
        model.predict(
            np.concatenate([image_file_to_model_input(f, card.image_size) for f in files]), verbose=0
        )
    )
    assert (
        result["metrics"]["confusion_matrix"][0] == np.bincount(direct.argmax(axis=1), minlength=4).tolist()
    )

    both = runner.invoke(cli, ["evaluate", str(folder)], env=env)
    assert both.exit_code != 0 and "exactly one of --model-version and --artifact" in both.output
    empty = tmp_path / "empty"
    empty.mkdir()
    nothing = runner.invoke(
        cli, ["evaluate", str(empty), "--artifact", str(trained["artifact_dir"])], env=env
    )
    assert nothing.exit_code != 0 and "holds no file" in nothing.output  # refused before the model loads
    (empty / "notes.txt").write_text("not a class folder")
    unsorted = runner.invoke(
        cli, ["evaluate", str(empty), "--artifact", str(trained["artifact_dir"])], env=env
    )
    assert unsorted.exit_code != 0 and "no class folders" in unsorted.output


def test_min_new_labels_waits_for_enough_new_labels(trained: dict[str, Any]) -> None:
    """`train --min-new-labels 1` does nothing right after a run; one new label makes training due."""
    result = trained["runner"].invoke(cli, ["train", "--min-new-labels", "1"], env=trained["env"])
    assert result.exit_code == 0 and "nothing to do" in result.output
    with trained["sessions"].begin() as session:
        add_label(
            session,
            sop_instance_uid=generate_uid(),
            label="Normal",
            source="test",
            now=dt.datetime.now(dt.UTC),
        )
    with trained["sessions"]() as session:
        new = new_labels_since_last_version(session)
    assert new == 1 and training_due(new_labels=new, min_new_labels=1)
