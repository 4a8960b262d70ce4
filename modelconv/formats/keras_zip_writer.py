"""Writing Keras 3 ``.keras`` archives.

An archive holds three members, all stored uncompressed as Keras 3.15 writes
them (``saving_lib._save_model_to_fileobj`` uses ``ZipFile(..., "w")``'s
default ZIP_STORED): ``metadata.json``, ``config.json`` and
``model.weights.h5``.

Inside ``model.weights.h5`` every object that owns variables has a group
named by its attribute path from the model (Keras 3.15 ``saving_lib``
``_save_state``/``_save_container_state``): the layers of a Sequential or
Functional model live in ``layers/<snake_case class name>`` deduplicated as
``_1``, ``_2`` in ``model.layers`` order (a Sequential's ``layers`` leaves
out its InputLayer), an RNN's weights live in its ``cell``, a Bidirectional's
in ``forward_layer``/``backward_layer``, a wrapper's in ``layer``. Each
object's own variables are datasets ``vars/0``, ``vars/1``, ... in its
variable order, and its ``vars`` group carries a ``name`` attribute. The
optimizer's variables are ``optimizer/vars/<i>``.

The config is migrated to the Keras 3 form first (``modelconv.migrate``);
the source's tensor names go in ``metadata.json`` under ``modelconv``.
"""

from __future__ import annotations

import io
import json
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from .. import dtypes, migrate
from ..errors import UnsupportedError
from ..model import Model, Role, Tensor
from ..zipwrite import StoredZipWriter
from .base import Loss, WriteOptions

WEIGHTS_MEMBER = "model.weights.h5"
CONFIG_MEMBER = "config.json"
METADATA_MEMBER = "metadata.json"

# Layers whose variables Keras 3 keeps in a child object, by attribute name.
_RNN_CLASSES = frozenset(migrate.RNN_CELLS)
_WRAPPERS = frozenset({"TimeDistributed"})
# Composite layers whose children's attribute names we have not mapped; a
# model holding one with weights is refused rather than written wrongly.
_UNMAPPED = frozenset({"GroupQueryAttention", "RNN", "StackedRNNCells"})
# MultiHeadAttention keeps its four EinsumDense sublayers under these
# attributes (Keras 3.15 layers/attention/multi_head_attention.py); the IR
# names them as legacy HDF5 does (multi_head_attention/query/kernel).
_ATTENTION_CHILDREN = {
    "query": "query_dense",
    "key": "key_dense",
    "value": "value_dense",
    "attention_output": "output_dense",
}


@dataclass(frozen=True)
class Slot:
    """One tensor's place in ``model.weights.h5``."""

    path: str  # e.g. "layers/dense/vars/0"
    tensor: Tensor


def prepare(model: Model, options: WriteOptions) -> Model:
    """The model with its config migrated to the Keras 3 form."""
    return migrate.prepare(model, options)


def losses(model: Model, options: WriteOptions) -> list[Loss]:
    """What a ``.keras`` archive would not carry for ``model``."""
    out: list[Loss] = []
    arch = model.architecture
    if arch is None or arch.framework != "keras":
        out.append(
            Loss(
                "architecture",
                "a .keras archive needs a Keras architecture; this model has "
                + ("none" if arch is None else f"a {arch.framework} one")
                + ", so only a weights file can hold its tensors",
            )
        )
        return out
    state = _unplaced_state(model, arch.config)
    if state:
        out.append(
            Loss(
                "state",
                f"{len(state)} state tensors ({', '.join(t.name for t in state[:3])}) "
                "have no variable slot in a .keras archive: Keras 3 keeps no "
                "metric state there, nor variables a layer class does not have "
                "(or pass --drop state)",
                tensors=tuple(t.name for t in state),
            )
        )
    if model.by_role(Role.OPTIMIZER) and not _keras3_optimizer(model):
        out.append(
            Loss(
                "optimizer",
                f"{len(model.by_role(Role.OPTIMIZER))} optimizer state tensors "
                "have no place in a .keras archive: the source names no Keras 3 "
                "optimizer for them (a Keras 2 optimizer, or a to_json() compile "
                "config without one); they are left out (or pass --drop "
                "optimizer)",
                tensors=tuple(t.name for t in model.by_role(Role.OPTIMIZER)),
            )
        )
    return out


