"""Keras config migration: Keras 1 and 2 configs to the Keras 3 form, and back.

Each rule is a small named function. Its docstring says which Keras versions
it bridges. Rules edit a deep copy of one layer entry (``{"class_name",
"config", ...}``) or of the whole model config. The driver records the name
of every rule that changed something, and ``prepare`` puts that list in
``Model.migrations``.

Weight rules (Keras 1 recurrent weights, ``th`` kernels, Theano kernel flips)
give the tensors they change a new lazy source computed from the original's
``read()``. Every other tensor keeps its source and stays bit-exact.

The layout facts come from the Keras sources: Keras 3.15
``keras/src/saving/serialization_lib.py`` and ``models/functional.py`` (the
node form), tf_keras 2.21 ``src/saving/legacy/hdf5_format.py``
(``preprocess_weights_for_loading``, the Keras 1 to 2 weight conversions) and
Keras 2.2-2.3 ``keras/engine/saving.py`` (``_need_convert_kernel``) with
``keras/utils/conv_utils.py`` (``convert_kernel``, the Theano flip), and Keras
2.0 ``keras/legacy/interfaces.py`` (Keras 1 argument names).
"""

from __future__ import annotations

import copy
import functools
import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .errors import InputError, InternalError, ModelconvError, UnsupportedError
from .model import Architecture, CallableSource, Layer, Model, Role, Tensor

Entry = dict[str, Any]

# tf_keras 2.21 writes this version into legacy HDF5 files; Keras 3.15.1 into
# .keras archives. Used when the source's own version is of the other line.
KERAS2_VERSION = "2.21.0"
KERAS3_VERSION = "3.15.1"

MODEL_CLASSES = frozenset({"Sequential", "Functional", "Model"})
RNN_CELLS = {
    "LSTM": "lstm_cell",
    "GRU": "gru_cell",
    "SimpleRNN": "simple_rnn_cell",
    "ConvLSTM1D": "conv_lstm_cell",
    "ConvLSTM2D": "conv_lstm_cell",
    "ConvLSTM3D": "conv_lstm_cell",
}
WRAPPER_KEYS = ("layer", "backward_layer", "cell")


@dataclass
class _Run:
    """The rules applied during one migration, in first-applied order."""

    applied: list[str] = field(default_factory=list)
    # The serialisation form of the source config (keras_config.detect_form).
    form: int = 2

    def note(self, rule: Callable[..., Any]) -> None:
        if rule.__name__ not in self.applied:
            self.applied.append(rule.__name__)


# ---------------------------------------------------------------------------
# Keras 1 -> 2 argument and class names (Keras 2.0 legacy/interfaces.py)

_K1_CLASSES = {
    "Convolution1D": "Conv1D",
    "Convolution2D": "Conv2D",
    "Convolution3D": "Conv3D",
    "AtrousConvolution1D": "Conv1D",
    "AtrousConvolution2D": "Conv2D",
    "Deconvolution2D": "Conv2DTranspose",
    "SeparableConvolution2D": "SeparableConv2D",
}
_K1_COMMON = {
    "init": "kernel_initializer",
    "W_regularizer": "kernel_regularizer",
    "b_regularizer": "bias_regularizer",
    "W_constraint": "kernel_constraint",
    "b_constraint": "bias_constraint",
    "bias": "use_bias",
    "input_dtype": "dtype",
}
_K1_BY_CLASS: dict[str, dict[str, str]] = {
    "Dense": {"output_dim": "units"},
    "Conv1D": {
        "nb_filter": "filters",
        "filter_length": "kernel_size",
        "subsample_length": "strides",
        "border_mode": "padding",
        "atrous_rate": "dilation_rate",
    },
    "Conv2D": {
        "nb_filter": "filters",
        "subsample": "strides",
        "border_mode": "padding",
        "dim_ordering": "data_format",
        "atrous_rate": "dilation_rate",
    },
    "Conv2DTranspose": {
        "nb_filter": "filters",
        "subsample": "strides",
        "border_mode": "padding",
        "dim_ordering": "data_format",
    },
    "Conv3D": {
        "nb_filter": "filters",
        "subsample": "strides",
        "border_mode": "padding",
        "dim_ordering": "data_format",
    },
    "SeparableConv2D": {
        "nb_filter": "filters",
        "subsample": "strides",
        "border_mode": "padding",
        "dim_ordering": "data_format",
        "depthwise_regularizer": "depthwise_regularizer",
    },
    "MaxPooling1D": {"pool_length": "pool_size", "stride": "strides"},
    "AveragePooling1D": {"pool_length": "pool_size", "stride": "strides"},
    "Dropout": {"p": "rate"},
    "SpatialDropout1D": {"p": "rate"},
    "SpatialDropout2D": {"p": "rate", "dim_ordering": "data_format"},
    "GaussianDropout": {"p": "rate"},
    "GaussianNoise": {"sigma": "stddev"},
    "Embedding": {
        "init": "embeddings_initializer",
        "W_regularizer": "embeddings_regularizer",
        "W_constraint": "embeddings_constraint",
    },
    "BatchNormalization": {
        "beta_init": "beta_initializer",
        "gamma_init": "gamma_initializer",
    },
}
_K1_RECURRENT = {
    "output_dim": "units",
    "inner_init": "recurrent_initializer",
    "inner_activation": "recurrent_activation",
    "U_regularizer": "recurrent_regularizer",
    "U_constraint": "recurrent_constraint",
    "dropout_W": "dropout",
    "dropout_U": "recurrent_dropout",
}
for _name in ("LSTM", "GRU", "SimpleRNN"):
    _K1_BY_CLASS[_name] = _K1_RECURRENT
for _name in (
    "MaxPooling2D",
    "AveragePooling2D",
    "MaxPooling3D",
    "AveragePooling3D",
    "GlobalMaxPooling2D",
    "GlobalAveragePooling2D",
    "UpSampling2D",
    "ZeroPadding2D",
    "Cropping2D",
):
    _K1_BY_CLASS[_name] = {
        "border_mode": "padding",
        "dim_ordering": "data_format",
    }
# Keras 1 dropped these; Keras 2.0 ignored them with a warning.
_K1_DROPPED = frozenset({"consume_less", "mode", "input_length_unused"})
_K1_DIM_ORDERING = {"th": "channels_first", "tf": "channels_last"}
_K1_INITIALIZERS = {"one": "ones", "zero": "zeros"}
_K1_INTERFACE_CLASSES = (
    frozenset(_K1_BY_CLASS) | frozenset(_K1_CLASSES) | frozenset({"Merge"})
)


def keras1_class_names(entry: Entry, run: _Run) -> None:
    """Keras 1 layer class names (``Convolution2D``...) to Keras 2 and 3 names.

    Bridges Keras 1.x to Keras >= 2.0 (Keras 2.0 renamed them).
    """
    old = entry.get("class_name")
    if old in _K1_CLASSES:
        entry["class_name"] = _K1_CLASSES[old]
        run.note(keras1_class_names)


def keras1_argument_names(entry: Entry, run: _Run) -> None:
    """Keras 1 argument names (``output_dim``, ``nb_filter``, ``init``...).

    Bridges Keras 1.x to Keras >= 2.0, following the renames Keras 2.0's
    ``legacy/interfaces.py`` applied when it met Keras 1 arguments.
    """
    config = entry.get("config")
    if not isinstance(config, dict):
        return
    class_name = entry.get("class_name", "")
    table = dict(_K1_COMMON)
    table.update(_K1_BY_CLASS.get(class_name, {}))
    if class_name == "Embedding":
        table.pop("bias", None)
        if "dropout" in config:
            # Keras 2.0 dropped Embedding(dropout=...) with a warning; it acts
            # only in training, so predictions do not change.
            config.pop("dropout")
            changed = True
    changed = False
    for old, new in table.items():
        if old in config and old != new:
            value = config.pop(old)
            if new not in config:
                config[new] = value
            changed = True
    if "nb_row" in config and "nb_col" in config:
        config["kernel_size"] = [config.pop("nb_row"), config.pop("nb_col")]
        changed = True
    if "data_format" in config and config["data_format"] in _K1_DIM_ORDERING:
        config["data_format"] = _K1_DIM_ORDERING[config["data_format"]]
    if config.pop("forget_bias_init", None) is not None:
        config["unit_forget_bias"] = True
        changed = True
    for key, value in list(config.items()):
        if key.endswith("_initializer") and isinstance(value, str):
            value = _K1_INITIALIZERS.get(value, value)
            config[key] = value
    for key in _K1_DROPPED & set(config):
        if class_name == "Merge" and key == "mode":
            continue
        config.pop(key)
        changed = True
    if class_name in ("LSTM", "GRU", "SimpleRNN", "Conv1D") and "input_dim" in config:
        # Keras 1 recurrent and 1-D conv layers took input_dim/input_length; the
        # batch_input_shape Keras 1 also wrote carries the same facts.
        config.pop("input_dim")
        config.pop("input_length", None)
        changed = True
    if class_name == "GRU" and changed and "reset_after" not in config:
        # Keras 1 GRU applied the reset gate before the matrix product, which
        # Keras 2 calls reset_after=False (Keras 3 defaults to True).
        config["reset_after"] = False
    if changed:
        run.note(keras1_argument_names)


