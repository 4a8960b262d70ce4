"""Attach a weights-only model to an architecture-only model.

The classic Keras 2 habit was ``model.to_json()`` beside
``model.save_weights("w.h5")``; Keras 3 writes ``.weights.h5``. This module
matches the weights file's tensors to the architecture's layers the way
Keras's ``load_weights`` does:

- by layer name first: legacy ``save_weights`` HDF5 files group tensors by
  layer name (``dense_1/kernel``), Keras 3 ``.weights.h5`` files by
  ``layers/<name>/vars/<i>``, NPZ files by member name;
- else by order: the layers that have weights, in the architecture's
  topological order, against the weight groups in file order (what legacy
  ``load_weights(by_name=False)`` does, so renamed layers still load).

Each layer's tensors are then matched by their short names when both sides
know them, else by position (Keras writes a layer's weights in its
``weights`` order, trainable first). A count or shape mismatch is an
InputError naming the layers and shapes involved.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from typing import Any

from .errors import InputError, UnsupportedError, UsageError
from .model import Layer, Model, Role, Tensor

# Keras 3 .weights.h5 paths (Keras >= 3.0): layers/<name>/vars/<index>, with
# nested models as layers/<outer>/layers/<inner>/vars/<index>.
_KERAS3_PATH = re.compile(r"^(?:.*?/)?layers/(.+)/vars/(\d+)$")
_OBJECT_PATH = re.compile(r"(?:^|/)layers/(.+)/vars/(\d+)$")
# Some readers name a tensor <layer>/vars/<index> or <layer>/<index>.
_INDEXED = re.compile(r"^(.+?)/(?:vars/)?(\d+)$")


@dataclass(frozen=True)
class _Group:
    """The weight tensors one layer group of the weights file holds, in order."""

    name: str
    tensors: tuple[Tensor, ...]
    # True when the tensors are already in the layer's tensor_names order.
    in_order: bool = False

    def shapes(self) -> list[list[int]]:
        return [list(t.shape) for t in self.tensors]

    @property
    def size(self) -> int:
        return sum(t.size for t in self.tensors)


def attach_weights(arch_model: Model, weights_model: Model) -> Model:
    """A full Model: ``arch_model``'s architecture with ``weights_model``'s tensors.

    Tensors are renamed to the architecture's canonical names; the names
    they had in the weights file stay in ``source_names``.
    """
    architecture = arch_model.architecture
    if architecture is None:
        raise UsageError(
            "--weights needs an architecture to attach the weights to, and the "
            f"{arch_model.format or 'given'} file has none; give a model.to_json() "
            "file or a full model"
        )
    present = arch_model.by_role(Role.WEIGHT)
    if present:
        raise UsageError(
            f"the architecture file already holds {len(present)} weight tensors; "
            "--weights attaches weights to an architecture-only file"
        )
    layers = [layer for layer in architecture.layers if layer.tensor_names]
    groups = _groups(weights_model.by_role(Role.WEIGHT))
    if not layers and not architecture.layers:
        raise UnsupportedError(
            "cannot tell which layers of this architecture hold weights (no "
            "layers were derived from its config); convert the weights alone"
        )
    keyed = _match_keras3_paths(architecture.layers, layers, weights_model)
    pairs, how = _match_layers(layers, groups, keyed)
    tensors = [tensor for layer, group in pairs for tensor in _renamed(layer, group)]
    extra = [t for t in weights_model.tensors if t.role is not Role.WEIGHT]
    taken = {t.name for t in tensors}
    tensors += [t for t in extra if t.name not in taken]

    metadata = {**dict(weights_model.metadata), **dict(arch_model.metadata)}
    metadata["weights_source"] = {
        "format": weights_model.format,
        "flavour": weights_model.flavour,
        "matched_by": how,
    }
    warnings = [*arch_model.warnings, *weights_model.warnings]
    if how == "order":
        warnings.append(
            "weights were matched to layers by order, as Keras's load_weights "
            "does, because the layer names differ"
        )
    resources = ExitStack()
    resources.callback(weights_model.close)
    resources.callback(arch_model.close)
    return Model(
        tensors=tuple(tensors),
        architecture=architecture,
        metadata=metadata,
        format=arch_model.format,
        flavour=arch_model.flavour,
        recognised=arch_model.recognised,
        warnings=tuple(warnings),
        migrations=arch_model.migrations,
        resources=resources,
    )


# --- grouping the weights file ----------------------------------------------


def _group_key(tensor: Tensor, position: int) -> tuple[str, int]:
    """(layer group name, order within the group) of a weights-file tensor."""
    located = _keras3_location(tensor)
    if located is not None:
        # One group per top-level layer: a nested model's layers and a
        # wrapper's inner layers are sorted out by _ordered.
        return located[0].split("/", 1)[0], position
    match = _INDEXED.match(tensor.name)
    if match and "/" not in match.group(1):
        return match.group(1), int(match.group(2))
    return tensor.name.split("/", 1)[0], position


def _keras3_location(tensor: Tensor) -> tuple[str, int] | None:
    """(layer path, variable index) of a tensor read from a Keras 3 weights file.

    The reader names those tensors ``<layer path>/<index>``, with the layers'
    own names when the file records them (Keras >= 3.6); a bare
    ``layers/<name>/vars/<index>`` path is read as such.
    """
    match = _KERAS3_PATH.match(tensor.name)
    if match:
        return re.sub(r"/layers/", "/", match.group(1)), int(match.group(2))
    if not any(_KERAS3_PATH.match(name) for name in tensor.source_names):
        return None
    match = _INDEXED.match(tensor.name)
    return (match.group(1), int(match.group(2))) if match else None


def _groups(tensors: Sequence[Tensor]) -> list[_Group]:
    """Weight tensors grouped by layer, groups in file order."""
    found: dict[str, list[tuple[int, Tensor]]] = {}
    for position, tensor in enumerate(tensors):
        key, order = _group_key(tensor, position)
        found.setdefault(key, []).append((order, tensor))
    return [
        _Group(name, tuple(t for _, t in sorted(items, key=lambda item: item[0])))
        for name, items in found.items()
    ]


# --- Keras 3 object paths ---------------------------------------------------
#
# Keras 3 save_weights (and tf_keras's, for a .weights.h5 name) does not key
# a layer by its name but by its class, counted in model order: the model's
# layers [Dense "a", BatchNormalization "b", Dense "c"] are saved under
# layers/dense, layers/batch_normalization, layers/dense_1 (saving_lib
# _save_container_state). Files from Keras >= 3.6 also record the real names,
# which the by-name match uses; this is how Keras itself finds the weights.


def _snake_case(name: str) -> str:
    """keras.src.utils.naming.to_snake_case."""
    name = re.sub(r"\W+", "", name)
    name = re.sub("(.)([A-Z][a-z]+)", r"\1_\2", name)
    return re.sub("([a-z])([A-Z])", r"\1_\2", name).lower()


def _class_keys(entries: Sequence[tuple[str, str]]) -> dict[str, str]:
    """Keras 3 path key of each (name, class_name), counted per class."""
    used: dict[str, int] = {}
    keys = {}
    for name, class_name in entries:
        base = _snake_case(class_name)
        count = used.get(base)
        used[base] = 0 if count is None else count + 1
        keys[name] = base if count is None else f"{base}_{count + 1}"
    return keys


def _keras3_path(tensor: Tensor) -> str | None:
    """The object path of a Keras 3 variable (``sequential/dense``), if any."""
    for name in (*tensor.source_names, tensor.name):
        # The leftmost `layers/`: a nested model's path holds several.
        match = _OBJECT_PATH.search(name)
        if match:
            path = re.sub(r"/layers/", "/", match.group(1))
            return re.sub(r"/cell$", "", path)  # RNNs keep variables in .cell
    return None


def _inner_paths(layer: Layer, key: str) -> dict[str, str] | None:
    """File object path -> architecture path, for the layer's inner layers."""
    wanted = list(dict.fromkeys(n.rsplit("/", 1)[0] for n in layer.tensor_names))
    if layer.class_name == "Bidirectional" and len(wanted) == 2:
        return {f"{key}/forward_layer": wanted[0], f"{key}/backward_layer": wanted[1]}
    entries = layer.config.get("layers") if isinstance(layer.config, dict) else None
    if isinstance(entries, list):  # a nested Sequential or Functional model
        inner = []
        for entry in entries:
            if not isinstance(entry, dict) or not isinstance(entry.get("config"), dict):
                return None
            name = entry.get("name") or entry["config"].get("name")
            inner.append((str(name), str(entry.get("class_name"))))
        return {
            f"{key}/{k}": f"{layer.name}/{n}" for n, k in _class_keys(inner).items()
        }
    if len(wanted) == 1:
        return {key: wanted[0]}
    return None