def write(model: Model, path: Path, options: WriteOptions) -> None:
    """Write ``model`` as a Keras 3 ``.keras`` archive at ``path``."""
    model = migrate.prepare(model, options)
    arch = model.architecture
    if arch is None or arch.framework != "keras":
        raise UnsupportedError(
            "a .keras archive needs a Keras architecture and this model has none; "
            "write it as HDF5 (--to hdf5) or NPZ instead"
        )
    config = keras3_config(arch.config, model.metadata, written_by_keras3(model))
    state = _unplaced_state(model, config)
    if state:
        if not options.allow_lossy:
            raise UnsupportedError(
                f"state tensors {[t.name for t in state[:3]]} belong to no layer "
                "and a .keras archive has no place for them; pass --allow-lossy "
                "or --drop state"
            )
        dropped = {t.name for t in state}
        model = model.replace(
            tensors=tuple(t for t in model.tensors if t.name not in dropped)
        )
    slots = weight_slots(model, config)
    optimizer = _keras3_optimizer(model)
    if model.by_role(Role.OPTIMIZER) and not optimizer and not options.allow_lossy:
        raise UnsupportedError(
            "this model's optimizer state comes from a Keras 2 optimizer, which "
            "Keras 3 lays out differently; pass --allow-lossy or --drop optimizer"
        )
    metadata = archive_metadata(model, slots)
    with StoredZipWriter(path) as archive:
        archive.writestr(METADATA_MEMBER, json.dumps(metadata).encode())
        archive.writestr(CONFIG_MEMBER, json.dumps(config).encode())
        # Written in place: no temporary file, no second copy of the weights.
        with archive.member_file(WEIGHTS_MEMBER) as handle:
            write_weights_h5(handle, slots, _model_name(config))


# ---------------------------------------------------------------------------
# config.json and metadata.json


def keras3_config(
    config: Mapping[str, Any], metadata: Mapping[str, Any], keras3: bool
) -> dict:
    """The top-level config.json document: model entry plus compile_config.

    ``keras3`` says whether Keras 3 wrote the source (``written_by_keras3``).
    """
    out = dict(config)
    if not keras3:
        # See _compile_config: a Keras 2 compile config stays in metadata.json.
        out.pop("compile_config", None)
    out.setdefault("registered_name", None)
    if "build_config" not in out:
        shape = _model_input_shape(out)
        out["build_config"] = {"input_shape": shape}
    compile_config = _compile_config(metadata) if keras3 else None
    if compile_config is not None and "compile_config" not in out:
        out["compile_config"] = compile_config
    return out


def _model_input_shape(config: Mapping[str, Any]) -> Any:
    if config.get("class_name") != "Sequential":
        return None
    layers = (config.get("config") or {}).get("layers") or []
    if layers and layers[0].get("class_name") == "InputLayer":
        return (layers[0].get("config") or {}).get("batch_shape")
    return None


def _compile_config(metadata: Mapping[str, Any]) -> dict | None:
    """The source's Keras 3 compile_config (call only for Keras 3 sources).

    A Keras 2 training config names Keras 2 optimizers and metrics whose
    arguments Keras 3 reads differently (tf_keras writes
    ``steps_per_execution: null``, which breaks Keras 3's predict); it is kept
    in ``metadata.json`` under ``modelconv`` instead of compiled in.
    """
    for key in ("compile_config", "training_config"):
        candidate = _plain(metadata.get(key))
        # A Keras 3 compile_config names "optimizer"; the legacy HDF5
        # training_config names "optimizer_config" and is another form.
        if isinstance(candidate, Mapping) and "optimizer" in candidate:
            return dict(candidate)
    return None


def archive_metadata(model: Model, slots: list[Slot]) -> dict[str, Any]:
    """metadata.json: Keras's two keys plus modelconv's record of source names."""
    producer = model.producer
    version = str(producer.get("version") or "")
    if not version.startswith("3."):
        version = migrate.KERAS3_VERSION
    now = datetime.now(timezone.utc).strftime("%Y-%m-%d@%H:%M:%S")
    return {
        "keras_version": version,
        "date_saved": now,
        "modelconv": {
            "version": 1,
            "source_format": model.format,
            "source_producer": dict(producer),
            "migrations": list(model.migrations),
            "training_config": _plain(model.metadata.get("training_config")),
            "compile_config": _plain(model.metadata.get("compile_config")),
            "metadata": _carried_metadata(model),
            "tensors": [
                {
                    "name": slot.tensor.name,
                    "path": slot.path,
                    "source_names": list(slot.tensor.source_names),
                }
                for slot in slots
            ],
        },
    }


# Metadata keys the archive holds in places of its own (or that describe the
# file being read, not the model); the rest travels in modelconv's record.
_PLACED_METADATA = frozenset(
    {"producer", "keras_version", "date_saved", "training_config", "compile_config"}
)


