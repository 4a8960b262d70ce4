"""Two Models in, one Diff record out: what changed, in meaning, not in bytes.

The architecture is compared after normalising both Keras configs, so that
serialisation details (Keras 1, 2 and 3 forms, node formats, DTypePolicy
objects, ``module`` and ``registered_name`` keys) are not reported as changes.
Tensors are matched by canonical name, then by layer and position, and
compared chunk by chunk so that memory follows the chunk size, not the model.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, ExitStack, nullcontext
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any

import numpy as np

from . import dtypes
from .callable_module import make_callable
from .limits import DEFAULT_MAX_BYTES
from .model import Architecture, Model, Role, Tensor

# Comparison works on chunks of this many bytes per side, with temporaries
# of the chunk's size (in float32 or float64) kept in buffers reused from
# chunk to chunk. Small chunks cost Python overhead per chunk; fresh
# temporaries of any size above glibc's mmap threshold (128 KiB) are mapped
# and faulted in anew each time, which is why they are reused.
DIFF_CHUNK_BYTES = 1 * 2**20
# Sources are read in pieces this many times larger than are compared: an
# HDF5 read has a fixed cost per call.
READS_PER_CHUNK = 4

SCHEMA = 1


class ChangeKind(str, Enum):
    """What happened to one part of the architecture."""

    ADDED = "added"
    REMOVED = "removed"
    RENAMED = "renamed"
    CHANGED = "changed"
    CONNECTIONS = "connections"
    # One side spells out the Keras default, the other leaves it implicit.
    DEFAULT = "default"

    def __str__(self) -> str:
        return self.value


class TensorStatus(str, Enum):
    """How one tensor of A compares with its match in B (DESIGN.md)."""

    SAME = "same"
    CLOSE = "close"
    CHANGED = "changed"
    ONLY_IN_A = "only_in_a"
    ONLY_IN_B = "only_in_b"
    SHAPE_CHANGED = "shape_changed"
    DTYPE_CHANGED = "dtype_changed"

    def __str__(self) -> str:
        return self.value


# Worst first: the order the weights table is sorted in.
SEVERITY = (
    TensorStatus.ONLY_IN_A,
    TensorStatus.ONLY_IN_B,
    TensorStatus.SHAPE_CHANGED,
    TensorStatus.DTYPE_CHANGED,
    TensorStatus.CHANGED,
    TensorStatus.CLOSE,
    TensorStatus.SAME,
)
OK_STATUSES = frozenset({TensorStatus.SAME, TensorStatus.CLOSE})


@dataclass(frozen=True)
class ArchChange:
    """One architecture change; ``path`` is a JSON Pointer into the normalised
    config (``/layers/<name>/config/<field>``)."""

    kind: ChangeKind
    path: str
    a: Any = None
    b: Any = None

    @property
    def counts(self) -> bool:
        return self.kind is not ChangeKind.DEFAULT

    def to_json(self) -> dict[str, Any]:
        return {
            "kind": self.kind.value,
            "path": self.path,
            "a": json_value(self.a),
            "b": json_value(self.b),
        }


@dataclass(frozen=True)
class TensorDiff:
    """One matched (or unmatched) tensor and how its values compare."""

    name: str
    name_a: str | None
    name_b: str | None
    matched_by: str | None  # "name", "position", or None when unmatched
    status: TensorStatus
    max_abs_diff: float | None = None
    max_rel_diff: float | None = None
    mismatched: int | None = None
    mismatched_fraction: float | None = None
    dtype_a: str | None = None
    dtype_b: str | None = None
    shape_a: tuple[int, ...] | None = None
    shape_b: tuple[int, ...] | None = None
    role: str = "weight"

    @property
    def counts(self) -> bool:
        return self.status not in OK_STATUSES

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "name_a": self.name_a,
            "name_b": self.name_b,
            "matched_by": self.matched_by,
            "status": self.status.value,
            "max_abs_diff": json_value(self.max_abs_diff),
            "max_rel_diff": json_value(self.max_rel_diff),
            "mismatched": self.mismatched,
            "mismatched_fraction": json_value(self.mismatched_fraction),
            "role": self.role,
            "dtype_a": self.dtype_a,
            "dtype_b": self.dtype_b,
            "shape_a": None if self.shape_a is None else list(self.shape_a),
            "shape_b": None if self.shape_b is None else list(self.shape_b),
        }


@dataclass(frozen=True)
class MetadataChange:
    """A metadata entry (producer, backend, training config...) that differs."""

    path: str
    a: Any = None
    b: Any = None

    def to_json(self) -> dict[str, Any]:
        return {"path": self.path, "a": json_value(self.a), "b": json_value(self.b)}


@dataclass(frozen=True)
class DiffOptions:
    atol: float = 0.0
    rtol: float = 0.0
    ulps: int | None = None
    nan_differs: bool = False
    optimizer: bool = False
    strict: bool = False

    @property
    def tolerant(self) -> bool:
        return self.atol > 0 or self.rtol > 0 or bool(self.ulps)


@dataclass(frozen=True)
class Diff:
    """Everything ``modelconv diff`` reports, as plain data."""

    architecture: tuple[ArchChange, ...]
    tensors: tuple[TensorDiff, ...]
    metadata: tuple[MetadataChange, ...]
    options: DiffOptions = field(default_factory=DiffOptions)
    a: str | None = None
    b: str | None = None
    source_a: Mapping[str, Any] = field(default_factory=dict)
    source_b: Mapping[str, Any] = field(default_factory=dict)

    @property
    def differences(self) -> int:
        """How many reported items count as differences."""
        count = sum(1 for change in self.architecture if change.counts)
        count += sum(1 for tensor in self.tensors if tensor.counts)
        if self.options.strict:
            count += len(self.metadata)
        return count

    @property
    def identical(self) -> bool:
        return self.differences == 0

    @property
    def exit_code(self) -> int:
        return 0 if self.identical else 1

    def to_json(self) -> dict[str, Any]:
        opts = self.options
        return {
            "schema": SCHEMA,
            "identical": self.identical,
            "differences": self.differences,
            "a": {"path": self.a, **self.source_a},
            "b": {"path": self.b, **self.source_b},
            "options": {
                "atol": json_value(opts.atol),
                "rtol": json_value(opts.rtol),
                "ulps": opts.ulps,
                "nan_differs": opts.nan_differs,
                "optimizer": opts.optimizer,
                "strict": opts.strict,
            },
            "architecture": [change.to_json() for change in self.architecture],
            "tensors": [tensor.to_json() for tensor in self.tensors],
            "metadata": [change.to_json() for change in self.metadata],
        }


def json_value(value: Any) -> Any:
    """``value`` made JSON-safe: non-finite floats as "nan"/"inf"/"-inf"."""
    if isinstance(value, bool) or value is None or isinstance(value, (int, str)):
        return value
    if isinstance(value, (float, np.floating)):
        value = float(value)
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return value
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, Mapping):
        return {str(k): json_value(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_value(v) for v in value]
    return str(value)


# --------------------------------------------------------------------------
# Public API


def diff_models(
    a: Model,
    b: Model,
    *,
    atol: float = 0.0,
    rtol: float = 0.0,
    ulps: int | None = None,
    nan_differs: bool = False,
    optimizer: bool = False,
    strict: bool = False,
    progress: Callable[[int], None] | None = None,
    chunk_bytes: int = DIFF_CHUNK_BYTES,
) -> Diff:
    """Compare two Models: architecture, tensors and metadata.

    ``progress`` is called with the number of bytes of A compared since the
    last call, for a progress bar; the library itself never prints.
    """
    options = DiffOptions(
        atol=float(atol),
        rtol=float(rtol),
        ulps=ulps,
        nan_differs=nan_differs,
        optimizer=optimizer,
        strict=strict,
    )
    if atol < 0 or rtol < 0 or (ulps is not None and ulps < 0):
        from .errors import UsageError

        raise UsageError(
            f"tolerances must not be negative (atol={atol}, rtol={rtol}, "
            f"ulps={ulps}); give values of 0 or more"
        )
    seen_a, seen_b = _keras1_as_keras3(a, b), _keras1_as_keras3(b, a)
    facts_a, facts_b = _source_facts(a, seen_a), _source_facts(b, seen_b)
    a, b = seen_a, seen_b
    layers_a = normalised_layers(a.architecture)
    layers_b = normalised_layers(b.architecture)
    changes, renames = compare_architectures(a.architecture, b.architecture)
    tensors = compare_tensors(
        a, b, layers_a, layers_b, renames, options, progress, chunk_bytes
    )
    metadata = compare_metadata(a.metadata, b.metadata)
    return Diff(
        architecture=tuple(changes),
        tensors=tuple(tensors),
        metadata=tuple(metadata),
        options=options,
        source_a=facts_a,
        source_b=facts_b,
    )


def diff_paths(
    path_a: str | os.PathLike[str] | Model,
    path_b: str | os.PathLike[str] | Model,
    *,
    format_a: str | None = None,
    format_b: str | None = None,
    max_bytes: int | None = None,
    progress_factory: Callable[[int], Callable[[int], None] | None] | None = None,
    **options: Any,
) -> Diff:
    """Load two files (or take two Models) and compare them.

    This is ``modelconv.diff``; see ``diff_models`` for the options.
    ``progress_factory``, when given, is called once with the number of bytes
    to compare and may return the ``progress`` callback for ``diff_models``.
    """
    limit = DEFAULT_MAX_BYTES if max_bytes is None else max_bytes
    with ExitStack() as stack:
        model_a = stack.enter_context(_opened(path_a, format_a, limit))
        model_b = stack.enter_context(_opened(path_b, format_b, limit))
        if progress_factory is not None:
            with_optimizer = options.get("optimizer", False)
            total = sum(
                t.nbytes
                for t in model_a.tensors
                if with_optimizer or t.role is not Role.OPTIMIZER
            )
            options["progress"] = progress_factory(total)
        result = diff_models(model_a, model_b, **options)
    return Diff(
        architecture=result.architecture,
        tensors=result.tensors,
        metadata=result.metadata,
        options=result.options,
        a=None if isinstance(path_a, Model) else str(path_a),
        b=None if isinstance(path_b, Model) else str(path_b),
        source_a=result.source_a,
        source_b=result.source_b,
    )


def _opened(
    source: str | os.PathLike[str] | Model, fmt: str | None, max_bytes: int
) -> AbstractContextManager[Model]:
    """A loaded file, closed afterwards; a Model given is left open."""
    if isinstance(source, Model):
        return nullcontext(source)
    from . import api

    return api.load(Path(source), format=fmt, max_bytes=max_bytes)


def _source_facts(model: Model, seen: Model | None = None) -> dict[str, Any]:
    """Format and flavour; with ``seen`` (the model as compared), the
    migration rules applied to it for the comparison."""
    facts: dict[str, Any] = {
        "format": model.format or None,
        "flavour": model.flavour or None,
    }
    if seen is not None and seen is not model:
        facts["compared_as_keras3"] = list(seen.migrations[len(model.migrations) :])
    return facts


def _keras1_as_keras3(model: Model, other: Model) -> Model:
    """A Keras 1 model compared with a later Keras's, seen as Keras 3 sees it.

    Keras 1 spells almost everything differently (Convolution2D, nb_filter,
    Merge, dense_1_W); compared as they stand, a Keras 1 file and its
    conversion would differ in every layer. The named migration rules make
    the comparison one of meaning, and are listed with the side they were
    applied to. Keras 2 and Keras 3 configs are compared by normalisation.
    """
    arch, theirs = model.architecture, other.architecture
    if (
        arch is None
        or theirs is None
        or arch.framework != "keras"
        or theirs.framework != "keras"
        or arch.form != 1
        or theirs.form == 1
    ):
        return model
    from .errors import ModelconvError
    from .migrate import migrate_keras3

    try:
        return migrate_keras3(model)
    except ModelconvError:
        return model  # no translation: compare the configs as they are


# --------------------------------------------------------------------------
# Architecture: normalise, then compare


@dataclass(frozen=True)
class NormLayer:
    """A layer with its config normalised for comparison."""

    name: str
    class_name: str
    config: Mapping[str, Any]
    inbound: tuple[str, ...]
    tensor_names: tuple[str, ...]
    index: int
    raw: Mapping[str, Any] = field(default_factory=dict, repr=False)


# Serialisation details, not meaning: Keras 3 adds `module` and
# `registered_name` to every object, `build_config` and `compile_config` to
# layers and models; tf.keras 2.x adds `shared_object_id` to shared objects.
# tf.keras 2.x also writes RNNs' `implementation`, a choice of kernels for
# the same maths, which Keras 3 accepts and ignores.
_DROP_KEYS = frozenset(
    {
        "module",
        "registered_name",
        "build_config",
        "compile_config",
        "shared_object_id",
        "implementation",
    }
)

# Keras 1 names of fields Keras 2 renamed (Keras 2.0 release notes).
_KERAS1_RENAMES = {
    "output_dim": "units",
    "init": "kernel_initializer",
    "inner_init": "recurrent_initializer",
    "W_regularizer": "kernel_regularizer",
    "b_regularizer": "bias_regularizer",
    "U_regularizer": "recurrent_regularizer",
    "W_constraint": "kernel_constraint",
    "b_constraint": "bias_constraint",
    "U_constraint": "recurrent_constraint",
    "bias": "use_bias",
    "nb_filter": "filters",
    "border_mode": "padding",
    "subsample": "strides",
    "dim_ordering": "data_format",
    "dropout_W": "dropout",
    "dropout_U": "recurrent_dropout",
    "input_dtype": "dtype",
}

# DTypePolicy class names: Keras 3 `DTypePolicy`/`FloatDTypePolicy`,
# tf.keras mixed precision `Policy`.
_POLICY_CLASSES = frozenset({"DTypePolicy", "FloatDTypePolicy", "Policy"})

# Non-null Keras defaults that one writer spells out and another omits.
# A field that is null on one side and absent on the other is always treated
# as a default: Keras uses null for "not set" throughout its configs.
_GLOBAL_DEFAULTS: dict[str, Any] = {
    "trainable": True,
    "dtype": "float32",
    "sparse": False,
    "ragged": False,
    "optional": False,
    "synchronized": False,
    "renorm": False,
    "renorm_momentum": 0.99,
    "mask_zero": False,
    "lora_alpha": None,
    # RNN switches: tf.keras 2.x writes time_major (Keras 3 dropped it).
    "time_major": False,
    "go_backwards": False,
    "stateful": False,
    "unroll": False,
    "return_state": False,
    "zero_output_for_mask": False,  # Keras 3 writes it; tf.keras only when set
    "rms_scaling": False,  # Keras 3 LayerNormalization
    # tf.keras 2.x writes groups=1 on DepthwiseConv, SeparableConv and
    # ConvTranspose layers too; Keras 3 refuses it there (migrate drops it).
    "groups": 1,
    # Keras 1 configs omit the initialisers they did not change.
    "kernel_initializer": {"class_name": "GlorotUniform", "config": {}},
    "bias_initializer": {"class_name": "Zeros", "config": {}},
    "beta_initializer": {"class_name": "Zeros", "config": {}},
    "gamma_initializer": {"class_name": "Ones", "config": {}},
    "moving_mean_initializer": {"class_name": "Zeros", "config": {}},
    "moving_variance_initializer": {"class_name": "Ones", "config": {}},
}
_CLASS_DEFAULTS: dict[str, dict[str, Any]] = {
    "Dense": {"activation": "linear", "use_bias": True},
    "Conv1D": {"activation": "linear", "use_bias": True},
    "Conv2D": {"activation": "linear", "use_bias": True},
    "Conv3D": {"activation": "linear", "use_bias": True},
    "BatchNormalization": {
        "momentum": 0.99,
        "epsilon": 0.001,
        "center": True,
        "scale": True,
    },
    "LayerNormalization": {"epsilon": 0.001, "center": True, "scale": True},
    "Embedding": {"mask_zero": False},
    "Flatten": {"data_format": "channels_last"},
    "Lambda": {"arguments": {}},
}
# Names Keras generates for unnamed models (Keras 3 `sequential`,
# `functional_1`; tf.keras `model`, `sequential_2`).
_GENERATED_MODEL_NAME = re.compile(r"(sequential|functional|model)(_\d+)?")

# Keras 2 puts the model's input shape on the first layer of a Sequential as
# well as on its InputLayer; Keras 3 keeps it only on the InputLayer.
_INPUT_SHAPE_KEYS = frozenset({"batch_shape", "input_shape", "input_dim"})


def normalised_layers(arch: Architecture | None) -> list[NormLayer]:
    """The layers of ``arch`` with normalised configs, in model order."""
    if arch is None or arch.framework != "keras":
        return []
    form = arch.form
    layers = list(arch.layers) or _layers_from_config(arch.config)
    result = []
    for index, layer in enumerate(layers):
        config = _layer_inner_config(layer.config)
        result.append(
            NormLayer(
                name=layer.name,
                class_name=layer.class_name,
                config=_positive_axis(
                    normalise_config(config, form=form, class_name=layer.class_name),
                    layer.output_shape,
                ),
                inbound=tuple(layer.inbound),
                tensor_names=tuple(layer.tensor_names),
                index=index,
                raw=config,
            )
        )
    return result


def _positive_axis(config: Any, shape: Any) -> Any:
    """Negative normalisation axes made positive when the rank is known.

    tf.keras 2.x stores BatchNormalization's axis as positive ints once built
    (``[1]``); Keras 3 keeps the ``-1`` it was given. Both mean the same.
    """
    axis = config.get("axis") if isinstance(config, Mapping) else None
    if not isinstance(axis, list) or not isinstance(shape, (list, tuple)):
        return config
    if not all(isinstance(d, int) or d is None for d in shape):
        return config  # several outputs: rank ambiguous
    rank = len(shape)
    fixed = [
        a + rank if isinstance(a, int) and not isinstance(a, bool) and a < 0 else a
        for a in axis
    ]
    return {**config, "axis": fixed}


def _layer_inner_config(config: Any) -> Mapping[str, Any]:
    """The layer's own config, whether given as the entry or its `config`."""
    if isinstance(config, Mapping):
        if "class_name" in config and isinstance(config.get("config"), Mapping):
            return config["config"]
        return config
    return {}


