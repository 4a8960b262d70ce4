"""HDF5: Keras legacy full models and weights, Keras 3 .weights.h5, trees.

Flavours read and written:

``keras-model``
    ``model.save("x.h5")`` from Keras 1, 2 (tf_keras) and 3: root attributes
    ``keras_version``, ``backend``, ``model_config``, ``training_config``;
    a ``model_weights`` group with ``layer_names`` and one group per layer
    holding ``weight_names``; optimizer state in ``optimizer_weights``.
``keras-weights``
    legacy ``save_weights("x.h5")``: the ``model_weights`` layout at the root.
``keras3-weights``
    Keras 3 ``save_weights("x.weights.h5")`` (also written by tf_keras 2.13+):
    ``layers/<name>/vars/<i>``; weight names are positional.
``tree``
    any other tree of datasets (a dict of arrays saved with h5py), and
    modelconv's own trees, which carry the shared header as the root
    attribute ``modelconv`` so names, roles and dtypes come back exactly.

All access to the file goes through ``h5safe``: links are never followed,
filters are checked before reading, sizes are checked before allocating.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable, Mapping
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from .. import dtypes, header, keras_config
from ..errors import (
    HostileInputError,
    InputError,
    InternalError,
    ModelconvError,
    UsageError,
)
from ..jsonsafe import loads_bounded
from ..model import Architecture, Model, Role, Tensor
from . import h5safe
from .base import Loss, Probe, ReadOptions, WriteOptions

FORMAT = "hdf5"
FLAVOURS = ("keras-model", "keras-weights", "keras3-weights", "tree")

# Keras 2 and 3 split a name-list attribute into numbered pieces above this
# many bytes (HDF5_OBJECT_HEADER_LIMIT in both legacy savers).
KERAS_ATTR_LIMIT = 64512

# Keras >= 2.1 writes this group beside the per-layer groups (empty unless
# the model owns variables directly); it is not listed in layer_names.
TOP_LEVEL_GROUP = "top_level_model_weights"

# Root attribute of modelconv's own trees; escaped names live under this group.
MARKER_ATTR = header.HEADER_KEY
ESCAPE_GROUP = "__modelconv_escaped__"

# RNN layers keep their variables in a cell: Keras 2 names them
# "lstm/lstm_cell/kernel:0" (tf.keras 2.x) and Keras 3 "lstm/lstm_cell/kernel";
# canonical names leave the cell out.
_CELL_SEGMENT = re.compile(r"^[a-z0-9_]*cell(_\d+)?$")

# Keras 3 .weights.h5 containers that hold children rather than variables.
_K3_CONTAINERS = frozenset({"layers", "_layer_checkpoint_dependencies"})

DEFAULT_KERAS_VERSION = {"keras3": "3.0.0", "keras2": "2.15.0"}


def sniff(probe: Probe) -> int:
    """100 when HDF5's signature is at offset 0 or at a userblock offset."""
    if probe.is_dir:
        return 0
    return 100 if h5safe.is_hdf5(probe.head) else 0


# ==========================================================================
# Reading


def read(path: Path, options: ReadOptions) -> Model:
    """Read headers into a Model whose tensors read their datasets on demand."""
    stack = ExitStack()
    h5 = h5safe.open_file(path)
    stack.callback(h5.close)
    try:
        model = _read_open(h5, path, options)
    except ModelconvError:
        stack.close()
        raise
    except h5safe.H5_ERRORS as exc:
        stack.close()
        raise InputError(
            f"{str(path)!r}: HDF5 structure cannot be read ({exc}); the file is "
            "damaged or not what it claims"
        ) from exc
    except BaseException:
        stack.close()
        raise
    return model.replace(resources=stack)


def _read_open(h5: h5py.File, path: Path, options: ReadOptions) -> Model:
    root_attrs = set(h5safe.attr_names(h5))
    if MARKER_ATTR in root_attrs:
        return _read_modelconv_tree(h5, options)
    if "model_config" in root_attrs:
        return _read_keras_model(h5, options)
    if "layer_names" in root_attrs or "layer_names0" in root_attrs:
        return _read_keras_weights(h5, h5, options)
    weights = (
        h5safe.resolve(h5, "model_weights") if _is_group(h5, "model_weights") else None
    )
    if weights is not None and h5safe.name_list(weights, "layer_names") is not None:
        # A full-model layout whose config is missing: its weights still read.
        return _read_keras_weights(h5, weights, options)
    if _looks_keras3_weights(h5):
        return _read_keras3_weights(h5, options)
    return _read_tree(h5, options)


def _is_group(group: h5py.Group, name: str) -> bool:
    try:
        if name not in group:
            return False
    except h5safe.H5_ERRORS:
        return False
    if h5safe.link_kind(group, name) != "hard":
        return False
    return isinstance(h5safe.child(group, name), h5py.Group)


def _looks_keras3_weights(h5: h5py.File) -> bool:
    # Keras 3 (saving_lib.H5IOStore) always creates the root "vars" group
    # for the model's own variables, and "layers" when the model has layers.
    return _is_group(h5, "vars") and (
        _is_group(h5, "layers")
        or _is_group(h5, "_layer_checkpoint_dependencies")
        or _is_group(h5, "optimizer")
    )


@dataclass
class _Collector:
    """Tensors gathered by a reader, with the declared total kept in check."""

    options: ReadOptions
    tensors: list[Tensor]
    warnings: list[str]
    total: int = 0

    def add(
        self,
        dset: h5py.Dataset,
        where: str,
        name: str,
        role: Role,
        source_name: str,
        *,
        opaque2_is_bfloat16: bool = False,
        attrs: Mapping[str, Any] | None = None,
    ) -> Tensor | None:
        try:
            info = h5safe.check_dataset(
                dset, where, opaque2_is_bfloat16=opaque2_is_bfloat16
            )
        except h5safe.SkippedDataset as exc:
            self.warnings.append(str(exc))
            return None
        self.total += info.nbytes
        h5safe.check_limit(info.nbytes, self.options.max_bytes, f"dataset {where!r}")
        h5safe.check_limit(self.total, self.options.max_bytes, "the file's datasets")
        tensor = Tensor(
            name=name,
            dtype=info.dtype,
            shape=info.shape,
            role=role,
            source_names=(source_name,),
            source=h5safe.H5Source(dset, info, where),
            attrs=dict(attrs or {}),
        )
        self.tensors.append(tensor)
        return tensor


