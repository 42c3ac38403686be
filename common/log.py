"""structlog, configured once in `main`: JSON lines in production, readable on a terminal.

Every event passes `redact_patient_data`, which removes patient-identifying DICOM attributes
wherever they appear (top-level keys or nested dicts), so a careless `log.info(..., **tags)`
cannot leak a patient's name into a log aggregator.

Libraries log through the standard library (pydicom, pynetdicom, kafka-python, warnings): those
records go through the same processors and renderer (one JSON object per line in JSON mode).
pydicom and pynetdicom quote received values in free text ("Invalid value for VR PN: 'Doe^Jane'"):
in their records, their warnings and tracebacks through them, everything between the first and
the last quote is replaced, so no received value reaches the log whatever bytes it holds. Other
text (our events, a command's error, file paths) is left alone. Uncaught exceptions, in any
thread, are logged the same way.
"""

from __future__ import annotations

import logging
import re
import sys
import threading
from collections.abc import Iterable, Mapping, MutableMapping
from typing import Any

import structlog

# DICOM keywords that identify a patient. AccessionNumber is optional: sites differ on whether
# it counts as an identifier, and the study result view exposes it for joins in reporting.
PATIENT_ATTRIBUTES: frozenset[str] = frozenset(
    {
        "PatientName",
        "PatientID",
        "PatientBirthDate",
        "PatientBirthTime",
        "OtherPatientIDs",
        "OtherPatientIDsSequence",
        "OtherPatientNames",
        "PatientAddress",
        "PatientTelephoneNumbers",
        "PatientMotherBirthName",
        "IssuerOfPatientID",
        "MilitaryRank",
        "MedicalRecordLocator",
    }
)
REDACTED = "[redacted]"


def _normalise(key: str) -> str:
    return key.replace("_", "").lower()


class PatientDataRedactor:
    """A structlog processor that removes patient-identifying attributes from an event."""

    def __init__(self, *, redact_accession: bool = False, extra: Iterable[str] = ()) -> None:
        names = set(PATIENT_ATTRIBUTES) | set(extra)
        if redact_accession:
            names.add("AccessionNumber")
        # Match `PatientName`, `patient_name` and `patientname` alike.
        self._keys = frozenset(_normalise(n) for n in names)

    def _scrub(self, value: Any) -> Any:
        if isinstance(value, Mapping):
            return {k: self._scrub(v) for k, v in value.items() if not self._is_patient_key(k)}
        if isinstance(value, list | tuple):
            return type(value)(self._scrub(v) for v in value)
        return value

    def _is_patient_key(self, key: object) -> bool:
        return isinstance(key, str) and _normalise(key) in self._keys

    def __call__(
        self, _logger: Any, _method: str, event_dict: MutableMapping[str, Any]
    ) -> MutableMapping[str, Any]:
        for key in [k for k in event_dict if self._is_patient_key(k)]:
            event_dict[key] = REDACTED
        for key, value in list(event_dict.items()):
            if isinstance(value, Mapping | list | tuple):
                event_dict[key] = self._scrub(value)
        return event_dict


# pydicom and pynetdicom parse what a peer sent and quote it in their messages, warnings and
# exceptions (repr() of a value, or the value between quotes of their own choosing). Their text is
# untrusted: everything from its first quote to its last (or its end) is dropped, so a value that holds quotes,
# escapes or the bytes of the elements it swallowed cannot end the redaction early. Other text (our
# messages, alembic's, click's, file paths in tracebacks) is not theirs to quote and stays as it is.
_DICOM_LIBRARIES = ("pydicom", "pynetdicom")
_DICOM_PATH = re.compile(r"[/\\](?:pydicom|pynetdicom)[/\\]")
# From the first quote to the last one (or to the end when there is only one).
_QUOTED_SPAN = re.compile(r"""(?:\bb)?['"](?:.*['"]|.*)""", re.DOTALL)
_TRACEBACK_FILE_LINE = re.compile(r'^\s*File "[^"\n]*", line \d+')
QUOTED_REDACTED = "[value]"
_MAX_FOREIGN_MESSAGE = 2000
_HANDLER_MARK = "_kidneyct_handler"


def scrub_free_text(text: str) -> str:
    """A DICOM library's free text with every quoted value dropped and its length bounded."""
    scrubbed = _QUOTED_SPAN.sub(QUOTED_REDACTED, text)
    return _bounded(scrubbed)


def _bounded(text: str) -> str:
    return text if len(text) <= _MAX_FOREIGN_MESSAGE else text[:_MAX_FOREIGN_MESSAGE] + "..."


