"""The one table of codes kidneyct writes into its DICOM results (docs/results.md lists it).

Findings are SNOMED CT concepts (one per class). The per-class probabilities have no standard
concept, so they use this project's private coding scheme `99KIDNEYCT` (DICOM PS3.16 allows
local schemes whose designator starts with `99`).
"""

from __future__ import annotations

from highdicom.sr import CodedConcept
from pydicom.sr.codedict import codes

from common.vocabulary import CLASS_NAMES

PRIVATE_SCHEME = "99KIDNEYCT"

# class -> (SNOMED CT code, meaning)
FINDING_CODES: dict[str, tuple[str, str]] = {
    "Cyst": ("36171008", "Cyst of kidney"),
    "Normal": ("17621005", "Normal"),
    "Stone": ("95570007", "Kidney stone"),
    "Tumor": ("126880001", "Neoplasm of kidney"),
}

# class -> (private code, meaning) of "the highest slice probability of this class"
PROBABILITY_CODES: dict[str, tuple[str, str]] = {
    name: (f"KCT-P-{name.upper()}", f"Probability of {name} (highest slice)") for name in CLASS_NAMES
}

# The finding of a study whose label is withheld. SNOMED CT 280416009 "Indeterminate result" (qualifier
# value), as in DICOM PS3.16 CID 6063 (pydicom's generated table: codes.SCT.IndeterminateResult) and in
# HL7's value set "Indeterminate or Equivocal Lab Result Value" (2.16.840.1.113762.1.4.1146.1035); taken
# from pydicom's table, not typed in.
INDETERMINATE = CodedConcept.from_code(codes.SCT.IndeterminateResult)

# The report's statements about itself, as TEXT items of the measurement group (private codes; at most
# 16 characters, or DICOM moves them to Long Code Value).
TEXT_CODES: dict[str, tuple[str, str]] = {
    "disclaimer": ("KCT-DISCLAIMER", "Disclaimer"),
    "model": ("KCT-MODEL", "Model version and report revision"),
    "calibration": ("KCT-CALIBRATION", "Probability calibration"),
    "rule": ("KCT-RULE", "Decision rule"),
    "abstention": ("KCT-ABSTENTION", "Abstention rule"),
    "evidence": ("KCT-EVIDENCE", "Evidence of the rule's label"),
    "indeterminate": ("KCT-INDETERM", "Reason the finding is indeterminate"),
}
DISCLAIMER = (
    "AI result, not for diagnostic use: an automated classification by a research model, unverified "
    "by a physician."
)

# No network named: the backbone is the model card's (ResNet50, EfficientNet, the demo's tiny one); the
# algorithm version names the model exactly.
ALGORITHM_NAME = "kidneyct kidney CT slice classifier"
MANUFACTURER = "kidneyct"
SERIES_DESCRIPTION = "AI result - not for diagnostic use"  # LO: at most 64 characters

KIDNEY = codes.SCT.Kidney
MAXIMUM = codes.SCT.Maximum  # the derivation of each probability: the maximum over slices
NO_UNITS = codes.UCUM.NoUnits  # UCUM "1": a probability is dimensionless
PROCEDURE_CT = codes.LN.CTUnspecifiedBodyRegion  # the procedure reported (TID 1500)


def finding_code(label: str) -> CodedConcept:
    value, meaning = FINDING_CODES[label]
    return CodedConcept(value=value, scheme_designator="SCT", meaning=meaning)


def text_code(what: str) -> CodedConcept:
    value, meaning = TEXT_CODES[what]
    return CodedConcept(value=value, scheme_designator=PRIVATE_SCHEME, meaning=meaning)


def probability_code(label: str) -> CodedConcept:
    value, meaning = PROBABILITY_CODES[label]
    return CodedConcept(value=value, scheme_designator=PRIVATE_SCHEME, meaning=meaning)


def label_of_finding(value: str) -> str | None:
    """The class whose finding code is `value` (reading a report back); None for "indeterminate"."""
    if value == INDETERMINATE.value:
        return None
    for name, (code, _) in FINDING_CODES.items():
        if code == value:
            return name
    raise KeyError(f"no class has finding code {value}")


def label_of_probability(value: str) -> str:
    for name, (code, _) in PROBABILITY_CODES.items():
        if code == value:
            return name
    raise KeyError(f"no class has probability code {value}")


GRADCAM = codes.DCM.GradientWeightedClassActivation  # what the heat map's values are