# --------------------------------------------------------------------------
# Keras legacy full model and weights-only files


def _read_keras_model(h5: h5py.File, options: ReadOptions) -> Model:
    config_value = h5safe.read_attr(h5, "model_config")
    if config_value is None:
        raise InputError(
            "HDF5 file has a 'model_weights' group but no 'model_config' "
            "attribute; it is not a complete Keras model (try --flavour "
            "keras-weights or a tree)"
        )
    text = h5safe.as_text(config_value, "attribute 'model_config'")
    config = loads_bounded(text, what="attribute 'model_config'")
    if not isinstance(config, (dict, list)):
        raise InputError(
            f"attribute 'model_config' holds JSON {type(config).__name__}, not a "
            "Keras model config; the file is damaged"
        )
    metadata, warnings = _keras_root_metadata(h5, skip={"model_config"})
    architecture = _architecture(config, warnings)
    weights = h5safe.resolve(h5, "model_weights")
    if not isinstance(weights, h5py.Group):
        raise InputError(
            "HDF5 Keras model has no 'model_weights' group; the file is damaged"
        )
    collector = _Collector(options, [], warnings)
    layer_names = h5safe.name_list(weights, "layer_names")
    if layer_names is None:
        raise InputError(
            "group 'model_weights' has no 'layer_names' attribute; the file is "
            "not a Keras model or is damaged"
        )
    _read_layer_groups(weights, layer_names, collector, _keras1(metadata))
    _read_optimizer(h5, collector)
    return Model(
        tensors=tuple(
            _align_auto_names(
                _align_bare_names(collector.tensors, architecture), architecture
            )
        ),
        architecture=architecture,
        metadata=metadata,
        format=FORMAT,
        flavour="keras-model",
        warnings=tuple(collector.warnings) + tuple(architecture.warnings),
    )


# Keras 3 names a weight made without a name "variable", "variable_1", ...,
# numbered across the whole session (ConvNeXt's LayerScale gamma).
_AUTO_NAME = re.compile(r"variable(_\d+)?")


def _align_auto_names(tensors: list[Tensor], arch: Architecture) -> list[Tensor]:
    """Name a layer's auto-named Keras 3 weights after the architecture.

    Only when every weight of the layer is auto-named and the architecture
    lists as many: "layer_scale/variable_7" becomes "layer_scale/gamma".
    """
    expected = {layer.name: layer.tensor_names for layer in arch.layers}
    groups: dict[str, list[int]] = {}
    for index, tensor in enumerate(tensors):
        layer = tensor.name.rpartition("/")[0]
        if tensor.role is Role.WEIGHT and layer in expected:
            groups.setdefault(layer, []).append(index)
    out = list(tensors)
    taken = {t.name for t in tensors}
    for layer, indexes in groups.items():
        names = expected[layer]
        shorts = [tensors[i].name.rpartition("/")[2] for i in indexes]
        if len(names) != len(indexes) or not all(map(_AUTO_NAME.fullmatch, shorts)):
            continue
        if taken & set(names):
            continue
        for index, name in zip(indexes, names):
            out[index] = out[index].replace(name=name)
    return out


def _align_bare_names(tensors: list[Tensor], arch: Architecture) -> list[Tensor]:
    """Name a nested model's bare-named weights after the architecture.

    Keras 3.0-3.2 wrote bare variable names (``kernel``, ``gamma``) even for
    the weights of a nested model, so ``sub_model/kernel`` says nothing of
    the inner layer. When a layer's weights are all bare, as many as the
    architecture lists and in Keras' order, they take the architecture's
    names (``sub_model/sub_dense/kernel``); the source names stay.
    """
    expected = {layer.name: layer.tensor_names for layer in arch.layers}
    groups: dict[str, list[int]] = {}
    for index, tensor in enumerate(tensors):
        if tensor.role is not Role.WEIGHT or not tensor.source_names:
            continue
        layer, _, weight = tensor.source_names[0].partition("/")
        if layer in expected and "/" not in _strip_index(weight):
            groups.setdefault(layer, []).append(index)
    out = list(tensors)
    for layer, indexes in groups.items():
        names = expected[layer]
        current = [tensors[i].name for i in indexes]
        if len(names) != len(indexes) or set(current) == set(names):
            continue
        if any(
            n.rpartition("/")[2] != c.rpartition("/")[2] for n, c in zip(names, current)
        ):
            continue  # not the same weights in the same order: keep them as read
        taken = {t.name for t in out} - set(current)
        if taken & set(names):
            continue
        for index, name in zip(indexes, names):
            out[index] = out[index].replace(name=name)
    return out


def _architecture(config: Any, warnings: list[str]) -> Architecture:
    """The Keras architecture; the config alone when layers cannot be derived.

    Deriving layers is keras_config's work; a failure there must not stop the
    weights from being read, so it becomes a warning and the config is kept.
    """
    try:
        return keras_config.build_architecture(config)
    except ModelconvError:
        raise
    except Exception as exc:  # noqa: BLE001 - reported, config kept verbatim
        warnings.append(
            f"the model config's layers could not be derived ({type(exc).__name__}: "
            f"{exc}); the config is kept verbatim"
        )
        return Architecture(framework="keras", config=config)


def _read_keras_weights(
    h5: h5py.File, group: h5py.Group, options: ReadOptions
) -> Model:
    metadata, warnings = _keras_root_metadata(group, skip={"layer_names"})
    collector = _Collector(options, [], warnings)
    layer_names = h5safe.name_list(group, "layer_names") or []
    _read_layer_groups(group, layer_names, collector, _keras1(metadata))
    if group is not h5:
        collector.warnings.append(
            "the file has 'model_weights' but no 'model_config' attribute; only "
            "the weights were read"
        )
        _read_optimizer(h5, collector)
    return Model(
        tensors=tuple(collector.tensors),
        metadata=metadata,
        format=FORMAT,
        flavour="keras-weights",
        warnings=tuple(collector.warnings),
    )