def _from_dicom_library(logger_name: str, message: str) -> bool:
    """pydicom's and pynetdicom's loggers, and warnings raised inside them (captured warnings log
    through `py.warnings` with the warning's file first)."""
    if logger_name.split(".")[0] in _DICOM_LIBRARIES:
        return True
    return logger_name == "py.warnings" and bool(_DICOM_PATH.search(message.split("\n", 1)[0]))


def _scrub_foreign(
    _logger: Any, _method: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """For standard-library records: the message (scrubbed when a DICOM library wrote it), plus the
    logger's name."""
    record = event_dict.get("_record")
    if record is not None:
        message = str(event_dict.get("event", ""))
        untrusted = _from_dicom_library(record.name, message)
        event_dict["event"] = scrub_free_text(message) if untrusted else _bounded(message)
        event_dict.setdefault("logger", record.name)
    return event_dict


def scrub_traceback(text: str) -> str:
    """A traceback through a DICOM library keeps its `File "...", line N` lines and loses the quoted
    values of every other line (exception messages, source lines); any other traceback is unchanged."""
    if not _DICOM_PATH.search(text):
        return text
    lines = text.split("\n")
    return "\n".join(
        line if _TRACEBACK_FILE_LINE.match(line) else _QUOTED_SPAN.sub(QUOTED_REDACTED, line)
        for line in lines
    )


def _scrub_exception(
    _logger: Any, _method: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """Tracebacks quote exception messages, which a DICOM library may fill with received values."""
    if isinstance(event_dict.get("exception"), str):
        event_dict["exception"] = scrub_traceback(event_dict["exception"])
    return event_dict


def configure_logging(*, fmt: str = "auto", level: str = "info", redact_accession: bool = False) -> None:
    """Configure structlog and the standard library's logging once, at start-up."""
    use_json = fmt == "json" or (fmt == "auto" and not sys.stderr.isatty())
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        PatientDataRedactor(redact_accession=redact_accession),
    ]
    renderer: Any = (
        structlog.processors.JSONRenderer()
        if use_json
        else structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())
    )
    numeric_level = logging.getLevelName(level.upper())
    if not isinstance(numeric_level, int):
        numeric_level = logging.INFO
    structlog.configure(
        processors=[*shared, structlog.processors.format_exc_info, _scrub_exception, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(numeric_level),
        # One write per line (print() writes the newline separately): a line of the standard library's
        # handler, from pynetdicom's threads, cannot land between a message and its newline.
        logger_factory=structlog.WriteLoggerFactory(file=sys.stderr),
        # Not cached: a logger first used under one configuration would keep it for the life of the
        # process, so a later configure_logging() or capture_logs() would not reach it. Logging is per
        # batch and per association, not in a hot loop, so the lookup costs nothing measurable.
        cache_logger_on_first_use=False,
    )
    _route_standard_logging(shared, renderer, level=max(numeric_level, logging.WARNING))
    _log_uncaught_exceptions()


def _route_standard_logging(shared: list[Any], renderer: Any, *, level: int) -> None:
    """Libraries (pydicom, pynetdicom, kafka-python, alembic) and `warnings` log through the
    standard library: through our processors and renderer, quieter than ours, to stderr."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=[structlog.stdlib.add_log_level, _scrub_foreign, *shared],
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                structlog.processors.format_exc_info,
                _scrub_exception,
                renderer,
            ],
        )
    )
    setattr(handler, _HANDLER_MARK, True)
    root = logging.getLogger()
    for old in [h for h in root.handlers if getattr(h, _HANDLER_MARK, False)]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    logging.captureWarnings(True)  # the warnings Python shows (its default filters) become log events


def _log_uncaught_exceptions() -> None:
    """An uncaught exception (main or any thread) becomes one structured, redacted event."""
    log = structlog.get_logger("kidneyct.uncaught")

    def on_exception(exc_type: Any, exc: Any, tb: Any) -> None:
        if issubclass(exc_type, KeyboardInterrupt):
            sys.__excepthook__(exc_type, exc, tb)
            return
        log.error("uncaught_exception", exc_info=(exc_type, exc, tb))

    def on_thread_exception(args: threading.ExceptHookArgs) -> None:
        if args.exc_type is SystemExit:
            return
        log.error(
            "uncaught_exception",
            thread=args.thread.name if args.thread else None,
            exc_info=(args.exc_type, args.exc_value, args.exc_traceback),
        )

    sys.excepthook = on_exception
    threading.excepthook = on_thread_exception


def reset_standard_logging() -> None:
    """Undo `configure_logging`'s standard-library part (for tests that configure it several times)."""
    root = logging.getLogger()
    for handler in [h for h in root.handlers if getattr(h, _HANDLER_MARK, False)]:
        root.removeHandler(handler)
    logging.captureWarnings(False)
    sys.excepthook = sys.__excepthook__
    threading.excepthook = threading.__excepthook__