def _match_keras3_paths(
    all_layers: Sequence[Layer], layers: Sequence[Layer], weights: Model
) -> list[tuple[Layer, _Group]] | None:
    """Each layer's weights found by its Keras 3 class key, or None."""
    tensors = weights.by_role(Role.WEIGHT)
    paths = [_keras3_path(t) for t in tensors]
    if not tensors or any(path is None for path in paths):
        return None
    keys = _class_keys([(layer.name, layer.class_name) for layer in all_layers])
    found: dict[str, list[tuple[int, Tensor]]] = {}
    for path, tensor in zip(paths, tensors):
        place = _keras3_location(tensor)
        found.setdefault(str(path), []).append((place[1] if place else 0, tensor))
    pairs = []
    taken = 0
    for layer in layers:
        mapping = _inner_paths(layer, keys[layer.name])
        if mapping is None:
            return None
        by_arch = {
            mapping[path]: [t for _, t in sorted(items, key=lambda item: item[0])]
            for path, items in found.items()
            if path in mapping
        }
        wanted = [name.rsplit("/", 1)[0] for name in layer.tensor_names]
        if {p: wanted.count(p) for p in wanted} != {
            p: len(ts) for p, ts in by_arch.items()
        }:
            return None
        queues = {path: iter(items) for path, items in by_arch.items()}
        ordered = tuple(next(queues[path]) for path in wanted)
        taken += len(ordered)
        pairs.append((layer, _Group(keys[layer.name], ordered, in_order=True)))
    if taken != len(tensors):
        return None
    return pairs