def _carried_metadata(model: Model) -> dict[str, Any]:
    """The model's other metadata, as JSON (NaN and Infinity kept)."""
    carried = {k: v for k, v in model.metadata.items() if k not in _PLACED_METADATA}
    return json.loads(json.dumps(carried, allow_nan=True, default=str))


def _plain(value: Any) -> Any:
    """A JSON-safe copy of a training config (a JSON string is parsed)."""
    if isinstance(value, str):
        try:
            return json.loads(value)
        except ValueError:
            return value
    return value


def _model_name(config: Mapping[str, Any]) -> str:
    inner = config.get("config")
    if isinstance(inner, Mapping):
        return str(inner.get("name") or "model")
    return "model"


# ---------------------------------------------------------------------------
# object paths in model.weights.h5


def snake_case(name: str) -> str:
    """Keras 3.15 ``utils/naming.to_snake_case``: ``BatchNormalization`` →
    ``batch_normalization``, ``Conv2D`` → ``conv2d``."""
    name = re.sub(r"\W+", "", name)
    name = re.sub("(.)([A-Z][a-z]+)", r"\1_\2", name)
    return re.sub("([a-z])([A-Z])", r"\1_\2", name).lower()


@dataclass(frozen=True)
class _Group:
    """An object group in the weights file, and the name Keras records on it."""

    path: str
    name: str


def weight_slots(model: Model, config: Mapping[str, Any]) -> list[Slot]:
    """Every weight and state tensor, with the object path Keras 3 reads it from.

    Raises UnsupportedError when a tensor has no place (a name that matches no
    layer, or a layer whose inner structure is not mapped).
    """
    slots: list[Slot] = []
    groups: list[_Group] = []
    _model_slots(model, config, "", "", slots, groups)
    placed = {slot.tensor.name for slot in slots}
    stray = [
        t.name
        for t in model.tensors
        if t.role is not Role.OPTIMIZER and t.name not in placed
    ]
    if stray:
        raise UnsupportedError(
            f"tensors {stray[:5]} belong to no layer of the Keras config, so a "
            ".keras archive has no place for them; check the model's layer "
            "names (inspect) or write HDF5 instead"
        )
    if _keras3_optimizer(model):
        for i, tensor in enumerate(model.by_role(Role.OPTIMIZER)):
            slots.append(Slot(f"optimizer/vars/{i}", tensor))
    return slots


def _model_slots(
    model: Model,
    entry: Mapping[str, Any],
    path: str,
    prefix: str,
    slots: list[Slot],
    groups: list[_Group],
) -> None:
    config = entry.get("config") or {}
    layers = list(config.get("layers") or [])
    if entry.get("class_name") == "Sequential" and layers:
        if layers[0].get("class_name") == "InputLayer":
            # Keras 3 Sequential.layers omits the InputLayer it builds from.
            layers = layers[1:]
    used: dict[str, int] = {}
    for layer in layers:
        class_name = str(layer.get("class_name", ""))
        key = _unique(snake_case(class_name), used)
        name = (layer.get("config") or {}).get("name") or layer.get("name")
        child = f"{path}layers/{key}"
        if class_name in migrate.MODEL_CLASSES:
            _model_slots(model, layer, f"{child}/", f"{prefix}{name}/", slots, groups)
        else:
            owned = migrate.layer_tensors(model, f"{prefix}{name}")
            _layer_slots(layer, child, f"{prefix}{name}", owned, slots)


def _unique(name: str, used: dict[str, int]) -> str:
    if name in used:
        used[name] += 1
        return f"{name}_{used[name]}"
    used[name] = 0
    return name


def _layer_slots(
    layer: Mapping[str, Any],
    path: str,
    prefix: str,
    tensors: list[Tensor],
    slots: list[Slot],
) -> None:
    if not tensors:
        return
    class_name = str(layer.get("class_name", ""))
    config = layer.get("config") or {}
    if class_name in _RNN_CLASSES:
        _own_slots(f"{path}/cell", tensors, slots)
    elif class_name == "Bidirectional":
        for attr in ("forward_layer", "backward_layer"):
            inner = _direction(config, attr)
            inner_name = (inner.get("config") or {}).get("name", "")
            start = f"{prefix}/{inner_name}/"
            mine = [t for t in tensors if t.name.startswith(start)]
            _layer_slots(inner, f"{path}/{attr}", f"{prefix}/{inner_name}", mine, slots)
    elif class_name in _WRAPPERS:
        inner = config.get("layer") or {}
        _layer_slots(inner, f"{path}/layer", prefix, tensors, slots)
    elif class_name == "MultiHeadAttention":
        _attention_slots(path, prefix, tensors, slots)
    elif class_name in _UNMAPPED:
        raise UnsupportedError(
            f"layer {prefix!r} is a {class_name}, whose sub-layer layout in "
            ".keras weights modelconv does not map yet; write HDF5 instead"
        )
    else:
        _own_slots(path, tensors, slots)