_UNUSED_SEPARABLE_KEYS = (
    "kernel_initializer",
    "kernel_regularizer",
    "kernel_constraint",
)


def normalise_config(
    config: Any, *, form: int | None = None, class_name: str | None = None
) -> Any:
    """A Keras config with serialisation details removed (see _DROP_KEYS)."""
    if isinstance(config, Mapping):
        if config.get("class_name") in _POLICY_CLASSES and isinstance(
            config.get("config"), Mapping
        ):
            return config["config"].get("name")
        out: dict[str, Any] = {}
        for key, value in config.items():
            key = str(key)
            if key in _DROP_KEYS or (class_name is not None and key == "name"):
                continue
            if form == 1 and key in _KERAS1_RENAMES:
                key = _KERAS1_RENAMES[key]
            if key == "batch_input_shape":  # Keras 2 spelling of batch_shape
                key = "batch_shape"
            if isinstance(value, str) and key.endswith("_initializer"):
                value = {"class_name": _camel(value), "config": {}}
            out[key] = normalise_config(value, form=form)
        out = _named_initializer(out)
        if class_name in ("SeparableConv1D", "SeparableConv2D"):
            # tf.keras 2.x writes the kernel_* arguments of its Conv base
            # class, which a separable convolution never uses (migrate drops
            # them for Keras 3).
            for key in _UNUSED_SEPARABLE_KEYS:
                out.pop(key, None)
        if class_name == "Lambda":
            out = _lambda_keras3_form(out)
        if class_name == "Bidirectional":
            out = _bidirectional_form(out)
        if class_name == "BatchNormalization" and isinstance(out.get("axis"), int):
            # tf.keras 2.x stores axis as a list after building; Keras 3 as int.
            out["axis"] = [out["axis"]]
        return out
    if isinstance(config, (list, tuple)):
        return [normalise_config(v, form=form) for v in config]
    return config


