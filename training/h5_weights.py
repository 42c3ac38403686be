"""Read the tensors of a Keras model file with h5py, without deserializing its graph.

Four layouts reach us from notebooks:

- legacy HDF5, full model (`model.save("x.h5")`, `ModelCheckpoint("best.h5")`): `model_weights/<layer>/`
  with a `weight_names` attribute per layer; Keras 2 / tf-keras names a weight `conv1_conv/kernel:0`,
  Keras 3's legacy writer `conv1_conv/kernel` (or `sequential/dense_2/kernel`);
- legacy HDF5, weights only (tf-keras `save_weights("x.h5")`): the same groups at the root;
- Keras 3 weights (`save_weights("x.weights.h5")`, and `model.weights.h5` inside a `.keras` zip):
  `layers/<auto name>/vars/<i>`, where the auto name is the layer's class in snake case with a
  counter per container (`conv2d`, `conv2d_1`, ...), nested models under `layers/<name>/layers/`.

Everything is returned as `layer/kind` -> array (kind: kernel, bias, gamma, beta, moving_mean,
moving_variance); the model config, when the file has one, is returned as plain JSON data to read
head and input size from. Nothing here imports Keras.
"""

from __future__ import annotations

import io
import json
import re
import zipfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import h5py
import numpy as np

# The variables of each layer class, in the order Keras 3 stores them as vars/0, vars/1, ...
KINDS_BY_CLASS = {
    "conv2d": ("kernel", "bias"),
    "dense": ("kernel", "bias"),
    "batch_normalization": ("gamma", "beta", "moving_mean", "moving_variance"),
}


class WeightsFileError(Exception):
    """The file cannot be read as Keras weights; the message says why."""


@dataclass
class SourceWeights:
    """The tensors of a model file, by source layer name."""

    path: Path
    format: str  # keras2-h5 | keras3-h5 | keras2-weights-h5 | keras3-weights-h5 | keras-v3
    keras_version: str | None
    config: dict[str, Any] | None  # the stored model config as JSON data, or None (weights only)
    tensors: dict[str, np.ndarray] = field(default_factory=dict)  # "layer/kind" -> array
    layer_names: list[str] = field(default_factory=list)  # every layer the file names, in order
    nested_in: list[str] = field(default_factory=list)  # containers holding many layers (a nested base)
    class_names: list[str] | None = None  # the output order, when the file records it (rarely)

    @property
    def full_model(self) -> bool:
        return self.config is not None

    def layers_with_weights(self) -> list[str]:
        """Source layer names that hold tensors, in file order."""
        seen: dict[str, None] = {}
        for key in self.tensors:
            seen.setdefault(key.rsplit("/", 1)[0], None)
        return list(seen)


def to_snake_case(name: str) -> str:
    """Keras 3's `naming.to_snake_case`: how it names a layer's group in a `.weights.h5` file."""
    name = re.sub(r"\W+", "", name)
    name = re.sub("(.)([A-Z][a-z]+)", r"\1_\2", name)
    return re.sub("([a-z])([A-Z])", r"\1_\2", name).lower()


def auto_names(layers: list[tuple[str, str]]) -> dict[str, str]:
    """Keras 3's group name -> the layer's real name, for (class name, layer name) pairs in order."""
    used: dict[str, int] = {}
    out: dict[str, str] = {}
    for class_name, real in layers:
        base = to_snake_case(class_name)
        if base in used:
            used[base] += 1
            out[f"{base}_{used[base]}"] = real
        else:
            used[base] = 0
            out[base] = real
    return out


def _text(value: Any) -> str:
    return value.decode("utf8") if isinstance(value, bytes) else str(value)


def _names(attr: Any) -> list[str]:
    return [_text(v) for v in np.asarray(attr).ravel().tolist()] if attr is not None else []


def read_weights(path: str | Path, *, base_names: Mapping[str, str] | None = None) -> SourceWeights:
    """The tensors of `path` (legacy `.h5`, `.weights.h5` or `.keras`); `WeightsFileError` otherwise.

    `base_names` maps Keras 3 group names (`conv2d_5`) to the real names of the expected base's
    layers (see `auto_names`); Keras 3 weight files need it, since they do not store real names.
    """
    path = Path(path)
    if not path.is_file():
        raise WeightsFileError(f"{path} is not a file")
    if zipfile.is_zipfile(path):
        return _read_keras_zip(path, base_names or {})
    try:
        with h5py.File(path, "r") as f:
            return _read_hdf5(f, path, base_names or {})
    except OSError as exc:  # not HDF5, truncated, unreadable
        raise WeightsFileError(f"{path} is not a readable HDF5 file or .keras archive: {exc}") from exc


def read_config(path: str | Path) -> dict[str, Any] | None:
    """Only the stored model config (a full `.h5`'s `model_config`, a `.keras` archive's `config.json`),
    without reading a tensor; None when there is none or the file cannot be read (`read_weights` says why)."""
    path = Path(path)
    try:
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as archive:
                data = json.loads(archive.read("config.json"))
                return data if isinstance(data, dict) else None
        with h5py.File(path, "r") as f:
            return _json_attr(f.attrs.get("model_config"), path)
    except (OSError, KeyError, zipfile.BadZipFile, json.JSONDecodeError, WeightsFileError):
        return None