def _attention_slots(
    path: str, prefix: str, tensors: list[Tensor], slots: list[Slot]
) -> None:
    stray = [
        t.name
        for t in tensors
        if t.name[len(prefix) + 1 :].split("/")[0] not in _ATTENTION_CHILDREN
    ]
    if stray:
        raise UnsupportedError(
            f"layer {prefix!r} (MultiHeadAttention) holds {stray[:3]}, which "
            "are not its query, key, value or attention_output weights; "
            "write HDF5 instead"
        )
    for child, attr in _ATTENTION_CHILDREN.items():
        mine = [t for t in tensors if t.name.startswith(f"{prefix}/{child}/")]
        _own_slots(f"{path}/{attr}", mine, slots)


def _direction(config: Mapping[str, Any], attr: str) -> Mapping[str, Any]:
    """The config of a Bidirectional's forward or backward layer.

    Keras 3 names them ``forward_<name>`` and ``backward_<name>`` when the
    config gives only ``layer`` (Keras 3.15 ``layers/rnn/bidirectional.py``).
    """
    layer = config.get("layer") or {}
    if attr == "backward_layer" and isinstance(config.get("backward_layer"), Mapping):
        return config["backward_layer"]
    inner_config = dict(layer.get("config") or {})
    base = str(inner_config.get("name", ""))
    direction = "forward" if attr == "forward_layer" else "backward"
    if not base.startswith(f"{direction}_"):
        inner_config["name"] = f"{direction}_{base}"
    return {**layer, "config": inner_config}


def _own_slots(path: str, tensors: list[Tensor], slots: list[Slot]) -> None:
    # A layer's SeedGenerator (Dropout, RandomFlip, ...) keeps its state in a
    # child object: layers/<layer>/seed_generator/vars/0 (Keras 3.15).
    own = [t for t in tensors if SEED_GENERATOR not in t.name.split("/")]
    seeds = [t for t in tensors if SEED_GENERATOR in t.name.split("/")]
    for i, tensor in enumerate(own):
        slots.append(Slot(f"{path}/vars/{i}", tensor))
    for i, tensor in enumerate(seeds):
        slots.append(Slot(f"{path}/{SEED_GENERATOR}/vars/{i}", tensor))


SEED_GENERATOR = "seed_generator"


# ---------------------------------------------------------------------------
# model.weights.h5


def write_weights_h5(
    path: Path | io.IOBase, slots: list[Slot], model_name: str
) -> None:
    """Write the weights file, one tensor at a time.

    Empty ``vars`` groups are not needed by Keras's reader (a missing group
    reads as empty), so only groups that hold variables are created, plus the
    model's own top-level ``vars``, which Keras always writes.
    """
    with h5py.File(path, "w") as handle:
        top = handle.create_group("vars")
        top.attrs["name"] = model_name
        for slot in slots:
            group_path, index = slot.path.rsplit("/", 1)
            group = handle.require_group(group_path)
            if "name" not in group.attrs:
                group.attrs["name"] = _object_name(slot)
            _write_dataset(group, index, slot.tensor)


def _object_name(slot: Slot) -> str:
    parts = slot.tensor.name.split("/")
    return parts[-2] if len(parts) >= 2 else slot.tensor.name


def _write_dataset(group: h5py.Group, key: str, tensor: Tensor) -> None:
    """One dataset, filled chunk by chunk from the tensor's source."""
    if tensor.dtype == "bfloat16":
        # Keras 3 stores bfloat16 as 2-byte opaque values with a dtype="bfloat16"
        # attribute (saving_lib.H5IOStore.__setitem__); h5py maps ml_dtypes'
        # bfloat16 to that opaque type.
        storage = np.dtype("V2")
    else:
        storage = dtypes.numpy_dtype(tensor.dtype)
    dataset = group.create_dataset(key, shape=tensor.shape, dtype=storage)
    if tensor.dtype == "bfloat16":
        dataset.attrs["dtype"] = "bfloat16"
    if tensor.size == 0:
        return
    offset = 0
    for chunk in tensor.iter_chunks():
        chunk = np.ascontiguousarray(chunk)
        if tensor.dtype == "bfloat16":
            chunk = chunk.view(np.uint16).view(storage)
        _write_flat(dataset, offset, chunk, tensor.shape)
        offset += chunk.size


