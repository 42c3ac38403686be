"""What the review app needs, built from the settings by `kidneyct review`."""

from __future__ import annotations

from dataclasses import dataclass, field

from review.audit import Throttle


@dataclass(frozen=True, slots=True)
class ReviewConfig:
    secret_key: str
    secure_cookies: bool = False
    identifier: str = "accession"  # or "study_uid"
    page_size: int = 50
    session_max_age_s: int = 8 * 3600
    throttle: Throttle = field(default_factory=Throttle)
    indeterminate_recorded: bool = True  # study_predictions.indeterminate_reason exists (head has it)
