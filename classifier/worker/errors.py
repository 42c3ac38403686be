"""The classifier's failures, split by what the worker does about them.

- `PoisonError`: this one event can never succeed (missing file, undecodable pixels, not CT).
  The worker records the reason, sends the event to the dead-letter topic and commits past it.
- Outages (database or broker down) are the libraries' own exceptions (`storage.failures.failure_kind` sorts
  the database's): the worker stops consuming, retries with backoff, commits nothing and loses nothing.
- `ArtifactError` / `NoActiveModel` / `DeadLetterLimitExceeded` (and `common.errors.SchemaMissing`,
  which `kidneyct/database.py` raises too): configuration problems that stop the worker with a clear message.
"""

from __future__ import annotations


class ClassifierError(Exception):
    """Base of the classifier's own errors."""


class PoisonError(ClassifierError):
    """This event can never be processed. `state` is what the instance row becomes."""

    state: str = "failed"

    @property
    def reason(self) -> str:
        return f"{type(self).__name__}: {self}"


class InvalidEventError(PoisonError):
    """The message is not a valid instance event (no instance row can be marked)."""


class ArchiveFileMissing(PoisonError):
    """The archived file named by the event does not exist or cannot be read."""


class ArchiveFileChanged(PoisonError):
    """The archived file's sha256 differs from the event's: it was changed or damaged after archiving."""


class DecodeError(PoisonError, ValueError):
    """The file is not DICOM or its pixels cannot be decoded into a grayscale image."""


class ValueDoesNotFit(PoisonError):
    """A value of the event does not fit its database column (e.g. InstanceNumber beyond 2^31-1)."""


class NotClassifiable(PoisonError):
    """A valid instance this model does not classify (e.g. modality not CT): skipped, not failed."""

    state = "skipped"


class ArtifactError(ClassifierError):
    """A model artifact is missing, damaged or does not match what it claims to be."""


class NoActiveModel(ClassifierError):
    """No model version is marked active in the database."""


class DeadLetterLimitExceeded(ClassifierError):
    """Most recent events could not read their archived file: the archive is likely not mounted.
    Stopping (nothing of the batch committed) beats dead-lettering everything that follows."""
