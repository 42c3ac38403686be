"""`kidneyct serve` on the embedded default, killed with SIGKILL mid-study and restarted, loses nothing."""

from __future__ import annotations

from pathlib import Path

import pytest
from classifier_kit import make_tiny_artifact, register
from e2e_kit import Process, kidneyct_env, predicted_sops, query, wait_for

import migrations
from kidneyct.cli import SUBCOMMANDS  # noqa: F401  (the CLI must import cleanly before we spawn it)
from kidneyct.send_files import StoreResult, send_files
from storage.db.engine import make_engine, make_session_factory
from training.synth.generate import generate

SLICES = 30
KILL_AFTER = 12


@pytest.fixture
def embedded(tmp_path: Path) -> tuple[Path, str]:
    """A data folder whose SQLite database holds an active tiny (32x32, random weights) model."""
    data = tmp_path / "data"
    data.mkdir()
    url = f"sqlite:///{data / 'kidneyct.db'}"
    migrations.upgrade(url)
    engine = make_engine(url)
    directory, sha = make_tiny_artifact(tmp_path / "model", "tiny-1", seed=1)
    register(make_session_factory(engine), version="tiny-1", directory=directory, sha256=sha, active=True)
    engine.dispose()
    return data, url


@pytest.mark.slow
def test_sigkill_mid_study_then_restart_every_acknowledged_instance_gets_one_prediction(
    tmp_path: Path, embedded: tuple[Path, str]
) -> None:
    """Instances acknowledged before a SIGKILL, and the rest re-sent after it, all end with exactly one prediction."""
    data, url = embedded
    rows = generate(tmp_path / "synth", studies=1, slices=SLICES, classes=["Stone"], seed=3, size=64)
    paths = [tmp_path / "synth" / r.path for r in rows]
    sop_of = {tmp_path / "synth" / r.path: r.sop_instance_uid for r in rows}
    env = kidneyct_env(data, batch_size=4, study_stable_age_s=1, model_poll_s=1)

    first = Process([*_serve()], env, tmp_path / "serve-1.log")
    port = int(first.wait_event("listener_started", timeout_s=120)["port"])
    acknowledged: list[StoreResult] = []
    predicted_at_kill: list[int] = []

    def kill_mid_study(result: StoreResult) -> None:
        if result.ok:
            acknowledged.append(result)
            if len(acknowledged) == KILL_AFTER:
                first.kill()
                predicted_at_kill.append(len(predicted_sops(url)))

    results = send_files("127.0.0.1", port, paths, called_ae="KIDNEYCT", on_result=kill_mid_study)
    first.terminate()
    assert first.proc.returncode == -9
    assert len(acknowledged) == KILL_AFTER
    unacknowledged = [r.path for r in results if not r.ok]
    assert len(unacknowledged) == SLICES - KILL_AFTER  # the rest were cut off by the kill

    second = Process([*_serve()], env, tmp_path / "serve-2.log")
    try:
        port = int(second.wait_event("listener_started", timeout_s=120)["port"])
        # A sender retries what was not acknowledged, plus one that was (a duplicate must not count twice).
        resent = send_files("127.0.0.1", port, [*unacknowledged, acknowledged[0].path], called_ae="KIDNEYCT")
        assert all(r.ok for r in resent)
        wanted = {sop_of[p] for p in paths}

        def all_predicted() -> dict[str, int] | None:
            counts = predicted_sops(url)
            return counts if wanted <= counts.keys() else None

        counts = wait_for(
            all_predicted,
            timeout_s=240,
            what=f"predictions of all {SLICES} instances",
        )
        # The study result counts every instance once.
        wait_for(
            lambda: query(url, "SELECT n_instances FROM study_results WHERE n_instances = :n", n=SLICES),
            timeout_s=60,
            what="the study result",
        )
    finally:
        second.terminate()
    assert {sop: counts[sop] for sop in wanted} == dict.fromkeys(wanted, 1), (
        f"{predicted_at_kill[0]} predicted when killed"
    )
    (study,) = query(url, "SELECT study_instance_uid, n_instances FROM study_results")
    assert tuple(study) == (rows[0].study_instance_uid, SLICES)
    assert second.proc.returncode == 0


def _serve() -> list[str]:
    from e2e_kit import KIDNEYCT

    return [*KIDNEYCT, "serve"]
