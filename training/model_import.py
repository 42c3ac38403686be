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

from classifier.model.artifact import ModelCard, save_artifact
from classifier.model.preprocess import Window
from common.files import sha256_file
from common.vocabulary import CLASS_NAMES
from training.acceptance import run_acceptance
from training.file_architecture import ImportRefused, parse_classes
from training.h5_weights import SourceWeights
from training.parity import PARITY_LIMIT, Compared, Parity, check_parity
from training.parity_variants import Variant, failure_message, variant_differences
from training.rebuild import ImportSpec, Rebuilt, rebuild

__all__ = ["ImportOptions", "ImportRefused", "ImportedFile", "import_model_file", "parse_classes"]

log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class ImportOptions:
    spec: ImportSpec
    window: Window
    version: str
    force: bool = False
    check_parity: bool = True
    classes_from: str = "stated"  # stated | the file's | assumed alphabetical
    acceptance: Path | None = None  # a labelled folder of the site's images (training.acceptance)
    acceptance_labels: Path | None = None  # a CSV labelling its DICOM files, when not in class folders


@dataclass(frozen=True)
class ImportedFile:
    card: ModelCard
    artifact_dir: Path
    parity: Parity


def import_model_file(
    path: Path,
    options: ImportOptions,
    *,
    model_dir: Path,
    now: dt.datetime,
    source: SourceWeights | None = None,
) -> ImportedFile:
    """Rebuild `path`, check parity, write the artifact to `model_dir/<version>`; `ImportRefused` otherwise."""
    target = model_dir / options.version
    if target.exists():
        raise ImportRefused(f"{target} already exists: choose another --model-version")
    rebuilt = rebuild(path, options.spec, source)
    columns = [list(rebuilt.source_classes).index(name) for name in CLASS_NAMES]
    compared: list[Compared] = []
    parity = (
        check_parity(
            path,
            writer=rebuilt.source["format"],
            keras_version=rebuilt.source["keras_version"],
            full_model=rebuilt.source["full_model"],
            rebuilt=rebuilt.model,
            normalization=options.spec.normalization,
            columns=columns,
            compared=compared,
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
        raise ImportRefused(_parity_failure(rebuilt, parity, compared[0]))
    acceptance = (
        run_acceptance(
            rebuilt.model,
            image_size=rebuilt.image_size,
            window=options.window,
            classes=CLASS_NAMES,
            root=options.acceptance,
            labels_csv=options.acceptance_labels,
        )
        if options.acceptance is not None
        else None
    )
    extra = {
        "import": {
            **rebuilt.source,
            "source_sha256": sha256_file(path),
            "source_classes": list(rebuilt.source_classes),
            "classes_from": options.classes_from,
            "tensors_copied": rebuilt.tensors_copied,
            "parity": parity.as_dict(),
            "parity_limit": PARITY_LIMIT,
            "forced": forced,
            "acceptance": acceptance,
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


def _parity_failure(rebuilt: Rebuilt, parity: Parity, compared: Compared) -> str:
    """The refusal's sentence: which variant the builder knows the file matches best."""
    variants = variant_differences(rebuilt.model, compared.fed, compared.expected)
    imported = next(
        (v for v in variants if (v.pooling, v.activation) == (rebuilt.head, "softmax")),
        Variant(rebuilt.head, "softmax", parity.max_abs_diff or 0.0),
    )
    return failure_message(
        max_abs_diff=parity.max_abs_diff or 0.0,
        limit=PARITY_LIMIT,
        inputs=parity.inputs,
        imported=imported,
        variants=variants,
        preprocessing_layers=rebuilt.preprocessing_layers,
    )