_MERGE_MODES = {
    "sum": "Add",
    "mul": "Multiply",
    "ave": "Average",
    "max": "Maximum",
    "concat": "Concatenate",
    "dot": "Dot",
    "cos": "Dot",
}


def keras1_merge_layers(entry: Entry, run: _Run) -> None:
    """Keras 1 ``Merge`` layers to ``Add``, ``Concatenate``, ``Dot``...

    Bridges Keras 1.x (``Merge(mode=...)``) to Keras >= 2.0, which has one
    layer class per mode. A callable mode has no translation and is refused.
    """
    if entry.get("class_name") != "Merge":
        return
    config = entry.get("config") or {}
    if config.get("layers"):
        raise UnsupportedError(
            f"Keras 1 Merge layer {config.get('name')!r} merges whole Sequential "
            "branches inside a Sequential model, which Keras 2 and 3 can only "
            "express as a functional model; rebuild it functionally first"
        )
    mode = config.get("mode", "sum")
    if not isinstance(mode, str) or mode not in _MERGE_MODES:
        raise UnsupportedError(
            f"Keras 1 Merge layer {config.get('name')!r} uses mode {str(mode)[:60]!r}, "
            "which has no Keras 2 or 3 layer; only the modes "
            f"{', '.join(sorted(_MERGE_MODES))} can be migrated"
        )
    new: dict[str, Any] = {
        "name": config.get("name"),
        "trainable": config.get("trainable", True),
    }
    if mode == "concat":
        new["axis"] = config.get("concat_axis", -1)
    elif mode in ("dot", "cos"):
        new["axes"] = config.get("dot_axes", -1)
        new["normalize"] = mode == "cos"
    entry["class_name"] = _MERGE_MODES[mode]
    entry["config"] = new
    run.note(keras1_merge_layers)


def sequential_layer_list(model_entry: Entry, run: _Run) -> None:
    """A Sequential config that is a bare list of layers, to ``{"layers": [...]}``.

    Bridges Keras 1.x and 2.0-2.2 (which wrote the list) to Keras >= 2.3.
    """
    if model_entry.get("class_name") == "Sequential" and isinstance(
        model_entry.get("config"), list
    ):
        model_entry["config"] = {"name": "sequential", "layers": model_entry["config"]}
        run.note(sequential_layer_list)


def functional_class_name(model_entry: Entry, run: _Run) -> None:
    """The functional model class ``Model`` to ``Functional``.

    Bridges Keras 1.x-2.3 (``Model``) to tf.keras >= 2.4 and Keras 3.
    """
    if model_entry.get("class_name") == "Model":
        model_entry["class_name"] = "Functional"
        run.note(functional_class_name)


# ---------------------------------------------------------------------------
# Keras 2 -> 3 rules


def batch_shape(entry: Entry, run: _Run) -> None:
    """``batch_input_shape`` to ``batch_shape`` (InputLayer) or dropped.

    Bridges Keras 1/2 to Keras 3: Keras 3 ``InputLayer`` takes ``batch_shape``
    and other layers refuse ``batch_input_shape`` (Keras 3.15
    ``layers/layer.py`` accepts only ``input_shape``/``input_dim``). A
    Sequential's first layer keeps the shape through ``sequential_input_layer``.
    """
    config = entry.get("config")
    if not isinstance(config, dict):
        return
    changed = False
    if entry.get("class_name") == "InputLayer":
        if "batch_input_shape" in config:
            config["batch_shape"] = config.pop("batch_input_shape")
            changed = True
        if "input_shape" in config and "batch_shape" not in config:
            config["batch_shape"] = [None, *config.pop("input_shape")]
            changed = True
    else:
        keys = ["batch_input_shape", "input_shape", "batch_size"]
        if entry.get("class_name") not in ("Embedding",):
            # Embedding's input_dim is its vocabulary size, not a shape.
            keys.append("input_dim")
        for key in keys:
            if key in config:
                config.pop(key)
                changed = True
    if changed:
        run.note(batch_shape)


def _first_batch_shape(layer_config: Mapping[str, Any]) -> list[Any] | None:
    if "batch_input_shape" in layer_config:
        return list(layer_config["batch_input_shape"])
    if "input_shape" in layer_config:
        return [layer_config.get("batch_size"), *layer_config["input_shape"]]
    if "input_dim" in layer_config:
        shape = [None]
        if "input_length" in layer_config:
            shape.append(layer_config["input_length"])
        return [*shape, layer_config["input_dim"]]
    return None


def sequential_input_layer(model_entry: Entry, run: _Run) -> None:
    """An explicit ``InputLayer`` for a Sequential whose first layer has a shape.

    Bridges Keras 1/2 (the input shape rides on the first layer) to Keras 3,
    whose Sequential config starts with an InputLayer.
    """
    if model_entry.get("class_name") != "Sequential":
        return
    layers = model_entry["config"].get("layers") or []
    if not layers or layers[0].get("class_name") == "InputLayer":
        return
    first = layers[0].get("config") or {}
    shape = _first_batch_shape(first)
    if shape is None:
        return
    dtype = first.get("dtype") or first.get("input_dtype") or "float32"
    if isinstance(dtype, Mapping):
        dtype = (dtype.get("config") or {}).get("name", "float32")
    if dtype.startswith("mixed_"):
        dtype = "float32"
    layers.insert(
        0,
        {
            "class_name": "InputLayer",
            "config": {
                "batch_shape": shape,
                "dtype": dtype,
                "sparse": False,
                "name": f"{first.get('name', 'layer')}_input",
            },
        },
    )
    run.note(sequential_input_layer)


def dtype_policy(entry: Entry, run: _Run) -> None:
    """Plain dtype strings (and tf_keras ``Policy``) to Keras 3 ``DTypePolicy``.

    Bridges Keras 1/2 (``"dtype": "float32"``) to Keras 3, which writes a
    serialized DTypePolicy for every layer but InputLayer.
    """
    config = entry.get("config")
    if not isinstance(config, dict) or entry.get("class_name") == "InputLayer":
        return
    dtype = config.get("dtype")
    if isinstance(dtype, str):
        name = dtype
    elif isinstance(dtype, Mapping) and dtype.get("class_name") == "Policy":
        name = (dtype.get("config") or {}).get("name", "float32")
    else:
        return
    config["dtype"] = {
        "module": "keras",
        "class_name": "DTypePolicy",
        "config": {"name": name},
        "registered_name": None,
    }
    run.note(dtype_policy)


# Arguments tf_keras 2.x layers write and Keras 3.15 constructors refuse
# ("Unrecognized keyword arguments"), found by loading tf_keras 2.21 configs in
# Keras 3.15.1. ``implementation`` is still accepted by Keras 3 LSTM/GRU.
_KERAS3_REJECTS: dict[str, frozenset[str]] = {
    "LSTM": frozenset({"time_major"}),
    "GRU": frozenset({"time_major"}),
    "SimpleRNN": frozenset({"time_major"}),
    "RNN": frozenset({"time_major"}),
    "ConvLSTM1D": frozenset({"time_major"}),
    "ConvLSTM2D": frozenset({"time_major"}),
    "ConvLSTM3D": frozenset({"time_major"}),
    "BatchNormalization": frozenset({"fused", "virtual_batch_size", "adjustment"}),
    "Embedding": frozenset({"input_length"}),
    "DepthwiseConv2D": frozenset({"groups"}),
    "Conv1DTranspose": frozenset({"groups"}),
    "Conv2DTranspose": frozenset({"groups"}),
    "Conv3DTranspose": frozenset({"groups"}),
    "SeparableConv1D": frozenset(
        {"groups", "kernel_initializer", "kernel_regularizer", "kernel_constraint"}
    ),
    "SeparableConv2D": frozenset(
        {"groups", "kernel_initializer", "kernel_regularizer", "kernel_constraint"}
    ),
    "DepthwiseConv1D": frozenset({"groups"}),
    # tf_keras records its build shapes in the config; Keras 3 builds on call.
    "MultiHeadAttention": frozenset(
        {"query_shape", "key_shape", "value_shape", "softmax_robust_masking"}
    ),
}
_KERAS3_REJECT_DEFAULTS = {
    # Only the default values are dropped; another value changes the maths,
    # so it is refused rather than lost.
    "renorm": False,
    "renorm_clipping": None,
    "renorm_momentum": 0.99,
    "fused": None,
    "virtual_batch_size": None,
    "adjustment": None,
    "time_major": False,
    "groups": 1,
    "ragged": False,
    "softmax_robust_masking": False,
}


