"""The domain's words, defined once: the classes, the kidney window, and what a DICOM UID is."""

from __future__ import annotations

import re

# The model's outputs, in this order everywhere (probability columns, SR codes, training labels).
CLASS_NAMES: tuple[str, ...] = ("Cyst", "Normal", "Stone", "Tumor")

# Abdomen soft-tissue window in Hounsfield units: what the classifier sees, and what synthetic
# studies carry as their display window.
KIDNEY_WINDOW_CENTER_HU = 40.0
KIDNEY_WINDOW_WIDTH_HU = 400.0

# PS3.5 9.1: components of digits without leading zeros, dot-separated, at most 64 characters.
UID_LENGTH = 64
_UID_PATTERN = re.compile(r"(0|[1-9][0-9]*)(\.(0|[1-9][0-9]*))*")


def is_valid_uid(value: str) -> bool:
    """True for a syntactically valid DICOM UID (PS3.5 9.1)."""
    return len(value) <= UID_LENGTH and _UID_PATTERN.fullmatch(value) is not None