# Keras 2.0-2.2 serialise the named initialisers as VarianceScaling with
# these arguments; Keras >= 2.3 and Keras 3 write the names.
_VARIANCE_SCALING_NAMES: dict[tuple[float, Any, Any], str] = {
    (1.0, "fan_avg", "uniform"): "GlorotUniform",
    (1.0, "fan_avg", "normal"): "GlorotNormal",
    (1.0, "fan_avg", "truncated_normal"): "GlorotNormal",
    (2.0, "fan_in", "uniform"): "HeUniform",
    (2.0, "fan_in", "normal"): "HeNormal",
    (2.0, "fan_in", "truncated_normal"): "HeNormal",
    (1.0, "fan_in", "uniform"): "LecunUniform",
    (1.0, "fan_in", "normal"): "LecunNormal",
    (1.0, "fan_in", "truncated_normal"): "LecunNormal",
}


def _named_initializer(obj: dict[str, Any]) -> dict[str, Any]:
    """A VarianceScaling initialiser replaced by its name where it has one."""
    config = obj.get("config")
    if obj.get("class_name") != "VarianceScaling" or not isinstance(config, Mapping):
        return obj
    scale = config.get("scale")
    if isinstance(scale, bool) or not isinstance(scale, (int, float)):
        return obj
    name = _VARIANCE_SCALING_NAMES.get(
        (float(scale), config.get("mode"), config.get("distribution"))
    )
    if name is None:
        return obj
    rest = {
        k: v for k, v in config.items() if k not in ("scale", "mode", "distribution")
    }
    return {**obj, "class_name": name, "config": rest}


