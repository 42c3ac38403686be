"""What one study report is made of, and the deterministic UIDs of its DICOM objects.

A report belongs to (study, model version, revision). Its UIDs are hashes of those three (and of
what the object is), so building the same revision again gives the same UIDs: a resend replaces
the object in the PACS instead of adding a second one. A re-opened study gets a new revision,
hence new UIDs, and names the previous revision as its predecessor.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from pydicom.uid import generate_uid

from classifier.study.policy import StudyPolicy
from classifier.study.rule import StudyRule
from storage.db.report_inputs import KeySlice

SR_SERIES_NUMBER = 9901
PMAP_SERIES_NUMBER = 9902
SC_SERIES_NUMBER = 9903
HEATMAP_MODES = ("pmap", "sc", "none")


@dataclass(frozen=True, slots=True)
class StudyReport:
    study_instance_uid: str
    model_version: str
    revision: int
    label: str
    max_probability: dict[str, float]  # per class: the highest slice probability
    n_instances: int
    rule: StudyRule
    key_slices: tuple[KeySlice, ...]
    completed_at: dt.datetime
    previous: tuple[str, int] | None = None  # (model version, revision) of the report this one replaces
    forced_note: str | None = None  # the model version was promoted with --force: its recorded reason
    policy: StudyPolicy | None = (
        None  # the decision rule and where it came from (None: `rule`, source unknown)
    )
    indeterminate_reason: str | None = None  # why the label is withheld (classifier.study.policy)
    evidence: float | None = None  # the rule label's evidence (classifier.study.evidence)
    n_shifted: int | None = None  # slices the shift detector flagged
    temperature: float = 1.0  # the calibration the probabilities went through

    @property
    def indeterminate(self) -> bool:
        return self.indeterminate_reason is not None


def object_uid(study_instance_uid: str, model_version: str, revision: int, what: str) -> str:
    """The SOP Instance UID of one object of one report revision (same input, same UID)."""
    return str(
        generate_uid(entropy_srcs=["kidneyct-result", study_instance_uid, model_version, str(revision), what])
    )


def series_uid(study_instance_uid: str, model_version: str, what: str) -> str:
    """One series per study, model version and kind of object: the revisions stack in it."""
    return str(generate_uid(entropy_srcs=["kidneyct-series", study_instance_uid, model_version, what]))
