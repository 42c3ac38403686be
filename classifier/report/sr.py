"""The study report as a DICOM Comprehensive 3D SR holding a TID 1500 Measurement Report.

IHE AI Results: one measurement group (TID 1501) with the study finding (a coded concept), each
class's probability (the highest slice probability; UCUM `1`, derivation Maximum), the algorithm
with its version and the study rule as parameters, and the key slices as the group's source images.
The device is the observer; the report is UNVERIFIED. Patient and study modules come from the
source instances (highdicom copies them from the evidence), so the PACS files it with the study.
"""

from __future__ import annotations

from collections.abc import Sequence

import highdicom as hd
from pydicom.dataset import Dataset
from pydicom.sr.codedict import codes
from pydicom.uid import generate_uid
from pydicom.valuerep import DA, TM

from classifier.report import codes as rc
from classifier.report.contents import SR_SERIES_NUMBER, StudyReport, object_uid, series_uid
from classifier.study.evidence import describe_evidence
from classifier.study.policy import REASON_TEXT, StudyPolicy, describe_abstention, describe_rule
from common.vocabulary import CLASS_NAMES

DEVICE_UID = str(generate_uid(entropy_srcs=["kidneyct-device"]))
SR_SOP_CLASS_UID = "1.2.840.10008.5.1.4.1.1.88.34"  # Comprehensive 3D SR Storage


def _policy(report: StudyReport) -> StudyPolicy:
    return report.policy or StudyPolicy(rule=report.rule, rule_source="worker settings")


def algorithm_identification(report: StudyReport) -> hd.sr.AlgorithmIdentification:
    return hd.sr.AlgorithmIdentification(
        name=rc.ALGORITHM_NAME,
        version=report.model_version,
        parameters=[
            f"study rule: {describe_rule(_policy(report))}",
            "probability: the highest calibrated slice probability of each class",
            f"report revision {report.revision}",
            *([f"model promoted by force: {report.forced_note}"] if report.forced_note else []),
        ],
    )


def statements(report: StudyReport) -> list[tuple[str, str]]:
    """(what, text) the report says about itself: disclaimer, model, calibration, rules, and why not answered."""
    policy = _policy(report)
    out = [
        ("disclaimer", rc.DISCLAIMER),
        ("model", f"model version {report.model_version}, report revision {report.revision}"),
        (
            "calibration",
            f"probabilities calibrated by temperature scaling, T={report.temperature:.3f} (fitted on validation scans)",
        ),
        ("rule", describe_rule(policy)),
        ("abstention", describe_abstention(policy)),
    ]
    if report.evidence is not None:
        out.append(
            (
                "evidence",
                f"{report.evidence:.3f} for {report.label} (the rule's label): "
                f"{describe_evidence(policy.evidence, policy.rule)}; threshold {policy.min_evidence:.3f}",
            )
        )
    if report.indeterminate_reason is not None:
        evidence = "" if report.evidence is None else f"; evidence {report.evidence:.3f}"
        shifted = (
            ""
            if not report.n_shifted
            else f"; {report.n_shifted} of the study's slices unlike the training data"
        )
        out.append(
            (
                "indeterminate",
                f"{REASON_TEXT.get(report.indeterminate_reason, report.indeterminate_reason)} "
                f"(the rule alone would say {report.label}{evidence}{shifted})",
            )
        )
    return out


def _observation_context() -> hd.sr.ObservationContext:
    device = hd.sr.DeviceObserverIdentifyingAttributes(
        uid=DEVICE_UID, name="kidneyct", manufacturer_name=rc.MANUFACTURER, model_name="kidneyct classifier"
    )
    return hd.sr.ObservationContext(
        observer_device_context=hd.sr.ObserverContext(
            observer_type=codes.DCM.Device, observer_identifying_attributes=device
        )
    )


def _key_slice_images(report: StudyReport, evidence: Sequence[Dataset]) -> list[Dataset]:
    by_uid = {str(ds.SOPInstanceUID): ds for ds in evidence}
    return [by_uid[k.sop_instance_uid] for k in report.key_slices]


def _frames(report: StudyReport, index: int) -> list[int] | None:
    key = report.key_slices[index]
    return [key.frame + 1] if key.number_of_frames > 1 else None


