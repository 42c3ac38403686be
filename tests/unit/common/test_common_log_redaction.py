"""Log redaction: values a DICOM library quotes never reach the log, other text stays readable."""

from __future__ import annotations

import io
import json
import logging
import struct
import threading

import pytest
import structlog
from pydicom.filereader import read_dataset

from common.log import configure_logging
from fuzz import datasets

# Both quotes inside the value: its repr() escapes one of them (the fuzzed case had both by chance).
PATIENT_NAME = 'O\'Brien^Jane^"Marker"'


def _lines(err: str) -> list[dict]:
    return [json.loads(line) for line in err.splitlines() if line.strip()]


def _ui_swallowing_patient_name() -> bytes:
    """A CT slice whose SOP Instance UID (the UI element just before PatientName) declares 506
    bytes: its value swallows the elements after it, PatientName included (issue 23, item 4)."""
    ds = datasets.ct_slice()
    ds.PatientName = PATIENT_NAME
    data = bytearray(datasets.encode(ds, implicit=False))
    patient_name = data.find(b"\x10\x00\x10\x00PN")
    ui = data.rfind(b"UI", 0, patient_name) - 4
    assert data[ui : ui + 4] == b"\x08\x00\x18\x00"  # (0008,0018) SOP Instance UID
    data[ui + 6 : ui + 8] = struct.pack("<H", 506)
    return bytes(data)


def test_a_ui_value_that_swallows_the_patient_name_leaves_no_trace_in_the_log(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """pydicom logs and warns about the 506-byte UI value, quoting its raw bytes: both lines are
    JSON, say what was wrong, and hold no byte of the patient's name."""
    configure_logging(fmt="json", level="info")
    ds = read_dataset(io.BytesIO(_ui_swallowing_patient_name()), is_implicit_VR=False, is_little_endian=True)
    for element in ds:
        _ = element.value  # pydicom validates (and complains) when a value is converted
    err = capsys.readouterr().err
    lines = _lines(err)
    complaints = [
        line for line in lines if "exceeds the maximum length of 64 allowed for VR UI" in line["event"]
    ]
    assert {line["logger"] for line in complaints} == {"pydicom", "py.warnings"}, err
    for part in ("Brien", "Jane", "Marker", "\\x10\\x00PN"):
        assert part not in err, part
    assert all("Invalid value for VR UI: [value]" in line["event"] for line in complaints)


def test_a_commands_error_and_traceback_paths_are_not_mangled(capsys: pytest.CaptureFixture[str]) -> None:
    """Text that no DICOM library wrote (alembic's error, a traceback's file paths) is left whole:
    `kidneyct db downgrade nonsense` must not print "Can'[value]'nonsense'" (issue 23, item 11)."""
    configure_logging(fmt="json", level="info")
    logging.getLogger("alembic.runtime.migration").error("Can't locate revision identified by 'nonsense'")

    def crash() -> None:
        raise RuntimeError("Can't locate revision identified by 'nonsense'")

    thread = threading.Thread(target=crash)
    thread.start()
    thread.join()
    lines = _lines(capsys.readouterr().err)
    assert lines[0]["event"] == "Can't locate revision identified by 'nonsense'"
    assert "RuntimeError: Can't locate revision identified by 'nonsense'" in lines[1]["exception"]
    assert f'File "{__file__}", line' in lines[1]["exception"]


def test_our_own_events_keep_their_quotes(capsys: pytest.CaptureFixture[str]) -> None:
    """Our events are not free text from a parser: a quoted word in them is kept (patient data is
    removed from them by key, not by quotes)."""
    configure_logging(fmt="json", level="info")
    structlog.get_logger("test").warning("setting_rejected", error="expected 'json' or 'console'")
    assert _lines(capsys.readouterr().err)[0]["error"] == "expected 'json' or 'console'"
