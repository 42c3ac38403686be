"""Progress bars: on a terminal or when asked, silent otherwise; the work reports every stage to the end."""

from __future__ import annotations

import datetime as dt
import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import migrations
from common.progress import progress_bars, progress_wanted
from common.vocabulary import CLASS_NAMES
from storage.db.engine import make_engine, make_session_factory
from training.dedup import phash_pairs
from training.importer import import_folder


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.mark.parametrize(
    ("flag", "stream", "log_format", "shown"),
    [
        (None, _Terminal(), "auto", True),
        (None, _Terminal(), "json", False),  # JSON logs on a terminal: no bars between the lines
        (None, io.StringIO(), "console", False),  # piped or in a container: no bars
        (True, io.StringIO(), "json", True),  # --progress asks for them anyway
        (False, _Terminal(), "auto", False),
    ],
)
def test_progress_is_shown_on_a_terminal_or_when_asked(
    flag: bool | None, stream: io.StringIO, log_format: str, shown: bool
) -> None:
    """--progress/--no-progress decide; by default bars only on a terminal and not with JSON logs."""
    assert progress_wanted(flag, log_format=log_format, stream=stream) is shown


def test_bars_report_each_stage_and_silence_writes_nothing() -> None:
    """An enabled stage ends at total/total; disabled stages write nothing at all."""
    out = io.StringIO()
    with progress_bars(True, stream=out) as stages:
        advance = stages("loading images")
        for done in range(1, 8):
            advance(done, 7)
    assert "loading images" in out.getvalue() and "7/7" in out.getvalue()
    quiet = io.StringIO()
    with progress_bars(False, stream=quiet) as stages:
        stages("loading images")(3, 7)
    assert quiet.getvalue() == ""


def test_import_folder_reports_every_image(tmp_path: Path) -> None:
    """import-folder's callback goes from 1 to the number of images."""
    for cls in CLASS_NAMES:
        (tmp_path / "root" / cls).mkdir(parents=True)
        for i in range(2):
            Image.fromarray(np.full((8, 8), i * 40 + len(cls), np.uint8)).save(
                tmp_path / "root" / cls / f"{i}.png"
            )
    url = f"sqlite:///{tmp_path / 'k.db'}"
    migrations.upgrade(url)
    engine = make_engine(url)
    calls: list[tuple[int, int]] = []
    with make_session_factory(engine).begin() as session:
        import_folder(
            session,
            root=tmp_path / "root",
            classes=CLASS_NAMES,
            source="t",
            now=dt.datetime.now(dt.UTC),
            progress=lambda done, total: calls.append((done, total)),
        )
    engine.dispose()
    assert calls == [(i, 8) for i in range(1, 9)]


def test_phash_pairs_reports_its_chunks() -> None:
    """The all-pairs comparison reports the images compared after each chunk, up to all of them."""
    hashes = np.random.default_rng(0).integers(0, 2, size=(10, 64)).astype(bool)
    calls: list[tuple[int, int]] = []
    phash_pairs(hashes, 4, chunk=4, progress=lambda d, t: calls.append((d, t)))
    assert calls == [(4, 10), (8, 10), (10, 10)]
