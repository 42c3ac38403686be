"""Settings: read once from KIDNEYCT_* environment variables, with documented defaults."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from pydantic import ValidationError

from kidneyct.settings import DEFAULT_DATA_DIR, Settings


@pytest.fixture(autouse=True)
def _clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    # The developer's or CI's own KIDNEYCT_* variables must not leak into these tests.
    for name in list(os.environ):
        if name.startswith("KIDNEYCT_"):
            monkeypatch.delenv(name)


def test_defaults_are_the_embedded_setup() -> None:
    """Without environment variables: SQLite and the database queue under ./kidneyct-data."""
    settings = Settings()
    assert settings.data_dir == DEFAULT_DATA_DIR == Path("kidneyct-data")
    assert settings.database_url is None
    assert settings.resolved_database_url() == f"sqlite:///{(DEFAULT_DATA_DIR / 'kidneyct.db').resolve()}"
    assert settings.kafka_bootstrap is None
    assert settings.uses_kafka is False
    assert settings.resolved_archive_dir() == DEFAULT_DATA_DIR / "archive"
    assert settings.resolved_model_dir() == DEFAULT_DATA_DIR / "models"
    assert settings.ae_title == "KIDNEYCT"
    assert settings.log_redact_accession is False


def test_environment_variables_override_defaults(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """KIDNEYCT_<FIELD> sets each field, with type conversion."""
    monkeypatch.setenv("KIDNEYCT_DATABASE_URL", "postgresql+psycopg://kidney:secret@db:5432/kidneyct")
    monkeypatch.setenv("KIDNEYCT_KAFKA_BOOTSTRAP", "broker-1:9092,broker-2:9092")
    monkeypatch.setenv("KIDNEYCT_ARCHIVE_DIR", str(tmp_path / "archive"))
    monkeypatch.setenv("KIDNEYCT_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("KIDNEYCT_BATCH_SIZE", "8")
    monkeypatch.setenv("KIDNEYCT_LOG_REDACT_ACCESSION", "true")
    settings = Settings()
    assert settings.resolved_database_url() == "postgresql+psycopg://kidney:secret@db:5432/kidneyct"
    assert settings.uses_kafka is True
    assert settings.kafka_bootstrap == "broker-1:9092,broker-2:9092"
    assert settings.resolved_archive_dir() == tmp_path / "archive"
    assert settings.resolved_model_dir() == tmp_path / "data" / "models"
    assert settings.batch_size == 8
    assert settings.log_redact_accession is True


def test_database_password_is_not_shown(monkeypatch: pytest.MonkeyPatch) -> None:
    """The database URL is a secret: repr and str of the settings do not show the password."""
    monkeypatch.setenv("KIDNEYCT_DATABASE_URL", "postgresql+psycopg://kidney:hunter2@db/kidneyct")
    settings = Settings()
    assert "hunter2" not in repr(settings)
    assert "hunter2" not in str(settings)


def test_invalid_value_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    """A value of the wrong type fails at start-up, naming the setting."""
    monkeypatch.setenv("KIDNEYCT_BATCH_SIZE", "many")
    with pytest.raises(ValidationError, match="batch_size"):
        Settings()


def test_settings_are_immutable() -> None:
    """Settings are created once and passed down; nobody changes them on the way."""
    settings = Settings()
    with pytest.raises(ValidationError):
        settings.batch_size = 1  # type: ignore[misc]


def test_every_setting_is_documented() -> None:
    """Each field has a description, which the settings table of docs/settings.md shows."""
    undocumented = [name for name, field in Settings.model_fields.items() if not field.description]
    assert undocumented == []