def _keras1(metadata: Mapping[str, Any]) -> bool:
    version = (metadata.get("producer") or {}).get("version")
    return version is None or str(version).startswith("1")


def _keras_root_metadata(
    h5: h5py.File, skip: set[str]
) -> tuple[dict[str, Any], list[str]]:
    """producer, backend, training_config and any other root attributes."""
    warnings: list[str] = []
    version = h5safe.read_attr(h5, "keras_version")
    backend = h5safe.read_attr(h5, "backend")
    metadata: dict[str, Any] = {
        # Keras 1.0-1.1 wrote no keras_version; Keras' own loader then assumes 1.
        "producer": {
            "name": "keras",
            "version": None
            if version is None
            else h5safe.as_text(version, "attribute 'keras_version'"),
        },
    }
    if backend is not None:
        metadata["backend"] = h5safe.as_text(backend, "attribute 'backend'")
    training = h5safe.read_attr(h5, "training_config")
    if training is None:
        training = h5safe.read_attr(h5, UNUSABLE_TRAINING_CONFIG)
    if training is not None:
        text = h5safe.as_text(training, "attribute 'training_config'")
        try:
            metadata["training_config"] = loads_bounded(
                text, what="attribute 'training_config'"
            )
        except InputError as exc:
            warnings.append(f"{exc}; kept as text")
            metadata["training_config"] = text
    known = {
        "keras_version",
        "backend",
        "training_config",
        UNUSABLE_TRAINING_CONFIG,
        *skip,
    }
    others = {
        name: h5safe.plain_value(h5safe.read_attr(h5, name))
        for name in h5safe.attr_names(h5)
        if name not in known and not re.fullmatch(r"layer_names\d+", name)
    }
    if others:
        metadata["attributes"] = others
    return metadata, warnings


def _read_layer_groups(
    group: h5py.Group,
    layer_names: list[str],
    collector: _Collector,
    keras1: bool,
) -> None:
    """The tensors of each layer in ``layer_names``, in Keras' legacy order."""
    layers = list(layer_names)
    if TOP_LEVEL_GROUP not in layers and _is_group(group, TOP_LEVEL_GROUP):
        layers.append(TOP_LEVEL_GROUP)
    used: set[str] = set()
    for layer in layers:
        layer_group = h5safe.resolve(group, layer)
        if not isinstance(layer_group, h5py.Group):
            raise InputError(
                f"'layer_names' lists layer {layer!r} but {group.name!r} has no "
                "such group; the file is truncated or damaged"
            )
        weight_names = h5safe.name_list(layer_group, "weight_names") or []
        for weight in weight_names:
            dset = h5safe.resolve(layer_group, weight)
            where = f"{layer_group.name}/{weight}"
            if not isinstance(dset, h5py.Dataset):
                raise InputError(
                    f"layer {layer!r} lists weight {weight!r} but there is no "
                    f"dataset at {where!r}; the file is truncated or damaged"
                )
            name = _unique(canonical_name(layer, weight, keras1), used, collector)
            collector.add(
                dset,
                where,
                name,
                Role.WEIGHT,
                f"{layer}/{weight}",
                opaque2_is_bfloat16=True,
            )


def _read_optimizer(h5: h5py.File, collector: _Collector) -> None:
    if not _is_group(h5, "optimizer_weights"):
        return
    group = h5safe.child(h5, "optimizer_weights")
    used = {t.name for t in collector.tensors}
    for weight in h5safe.name_list(group, "weight_names") or []:
        dset = h5safe.resolve(group, weight)
        where = f"/optimizer_weights/{weight}"
        if not isinstance(dset, h5py.Dataset):
            raise InputError(
                f"'optimizer_weights' lists {weight!r} but there is no dataset "
                f"at {where!r}; the file is truncated or damaged"
            )
        name = _unique(f"optimizer/{_strip_index(weight)}", used, collector)
        collector.add(
            dset, where, name, Role.OPTIMIZER, weight, opaque2_is_bfloat16=True
        )


def _unique(name: str, used: set[str], collector: _Collector) -> str:
    if name not in used:
        used.add(name)
        return name
    index = 1
    while f"{name}_{index}" in used:
        index += 1
    collector.warnings.append(
        f"two weights map to the name {name!r}; the second is called {name}_{index}"
    )
    used.add(f"{name}_{index}")
    return f"{name}_{index}"


def _strip_index(name: str) -> str:
    """``kernel:0`` -> ``kernel``: TF variable names end in an output index."""
    return re.sub(r":\d+$", "", name)


def canonical_name(layer: str, weight: str, keras1: bool = False) -> str:
    """The canonical ``layer/weight`` name of a legacy HDF5 weight.

    Weight-name forms by writer: Keras 1 ``dense_1_W``; Keras 2 / tf_keras
    ``dense_1/kernel:0`` (``lstm/lstm_cell/kernel:0`` for RNNs,
    ``dense_2/kernel:0`` for a layer of a nested model); Keras 3.0-3.2 bare
    ``kernel``; Keras >= 3.3 the variable path ``sequential/dense/kernel``
    (the model name leads for Sequential, not for functional models).
    """
    if "/" in layer and _strip_index(weight).startswith(f"{layer}/"):
        # tf.keras DenseNet names its layers "conv1/conv", and their weights
        # "conv1/conv/kernel:0": the whole layer name leads.
        return f"{layer}/{_strip_index(weight)[len(layer) + 1 :]}"
    parts = [p for p in _strip_index(weight).split("/") if p]
    if not parts:
        return f"{layer}/{weight}"
    if len(parts) == 1:
        short = parts[0]
        if keras1 and short.startswith(f"{layer}_") and len(short) > len(layer) + 1:
            short = short[len(layer) + 1 :]
        return f"{layer}/{short}"
    if parts[0] != layer and len(parts) >= 3 and _same_layer(parts[1], layer):
        parts = parts[1:]  # Keras >= 3.3 Sequential: the model name leads
    elif not _same_layer(parts[0], layer) and layer in parts[1:-1]:
        # Keras >= 3.3 puts name scopes first: NASNet's layers are built in
        # backend.name_scope("reduction_A_block_stem_1"), ..., so the path is
        # "reduction_A_block_stem_1/block_1/.../<layer>/depthwise_kernel".
        parts = parts[parts.index(layer, 1) :]
    if _same_layer(parts[0], layer):
        parts = parts[1:]
    inner = parts[:-1]
    # Keras 2 made "bidirectional/forward_lstm/lstm_cell_1/kernel:0"; the cell
    # is left out, the wrapped layer's name stays.
    inner = [p for p in inner if not _CELL_SEGMENT.match(p)]
    return "/".join([layer, *inner, parts[-1]])


