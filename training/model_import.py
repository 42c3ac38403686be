"""`kidneyct models import FILE`: a notebook's model file -> a kidneyct artifact (registration is the caller's).

Rebuild (`training.rebuild`), measure parity (`training.parity`), and only then write the artifact,
into a temporary folder renamed into place, so a refused import leaves nothing behind.
"""

from __future__ import annotations

import datetime as dt
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import structlog

from classifier.artifact import ModelCard, save_artifact
from classifier.preprocess import Window
from common.files import sha256_file
from common.vocabulary import CLASS_NAMES
from training.parity import PARITY_LIMIT, Parity, check_parity
from training.rebuild import ImportRefused, ImportSpec, rebuild

log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class ImportOptions:
    spec: ImportSpec
    window: Window
    version: str
    force: bool = False
    check_parity: bool = True


@dataclass(frozen=True)
class ImportedFile:
    card: ModelCard
    artifact_dir: Path
    parity: Parity


def parse_classes(text: str | None) -> tuple[str, ...]:
    """`--classes` (comma-separated, the notebook's output order) as our class names; default: ours."""
    if not text:
        return CLASS_NAMES
    by_lower = {c.lower(): c for c in CLASS_NAMES}
    names = [part.strip() for part in text.split(",") if part.strip()]
    unknown = [n for n in names if n.lower() not in by_lower]
    if unknown:
        raise ImportRefused(f"--classes names {unknown}, which are not among {list(CLASS_NAMES)}")
    resolved = tuple(by_lower[n.lower()] for n in names)
    if len(set(resolved)) != len(resolved):
        raise ImportRefused(f"--classes repeats a class: {names}")
    return resolved


def import_model_file(
    path: Path, options: ImportOptions, *, model_dir: Path, now: dt.datetime
) -> ImportedFile:
    """Rebuild `path`, check parity, write the artifact to `model_dir/<version>`; `ImportRefused` otherwise."""
    target = model_dir / options.version
    if target.exists():
        raise ImportRefused(f"{target} already exists: choose another --version")
    if set(options.spec.source_classes) != set(CLASS_NAMES):
        missing = sorted(set(CLASS_NAMES) - set(options.spec.source_classes))
        raise ImportRefused(
            f"the model must output the {len(CLASS_NAMES)} classes {list(CLASS_NAMES)}; --classes lacks {missing}"
        )
    rebuilt = rebuild(path, options.spec)
    columns = [list(options.spec.source_classes).index(name) for name in CLASS_NAMES]
    parity = (
        check_parity(
            path,
            writer=rebuilt.source["format"],
            keras_version=rebuilt.source["keras_version"],
            full_model=rebuilt.source["full_model"],
            rebuilt=rebuilt.model,
            normalization=options.spec.normalization,
            columns=columns,
        )
        if options.check_parity
        else Parity(False, None, 0, None, "not checked: --no-parity")
    )
    log.info(
        "model_import_parity",
        checked=parity.checked,
        max_abs_diff=parity.max_abs_diff,
        loader=parity.loader,
        note=parity.note,
    )
    forced = parity.max_abs_diff is not None and parity.max_abs_diff > PARITY_LIMIT
    if forced and not options.force:
        raise ImportRefused(
            f"parity failed: the rebuilt model differs from the original by up to {parity.max_abs_diff:.3g} "
            f"(limit {PARITY_LIMIT:g}) on {parity.inputs} inputs; check --preprocessing/--classes, "
            "or register it anyway with --force (recorded in the card)"
        )
    extra = {
        "import": {
            **rebuilt.source,
            "source_sha256": sha256_file(path),
            "source_classes": list(options.spec.source_classes),
            "tensors_copied": rebuilt.tensors_copied,
            "parity": parity.as_dict(),
            "parity_limit": PARITY_LIMIT,
            "forced": forced,
            "imported_at": now.isoformat(),
        }
    }
    model_dir.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{options.version}.", dir=model_dir))
    try:
        card = save_artifact(
            rebuilt.model,
            staging,
            {
                "version": options.version,
                "window": options.window,
                "dropout": options.spec.dropout,
                "normalization": options.spec.normalization,
                "created_at": now.isoformat(),
                "extra": extra,
            },
        )
        staging.rename(target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return ImportedFile(card=card, artifact_dir=target, parity=parity)