# --- matching layers --------------------------------------------------------


def _match_layers(
    layers: Sequence[Layer],
    groups: Sequence[_Group],
    keyed: list[tuple[Layer, _Group]] | None = None,
) -> tuple[list[tuple[Layer, _Group]], str]:
    by_name = {group.name: group for group in groups}
    named = [(layer, by_name.get(layer.name)) for layer in layers]
    if len(layers) == len(groups) and all(
        group is not None and _fits(layer, group) for layer, group in named
    ):
        return [(layer, group) for layer, group in named if group is not None], "name"
    if keyed is not None:
        for layer, group in keyed:
            problem = _misfit(layer, group)
            if problem:
                raise InputError(
                    "weights do not fit the architecture (matched by Keras 3 "
                    f"path): {problem}"
                )
        return keyed, "keras3-path"
    if len(layers) != len(groups):
        raise InputError(
            f"the weights file holds weights for {len(groups)} layers "
            f"({_list(g.name for g in groups)}) but the architecture has "
            f"{len(layers)} layers with weights "
            f"({_list(layer.name for layer in layers)}); "
            "they do not belong together"
        )
    pairs = list(zip(layers, groups))
    # Say "by order" only when it explains the pairing: with every name the
    # same, the layers simply disagree.
    same_names = all(layer.name == group.name for layer, group in pairs)
    how = "" if same_names else " (matched by order)"
    for layer, group in pairs:
        problem = _misfit(layer, group)
        if problem:
            raise InputError(f"weights do not fit the architecture{how}: {problem}")
    return pairs, "order"


def _fits(layer: Layer, group: _Group) -> bool:
    return _misfit(layer, group) is None