def _same_layer(segment: str, layer: str) -> bool:
    # tf.keras 1.x/2.x could uniquify a variable scope to "dense_1_1" when a
    # layer was built twice in one graph; it still names that layer.
    return (
        segment == layer
        or re.fullmatch(re.escape(layer) + r"_\d+", segment) is not None
    )


# --------------------------------------------------------------------------
# Keras 3 .weights.h5


def _read_keras3_weights(h5: h5py.File, options: ReadOptions) -> Model:
    collector = _Collector(options, [], [])
    vars_groups: list[tuple[str, h5py.Group]] = []
    others: list[h5safe.Entry] = []
    for entry in h5safe.walk(h5):
        parts = entry.path.split("/")
        if entry.is_group and parts[-1] == "vars":
            vars_groups.append((entry.path, entry.obj))
        elif not entry.is_group and not (len(parts) >= 2 and parts[-2] == "vars"):
            others.append(entry)
    vars_groups.sort(key=lambda item: _natural_key(item[0]))
    used: set[str] = set()
    for path, group in vars_groups:
        owner = path[: -len("vars")].rstrip("/")
        base, role = _keras3_owner(h5, owner)
        datasets = _vars_datasets(group)
        for index, dset in datasets:
            name = _unique(f"{base}/{index}" if base else str(index), used, collector)
            collector.add(
                dset,
                f"/{path}/{index}",
                name,
                role,
                f"{path}/{index}",
                opaque2_is_bfloat16=True,
            )
    for entry in others:
        name = _unique(entry.path, used, collector)
        collector.add(entry.obj, f"/{entry.path}", name, Role.STATE, entry.path)
    if collector.tensors:
        collector.warnings.insert(
            0,
            "tensor names are positional (<layer>/<index>): a Keras 3 weights "
            "file carries no weight names, only their order",
        )
    return Model(
        tensors=tuple(collector.tensors),
        metadata={"producer": {"name": "keras", "version": None}},
        format=FORMAT,
        flavour="keras3-weights",
        warnings=tuple(collector.warnings),
    )


def _vars_datasets(group: h5py.Group) -> list[tuple[int, h5py.Dataset]]:
    found: list[tuple[int, h5py.Dataset]] = []
    for key in group:
        obj = h5safe.child(group, key)
        if not isinstance(obj, h5py.Dataset):
            continue
        if not key.isdigit():
            raise InputError(
                f"dataset {group.name}/{key!r} in a Keras weights 'vars' group "
                "is not numbered; the file is not a Keras 3 weights file"
            )
        found.append((int(key), obj))
    found.sort(key=lambda item: item[0])
    return found


def _keras3_owner(h5: h5py.File, owner: str) -> tuple[str, Role]:
    """The canonical name prefix and role for the vars of object ``owner``."""
    parts = owner.split("/") if owner else []
    if not parts:
        return _vars_name(h5, "") or "model", Role.WEIGHT
    if parts[0] == "optimizer":
        return "optimizer", Role.OPTIMIZER
    role = (
        Role.STATE
        if parts[0] == "metrics" or "seed_generator" in parts
        else (Role.WEIGHT)
    )
    names: list[str] = []
    for i, part in enumerate(parts):
        if part in _K3_CONTAINERS and i % 2 == 0:
            continue
        if part == "cell" and names:
            continue  # Keras 3 RNN layers keep their variables in .cell
        prefix = "/".join(parts[: i + 1])
        names.append(_vars_name(h5, prefix) or part)
    return "/".join(names), role


def _vars_name(h5: h5py.File, prefix: str) -> str | None:
    # Keras >= 3.6 records the layer's own name as an attribute of its vars.
    vars_group = h5safe.resolve(h5, f"{prefix}/vars" if prefix else "vars")
    if not isinstance(vars_group, h5py.Group):
        return None
    value = h5safe.read_attr(vars_group, "name")
    if value is None:
        return None
    try:
        name = h5safe.as_text(value, f"attribute 'name' of {vars_group.name!r}")
    except InputError:
        return None
    return name if name and "/" not in name else None


def _natural_key(text: str) -> list[Any]:
    return [
        (0, int(p), "") if p.isdigit() else (1, 0, p) for p in re.split(r"(\d+)", text)
    ]


# --------------------------------------------------------------------------
# Generic trees, and modelconv's own


def _read_tree(h5: h5py.File, options: ReadOptions) -> Model:
    collector = _Collector(options, [], [])
    group_attrs: dict[str, Any] = {}
    for entry in h5safe.walk(h5):
        attrs = _plain_attrs(entry.obj)
        if entry.is_group:
            if attrs:
                group_attrs[entry.path] = attrs
            continue
        collector.add(
            entry.obj,
            f"/{entry.path}",
            entry.path,
            Role.WEIGHT,
            entry.path,
            attrs=attrs,
        )
    metadata: dict[str, Any] = {}
    root = _plain_attrs(h5)
    if root:
        metadata["attributes"] = root
    if group_attrs:
        metadata["group_attributes"] = group_attrs
    return Model(
        tensors=tuple(collector.tensors),
        metadata=metadata,
        format=FORMAT,
        flavour="tree",
        warnings=tuple(collector.warnings),
    )


def _plain_attrs(obj: h5py.HLObject) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for name in h5safe.attr_names(obj):
        try:
            result[name] = h5safe.plain_value(h5safe.read_attr(obj, name))
        except HostileInputError:
            raise
        except InputError as exc:
            result[name] = f"<unreadable: {exc}>"
    return result