def _lambda_keras3_form(config: dict[str, Any]) -> dict[str, Any]:
    """A Lambda config with Keras 2's function spelling in Keras 3's.

    Keras 2 writes ``function: [code, defaults, closure]`` beside
    ``function_type: "lambda"``; Keras 3 writes ``function: {"class_name":
    "__lambda__", "config": {code, defaults, closure}}``. The code is the
    same bytes either way.
    """
    out = dict(config)
    for key in ("function", "output_shape"):
        kind = out.pop(f"{key}_type", None)
        out.pop(f"{key}_module", None)
        value = out.get(key)
        if kind == "lambda" and isinstance(value, list) and len(value) == 3:
            code, defaults, closure = value
            out[key] = {
                "class_name": "__lambda__",
                "config": {"code": code, "defaults": defaults, "closure": closure},
            }
    return out


def _bidirectional_form(config: dict[str, Any]) -> dict[str, Any]:
    """A Bidirectional config without what Keras 3 derives when writing.

    Keras 3 names the wrapped layer ``forward_<name>`` and always writes a
    ``backward_layer``, the same layer with ``go_backwards`` flipped;
    tf.keras writes the layer as given and a backward layer only when the
    user passed one. The inner names are generated, so they are left out.
    """
    out = dict(config)
    layer = _without_name(out.get("layer"))
    if layer is None:
        return out
    out["layer"] = layer
    backward = _without_name(out.get("backward_layer"))
    if backward is not None:
        forward = layer["config"]
        derived = {**forward, "go_backwards": not forward.get("go_backwards", False)}
        if backward.get("class_name") == layer.get("class_name") and (
            _equal_but_defaults(backward["config"], derived)
        ):
            del out["backward_layer"]
        else:
            out["backward_layer"] = backward
    return out


def _without_name(entry: Any) -> dict[str, Any] | None:
    """A nested layer entry with its config's ``name`` left out."""
    if not isinstance(entry, Mapping) or not isinstance(entry.get("config"), Mapping):
        return None
    config = {k: v for k, v in entry["config"].items() if k != "name"}
    return {**entry, "config": config}


def _camel(name: str) -> str:
    """``glorot_uniform`` → ``GlorotUniform``: Keras 1/2 initialiser strings."""
    return "".join(part[:1].upper() + part[1:] for part in name.split("_"))


def _layers_from_config(config: Any) -> list[Any]:
    """Layers from a raw Keras model config when the architecture lists none.

    Handles Sequential (Keras 1 list form included) and Functional configs
    with either node format; keras_config normally does this job.
    """
    from .model import Layer

    class_name = ""
    inner: Any = config
    if isinstance(config, Mapping) and "config" in config:
        class_name = str(config.get("class_name", ""))
        inner = config["config"]
    entries = inner if isinstance(inner, list) else inner.get("layers", [])
    if not isinstance(entries, list):
        return []
    layers: list[Layer] = []
    previous: str | None = None
    for entry in entries:
        if not isinstance(entry, Mapping):
            continue
        raw_config = entry.get("config")
        layer_config: Mapping[str, Any] = (
            raw_config if isinstance(raw_config, Mapping) else {}
        )
        name = str(entry.get("name") or layer_config.get("name") or "")
        if "inbound_nodes" in entry:
            inbound = _inbound_names(entry.get("inbound_nodes"))
        elif class_name != "Functional" and class_name != "Model":
            inbound = [previous] if previous else []
        else:
            inbound = []
        layers.append(
            Layer(
                name=name,
                class_name=str(entry.get("class_name", "")),
                config=layer_config,
                inbound=tuple(inbound),
                # Only its rank is used (normalisation axes); for the layers
                # that have an axis, the output shape equals the input's.
                output_shape=_build_input_shape(entry),
            )
        )
        previous = name
    return layers


def _build_input_shape(entry: Mapping[str, Any]) -> Any:
    build = entry.get("build_config")
    return build.get("input_shape") if isinstance(build, Mapping) else None


def _inbound_names(nodes: Any) -> list[str]:
    """Inbound layer names from Keras 2 lists or Keras 3 ``keras_history``."""
    names: list[str] = []

    def walk(obj: Any) -> None:
        if isinstance(obj, Mapping):
            history = (
                obj.get("config", {}).get("keras_history")
                if isinstance(obj.get("config"), Mapping)
                else None
            )
            if obj.get("class_name") == "__keras_tensor__" and history:
                names.append(str(history[0]))
                return
            for value in obj.values():
                walk(value)
        elif isinstance(obj, list):
            if len(obj) >= 3 and isinstance(obj[0], str) and isinstance(obj[1], int):
                names.append(obj[0])
                return
            for value in obj:
                walk(value)

    walk(nodes)
    return names


def _model_level(arch: Architecture) -> dict[str, Any]:
    """Model-level facts: class, name, inputs, outputs and remaining config."""
    config: Any = arch.config
    class_name = None
    if isinstance(config, Mapping) and "config" in config and "class_name" in config:
        class_name = config.get("class_name")
        config = config["config"]
    if class_name == "Model":
        # Keras 2.0-2.3 called a functional model "Model"; tf.keras 2.4+ and
        # Keras 3 "Functional". The same class.
        class_name = "Functional"
    if not isinstance(config, Mapping):
        return {"class_name": class_name, "name": None, "config": {}}
    rest = {
        k: v
        for k, v in config.items()
        if k
        not in {
            "layers",
            "input_layers",
            "output_layers",
            "name",
            "build_input_shape",
            "keras_version",
            "backend",
        }
    }
    return {
        "class_name": class_name,
        "name": config.get("name"),
        "inputs": _endpoint_names(config.get("input_layers")),
        "outputs": _endpoint_names(config.get("output_layers")),
        "config": normalise_config(rest),
    }


