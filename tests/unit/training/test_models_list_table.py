"""`models list` names the held-out set behind every figure it shows."""

from __future__ import annotations

import datetime as dt
from types import SimpleNamespace

from kidneyct.commands.models import version_table


def _version(name: str, metrics: dict | None, note: str | None = None) -> SimpleNamespace:  # type: ignore[type-arg]
    return SimpleNamespace(
        version=name,
        status="candidate",
        created_at=dt.datetime(2026, 12, 6, 12, 0),
        metrics=metrics,
        manifest_hash="ab" * 32,
        promotion_note=note,
        shadow=False,
        card={},
    )


def test_grouped_test_and_latest_ids_figures_have_their_own_columns_and_legend() -> None:
    """Each figure sits under the set it was computed on, with its slice count; the legend explains the note's figures."""
    trained = _version(
        "v-trained",
        {"grouped_test": {"macro_f1": 0.304, "n": 554}, "latest_ids_test": {"macro_f1": 0.385, "n": 1117}},
        note="refused: does not clearly beat ridge: candidate macro-F1 0.354 vs ...",
    )
    imported = _version("v-imported", {})
    lines = version_table([trained, imported])  # type: ignore[list-item]
    header, row, other = lines[0], lines[1], lines[2]
    assert "TEST-F1" in header and "LATEST-F1" in header
    assert header.index("TEST-F1") == row.index("0.304 n=554")
    assert header.index("LATEST-F1") == row.index("0.385 n=1117")
    assert header.index("PARITY") == row.index(
        "-  ", header.index("PARITY")
    )  # trained here: no import parity
    assert "0.354" in row  # the note stays, and the legend says where its figure comes from
    assert other.count(" - ") >= 2  # an imported version has neither figure
    legend = "\n".join(lines[3:])
    assert "grouped test split" in legend and "latest-IDs block" in legend
    assert "test split and the latest IDs together" in legend
