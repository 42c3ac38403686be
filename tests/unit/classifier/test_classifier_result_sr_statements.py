"""The SR says what it is in its content: disclaimer, model, calibration, rule, and why it is indeterminate."""

from __future__ import annotations

import datetime as dt
import shutil
import subprocess
from pathlib import Path

import highdicom as hd
import pydicom
import pytest
from pydicom.data import get_testdata_file

from classifier.report import codes as rc
from classifier.report.contents import StudyReport
from classifier.report.heatmap import caption
from classifier.report.sr import build_sr
from classifier.study.policy import REASON_SHIFT, SOURCE_CARD, StudyPolicy
from classifier.study.rule import StudyRule
from storage.db.report_inputs import KeySlice

POLICY = StudyPolicy(
    StudyRule(3, 0.7), SOURCE_CARD, min_evidence=0.62, target_accuracy=0.9, max_shifted_fraction=0.25
)


def _report(source: pydicom.Dataset, reason: str | None) -> StudyReport:
    key = KeySlice(
        str(source.SOPInstanceUID),
        str(source.SeriesInstanceUID),
        str(source.SOPClassUID),
        0,
        1,
        "file:///x",
        0.9,
    )
    return StudyReport(
        study_instance_uid=str(source.StudyInstanceUID),
        model_version="v7",
        revision=2,
        label="Tumor",
        max_probability={"Cyst": 0.1, "Normal": 0.2, "Stone": 0.05, "Tumor": 0.9},
        n_instances=10,
        rule=POLICY.rule,
        key_slices=(key,),
        completed_at=dt.datetime(2026, 12, 6, 12, tzinfo=dt.UTC),
        policy=POLICY,
        indeterminate_reason=reason,
        evidence=0.55,
        n_shifted=4,
        temperature=1.7,
    )


def _texts(sr: hd.sr.Comprehensive3DSR) -> dict[str, str]:
    group = sr.ContentSequence[-1]  # the imaging measurements container
    items = [i for c in group.ContentSequence for i in c.get("ContentSequence", [])] + list(
        group.ContentSequence
    )
    names = [(i, i.ConceptNameCodeSequence[0]) for i in items if i.ValueType == "TEXT"]
    return {
        n.get("CodeValue"): i.TextValue
        for i, n in names
        if n.get("CodingSchemeDesignator") == rc.PRIVATE_SCHEME
    }


@pytest.mark.parametrize("reason", [None, REASON_SHIFT])
def test_sr_content_carries_disclaimer_model_rule_and_indeterminate_reason(
    tmp_path: Path, reason: str | None
) -> None:
    """Decided: the class finding; indeterminate: SNOMED CT "Indeterminate result" and why; both valid DICOM."""
    source = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    sr = build_sr(_report(source, reason), [source])
    path = tmp_path / "sr.dcm"
    sr.save_as(path, enforce_file_format=True)
    group = hd.sr.srread(path).content.get_image_measurement_groups()[0]
    if reason is None:
        assert rc.label_of_finding(group.finding_type.value) == "Tumor"
    else:
        assert (group.finding_type.value, group.finding_type.scheme_designator) == ("280416009", "SCT")
        assert rc.label_of_finding(group.finding_type.value) is None
    texts = _texts(sr)
    assert "not for diagnostic use" in texts["KCT-DISCLAIMER"]
    assert "v7" in texts["KCT-MODEL"] and "revision 2" in texts["KCT-MODEL"]
    assert "T=1.700" in texts["KCT-CALIBRATION"]
    assert "k=3" in texts["KCT-RULE"] and "t=0.7" in texts["KCT-RULE"] and "model card" in texts["KCT-RULE"]
    assert "0.620" in texts["KCT-ABSTENTION"]
    assert texts["KCT-EVIDENCE"].startswith("0.550 for Tumor") and "threshold 0.620" in texts["KCT-EVIDENCE"]
    assert ("KCT-INDETERM" in texts) == (reason is not None)
    if reason is not None:
        assert "unlike the images" in texts["KCT-INDETERM"] and "Tumor" in texts["KCT-INDETERM"]
    if shutil.which("dciodvfy"):
        out = subprocess.run(["dciodvfy", str(path)], capture_output=True, text=True, check=False)
        assert [line for line in (out.stdout + out.stderr).splitlines() if line.startswith("Error")] == []


@pytest.mark.parametrize("reason", [None, REASON_SHIFT])
def test_the_heat_map_of_an_indeterminate_study_says_so(reason: str | None) -> None:
    """A map seen without its SR: an indeterminate study's map says it is not that finding."""
    source = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    text = caption(_report(source, reason))
    assert text.startswith("Grad-CAM of Tumor") and ("indeterminate" in text) == (reason is not None)
