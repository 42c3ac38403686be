"""Logging: patient-identifying DICOM attributes never reach the rendered log output."""

from __future__ import annotations

import json

import pytest
import structlog

from common.log import REDACTED, PatientDataRedactor, configure_logging

PATIENT = {
    "PatientName": "Doe^Jane",
    "PatientID": "PID-998877",
    "PatientBirthDate": "19700101",
    "OtherPatientIDs": "OTHER-4455",
    "PatientAddress": "12 Elm Street",
}
SECRETS = list(PATIENT.values())


def _json_lines(err: str) -> list[dict]:
    return [json.loads(line) for line in err.splitlines() if line.strip()]


def test_top_level_patient_attributes_are_redacted_in_json(capsys: pytest.CaptureFixture[str]) -> None:
    """PatientName, PatientID, PatientBirthDate, OtherPatientIDs, PatientAddress never appear in JSON logs."""
    configure_logging(fmt="json", level="info")
    structlog.get_logger("test").info("instance_archived", sop_instance_uid="1.2.3", **PATIENT)
    err = capsys.readouterr().err
    for secret in SECRETS:
        assert secret not in err
    (event,) = _json_lines(err)
    assert event["event"] == "instance_archived"
    assert event["sop_instance_uid"] == "1.2.3"
    assert all(event[key] == REDACTED for key in PATIENT)


def test_nested_and_snake_case_patient_attributes_are_removed(capsys: pytest.CaptureFixture[str]) -> None:
    """Patient attributes inside dicts and lists, and in snake_case, are removed too."""
    configure_logging(fmt="json", level="info")
    structlog.get_logger("test").warning(
        "instance_rejected",
        dataset={"Modality": "CT", **PATIENT, "nested": [{"patient_id": "PID-998877", "Rows": 512}]},
        patient_name="Doe^Jane",
    )
    err = capsys.readouterr().err
    for secret in SECRETS:
        assert secret not in err
    (event,) = _json_lines(err)
    assert event["dataset"] == {"Modality": "CT", "nested": [{"Rows": 512}]}
    assert event["patient_name"] == REDACTED


def test_accession_number_is_kept_unless_configured(capsys: pytest.CaptureFixture[str]) -> None:
    """AccessionNumber stays by default and is removed with redact_accession."""
    configure_logging(fmt="json", level="info")
    structlog.get_logger("test").info("study_completed", AccessionNumber="ACC-123")
    assert "ACC-123" in capsys.readouterr().err

    configure_logging(fmt="json", level="info", redact_accession=True)
    structlog.get_logger("test").info(
        "study_completed", AccessionNumber="ACC-123", extra={"AccessionNumber": "ACC-9"}
    )
    err = capsys.readouterr().err
    assert "ACC-123" not in err
    assert "ACC-9" not in err


def test_console_format_is_redacted_too(capsys: pytest.CaptureFixture[str]) -> None:
    """The readable terminal format goes through the same redaction."""
    configure_logging(fmt="console", level="info")
    structlog.get_logger("test").info("instance_archived", **PATIENT)
    err = capsys.readouterr().err
    assert "instance_archived" in err
    for secret in SECRETS:
        assert secret not in err


def test_context_variables_are_redacted(capsys: pytest.CaptureFixture[str]) -> None:
    """Patient data bound with bound_contextvars is removed as well."""
    configure_logging(fmt="json", level="info")
    with structlog.contextvars.bound_contextvars(PatientID="PID-998877", association="7"):
        structlog.get_logger("test").info("association_accepted")
    err = capsys.readouterr().err
    assert "PID-998877" not in err
    (event,) = _json_lines(err)
    assert event["association"] == "7"


def test_level_filters_lower_events(capsys: pytest.CaptureFixture[str]) -> None:
    """Events below the configured level are not written."""
    configure_logging(fmt="json", level="warning")
    log = structlog.get_logger("test")
    log.info("not_written")
    log.warning("written")
    assert [e["event"] for e in _json_lines(capsys.readouterr().err)] == ["written"]


