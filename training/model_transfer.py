"""Moving a model version between installations: `models export VERSION DIR` and `models import DIR`.

The export is the artifact folder as it is (weights, card, manifest and whatever the run kept) plus
`registration.json`: what the source database knew (metrics, manifest hash, status, dates, note).
The import checks the artifact as a worker would (`load_artifact`: classes, hashes, rebuild), copies
it into this installation's model folder and registers it as a candidate with its metrics and its
provenance. Data access never commits: the caller owns the transaction.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import shutil
import tempfile
from pathlib import Path
from typing import Any

from sqlalchemy.orm import Session

from classifier.model.artifact import CARD_FILE, ModelCard, load_artifact, read_card
from classifier.model.serving import artifact_directory
from classifier.worker.errors import ArtifactError
from storage.db.model_versions import get_model_version, register_model_version
from storage.db.tables import ModelVersion

REGISTRATION_FILE = "registration.json"


class TransferError(Exception):
    """The export or import cannot be done; the message says why."""


def _iso(value: dt.datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def export_version(session: Session, *, version: str, destination: Path, now: dt.datetime) -> Path:
    """Copy `version`'s artifact to `destination` (new or empty) with its registration; returns it."""
    row = get_model_version(session, version=version)
    if row is None:
        raise TransferError(f"no model version {version!r}")
    source = artifact_directory(row.artifact_uri)
    if not (source / CARD_FILE).is_file():
        raise TransferError(f"version {version}'s artifact {source} has no {CARD_FILE}")
    if destination.exists() and any(destination.iterdir()):
        raise TransferError(f"{destination} exists and is not empty")
    destination.parent.mkdir(parents=True, exist_ok=True)
    shutil.copytree(source, destination, dirs_exist_ok=True)
    registration = {
        "version": row.version,
        "sha256": row.sha256,
        "metrics": row.metrics,
        "manifest_hash": row.manifest_hash,
        "status": row.status,
        "created_at": _iso(row.created_at),
        "promoted_at": _iso(row.promoted_at),
        "promotion_note": row.promotion_note,
        "exported_at": now.isoformat(),
    }
    (destination / REGISTRATION_FILE).write_text(json.dumps(registration, indent=2, sort_keys=True))
    return destination


def _registration(directory: Path) -> dict[str, Any]:
    path = directory / REGISTRATION_FILE
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise TransferError(f"{path} is not JSON: {exc}") from exc
    return data if isinstance(data, dict) else {}


def import_artifact_dir(session: Session, *, source: Path, model_dir: Path, now: dt.datetime) -> ModelVersion:
    """Check, copy and register an exported artifact folder as a candidate (the caller commits)."""
    try:
        card = read_card(source)
        load_artifact(source)  # the worker's own checks: classes, weights hash, the rebuild itself
    except ArtifactError as exc:
        raise TransferError(f"{source} is not a usable kidneyct artifact: {exc}") from exc
    registration = _registration(source)
    if registration.get("sha256") not in (None, card.weights_sha256):
        raise TransferError(f"{source}: {REGISTRATION_FILE} names other weights than the card")
    if get_model_version(session, version=card.version) is not None:
        raise TransferError(f"model version {card.version} is already registered here")
    target = model_dir / card.version
    if target.exists():
        raise TransferError(f"{target} already exists")
    model_dir.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{card.version}.", dir=model_dir))
    try:
        shutil.copytree(source, staging, dirs_exist_ok=True)
        (staging / REGISTRATION_FILE).unlink(missing_ok=True)  # this database's row is the record now
        staging.rename(target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    stored = dataclasses.asdict(card)
    stored["extra"] = {
        **card.extra,
        "transfer": {
            "imported_from": str(source.resolve()),
            "imported_at": now.isoformat(),
            "exported_at": registration.get("exported_at"),
            "status_there": registration.get("status"),
            "promotion_note_there": registration.get("promotion_note"),
            "created_there": registration.get("created_at"),
        },
    }
    try:
        return register_model_version(
            session,
            version=card.version,
            artifact_uri=target.resolve().as_uri(),
            sha256=card.weights_sha256,
            card=stored,
            metrics=registration.get("metrics") or card.metrics,
            manifest_hash=registration.get("manifest_hash", card.manifest_hash),
            now=now,
            status="candidate",
        )
    except BaseException:
        shutil.rmtree(target, ignore_errors=True)
        raise


def register_imported(
    session: Session, *, card: ModelCard, artifact_dir: Path, now: dt.datetime
) -> ModelVersion:
    """Register a model rebuilt from a notebook's file as a candidate (the caller commits)."""
    if get_model_version(session, version=card.version) is not None:
        raise TransferError(f"model version {card.version} is already registered here")
    return register_model_version(
        session,
        version=card.version,
        artifact_uri=artifact_dir.resolve().as_uri(),
        sha256=card.weights_sha256,
        card=dataclasses.asdict(card),
        metrics=card.metrics,
        manifest_hash=None,
        now=now,
        status="candidate",
    )