def _endpoint_names(value: Any) -> list[str] | None:
    """Layer names of ``input_layers``/``output_layers``: Keras 2 writes a list
    of ``[name, node, tensor]``, Keras 3 a single triple for one endpoint."""
    if value is None:
        return None
    if isinstance(value, list) and value and isinstance(value[0], str):
        return [value[0]]
    names = []
    for item in value if isinstance(value, list) else []:
        if isinstance(item, list) and item and isinstance(item[0], str):
            names.append(item[0])
    return names


def compare_architectures(
    a: Architecture | None, b: Architecture | None, prefix: str = ""
) -> tuple[list[ArchChange], dict[str, str]]:
    """Semantic changes from A to B, and the layer renames found (a → b).

    ``prefix`` is the JSON Pointer of a nested model inside its parent.
    """
    changes, renames = _compare_architectures(a, b)
    if prefix:
        changes = [ArchChange(c.kind, prefix + c.path, c.a, c.b) for c in changes]
    return changes, renames


def _compare_architectures(
    a: Architecture | None, b: Architecture | None
) -> tuple[list[ArchChange], dict[str, str]]:
    if a is None and b is None:
        return [], {}
    if a is None or b is None:
        kind = ChangeKind.ADDED if a is None else ChangeKind.REMOVED
        present = b if a is None else a
        assert present is not None
        summary = f"{present.framework} architecture, {len(present.layers)} layers"
        return [
            ArchChange(
                kind, "", None if a is None else summary, summary if a is None else None
            )
        ], {}
    if a.framework != b.framework:
        return [
            ArchChange(ChangeKind.CHANGED, "/framework", a.framework, b.framework)
        ], {}
    if a.framework != "keras":
        changes: list[ArchChange] = []
        _compare_values(
            normalise_config(a.config), normalise_config(b.config), "/config", changes
        )
        return changes, {}

    return _compare_keras(a, b)


def _compare_keras(
    a: Architecture, b: Architecture
) -> tuple[list[ArchChange], dict[str, str]]:
    """Model-level facts, then layers paired by name or evident rename."""
    level_a, level_b = _model_level(a), _model_level(b)
    changes = _compare_model_level(level_a, level_b)

    sequential = level_a["class_name"] == level_b["class_name"] == "Sequential"
    layers_a, layers_b = normalised_layers(a), normalised_layers(b)
    pairs, renames, only_a, only_b = _match_layers(layers_a, layers_b)
    # A Sequential's input layer is implicit in Keras 2 configs that put
    # batch_input_shape on the first layer, and each Keras line generates
    # its own name for it (Keras 3 `input_layer`, tf.keras `input_1` or
    # `dense_input`); nothing refers to it by name.
    implicit = {
        layer.name
        for layer in layers_a + layers_b
        if sequential and layer.class_name == "InputLayer"
    }
    for layer in only_a:
        kind = ChangeKind.DEFAULT if layer.name in implicit else ChangeKind.REMOVED
        changes.append(
            ArchChange(kind, _pointer("layers", layer.name), layer.class_name, None)
        )
    for layer in only_b:
        kind = ChangeKind.DEFAULT if layer.name in implicit else ChangeKind.ADDED
        changes.append(
            ArchChange(kind, _pointer("layers", layer.name), None, layer.class_name)
        )
    for la, lb in pairs:
        changes += _compare_layer_pair(la, lb, renames, implicit)

    for key in ("inputs", "outputs"):
        ends_a, ends_b = level_a.get(key), level_b.get(key)
        if ends_a is None or ends_b is None:
            continue  # Sequential configs do not list them
        if [renames.get(n, n) for n in ends_a] != ends_b:
            changes.append(
                ArchChange(ChangeKind.CONNECTIONS, f"/{key}", ends_a, ends_b)
            )
    return changes, renames


def _compare_model_level(
    level_a: Mapping[str, Any], level_b: Mapping[str, Any]
) -> list[ArchChange]:
    changes = []
    if level_a["class_name"] != level_b["class_name"]:
        changes.append(
            ArchChange(
                ChangeKind.CHANGED,
                "/class_name",
                level_a["class_name"],
                level_b["class_name"],
            )
        )
    if level_a["name"] != level_b["name"]:
        # Keras 1 models have no name; later Keras lines generate one.
        generated = all(
            n is None or (isinstance(n, str) and _GENERATED_MODEL_NAME.fullmatch(n))
            for n in (level_a["name"], level_b["name"])
        )
        kind = ChangeKind.DEFAULT if generated else ChangeKind.CHANGED
        changes.append(ArchChange(kind, "/name", level_a["name"], level_b["name"]))
    _compare_values(level_a["config"], level_b["config"], "/config", changes)
    return changes


def _compare_layer_pair(
    la: NormLayer, lb: NormLayer, renames: dict[str, str], implicit: set[str]
) -> list[ArchChange]:
    """Name, class, config and inbound edges of two paired layers.

    Renames found inside a nested model are added to ``renames`` as
    ``outer/inner`` so that its tensors can follow them.
    """
    changes: list[ArchChange] = []
    base = _pointer("layers", la.name)
    if la.name != lb.name:
        both_implicit = la.name in implicit and lb.name in implicit
        kind = ChangeKind.DEFAULT if both_implicit else ChangeKind.RENAMED
        changes.append(ArchChange(kind, base + "/name", la.name, lb.name))
    if la.class_name != lb.class_name:
        changes.append(
            ArchChange(
                ChangeKind.CHANGED, base + "/class_name", la.class_name, lb.class_name
            )
        )
    if la.class_name == lb.class_name and la.class_name in _MODEL_CLASSES:
        # A nested model: its layers are compared as a model's, so that
        # their names, renames and defaults follow the same rules.
        nested, nested_renames = compare_architectures(
            _nested(la), _nested(lb), prefix=base + "/config"
        )
        changes += nested
        for inner_a, inner_b in nested_renames.items():
            renames[f"{la.name}/{inner_a}"] = f"{lb.name}/{inner_b}"
    else:
        _compare_values(
            la.config, lb.config, base + "/config", changes, class_name=la.class_name
        )
    mapped = [renames.get(n, n) for n in la.inbound if n not in implicit]
    if mapped != [n for n in lb.inbound if n not in implicit]:
        changes.append(
            ArchChange(
                ChangeKind.CONNECTIONS,
                base + "/inbound",
                list(la.inbound),
                list(lb.inbound),
            )
        )
    return changes


_MODEL_CLASSES = frozenset({"Sequential", "Functional", "Model"})


def _nested(layer: NormLayer) -> Architecture:
    """A nested model's own Architecture, with shapes inferred where possible."""
    from .errors import ModelconvError
    from .keras_config import build_architecture

    config = {"class_name": layer.class_name, "config": layer.raw}
    try:
        return build_architecture(config)
    except ModelconvError:
        return Architecture("keras", config)


