"""docs/conformance.md agrees with the code: SOP classes, transfer syntaxes (in order), statuses,
implementation identification and the DICOM settings' defaults."""

from __future__ import annotations

import re
from pathlib import Path

from ingest.ae import (
    ACCEPTED_TRANSFER_SYNTAXES,
    CT_SOP_CLASSES,
    IMPLEMENTATION_CLASS_UID,
    IMPLEMENTATION_VERSION_NAME,
    VERIFICATION,
)
from ingest.statuses import STATUS_FOR_FAILURE, SUCCESS
from kidneyct.settings import Settings

DOC = Path(__file__).resolve().parents[3] / "docs" / "conformance.md"


def _table(name: str) -> list[list[str]]:
    """The body rows of the table after `<!-- table:name -->`, cells stripped of backticks."""
    text = DOC.read_text()
    start = text.index(f"<!-- table:{name} -->")
    rows = []
    for line in text[start:].splitlines()[1:]:
        if not line.startswith("|"):
            if rows:
                break
            continue
        rows.append([cell.strip().strip("`") for cell in line.strip().strip("|").split("|")])
    return [r for r in rows[2:] if not r[0].startswith("**")]  # no header, no separator, no group rows


def test_sop_class_table_matches_the_ae() -> None:
    """The SOP classes table lists exactly Verification, CT and Enhanced CT, as SCP."""
    rows = _table("sop-classes")
    assert {r[1] for r in rows} == {VERIFICATION, *CT_SOP_CLASSES}
    assert all(r[2:] == ["No", "Yes"] for r in rows)


def test_transfer_syntax_table_matches_the_ae_in_order() -> None:
    """The transfer syntaxes table is the accepted list, in the order the AE prefers them."""
    assert [r[1] for r in _table("transfer-syntaxes")] == list(ACCEPTED_TRANSFER_SYNTAXES)


def test_status_table_matches_the_failure_map() -> None:
    """Every (code, reason) pair of the status table is one the code answers, and vice versa."""
    documented = {(int(r[1], 16), r[2]) for r in _table("statuses")}
    in_code = {(code, failure.value) for failure, code in STATUS_FOR_FAILURE.items()} | {(SUCCESS, "")}
    assert documented == in_code


def test_implementation_identification_matches() -> None:
    rows = dict((r[0], r[1]) for r in _table("implementation"))
    assert rows["Implementation Class UID"] == IMPLEMENTATION_CLASS_UID
    assert rows["Implementation Version Name"] == IMPLEMENTATION_VERSION_NAME


def test_configuration_defaults_match_the_settings() -> None:
    """Each single-setting row's default is the setting's default."""
    defaults = Settings.model_fields
    for setting, default, _meaning in _table("configuration"):
        if "," in setting or default.startswith("("):
            continue
        field = re.sub(r"^KIDNEYCT_", "", setting).lower()
        assert str(defaults[field].default).lower() == default.lower(), setting


def test_deadlines_table_matches_the_settings_and_names_the_tests_that_hold_it() -> None:
    """Each connection deadline of 3.2.1.2 names its setting with the setting's default, and a
    test in test_ingest_deadlines.py that checks the socket is closed by it."""
    tests = (Path(__file__).parent / "test_ingest_deadlines.py").read_text()
    rows = _table("deadlines")
    assert len(rows) == 5
    for _what, setting, _start, _then, test in rows:
        match = re.fullmatch(r"KIDNEYCT_(\w+)` \(([\d.]+)\)", setting)
        assert match is not None, setting
        field, default = match.group(1).lower(), match.group(2)
        assert str(Settings.model_fields[field].default) == default, setting
        assert f"def {test}(" in tests, test
