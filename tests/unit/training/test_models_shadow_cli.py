"""`kidneyct models shadow` and promotion ending a shadow, on the embedded SQLite database."""

from __future__ import annotations

import datetime as dt

from click.testing import CliRunner

import migrations
from kidneyct.cli import cli
from storage.db.engine import make_engine, make_session_factory
from storage.db.model_versions import activate_model_version, register_model_version
from storage.db.shadow_models import set_shadow, shadow_versions

T0 = dt.datetime(2026, 11, 1, tzinfo=dt.UTC)


def test_shadow_on_list_off_and_refusals(sqlite_url: str) -> None:
    """A candidate becomes a shadow and is listed; --off ends it; the active version and an unknown
    one are refused with their reason; promotion makes a shadow stop being one."""
    migrations.upgrade(sqlite_url)
    engine = make_engine(sqlite_url)
    sessions = make_session_factory(engine)
    with sessions.begin() as s:
        for v in ("A", "B"):
            register_model_version(
                s,
                version=v,
                artifact_uri="/x",
                sha256="0" * 64,
                card={},
                metrics={},
                manifest_hash=None,
                now=T0,
            )
        activate_model_version(s, version="A", now=T0)
    env = {"KIDNEYCT_DATABASE_URL": sqlite_url}

    def run(*args: str):  # noqa: ANN202 - click's Result
        return CliRunner().invoke(cli, ["models", "shadow", *args], env=env)

    assert run().output.strip() == "shadow model versions: none"
    assert run("B").exit_code == 0
    assert run().output.strip() == "shadow model versions: B"
    refused = run("A")
    assert refused.exit_code == 1 and "A is the active model version" in refused.output
    unknown = run("Z")
    assert unknown.exit_code == 1 and "no model version 'Z'" in unknown.output
    assert run("B", "--off").exit_code == 0
    assert run().output.strip() == "shadow model versions: none"

    with sessions.begin() as s:
        set_shadow(s, version="B", on=True)
        activate_model_version(s, version="B", now=T0)  # active: no longer run as a shadow
        assert shadow_versions(s) == []
    engine.dispose()


def test_a_bad_backfill_window_promotes_nothing(sqlite_url: str) -> None:
    """`--backfill-since` is checked before the promotion: a bad duration leaves the versions as they were."""
    migrations.upgrade(sqlite_url)
    engine = make_engine(sqlite_url)
    sessions = make_session_factory(engine)
    with sessions.begin() as s:
        register_model_version(
            s,
            version="B",
            artifact_uri="/x",
            sha256="0" * 64,
            card={},
            metrics={},
            manifest_hash=None,
            now=T0,
        )
    result = CliRunner().invoke(
        cli,
        ["models", "promote", "B", "--force", "--reason", "t", "--backfill-since", "a week"],
        env={"KIDNEYCT_DATABASE_URL": sqlite_url},
    )
    assert result.exit_code == 2 and "not a duration" in result.output
    with sessions() as s:
        from storage.db.model_versions import get_model_version

        row = get_model_version(s, version="B")
        assert row is not None and row.status == "candidate"
    engine.dispose()
