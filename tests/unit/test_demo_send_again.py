"""The demo sends an instance that was not acknowledged once more, on a new association, and stops
with one line when the second try fails too (a real pynetdicom SCP on localhost, no mock)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import click
import pytest
from pynetdicom import AE, AllStoragePresentationContexts, evt

from common.vocabulary import CLASS_NAMES
from kidneyct.demo import Steps, _send
from training.synth.generate import generate

OUT_OF_RESOURCES = 0xA700


@contextmanager
def _scp(refusals_per_instance: int) -> Iterator[tuple[int, list[str]]]:
    """A storage SCP refusing each instance `refusals_per_instance` times before accepting it."""
    seen: list[str] = []

    def on_store(event: evt.Event) -> int:
        uid = str(event.request.AffectedSOPInstanceUID)
        seen.append(uid)
        return OUT_OF_RESOURCES if seen.count(uid) <= refusals_per_instance else 0x0000

    ae = AE(ae_title="DEMO-SCP")
    ae.supported_contexts = AllStoragePresentationContexts
    server = ae.start_server(("127.0.0.1", 0), block=False, evt_handlers=[(evt.EVT_C_STORE, on_store)])
    try:
        yield server.server_address[1], seen
    finally:
        server.shutdown()


def _study(tmp_path: Path) -> tuple[Path, list]:
    folder = tmp_path / "synth"
    rows = generate(folder, studies=1, slices=2, classes=CLASS_NAMES, seed=0, size=32)
    return folder, rows


def test_an_instance_refused_once_is_sent_again_and_said(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder, rows = _study(tmp_path)
    with _scp(refusals_per_instance=1) as (port, seen):
        _send(Steps(total=1), port, "DEMO-SCP", folder, rows)
    assert sorted(seen) == sorted(r.sop_instance_uid for r in rows for _ in range(2))
    assert "2 instance(s) not acknowledged; sending them again" in capsys.readouterr().out


def test_an_instance_refused_twice_stops_the_demo_with_one_line(tmp_path: Path) -> None:
    folder, rows = _study(tmp_path)
    with _scp(refusals_per_instance=2) as (port, _), pytest.raises(click.ClickException) as refused:
        _send(Steps(total=1), port, "DEMO-SCP", folder, rows)
    assert refused.value.format_message() == "2 instance(s) refused, first status 0xA700"


def test_studies_go_several_to_an_association_when_asked(tmp_path: Path) -> None:
    """The training part's batches: every instance of every study arrives once."""
    folder = tmp_path / "synth"
    rows = generate(folder, studies=3, slices=2, classes=CLASS_NAMES, seed=0, size=32)
    with _scp(refusals_per_instance=0) as (port, seen):
        _send(Steps(total=1), port, "DEMO-SCP", folder, rows, per_association=2)
    assert sorted(seen) == sorted(r.sop_instance_uid for r in rows)