def _match_layers(
    layers_a: list[NormLayer], layers_b: list[NormLayer]
) -> tuple[
    list[tuple[NormLayer, NormLayer]], dict[str, str], list[NormLayer], list[NormLayer]
]:
    """Pair layers by name, then find evident renames among the rest.

    A rename is evident when class and config agree and either the position
    in the model or the (already mapped) inbound layers agree.
    """
    by_name_b = {layer.name: layer for layer in layers_b}
    pairs: list[tuple[NormLayer, NormLayer]] = []
    rest_a: list[NormLayer] = []
    for layer in layers_a:
        match = by_name_b.get(layer.name)
        if match is not None:
            pairs.append((layer, match))
        else:
            rest_a.append(layer)
    matched_b = {lb.name for _, lb in pairs}
    rest_b = [layer for layer in layers_b if layer.name not in matched_b]

    renames: dict[str, str] = {}
    # Two passes so that a rename found late can make an earlier edge match.
    for _ in range(2):
        for la in list(rest_a):
            for lb in rest_b:
                if la.class_name != lb.class_name or not _equivalent(la, lb):
                    continue
                same_edges = [renames.get(n, n) for n in la.inbound] == list(lb.inbound)
                if la.index == lb.index or (same_edges and la.inbound):
                    renames[la.name] = lb.name
                    pairs.append((la, lb))
                    rest_a.remove(la)
                    rest_b.remove(lb)
                    break
    pairs.sort(key=lambda pair: pair[0].index)
    return pairs, renames, rest_a, rest_b


def _equivalent(la: NormLayer, lb: NormLayer) -> bool:
    """Configs that differ at most in spelled-out defaults."""
    found: list[ArchChange] = []
    _compare_values(la.config, lb.config, "", found, class_name=la.class_name)
    return not any(change.counts for change in found)


def _pointer(*parts: str) -> str:
    """A JSON Pointer (RFC 6901) from unescaped parts."""
    return "".join("/" + p.replace("~", "~0").replace("/", "~1") for p in parts)


def _defaults_for(class_name: str | None) -> dict[str, Any]:
    return {**_GLOBAL_DEFAULTS, **_CLASS_DEFAULTS.get(class_name or "", {})}


def _compare_values(
    a: Any,
    b: Any,
    path: str,
    changes: list[ArchChange],
    *,
    class_name: str | None = None,
) -> None:
    """Append the differences between two normalised JSON values."""
    if isinstance(a, Mapping) and isinstance(b, Mapping):
        defaults = _defaults_for(class_name)
        for key in list(a) + [k for k in b if k not in a]:
            sub = path + _pointer(key)
            if key in a and key in b:
                _compare_values(a[key], b[key], sub, changes)
                continue
            value = a[key] if key in a else b[key]
            is_default = (
                value is None
                or (key in defaults and _equal_but_defaults(defaults[key], value))
                or (key in _INPUT_SHAPE_KEYS and class_name not in (None, "InputLayer"))
            )
            kind = (
                ChangeKind.DEFAULT
                if is_default
                else (ChangeKind.REMOVED if key in a else ChangeKind.ADDED)
            )
            changes.append(ArchChange(kind, sub, a.get(key), b.get(key)))
        return
    if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        for index, (item_a, item_b) in enumerate(zip(a, b)):
            _compare_values(item_a, item_b, f"{path}/{index}", changes)
        return
    if not _same_value(a, b):
        changes.append(ArchChange(ChangeKind.CHANGED, path, a, b))


def _equal_but_defaults(a: Any, b: Any) -> bool:
    """Values that differ at most in spelled-out defaults."""
    found: list[ArchChange] = []
    _compare_values(a, b, "", found)
    return not any(change.counts for change in found)


def _same_value(a: Any, b: Any) -> bool:
    """JSON equality where 1 == 1.0 but True != 1 and lists equal tuples."""
    if isinstance(a, bool) or isinstance(b, bool):
        return isinstance(a, bool) and isinstance(b, bool) and a == b
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return a == b or (a != a and b != b)
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(_same_value(x, y) for x, y in zip(a, b))
    if isinstance(a, Mapping) and isinstance(b, Mapping):
        return a.keys() == b.keys() and all(_same_value(a[k], b[k]) for k in a)
    return bool(type(a) is type(b) and a == b)


# --------------------------------------------------------------------------
# Metadata


def compare_metadata(
    a: Mapping[str, Any], b: Mapping[str, Any]
) -> list[MetadataChange]:
    """Top-level metadata entries that differ (nested values compared whole)."""
    changes = []
    for key in list(a) + [k for k in b if k not in a]:
        value_a, value_b = a.get(key), b.get(key)
        if not _same_value(value_a, value_b):
            changes.append(MetadataChange(_pointer(str(key)), value_a, value_b))
    return changes


# --------------------------------------------------------------------------
# Tensors: match, then compare in aligned chunks


def _layer_of(tensor: Tensor, owner: Mapping[str, str], layers: Sequence[str]) -> str:
    """The layer a tensor belongs to: from the architecture's tensor lists,
    else the longest layer name its name starts with, else its name's head."""
    if tensor.name in owner:
        return owner[tensor.name]
    prefixes = [name for name in layers if tensor.name.startswith(name + "/")]
    if prefixes:
        return max(prefixes, key=len)
    return tensor.name.rsplit("/", 1)[0] if "/" in tensor.name else ""


def _positions(
    tensors: Sequence[Tensor], layers: Sequence[NormLayer]
) -> dict[str, tuple[str, str, int]]:
    """tensor name → (layer, role, index among that layer's tensors of the role)."""
    owner = {name: layer.name for layer in layers for name in layer.tensor_names}
    names = [layer.name for layer in layers]
    counters: dict[tuple[str, str], int] = {}
    result = {}
    for tensor in tensors:
        key = (_layer_of(tensor, owner, names), tensor.role.value)
        result[tensor.name] = (*key, counters.get(key, 0))
        counters[key] = counters.get(key, 0) + 1
    return result


