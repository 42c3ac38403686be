"""structlog, configured once in `main`: JSON lines in production, readable on a terminal.

Every event passes `redact_patient_data`, which removes patient-identifying DICOM attributes
wherever they appear (top-level keys or nested dicts), so a careless `log.info(..., **tags)`
cannot leak a patient's name into a log aggregator.
"""

from __future__ import annotations

import logging
import sys
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
        processors=[*shared, structlog.processors.format_exc_info, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(numeric_level),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=True,
    )
    # Libraries (pynetdicom, kafka-python, alembic) log through the standard library: keep them
    # quieter than ours, and route them to stderr too.
    logging.basicConfig(
        level=max(numeric_level, logging.WARNING),
        stream=sys.stderr,
        format="%(name)s %(levelname)s %(message)s",
    )