def attention_build_config(entry: Entry, run: _Run) -> None:
    """tf_keras MultiHeadAttention's ``build_config`` in the Keras 3 form.

    tf_keras's .keras archives record ``{"input_shape": <query shape>}``,
    and Keras 3 calls ``build(query_shape, value_shape)`` from
    ``{"shapes_dict": {...}}`` (Keras 3.15). The shapes come from the
    ``query_shape``/``value_shape`` tf_keras keeps in the layer config;
    without them the build config goes, and Keras 3 builds on the first call.
    """
    config = entry.get("config")
    build = entry.get("build_config")
    if (
        entry.get("class_name") != "MultiHeadAttention"
        or not isinstance(config, dict)
        or not isinstance(build, dict)
        or "shapes_dict" in build
    ):
        return
    query = config.get("query_shape") or build.get("input_shape")
    value = config.get("value_shape")
    if query is None or value is None:
        del entry["build_config"]
    else:
        shapes = {"query_shape": query, "value_shape": value}
        if config.get("key_shape") is not None:
            shapes["key_shape"] = config["key_shape"]
        entry["build_config"] = {"shapes_dict": shapes}
    run.note(attention_build_config)


def drop_rejected_arguments(entry: Entry, run: _Run) -> None:
    """Arguments Keras 3 refuses (``time_major`` in RNNs, ``fused`` in BN...).

    Bridges tf.keras/tf_keras 2.x to Keras 3. Only values equal to the Keras 2
    default are dropped; any other value is refused, naming it.
    """
    config = entry.get("config")
    if not isinstance(config, dict):
        return
    rejected = _KERAS3_REJECTS.get(entry.get("class_name", ""), frozenset())
    changed = False
    for key in sorted(rejected & set(config)):
        value = config[key]
        # tf_keras separable convolutions write the kernel_* arguments of their
        # Conv base class, which they never use; any value is safe to drop.
        unused = key.startswith("kernel_") and "Separable" in entry["class_name"]
        unused = unused or key in ("query_shape", "key_shape", "value_shape")
        default = _KERAS3_REJECT_DEFAULTS.get(key, value)
        if value != default and not unused and not (key == "fused" and value):
            raise UnsupportedError(
                f"layer {config.get('name')!r} ({entry.get('class_name')}) sets "
                f"{key}={value!r}, which Keras 3 has no equivalent for; only the "
                f"default {default!r} can be migrated"
            )
        config.pop(key)
        changed = True
    if changed:
        run.note(drop_rejected_arguments)


def lambda_function_keras3(entry: Entry, run: _Run) -> None:
    """A tf_keras Lambda's ``function``/``function_type`` to Keras 3's
    ``{"class_name": "__lambda__", "config": {code, defaults, closure}}``.

    Bridges Keras 2/tf_keras (``function: [code, defaults, closure]``,
    ``function_type: "lambda"``) to Keras 3 (``layers/core/lambda_layer.py``).
    Only the stored fields move; the bytecode is never decoded here, and Keras
    3 still refuses it unless its user passes ``safe_mode=False``.
    """
    config = entry.get("config")
    if entry.get("class_name") != "Lambda" or not isinstance(config, dict):
        return
    if "function_type" not in config:
        return
    for key, type_key, module_key in (
        ("function", "function_type", "module"),
        ("output_shape", "output_shape_type", "output_shape_module"),
        ("mask", "mask_type", "mask_module"),
    ):
        kind = config.pop(type_key, None)
        config.pop(module_key, None)
        value = config.get(key)
        if kind == "lambda" and isinstance(value, list) and len(value) == 3:
            config[key] = {
                "class_name": "__lambda__",
                "config": {"code": value[0], "defaults": value[1], "closure": value[2]},
            }
        elif kind == "function":
            raise UnsupportedError(
                f"Lambda layer {config.get('name')!r} calls the named function "
                f"{value!r} from module {entry.get('module')!r}; Keras 3 needs it "
                "registered as a custom object, so it cannot be migrated"
            )
    run.note(lambda_function_keras3)


def batchnorm_axis(entry: Entry, run: _Run) -> None:
    """BatchNormalization ``axis`` written as a one-element list, to an int.

    Bridges tf.keras/tf_keras 2.x (which writes ``"axis": [3]``) to Keras 3,
    whose BatchNormalization takes a single int axis.
    """
    config = entry.get("config")
    if entry.get("class_name") != "BatchNormalization" or not isinstance(config, dict):
        return
    axis = config.get("axis")
    if isinstance(axis, list):
        if len(axis) != 1:
            raise UnsupportedError(
                f"BatchNormalization {config.get('name')!r} normalises over axes "
                f"{axis}; Keras 3 takes a single axis, so it cannot be migrated"
            )
        config["axis"] = axis[0]
        run.note(batchnorm_axis)


_ACTIVATION_KEYS = ("activation", "recurrent_activation", "inner_activation")


def hard_sigmoid_activation(entry: Entry, run: _Run) -> None:
    """Keras 1/2 ``hard_sigmoid`` is refused: Keras 3 changed its meaning.

    Keras 1.x-2.x and tf_keras compute ``clip(0.2 * x + 0.5, 0, 1)``; Keras 3
    computes ``clip(x / 6 + 0.5, 0, 1)`` (``keras/src/activations``), and has
    no built-in with the old slope. Migrating the name would change the
    model's predictions, so the layer is named in an error instead.
    """
    config = entry.get("config")
    if not isinstance(config, dict) or run.form >= 3:
        return
    for key in _ACTIVATION_KEYS:
        if config.get(key) == "hard_sigmoid":
            raise UnsupportedError(
                f"layer {config.get('name')!r} ({entry.get('class_name')}) uses "
                f"{key}='hard_sigmoid', which Keras 1/2 define as clip(0.2x+0.5) "
                "and Keras 3 as clip(x/6+0.5); Keras 3 has no equivalent, so the "
                "model cannot be migrated without changing its predictions"
            )


_OBJECT_MODULES = (
    ("_initializer", "keras.initializers"),
    ("_regularizer", "keras.regularizers"),
    ("_constraint", "keras.constraints"),
)


def object_modules(entry: Entry, run: _Run) -> None:
    """``module`` and ``registered_name`` on layers and their nested objects.

    Bridges Keras 1/2 (class name only) to Keras 3, which names the public
    module of every serialized object. Old module paths (``keras.src.engine``,
    ``keras.engine``, ``tensorflow.python.keras``) become current ones.
    """
    changed = False
    module = entry.get("module")
    wanted = _layer_module(entry.get("class_name", ""))
    if module is None and _is_op_call(entry):
        # Keras 3's legacy .h5 names no module for ``x + y`` either; its
        # .keras archives say keras.src.ops.numpy, registered as the class.
        entry["module"] = "keras.src.ops.numpy"
        entry["registered_name"] = entry["class_name"]
        changed = True
    elif module is None or _is_legacy_module(module):
        entry["module"] = wanted
        changed = True
    if "registered_name" not in entry:
        entry["registered_name"] = (
            "Functional" if entry.get("class_name") == "Functional" else None
        )
        changed = True
    config = entry.get("config")
    if isinstance(config, dict):
        for key, value in config.items():
            for suffix, obj_module in _OBJECT_MODULES:
                if key.endswith(suffix) and isinstance(value, dict):
                    if "class_name" in value and (
                        value.get("module") is None
                        or _is_legacy_module(value["module"])
                    ):
                        value["module"] = obj_module
                        value.setdefault("registered_name", None)
                        changed = True
    if changed:
        run.note(object_modules)


def _layer_module(class_name: str) -> str:
    if class_name == "Sequential":
        return "keras"
    if class_name == "Functional":
        return "keras.src.models.functional"
    return _APPLICATION_LAYERS.get(class_name, "keras.layers")


# Layers keras.applications defines for itself, not in keras.layers: Keras 3
# finds them by module (its legacy .h5 configs name none; a .keras archive
# says "keras.src.applications.convnext", Keras 3.15).
_APPLICATION_LAYERS = {"LayerScale": "keras.src.applications.convnext"}


_LEGACY_MODULE = re.compile(
    r"^(keras\.src\.engine|keras\.engine|tensorflow\.python\.keras|tf_keras|"
    r"keras\.src\.legacy|keras\.legacy)"
)


def _is_legacy_module(module: Any) -> bool:
    if not isinstance(module, str):
        raise InputError(
            f"Keras config: 'module' is {module!r}; expected a module path such "
            "as 'keras.layers'"
        )
    return bool(_LEGACY_MODULE.match(module))


