"""`kidneyct serve` at default settings: a study sent in one association is complete seconds after
its release (not after the 60 s stable age), and a late instance in a new association revises it."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from classifier_kit import make_tiny_artifact, register
from e2e_kit import kidneyct, kidneyct_env, query, wait_for

import migrations
from kidneyct.send_files import send_files
from storage.db.engine import make_engine, make_session_factory
from training.synth.generate import generate

pytestmark = pytest.mark.slow
SLICES = 6
# Far below the default 60 s stable age, with room for a loaded CI machine.
WITHIN_S = 45.0


def reports(url: str) -> tuple[list[int], list[tuple[int, bool]]]:
    """The revisions of the study's reports so far, and its results' (n_instances, complete)."""
    revisions = query(url, "SELECT revision FROM result_reports ORDER BY revision")
    results = query(url, "SELECT n_instances, complete FROM study_results")
    return [int(r) for (r,) in revisions], [(int(n), bool(c)) for n, c in results]


def test_a_study_sent_in_one_association_completes_seconds_after_release(tmp_path: Path) -> None:
    """Default settings: complete within seconds of the last slice; a late slice brings revision 2 as fast."""
    data = tmp_path / "data"
    data.mkdir()
    url = f"sqlite:///{data / 'kidneyct.db'}"
    migrations.upgrade(url)
    engine = make_engine(url)
    directory, sha = make_tiny_artifact(tmp_path / "model", "tiny-1", seed=1)
    register(make_session_factory(engine), version="tiny-1", directory=directory, sha256=sha, active=True)
    engine.dispose()
    rows = generate(tmp_path / "synth", studies=1, slices=SLICES + 1, classes=["Stone"], seed=3, size=64)
    paths = [tmp_path / "synth" / r.path for r in rows]

    with kidneyct(["serve"], kidneyct_env(data), tmp_path / "serve.log") as serve:
        port = int(serve.wait_event("listener_started", timeout_s=180)["port"])
        assert all(r.ok for r in send_files("127.0.0.1", port, paths[:SLICES], called_ae="KIDNEYCT"))
        sent = time.monotonic()
        wait_for(
            lambda: reports(url) == ([1], [(SLICES, True)]),
            timeout_s=WITHIN_S,
            what="the study's first report",
        )
        first_s = time.monotonic() - sent

        assert all(r.ok for r in send_files("127.0.0.1", port, paths[SLICES:], called_ae="KIDNEYCT"))
        sent = time.monotonic()
        wait_for(
            lambda: reports(url) == ([1, 2], [(SLICES + 1, True)]),
            timeout_s=WITHIN_S,
            what="the revised report after a late slice",
        )
        late_s = time.monotonic() - sent
    released = [e for e in serve.events if e.get("event") == "association_released"]
    assert [e["release_hints"] for e in released] == [1, 1]
    print(f"last slice -> study complete: {first_s:.1f} s; late slice -> revision 2: {late_s:.1f} s")