def match_tensors(
    a: Sequence[Tensor],
    b: Sequence[Tensor],
    layers_a: Sequence[NormLayer] = (),
    layers_b: Sequence[NormLayer] = (),
    renames: Mapping[str, str] | None = None,
) -> list[tuple[Tensor | None, Tensor | None, str | None]]:
    """Pairs (a, b, matched_by) in A's order, then B's leftovers.

    By canonical name first; the rest by layer (renames applied) and
    position within the layer, which is how a legacy .h5 and a .keras
    archive of the same model line up when their names differ.
    """
    renames = renames or {}
    by_name_b = {t.name: t for t in b}
    matched: dict[str, tuple[Tensor, str]] = {}
    for tensor in a:
        if tensor.name in by_name_b:
            matched[tensor.name] = (by_name_b[tensor.name], "name")
    used_b = {pair[0].name for pair in matched.values()}

    pos_a = _positions(a, layers_a)
    pos_b = _positions(b, layers_b)
    free_b = {pos_b[t.name]: t for t in b if t.name not in used_b}
    for tensor in a:
        if tensor.name in matched:
            continue
        layer, role, index = pos_a[tensor.name]
        if not layer:
            # No layer to anchor on (top-level names like `weights`): pairing
            # by position alone would match unrelated arrays.
            continue
        other = free_b.pop((renames.get(layer, layer), role, index), None)
        if other is not None:
            matched[tensor.name] = (other, "position")
            used_b.add(other.name)

    # Last, when no tensor of a role matched at all (two naming schemes),
    # pair them in order if the counts agree and every pair agrees in shape
    # and dtype. Optimizer state needs this: its names are format-specific
    # (`optimizer/adam/..._momentum` in legacy .h5, `optimizer/0` in .keras)
    # but both keep Keras's order. A partial overlap is never guessed at.
    for role in Role:
        all_a = [t for t in a if t.role is role]
        rest_a = [t for t in all_a if t.name not in matched]
        rest_b = [t for t in b if t.name not in used_b and t.role is role]
        if len(rest_a) != len(all_a) or not rest_a or len(rest_a) != len(rest_b):
            continue
        if all(
            (ta.shape, ta.dtype) == (tb.shape, tb.dtype)
            for ta, tb in zip(rest_a, rest_b)
        ):
            for ta, tb in zip(rest_a, rest_b):
                matched[ta.name] = (tb, "position")
                used_b.add(tb.name)

    pairs: list[tuple[Tensor | None, Tensor | None, str | None]] = []
    for tensor in a:
        if tensor.name in matched:
            other, how = matched[tensor.name]
            pairs.append((tensor, other, how))
        else:
            pairs.append((tensor, None, None))
    pairs.extend((None, t, None) for t in b if t.name not in used_b)
    return pairs


def compare_tensors(
    a: Model,
    b: Model,
    layers_a: Sequence[NormLayer],
    layers_b: Sequence[NormLayer],
    renames: Mapping[str, str],
    options: DiffOptions,
    progress: Callable[[int], None] | None = None,
    chunk_bytes: int = DIFF_CHUNK_BYTES,
) -> list[TensorDiff]:
    def wanted(model: Model) -> list[Tensor]:
        return [
            t
            for t in model.tensors
            if options.optimizer or t.role is not Role.OPTIMIZER
        ]

    results = []
    for ta, tb, how in match_tensors(wanted(a), wanted(b), layers_a, layers_b, renames):
        results.append(compare_pair(ta, tb, how, options, chunk_bytes, progress))
    return results


def compare_pair(
    ta: Tensor | None,
    tb: Tensor | None,
    matched_by: str | None,
    options: DiffOptions,
    chunk_bytes: int = DIFF_CHUNK_BYTES,
    progress: Callable[[int], None] | None = None,
) -> TensorDiff:
    """Compare two matched tensors (either may be None when unmatched).

    ``progress`` receives the bytes of A done, chunk by chunk.
    """
    compared = ta is not None and tb is not None and ta.shape == tb.shape
    if progress is not None and ta is not None and not compared:
        progress(ta.nbytes)
    if ta is None or tb is None:
        present = ta if ta is not None else tb
        assert present is not None
        return TensorDiff(
            name=present.name,
            name_a=ta.name if ta is not None else None,
            name_b=tb.name if tb is not None else None,
            matched_by=None,
            status=TensorStatus.ONLY_IN_B if ta is None else TensorStatus.ONLY_IN_A,
            dtype_a=ta.dtype if ta is not None else None,
            dtype_b=tb.dtype if tb is not None else None,
            shape_a=ta.shape if ta is not None else None,
            shape_b=tb.shape if tb is not None else None,
            role=present.role.value,
        )
    common: dict[str, Any] = dict(
        name=ta.name,
        name_a=ta.name,
        name_b=tb.name,
        matched_by=matched_by,
        dtype_a=ta.dtype,
        dtype_b=tb.dtype,
        shape_a=ta.shape,
        shape_b=tb.shape,
        role=ta.role.value,
    )
    if ta.shape != tb.shape:
        return TensorDiff(status=TensorStatus.SHAPE_CHANGED, **common)
    stats = _Stats()
    for chunk_a, chunk_b in aligned_chunks(ta, tb, chunk_bytes):
        stats.add(chunk_a, chunk_b, ta.dtype, tb.dtype, options)
        if progress is not None:
            progress(chunk_a.size * chunk_a.itemsize)
    if ta.dtype != tb.dtype:
        status = TensorStatus.DTYPE_CHANGED
    elif stats.bytes_differ == 0:
        status = TensorStatus.SAME
    elif stats.mismatched == 0:
        status = TensorStatus.CLOSE
    else:
        status = TensorStatus.CHANGED
    size = ta.size
    return TensorDiff(
        status=status,
        max_abs_diff=stats.max_abs,
        max_rel_diff=stats.max_rel,
        mismatched=stats.mismatched,
        mismatched_fraction=(stats.mismatched / size) if size else 0.0,
        **common,
    )