def node_form_keras3(
    entry: Entry, run: _Run, shapes: Mapping[str, Any] | None = None
) -> None:
    """Nested ``inbound_nodes`` lists to Keras 3 ``{"args", "kwargs"}`` nodes.

    Bridges Keras 1 (``[[name, node, tensor]]``) and Keras 2 (``[[name, node,
    tensor, kwargs]]``) to Keras 3's ``__keras_tensor__`` form
    (``models/functional.py`` ``deserialize_node`` reads both).
    """
    nodes = entry.get("inbound_nodes")
    if not isinstance(nodes, list) or not nodes:
        return
    if all(isinstance(node, dict) for node in nodes):
        return
    new_nodes = []
    for node in nodes:
        if isinstance(node, dict):
            new_nodes.append(node)
            continue
        if not isinstance(node, list):
            raise UnsupportedError(
                f"layer {entry.get('name')!r} has an inbound node {node!r} that "
                "is not a list of [layer, node, tensor(, kwargs)] entries"
            )
        tensors = []
        kwargs: dict[str, Any] = {}
        for ref in node:
            if not isinstance(ref, list) or len(ref) < 3:
                raise UnsupportedError(
                    f"layer {entry.get('name')!r} has an inbound node entry "
                    f"{ref!r} that is not [layer, node, tensor(, kwargs)]"
                )
            if len(ref) > 3 and isinstance(ref[3], dict):
                kwargs.update({k: _kwarg_tensor(v, shapes) for k, v in ref[3].items()})
            tensors.append(_keras_tensor(ref[0], ref[1], ref[2], shapes))
        args: list[Any] = [tensors[0] if len(tensors) == 1 else tensors]
        new_nodes.append({"args": args, "kwargs": kwargs})
    entry["inbound_nodes"] = new_nodes
    run.note(node_form_keras3)


def _kwarg_tensor(value: Any, shapes: Mapping[str, Any] | None) -> Any:
    """A Keras 2 call keyword argument; a tensor in it is ``[layer, node,
    tensor]`` (tf_keras ``MultiHeadAttention(q, value=v)``) and becomes a
    Keras 3 ``__keras_tensor__``."""
    if (
        isinstance(value, list)
        and len(value) == 3
        and isinstance(value[0], str)
        and all(isinstance(v, int) and not isinstance(v, bool) for v in value[1:])
    ):
        return _keras_tensor(value[0], value[1], value[2], shapes)
    return value


def _keras_tensor(
    layer: str, node: int, index: int, shapes: Mapping[str, Any] | None
) -> dict[str, Any]:
    shape = None
    if shapes is not None:
        shape = shapes.get(layer)
        if isinstance(shape, list) and shape and isinstance(shape[0], list):
            shape = shape[index] if index < len(shape) else None
    return {
        "class_name": "__keras_tensor__",
        "config": {
            # Keras 3 rebuilds the tensor from keras_history; the shape is
            # informative, and an empty one is written when it is unknown.
            "shape": list(shape) if isinstance(shape, list) else [],
            "dtype": "float32",
            "keras_history": [layer, node, index],
        },
    }


# Config rules, in the order they run on every layer entry.
def tf_op_layers(entry: Entry, run: _Run) -> None:
    """TFOpLambda and SlicingOpLambda are refused: Keras 3 has no such layers.

    tf.keras 2.x records a TensorFlow op applied to Keras tensors (``x + y``,
    ``tf.nn.relu(x)``, ``x[:, 0]``) as one of these; Keras 3 records its own
    ops instead, and nothing maps one to the other by name.
    """
    if entry.get("class_name") in ("TFOpLambda", "SlicingOpLambda"):
        config = entry.get("config") or {}
        raise UnsupportedError(
            f"layer {config.get('name')!r} is a {entry['class_name']} (the "
            f"TensorFlow op {config.get('function')!r} that tf.keras recorded), "
            "which Keras 3 cannot load; keep it for tf_keras (HDF5 with --for "
            "keras2), or rebuild the model with Keras layers"
        )


KERAS3_LAYER_RULES: tuple[Callable[[Entry, _Run], None], ...] = (
    tf_op_layers,
    keras1_merge_layers,
    hard_sigmoid_activation,
    lambda_function_keras3,
    keras1_class_names,
    keras1_argument_names,
    batch_shape,
    dtype_policy,
    attention_build_config,
    drop_rejected_arguments,
    batchnorm_axis,
    object_modules,
)


def to_keras3(
    config: Mapping[str, Any], shapes: Mapping[str, Any] | None = None
) -> tuple[dict[str, Any], list[str]]:
    """A model config of any Keras version in the Keras 3 form, and the rules used.

    ``shapes`` maps layer names to output shapes (for the informative shapes
    of Keras 3 nodes). The input is not changed.
    """
    from .keras_config import detect_form

    entry = copy.deepcopy(dict(config))
    run = _Run(form=detect_form(config))
    _model_to_keras3(entry, run, shapes or {})
    return entry, run.applied


def _skips_first_node(entry: Mapping[str, Any]) -> bool:
    """True for a nested model that tf.keras numbers from node 1.

    A Functional model, or a Sequential built on an input, starts life with a
    node linking its own inputs to its outputs; tf.keras >= 2.4 keeps that
    node's index when it numbers the model's calls inside another model
    (``_should_skip_first_node`` in tf_keras 2.21 ``engine/functional.py``),
    where Keras 3 numbers the calls from 0.
    """
    cls = entry.get("class_name")
    if cls in ("Functional", "Model"):
        return True
    if cls != "Sequential":
        return False
    config = entry.get("config")
    layers = config if isinstance(config, list) else (config or {}).get("layers")
    if not layers or not isinstance(layers[0], Mapping):
        return False
    first = layers[0]
    if first.get("class_name") == "InputLayer":
        return True
    return _first_batch_shape(first.get("config") or {}) is not None


def _shift_nested_refs(entry: Entry, delta: int) -> bool:
    """Add ``delta`` to the node index of every Keras 2 reference to a nested
    model that skips its first node; True when something changed."""
    config = entry.get("config")
    if not isinstance(config, dict):
        return False
    layers = config.get("layers") or []
    skip = {
        (layer.get("config") or {}).get("name") or layer.get("name")
        for layer in layers
        if isinstance(layer, Mapping) and _skips_first_node(layer)
    }
    refs: list[list[Any]] = []
    for layer in layers:
        for node in layer.get("inbound_nodes") or []:
            if isinstance(node, list):
                refs.extend(r for r in node if isinstance(r, list))
    for key in ("input_layers", "output_layers"):
        value = config.get(key)
        if isinstance(value, list) and value and isinstance(value[0], list):
            refs.extend(value)
        elif isinstance(value, list) and len(value) == 3:
            refs.append(value)
    changed = False
    for ref in refs:
        if len(ref) >= 3 and ref[0] in skip and isinstance(ref[1], int):
            if ref[1] + delta < 0:
                raise UnsupportedError(
                    f"a reference to node {ref[1]} of nested model {ref[0]!r} "
                    "points at the model's own construction node; the config "
                    "is inconsistent and cannot be migrated"
                )
            ref[1] += delta
            changed = True
    return changed


def nested_model_node_index(model_entry: Entry, run: _Run) -> None:
    """References to nested models' calls renumbered from 0.

    Bridges tf.keras >= 2.4 / tf_keras (which number a nested model's calls
    from 1, see ``_skips_first_node``) to Keras 3 (from 0).
    """
    if run.form == 2 and model_entry.get("class_name") == "Functional":
        if _shift_nested_refs(model_entry, -1):
            run.note(nested_model_node_index)


def nested_model_node_offset(model_entry: Entry, run: _Run) -> None:
    """References to nested models' calls renumbered from 1.

    Bridges Keras 3 (from 0) to tf_keras 2.x, which counts the nested model's
    construction node first; without it tf_keras waits forever for a node.
    """
    if model_entry.get("class_name") == "Functional":
        if _shift_nested_refs(model_entry, 1):
            run.note(nested_model_node_offset)


def _model_to_keras3(entry: Entry, run: _Run, shapes: Mapping[str, Any]) -> None:
    sequential_layer_list(entry, run)
    nested_model_node_index(entry, run)
    functional_class_name(entry, run)
    sequential_input_layer(entry, run)
    config = entry.get("config")
    if not isinstance(config, dict):
        raise UnsupportedError(
            f"model config of class {entry.get('class_name')!r} has no config "
            "mapping; it cannot be migrated"
        )
    layers = config.get("layers") or []
    if not isinstance(layers, list):
        raise UnsupportedError(
            f"model config of class {entry.get('class_name')!r} has 'layers' "
            f"{layers!r}, not a list; it cannot be migrated"
        )
    for layer in layers:
        _layer_to_keras3(layer, run, shapes)
    if entry.get("class_name") == "Functional":
        for key in ("input_layers", "output_layers"):
            refs = config.get(key)
            if isinstance(refs, list) and len(refs) == 1 and isinstance(refs[0], list):
                # Keras 3 writes a single input or output unwrapped.
                config[key] = refs[0]
    object_modules(entry, run)
    if entry.get("class_name") == "Functional":
        entry["registered_name"] = "Functional"


