"""What the worker publishes: per-instance results, study completions, and dead letters (JSON).

No patient data: UIDs, labels and probabilities. The study message also carries the accession
number (and its issuer), the join key of a RIS; it is an order number, not a patient attribute.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
from collections.abc import Mapping, Sequence
from typing import Any

from common.vocabulary import CLASS_NAMES
from storage.stream.contract import Record

MESSAGE_SCHEMA_VERSION = 1


def _dump(data: Mapping[str, Any]) -> bytes:
    return json.dumps(data, separators=(",", ":"), sort_keys=True).encode()


def instance_result(
    *,
    study_instance_uid: str,
    series_instance_uid: str,
    sop_instance_uid: str,
    model_version: str,
    probabilities: Sequence[Sequence[float]],
) -> bytes:
    """One instance's per-frame labels and probabilities."""
    frames = []
    for frame, probs in enumerate(probabilities):
        best = max(range(len(CLASS_NAMES)), key=lambda i: probs[i])
        frames.append(
            {
                "frame": frame,
                "label": CLASS_NAMES[best],
                "probabilities": {c: round(float(p), 6) for c, p in zip(CLASS_NAMES, probs, strict=True)},
            }
        )
    return _dump(
        {
            "type": "instance_result",
            "schema_version": MESSAGE_SCHEMA_VERSION,
            "study_instance_uid": study_instance_uid,
            "series_instance_uid": series_instance_uid,
            "sop_instance_uid": sop_instance_uid,
            "model_version": model_version,
            "frames": frames,
        }
    )


def study_complete(
    *,
    study_instance_uid: str,
    model_version: str,
    label: str | None,
    max_probability: Mapping[str, float],
    n_predicted: Mapping[str, int],
    n_instances: int,
    completed_at: dt.datetime,
    revision: int = 1,
    accession_number: str | None = None,
    accession_number_issuer: str | None = None,
    indeterminate_reason: str | None = None,
) -> bytes:
    """A study's final result for one model version; `revision` counts its completions (a late
    instance re-opens a study, and completing it again announces the next revision). `label` is None
    when the study is indeterminate, and `indeterminate_reason` says why."""
    return _dump(
        {
            "type": "study_complete",
            "schema_version": MESSAGE_SCHEMA_VERSION,
            "study_instance_uid": study_instance_uid,
            "model_version": model_version,
            "label": label,
            "max_probability": {c: round(float(max_probability[c]), 6) for c in CLASS_NAMES},
            "slices": {c: int(n_predicted[c]) for c in CLASS_NAMES},
            "n_instances": n_instances,
            "completed_at": completed_at.isoformat(),
            "revision": revision,
            "accession_number": accession_number,
            "accession_number_issuer": accession_number_issuer,
            "indeterminate_reason": indeterminate_reason,
        }
    )


def dead_letter(record: Record, *, reason: str, state: str, sop_instance_uid: str | None) -> bytes:
    """The original message (base64: it may not even be text) with where it came from and why."""
    return _dump(
        {
            "type": "dead_letter",
            "schema_version": MESSAGE_SCHEMA_VERSION,
            "reason": reason,
            "state": state,
            "sop_instance_uid": sop_instance_uid,
            "source": {"topic": record.topic, "partition": record.partition, "offset": record.offset},
            "value_b64": base64.b64encode(record.value).decode("ascii"),
        }
    )