def _write_flat(
    dataset: h5py.Dataset, offset: int, chunk: np.ndarray, shape: tuple[int, ...]
) -> None:
    """Write a 1-D C-order piece starting at flat position ``offset``."""
    if not shape:
        dataset[()] = chunk.reshape(())
        return
    for where, piece in _hyperslabs((), offset, chunk, shape):
        dataset[where] = piece


def _hyperslabs(
    lead: tuple[int, ...], offset: int, chunk: np.ndarray, shape: tuple[int, ...]
) -> Iterator[tuple[tuple[Any, ...], np.ndarray]]:
    """Cut the flat range [offset, offset + chunk.size) of an array of ``shape``
    (inside the fixed leading indices ``lead``) into at most 2 * ndim + 1
    rectangular pieces: a partial first row, whole rows, a partial last row."""
    if len(shape) == 1:
        yield (*lead, slice(offset, offset + chunk.size)), chunk
        return
    row = int(np.prod(shape[1:], dtype=np.int64))
    position, rest = offset, chunk
    first, within = divmod(position, row)
    if within:
        take = min(row - within, rest.size)
        yield from _hyperslabs((*lead, first), within, rest[:take], shape[1:])
        position, rest = position + take, rest[take:]
    rows = rest.size // row
    if rows:
        start = position // row
        block = rest[: rows * row].reshape((rows, *shape[1:]))
        yield (*lead, slice(start, start + rows)), block
        position, rest = position + rows * row, rest[rows * row :]
    if rest.size:
        yield from _hyperslabs((*lead, position // row), 0, rest, shape[1:])


def _keras3_optimizer(model: Model) -> bool:
    """True when the optimizer tensors are a Keras 3 optimizer's variables.

    Keras 3 keeps them in ``optimizer.variables`` order (iterations, learning
    rate, then per-variable slots) in both ``.keras`` and legacy HDF5 files.
    A Keras 2 optimizer orders and names its slots differently, so its state
    has no Keras 3 place.
    """
    if not model.by_role(Role.OPTIMIZER):
        return False
    if _version(model.metadata):
        return written_by_keras3(model)
    # An attached pair: Keras 3's to_json() beside a Keras 3 .weights.h5,
    # usable only when the compile config names the optimizer.
    source = model.metadata.get("weights_source")
    return (
        written_by_keras3(model)
        and isinstance(source, Mapping)
        and source.get("flavour") == "keras3-weights"
        and _names_optimizer(model)
    )


def _names_optimizer(model: Model) -> bool:
    """Whether a compile config says which optimizer the state belongs to.

    Keras 3's ``to_json()`` leaves the optimizer out of its compile_config;
    without one, Keras would compile a default optimizer and skip the state.
    """
    arch = model.architecture
    inline = arch.config.get("compile_config") if arch is not None else None
    candidates = (inline, _compile_config(model.metadata))
    return any(isinstance(c, Mapping) and "optimizer" in c for c in candidates)


def _version(metadata: Mapping[str, Any]) -> str:
    return str((metadata.get("producer") or {}).get("version") or "")


def written_by_keras3(model: Model) -> bool:
    """Whether Keras 3 wrote the model's config (and so its compile config).

    The recorded version decides; Keras 3's ``to_json()`` records none, but
    its config form (flavour ``keras3``) says the same.
    """
    version = _version(model.metadata)
    if version:
        return version.startswith("3.")
    return model.flavour == "keras3"


def _unplaced_state(model: Model, config: Mapping[str, Any]) -> list[Tensor]:
    """State tensors with no variable slot in the archive.

    Those outside every layer (tf_keras metric variables: Keras 3 saves no
    metric state in ``.keras`` archives), and those inside a layer whose
    variables Keras knows by name (a Dense holds kernel and bias only, and
    Keras 3 refuses a third ``vars/2`` when it loads).
    """
    layers = list(migrate.iter_layers(config))
    prefixes = [f"{layer.prefix}/" for layer in layers]
    known = {f"{layer.prefix}/": _known_variables(layer) for layer in layers}
    unplaced = []
    for tensor in model.by_role(Role.STATE):
        owner = next((p for p in prefixes if tensor.name.startswith(p)), None)
        names = known.get(owner or "")
        tail = tensor.name[len(owner or "") :]
        if owner is None or (
            names and tail not in names and not tail.startswith(f"{SEED_GENERATOR}/")
        ):
            unplaced.append(tensor)
    return unplaced


def _known_variables(layer: migrate.LayerEntry) -> frozenset[str]:
    """The layer's variable names when Keras fixes them; empty if unknown."""
    from ..errors import ModelconvError
    from ..keras_config import layer_weight_names

    try:
        return frozenset(layer_weight_names(layer.entry))
    except ModelconvError:
        return frozenset()