def _read_modelconv_tree(h5: h5py.File, options: ReadOptions) -> Model:
    value = h5safe.read_attr(h5, MARKER_ATTR)
    text = h5safe.as_text(value, f"attribute {MARKER_ATTR!r}")
    head = header.parse_header_bytes(text.encode("utf-8"))
    sources = []
    total = 0
    for entry in head["tensors"]:
        key = entry.get("key", entry["name"])
        if not isinstance(key, str):
            raise InputError("modelconv header: a tensor 'key' must be a string")
        dset = h5safe.resolve(h5, key)
        if not isinstance(dset, h5py.Dataset):
            raise InputError(
                f"modelconv header lists tensor {entry['name']!r} at {key!r} but "
                "the file has no dataset there; the file is damaged"
            )
        info = h5safe.check_dataset(dset, f"/{key}")
        if info.dtype != entry["dtype"] or list(info.shape) != entry["shape"]:
            raise InputError(
                f"tensor {entry['name']!r}: dataset {key!r} holds {info.dtype} "
                f"{list(info.shape)} where the header says {entry['dtype']} "
                f"{entry['shape']}; the file is damaged"
            )
        total += info.nbytes
        h5safe.check_limit(total, options.max_bytes, "the file's datasets")
        sources.append(h5safe.H5Source(dset, info, f"/{key}"))
    return header.model_from_header(head, sources, format=FORMAT, flavour="tree")


# ==========================================================================
# Writing


def default_flavour(model: Model) -> str:
    return "keras-model" if _is_keras(model.architecture) else "tree"


def _is_keras(arch: Architecture | None) -> bool:
    return arch is not None and arch.framework == "keras"


def _flavour(model: Model, options: WriteOptions) -> str:
    flavour = options.flavour or default_flavour(model)
    if flavour not in FLAVOURS:
        raise UsageError(
            f"unknown HDF5 flavour {flavour!r}; choose one of {', '.join(FLAVOURS)}"
        )
    return flavour


def losses(model: Model, options: WriteOptions) -> list[Loss]:
    """What the chosen flavour cannot carry for ``model``."""
    flavour = _flavour(model, options)
    if flavour == "tree":
        return []
    found: list[Loss] = []
    if flavour == "keras-model":
        if not _is_keras(model.architecture):
            found.append(
                Loss(
                    "architecture",
                    "a Keras full-model HDF5 file needs a Keras architecture and "
                    "this model has none; write --flavour tree or keras-weights",
                )
            )
        state = model.by_role(Role.STATE)
        if state:
            found.append(_dropped("state", state, "a Keras full-model file"))
        left_out = model.metadata.get(LEFT_OUT_KEY)
        if left_out:
            found.append(
                _dropped(
                    "optimizer",
                    [model.tensor(name) for name in left_out],
                    "tf_keras, which lays out optimizer state differently,",
                )
            )
        return found
    if model.architecture is not None:
        found.append(
            Loss(
                "architecture",
                f"--flavour {flavour} holds weights only; the architecture is dropped",
            )
        )
    if "training_config" in model.metadata:
        found.append(Loss("metadata", "the training config is dropped"))
    if flavour == "keras-weights":
        for role in (Role.OPTIMIZER, Role.STATE):
            tensors = model.by_role(role)
            if tensors:
                found.append(_dropped(role.value, tensors, "legacy weights files"))
    if flavour == "keras3-weights" and any(
        not _keras3_source_path(model, t) for t in model.tensors
    ):
        found.append(
            Loss(
                "names",
                "Keras 3 weights files are positional: tensor names are not kept",
            )
        )
    return found


def _dropped(what: str, tensors: Iterable[Tensor], where: str) -> Loss:
    names = [t.name for t in tensors]
    shown = ", ".join(names[:5]) + (" ..." if len(names) > 5 else "")
    return Loss(
        what,
        f"{len(names)} {what} tensor(s) dropped ({shown}): {where} cannot hold "
        f"them (or pass --drop {what})",
        tensors=tuple(names),
    )


def write(model: Model, path: Path, options: WriteOptions) -> None:
    """Write ``model`` to ``path`` in ``options.flavour``, one tensor at a time."""
    flavour = _flavour(model, options)
    if flavour == "keras-model" and not _is_keras(model.architecture):
        raise UsageError(
            "cannot write a Keras full-model HDF5 file: the model has no Keras "
            "architecture; use --flavour tree (lossless) or keras-weights"
        )
    if flavour == "keras-model":
        model = _migrated(model, options)
    compression = _compression(options)
    try:
        with h5py.File(path, "w") as h5:
            writer = _Writer(h5, compression)
            if flavour == "keras-model":
                _write_keras_model(writer, model, options)
            elif flavour == "keras-weights":
                _write_keras_weights(writer, model, options)
            elif flavour == "keras3-weights":
                _write_keras3_weights(writer, model)
            else:
                _write_tree(writer, model)
    except ModelconvError:
        raise
    except (OSError, ValueError, TypeError, RuntimeError) as exc:
        raise InternalError(f"writing HDF5 file {str(path)!r} failed: {exc}") from exc


def _compression(options: WriteOptions) -> dict[str, Any]:
    if options.compress is None:
        return {}
    name, level = options.compress
    if name == "gzip":
        if level is not None and not 0 <= level <= 9:
            raise UsageError(f"gzip level {level} is out of range; use 0 to 9")
        return {
            "compression": "gzip",
            "compression_opts": 4 if level is None else level,
        }
    if name == "lzf" and level is None:
        return {"compression": "lzf"}
    raise UsageError(
        f"HDF5 compression {name!r}{'' if level is None else f':{level}'} is not "
        "available; use gzip[:0-9] or lzf"
    )