def _layer_to_keras3(entry: Entry, run: _Run, shapes: Mapping[str, Any]) -> None:
    if entry.get("class_name") in MODEL_CLASSES:
        inbound = entry.get("inbound_nodes")
        _model_to_keras3(entry, run, shapes)
        if inbound is not None:
            node_form_keras3(entry, run, shapes)
        dtype_policy(entry, run)
        return
    if not isinstance(entry.get("config"), dict):
        raise UnsupportedError(
            f"layer of class {entry.get('class_name')!r} has config "
            f"{str(entry.get('config'))[:80]!r}, not a mapping; it cannot be "
            "migrated"
        )
    for rule in KERAS3_LAYER_RULES:
        rule(entry, run)
    node_form_keras3(entry, run, shapes)
    config = entry.get("config")
    if isinstance(config, dict):
        for key in WRAPPER_KEYS:
            inner = config.get(key)
            if isinstance(inner, dict) and "class_name" in inner:
                _layer_to_keras3(inner, run, shapes)


# ---------------------------------------------------------------------------
# Keras 3 -> 2 (tf_keras) rules


def node_form_keras2(entry: Entry, run: _Run) -> None:
    """Keras 3 ``{"args", "kwargs"}`` nodes to nested ``inbound_nodes`` lists.

    Bridges Keras 3 to tf.keras/tf_keras 2.x (``[[[name, node, tensor,
    kwargs]]]``). A node whose call takes more than one positional tensor
    argument, or tensors in its keyword arguments, has no Keras 2 form and is
    refused.
    """
    nodes = entry.get("inbound_nodes")
    if not isinstance(nodes, list) or not any(isinstance(n, dict) for n in nodes):
        return
    new_nodes = []
    for node in nodes:
        if not isinstance(node, dict):
            new_nodes.append(node)
            continue
        args = list(node.get("args") or [])
        kwargs = {k: v for k, v in (node.get("kwargs") or {}).items() if v is not None}
        names = _CALL_ARGUMENTS.get(str(entry.get("class_name")), ())
        if 1 < len(args) <= len(names):
            # mha(query, value): tf_keras records value= as a keyword.
            kwargs.update(zip(names[1:], args[1:]))
            args = args[:1]
        kwargs = {k: _history(v) or v for k, v in kwargs.items()}
        if len(args) != 1 or _has_keras_tensor(kwargs):
            raise UnsupportedError(
                f"layer {entry.get('name')!r} is called with "
                f"{len(args)} positional arguments or tensor keyword arguments, "
                "which the Keras 2 node form cannot express"
            )
        first = args[0]
        tensors = first if isinstance(first, list) else [first]
        refs = []
        for tensor in tensors:
            history = _history(tensor)
            if history is None:
                raise UnsupportedError(
                    f"layer {entry.get('name')!r} takes an input that is not a "
                    f"layer output ({str(tensor)[:80]}); Keras 2 cannot express it"
                )
            refs.append([*history, kwargs])
        new_nodes.append(refs)
    entry["inbound_nodes"] = new_nodes
    run.note(node_form_keras2)


# The names of a call's positional tensor arguments, where Keras 2 can take
# all but the first as keywords, each a [layer, node, tensor] reference.
_CALL_ARGUMENTS = {"MultiHeadAttention": ("query", "value", "key")}


def _history(tensor: Any) -> list[Any] | None:
    if isinstance(tensor, dict) and tensor.get("class_name") == "__keras_tensor__":
        history = (tensor.get("config") or {}).get("keras_history")
        if isinstance(history, list) and len(history) == 3:
            return list(history)
    return None


def _has_keras_tensor(value: Any) -> bool:
    if isinstance(value, dict):
        if value.get("class_name") == "__keras_tensor__":
            return True
        return any(_has_keras_tensor(v) for v in value.values())
    if isinstance(value, list):
        return any(_has_keras_tensor(v) for v in value)
    return False


def plain_dtype(entry: Entry, run: _Run) -> None:
    """Keras 3 ``DTypePolicy`` objects to plain dtype strings.

    Bridges Keras 3 to tf_keras 2.x; a mixed policy becomes tf_keras's
    ``Policy`` object.
    """
    config = entry.get("config")
    if not isinstance(config, dict):
        return
    dtype = config.get("dtype")
    if isinstance(dtype, Mapping) and "DTypePolicy" in str(dtype.get("class_name")):
        name = (dtype.get("config") or {}).get("name", "float32")
        if name.startswith("mixed_"):
            config["dtype"] = {"class_name": "Policy", "config": {"name": name}}
        else:
            config["dtype"] = name
        run.note(plain_dtype)


def lambda_function_keras2(entry: Entry, run: _Run) -> None:
    """A Keras 3 Lambda's ``__lambda__`` record to tf_keras's
    ``function: [code, defaults, closure]`` with ``function_type: "lambda"``.

    Bridges Keras 3 to tf_keras 2.x (``layers/core/lambda_layer.py``
    ``get_config``). Only the stored fields move; nothing is decoded.
    """
    config = entry.get("config")
    if entry.get("class_name") != "Lambda" or not isinstance(config, dict):
        return
    for key, type_key, module_key in (
        ("function", "function_type", "module"),
        ("output_shape", "output_shape_type", "output_shape_module"),
        ("mask", "mask_type", "mask_module"),
    ):
        value = config.get(key)
        if isinstance(value, dict) and value.get("class_name") == "__lambda__":
            inner = value.get("config") or {}
            config[key] = [
                inner.get("code"),
                inner.get("defaults"),
                inner.get("closure"),
            ]
            config[type_key] = "lambda"
            config[module_key] = "__main__"
        elif key != "mask" or key in config:
            if isinstance(value, dict):
                raise UnsupportedError(
                    f"Lambda layer {config.get('name')!r} has a {key} of class "
                    f"{value.get('class_name')!r}, which tf_keras cannot load"
                )
            config.setdefault(key, None)
            config[type_key] = "raw"
            config[module_key] = None
    run.note(lambda_function_keras2)


def batch_input_shape(entry: Entry, run: _Run) -> None:
    """InputLayer ``batch_shape`` to ``batch_input_shape``.

    Bridges Keras 3 to tf_keras 2.x, whose InputLayer reads
    ``batch_input_shape``.
    """
    config = entry.get("config")
    if entry.get("class_name") == "InputLayer" and isinstance(config, dict):
        if "batch_shape" in config:
            config["batch_input_shape"] = config.pop("batch_shape")
            config.setdefault("ragged", False)
            run.note(batch_input_shape)


def elementwise_ops_keras2(entry: Entry, run: _Run) -> None:
    """Keras 3 ``x + y`` (an ``Add`` op of ``keras.src.ops.numpy``) as tf_keras's
    ``Add`` layer on ``[x, y]``; likewise Subtract, Multiply, Maximum, Minimum.

    Keras 3 records an operator on two Keras tensors as an op called with two
    positional tensors (its ConvNeXt has 18 of them), which the Keras 2 node
    form cannot hold; the merge layer of the same name computes the same.
    """
    if not _is_op_call(entry):
        return  # a layer, or an op with a constant operand
    for node in entry["inbound_nodes"]:
        node["args"] = [node["args"]]
    entry["module"] = "keras.layers"
    entry.pop("registered_name", None)
    run.note(elementwise_ops_keras2)


_ELEMENTWISE_OPS = frozenset({"Add", "Subtract", "Multiply", "Maximum", "Minimum"})


def _is_op_call(entry: Mapping[str, Any]) -> bool:
    """An elementwise Keras 3 op on two tensors, known by its call: Keras 3's
    legacy .h5 configs name no module, and an Add layer always takes one list
    of tensors where the op takes two positional ones."""
    nodes = entry.get("inbound_nodes")
    if entry.get("class_name") not in _ELEMENTWISE_OPS or not nodes:
        return False
    for node in nodes:
        args = node.get("args") if isinstance(node, dict) else None
        if (
            not isinstance(args, list)
            or len(args) != 2
            or not all(_history(a) for a in args)
            or (node.get("kwargs") if isinstance(node, dict) else True)
        ):
            return False
    return True


