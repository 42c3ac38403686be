"""A trained model on disk: a weights file plus a JSON model card.

Loading always rebuilds the architecture with `build_model` and loads the weights into it (the
seed's "functional API reconstruction"): no serialized graph is trusted, so a Keras upgrade or a
backend change cannot break an artifact. A card whose classes, input size or weights hash do not
match is refused with an `ArtifactError` that says which.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import keras

from classifier.model.network import DEFAULT_BACKBONE, PREPROCESS_NAME, backbone_of, build_model, head_of
from classifier.model.preprocess import KIDNEY_WINDOW, PREPROCESSING_DESCRIPTION, PREPROCESSING_ID, Window
from classifier.study.evidence import definition_of
from classifier.worker.errors import ArtifactError
from common.files import sha256_file
from common.vocabulary import CLASS_NAMES

CARD_FILE = "model_card.json"
WEIGHTS_FILE = "model.weights.h5"  # Keras 3 requires the `.weights.h5` suffix
CARD_SCHEMA_VERSION = 1
NORMALIZATION_DESCRIPTIONS = {
    "caffe": "ResNet50 caffe (RGB->BGR, minus ImageNet means)",
    "tf": "x/127.5-1",
    "torch": "(x/255 - ImageNet mean)/ImageNet std",
    "rescale": "x/255",
    "none": "none (raw [0,255])",
}


@dataclass(frozen=True)
class ModelCard:
    version: str
    classes: list[str]
    image_size: int
    window: dict[str, float]
    preprocessing: dict[str, Any]
    backend: str
    keras_version: str
    manifest_hash: str | None
    metrics: dict[str, Any]
    weights_file: str
    weights_sha256: str
    dropout: float = 0.4
    # The graph mode of `build_model` (see there): a rebuild must use the same one, so that training
    # continued from this artifact treats BatchNorm as the original run did. Old cards: fine-tuning.
    from_scratch: bool = False
    # The head's pooling and the in-graph input normalisation (`classifier.model.network`); old cards: the seed's.
    head: str = "avg"
    normalization: str = "caffe"
    # The keras.applications base (`classifier.model.network.Backbone`); old cards: ResNet50.
    backbone: str = DEFAULT_BACKBONE
    created_at: str = ""
    # Temperature scaling fitted on validation scans (`classifier.model.calibration`): {"temperature": T, ...}.
    calibration: dict[str, Any] = field(default_factory=dict)
    # What training chose for the statements the service makes (`classifier.study.policy`): the study
    # rule, the evidence a study needs to be answered, the shift detector's threshold and file.
    decision: dict[str, Any] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)
    schema_version: int = CARD_SCHEMA_VERSION

    @property
    def temperature(self) -> float:
        return float(self.calibration.get("temperature", 1.0))

    @property
    def window_obj(self) -> Window:
        return Window(center=float(self.window["center"]), width=float(self.window["width"]))

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=True)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ModelCard:
        names = {f.name for f in fields(cls)}
        required = {"version", "classes", "image_size", "window", "weights_sha256", "weights_file"}
        missing = required - data.keys()
        if missing:
            raise ArtifactError(f"model card lacks {sorted(missing)}")
        kwargs = {k: v for k, v in data.items() if k in names}
        kwargs.setdefault("preprocessing", {})
        kwargs.setdefault("backend", "unknown")
        kwargs.setdefault("keras_version", "unknown")
        kwargs.setdefault("manifest_hash", None)
        kwargs.setdefault("metrics", {})
        return cls(**kwargs)


def save_artifact(model: keras.Model, directory: str | Path, card_fields: Mapping[str, Any]) -> ModelCard:
    """Write `model`'s weights and its card into `directory`; return the card.

    `card_fields` must give `version`; it may give `window` (a `Window` or dict), `manifest_hash`,
    `metrics`, `dropout`, `from_scratch` (how `build_model` built it), `normalization`, `created_at`,
    `calibration`, `decision` and `extra`. Classes, input size, head, backbone, backend and hashes are filled in here; the
    normalisation defaults to the model's own in-graph one.
    """
    if "version" not in card_fields:
        raise ValueError("card_fields must give a version")
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    weights_path = directory / WEIGHTS_FILE
    save_inference_weights(model, weights_path)
    window = card_fields.get("window", KIDNEY_WINDOW)
    window_dict = window.as_dict() if isinstance(window, Window) else dict(window)
    n_classes = int(model.output_shape[-1])
    if n_classes != len(CLASS_NAMES):
        raise ArtifactError(f"model has {n_classes} outputs, expected {len(CLASS_NAMES)} ({CLASS_NAMES})")
    normalization = str(card_fields.get("normalization", model.get_layer(PREPROCESS_NAME).mode))
    card = ModelCard(
        version=str(card_fields["version"]),
        classes=list(CLASS_NAMES),
        image_size=int(model.input_shape[1]),
        window=window_dict,
        preprocessing=preprocessing_summary(normalization),
        backend=keras.backend.backend(),
        keras_version=keras.__version__,
        manifest_hash=card_fields.get("manifest_hash"),
        metrics=dict(card_fields.get("metrics", {})),
        weights_file=WEIGHTS_FILE,
        weights_sha256=sha256_file(weights_path),
        dropout=float(card_fields.get("dropout", 0.4)),
        from_scratch=bool(card_fields.get("from_scratch", False)),
        head=head_of(model),
        normalization=normalization,
        backbone=backbone_of(model),
        created_at=str(card_fields.get("created_at") or dt.datetime.now(dt.UTC).isoformat()),
        calibration=dict(card_fields.get("calibration", {})),
        decision=dict(card_fields.get("decision", {})),
        extra=dict(card_fields.get("extra", {})),
    )
    # Write the card last and atomically: a directory with a card is a complete artifact.
    tmp = directory / (CARD_FILE + ".tmp")
    tmp.write_text(card.to_json())
    tmp.replace(directory / CARD_FILE)
    return card


def save_inference_weights(model: keras.Model, path: Path) -> None:
    """Write only the weights inference needs. Keras 3 writes a compiled model's optimizer state into
    a weights file too (Adam: two slots per trainable weight, twice the model again), which no
    worker reads; the optimizer is detached for the write and put back."""
    optimizer = getattr(model, "optimizer", None)
    if optimizer is None:
        model.save_weights(path)
        return
    model.optimizer = None
    try:
        model.save_weights(path)
    finally:
        model.optimizer = optimizer


def preprocessing_summary(normalization: str) -> dict[str, str]:
    """The card's `preprocessing` entry: the pipeline's id and what it does, ending in `normalization`."""
    if normalization == "caffe":  # the id every earlier artifact carries
        return {"id": PREPROCESSING_ID, "description": PREPROCESSING_DESCRIPTION}
    description = PREPROCESSING_DESCRIPTION.rsplit("; in-graph", 1)[0]
    return {
        "id": f"{PREPROCESSING_ID}+{normalization}",
        "description": f"{description}; in-graph normalisation {NORMALIZATION_DESCRIPTIONS[normalization]}.",
    }


def read_card(directory: str | Path) -> ModelCard:
    path = Path(directory) / CARD_FILE
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError as exc:
        raise ArtifactError(f"no model card at {path}") from exc
    except json.JSONDecodeError as exc:
        raise ArtifactError(f"model card {path} is not JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise ArtifactError(f"model card {path} is not a JSON object")
    return ModelCard.from_dict(data)


def load_artifact(
    directory: str | Path,
    *,
    expected_image_size: int | None = None,
    expected_sha256: str | None = None,
) -> tuple[keras.Model, ModelCard]:
    """Rebuild the architecture from code and load the artifact's weights into it.

    Refuses (ArtifactError) a card with other classes than `CLASS_NAMES`, another input size than
    `expected_image_size`, an evidence definition this version does not know, or weights whose sha256 differs from the card's or `expected_sha256`
    (the hash registered in the database).
    """
    directory = Path(directory)
    card = read_card(directory)
    if list(card.classes) != list(CLASS_NAMES):
        raise ArtifactError(f"model card classes {card.classes} do not match {list(CLASS_NAMES)}")
    if expected_image_size is not None and card.image_size != expected_image_size:
        raise ArtifactError(f"model card input size {card.image_size} does not match {expected_image_size}")
    try:
        definition_of(card.decision)  # a newer card's evidence: its min_evidence would mean something else
    except ValueError as exc:
        raise ArtifactError(str(exc)) from exc
    weights_path = directory / card.weights_file
    if not weights_path.is_file():
        raise ArtifactError(f"weights file {weights_path} is missing")
    actual = sha256_file(weights_path)
    if actual != card.weights_sha256:
        raise ArtifactError(f"weights sha256 {actual} does not match the card's {card.weights_sha256}")
    if expected_sha256 is not None and actual != expected_sha256:
        raise ArtifactError(f"weights sha256 {actual} does not match the registered {expected_sha256}")
    try:
        model = build_model(
            image_size=card.image_size,
            weights=None,
            dropout=card.dropout,
            from_scratch=card.from_scratch,
            head=card.head,
            normalization=card.normalization,
            backbone=card.backbone,
        )
    except ValueError as exc:
        raise ArtifactError(f"model card {directory / CARD_FILE}: {exc}") from exc
    try:
        model.load_weights(weights_path)
    except (ValueError, KeyError, OSError) as exc:
        raise ArtifactError(f"weights {weights_path} do not fit the architecture: {exc}") from exc
    return model, card
