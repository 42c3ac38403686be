"""The SR names a forced promotion: the model description carries the reason recorded with --force."""

from __future__ import annotations

import datetime as dt

import pydicom
from pydicom.data import get_testdata_file

from classifier.report.contents import StudyReport
from classifier.report.sr import build_sr
from classifier.study.rule import StudyRule
from storage.db.report_inputs import KeySlice


def _report(forced_note: str | None) -> tuple[StudyReport, pydicom.Dataset]:
    ds = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    key = KeySlice(
        sop_instance_uid=str(ds.SOPInstanceUID),
        series_instance_uid=str(ds.SeriesInstanceUID),
        sop_class_uid=str(ds.SOPClassUID),
        frame=0,
        number_of_frames=1,
        archive_uri="file:///x.dcm",
        probability=0.9,
    )
    report = StudyReport(
        study_instance_uid=str(ds.StudyInstanceUID),
        model_version="v-forced",
        revision=2,
        label="Tumor",
        max_probability={"Cyst": 0.1, "Normal": 0.1, "Stone": 0.1, "Tumor": 0.9},
        n_instances=1,
        rule=StudyRule(1, 0.5),
        key_slices=(key,),
        completed_at=dt.datetime(2026, 12, 6, 12, 0, tzinfo=dt.UTC),
        forced_note=forced_note,
    )
    return report, ds


def _parameters(sr: pydicom.Dataset) -> str:
    return "\n".join(str(e.value) for e in sr.iterall() if e.keyword == "TextValue")


def test_a_forced_promotion_is_named_in_the_sr() -> None:
    """A version promoted with --force --reason: its SR's algorithm parameters say so, with the reason."""
    report, ds = _report("FORCED (reason: vendor model, validated offline): v-forced has no evaluation set")
    text = _parameters(build_sr(report, [ds]))
    assert "model promoted by force: FORCED (reason: vendor model, validated offline)" in text


def test_a_checked_promotion_adds_nothing() -> None:
    """Without a forced promotion the parameters are the usual three."""
    report, ds = _report(None)
    assert "promoted by force" not in _parameters(build_sr(report, [ds]))
