"""The listener's release hints: one per study an association stored, on release only; a failed
publish is logged (no patient data) and never raised; the catalogue skips hints quietly."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pytest
from ingest_support import MemoryPublisher, listener_settings, running_listener, send_files
from structlog.testing import capture_logs

from ingest import statuses
from ingest.catalog import parse_records
from ingest.release_hints import ReleaseHints
from storage.stream.contract import Record, StreamUnavailable
from storage.stream.events import ReleaseHint
from training.synth.generate import generate

T0 = dt.datetime(2026, 12, 6, 12, 0, tzinfo=dt.UTC)


class Recording:
    def __init__(self, fail: bool = False) -> None:
        self.messages: list[tuple[str, bytes, bytes]] = []
        self.fail = fail

    def publish(self, topic: str, key: bytes, value: bytes) -> None:
        if self.fail:
            raise StreamUnavailable("broker down")
        self.messages.append((topic, key, value))

    def close(self) -> None:
        pass


def test_a_released_association_publishes_one_hint_per_study_keyed_by_the_study() -> None:
    """Two studies over one association: two hints on the instances topic, keyed like their instances."""
    publisher = Recording()
    hints = ReleaseHints(publisher=publisher, topic="instances", clock=lambda: T0)
    for study in ("1.2.2", "1.2.1", "1.2.2"):
        hints.stored(7, study)
    hints.stored(8, "1.9")
    assert hints.released(7) == 2
    assert [(t, k) for t, k, _ in publisher.messages] == [("instances", b"1.2.1"), ("instances", b"1.2.2")]
    assert ReleaseHint.of_message(publisher.messages[0][2]) == ReleaseHint("1.2.1", T0.isoformat())
    assert hints.released(7) == 0  # forgotten once released


def test_an_aborted_association_publishes_nothing() -> None:
    """Forgotten on abort or connection loss: the study may be partial, the timer decides."""
    publisher = Recording()
    hints = ReleaseHints(publisher=publisher, topic="instances", clock=lambda: T0)
    hints.stored(7, "1.2.1")
    hints.forget(7)
    assert hints.released(7) == 0 and publisher.messages == []


def test_a_hint_that_cannot_be_published_is_logged_not_raised() -> None:
    """Broker down at release: a warning naming the study UID and the error type, and the release goes on."""
    hints = ReleaseHints(publisher=Recording(fail=True), topic="instances", clock=lambda: T0)
    hints.stored(7, "1.2.1")
    with capture_logs() as logs:
        assert hints.released(7) == 0
    assert logs == [
        {
            "event": "release_hint_not_published",
            "study_instance_uid": "1.2.1",
            "error": "StreamUnavailable",
            "log_level": "warning",
        }
    ]


def test_the_catalogue_skips_a_hint_without_a_warning() -> None:
    """A hint on the instances stream is not an invalid event to the catalogue."""
    raw = ReleaseHint("1.2.1", T0.isoformat()).to_json()
    with capture_logs() as logs:
        assert parse_records([Record("instances", 0, 0, b"1.2.1", raw)]) == []
    assert logs == []
    assert json.loads(raw)["kind"] == "association_released"


@pytest.mark.parametrize("enabled", [True, False])
def test_the_listener_hints_each_released_association_unless_switched_off(
    tmp_path: Path, enabled: bool
) -> None:
    """Real associations: one hint per study per release after its instances; none with the setting off."""
    rows = generate(tmp_path / "synth", studies=2, slices=2, classes=["Stone"], seed=3, size=32)
    paths = [tmp_path / "synth" / r.path for r in rows]
    publisher = MemoryPublisher()
    settings = listener_settings(tmp_path / "archive", release_hints=enabled)
    with running_listener(settings, publisher) as (listener, _):
        assert send_files(listener.port, paths) == [statuses.SUCCESS] * 4
        assert send_files(listener.port, paths[:1]) == [statuses.SUCCESS]
    assert len(publisher.records) == 5
    studies = sorted({r.study_instance_uid for r in rows})
    hinted = [ReleaseHint.of_message(v) for _t, _k, v in publisher.hints]
    expected = [*studies, rows[0].study_instance_uid] if enabled else []
    assert [h.study_instance_uid for h in hinted if h is not None] == expected