class _Writer:
    """Creates datasets and fills them slab by slab from a tensor's chunks."""

    def __init__(self, h5: h5py.File, compression: Mapping[str, Any]) -> None:
        self.h5 = h5
        self.compression = dict(compression)

    def dataset(
        self, group: h5py.Group, name: str, tensor: Tensor, *, bfloat16: str
    ) -> h5py.Dataset:
        """Create ``name`` in ``group`` and stream ``tensor`` into it.

        ``bfloat16`` says how bfloat16 is stored: "uint16" (its bit pattern,
        readable by numpy alone) or "opaque" (what Keras 3 writes, and reads
        back with ml_dtypes); both carry the attribute dtype="bfloat16".
        """
        if tensor.dtype == "bfloat16":
            dtype = np.dtype("<u2") if bfloat16 == "uint16" else tensor.numpy_dtype
        else:
            dtype = dtypes.storage_dtype(tensor.dtype)
        extra = self.compression if tensor.size > 0 and tensor.shape else {}
        try:
            dset = group.create_dataset(name, shape=tensor.shape, dtype=dtype, **extra)
        except ValueError as exc:
            raise InternalError(
                f"cannot create HDF5 dataset {name!r} in {group.name!r} for tensor "
                f"{tensor.name!r}: {exc}"
            ) from exc
        if tensor.dtype == "bfloat16":
            dset.attrs["dtype"] = "bfloat16"
        self._fill(dset, tensor, dtype)
        return dset

    def _fill(self, dset: h5py.Dataset, tensor: Tensor, dtype: np.dtype) -> None:
        if tensor.size == 0:
            for _ in tensor.iter_chunks():
                pass
            return
        if not tensor.shape:
            (value,) = list(tensor.iter_chunks())
            dset[()] = _as_stored(value, dtype).reshape(())
            return
        row = math.prod(tensor.shape[1:])
        rows_done = 0
        pending: list[np.ndarray] = []
        pending_size = 0
        for chunk in tensor.iter_chunks():
            pending.append(_as_stored(chunk, dtype))
            pending_size += chunk.size
            if pending_size < row:
                continue
            flat = np.concatenate(pending) if len(pending) > 1 else pending[0]
            whole = (flat.size // row) * row
            count = whole // row
            dset[rows_done : rows_done + count] = flat[:whole].reshape(
                (count, *tensor.shape[1:])
            )
            rows_done += count
            rest = flat[whole:]
            pending = [rest] if rest.size else []
            pending_size = rest.size
        if rows_done != tensor.shape[0] or pending_size:
            raise InternalError(
                f"tensor {tensor.name!r}: streamed {rows_done} of "
                f"{tensor.shape[0]} rows into HDF5"
            )


def _as_stored(chunk: np.ndarray, dtype: np.dtype) -> np.ndarray:
    if chunk.dtype.name == "bfloat16" and dtype.kind == "u":
        return np.ascontiguousarray(chunk).view("<u2")
    return chunk


# --------------------------------------------------------------------------
# Keras legacy layouts


def _keras_line(model: Model, options: WriteOptions) -> str:
    """ "keras3" or "keras2": the Keras line the written file is meant for."""
    if options.target_keras in ("keras2", "keras3"):
        return options.target_keras
    if options.target_keras is not None:
        raise UsageError(
            f"unknown Keras target {options.target_keras!r}; use keras2 or keras3"
        )
    return _source_line(model)


def _source_line(model: Model) -> str:
    version = str(model.producer.get("version") or "")
    if version.startswith("3"):
        return "keras3"
    if version[:1] in ("1", "2"):
        return "keras2"
    arch = model.architecture
    return "keras2" if arch is not None and arch.form in (1, 2) else "keras3"


def _migrated(model: Model, options: WriteOptions) -> Model:
    if options.target_keras is None or _keras_line(model, options) == _source_line(
        model
    ):
        return model
    from .. import migrate

    return migrate.prepare_hdf5(model, options)


def prepare(model: Model, options: WriteOptions) -> Model:
    """The model migrated for ``--for``, before the core checks for losses.

    Migrating to tf_keras leaves Keras 3 optimizer state out (tf_keras lays
    it out differently); it is kept here so that ``losses`` names it and the
    conversion stops, instead of the state vanishing.
    """
    if _flavour(model, options) != "keras-model":
        return model
    migrated = _migrated(model, options)
    if migrated is model:
        return model
    names = {t.name for t in migrated.tensors}
    left_out = tuple(t for t in model.by_role(Role.OPTIMIZER) if t.name not in names)
    if not left_out:
        return migrated
    return migrated.replace(
        tensors=migrated.tensors + left_out,
        metadata={**migrated.metadata, LEFT_OUT_KEY: [t.name for t in left_out]},
    )


# Metadata key for optimizer tensors a migration could not carry (see prepare).
LEFT_OUT_KEY = "modelconv_optimizer_left_out"


def _origin(model: Model) -> tuple[str, str]:
    """The format and flavour the tensors' source_names come from."""
    source = model.metadata.get("source")
    if isinstance(source, Mapping) and source.get("format"):
        return str(source.get("format")), str(source.get("flavour") or "")
    return model.format, model.flavour


def _legacy_paths(model: Model) -> bool:
    """True when source_names are legacy Keras HDF5 dataset paths."""
    return _origin(model) in ((FORMAT, "keras-model"), (FORMAT, "keras-weights"))


def _config_layer_names(config: Any) -> list[str]:
    """Top-level layer names in model order, from a Keras model config."""
    inner = config.get("config") if isinstance(config, Mapping) else config
    layers = inner.get("layers") if isinstance(inner, Mapping) else inner
    names: list[str] = []
    if not isinstance(layers, list):
        return names
    # Sequential.layers leaves the InputLayer out (Keras 2 and 3), while
    # a functional model lists its inputs; layer_names follows model.layers.
    sequential = (
        isinstance(config, Mapping) and config.get("class_name") == "Sequential"
    )
    for layer in layers:
        if not isinstance(layer, Mapping):
            continue
        if sequential and layer.get("class_name") == "InputLayer":
            continue
        name = layer.get("name")
        if not isinstance(name, str) and isinstance(layer.get("config"), Mapping):
            name = layer["config"].get("name")
        if isinstance(name, str) and name not in names:
            names.append(name)
    return names


def _layer_weights(
    model: Model, tensors: Iterable[Tensor], line: str
) -> tuple[list[str], dict[str, list[tuple[str, Tensor]]]]:
    """layer_names, and per layer group its (weight name, tensor) pairs."""
    legacy = _legacy_paths(model)
    order = _config_layer_names(model.architecture.config) if model.architecture else []
    groups: dict[str, list[tuple[str, Tensor]]] = {}
    for tensor in tensors:
        source = tensor.source_names[0] if tensor.source_names else ""
        layer, rest = _split_layer(tensor.name, order)
        if legacy and source.startswith(f"{layer}/"):
            # The weight name as the source file had it (a migration that
            # renamed the layer makes a new one below).
            weight = source[len(layer) + 1 :]
        else:
            if not rest:
                raise UsageError(
                    f"tensor {tensor.name!r} has no layer part (layer/weight); "
                    "a Keras HDF5 file groups weights by layer"
                )
            # Keras 2 writes "dense/kernel:0", Keras 3 the variable path.
            weight = f"{tensor.name}:0" if line == "keras2" else tensor.name
        groups.setdefault(layer, []).append((weight, tensor))
    names = [n for n in order if n != TOP_LEVEL_GROUP]
    names += [n for n in groups if n not in names and n != TOP_LEVEL_GROUP]
    return names, groups


def _split_layer(name: str, layers: list[str]) -> tuple[str, str]:
    """``layer/weight`` split at the end of the longest layer name it starts
    with: tf.keras layer names may hold "/" (DenseNet's "conv1/conv")."""
    owners = [n for n in layers if "/" in n and name.startswith(f"{n}/")]
    if owners:
        layer = max(owners, key=len)
        return layer, name[len(layer) + 1 :]
    layer, _, rest = name.partition("/")
    return layer, rest


def _write_weight_groups(
    writer: _Writer,
    group: h5py.Group,
    model: Model,
    line: str,
    backend: str,
    version: str | None,
) -> None:
    tensors = model.by_role(Role.WEIGHT)
    layer_names, groups = _layer_weights(model, tensors, line)
    _save_name_list(group, "layer_names", layer_names)
    group.attrs["backend"] = backend.encode("utf8")
    if version is not None:
        group.attrs["keras_version"] = version.encode("utf8")
    # Keras creates the layer groups sorted by name ("to avoid prefix issues").
    for layer in sorted(set(layer_names) | {TOP_LEVEL_GROUP}):
        layer_group = group.create_group(layer)
        pairs = groups.get(layer, [])
        _save_name_list(layer_group, "weight_names", [w for w, _ in pairs])
        for weight, tensor in pairs:
            writer.dataset(layer_group, weight, tensor, bfloat16="opaque")


def _save_name_list(group: h5py.Group, name: str, names: list[str]) -> None:
    """Store a list of names as Keras does, split above KERAS_ATTR_LIMIT bytes."""
    data = [n.encode("utf8") for n in names]
    too_long = [n for n in data if len(n) > KERAS_ATTR_LIMIT]
    if too_long:
        raise UsageError(
            f"name {too_long[0][:80]!r}... is longer than {KERAS_ATTR_LIMIT} bytes; "
            "Keras cannot store it in HDF5"
        )
    array = np.asarray(data)
    pieces = 1
    chunks = np.array_split(array, pieces)
    while any(c.nbytes > KERAS_ATTR_LIMIT for c in chunks):
        pieces += 1
        chunks = np.array_split(array, pieces)
    if pieces == 1:
        group.attrs[name] = data if data else np.asarray([], dtype=np.float64)
        return
    for index, chunk in enumerate(chunks):
        group.attrs[f"{name}{index}"] = chunk


def _write_keras_model(writer: _Writer, model: Model, options: WriteOptions) -> None:
    assert model.architecture is not None  # checked by write()
    line = _keras_line(model, options)
    h5 = writer.h5
    version = _version_for(model, line)
    backend = str(model.metadata.get("backend") or "tensorflow")
    # Keras 3 and tf_keras (saving_utils.model_metadata) set keras_version
    # and backend as str, and the JSON blobs as UTF-8 bytes.
    if version is not None:
        h5.attrs["keras_version"] = version
    if "backend" in model.metadata or line == "keras3" or version is not None:
        h5.attrs["backend"] = backend
    h5.attrs["model_config"] = _json_bytes(model.architecture.config)
    training = _legacy_training_config(model.metadata.get("training_config"))
    if training is not None:
        # Keras compiles from training_config and fails on one that names no
        # optimizer ({} from an uncompiled Keras 3 model; a pickled model's);
        # such a config is kept where only modelconv reads it.
        usable = isinstance(training, str) or "optimizer_config" in training
        key = "training_config" if usable else UNUSABLE_TRAINING_CONFIG
        h5.attrs[key] = (
            training.encode("utf8")
            if isinstance(training, str)
            else _json_bytes(training)
        )
    attributes = model.metadata.get("attributes")
    if isinstance(attributes, Mapping):
        for name, value in attributes.items():
            if name not in h5.attrs and isinstance(value, (str, int, float, bool)):
                h5.attrs[name] = value
    _write_weight_groups(
        writer, h5.create_group("model_weights"), model, line, backend, version
    )
    _write_optimizer(writer, model, line)


# Root attribute for a training config Keras could not compile from.
UNUSABLE_TRAINING_CONFIG = "modelconv_training_config"


def _legacy_training_config(training: Any) -> Any:
    """A training config in the form legacy HDF5 files hold.

    A ``.keras`` archive's compile_config names its optimizer as a Keras 3
    serialised object under ``optimizer``; legacy HDF5 files (Keras 3.15
    ``legacy_h5_format``, tf_keras ``saving_utils``) hold
    ``optimizer_config: {class_name, config}`` instead, and Keras 3's HDF5
    loader fails with KeyError 'optimizer_config' on the other form.
    """
    if not isinstance(training, Mapping) or "optimizer_config" in training:
        return training
    optimizer = training.get("optimizer")
    if not isinstance(optimizer, Mapping):
        return training
    legacy = {k: v for k, v in training.items() if k != "optimizer"}
    legacy["optimizer_config"] = {
        "class_name": optimizer.get("class_name"),
        "config": optimizer.get("config"),
    }
    return legacy


def _version_for(model: Model, line: str) -> str | None:
    version = model.producer.get("version")
    if version is None and _legacy_paths(model) and _source_line(model) == line:
        return None  # Keras 1.0-1.1 wrote none; reproduce that
    if version is not None and _source_line(model) == line:
        return str(version)
    return DEFAULT_KERAS_VERSION[line]


def _json_bytes(value: Any) -> bytes:
    return json.dumps(value).encode("utf8")


def _write_optimizer(writer: _Writer, model: Model, line: str) -> None:
    tensors = model.by_role(Role.OPTIMIZER)
    if not tensors:
        return
    group = writer.h5.create_group("optimizer_weights")
    legacy = _legacy_paths(model)
    pairs: list[tuple[str, Tensor]] = []
    for tensor in tensors:
        if legacy and tensor.source_names:
            weight = tensor.source_names[0]
        else:
            weight = tensor.name.removeprefix("optimizer/")
            weight = f"{weight}:0" if line == "keras2" else weight
        pairs.append((weight, tensor))
    _save_name_list(group, "weight_names", [w for w, _ in pairs])
    for weight, tensor in pairs:
        writer.dataset(group, weight, tensor, bfloat16="opaque")


def _write_keras_weights(writer: _Writer, model: Model, options: WriteOptions) -> None:
    line = _keras_line(model, options)
    version = _version_for(model, line)
    backend = str(model.metadata.get("backend") or "tensorflow")
    _write_weight_groups(writer, writer.h5, model, line, backend, version)


def _keras3_source_path(model: Model, tensor: Tensor) -> str | None:
    """The tensor's ``.../vars/<i>`` path when it came from a Keras 3 file."""
    if _origin(model)[0] not in (FORMAT, "keras") or not tensor.source_names:
        return None
    path = tensor.source_names[0]
    parts = path.split("/")
    if len(parts) >= 2 and parts[-2] == "vars" and parts[-1].isdigit():
        return path
    return None


def _write_keras3_weights(writer: _Writer, model: Model) -> None:
    paths = _keras3_paths(model)
    writer.h5.require_group("vars")
    for tensor, path in zip(model.tensors, paths):
        group_path, name = path.rsplit("/", 1)
        group = writer.h5.require_group(group_path)
        writer.dataset(group, name, tensor, bfloat16="opaque")


def _keras3_paths(model: Model) -> list[str]:
    """Where each tensor goes in a Keras 3 weights file.

    Paths read from a Keras 3 file are kept. Otherwise weights are numbered
    per layer under ``layers/<name>/vars``, named as Keras 3's saving_lib
    names them (snake_case class name, deduplicated with _1, _2...) when the
    architecture says the class; optimizer tensors go to optimizer/vars.
    """
    arch = model.architecture
    classes = {layer.name: layer.class_name for layer in arch.layers} if arch else {}
    keys: dict[str, str] = {}
    used: dict[str, int] = {}
    for layer_name in _config_layer_names(arch.config) if arch else []:
        base = _snake(classes.get(layer_name, layer_name))
        keys[layer_name] = _dedup(base, used)
    counters: dict[str, int] = {}
    paths: list[str] = []
    for tensor in model.tensors:
        kept = _keras3_source_path(model, tensor)
        if kept is not None:
            paths.append(kept)
            continue
        if tensor.role is Role.OPTIMIZER:
            group = "optimizer/vars"
        else:
            layer = tensor.name.split("/", 1)[0]
            if layer not in keys:
                keys[layer] = _dedup(_snake(classes.get(layer, layer)), used)
            group = f"layers/{keys[layer]}/vars"
            if classes.get(layer) in ("LSTM", "GRU", "SimpleRNN"):
                group = f"layers/{keys[layer]}/cell/vars"
        index = counters.get(group, 0)
        counters[group] = index + 1
        paths.append(f"{group}/{index}")
    return paths


def _snake(name: str) -> str:
    # The same rule as keras.src.utils.naming.to_snake_case (Keras 3).
    name = re.sub(r"\W+", "", name)
    name = re.sub("(.)([A-Z][a-z]+)", r"\1_\2", name)
    return re.sub("([a-z])([A-Z])", r"\1_\2", name).lower()


def _dedup(name: str, used: dict[str, int]) -> str:
    if name in used:
        used[name] += 1
        return f"{name}_{used[name]}"
    used[name] = 0
    return name


# --------------------------------------------------------------------------
# Trees


def tree_keys(names: Iterable[str]) -> dict[str, str]:
    """The HDF5 path for each tensor name; names HDF5 cannot hold are escaped.

    A name is stored as is when every '/'-separated segment is non-empty and
    not '.' or '..', it has no NUL, it is not also a group of another name
    ('a' beside 'a/b': 'a' is escaped) and does not use the escape group.
    Escaped names go to ``__modelconv_escaped__/<n>``; the header keeps the
    original.
    """
    names = list(names)
    prefixes: set[str] = set()
    for name in names:
        parts = name.split("/")
        for i in range(1, len(parts)):
            prefixes.add("/".join(parts[:i]))
    keys: dict[str, str] = {}
    for index, name in enumerate(names):
        keys[name] = name if _plain_key(name, prefixes) else f"{ESCAPE_GROUP}/{index}"
    return keys


def _plain_key(name: str, prefixes: set[str]) -> bool:
    parts = name.split("/")
    if any(p in ("", ".", "..") for p in parts) or "\x00" in name:
        return False
    if parts[0] == ESCAPE_GROUP or name in prefixes:
        return False
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _write_tree(writer: _Writer, model: Model) -> None:
    keys = tree_keys(model.names)
    head = header.model_header(model, keys)
    writer.h5.attrs[MARKER_ATTR] = header.header_bytes(head).decode("utf-8")
    for tensor in model.tensors:
        key = keys[tensor.name]
        group_path, _, leaf = key.rpartition("/")
        group = writer.h5.require_group(group_path) if group_path else writer.h5
        writer.dataset(group, leaf, tensor, bfloat16="uint16")