def aligned_chunks(
    ta: Tensor, tb: Tensor, chunk_bytes: int = DIFF_CHUNK_BYTES
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Equal-length 1-D pieces of two tensors of the same size.

    The two sources may cut their chunks differently (an HDF5 dataset's
    chunks against a zip member's buffer), so pieces are re-cut at the
    shorter of the two pending lengths.
    """
    # Sources may yield more than asked (whole HDF5 chunks): cut to size.
    step = max(1, chunk_bytes // max(ta.numpy_dtype.itemsize, tb.numpy_dtype.itemsize))
    read_bytes = chunk_bytes * READS_PER_CHUNK
    iter_a = ta.iter_chunks(read_bytes)
    iter_b = tb.iter_chunks(read_bytes)
    pend_a: np.ndarray | None = np.empty(0, dtype=ta.numpy_dtype)
    pend_b: np.ndarray | None = np.empty(0, dtype=tb.numpy_dtype)
    while pend_a is not None and pend_b is not None:
        if pend_a.size == 0:
            pend_a = next(iter_a, None)
        if pend_b.size == 0:
            pend_b = next(iter_b, None)
        if pend_a is None or pend_b is None:
            break
        n = min(pend_a.size, pend_b.size, step)
        if n:
            yield pend_a[:n], pend_b[:n]
            pend_a, pend_b = pend_a[n:], pend_b[n:]
    # Both sources are checked to add up to the declared size (the same on
    # both sides); draining them runs that check on the longer one.
    for _ in iter_a:
        pass
    for _ in iter_b:
        pass


_UINT_OF_SIZE = {1: np.uint8, 2: np.uint16, 4: np.uint32, 8: np.uint64}


def _bits(chunk: np.ndarray) -> np.ndarray:
    """Little-endian raw bits of each element, as unsigned ints (complex: 2)."""
    chunk = np.ascontiguousarray(dtypes.to_little_endian(chunk))
    size = chunk.dtype.itemsize
    if size == 16:  # complex128: two 8-byte halves per element
        return chunk.view("<u8").reshape(-1, 2)
    return chunk.view(np.dtype(_UINT_OF_SIZE[size]).newbyteorder("<"))


def _work_dtype(name: str) -> np.dtype:
    """The dtype differences are computed in, for one side's dtype.

    float16 and bfloat16 widen exactly to float32, and float32 stays float32,
    as numpy.isclose computes for float32 arrays (numpy 2 keeps Python-float
    tolerances weak): the figures and the tolerance test are then those of
    numpy, and each chunk moves half the bytes that float64 would.
    """
    if name in dtypes.COMPLEX_NAMES:
        return np.dtype(np.complex128)
    if name in ("float16", "bfloat16", "float32"):
        return np.dtype(np.float32)
    return np.dtype(np.float64)  # float64, integers and bool


def _as_number(chunk: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """A chunk in its work dtype, copied only when the dtype changes."""
    if chunk.dtype.name == "bool":
        chunk = chunk.view(np.int8)
    return chunk.astype(dtype, copy=False)


class _Stats:
    """Running figures over the chunks of one tensor pair.

    Temporaries live in buffers reused from chunk to chunk: fresh arrays of
    a chunk's size would be mapped and faulted in anew each time.
    """

    def __init__(self) -> None:
        # Elements whose bytes differ (plus NaNs under --nan-differs).
        self.bytes_differ = 0
        self.mismatched = 0
        self.max_abs: float = 0.0
        self.max_rel: float = 0.0
        self._buffers: dict[str, np.ndarray] = {}

    def _buffer(self, key: str, size: int, dtype: np.dtype) -> np.ndarray:
        found = self._buffers.get(key)
        if found is None or found.dtype != dtype or found.size < size:
            found = self._buffers[key] = np.empty(size, dtype=dtype)
        return found[:size]

    def add(
        self,
        a: np.ndarray,
        b: np.ndarray,
        name_a: str,
        name_b: str,
        options: DiffOptions,
    ) -> None:
        if name_a == name_b:
            bit_diff = _bits(a) != _bits(b)
            if bit_diff.ndim == 2:
                bit_diff = bit_diff.any(axis=1)
            differing = int(np.count_nonzero(bit_diff))
        else:
            bit_diff = np.ones(a.shape, dtype=bool)
            differing = a.size
        if options.nan_differs and name_a in dtypes.FLOAT_NAMES | dtypes.COMPLEX_NAMES:
            # NaN against NaN is a difference even in the same bits: the
            # option promises NaN != NaN, and a byte-identical copy of a
            # diverged model must not pass.
            bit_diff = bit_diff | (np.isnan(a) & np.isnan(b))
            differing = int(np.count_nonzero(bit_diff))
        self.bytes_differ += differing
        if not differing:
            return

        exact = {name_a, name_b} <= (dtypes.INT_NAMES | {"bool"})
        work = np.result_type(_work_dtype(name_a), _work_dtype(name_b))
        x, y = _as_number(a, work), _as_number(b, work)
        real = work.kind == "f"
        with np.errstate(invalid="ignore", over="ignore"):
            if real:
                diff = np.subtract(x, y, out=self._buffer("diff", x.size, work))
                np.abs(diff, out=diff)
                magnitude = np.abs(y, out=self._buffer("magnitude", y.size, work))
            else:
                diff, magnitude = np.abs(x - y), np.abs(y)
        largest = float(diff.max())
        if exact and name_a == name_b:
            # Integers and bools compare exactly; differences are still sized.
            self._sizes(diff, magnitude, largest)
            self.mismatched += differing
            return

        nan_pairs = np.empty(0, dtype=np.intp)
        if math.isnan(largest):
            # |x - y| is NaN only where a NaN or two same-signed infinities
            # meet (max propagates NaN, so a chunk without one skips this);
            # fix those few elements up instead of masking the whole chunk.
            odd = np.flatnonzero(np.isnan(diff))
            xs, ys = x[odd], y[odd]
            both = np.isnan(xs) & np.isnan(ys)
            fixed = np.where(xs == ys, 0.0, np.nan)  # inf == inf → 0
            if not options.nan_differs:
                fixed[both] = 0.0  # NaN equals NaN unless --nan-differs
                nan_pairs = odd[both]
            diff[odd] = fixed
            largest = float(diff.max())
        self._sizes(diff, magnitude, largest)

        if not options.tolerant:
            self.mismatched += differing
            return
        with np.errstate(invalid="ignore", over="ignore"):
            within = diff <= options.atol + options.rtol * magnitude
        # An infinity is close only to itself (as numpy.isclose has it), not
        # to anything a relative tolerance of infinity would admit.
        within &= np.isfinite(diff)
        within[nan_pairs] = True
        if options.ulps and name_a == name_b and name_a in dtypes.FLOAT_NAMES:
            close = _ulp_distance(a, b) <= options.ulps
            if options.nan_differs:
                close &= ~np.isnan(diff)
            within |= close
        self.mismatched += int(np.count_nonzero(bit_diff & ~within))

    def _sizes(self, diff: np.ndarray, magnitude: np.ndarray, largest: float) -> None:
        """Fold a chunk's differences into the running maxima.

        ``largest`` is ``diff.max()``. Elements with equal bits have a
        difference of 0 here, so no mask is needed; a NaN difference (NaN
        against a number) makes both maxima NaN.
        """
        if diff.size == 0 or math.isnan(self.max_abs):
            return
        if math.isnan(largest):
            self.max_abs = self.max_rel = math.nan
            return
        self.max_abs = max(self.max_abs, largest)
        if math.isinf(largest):
            # An infinity against a finite number (or against the other
            # infinity) is infinitely off.
            self.max_rel = math.inf
            return
        if largest == 0:
            return
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            if diff.dtype.kind == "f":
                rel = self._buffer("relative", diff.size, diff.dtype)
                np.divide(diff, magnitude, out=rel)
            else:
                rel = diff / magnitude
        # With finite differences a NaN in rel is 0 / 0, two equal zeros:
        # fmax skips it, and d / 0 for d > 0 is inf, infinitely off.
        worst = float(np.fmax.reduce(rel))
        self.max_rel = max(self.max_rel, 0.0 if math.isnan(worst) else worst)


def _ulp_distance(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Units in the last place between two float arrays of the same dtype.

    Bit patterns are mapped to a monotonic integer line (negative floats
    mirrored), so -0.0 and 0.0 are 0 apart and neighbours are 1 apart.
    """
    size = a.dtype.itemsize
    signed = np.dtype(f"<i{size}")
    top = np.int64(1) << (8 * size - 1)

    def line(x: np.ndarray) -> np.ndarray:
        raw = (
            np.ascontiguousarray(dtypes.to_little_endian(x))
            .view(signed)
            .astype(np.int64)
        )
        if size == 8:
            # int64 bit patterns: negative floats have the sign bit set.
            return np.where(raw < 0, np.int64(-(2**63)) - raw, raw)
        return np.where(raw < 0, -(raw + top), raw)

    # float64 arithmetic: int64 differences of far-apart floats can overflow.
    return np.abs(line(a).astype(np.float64) - line(b).astype(np.float64))


make_callable(__name__, diff_paths)