def strip_keras3_keys(entry: Entry, run: _Run) -> None:
    """``module``, ``registered_name``, ``build_config`` removed.

    Bridges Keras 3 to tf_keras 2.x legacy HDF5, whose functional layer
    entries carry only ``class_name``, ``config``, ``name`` and
    ``inbound_nodes``.
    """
    changed = False
    for key in ("module", "registered_name", "build_config", "compile_config"):
        if key in entry:
            entry.pop(key)
            changed = True
    config = entry.get("config")
    if isinstance(config, dict):
        for value in config.values():
            if isinstance(value, dict) and "class_name" in value:
                for key in ("module", "registered_name", "shared_object_id"):
                    if key in value:
                        value.pop(key)
                        changed = True
    if changed:
        run.note(strip_keras3_keys)


# Arguments Keras 3.15 writes that tf_keras 2.21 constructors refuse, found by
# loading Keras 3.15.1 configs in tf_keras 2.21; dropped only at their default.
_KERAS2_REJECTS: dict[str, Any] = {
    "lora_rank": None,
    "lora_alpha": None,
    "quantization_config": None,
    "seed": None,
    "use_cudnn": "auto",
    "optional": False,
    "input_axes": None,
    "output_axes": None,
    "synchronized": False,
    "rms_scaling": False,
    # MultiHeadAttention (Keras 3.15).
    "use_gate": False,
    "sliding_window": None,
    "flash_attention": None,
}


def drop_keras3_arguments(entry: Entry, run: _Run) -> None:
    """Arguments Keras 3 added that tf_keras refuses (``lora_rank``, ``seed``...).

    Bridges Keras 3 to tf_keras 2.x. Only default values are dropped; any
    other value is refused, naming it.
    """
    config = entry.get("config")
    if not isinstance(config, dict):
        return
    changed = _drop_defaults(config, entry)
    for value in config.values():
        if isinstance(value, dict) and isinstance(value.get("config"), dict):
            changed = _drop_defaults(value["config"], entry) or changed
    if entry.get("class_name") in ("LSTM", "GRU", "SimpleRNN"):
        config.setdefault("time_major", False)
    if changed:
        run.note(drop_keras3_arguments)


def _drop_defaults(config: dict[str, Any], entry: Entry) -> bool:
    changed = False
    for key, default in _KERAS2_REJECTS.items():
        if key not in config:
            continue
        if config[key] != default and not (
            key == "seed" and entry.get("class_name") not in ("Dropout",)
        ):
            raise UnsupportedError(
                f"layer {entry.get('config', {}).get('name')!r} sets {key}="
                f"{config[key]!r}, a Keras 3 argument tf_keras does not have; "
                "only its default can be down-levelled"
            )
        if key == "seed" and entry.get("class_name") == "Dropout":
            continue
        config.pop(key)
        changed = True
    return changed


def attention_shapes_keras2(entry: Entry, run: _Run) -> None:
    """``query_shape``, ``value_shape`` and ``key_shape`` on MultiHeadAttention.

    tf_keras's ``MultiHeadAttention.from_config`` pops all three (a KeyError
    without them) and builds the layer from them; they are the shapes of the
    first call's tensors, which Keras 3 records on its nodes. An unknown one
    is null, and tf_keras then builds the layer on its first call.
    """
    config = entry.get("config")
    if (
        entry.get("class_name") != "MultiHeadAttention"
        or not isinstance(config, dict)
        or "query_shape" in config
    ):
        return
    nodes = entry.get("inbound_nodes") or [{}]
    node = nodes[0] if isinstance(nodes[0], dict) else {}
    names = _CALL_ARGUMENTS["MultiHeadAttention"]
    tensors = dict(zip(names, node.get("args") or []))
    tensors.update((k, v) for k, v in (node.get("kwargs") or {}).items() if k in names)
    shapes = {name: _recorded_shape(t) for name, t in tensors.items()}
    config["query_shape"] = shapes.get("query")
    config["value_shape"] = shapes.get("value")
    config["key_shape"] = shapes.get("key") or shapes.get("value")
    run.note(attention_shapes_keras2)


def _recorded_shape(tensor: Any) -> Any:
    if isinstance(tensor, dict) and tensor.get("class_name") == "__keras_tensor__":
        return (tensor.get("config") or {}).get("shape")
    return None


KERAS2_LAYER_RULES: tuple[Callable[[Entry, _Run], None], ...] = (
    lambda_function_keras2,
    plain_dtype,
    batch_input_shape,
    drop_keras3_arguments,
    elementwise_ops_keras2,
    strip_keras3_keys,
    attention_shapes_keras2,
    node_form_keras2,
)