def test_redactor_leaves_other_events_unchanged() -> None:
    """Events without patient data pass through untouched."""
    event = {"event": "batch_predicted", "n": 3, "tags": {"Modality": "CT"}, "uids": ["1.2", "1.3"]}
    assert PatientDataRedactor()(None, "info", dict(event)) == event


def test_capture_logs_works_after_configure_logging(capsys: pytest.CaptureFixture[str]) -> None:
    """After `configure_logging` (as every command's main runs it), a module-level logger's events
    are caught by capture_logs and not also written out (the conftest resets structlog per test)."""
    configure_logging(fmt="json", level="info")
    log = structlog.get_logger("test")  # made before the capture, as modules make theirs at import
    with structlog.testing.capture_logs() as logs:
        log.info("something_happened", n=1)
    assert logs == [{"event": "something_happened", "n": 1, "log_level": "info"}]
    assert capsys.readouterr().err == ""


def test_a_logger_used_before_a_reconfiguration_is_still_captured(capsys: pytest.CaptureFixture[str]) -> None:
    """A logger that already wrote under `configure_logging` (a worker started by a command in-process)
    is not frozen to that configuration: after a reconfiguration, a capture still reaches it."""
    configure_logging(fmt="json", level="info")
    log = structlog.get_logger("test")
    log.info("before_capture")
    structlog.reset_defaults()  # a later configuration, as the next test's or command's
    with structlog.testing.capture_logs() as logs:
        log.info("during_capture")
    assert [entry["event"] for entry in logs] == ["during_capture"]
    assert "during_capture" not in capsys.readouterr().err


_INTERLEAVING_SCRIPT = """
import logging, sys, threading
import structlog
from common.log import configure_logging

configure_logging(fmt="json", level="info")
log = structlog.get_logger("worker")
library = logging.getLogger("pynetdicom.dul")

def ours():
    for n in range(3000):
        log.warning("connection_closed", n=n)

def theirs():
    for n in range(3000):
        library.error("The received PDU is shorter than expected (%d)", n)

threads = [threading.Thread(target=f) for f in (ours, theirs, ours, theirs)]
for t in threads:
    t.start()
for t in threads:
    t.join()
"""


def test_lines_written_from_several_threads_never_interleave() -> None:
    """structlog's lines and the standard library's (pynetdicom's threads) share stderr: each line
    is written whole, so none lands between another's message and its newline."""
    import subprocess
    import sys

    result = subprocess.run(
        [sys.executable, "-c", _INTERLEAVING_SCRIPT], capture_output=True, text=True, timeout=120, check=True
    )
    lines = result.stderr.splitlines()
    assert len(lines) == 12000
    _json_lines(result.stderr)  # raises on the first line that is not JSON


def test_standard_library_warnings_and_thread_crashes_are_json_and_scrubbed(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """In JSON mode every line is JSON: library log records (pydicom, pynetdicom), `warnings` and
    an uncaught exception in a thread; values a DICOM library quotes (a patient's name) are replaced."""
    import logging
    import threading

    from pydicom import config
    from pydicom.valuerep import validate_value

    configure_logging(fmt="json", level="info")
    logging.getLogger("pydicom").warning("Invalid value for VR PN: 'Doe^Jane' in (0010,0010)")
    logging.getLogger("pynetdicom.dul").error("raw element b'PID-998877\\x00'")
    # pydicom's own warning: logged through `pydicom` and warned through `py.warnings`.
    validate_value("UI", "Doe^Jane", config.WARN)

    def crash() -> None:
        validate_value("UI", "Doe^Jane", config.RAISE)  # ValueError quoting the value, raised by pydicom

    thread = threading.Thread(target=crash, name="decoder")
    thread.start()
    thread.join()
    err = capsys.readouterr().err
    lines = _json_lines(err)  # raises if any line is not JSON
    assert len(lines) == 5, err
    assert "Doe^Jane" not in err and "PID-998877" not in err
    assert lines[0]["logger"] == "pydicom" and lines[0]["level"] == "warning"
    assert [line.get("logger") for line in lines[2:4]] == ["pydicom", "py.warnings"]
    assert lines[4]["event"] == "uncaught_exception" and "ValueError" in lines[4]["exception"]
    assert 'File "' in lines[4]["exception"]  # file paths of the traceback are kept