def measurement_group(
    report: StudyReport, evidence: Sequence[Dataset]
) -> hd.sr.MeasurementsAndQualitativeEvaluations:
    group = _measurement_group(report, evidence)
    for what, text in statements(report):
        group[0].ContentSequence.append(
            hd.sr.TextContentItem(
                name=rc.text_code(what),
                value=text,
                relationship_type=hd.sr.RelationshipTypeValues.CONTAINS,
            )
        )
    return group


def _measurement_group(
    report: StudyReport, evidence: Sequence[Dataset]
) -> hd.sr.MeasurementsAndQualitativeEvaluations:
    algorithm = algorithm_identification(report)
    images = _key_slice_images(report, evidence)
    measurements = []
    for name in CLASS_NAMES:
        referenced = None
        if name == report.label:
            # The key slices are the evidence for the label's probability.
            referenced = [
                hd.sr.SourceImageForMeasurement.from_source_image(
                    ds, referenced_frame_numbers=_frames(report, i)
                )
                for i, ds in enumerate(images)
            ]
        measurements.append(
            hd.sr.Measurement(
                name=rc.probability_code(name),
                value=round(float(report.max_probability[name]), 6),
                unit=rc.NO_UNITS,
                derivation=rc.MAXIMUM,
                referenced_images=referenced,
            )
        )
    tracking = hd.sr.TrackingIdentifier(
        uid=object_uid(report.study_instance_uid, report.model_version, report.revision, "tracking"),
        identifier=f"kidneyct study finding, revision {report.revision}",
    )
    return hd.sr.MeasurementsAndQualitativeEvaluations(
        tracking_identifier=tracking,
        # TID 1501 "Finding": the study label, or "Indeterminate result" when it is withheld.
        finding_type=rc.INDETERMINATE if report.indeterminate else rc.finding_code(report.label),
        algorithm_id=algorithm,
        finding_sites=[hd.sr.FindingSite(anatomic_location=rc.KIDNEY)],
        measurements=measurements,
        source_images=[
            hd.sr.SourceImageForMeasurementGroup.from_source_image(
                ds, referenced_frame_numbers=_frames(report, i)
            )
            for i, ds in enumerate(images)
        ],
    )


def _previous_version(report: StudyReport, evidence: Dataset) -> list[Dataset]:
    if report.previous is None:
        return []
    model_version, revision = report.previous
    ds = Dataset()
    ds.StudyInstanceUID = report.study_instance_uid
    ds.SeriesInstanceUID = series_uid(report.study_instance_uid, model_version, "sr")
    ds.SOPInstanceUID = object_uid(report.study_instance_uid, model_version, revision, "sr")
    ds.SOPClassUID = SR_SOP_CLASS_UID
    for keyword in ("PatientID", "PatientName", "PatientBirthDate", "PatientSex"):
        if keyword in evidence:
            setattr(ds, keyword, evidence[keyword].value)
    return [ds]


def build_sr(report: StudyReport, evidence: Sequence[Dataset]) -> hd.sr.Comprehensive3DSR:
    """The report's SR; `evidence` holds the key slices' datasets (pixel data not needed)."""
    if not evidence:
        raise ValueError("a report needs at least one source instance")
    content = hd.sr.MeasurementReport(
        observation_context=_observation_context(),
        procedure_reported=rc.PROCEDURE_CT,
        imaging_measurements=[measurement_group(report, evidence)],
        title=codes.DCM.ImagingMeasurementReport,
    )
    sr = hd.sr.Comprehensive3DSR(
        evidence=list(evidence),
        content=content[0],
        series_instance_uid=series_uid(report.study_instance_uid, report.model_version, "sr"),
        series_number=SR_SERIES_NUMBER,
        sop_instance_uid=object_uid(report.study_instance_uid, report.model_version, report.revision, "sr"),
        instance_number=report.revision,
        manufacturer=rc.MANUFACTURER,
        is_complete=True,
        is_final=False,
        is_verified=False,
        previous_versions=_previous_version(report, evidence[0]) or None,
    )
    sr.SeriesDescription = rc.SERIES_DESCRIPTION
    sr.ContentDate = DA(report.completed_at.strftime("%Y%m%d"))
    sr.ContentTime = TM(report.completed_at.strftime("%H%M%S"))
    return sr
