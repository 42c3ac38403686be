"""The fuzzer's CI subset: a few hundred malformed C-STOREs and PDU abuses against a real
`kidneyct listen` process (embedded default, loopback). None may be wrongly accepted, crash the
listener, leak a patient marker into its log, write outside the archive, leave a temporary file or
hold a connection open; every log line is JSON; valid controls are stored and a valid sender is
served at the end. One decompression bomb of each kind (RLE, deflate, JPEG 2000, native) is refused
with the listener's peak RSS during its category within 100 MiB of where the category started."""

from __future__ import annotations

from pathlib import Path

import pytest

from fuzz.run import REPO, campaign, quiet_fuzzer_side
from fuzz.slowloris import SLOW_CASES, slow_campaign

pytestmark = pytest.mark.slow


def test_fuzz_subset_finds_nothing(tmp_path: Path) -> None:
    """16 cases per C-STORE category, 4 per PDU category and 1 per bomb kind (316 cases) find no fault."""
    with quiet_fuzzer_side():
        result = campaign(
            root=REPO,
            work_dir=tmp_path,
            per_category=16,
            pdu_per_category=4,
            pdu_wait_s=8.0,
            settings={"KIDNEYCT_ASSOCIATION_ESTABLISH_TIMEOUT_S": "2"},
            bombs_per_category=1,
        )
    rows = {r["category"]: r for r in [*result["store_rows"], *result["pdu_rows"]]}
    assert result["cases"] >= 250
    assert result["alive_at_end"] and result["valid_sender_after_campaign"] == "0x0000"
    assert {name: r["wrongly_accepted"] for name, r in rows.items() if r["wrongly_accepted"]} == {}
    assert {name: r["crashes"] for name, r in rows.items() if r["crashes"]} == {}
    assert {name: r["wrongly_refused"] for name, r in rows.items() if r.get("wrongly_refused")} == {}
    bombs = ("rle_bomb", "deflate_bomb", "j2k_bomb", "native_absurd_dimensions")
    assert {name: rows[name]["answers"] for name in bombs} == {name: {"0xC004": 1} for name in bombs}
    grew = {name: rows[name]["peak_rss_mib"] - rows[name]["rss_before_mib"] for name in bombs}
    assert {name: mib for name, mib in grew.items() if mib >= 100} == {}
    assert rows["valid_control"]["answers"] == {"0x0000": 16}
    held_open = {name: r["answers"] for name, r in rows.items() if "open" in r["answers"]}
    assert held_open == {}
    assert result["log_lines"] > 0 and result["log_lines_not_json"] == 0
    assert result["log_lines_with_patient_marker"] == 0
    assert result["files_outside_archive"] == 0
    assert result["temp_files_left"] == 0


def test_fuzz_subset_slow_peers_are_closed_by_their_deadlines(tmp_path: Path) -> None:
    """4 cases of each slow category (a P-DATA trickled byte by byte, a silent association, half an
    A-ASSOCIATE-RQ, a command whose dataset never comes, a PDV claiming 4 GiB), against a listener
    with deadlines of seconds: every socket is closed by its deadline, nothing is left behind."""
    with quiet_fuzzer_side():
        result = slow_campaign(root=REPO, work_dir=tmp_path, per_category=4)
    rows = {r["category"]: r for r in result["slow_rows"]}
    assert set(rows) == set(SLOW_CASES)
    assert {name: r["closed_in_time"] for name, r in rows.items()} == {name: 4 for name in SLOW_CASES}
    assert all(r["past_deadline"] == 0 and r["crashes"] == 0 for r in rows.values())
    # The listener says why: an A-ABORT first, except before association (closed).
    assert rows["pdv_length_huge"]["answers"] == {"ABORT": 4}
    assert rows["slowloris_pdata"]["answers"] == {"ABORT": 4}
    assert result["alive_at_end"] and result["temp_files_left"] == 0