def _read_hdf5(f: h5py.File, path: Path, base_names: Mapping[str, str]) -> SourceWeights:
    if "model_weights" in f:
        version = _text(f.attrs.get("keras_version", "")) or None
        config = _json_attr(f.attrs.get("model_config"), path)
        fmt = "keras3-h5" if (version or "").startswith("3") else "keras2-h5"
        source = SourceWeights(
            path, fmt, version, config, class_names=_class_names(f.attrs.get("class_names"))
        )
        return _read_legacy(f["model_weights"], source)
    if "layer_names" in f.attrs:
        version = _text(f.attrs.get("keras_version", "")) or None
        return _read_legacy(f, SourceWeights(path, "keras2-weights-h5", version, None))
    if "layers" in f:
        source = SourceWeights(path, "keras3-weights-h5", None, None)
        _read_v3(f, source, base_names)
        return source
    raise WeightsFileError(
        f"{path} is HDF5 but holds no Keras weights (no model_weights, layer_names or layers)"
    )


def _read_keras_zip(path: Path, base_names: Mapping[str, str]) -> SourceWeights:
    try:
        with zipfile.ZipFile(path) as archive:
            config = json.loads(archive.read("config.json"))
            metadata = (
                json.loads(archive.read("metadata.json")) if "metadata.json" in archive.namelist() else {}
            )
            weights = archive.read("model.weights.h5")
    except (KeyError, zipfile.BadZipFile, json.JSONDecodeError) as exc:
        raise WeightsFileError(f"{path} is not a Keras 3 .keras archive: {exc}") from exc
    source = SourceWeights(
        path,
        "keras-v3",
        metadata.get("keras_version"),
        config,
        class_names=_class_names(metadata.get("class_names")),
    )
    try:
        with h5py.File(io.BytesIO(weights), "r") as f:
            _read_v3(f, source, base_names)
    except OSError as exc:
        raise WeightsFileError(f"{path}: its model.weights.h5 is not readable HDF5: {exc}") from exc
    return source


def _class_names(value: Any) -> list[str] | None:
    """A `class_names` attribute or metadata entry (a list, or a JSON list as text), if present."""
    if value is None:
        return None
    if isinstance(value, (str, bytes)):
        try:
            value = json.loads(_text(value))
        except json.JSONDecodeError:
            return None
    names = [_text(v) for v in np.asarray(value).ravel().tolist()]
    return names or None


def _json_attr(value: Any, path: Path) -> dict[str, Any] | None:
    if value is None:
        return None
    try:
        data = json.loads(_text(value))
    except json.JSONDecodeError as exc:
        raise WeightsFileError(f"{path}: its model_config is not JSON: {exc}") from exc
    return data if isinstance(data, dict) else None


def _read_legacy(group: h5py.Group, source: SourceWeights) -> SourceWeights:
    """`<layer>/<weight name>` groups, in `layer_names` order; weight names end in `layer/kind[:0]`."""
    for layer in _names(group.attrs.get("layer_names")):
        source.layer_names.append(layer)
        if layer not in group:
            continue
        weight_names = _names(group[layer].attrs.get("weight_names"))
        inner = {name.split("/")[-2] for name in weight_names if "/" in name}
        if len(inner) > 1 or (inner and inner != {layer}):
            source.nested_in.append(layer)  # a model nested as one layer: its weights keep their own names
        for name in weight_names:
            parts = name.split("/")
            if len(parts) < 2:
                raise WeightsFileError(f"{source.path}: weight {name!r} of layer {layer!r} has no layer name")
            key = f"{parts[-2]}/{parts[-1].split(':')[0]}"
            if key in source.tensors:
                raise WeightsFileError(f"{source.path}: weight {key} appears twice")
            source.tensors[key] = np.asarray(group[layer][name])
    return source


def _read_v3(f: h5py.Group, source: SourceWeights, base_names: Mapping[str, str]) -> None:
    """`layers/<auto name>/vars/<i>`, nested models one level down (`layers/<model>/layers/...`)."""
    layers = f.get("layers")
    if not isinstance(layers, h5py.Group):
        raise WeightsFileError(f"{source.path}: no `layers` group")
    for name in _sorted_auto(layers):
        group = layers[name]
        if "layers" in group and len(group["layers"]):  # a nested model: its layers are the base's
            source.nested_in.append(name)
            for inner in _sorted_auto(group["layers"]):
                _add_v3_layer(source, group["layers"][inner], inner, base_names.get)
        else:  # a flat model: the base's layers sit beside the head's, counted the same way
            _add_v3_layer(source, group, name, base_names.get)


def _sorted_auto(group: h5py.Group) -> list[str]:
    """Group names in their counter order (`dense` < `dense_1` < `dense_10`), i.e. the layers' order."""

    def key(name: str) -> tuple[str, int]:
        stem, _, suffix = name.rpartition("_")
        return (stem, int(suffix)) if stem and suffix.isdigit() else (name, -1)

    return sorted(group.keys(), key=key)


def _add_v3_layer(
    source: SourceWeights, group: h5py.Group, auto: str, real_name: Callable[[str], str | None]
) -> None:
    layer = real_name(auto) or auto
    source.layer_names.append(layer)
    variables = group.get("vars")
    if not isinstance(variables, h5py.Group) or not len(variables):
        return
    stem = auto.rsplit("_", 1)[0] if auto.rsplit("_", 1)[-1].isdigit() else auto
    kinds = KINDS_BY_CLASS.get(stem, ())
    for index in sorted(variables.keys(), key=int):
        i = int(index)
        kind = kinds[i] if i < len(kinds) else f"var{i}"
        source.tensors[f"{layer}/{kind}"] = np.asarray(variables[index])