def _misfit(layer: Layer, group: _Group) -> str | None:
    """Why ``group`` cannot be ``layer``'s weights, or None when it fits."""
    expected = _expected_shapes(layer)
    where = f"layer {layer.name!r} (weights file {group.name!r})"
    if len(group.tensors) != len(layer.tensor_names):
        return (
            f"{where} expects {len(layer.tensor_names)} tensors "
            f"({_list(_short(n) for n in layer.tensor_names)}) and the file holds "
            f"{len(group.tensors)} with shapes {group.shapes()}"
        )
    ordered = _ordered(layer, group)
    if ordered is None:
        paths = sorted(
            {place[0] for place in map(_keras3_location, group.tensors) if place}
        )
        return (
            f"{where}: the file keeps this layer's weights under inner layers "
            f"{_list(paths)} that do not name the architecture's inner layers "
            f"({_list(sorted({n.rsplit('/', 1)[0] for n in layer.tensor_names}))}), "
            "so which is which cannot be told from the file"
        )
    if expected is not None:
        shapes = [list(t.shape) for t in ordered]
        if [list(s) for s in expected] != shapes:
            return (
                f"{where} expects shapes {[list(s) for s in expected]} and the "
                f"file holds {shapes}"
            )
    elif layer.params is not None and layer.params != group.size:
        return (
            f"{where} has {layer.params} parameters and the file holds "
            f"{group.size} in shapes {group.shapes()}"
        )
    return None


def _expected_shapes(layer: Layer) -> list[tuple[int, ...]] | None:
    """The layer's weight shapes when the config determines them."""
    if layer.weight_shapes is None:
        return None
    return list(layer.weight_shapes)


def _short(name: str) -> str:
    return name.rsplit("/", 1)[-1]


def _ordered(layer: Layer, group: _Group) -> list[Tensor] | None:
    """The group's tensors in the order of ``layer.tensor_names``.

    By short name when both sides know the same short names, else by position.
    """
    if group.in_order:
        return list(group.tensors)
    wanted = [_short(n) for n in layer.tensor_names]
    have = {_short(t.name): t for t in group.tensors}
    if len(have) == len(group.tensors) and set(have) == set(wanted):
        return [have[name] for name in wanted]
    by_path = _by_layer_path(layer, group)
    if by_path is not None:
        return by_path
    paths = {place[0] for place in map(_keras3_location, group.tensors) if place}
    if len(paths) > 1:
        # Several inner layers (a Bidirectional's two, a nested model's) that
        # do not name the architecture's: by position, the backward layer,
        # sorted first in the file, would silently become the forward one.
        return None
    return list(group.tensors)


def _by_layer_path(layer: Layer, group: _Group) -> list[Tensor] | None:
    """Keras 3 variables ordered as ``layer.tensor_names``, by inner layer.

    A Keras 3 weights file sorts a Bidirectional's ``backward_layer`` before
    its ``forward_layer`` and a nested model's layers by name; the weights
    of each inner layer (``bilstm/forward_lstm/0``...) are put where the
    architecture lists that layer's weights (``bilstm/forward_lstm/kernel``).
    """
    located = [_keras3_location(t) for t in group.tensors]
    by_path: dict[str, list[tuple[int, Tensor]]] = {}
    for place, tensor in zip(located, group.tensors):
        if place is None:
            return None
        by_path.setdefault(place[0], []).append((place[1], tensor))
    wanted = [name.rsplit("/", 1)[0] for name in layer.tensor_names]
    counts = {path: wanted.count(path) for path in wanted}
    if counts != {path: len(items) for path, items in by_path.items()}:
        return None
    queues = {
        path: iter([t for _, t in sorted(items, key=lambda item: item[0])])
        for path, items in by_path.items()
    }
    return [next(queues[path]) for path in wanted]


def _renamed(layer: Layer, group: _Group) -> list[Tensor]:
    renamed = []
    for name, tensor in zip(layer.tensor_names, _ordered(layer, group) or ()):
        source_names = tensor.source_names or (tensor.name,)
        renamed.append(
            tensor.replace(name=name, role=Role.WEIGHT, source_names=source_names)
        )
    return renamed


def _list(names: Any) -> str:
    items = list(names)
    shown = ", ".join(repr(n) for n in items[:8])
    return shown + (", ..." if len(items) > 8 else "") if items else "none"