def to_keras2(config: Mapping[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """A model config of any Keras version in the tf_keras 2.x legacy HDF5 form."""
    entry, run3 = to_keras3(config)
    run = _Run()
    _model_to_keras2(entry, run)
    return entry, [r for r in run3 if r.startswith("keras1")] + run.applied


def _model_to_keras2(entry: Entry, run: _Run) -> None:
    config = entry["config"]
    for layer in config.get("layers") or []:
        if layer.get("class_name") in MODEL_CLASSES:
            _model_to_keras2(layer, run)
        else:
            _layer_to_keras2(layer, run)
    if entry.get("class_name") == "Functional":
        for key in ("input_layers", "output_layers"):
            refs = config.get(key)
            if isinstance(refs, list) and refs and not isinstance(refs[0], list):
                config[key] = [refs]
    for rule in (plain_dtype, strip_keras3_keys, node_form_keras2):
        rule(entry, run)
    nested_model_node_offset(entry, run)


def _layer_to_keras2(entry: Entry, run: _Run) -> None:
    for rule in KERAS2_LAYER_RULES:
        rule(entry, run)
    config = entry.get("config")
    if isinstance(config, dict):
        for key in WRAPPER_KEYS:
            inner = config.get(key)
            if isinstance(inner, dict) and "class_name" in inner:
                _layer_to_keras2(inner, run)


# ---------------------------------------------------------------------------
# Walking layers in a config, with their weight-owning paths


@dataclass(frozen=True)
class LayerEntry:
    """A layer of a (migrated) config with the path of its canonical names."""

    prefix: str  # canonical tensor-name prefix, e.g. "outer/dense"
    entry: Mapping[str, Any]

    @property
    def class_name(self) -> str:
        return str(self.entry.get("class_name", ""))

    @property
    def config(self) -> Mapping[str, Any]:
        config = self.entry.get("config")
        return config if isinstance(config, Mapping) else {}


def iter_layers(
    model_entry: Mapping[str, Any], prefix: str = ""
) -> Iterator[LayerEntry]:
    """Every non-model layer of a model config, nested models flattened."""
    config = model_entry.get("config")
    layers = config.get("layers") if isinstance(config, Mapping) else config
    if not isinstance(layers, list):
        return  # a subclassed model (or a damaged config) lists no layers
    for layer in layers:
        if not isinstance(layer, Mapping):
            continue
        layer_config = layer.get("config")
        if isinstance(layer_config, Mapping) and layer_config.get("name"):
            name = layer_config["name"]
        else:
            name = layer.get("name")
        path = f"{prefix}{name}"
        if layer.get("class_name") in MODEL_CLASSES:
            yield from iter_layers(layer, f"{path}/")
        else:
            yield LayerEntry(path, layer)


def layer_tensors(model: Model, prefix: str) -> list[Tensor]:
    """The non-optimizer tensors named ``prefix/...`` in model order."""
    return list(_prefix_index(model.tensors).get(prefix, ()))


# Callers ask for every layer of a model in turn; scanning all tensors for
# each made a 400-layer DenseNet take 0.15 s in this function alone. The
# index of the last tensor tuple asked about is kept (tuples are immutable,
# so it cannot go stale).
_LAST_INDEX: tuple[tuple[Tensor, ...], dict[str, list[Tensor]]] | None = None


def _prefix_index(tensors: tuple[Tensor, ...]) -> dict[str, list[Tensor]]:
    """Every name prefix ending at a ``/`` -> the tensors under it."""
    global _LAST_INDEX
    if _LAST_INDEX is not None and _LAST_INDEX[0] is tensors:
        return _LAST_INDEX[1]
    index: dict[str, list[Tensor]] = {}
    for tensor in tensors:
        if tensor.role is Role.OPTIMIZER:
            continue
        parts = tensor.name.split("/")
        for end in range(1, len(parts)):
            index.setdefault("/".join(parts[:end]), []).append(tensor)
    _LAST_INDEX = (tensors, index)
    return index


# ---------------------------------------------------------------------------
# Weight rules (Keras 1 -> 2 layouts)


def _derived(
    tensor: Tensor,
    name: str,
    fn: Callable[[np.ndarray], np.ndarray],
    shape: tuple[int, ...],
) -> Tensor:
    def compute() -> np.ndarray:
        return np.ascontiguousarray(fn(tensor.read()))

    return tensor.replace(name=name, shape=shape, source=CallableSource(compute))


def _concat(parts: list[Tensor], order: list[int], name: str) -> Tensor:
    chosen = [parts[i] for i in order]
    shape = list(chosen[0].shape)
    shape[-1] = sum(t.shape[-1] for t in chosen)

    def compute() -> np.ndarray:
        return np.concatenate([t.read() for t in chosen], axis=-1)

    return chosen[0].replace(
        name=name,
        shape=tuple(shape),
        source=CallableSource(compute),
        source_names=tuple(n for t in chosen for n in (t.source_names or (t.name,))),
    )


def keras1_weight_names(
    layer: LayerEntry, tensors: list[Tensor], run: _Run
) -> list[Tensor]:
    """Keras 1 weight names (``W``, ``b``, ``gamma``, ``running_mean``...)
    become the Keras 2 names of the migrated layer, in order.

    Bridges Keras 1.x to Keras >= 2.0: Keras 1.2 named a Dense's weights
    ``dense_1_W`` and ``dense_1_b`` where Keras 2 has ``kernel`` and
    ``bias``, and Keras 2's loader took them by position
    (``preprocess_weights_for_loading``). Only the names change, never the
    values; a layer whose weight count does not match what its migrated
    config holds keeps its names.
    """
    if run.form != 1:
        return tensors
    from .keras_config import layer_weight_names

    try:
        wanted = layer_weight_names(layer.entry, form=3)
    except ModelconvError:
        return tensors
    if len(wanted) != len(tensors):
        return tensors
    names = [f"{layer.prefix}/{short}" for short in wanted]
    if names == [t.name for t in tensors]:
        return tensors
    run.note(keras1_weight_names)
    return [t.replace(name=name) for t, name in zip(tensors, names)]


def keras1_recurrent_weights(
    layer: LayerEntry, tensors: list[Tensor], run: _Run
) -> list[Tensor]:
    """Keras 1 per-gate LSTM (12 arrays) and GRU (9 arrays) weights, merged.

    Bridges Keras 1.x to Keras >= 2.0. Keras 1.2 stored LSTM weights as
    W_i, U_i, b_i, W_c, U_c, b_c, W_f, U_f, b_f, W_o, U_o, b_o; Keras 2 holds
    kernel, recurrent_kernel and bias with gates in the order i, f, c, o.
    GRU's W_z, U_z, b_z, W_r, U_r, b_r, W_h, U_h, b_h keep their z, r, h
    order (tf_keras 2.21 ``preprocess_weights_for_loading``). A Bidirectional
    wrapper's two directions are merged each on their own.
    """
    if layer.class_name == "Bidirectional":
        # Each direction is a sub-layer "prefix/<direction name>/..."; merge
        # each group on its own and keep the order of the groups.
        inner = layer.config.get("layer") or {}
        groups: dict[str, list[Tensor]] = {}
        for tensor in tensors:
            sub = tensor.name[len(layer.prefix) + 1 :].split("/", 1)[0]
            groups.setdefault(sub, []).append(tensor)
        out: list[Tensor] = []
        for sub, mine in groups.items():
            entry = LayerEntry(f"{layer.prefix}/{sub}", inner)
            out.extend(keras1_recurrent_weights(entry, mine, run))
        if len(out) == len(tensors) and all(a is b for a, b in zip(out, tensors)):
            return tensors
        return out
    cls = layer.class_name
    orders: tuple[list[int], ...]
    if cls in ("LSTM", "ConvLSTM2D") and len(tensors) == 12:
        orders = ([0, 6, 3, 9], [1, 7, 4, 10], [2, 8, 5, 11])
    elif cls == "GRU" and len(tensors) == 9:
        orders = ([0, 3, 6], [1, 4, 7], [2, 5, 8])
    else:
        return tensors
    names = ("kernel", "recurrent_kernel", "bias")
    run.note(keras1_recurrent_weights)
    return [
        _concat(tensors, order, f"{layer.prefix}/{short}")
        for order, short in zip(orders, names)
    ]


def channels_first_kernels(
    layer: LayerEntry, tensors: list[Tensor], run: _Run, original: Mapping[str, Any]
) -> list[Tensor]:
    """Keras 1 ``th`` (channels_first) convolution kernels, transposed.

    Bridges Keras 1.x to Keras >= 2.0: Keras 1 with ``dim_ordering="th"``
    stored Conv2D kernels as (filters, in, rows, cols), Keras 2 as (rows,
    cols, in, filters) (tf_keras 2.21 ``preprocess_weights_for_loading``).
    """
    if original.get("dim_ordering") != "th" or not tensors:
        return tensors
    perms = {
        "Conv2D": (2, 3, 1, 0),
        "Conv2DTranspose": (2, 3, 0, 1),
        "Conv3D": (2, 3, 4, 1, 0),
    }
    perm = perms.get(layer.class_name)
    if perm is None:
        return tensors
    kernel = tensors[0]
    if len(kernel.shape) != len(perm):
        return tensors
    shape = tuple(kernel.shape[i] for i in perm)
    run.note(channels_first_kernels)
    new = _derived(kernel, kernel.name, lambda a: np.transpose(a, perm), shape)
    return [new, *tensors[1:]]


_CONV_CLASSES = frozenset(
    {"Conv1D", "Conv2D", "Conv3D", "Conv2DTranspose", "ConvLSTM2D"}
)


def theano_kernel_flip(
    layer: LayerEntry, tensors: list[Tensor], run: _Run, backend: str | None
) -> list[Tensor]:
    """Convolution kernels trained with Theano, flipped along spatial axes.

    Bridges Keras 1.x/2.x on Theano (which convolves) to TensorFlow-backed
    Keras (which correlates): Keras 2.2-2.3 ``engine/saving.py``
    ``_need_convert_kernel`` applied ``conv_utils.convert_kernel``, which
    reverses every axis but the last two. Files without a ``backend``
    attribute (Keras 1) are not flipped, as Keras 2 did not flip them.
    """
    if backend != "theano" or layer.class_name not in _CONV_CLASSES or not tensors:
        return tensors
    count = 2 if layer.class_name == "ConvLSTM2D" else 1
    out = list(tensors)
    for i in range(min(count, len(out))):
        kernel = out[i]
        spatial = tuple(range(len(kernel.shape) - 2))
        flip = functools.partial(np.flip, axis=spatial)
        out[i] = _derived(kernel, kernel.name, flip, kernel.shape)
    run.note(theano_kernel_flip)
    return out


# ---------------------------------------------------------------------------
# Model-level entry points


def _original_layer_configs(config: Mapping[str, Any]) -> dict[str, Mapping[str, Any]]:
    return {layer.prefix: layer.config for layer in iter_layers(config)}


def _shapes(architecture: Architecture) -> dict[str, Any]:
    return {
        layer.name: layer.output_shape
        for layer in architecture.layers
        if layer.output_shape is not None
    }


def migrate_keras3(model: Model) -> Model:
    """The model with its Keras config in the Keras 3 form and weights to match."""
    arch = model.architecture
    if arch is None or arch.framework != "keras":
        return model
    model = slash_free_layer_names(model)
    arch = model.architecture
    assert arch is not None
    original = _original_layer_configs(arch.config)
    new_config, applied = to_keras3(arch.config, _shapes(arch))
    run = _Run(list(applied), form=arch.form or 2)
    backend = model.metadata.get("backend")
    tensors = _migrate_tensors(model, new_config, original, run, backend)
    return _with_config(model, new_config, tensors, run.applied)


def slash_free_layer_names(model: Model) -> Model:
    """Layer names with "/" renamed with "_" (``conv1/conv`` -> ``conv1_conv``).

    tf.keras 2.x DenseNet names its layers ``conv1/conv``; Keras 3 refuses a
    "/" in a layer name, and its own DenseNet says ``conv1_conv``. The names
    change in the layer entries, in every node reference to them and in the
    tensors' canonical names.
    """
    arch = model.architecture
    assert arch is not None
    renames: dict[str, str] = {}
    for layer in iter_layers(arch.config):
        name = layer.config.get("name")
        if isinstance(name, str) and "/" in name:
            renames[name] = name.replace("/", "_")
    if not renames:
        return model
    taken = {layer.config.get("name") for layer in iter_layers(arch.config)}
    clash = sorted(new for new in renames.values() if new in taken)
    if clash:
        raise UnsupportedError(
            f"layer names {clash[:3]} are taken, so the layers Keras 3 needs "
            "renamed (it refuses '/' in a layer name) have no free name; rename "
            "the layers in the source model"
        )
    config = _renamed_refs(copy.deepcopy(dict(arch.config)), renames)
    tensors = tuple(
        t.replace(name=_renamed_tensor(t.name, renames)) for t in model.tensors
    )
    return _with_config(model, config, tensors, ["slash_free_layer_names"])


def _renamed_refs(value: Any, renames: Mapping[str, str]) -> Any:
    """``value`` with layer names in ``name`` keys and node references renamed.

    Node references are ``[name, node, tensor, ...]`` lists (Keras 2 nodes,
    Keras 3 ``keras_history``, ``input_layers``); an entry names itself in
    ``name`` and ``config.name``.
    """
    if isinstance(value, dict):
        out = {k: _renamed_refs(v, renames) for k, v in value.items()}
        if isinstance(out.get("name"), str):
            out["name"] = renames.get(out["name"], out["name"])
        return out
    if isinstance(value, list):
        out_list = [_renamed_refs(v, renames) for v in value]
        if (
            len(out_list) >= 3
            and isinstance(out_list[0], str)
            and isinstance(out_list[1], int)
        ):
            out_list[0] = renames.get(out_list[0], out_list[0])
        return out_list
    return value


def _renamed_tensor(name: str, renames: Mapping[str, str]) -> str:
    parts = name.split("/")
    for old in sorted(renames, key=len, reverse=True):
        width = old.count("/") + 1
        for i in range(len(parts) - width):
            if "/".join(parts[i : i + width]) == old:
                parts[i : i + width] = [renames[old]]
                break
    return "/".join(parts)


def _migrate_tensors(
    model: Model,
    new_config: Mapping[str, Any],
    original: Mapping[str, Mapping[str, Any]],
    run: _Run,
    backend: Any,
) -> tuple[Tensor, ...]:
    replaced: dict[str, list[Tensor]] = {}
    for layer in iter_layers(new_config):
        owned = layer_tensors(model, layer.prefix)
        if not owned:
            continue
        new = keras1_recurrent_weights(layer, owned, run)
        new = channels_first_kernels(layer, new, run, original.get(layer.prefix, {}))
        if theano_kernel_flip.__name__ not in model.migrations:
            # Flipping is not idempotent: a model migrated once keeps the
            # rule in its migrations and is never flipped again.
            new = theano_kernel_flip(
                layer, new, run, backend if isinstance(backend, str) else None
            )
        new = keras1_weight_names(layer, new, run)
        if new is not owned:
            if not new:
                raise InternalError(
                    f"migrating layer {layer.prefix!r} lost all its tensors; "
                    "this is a modelconv bug, please report it"
                )
            replaced[layer.prefix] = new
    if not replaced:
        return model.tensors
    out: list[Tensor] = []
    emitted: set[str] = set()
    for tensor in model.tensors:
        prefix = next((p for p in replaced if tensor.name.startswith(f"{p}/")), None)
        if prefix is None:
            out.append(tensor)
        elif prefix not in emitted:
            out.extend(replaced[prefix])
            emitted.add(prefix)
    return tuple(out)


def _with_config(
    model: Model,
    config: Mapping[str, Any],
    tensors: tuple[Tensor, ...],
    applied: list[str],
) -> Model:
    arch = model.architecture
    assert arch is not None
    try:
        from .keras_config import build_architecture

        new_arch = build_architecture(config)
    except Exception:  # noqa: BLE001 - a derived view; keep the config regardless
        new_arch = Architecture(framework="keras", config=config, form=3)
    migrations = tuple(dict.fromkeys([*model.migrations, *applied]))
    return model.replace(architecture=new_arch, tensors=tensors, migrations=migrations)


def migrate_keras2(model: Model) -> Model:
    """The model with its config in the tf_keras 2.x form and Keras 2 names."""
    migrated = migrate_keras3(model)
    arch = migrated.architecture
    if arch is None:
        return migrated
    config, applied = to_keras2(arch.config)
    tensors = tuple(_keras2_names(migrated, config))
    if any(t.dtype == "bfloat16" for t in migrated.tensors):
        applied.append(bfloat16_as_float32.__name__)
    metadata = dict(migrated.metadata)
    metadata["producer"] = {"name": "keras", "version": KERAS2_VERSION}
    metadata["keras_version"] = KERAS2_VERSION
    metadata["backend"] = "tensorflow"
    # The source_names are now tf_keras weight names, not the legacy HDF5
    # "<layer group>/<weight name>" paths the HDF5 writer reproduces for files
    # it read; say so, so that it groups the weights by canonical layer name.
    metadata["source"] = {"format": "tf_keras", "flavour": "weight-names"}
    training = metadata.pop("training_config", None)
    warnings = list(migrated.warnings)
    dropped = migrated.by_role(Role.OPTIMIZER)
    if dropped:
        warnings.append(
            f"{len(dropped)} Keras 3 optimizer state tensors were left out: "
            "tf_keras lays out optimizer state differently"
        )
    if training is not None and _is_keras3_training(migrated, training):
        warnings.append(
            "the Keras 3 training configuration was left out: tf_keras reads a "
            "different optimizer form; compile the model again after loading"
        )
    else:
        if training is not None:
            metadata["training_config"] = training
    out = _with_config(migrated, config, tensors, applied)
    return out.replace(metadata=metadata, warnings=tuple(warnings))


def _is_keras3_training(model: Model, training: Any) -> bool:
    text = str(training)
    return "keras.optimizers" in text or "registered_name" in text


def _keras2_names(model: Model, config: Mapping[str, Any]) -> Iterator[Tensor]:
    """Tensors with tf_keras weight names as ``source_names``.

    tf_keras 2.21 names a weight after its variable: ``dense/kernel:0``,
    ``lstm/lstm_cell/kernel:0``, ``bidirectional/forward_gru/gru_cell/bias:0``,
    and a nested model's ``sub_dense/kernel:0`` (kept inside the ``sub_model``
    group). The tf.js writer uses these names for its manifest.
    """
    entries = {layer.prefix: layer for layer in iter_layers(config)}
    for tensor in model.tensors:
        if tensor.role is Role.OPTIMIZER:
            continue
        name = _keras2_weight_name(tensor.name, entries)
        yield _keras2_dtype(tensor.replace(source_names=(name,)))


def _keras2_weight_name(name: str, entries: Mapping[str, LayerEntry]) -> str:
    owner = _owner(name, entries)
    short = name.rsplit("/", 1)[-1]
    if owner is None:
        return f"{name}:0"
    inner = name[len(owner.prefix) + 1 :]
    base = owner.prefix.rsplit("/", 1)[-1]
    cell = RNN_CELLS.get(owner.class_name)
    if cell is not None and "/" not in inner:
        return f"{base}/{cell}/{short}:0"
    if owner.class_name == "Bidirectional" and "/" in inner:
        direction = inner.split("/", 1)[0]
        wrapped = owner.config.get("layer") or {}
        cell = RNN_CELLS.get(str(wrapped.get("class_name")))
        if cell:
            return f"{base}/{direction}/{cell}/{short}:0"
    return f"{base}/{inner}:0"


def bfloat16_as_float32(tensor: Tensor) -> Tensor:
    """A bfloat16 tensor stored as float32 for tf_keras.

    Bridges Keras 3 (which stores bfloat16 as 2-byte opaque HDF5 values) to
    tf_keras 2.21, whose legacy HDF5 loader converts stored values with
    ``np.asarray(value, dtype)`` and has no cast from opaque bytes. Every
    bfloat16 value is exactly representable in float32, and tf_keras casts
    it back to the layer's bfloat16 variable exactly.
    """

    def compute() -> np.ndarray:
        return tensor.read().astype(np.float32)

    return tensor.replace(dtype="float32", source=CallableSource(compute))


def _keras2_dtype(tensor: Tensor) -> Tensor:
    if tensor.dtype == "bfloat16":
        return bfloat16_as_float32(tensor)
    return tensor


def _owner(name: str, entries: Mapping[str, LayerEntry]) -> LayerEntry | None:
    parts = name.split("/")
    for cut in range(len(parts) - 1, 0, -1):
        prefix = "/".join(parts[:cut])
        if prefix in entries:
            return entries[prefix]
    return None


def prepare(model: Model, options: Any = None) -> Model:
    """The model migrated to the Keras 3 form (the ``.keras`` target)."""
    return migrate_keras3(model)


def prepare_hdf5(model: Model, options: Any) -> Model:
    """The model migrated for ``--for keras2`` or ``--for keras3`` HDF5 output."""
    target = getattr(options, "target_keras", None)
    if target == "keras3":
        return migrate_keras3(model)
    if target == "keras2":
        return migrate_keras2(model)
    return model


def planned_migrations(model: Model) -> list[str]:
    """The rules that would apply to move ``model`` to Keras 3 (for inspect)."""
    if model.architecture is None or model.architecture.framework != "keras":
        return []
    return list(migrate_keras3(model).migrations[len(model.migrations) :])


__all__ = [
    "Layer",
    "LayerEntry",
    "iter_layers",
    "layer_tensors",
    "migrate_keras2",
    "migrate_keras3",
    "planned_migrations",
    "prepare",
    "prepare_hdf5",
    "to_keras2",
    "to_keras3",
]
