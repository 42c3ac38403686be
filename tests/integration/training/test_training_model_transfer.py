"""`models export` from a SQLite installation, `models import` into PostgreSQL: same model, same predictions."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
from pathlib import Path

import keras
import numpy as np
import pytest
from click.testing import CliRunner

import migrations
from classifier.model.artifact import save_artifact
from classifier.model.network import build_model
from classifier.model.serving import load_serving_model
from kidneyct.cli import cli
from storage.db.engine import make_engine, make_session_factory
from storage.db.model_versions import get_model_version, register_model_version
from training.model_transfer import REGISTRATION_FILE

pytestmark = pytest.mark.postgres
NOW_ISO = "2026-11-29T12:00:00+00:00"


def _sqlite_site(tmp_path: Path) -> tuple[dict[str, str], str]:
    """A SQLite installation holding one candidate: a Flatten head at 64 px with rescale normalisation."""
    data = tmp_path / "site-a"
    url = f"sqlite:///{data / 'kidneyct.db'}"
    data.mkdir()
    migrations.upgrade(url)
    keras.utils.set_random_seed(21)
    model = build_model(image_size=64, head="flatten", normalization="rescale")
    card = save_artifact(
        model,
        data / "models" / "v-a",
        {"version": "v-a", "normalization": "rescale", "metrics": {"macro_f1": 0.7}},
    )
    engine = make_engine(url)
    with make_session_factory(engine).begin() as session:
        register_model_version(
            session,
            version="v-a",
            artifact_uri=(data / "models" / "v-a").resolve().as_uri(),
            sha256=card.weights_sha256,
            card=dataclasses.asdict(card),
            metrics={"grouped_test": {"macro_f1": 0.7}},
            manifest_hash="abc123",
            now=dt.datetime.fromisoformat(NOW_ISO),
        )
    engine.dispose()
    return {"KIDNEYCT_DATA_DIR": str(data), "KIDNEYCT_LOG_FORMAT": "json"}, url


def test_export_from_sqlite_and_import_into_postgresql_predicts_the_same(
    tmp_path: Path, postgres_url: str
) -> None:
    """The exported folder carries card and registration; the PostgreSQL site serves the same probabilities."""
    env_a, url_a = _sqlite_site(tmp_path)
    exported = tmp_path / "export"
    runner = CliRunner()
    result = runner.invoke(cli, ["models", "export", "v-a", str(exported)], env=env_a)
    assert result.exit_code == 0, result.output
    registration = json.loads((exported / REGISTRATION_FILE).read_text())
    assert (
        registration["metrics"] == {"grouped_test": {"macro_f1": 0.7}}
        and registration["status"] == "candidate"
    )

    migrations.upgrade(postgres_url)
    env_b = {"KIDNEYCT_DATA_DIR": str(tmp_path / "site-b"), "KIDNEYCT_DATABASE_URL": postgres_url}
    result = runner.invoke(cli, ["models", "import", str(exported)], env=env_b)
    assert result.exit_code == 0, result.output
    again = runner.invoke(cli, ["models", "import", str(exported)], env=env_b)
    assert again.exit_code == 1 and "already registered" in again.output

    engines = [make_engine(url_a), make_engine(postgres_url)]
    try:
        rows = []
        for engine in engines:
            with make_session_factory(engine)() as session:
                rows.append(get_model_version(session, version="v-a"))
        a, b = rows
        assert b is not None and a is not None
        assert b.metrics == a.metrics and b.manifest_hash == "abc123" and b.status == "candidate"
        assert b.card["extra"]["transfer"]["exported_at"] == registration["exported_at"]
        assert b.artifact_uri.startswith((tmp_path / "site-b").resolve().as_uri())
        served_a, served_b = load_serving_model(a), load_serving_model(b)
        assert (served_b.card.head, served_b.card.normalization) == ("flatten", "rescale")
        x = np.random.default_rng(0).uniform(0, 255, (8, 64, 64, 3)).astype("float32")
        np.testing.assert_array_equal(served_a.predict(x, 8), served_b.predict(x, 8))
    finally:
        for engine in engines:
            engine.dispose()


def test_a_tampered_export_is_refused_and_registers_nothing(tmp_path: Path, postgres_url: str) -> None:
    """Weights that no longer match the card: a clear error, no row, no folder."""
    env_a, _ = _sqlite_site(tmp_path)
    exported = tmp_path / "export"
    assert CliRunner().invoke(cli, ["models", "export", "v-a", str(exported)], env=env_a).exit_code == 0
    weights = exported / "model.weights.h5"
    weights.write_bytes(weights.read_bytes()[:-10] + b"0123456789")
    migrations.upgrade(postgres_url)
    env_b = {"KIDNEYCT_DATA_DIR": str(tmp_path / "site-b"), "KIDNEYCT_DATABASE_URL": postgres_url}
    result = CliRunner().invoke(cli, ["models", "import", str(exported)], env=env_b)
    assert result.exit_code == 1 and "sha256" in result.output
    engine = make_engine(postgres_url)
    try:
        with make_session_factory(engine)() as session:
            assert get_model_version(session, version="v-a") is None
    finally:
        engine.dispose()
    assert not (tmp_path / "site-b" / "models" / "v-a").exists()
