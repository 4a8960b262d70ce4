"""Keras model configs of every version: layers, edges, parameter counts.

A Keras model config is read as plain data and turned into the layers of an
:class:`~modelconv.model.Architecture`: each layer's inbound layers, the
canonical names of its weights, its parameter count (trainable and not) and
its output shape, inferred through the graph without Keras.

Three serialisation forms are recognised (``Architecture.form``):

1. Keras 1.x: Sequential as a bare list of layers, ``output_dim``,
   ``nb_filter``, ``border_mode``, ``dim_ordering``, ``Merge`` layers and
   inbound nodes of ``[name, node_index, tensor_index]``.
2. Keras 2.x and tf.keras / tf_keras 2.x: inbound nodes of
   ``[[name, node_index, tensor_index, kwargs], ...]``, ``batch_input_shape``.
3. Keras 3: inbound nodes ``{"args": [...], "kwargs": {...}}`` holding
   ``__keras_tensor__`` records with ``keras_history``, ``batch_shape``,
   ``DTypePolicy`` dtypes.

Weight order within a layer is the legacy HDF5 order, which both Keras 2 and
Keras 3 write: the layer's trainable weights, then its non-trainable ones,
each in variable-creation order (``_legacy_weights`` in both codebases). For a
plain layer this is its variable order; it differs only for nested models
that mix trainable and frozen layers.

Output shapes and the input widths that parameter counts need are inferred
through the graph; where Keras recorded them (Keras 3 ``__keras_tensor__``
shapes, ``build_config``), those records fill gaps. Nothing is guessed: an
unknown figure is None, and the totals are None when any layer's is.

The config is untrusted: every field is type-checked, and anything malformed
raises :class:`~modelconv.errors.InputError` naming the layer and the key.
Lambda bytecode is flagged, never decoded.

Limitations (each gives None, never a wrong figure):

- Output shapes of Lambda layers without a list ``output_shape``, tf_keras
  TF-op layers, custom and unknown classes are not inferred; a layer fed by
  them is counted only when Keras recorded its input shape.
- An input of unknown rank makes the next layer's count unknown even when
  the width it needs is known (Dense after Dense of unknown input).
- A shared layer whose calls produce different shapes reports None.
- Classes not modelled (EinsumDense, LocallyConnected, Keras 1 Highway and
  MaxoutDense, preprocessing layers with state other than Normalization)
  are reported with a warning and no count.
- Keras 3 ``keras.ops`` calls in a functional graph are layers here (they
  carry edges) with no weights and no inferred shape; Keras leaves them out
  of ``model.layers`` and of the weight files.
- Keras 1.2 LSTM and GRU saved with ``consume_less`` "cpu" or "mem" keep
  one weight per gate; they are named ``kernel_i``, ``recurrent_kernel_i``,
  ``bias_i`` ... in Keras 1.2's order (LSTM i, c, f, o; GRU z, r, h).
"""

from __future__ import annotations

import json
from collections import deque
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from math import prod
from typing import Any

from .errors import InputError, LimitExceededError
from .model import Architecture, Layer

# A shape is a list of dims (int, or None when unknown); a layer call reads
# and writes lists of shapes, where None stands for a shape not inferable.
Shape = list
Shapes = list[Any]

# Nested models and wrappers deeper than this are refused: real models nest a
# handful of levels, and the walkers recurse once per level.
MAX_NESTING = 64

# A dimension, unit count or kernel size above 2**40 is no real model's; the
# bound keeps products of hostile sizes from meaning anything.
MAX_DIM = 2**40

# Layers across all nesting levels of one config: real models have at most
# tens of thousands.
MAX_LAYERS = 1_000_000

# Layer calls evaluated for one config (shared layers and nested models are
# evaluated once per call): a bound on work for hostile graphs.
MAX_EVALUATIONS = 2_000_000

# Modules of Keras's own layer classes. Keras 3 writes ``keras.layers`` or
# ``keras.src...``; tf_keras 2.x also writes ``keras.layers``.
_KERAS_MODULES = ("keras", "keras.src", "tf_keras", "tensorflow.keras")

_MODEL_CLASSES = {"Sequential", "Functional", "Model"}


# --------------------------------------------------------------------------
# Small typed accessors: every read of a config field goes through these so
# that hostile values become one-line InputErrors.


def _fail(layer: str, key: str, value: Any, expected: str) -> InputError:
    shown = repr(value)
    if len(shown) > 80:
        shown = shown[:77] + "..."
    return InputError(
        f"Keras config: layer {layer!r}, key {key!r}: expected {expected}, "
        f"got {shown}; the model config is malformed"
    )


def _int(value: Any, layer: str, key: str, minimum: int = 0) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise _fail(layer, key, value, "an integer")
    if value < minimum or value > MAX_DIM:
        raise _fail(layer, key, value, f"an integer from {minimum} to 2**40")
    return value


def _get_int(
    cfg: Mapping[str, Any], layer: str, *keys: str, default: Any = None
) -> Any:
    for key in keys:
        if cfg.get(key) is not None:
            return _int(cfg[key], layer, key)
    return default


def _bool(cfg: Mapping[str, Any], layer: str, key: str, default: bool) -> bool:
    value = cfg.get(key, default)
    if value is None:
        return default
    if not isinstance(value, bool):
        # Keras 1 configs written by hand sometimes use 0/1.
        if isinstance(value, int) and value in (0, 1):
            return bool(value)
        raise _fail(layer, key, value, "true or false")
    return value


def _str(cfg: Mapping[str, Any], layer: str, key: str, default: Any = None) -> Any:
    value = cfg.get(key, default)
    if value is None:
        return default
    if not isinstance(value, str):
        raise _fail(layer, key, value, "a string")
    return value


def _tuple(
    cfg: Mapping[str, Any], layer: str, key: str, rank: int, default: Any = None
) -> tuple[int, ...] | None:
    """An int or a list of ``rank`` ints (kernel sizes, strides, dilations)."""
    value = cfg.get(key, default)
    if value is None:
        return None
    if isinstance(value, int) and not isinstance(value, bool):
        return (_int(value, layer, key),) * rank
    if isinstance(value, (list, tuple)) and len(value) == rank:
        return tuple(_int(v, layer, key) for v in value)
    raise _fail(layer, key, value, f"an integer or a list of {rank} integers")


def _shape(value: Any, layer: str, key: str) -> Shape:
    """A shape: a list of non-negative ints or None."""
    if not isinstance(value, (list, tuple)) or len(value) > 64:
        raise _fail(layer, key, value, "a list of dimensions")
    return [None if d is None else _int(d, layer, key) for d in value]


def _mapping(value: Any, layer: str, key: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise _fail(layer, key, value, "a mapping")
    return value


def _channels_first(cfg: Mapping[str, Any], layer: str) -> bool:
    fmt = _str(cfg, layer, "data_format")
    if fmt is None:
        # Keras 1.2 resolves "default" at construction, so configs hold
        # "th" (channels first) or "tf".
        fmt = {"th": "channels_first", "tf": "channels_last"}.get(
            _str(cfg, layer, "dim_ordering", "tf"), "channels_last"
        )
    if fmt not in ("channels_last", "channels_first"):
        raise _fail(layer, "data_format", fmt, "channels_last or channels_first")
    return fmt == "channels_first"


def _padding(cfg: Mapping[str, Any], layer: str) -> str:
    value = _str(cfg, layer, "padding") or _str(cfg, layer, "border_mode") or "valid"
    value = value.lower()
    if value not in ("valid", "same", "causal", "full"):
        raise _fail(layer, "padding", value, "valid, same or causal")
    return value


# --------------------------------------------------------------------------
# Weights and output shapes of one layer.


@dataclass(frozen=True)
class _Weight:
    name: str
    shape: tuple[int, ...] | None  # None: not inferable
    trainable: bool = True

    def prefixed(self, prefix: str, trainable: bool = True) -> _Weight:
        return _Weight(
            f"{prefix}/{self.name}", self.shape, self.trainable and trainable
        )


@dataclass
class _Ctx:
    """State shared while walking one config."""

    form: int
    warnings: list[str] = field(default_factory=list)
    seen: set[str] = field(default_factory=set)
    layer_count: int = 0
    evaluations: int = 0
    # Nested models are run once per distinct input shapes, and wrapped
    # models parsed once, so that shared nesting cannot blow up.
    runs: dict[Any, Any] = field(default_factory=dict)
    parsed: dict[int, Any] = field(default_factory=dict)

    def spend(self, layer: str) -> None:
        self.evaluations += 1
        if self.evaluations > MAX_EVALUATIONS:
            raise LimitExceededError(
                f"Keras config: evaluating layer {layer!r} exceeds "
                f"{MAX_EVALUATIONS} layer calls; the graph is implausibly large"
            )

    def warn(self, message: str) -> None:
        if message not in self.seen:
            self.seen.add(message)
            self.warnings.append(message)


def _dim(shape: Shape | None, axis: int) -> int | None:
    if shape is None or not -len(shape) <= axis < len(shape):
        return None
    return shape[axis]


def _w(name: str, *dims: int | None, trainable: bool = True) -> _Weight:
    if any(d is None for d in dims):
        return _Weight(name, None, trainable)
    return _Weight(name, tuple(int(d) for d in dims), trainable)  # type: ignore[arg-type]


def _conv_length(
    size: int | None, kernel: int, stride: int, padding: str, dilation: int
) -> int | None:
    if size is None:
        return None
    if stride == 0:
        return None
    span = (kernel - 1) * dilation + 1
    if padding in ("same", "causal"):
        return (size + stride - 1) // stride
    if padding == "full":
        return (size + span - 1 + stride - 1) // stride
    return max(0, (size - span) // stride + 1)


def _transpose_length(
    size: int | None,
    kernel: int,
    stride: int,
    padding: str,
    dilation: int,
    output_padding: int | None,
) -> int | None:
    if size is None:
        return None
    span = (kernel - 1) * dilation + 1
    if output_padding is None:
        if padding == "valid":
            return size * stride + max(span - stride, 0)
        return size * stride
    pad = span // 2 if padding == "same" else 0
    return (size - 1) * stride + span - 2 * pad + output_padding


def _spatial(
    shape: Shape | None, rank: int, channels_first: bool
) -> tuple[list[int | None], int | None] | None:
    """Spatial dims and channel count of a (batch, ..., channels) input."""
    if shape is None or len(shape) != rank + 2:
        return None
    if channels_first:
        return list(shape[2:]), shape[1]
    return list(shape[1:-1]), shape[-1]


def _assemble(
    batch: int | None, spatial: list[int | None], channels: int | None, first: bool
) -> Shape:
    return [batch, channels, *spatial] if first else [batch, *spatial, channels]


_CONV_RANK = {
    "Conv1D": 1, "Conv2D": 2, "Conv3D": 3,
    "Convolution1D": 1, "Convolution2D": 2, "Convolution3D": 3,
    "AtrousConvolution1D": 1, "AtrousConvolution2D": 2,
    "Conv1DTranspose": 1, "Conv2DTranspose": 2, "Conv3DTranspose": 3,
    "Deconvolution2D": 2, "Deconvolution3D": 3,
    "SeparableConv1D": 1, "SeparableConv2D": 2, "SeparableConvolution2D": 2,
    "DepthwiseConv1D": 1, "DepthwiseConv2D": 2,
}  # fmt: skip


def _conv_geometry(
    cls: str, cfg: Mapping[str, Any], name: str, rank: int
) -> tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...], str]:
    """(kernel, strides, dilation) of Keras 2/3 keys or their Keras 1 spellings."""
    kernel = _tuple(cfg, name, "kernel_size", rank)
    if kernel is None:
        # Keras 1.2: Convolution1D filter_length, Convolution2D nb_row/nb_col,
        # Convolution3D kernel_dim1..3.
        keys = {1: ("filter_length",), 2: ("nb_row", "nb_col")}.get(
            rank, ("kernel_dim1", "kernel_dim2", "kernel_dim3")
        )
        if not all(cfg.get(k) is not None for k in keys):
            raise _fail(name, "kernel_size", None, "kernel sizes")
        kernel = tuple(_int(cfg[k], name, k) for k in keys)
    strides = (
        _tuple(cfg, name, "strides", rank)
        or _tuple(cfg, name, "subsample", rank)
        or _tuple(cfg, name, "subsample_length", rank)
        or (1,) * rank
    )
    dilation = (
        _tuple(cfg, name, "dilation_rate", rank)
        or _tuple(cfg, name, "atrous_rate", rank)
        or (1,) * rank
    )
    return kernel, strides, dilation, _padding(cfg, name)


def _conv(
    cls: str,
    cfg: Mapping[str, Any],
    name: str,
    inputs: Shapes,
    form: int = 2,
) -> tuple[list[_Weight], Shapes | None]:
    rank = _CONV_RANK[cls]
    first = _channels_first(cfg, name)
    kernel, strides, dilation, padding = _conv_geometry(cls, cfg, name, rank)
    use_bias = _bool(cfg, name, "use_bias", _bool(cfg, name, "bias", True))
    x = inputs[0] if inputs else None
    geo = _spatial(x, rank, first)
    cin = geo[1] if geo else None
    filters = _get_int(cfg, name, "filters", "nb_filter")
    transpose = "Transpose" in cls or cls.startswith("Deconvolution")

    if cls.startswith("Depthwise"):
        mult = _get_int(cfg, name, "depth_multiplier", default=1)
        cout = None if cin is None else cin * mult
        # Keras 3 names the depthwise variable "kernel"
        # (base_depthwise_conv.py); Keras 1.2 and 2 "depthwise_kernel".
        short = "kernel" if form == 3 else "depthwise_kernel"
        weights = [_w(short, *kernel, cin, mult)]
        if use_bias:
            weights.append(_w("bias", cout))
    elif cls.startswith("Separable"):
        mult = _get_int(cfg, name, "depth_multiplier", default=1)
        if filters is None:
            raise _fail(name, "filters", None, "an integer")
        inner = None if cin is None else cin * mult
        cout = filters
        weights = [
            _w("depthwise_kernel", *kernel, cin, mult),
            _w("pointwise_kernel", *([1] * rank), inner, filters),
        ]
        if use_bias:
            weights.append(_w("bias", filters))
    else:
        if filters is None:
            raise _fail(name, "filters", None, "an integer")
        groups = _get_int(cfg, name, "groups", default=1)
        if groups < 1 or filters % groups:
            raise _fail(name, "groups", groups, "a divisor of filters")
        cout = filters
        if transpose:
            weights = [_w("kernel", *kernel, filters, cin)]
        else:
            per_group = None if cin is None or cin % groups else cin // groups
            weights = [_w("kernel", *kernel, per_group, filters)]
        if use_bias:
            weights.append(_w("bias", filters))

    if geo is None or x is None:
        return weights, None
    if transpose and cls == "Deconvolution2D" and cfg.get("output_shape") is not None:
        # Keras 1.2 Deconvolution2D carries its output shape, batch included.
        out = _shape(cfg["output_shape"], name, "output_shape")
        return weights, [[x[0], *out[1:]]]
    out_pad = _tuple(cfg, name, "output_padding", rank)
    spatial = []
    for i, size in enumerate(geo[0]):
        if transpose:
            spatial.append(
                _transpose_length(
                    size, kernel[i], strides[i], padding, dilation[i],
                    None if out_pad is None else out_pad[i],
                )
            )  # fmt: skip
        else:
            spatial.append(
                _conv_length(size, kernel[i], strides[i], padding, dilation[i])
            )
    return weights, [_assemble(x[0], spatial, cout, first)]


def _pool_rank(cls: str) -> int:
    return int(cls[-2])


def _pool(cls: str, cfg: Mapping[str, Any], name: str, inputs: Shapes) -> Shapes | None:
    rank = _pool_rank(cls)
    first = _channels_first(cfg, name)
    pool = (
        _tuple(cfg, name, "pool_size", rank)
        or _tuple(cfg, name, "pool_length", rank)  # Keras 1.2 pooling 1D
        or (2,) * rank
    )
    strides = (
        _tuple(cfg, name, "strides", rank) or _tuple(cfg, name, "stride", rank) or pool
    )
    padding = _padding(cfg, name)
    geo = _spatial(inputs[0] if inputs else None, rank, first)
    if geo is None:
        return None
    x = inputs[0]
    spatial = [
        _conv_length(size, pool[i], strides[i], padding, 1)
        for i, size in enumerate(geo[0])
    ]
    return [_assemble(x[0], spatial, geo[1], first)]


def _global_pool(
    cls: str, cfg: Mapping[str, Any], name: str, inputs: Shapes
) -> Shapes | None:
    rank = _pool_rank(cls)
    first = _channels_first(cfg, name)
    geo = _spatial(inputs[0] if inputs else None, rank, first)
    if geo is None:
        return None
    batch = inputs[0][0]
    if _bool(cfg, name, "keepdims", False):
        return [_assemble(batch, [1] * rank, geo[1], first)]
    return [[batch, geo[1]]]


def _reduce_axes(
    value: Any, shape: Shape | None, name: str, key: str
) -> list[int] | None:
    """Normalised axes (BatchNormalization, LayerNormalization)."""
    axes = value if isinstance(value, (list, tuple)) else [value]
    if shape is None:
        for a in axes:
            if isinstance(a, bool) or not isinstance(a, int):
                raise _fail(name, key, value, "an axis or a list of axes")
        return None
    result = []
    for a in axes:
        if isinstance(a, bool) or not isinstance(a, int):
            raise _fail(name, key, value, "an axis or a list of axes")
        if not -len(shape) <= a < len(shape):
            return None
        result.append(a % len(shape))
    return result


def _axes_size(cfg: Mapping[str, Any], name: str, x: Shape | None, default: Any) -> Any:
    """The shape of a per-axis weight: dims of ``x`` along the config's axes."""
    axes = _reduce_axes(cfg.get("axis", default), x, name, "axis")
    if axes is None or x is None:
        return None
    dims = [x[a] for a in axes]
    if any(d is None for d in dims):
        return None
    return dims


def _batch_norm(cfg: Mapping[str, Any], name: str, inputs: Shapes) -> list[_Weight]:
    x = inputs[0] if inputs else None
    dims = _axes_size(cfg, name, x, -1)
    # Keras 1.2 BatchNormalization always has gamma and beta and no flags.
    scale = _bool(cfg, name, "scale", True)
    center = _bool(cfg, name, "center", True)
    # Only the element count matters here: for several axes tf_keras keeps a
    # broadcastable shape, of the same size.
    shape = (prod(dims),) if dims else None
    weights = []
    if scale:
        weights.append(_Weight("gamma", shape))
    if center:
        weights.append(_Weight("beta", shape))
    weights.append(_Weight("moving_mean", shape, False))
    weights.append(_Weight("moving_variance", shape, False))
    if _bool(cfg, name, "renorm", False):
        # Batch renormalisation (tf_keras and Keras 3) adds three statistics.
        for extra in ("moving_stddev", "renorm_mean", "renorm_stddev"):
            weights.append(_Weight(extra, shape, False))
    return weights


def _layer_norm(cfg: Mapping[str, Any], name: str, inputs: Shapes) -> list[_Weight]:
    x = inputs[0] if inputs else None
    dims = _axes_size(cfg, name, x, -1)
    shape = tuple(dims) if dims else None
    if dims and len(dims) == 1:
        shape = (dims[0],)
    rms = _bool(cfg, name, "rms_scaling", False)
    weights = []
    # Keras 3: gamma when scale or rms_scaling; beta when center and not rms.
    if _bool(cfg, name, "scale", True) or rms:
        weights.append(_Weight("gamma", shape))
    if _bool(cfg, name, "center", True) and not rms:
        weights.append(_Weight("beta", shape))
    return weights


_RNN_GATES = {"SimpleRNN": 1, "LSTM": 4, "GRU": 3, "CuDNNLSTM": 4, "CuDNNGRU": 3}


def _rnn(
    cls: str, cfg: Mapping[str, Any], name: str, inputs: Shapes, ctx: _Ctx
) -> tuple[list[_Weight], Shapes | None]:
    units = _get_int(cfg, name, "units", "output_dim")
    if units is None:
        raise _fail(name, "units", cfg.get("units"), "an integer")
    gates = _RNN_GATES[cls]
    x = inputs[0] if inputs else None
    if x is None and ctx.form == 1 and cfg.get("input_dim") is not None:
        x = [
            None,
            _get_int(cfg, name, "input_length"),
            _int(cfg["input_dim"], name, "input_dim"),
        ]
    cin = _dim(x, -1) if x is not None and len(x) == 3 else None
    use_bias = _bool(cfg, name, "use_bias", True)

    if ctx.form == 1 and cls in ("LSTM", "GRU") and cfg.get("consume_less") != "gpu":
        # Keras 1.2 with consume_less "cpu" or "mem" keeps one weight per gate:
        # LSTM trainable_weights are i, c, f, o; GRU z, r, h (recurrent.py).
        order = "icfo" if cls == "LSTM" else "zrh"
        weights = []
        for g in order:
            weights += [
                _w(f"kernel_{g}", cin, units),
                _w(f"recurrent_kernel_{g}", units, units),
                _w(f"bias_{g}", units),
            ]
    else:
        weights = [
            _w("kernel", cin, gates * units),
            _w("recurrent_kernel", units, gates * units),
        ]
        if cls == "CuDNNLSTM" or cls == "CuDNNGRU":
            weights.append(_w("bias", 2 * gates * units))
        elif use_bias:
            # GRU reset_after (Keras 2.1.3 onwards) keeps separate input and
            # recurrent biases: shape (2, 3u). Every Keras 2 that knows it
            # writes it; where it is left out, the default is Keras 3's
            # (True) for a Keras 3 config and Keras 2's (False) otherwise.
            default = ctx.form == 3
            if cls == "GRU" and _bool(cfg, name, "reset_after", default):
                weights.append(_w("bias", 2, gates * units))
            else:
                weights.append(_w("bias", gates * units))

    if x is None or len(x) != 3:
        return weights, None
    time_major = _bool(cfg, name, "time_major", False)
    batch, steps = (x[1], x[0]) if time_major else (x[0], x[1])
    if _bool(cfg, name, "return_sequences", False):
        out = [steps, batch, units] if time_major else [batch, steps, units]
    else:
        out = [batch, units]
    outputs: Shapes = [out]
    if _bool(cfg, name, "return_state", False):
        states = 2 if gates == 4 else 1
        outputs += [[batch, units] for _ in range(states)]
    return weights, outputs


def _dense(
    cfg: Mapping[str, Any], name: str, inputs: Shapes, ctx: _Ctx
) -> tuple[list[_Weight], Shapes | None]:
    units = _get_int(cfg, name, "units", "output_dim")
    if units is None:
        raise _fail(name, "units", cfg.get("units"), "an integer")
    x = inputs[0] if inputs else None
    if x is None and cfg.get("input_dim") is not None:
        x = [None, _int(cfg["input_dim"], name, "input_dim")]
    cin = _dim(x, -1)
    weights = [_w("kernel", cin, units)]
    if _bool(cfg, name, "use_bias", _bool(cfg, name, "bias", True)):
        weights.append(_w("bias", units))
    if x is None or len(x) < 1:
        return weights, None
    return weights, [[*x[:-1], units]]


def _embedding(
    cfg: Mapping[str, Any], name: str, inputs: Shapes
) -> tuple[list[_Weight], Shapes | None]:
    vocab = _get_int(cfg, name, "input_dim")
    width = _get_int(cfg, name, "output_dim")
    if vocab is None or width is None:
        raise _fail(name, "input_dim", cfg.get("input_dim"), "input_dim and output_dim")
    weights = [_w("embeddings", vocab, width)]
    x = inputs[0] if inputs else None
    if x is None:
        length = _get_int(cfg, name, "input_length")
        if length is None:
            return weights, None
        x = [None, length]
    return weights, [[*x, width]]


def _prelu(cfg: Mapping[str, Any], name: str, inputs: Shapes) -> list[_Weight]:
    x = inputs[0] if inputs else None
    if x is None:
        return [_Weight("alpha", None)]
    dims = list(x[1:])
    shared = cfg.get("shared_axes")
    if shared is not None:
        axes = shared if isinstance(shared, (list, tuple)) else [shared]
        for a in axes:
            a = _int(a, name, "shared_axes", 1)
            if a - 1 < len(dims):
                dims[a - 1] = 1
    return [_w("alpha", *dims)]


def _attention(
    cfg: Mapping[str, Any], name: str, inputs: Shapes
) -> tuple[list[_Weight], Shapes | None]:
    """MultiHeadAttention: inputs are query, value and optionally key."""
    heads = _get_int(cfg, name, "num_heads")
    key_dim = _get_int(cfg, name, "key_dim")
    if heads is None or key_dim is None:
        raise _fail(name, "num_heads", cfg.get("num_heads"), "num_heads and key_dim")
    value_dim = _get_int(cfg, name, "value_dim", default=key_dim)
    query = inputs[0] if inputs else None
    value = inputs[1] if len(inputs) > 1 else None
    key = inputs[2] if len(inputs) > 2 else value
    out_spec = cfg.get("output_shape")
    if out_spec is None:
        out_dims: list[int | None] = [_dim(query, -1)]
    elif isinstance(out_spec, int) and not isinstance(out_spec, bool):
        out_dims = [_int(out_spec, name, "output_shape")]
    else:
        out_dims = list(_shape(out_spec, name, "output_shape"))
    use_bias = _bool(cfg, name, "use_bias", True)
    weights: list[_Weight] = []
    # Keras 2 and 3 create query, key, value, then attention_output
    # (EinsumDense sublayers, each kernel then bias).
    for sub, source, width in (
        ("query", query, key_dim),
        ("key", key, key_dim),
        ("value", value, value_dim),
    ):
        weights.append(_w(f"{sub}/kernel", _dim(source, -1), heads, width))
        if use_bias:
            weights.append(_w(f"{sub}/bias", heads, width))
    weights.append(_w("attention_output/kernel", heads, value_dim, *out_dims))
    if use_bias:
        weights.append(_w("attention_output/bias", *out_dims))
    if query is None or any(d is None for d in out_dims) and out_spec is not None:
        return weights, None
    outputs: Shapes = [[*query[:-1], *out_dims]]
    return weights, outputs


def _normalization(cfg: Mapping[str, Any], name: str, inputs: Shapes) -> list[_Weight]:
    """Keras 2.6+ and 3 Normalization: adapted mean, variance and count.

    Given ``mean`` and ``variance`` in the config, it holds no weights;
    otherwise three non-trainable ones (Keras 3 normalization.py build).
    """
    if cfg.get("mean") is not None:
        return []
    x = inputs[0] if inputs else None
    axis = cfg.get("axis", -1)
    axes = [] if axis is None else axis if isinstance(axis, (list, tuple)) else [axis]
    keep = _reduce_axes(axes, x, name, "axis") if axes else []
    if keep is None or x is None:
        shape = None
    else:
        dims = [x[a] for a in sorted(keep)]
        shape = None if None in dims else tuple(dims)
    return [
        _Weight("mean", shape, False),
        _Weight("variance", shape, False),
        _Weight("count", (), False),
    ]


def _dot_attention(
    cls: str, cfg: Mapping[str, Any], name: str, inputs: Shapes
) -> tuple[list[_Weight], Shapes | None]:
    """Attention (scalar scale) and AdditiveAttention (scale per feature)."""
    query = inputs[0] if inputs else None
    value = inputs[1] if len(inputs) > 1 else None
    weights = []
    if cls == "AdditiveAttention":
        if _bool(cfg, name, "use_scale", True):
            weights.append(_w("scale", _dim(query, -1)))
    else:
        if _bool(cfg, name, "use_scale", False):
            weights.append(_Weight("scale", ()))
        if cfg.get("score_mode", "dot") == "concat":
            weights.append(_Weight("concat_score_weight", ()))
    if query is None or value is None:
        return weights, None
    return weights, [[*query[:-1], value[-1]]]


def _conv_lstm(
    cls: str, cfg: Mapping[str, Any], name: str, inputs: Shapes
) -> tuple[list[_Weight], Shapes | None]:
    """ConvLSTM1D/2D/3D: kernel, recurrent_kernel and bias of four gates."""
    rank = int(cls[-2])
    first = _channels_first(cfg, name)
    filters = _get_int(cfg, name, "filters")
    if filters is None:
        raise _fail(name, "filters", None, "an integer")
    kernel, strides, dilation, padding = _conv_geometry(cls, cfg, name, rank)
    x = inputs[0] if inputs else None
    step = [x[0], *x[2:]] if x is not None and len(x) == rank + 3 else None
    geo = _spatial(step, rank, first)
    cin = geo[1] if geo else None
    weights = [
        _w("kernel", *kernel, cin, 4 * filters),
        _w("recurrent_kernel", *kernel, filters, 4 * filters),
    ]
    if _bool(cfg, name, "use_bias", True):
        weights.append(_w("bias", 4 * filters))
    if geo is None or x is None:
        return weights, None
    spatial = [
        _conv_length(size, kernel[i], strides[i], padding, dilation[i])
        for i, size in enumerate(geo[0])
    ]
    state = _assemble(x[0], spatial, filters, first)
    out = (
        [state[0], x[1], *state[1:]]
        if _bool(cfg, name, "return_sequences", False)
        else state
    )
    outputs: Shapes = [out]
    if _bool(cfg, name, "return_state", False):
        outputs += [list(state), list(state)]
    return weights, outputs


_CONV_LSTM = {"ConvLSTM1D", "ConvLSTM2D", "ConvLSTM3D"}


# Layers that never hold weights and keep their input's shape.
_SAME_SHAPE = {
    "Dropout", "SpatialDropout1D", "SpatialDropout2D", "SpatialDropout3D",
    "GaussianDropout", "GaussianNoise", "AlphaDropout", "Activation", "ReLU",
    "LeakyReLU", "ELU", "Softmax", "ThresholdedReLU", "Masking",
    "ActivityRegularization", "Identity", "Rescaling", "UnitNormalization",
    "RandomFlip", "RandomRotation", "RandomContrast", "RandomTranslation",
    "RandomZoom", "RandomBrightness",
}  # fmt: skip

# Layers that never hold weights whose output shape is computed below or not
# inferable (Lambda without output_shape, TF op layers).
_WEIGHTLESS = _SAME_SHAPE | {
    "InputLayer", "Flatten", "Reshape", "Permute", "RepeatVector", "Lambda",
    "Add", "Subtract", "Multiply", "Average", "Maximum", "Minimum",
    "Concatenate", "Dot", "Merge", "ZeroPadding1D", "ZeroPadding2D",
    "ZeroPadding3D", "Cropping1D", "Cropping2D", "Cropping3D", "UpSampling1D",
    "UpSampling2D", "UpSampling3D", "TFOpLambda", "SlicingOpLambda",
    "Resizing", "CenterCrop",
}  # fmt: skip

_POOLING = {
    f"{kind}{suffix}{rank}D"
    for kind in ("Max", "Average", "Avg")
    for suffix in ("Pooling", "Pool")
    for rank in (1, 2, 3)
}
_GLOBAL_POOLING = {f"Global{name}" for name in _POOLING}
_WEIGHTLESS |= _POOLING | _GLOBAL_POOLING

# Layers with weights whose output has their input's shape.
_SAME_SHAPE_WEIGHTED = {
    "BatchNormalization", "LayerNormalization", "GroupNormalization", "PReLU",
    "Normalization", "LayerScale",
}  # fmt: skip

_ELEMENTWISE = {"Add", "Subtract", "Multiply", "Average", "Maximum", "Minimum"}
# Elementwise TensorFlow ops tf.keras 2.x records as TFOpLambda layers
# (``x + y``, ``x * 0.5``, ``tf.nn.relu(x)``): the output is the inputs'
# broadcast shape (a Python scalar operand is no input).
_ELEMENTWISE_TF_OPS = {
    "__operators__.add", "math.add", "math.subtract", "math.multiply",
    "math.truediv", "math.divide", "math.maximum", "math.minimum",
    "math.negative", "math.sigmoid", "math.tanh", "math.exp", "math.sqrt",
    "math.square", "math.abs", "nn.relu", "nn.relu6", "nn.silu", "nn.swish",
    "nn.gelu", "nn.elu", "nn.sigmoid",
}  # fmt: skip


def _broadcast(shapes: Shapes) -> Shape | None:
    if not shapes or any(s is None for s in shapes):
        return None
    rank = len(shapes[0])
    if any(len(s) != rank for s in shapes):
        return None
    out: Shape = []
    for dims in zip(*shapes):
        known = {d for d in dims if d is not None and d != 1}
        if len(known) > 1:
            return None
        if known:
            out.append(known.pop())
        elif any(d is None for d in dims):
            out.append(None)
        else:
            out.append(1)
    # The batch dimension is never broadcast from 1 by Keras in a graph.
    return out


def _concatenate(shapes: Shapes, axis: int) -> Shape | None:
    if not shapes or any(s is None for s in shapes):
        return None
    rank = len(shapes[0])
    if any(len(s) != rank for s in shapes) or not -rank <= axis < rank:
        return None
    axis %= rank
    out: Shape = []
    for i, dims in enumerate(zip(*shapes)):
        if i == axis:
            out.append(None if any(d is None for d in dims) else sum(dims))
        else:
            known = [d for d in dims if d is not None]
            out.append(known[0] if known else None)
    return out


def _dot(cfg: Mapping[str, Any], name: str, shapes: Shapes) -> Shape | None:
    if len(shapes) != 2 or shapes[0] is None or shapes[1] is None:
        return None
    a, b = shapes
    axes = cfg.get("axes", -1)
    pair = axes if isinstance(axes, (list, tuple)) else [axes, axes]
    if len(pair) != 2:
        raise _fail(name, "axes", axes, "an axis or a pair of axes")
    ax = []
    for value, s in zip(pair, (a, b)):
        if isinstance(value, bool) or not isinstance(value, int):
            raise _fail(name, "axes", axes, "an axis or a pair of axes")
        if not -len(s) <= value < len(s):
            return None
        ax.append(value % len(s))
    out = [d for i, d in enumerate(a) if i != ax[0]]
    out += [d for i, d in enumerate(b) if i not in (0, ax[1])]
    if len(out) == 1:
        out.append(1)
    return out


def _reshape(cfg: Mapping[str, Any], name: str, x: Shape | None) -> Shape | None:
    target = cfg.get("target_shape")
    if not isinstance(target, (list, tuple)) or len(target) > 64:
        raise _fail(name, "target_shape", target, "a list of dimensions")
    dims: Shape = []
    for d in target:
        if d == -1 and not isinstance(d, bool):
            dims.append(-1)
        else:
            dims.append(None if d is None else _int(d, name, "target_shape"))
    if dims.count(-1) > 1:
        raise _fail(name, "target_shape", target, "at most one -1")
    batch = x[0] if x else None
    if -1 in dims:
        known = [d for d in dims if d != -1]
        if x is None or any(d is None for d in x[1:]) or None in known:
            dims = [None if d == -1 else d for d in dims]
        else:
            rest = prod(known)
            total = prod(x[1:])
            dims = [(total // rest if rest else None) if d == -1 else d for d in dims]
    return [batch, *dims]


def _padding_pairs(
    cfg: Mapping[str, Any], name: str, key: str, rank: int, default: int
) -> list[tuple[int, int]]:
    value = cfg.get(key, default)
    if isinstance(value, int) and not isinstance(value, bool):
        v = _int(value, name, key)
        return [(v, v)] * rank
    if isinstance(value, (list, tuple)) and len(value) == rank:
        pairs = []
        for item in value:
            if isinstance(item, int) and not isinstance(item, bool):
                pairs.append((_int(item, name, key),) * 2)
            elif isinstance(item, (list, tuple)) and len(item) == 2:
                pairs.append((_int(item[0], name, key), _int(item[1], name, key)))
            else:
                raise _fail(name, key, value, "padding sizes")
        return pairs
    if rank == 1 and isinstance(value, (list, tuple)) and len(value) == 2:
        return [(_int(value[0], name, key), _int(value[1], name, key))]
    raise _fail(name, key, value, "padding sizes")


def _resample(
    cls: str, cfg: Mapping[str, Any], name: str, x: Shape | None
) -> Shape | None:
    """ZeroPadding, Cropping and UpSampling of 1 to 3 spatial dims."""
    rank = int(cls[-2])
    first = _channels_first(cfg, name) if rank > 1 else False
    geo = _spatial(x, rank, first)
    if cls.startswith("UpSampling"):
        size = _tuple(cfg, name, "size", rank) or _tuple(cfg, name, "length", rank)
        size = size or (2,) * rank
        change = [lambda d, s=s: d * s for s in size]
    else:
        key = "padding" if cls.startswith("ZeroPadding") else "cropping"
        pairs = _padding_pairs(cfg, name, key, rank, 1 if key == "padding" else 0)
        sign = 1 if key == "padding" else -1
        change = [lambda d, p=p: max(0, d + sign * (p[0] + p[1])) for p in pairs]
    if geo is None:
        return None
    spatial = [None if d is None else fn(d) for d, fn in zip(geo[0], change)]
    return _assemble(x[0], spatial, geo[1], first)  # type: ignore[index]


def _weightless_shape(
    cls: str, cfg: Mapping[str, Any], name: str, inputs: Shapes
) -> Shapes | None:
    x = inputs[0] if inputs else None
    if cls in _SAME_SHAPE:
        return [x] if x is not None else None
    if cls in _POOLING:
        return _pool(cls, cfg, name, inputs)
    if cls in _GLOBAL_POOLING:
        return _global_pool(cls, cfg, name, inputs)
    if cls == "Flatten":
        if x is None:
            return None
        rest = x[1:]
        return [[x[0], None if None in rest else prod(rest)]]
    if cls == "Reshape":
        out = _reshape(cfg, name, x)
        return [out] if out is not None else None
    if cls == "Permute":
        dims = cfg.get("dims")
        if not isinstance(dims, (list, tuple)) or x is None:
            if not isinstance(dims, (list, tuple)):
                raise _fail(name, "dims", dims, "a list of axes")
            return None
        order = [_int(d, name, "dims", 1) for d in dims]
        if sorted(order) != list(range(1, len(x))):
            return None
        return [[x[0], *(x[d] for d in order)]]
    if cls == "RepeatVector":
        n = _get_int(cfg, name, "n")
        if n is None:
            raise _fail(name, "n", None, "an integer")
        return [[x[0], n, *x[1:]]] if x is not None and len(x) == 2 else None
    if cls in _ELEMENTWISE or (
        cls == "TFOpLambda" and cfg.get("function") in _ELEMENTWISE_TF_OPS
    ):
        out = _broadcast(inputs)
        return [out] if out is not None else None
    if cls == "Concatenate":
        axis = cfg.get("axis", -1)
        if isinstance(axis, bool) or not isinstance(axis, int):
            raise _fail(name, "axis", axis, "an integer")
        out = _concatenate(inputs, axis)
        return [out] if out is not None else None
    if cls == "Dot":
        out = _dot(cfg, name, inputs)
        return [out] if out is not None else None
    if cls == "Merge":
        return _merge_k1(cfg, name, inputs)
    if cls.startswith(("ZeroPadding", "Cropping", "UpSampling")):
        out = _resample(cls, cfg, name, x)
        return [out] if out is not None else None
    if cls == "Lambda":
        return _lambda_shape(cfg, x)
    if cls in ("Resizing", "CenterCrop"):
        height = _get_int(cfg, name, "height")
        width = _get_int(cfg, name, "width")
        first = _channels_first(cfg, name)
        geo = _spatial(x, 2, first)
        if x is None or geo is None or height is None or width is None:
            return None
        return [_assemble(x[0], [height, width], geo[1], first)]
    return None


def _merge_k1(cfg: Mapping[str, Any], name: str, inputs: Shapes) -> Shapes | None:
    """Keras 1.2 Merge: modes sum, mul, ave, max, concat (others not inferred)."""
    mode = cfg.get("mode", "sum")
    if mode in ("sum", "mul", "ave", "max"):
        out = _broadcast(inputs)
    elif mode == "concat":
        axis = cfg.get("concat_axis", -1)
        if isinstance(axis, bool) or not isinstance(axis, int):
            raise _fail(name, "concat_axis", axis, "an integer")
        out = _concatenate(inputs, axis)
    else:
        out = None
    return [out] if out is not None else None


def _lambda_shape(cfg: Mapping[str, Any], x: Shape | None) -> Shapes | None:
    # Keras 2 and 3 Lambda: a list output_shape excludes the batch dimension.
    spec = cfg.get("output_shape")
    if cfg.get("output_shape_type", "raw") != "raw" or x is None:
        return None
    if isinstance(spec, (list, tuple)) and all(
        d is None
        or (isinstance(d, int) and not isinstance(d, bool) and 0 <= d <= MAX_DIM)
        for d in spec
    ):
        return [[x[0], *spec]]
    return None


# --------------------------------------------------------------------------
# Lambda and custom-object warnings.


def _lambda_warning(cfg: Mapping[str, Any], name: str) -> str:
    function = cfg.get("function")
    kind = cfg.get("function_type")
    if isinstance(function, Mapping) and function.get("class_name") == "__lambda__":
        # Keras 3 stores {"class_name": "__lambda__", "config": {"code": ...}}.
        return (
            f"layer {name!r} is a Lambda carrying Python bytecode (Keras 3 "
            "__lambda__); it is kept verbatim and never decoded or run"
        )
    if kind == "lambda" or (kind is None and isinstance(function, list)):
        # Keras 1.2 and 2 store marshalled code as base64 (Keras 2 as a list
        # of code, defaults and closure) with function_type "lambda".
        return (
            f"layer {name!r} is a Lambda carrying marshalled Python bytecode "
            "(Keras 1/2 function_type 'lambda'); it is kept verbatim and "
            "never decoded or run"
        )
    shown = function if isinstance(function, str) else None
    if isinstance(function, Mapping):
        inner = function.get("config")
        shown = inner if isinstance(inner, str) else function.get("class_name")
    return (
        f"layer {name!r} is a Lambda referring to the Python function "
        f"{str(shown)[:60]!r}, which is not in the file; loading it in Keras "
        "needs that function"
    )


# Keys that hold inner layers, whose own entries are checked on their own.
_LAYER_KEYS = frozenset({"layers", "layer", "backward_layer", "forward_layer"})


def _foreign_objects(config: Mapping[str, Any]) -> Iterator[tuple[str, str, str]]:
    """Serialised objects in a layer config from modules outside Keras.

    Keras 3 writes activations, initializers and regularizers as
    ``{"module": ..., "class_name": ...}``; one naming ``os`` or a user module
    means Keras would import it. Yields (config key, class name, module).
    """
    stack: list[tuple[str, Any, int]] = [
        (key, value, 0) for key, value in config.items() if key not in _LAYER_KEYS
    ]
    while stack:
        key, value, level = stack.pop()
        if level > MAX_NESTING:
            continue
        if isinstance(value, list):
            stack.extend((key, item, level + 1) for item in value)
        elif isinstance(value, Mapping):
            module, cls = value.get("module"), value.get("class_name")
            if isinstance(cls, str) and _module_warning(module, "", cls):
                yield key, cls, str(module)
            stack.extend((key, item, level + 1) for item in value.values())


def _module_warning(module: Any, name: str, cls: str) -> str | None:
    if not isinstance(module, str):
        return None
    if any(module == m or module.startswith(m + ".") for m in _KERAS_MODULES):
        return None
    return (
        f"layer {name!r} (class {cls!r}) comes from module {module[:80]!r}, "
        "outside Keras: a custom object that Keras needs the code for"
    )


# --------------------------------------------------------------------------
# The graph: parsing model configs into layer specs with resolved edges.


@dataclass(frozen=True)
class _Ref:
    layer: str
    node: int
    tensor: int
    recorded: Shape | None = None  # Keras 3 keras_tensor shape, when given


@dataclass
class _Spec:
    name: str
    class_name: str
    config: Mapping[str, Any]
    entry: Mapping[str, Any]
    nodes: list[list[_Ref]]
    module: str | None
    inner: _ModelSpec | None = None  # nested model
    declared: Shape | None = None  # input shape of a graph root (Keras 1 Merge)


@dataclass
class _ModelSpec:
    name: str
    sequential: bool
    specs: list[_Spec]
    inputs: list[_Ref]
    outputs: list[_Ref]
    trainable: bool
    build_shape: Shape | None = None
    input_shape: Shape | None = None  # a Sequential's InputLayer
    first_node_builtin: bool = False  # refs to this model skip its own node


def _model_config(entry: Mapping[str, Any], where: str) -> Any:
    if "config" not in entry:
        raise InputError(
            f"Keras config: {where}: missing key 'config'; expected "
            '{"class_name": ..., "config": ...}'
        )
    return entry["config"]


def _is_model(entry: Mapping[str, Any]) -> bool:
    cls = entry.get("class_name")
    cfg = entry.get("config")
    if isinstance(cls, str) and cls in _MODEL_CLASSES:
        return True
    return (
        isinstance(cfg, Mapping)
        and isinstance(cfg.get("layers"), list)
        and "input_layers" in cfg
        and "output_layers" in cfg
    )


def _entry_name(entry: Mapping[str, Any], index: int, where: str) -> str:
    cfg = entry.get("config")
    name = entry.get("name")
    if name is None and isinstance(cfg, Mapping):
        name = cfg.get("name")
    if not isinstance(name, str) or not name:
        raise InputError(
            f"Keras config: {where}, layer #{index}: key 'name' is {name!r}; "
            "every layer needs a name"
        )
    return name


def _tensor_refs(node: Any, layer: str, names: set[str]) -> list[_Ref]:
    """The tensors one inbound node reads, in order, from any node format."""
    if isinstance(node, Mapping):
        # Keras 3: {"args": [...], "kwargs": {...}} with __keras_tensor__ dicts.
        refs: list[_Ref] = []
        _collect_keras_tensors(
            [node.get("args", []), node.get("kwargs", {})], layer, refs
        )
        return refs
    if not isinstance(node, list):
        raise _fail(layer, "inbound_nodes", node, "a list of inbound tensors")
    if node and isinstance(node[0], str):
        # tf.keras 2.x writes a TFOpLambda's node (``x + y`` on Keras tensors,
        # as in its ConvNeXt) as one bare [layer, node, tensor, kwargs].
        node = [node]
    refs = []
    for item in node:
        refs.append(_legacy_ref(item, layer))
        # Keras 2 kwargs may hold more tensors as [name, node, tensor]
        # (MultiHeadAttention value=..., masks); tf_keras functional.py.
        if isinstance(item, list) and len(item) == 4 and isinstance(item[3], Mapping):
            for value in item[3].values():
                if (
                    isinstance(value, list)
                    and len(value) == 3
                    and isinstance(value[0], str)
                    and value[0] in names
                ):
                    refs.append(_legacy_ref(value, layer))
    return refs


def _legacy_ref(item: Any, layer: str) -> _Ref:
    if not isinstance(item, (list, tuple)) or len(item) not in (3, 4):
        raise _fail(layer, "inbound_nodes", item, "[layer, node, tensor(, kwargs)]")
    source = item[0]
    if not isinstance(source, str):
        raise _fail(layer, "inbound_nodes", item, "a layer name first")
    return _Ref(
        source,
        _int(item[1], layer, "inbound_nodes"),
        _int(item[2], layer, "inbound_nodes"),
    )


def _collect_keras_tensors(root: Any, layer: str, out: list[_Ref]) -> None:
    """Depth-first, in order, without recursion (node args nest arbitrarily)."""
    stack: list[Any] = [root]
    while stack:
        item = stack.pop()
        if isinstance(item, Mapping):
            if item.get("class_name") == "__keras_tensor__":
                cfg = _mapping(item.get("config"), layer, "inbound_nodes")
                history = cfg.get("keras_history")
                if not isinstance(history, list) or len(history) != 3:
                    raise _fail(
                        layer, "keras_history", history, "[layer, node, tensor]"
                    )
                ref = _legacy_ref(history, layer)
                recorded = cfg.get("shape")
                try:
                    shape = (
                        None if recorded is None else _shape(recorded, layer, "shape")
                    )
                except InputError:
                    shape = None
                out.append(_Ref(ref.layer, ref.node, ref.tensor, shape))
            else:
                stack.extend(reversed(list(item.values())))
        elif isinstance(item, (list, tuple)):
            stack.extend(reversed(item))
        if len(out) > MAX_LAYERS:
            raise LimitExceededError(f"layer {layer!r}: too many inbound tensors")


def _io_refs(value: Any, model: str, key: str) -> list[_Ref]:
    """input_layers / output_layers: [[name, node, tensor], ...] or one triple."""
    if value is None:
        return []
    if isinstance(value, Mapping):
        # Keras 3 writes dict inputs and outputs as {key: [layer, node, tensor]}.
        value = list(value.values())
    if not isinstance(value, list):
        raise _fail(model, key, value, "a list of [layer, node, tensor]")
    if len(value) == 3 and isinstance(value[0], str):
        value = [value]
    refs = []
    stack = list(reversed(value))
    while stack:
        item = stack.pop()
        if isinstance(item, list) and item and isinstance(item[0], str):
            refs.append(_legacy_ref(item, model))
        elif isinstance(item, list):
            # Keras 3 nests output structures (dicts become lists of triples).
            stack.extend(reversed(item))
        elif isinstance(item, Mapping):
            stack.extend(reversed(list(item.values())))
        else:
            raise _fail(model, key, item, "[layer, node, tensor]")
    return refs


def _parse_model(entry: Mapping[str, Any], ctx: _Ctx, depth: int) -> _ModelSpec:
    """Parse a model config, nested ones included, without recursion.

    Nested models are parsed by an explicit stack of pending entries; the
    depth is bounded by MAX_NESTING.
    """
    root = _ModelSpec("", False, [], [], [], True)
    pending: list[tuple[Mapping[str, Any], _ModelSpec, int]] = [(entry, root, depth)]
    while pending:
        item, target, level = pending.pop()
        if level > MAX_NESTING:
            raise LimitExceededError(
                f"Keras config: models or wrappers nested deeper than {MAX_NESTING} "
                "levels; no real model does this, so the config is refused"
            )
        _parse_one(item, target, ctx, level, pending)
    return root


def _parse_one(
    entry: Mapping[str, Any],
    target: _ModelSpec,
    ctx: _Ctx,
    level: int,
    pending: list[tuple[Mapping[str, Any], _ModelSpec, int]],
) -> None:
    cls = entry.get("class_name")
    cfg = _model_config(entry, f"model {cls!r}")
    if isinstance(cfg, list):
        # Keras 1.x and 2.0-2.2.4 Sequential: the config is the layer list.
        name, layers = "sequential", cfg
        model_cfg: Mapping[str, Any] = {}
    else:
        model_cfg = _mapping(cfg, str(cls), "config")
        name = model_cfg.get("name", "model")
        if not isinstance(name, str):
            raise _fail(str(cls), "name", name, "a string")
        raw_layers = model_cfg.get("layers")
        if not isinstance(raw_layers, list):
            raise _fail(name, "layers", raw_layers, "a list of layer configs")
        layers = raw_layers
    sequential = cls == "Sequential" or isinstance(cfg, list)
    target.name = name
    target.sequential = sequential
    target.trainable = _bool(model_cfg, name, "trainable", True)
    if model_cfg.get("build_input_shape") is not None:
        try:
            target.build_shape = _shape(
                model_cfg["build_input_shape"], name, "build_input_shape"
            )
        except InputError:
            target.build_shape = None

    ctx.layer_count += len(layers)
    if ctx.layer_count > MAX_LAYERS:
        raise LimitExceededError(
            f"Keras config: more than {MAX_LAYERS} layers; refused as implausible"
        )
    entries = [_mapping(e, name, f"layers[{i}]") for i, e in enumerate(layers)]
    branches: list[list[str]] = []
    if sequential and entries and entries[0].get("class_name") == "Merge":
        entries, branches = _flatten_merge(entries, name)
    names = {_entry_name(e, i, name) for i, e in enumerate(entries)}
    seen: set[str] = set()
    for i, layer_entry in enumerate(entries):
        lname = _entry_name(layer_entry, i, name)
        if lname in seen:
            raise InputError(
                f"Keras config: model {name!r} has two layers named {lname!r}; "
                "layer names must be unique"
            )
        seen.add(lname)
        lcls = layer_entry.get("class_name")
        if not isinstance(lcls, str):
            raise _fail(lname, "class_name", lcls, "a class name")
        lcfg = _model_config(layer_entry, f"layer {lname!r}")
        if not isinstance(lcfg, (Mapping, list)):
            raise _fail(lname, "config", lcfg, "a mapping")
        nodes: list[list[_Ref]] = []
        if not sequential:
            raw_nodes = layer_entry.get("inbound_nodes", [])
            if not isinstance(raw_nodes, list):
                raise _fail(lname, "inbound_nodes", raw_nodes, "a list")
            nodes = [_tensor_refs(n, lname, names) for n in raw_nodes]
        module = layer_entry.get("module")
        spec = _Spec(
            lname,
            lcls,
            lcfg if isinstance(lcfg, Mapping) else {"layers": lcfg},
            layer_entry,
            nodes,
            module if isinstance(module, str) else None,
        )
        if _is_model(layer_entry):
            spec.inner = _ModelSpec(lname, False, [], [], [], True)
            pending.append((layer_entry, spec.inner, level + 1))
        target.specs.append(spec)

    if not sequential:
        target.inputs = _io_refs(model_cfg.get("input_layers"), name, "input_layers")
        target.outputs = _io_refs(model_cfg.get("output_layers"), name, "output_layers")
        target.first_node_builtin = True
    else:
        # tf_keras and Keras 3 list the InputLayer first; Keras leaves it out
        # of model.layers, and so does the Architecture.
        first = target.specs[0] if target.specs else None
        target.first_node_builtin = first is not None and (
            first.class_name == "InputLayer"
            or _input_shape(first.config, first.name) is not None
        )
        if first is not None and first.class_name == "InputLayer":
            target.input_shape = _input_shape(first.config, first.name)
            target.specs.pop(0)
        for i, spec in enumerate(target.specs):
            if i:
                spec.nodes = [[_Ref(target.specs[i - 1].name, 0, 0)]]
        if branches:
            _wire_merge(target, branches)


def _flatten_merge(
    entries: list[Mapping[str, Any]], model: str
) -> tuple[list[Mapping[str, Any]], list[list[str]]]:
    """Keras 1.2 Sequential whose first layer is a Merge of branch models.

    Keras 1.2 (models.py, Sequential.get_config) stores the branches inside
    the Merge config as ``layers``, each a Sequential (a list config) or a
    layer; its ``flattened_layers``, which name the HDF5 weight groups, are
    the branches' layers followed by the layers after the Merge.
    """
    merge = entries[0]
    cfg = _mapping(merge.get("config"), model, "layers[0].config")
    raw = cfg.get("layers")
    if raw is None:
        return entries, []
    if not isinstance(raw, list) or not raw:
        raise _fail(model, "Merge.layers", raw, "a list of branch models")
    flat: list[Mapping[str, Any]] = []
    branches: list[list[str]] = []
    for i, branch in enumerate(raw):
        branch = _mapping(branch, model, f"Merge.layers[{i}]")
        inner = branch.get("config")
        if isinstance(inner, Mapping) and isinstance(inner.get("layers"), list):
            inner = inner["layers"]
        members = inner if isinstance(inner, list) else [branch]
        members = [_mapping(m, model, f"Merge.layers[{i}]") for m in members]
        if not members:
            raise _fail(model, f"Merge.layers[{i}]", branch, "a non-empty branch")
        flat += members
        branches.append(
            [
                _entry_name(m, j, f"{model} Merge branch {i}")
                for j, m in enumerate(members)
            ]
        )
    return [*flat, merge, *entries[1:]], branches


def _wire_merge(target: _ModelSpec, branches: list[list[str]]) -> None:
    """Connect flattened Keras 1.2 Merge branches as a small graph."""
    specs = {spec.name: spec for spec in target.specs}
    for branch in branches:
        head = specs[branch[0]]
        head.nodes = []
        head.declared = _first_layer_shape(head)
        for before, after in zip(branch, branch[1:]):
            specs[after].nodes = [[_Ref(before, 0, 0)]]
    merge_index = sum(len(b) for b in branches)
    target.specs[merge_index].nodes = [[_Ref(b[-1], 0, 0) for b in branches]]
    target.sequential = False
    target.first_node_builtin = False
    target.outputs = [_Ref(target.specs[-1].name, 0, 0)]


# --------------------------------------------------------------------------
# Evaluation: shapes through the graph, weights per layer.


@dataclass
class _Result:
    """What evaluating one layer gives."""

    weights: list[_Weight]
    node_outputs: list[Shapes | None]
    known: bool  # the class is understood (weights are exact)


def _input_shape(cfg: Mapping[str, Any], name: str) -> Shape | None:
    """batch_shape (Keras 3) or batch_input_shape (Keras 1.2 and 2)."""
    for key in ("batch_shape", "batch_input_shape"):
        if cfg.get(key) is not None:
            return _shape(cfg[key], name, key)
    return None


def _first_layer_shape(spec: _Spec) -> Shape | None:
    """The input shape a Sequential's first layer declares (all forms)."""
    cfg, name = spec.config, spec.name
    shape = _input_shape(cfg, name)
    if shape is not None:
        return shape
    # Keras 1.2 shorthand: input_dim (and input_length for sequences).
    if cfg.get("input_dim") is not None:
        dim = _int(cfg["input_dim"], name, "input_dim")
        if spec.class_name == "Embedding":
            length = _get_int(cfg, name, "input_length")
            return [None, length]
        if (
            cfg.get("input_length") is not None
            or spec.class_name in _RNN_GATES
            or (_CONV_RANK.get(spec.class_name) == 1)
        ):
            return [None, _get_int(cfg, name, "input_length"), dim]
        return [None, dim]
    if spec.class_name == "Embedding" and cfg.get("input_length") is not None:
        return [None, _get_int(cfg, name, "input_length")]
    return None


def _evaluate(
    spec: _Spec,
    inputs: Shapes,
    ctx: _Ctx,
    depth: int,
    want_weights: bool,
) -> tuple[list[_Weight], bool, Shapes | None]:
    """(weights, class known, outputs) of one call of a layer."""
    ctx.spend(spec.name)
    weights: list[_Weight] = []
    if spec.inner is not None:
        run = _run_model(spec.inner, inputs, ctx, depth + 1)
        weights = _nested_weights(spec.inner, run) if want_weights else []
        if want_weights and not _bool(spec.config, spec.name, "trainable", True):
            weights = [_Weight(w.name, w.shape, False) for w in weights]
        known = all(result.known for result in run.results)
        return _legacy_order(weights), known, run.outputs
    if _is_op(spec.module):
        return [], True, None
    known = True
    if want_weights:
        weights, known = _layer_weights(
            spec.class_name, spec.config, spec.name, inputs, ctx, depth, None
        )
    outputs = _layer_outputs(
        spec.class_name, spec.config, spec.name, inputs, ctx, depth, None
    )
    return weights, known, outputs


def _is_op(module: Any) -> bool:
    """Keras 3 functional graphs hold ``keras.ops`` calls as weightless nodes
    (``keras.src.ops.numpy`` Mean, ...); their shapes come from the records."""
    return isinstance(module, str) and module.startswith(("keras.src.ops", "keras.ops"))


def _legacy_order(weights: list[_Weight]) -> list[_Weight]:
    """Trainable weights first, each group in creation order (legacy HDF5)."""
    return [w for w in weights if w.trainable] + [w for w in weights if not w.trainable]


def _wrapped(
    cfg: Mapping[str, Any], name: str, key: str = "layer"
) -> tuple[str, Mapping[str, Any], Mapping[str, Any]]:
    inner = _mapping(cfg.get(key), name, key)
    cls = inner.get("class_name")
    if not isinstance(cls, str):
        raise _fail(name, f"{key}.class_name", cls, "a class name")
    icfg = inner.get("config")
    if not isinstance(icfg, (Mapping, list)):
        raise _fail(name, f"{key}.config", icfg, "a mapping")
    if isinstance(icfg, list):
        icfg = {"layers": icfg}
    return cls, icfg, inner


def _inner_name(icfg: Mapping[str, Any], name: str, key: str) -> str:
    value = icfg.get("name")
    if not isinstance(value, str) or not value:
        raise _fail(name, f"{key}.config.name", value, "a layer name")
    return value


def _bidirectional_names(cfg: Mapping[str, Any], name: str) -> tuple[str, str]:
    _, fcfg, _ = _wrapped(cfg, name)
    base = _inner_name(fcfg, name, "layer")
    # Keras 1.2 and tf_keras prefix the wrapped layer's name; Keras 3 stores
    # it already prefixed ("forward_lstm") and strips before re-prefixing.
    forward = "forward_" + base.removeprefix("forward_")
    if cfg.get("backward_layer") is not None:
        _, bcfg, _ = _wrapped(cfg, name, "backward_layer")
        backward = "backward_" + _inner_name(bcfg, name, "backward_layer").removeprefix(
            "backward_"
        )
    else:
        backward = "backward_" + base.removeprefix("forward_")
    return forward, backward


def _check_depth(depth: int, name: str) -> None:
    if depth > MAX_NESTING:
        raise LimitExceededError(
            f"Keras config: layer {name!r}: models or wrappers nested deeper than "
            f"{MAX_NESTING} levels; no real model does this, so it is refused"
        )


def _layer_weights(
    cls: str,
    cfg: Mapping[str, Any],
    name: str,
    inputs: Shapes,
    ctx: _Ctx,
    depth: int,
    inner: _ModelSpec | None,
) -> tuple[list[_Weight], bool]:
    """The layer's weights in legacy order, and whether the class is known."""
    _check_depth(depth, name)
    weights, known = _class_weights(cls, cfg, name, inputs, ctx, depth, inner)
    if not _bool(cfg, name, "trainable", True):
        weights = [_Weight(w.name, w.shape, False) for w in weights]
    # Legacy HDF5 order: trainable weights first, each group in creation order.
    return _legacy_order(weights), known


def _class_weights(
    cls: str,
    cfg: Mapping[str, Any],
    name: str,
    inputs: Shapes,
    ctx: _Ctx,
    depth: int,
    inner: _ModelSpec | None,
) -> tuple[list[_Weight], bool]:
    if inner is not None:
        run = _run_model(inner, inputs, ctx, depth + 1)
        known = all(result.known for result in run.results)
        return _nested_weights(inner, run), known
    if cls in _WEIGHTLESS:
        return [], True
    if cls == "Dense":
        return _dense(cfg, name, inputs, ctx)[0], True
    if cls in _CONV_RANK:
        return _conv(cls, cfg, name, inputs, ctx.form)[0], True
    if cls == "BatchNormalization":
        return _batch_norm(cfg, name, inputs), True
    if cls == "LayerNormalization":
        return _layer_norm(cfg, name, inputs), True
    if cls == "GroupNormalization":
        x = inputs[0] if inputs else None
        dims = _axes_size(cfg, name, x, -1)
        shape = (dims[0],) if dims and len(dims) == 1 else None
        weights = []
        if _bool(cfg, name, "scale", True):
            weights.append(_Weight("gamma", shape))
        if _bool(cfg, name, "center", True):
            weights.append(_Weight("beta", shape))
        return weights, True
    if cls == "Embedding":
        return _embedding(cfg, name, inputs)[0], True
    if cls in _RNN_GATES:
        return _rnn(cls, cfg, name, inputs, ctx)[0], True
    if cls == "PReLU":
        return _prelu(cfg, name, inputs), True
    if cls == "LayerScale":
        # keras.applications ConvNeXt's own layer (Keras 3, tf.keras >= 2.10):
        # x * gamma, one trainable weight of projection_dim.
        dim = _int(cfg.get("projection_dim"), name, "projection_dim", 1)
        return [_w("gamma", dim)], True
    if cls == "MultiHeadAttention":
        return _attention(cfg, name, inputs)[0], True
    if cls in ("Attention", "AdditiveAttention"):
        return _dot_attention(cls, cfg, name, inputs)[0], True
    if cls in _CONV_LSTM:
        return _conv_lstm(cls, cfg, name, inputs)[0], True
    if cls == "Normalization":
        return _normalization(cfg, name, inputs), True
    if cls == "Bidirectional":
        forward, backward = _bidirectional_names(cfg, name)
        fcls, fcfg, _ = _wrapped(cfg, name)
        bcls, bcfg = fcls, fcfg
        if cfg.get("backward_layer") is not None:
            bcls, bcfg, _ = _wrapped(cfg, name, "backward_layer")
        fw, fknown = _layer_weights(fcls, fcfg, forward, inputs, ctx, depth + 1, None)
        bw, bknown = _layer_weights(bcls, bcfg, backward, inputs, ctx, depth + 1, None)
        return (
            [w.prefixed(forward) for w in fw] + [w.prefixed(backward) for w in bw],
            fknown and bknown,
        )
    if cls == "TimeDistributed":
        icls, icfg, ientry = _wrapped(cfg, name)
        x = inputs[0] if inputs else None
        step = [[x[0], *x[2:]]] if x is not None and len(x) >= 2 else [None]
        nested = _nested_spec(ientry, ctx, depth)
        weights, known = _layer_weights(icls, icfg, name, step, ctx, depth + 1, nested)
        if ctx.form == 3:
            # Keras 3 creates the wrapped layer's variables under its own
            # name: time_distributed/dense/kernel; tf_keras does not.
            weights = [w.prefixed(_inner_name(icfg, name, "layer")) for w in weights]
        return weights, known
    ctx.warn(
        f"layer {name!r} has class {cls!r}, unknown to modelconv: its "
        "parameters and output shape are not computed"
    )
    return [_Weight("?", None)], False


def _nested_spec(entry: Mapping[str, Any], ctx: _Ctx, depth: int) -> _ModelSpec | None:
    """A model wrapped inside a wrapper layer (TimeDistributed(Sequential))."""
    if not _is_model(entry):
        return None
    if id(entry) not in ctx.parsed:
        ctx.parsed[id(entry)] = (entry, _parse_model(entry, ctx, depth + 1))
    return ctx.parsed[id(entry)][1]


def _layer_outputs(
    cls: str,
    cfg: Mapping[str, Any],
    name: str,
    inputs: Shapes,
    ctx: _Ctx,
    depth: int,
    inner: _ModelSpec | None,
) -> Shapes | None:
    _check_depth(depth, name)
    if inner is not None:
        return _run_model(inner, inputs, ctx, depth + 1).outputs
    if cls == "InputLayer":
        return [_input_shape(cfg, name)]
    if cls in _WEIGHTLESS:
        return _weightless_shape(cls, cfg, name, inputs)
    if cls == "Dense":
        return _dense(cfg, name, inputs, ctx)[1]
    if cls in _CONV_RANK:
        return _conv(cls, cfg, name, inputs)[1]
    if cls in _SAME_SHAPE_WEIGHTED:
        return [inputs[0]] if inputs and inputs[0] is not None else None
    if cls == "Embedding":
        return _embedding(cfg, name, inputs)[1]
    if cls == "MultiHeadAttention":
        return _attention(cfg, name, inputs)[1]
    if cls in ("Attention", "AdditiveAttention"):
        return _dot_attention(cls, cfg, name, inputs)[1]
    if cls in _CONV_LSTM:
        return _conv_lstm(cls, cfg, name, inputs)[1]
    if cls in _RNN_GATES:
        return _rnn(cls, cfg, name, inputs, ctx)[1]
    if cls == "Bidirectional":
        return _bidirectional_outputs(cfg, name, inputs, ctx, depth)
    if cls == "TimeDistributed":
        icls, icfg, ientry = _wrapped(cfg, name)
        x = inputs[0] if inputs else None
        if x is None or len(x) < 2:
            return None
        nested = _nested_spec(ientry, ctx, depth)
        out = _layer_outputs(icls, icfg, name, [[x[0], *x[2:]]], ctx, depth + 1, nested)
        if not out or out[0] is None:
            return None
        return [[x[0], x[1], *s[1:]] if s is not None else None for s in out]
    return None


def _bidirectional_outputs(
    cfg: Mapping[str, Any],
    name: str,
    inputs: Shapes,
    ctx: _Ctx,
    depth: int,
) -> Shapes | None:
    fcls, fcfg, _ = _wrapped(cfg, name)
    bcls, bcfg = fcls, fcfg
    if cfg.get("backward_layer") is not None:
        bcls, bcfg, _ = _wrapped(cfg, name, "backward_layer")
    fwd = _layer_outputs(fcls, fcfg, name, inputs, ctx, depth + 1, None)
    bwd = _layer_outputs(bcls, bcfg, name, inputs, ctx, depth + 1, None)
    if not fwd or not bwd:
        return None
    mode = cfg.get("merge_mode", "concat")
    if mode is None:
        merged = [fwd[0], bwd[0]]
    elif mode == "concat":
        out = _concatenate([fwd[0], bwd[0]], -1)
        merged = [out]
    elif mode in ("sum", "mul", "ave"):
        merged = [_broadcast([fwd[0], bwd[0]])]
    else:
        raise _fail(name, "merge_mode", mode, "concat, sum, mul, ave or null")
    return merged + fwd[1:] + bwd[1:]


def _nested_weights(inner: _ModelSpec, run: _Run) -> list[_Weight]:
    weights: list[_Weight] = []
    for spec, result in zip(inner.specs, run.results):
        weights += [w.prefixed(spec.name, inner.trainable) for w in result.weights]
    return weights


@dataclass
class _Run:
    results: list[_Result]
    outputs: Shapes | None


def _run_model(model: _ModelSpec, feed: Shapes | None, ctx: _Ctx, depth: int) -> _Run:
    """Evaluate every layer of a model; ``feed`` overrides its input shapes."""
    if depth > MAX_NESTING:
        raise LimitExceededError(
            f"Keras config: models nested deeper than {MAX_NESTING} levels"
        )
    key = (id(model), repr(feed))
    if key in ctx.runs:
        return ctx.runs[key]
    if model.sequential:
        run = _run_sequential(model, feed, ctx, depth)
    else:
        run = _run_functional(model, feed, ctx, depth)
    ctx.runs[key] = run
    return run


def _run_sequential(
    model: _ModelSpec, feed: Shapes | None, ctx: _Ctx, depth: int
) -> _Run:
    results: list[_Result] = []
    declared = model.input_shape
    if declared is None and model.specs:
        declared = _first_layer_shape(model.specs[0])
    if feed and feed[0] is not None:
        declared = feed[0]
    current: Shapes = [declared or model.build_shape]
    for spec in model.specs:
        if spec.class_name == "InputLayer":
            raise InputError(
                f"Keras config: Sequential {model.name!r}: InputLayer {spec.name!r} "
                "is not the first layer"
            )
        if all(shape is None for shape in current):
            # Keras 3 and tf_keras record each layer's build input shape.
            current = _build_shapes(spec) or current
        weights, known, outs = _evaluate(spec, current, ctx, depth, True)
        results.append(_Result(weights, [outs], known))
        current = list(outs) if outs else [None]
    return _Run(results, current if model.specs else None)


def _node_index(
    model: _ModelSpec, spec: _Spec, ref: _Ref, output: bool, form: int
) -> int:
    """Where a reference's node index points in the serialised node list.

    Keras 1.2 and tf_keras number a nested model's nodes from 1 because node 0
    is the model's own (unsaved) input node; Keras 3 does so only in
    output_layers of Functional models (models/functional.py get_config).
    """
    count = len(spec.nodes)
    index = ref.node
    if spec.inner is not None and spec.inner.first_node_builtin:
        if form in (1, 2) or (output and spec.class_name == "Functional"):
            index -= 1
    if 0 <= index < count:
        return index
    if 0 <= ref.node < count:
        return ref.node
    if count == 0 and ref.node == 0:
        # An InputLayer, or a Keras 1.2 Merge branch head: one implicit node.
        return 0
    raise InputError(
        f"Keras config: model {model.name!r}, key "
        f"'{'output_layers' if output else 'inbound_nodes'}': layer {ref.layer!r} "
        f"has no node {ref.node} (it has {count}); the references are inconsistent"
    )


_NodeKey = tuple[int, int]  # (layer index, node index)


@dataclass
class _Edges:
    """Which nodes each node reads, and which nodes read it."""

    by_name: dict[str, int]
    deps: dict[_NodeKey, list[_NodeKey]]
    users: dict[_NodeKey, list[_NodeKey]]
    remaining: dict[_NodeKey, int]
    form: int

    def release(self, key: _NodeKey, ready: deque[_NodeKey]) -> None:
        """Mark a node's outputs known; queue the nodes now ready."""
        for user in self.users.get(key, []):
            self.remaining[user] -= 1
            if self.remaining[user] == 0:
                ready.append(user)

    def source(
        self, model: _ModelSpec, ref: _Ref, where: str, output: bool
    ) -> _NodeKey:
        if ref.layer not in self.by_name:
            raise InputError(
                f"Keras config: {where}: refers to unknown layer {ref.layer!r}"
            )
        src = self.by_name[ref.layer]
        return src, _node_index(model, model.specs[src], ref, output, self.form)


def _edges(model: _ModelSpec, form: int) -> _Edges:
    edges = _Edges({s.name: i for i, s in enumerate(model.specs)}, {}, {}, {}, form)
    for li, spec in enumerate(model.specs):
        where = f"layer {spec.name!r}, key 'inbound_nodes'"
        for ni, refs in enumerate(spec.nodes):
            need = [edges.source(model, ref, where, False) for ref in refs]
            edges.deps[(li, ni)] = need
            edges.remaining[(li, ni)] = len(set(need))
            for key in set(need):
                edges.users.setdefault(key, []).append((li, ni))
    return edges


def _run_functional(
    model: _ModelSpec, feed: Shapes | None, ctx: _Ctx, depth: int
) -> _Run:
    """Evaluate node by node in dependency order (Kahn's algorithm).

    Each node's outputs are computed when its inputs are known; a layer's
    weights come from its first node, the call that builds it in Keras.
    """
    edges = _edges(model, ctx.form)
    fed = {ref.layer: shape for ref, shape in zip(model.inputs, feed or []) if shape}
    outputs: dict[_NodeKey, Shapes | None] = {}
    results: list[_Result | None] = [None] * len(model.specs)
    ready: deque[_NodeKey] = deque()

    # Roots: InputLayers, Keras 1.2 Merge branch heads, unconnected layers.
    for li, spec in enumerate(model.specs):
        if spec.nodes:
            keys = [(li, ni) for ni in range(len(spec.nodes))]
            ready.extend(key for key in keys if not edges.deps[key])
            continue
        if spec.class_name == "InputLayer":
            shape = fed.get(spec.name) or _input_shape(spec.config, spec.name)
            results[li] = _Result([], [[shape]], True)
            outputs[(li, 0)] = [shape]
        else:
            feed_in = [spec.declared] if spec.declared is not None else []
            weights, known, outs = _evaluate(spec, feed_in, ctx, depth, True)
            results[li] = _Result(weights, [outs] if feed_in else [], known)
            outputs[(li, 0)] = outs
        edges.release((li, 0), ready)

    while ready:
        li, ni = key = ready.popleft()
        spec = model.specs[li]
        shapes = _node_inputs(spec.nodes[ni], edges.deps[key], outputs)
        if ni == 0 and all(s is None for s in shapes):
            shapes = _build_shapes(spec) or shapes
        weights, known, outputs[key] = _evaluate(spec, shapes, ctx, depth, ni == 0)
        if ni == 0:
            results[li] = _Result(weights, [], known)
        edges.release(key, ready)

    for li, spec in enumerate(model.specs):
        result = results[li]
        node_keys = [(li, n) for n in range(len(spec.nodes))]
        if result is None or any(k not in outputs for k in node_keys):
            raise InputError(
                f"Keras config: layer {spec.name!r}, key 'inbound_nodes': its "
                "inputs form a cycle or depend on a layer that never runs"
            )
        if spec.nodes:
            result.node_outputs = [outputs[k] for k in node_keys]

    where = f"model {model.name!r}, key 'output_layers'"
    sources = [edges.source(model, ref, where, True) for ref in model.outputs]
    out_shapes = _node_inputs(model.outputs, sources, outputs)
    return _Run([r for r in results if r is not None], out_shapes)


def _node_inputs(
    refs: list[_Ref],
    sources: list[_NodeKey],
    outputs: dict[_NodeKey, Shapes | None],
) -> Shapes:
    """The shapes a node reads; Keras 3's recorded shapes fill unknowns."""
    shapes: Shapes = []
    for ref, key in zip(refs, sources):
        produced = outputs.get(key)
        shape = None
        if produced is not None and ref.tensor < len(produced):
            shape = produced[ref.tensor]
        shapes.append(ref.recorded if shape is None else shape)
    return shapes


def _build_shapes(spec: _Spec) -> Shapes | None:
    """Keras 3 and tf_keras record the build input shape of each layer."""
    build = spec.entry.get("build_config")
    if not isinstance(build, Mapping):
        return None
    value = build.get("input_shape")
    if not isinstance(value, list):
        return None
    try:
        if value and all(isinstance(v, list) for v in value):
            return [_shape(v, spec.name, "build_config") for v in value]
        return [_shape(value, spec.name, "build_config")]
    except InputError:
        return None


# --------------------------------------------------------------------------
# Form detection.


def _iter_layer_entries(config: Mapping[str, Any]) -> Iterator[Mapping[str, Any]]:
    """Every layer entry at every nesting level, wrappers' inner layers too."""
    stack: list[tuple[Any, int]] = [(config, 0)]
    while stack:
        item, level = stack.pop()
        if level > MAX_NESTING or not isinstance(item, Mapping):
            continue
        yield item
        cfg = item.get("config")
        children: list[Any] = []
        if isinstance(cfg, list):
            children = cfg
        elif isinstance(cfg, Mapping):
            if isinstance(cfg.get("layers"), list):
                children = cfg["layers"]
            for key in ("layer", "backward_layer"):
                if isinstance(cfg.get(key), Mapping):
                    children = [*children, cfg[key]]
        stack.extend((child, level + 1) for child in children)


_KERAS1_KEYS = {
    "output_dim", "nb_filter", "nb_row", "nb_col", "border_mode", "init",
    "W_regularizer", "b_regularizer", "dim_ordering", "subsample",
    "consume_less", "input_dtype", "filter_length", "pool_length",
}  # fmt: skip
_KERAS1_CLASSES = {
    "Merge", "Convolution1D", "Convolution2D", "Convolution3D",
    "AtrousConvolution1D", "AtrousConvolution2D", "Deconvolution2D",
    "SeparableConvolution2D", "MaxoutDense", "Highway", "TimeDistributedDense",
}  # fmt: skip


def detect_form(config: Mapping[str, Any]) -> int:
    """1, 2 or 3: which Keras serialisation form the model config uses."""
    form1 = form3 = False
    for entry in _iter_layer_entries(config):
        cls = entry.get("class_name")
        cfg = entry.get("config")
        if cls == "__keras_tensor__":
            continue
        nodes = entry.get("inbound_nodes")
        if isinstance(nodes, list) and nodes:
            node = nodes[0]
            if isinstance(node, Mapping):
                form3 = True
            elif isinstance(node, list) and node and isinstance(node[0], list):
                form1 = form1 or len(node[0]) == 3
        if isinstance(cls, str) and cls in _KERAS1_CLASSES:
            form1 = True
        if isinstance(cfg, Mapping):
            if "batch_shape" in cfg and cls == "InputLayer":
                form3 = True
            dtype = cfg.get("dtype")
            if isinstance(dtype, Mapping) and dtype.get("class_name") in (
                "DTypePolicy", "FloatDTypePolicy", "QuantizedDTypePolicy",
            ):  # fmt: skip
                form3 = True
            keys = set(cfg) & _KERAS1_KEYS
            if cls == "Embedding":
                keys.discard("output_dim")
            if keys:
                form1 = True
    if form3:
        return 3
    if form1:
        return 1
    return 2


# --------------------------------------------------------------------------
# Public entry points.


def layer_weight_names(
    layer_config: Mapping[str, Any], form: int | None = None
) -> list[str]:
    """Short names of a layer's weights in Keras's legacy (HDF5) order.

    ``layer_config`` is one layer entry, ``{"class_name": ..., "config": ...}``
    as found in a model config. Names are relative to the layer:
    ``["kernel", "bias"]``, ``["forward_lstm/kernel", ...]`` for Bidirectional,
    ``["dense/kernel", ...]`` for a nested model. ``form`` is the model's
    serialisation form (``Architecture.form``); a few names depend on it
    (DepthwiseConv's kernel, TimeDistributed's inner layer), and a lone
    layer entry does not always say which Keras wrote it. Unknown classes
    give ``[]``: nothing says which weights they hold.
    """
    if not isinstance(layer_config, Mapping):
        raise InputError(
            f"Keras config: a layer entry must be a mapping, got "
            f"{type(layer_config).__name__}"
        )
    ctx = _Ctx(form if form in (1, 2, 3) else detect_form(layer_config))
    cls = layer_config.get("class_name")
    if not isinstance(cls, str):
        raise _fail("?", "class_name", cls, "a class name")
    cfg = _model_config(layer_config, f"layer of class {cls!r}")
    if isinstance(cfg, list):
        cfg = {"layers": cfg}
    if not isinstance(cfg, Mapping):
        raise _fail(cls, "config", cfg, "a mapping")
    name = str(cfg.get("name") or cls)
    if _is_op(layer_config.get("module")):
        return []
    inner = _parse_model(layer_config, ctx, 1) if _is_model(layer_config) else None
    weights, known = _layer_weights(cls, cfg, name, [], ctx, 0, inner)
    if not known:
        return []
    return [w.name for w in weights]


def _check_encodable(config: Mapping[str, Any]) -> None:
    """Refuse lone surrogates (a JSON ``\\ud800`` escape) in a Keras config.

    No UTF-8 file can hold them, so no format (nor Keras) could write the
    model back; say so now rather than fail halfway through a conversion.
    """
    try:
        json.dumps(config, ensure_ascii=False, allow_nan=True).encode("utf-8")
    except UnicodeEncodeError as exc:
        bad = exc.object[exc.start : exc.end]
        raise InputError(
            f"Keras config: a string holds the lone surrogate {bad!r} (a "
            "\\ud800-\\udfff escape without its pair), which no UTF-8 file "
            "can hold; fix the name in the file"
        ) from None
    except (TypeError, ValueError, RecursionError):
        return  # not JSON-able here; the parser reports what is wrong


def build_architecture(config: Mapping[str, Any]) -> Architecture:
    """An Architecture from a Keras model config of any version.

    Raises InputError (or LimitExceededError) for malformed or hostile
    configs; the message names the layer and the key.
    """
    if not isinstance(config, Mapping):
        raise InputError(
            "Keras config: the model config must be a JSON object with "
            f"'class_name' and 'config', got {type(config).__name__}"
        )
    cls = config.get("class_name")
    if not isinstance(cls, str):
        raise InputError(
            f"Keras config: key 'class_name' is {cls!r}; expected the model "
            "class name (Sequential, Functional, Model)"
        )
    _check_encodable(config)
    form = detect_form(config)
    ctx = _Ctx(form)
    if not _is_model(config) and not isinstance(config.get("config"), list):
        ctx.warn(
            f"model class {cls!r} is not Sequential or Functional: its layers "
            "are not in the config (a subclassed model)"
        )
        return Architecture("keras", config, (), form, None, None, tuple(ctx.warnings))

    model = _parse_model(config, ctx, 0)
    run = _run_model(model, None, ctx, 0)
    layers = tuple(
        _make_layer(spec, result, model.trainable, ctx)
        for spec, result in zip(model.specs, run.results)
    )
    total: int | None = 0
    trainable: int | None = 0
    for layer in layers:
        if layer.params is None or total is None or trainable is None:
            total = trainable = None
            continue
        total += layer.params
        trainable += layer.trainable_params or 0
    return Architecture(
        framework="keras",
        config=config,
        layers=layers,
        form=form,
        total_params=total,
        trainable_params=trainable,
        warnings=tuple(ctx.warnings),
    )


def _make_layer(
    spec: _Spec, result: _Result, model_trainable: bool, ctx: _Ctx
) -> Layer:
    _layer_warnings(spec, result, ctx)
    weights = result.weights
    if result.known and all(w.shape is not None for w in weights):
        params: int | None = sum(prod(w.shape or ()) for w in weights)
        trainable: int | None = (
            sum(prod(w.shape or ()) for w in weights if w.trainable)
            if model_trainable
            else 0
        )
    else:
        params = trainable = None
    names = [w.name for w in weights] if result.known else []
    shapes = None
    if params is not None:
        shapes = tuple(tuple(int(d) for d in w.shape or ()) for w in weights)
    inbound = tuple(ref.layer for node in spec.nodes for ref in node)
    return Layer(
        name=spec.name,
        class_name=spec.class_name,
        config=spec.config,
        inbound=inbound,
        tensor_names=tuple(f"{spec.name}/{n}" for n in names),
        params=params,
        trainable_params=trainable,
        output_shape=_report_shape(result.node_outputs),
        module=spec.module,
        weight_shapes=shapes,
    )


def _report_shape(node_outputs: list[Shapes | None]) -> Any:
    """One shape, a list of shapes, or None when unknown or nodes disagree."""
    if not node_outputs or node_outputs[0] is None:
        return None
    if any(out != node_outputs[0] for out in node_outputs[1:]):
        return None
    outs = node_outputs[0]
    if any(s is None for s in outs):
        return None
    return list(outs[0]) if len(outs) == 1 else [list(s) for s in outs]


def _layer_warnings(spec: _Spec, result: _Result, ctx: _Ctx) -> None:
    stack: list[tuple[str, str, Mapping[str, Any], Any]] = [
        (spec.name, spec.class_name, spec.config, spec.module)
    ]
    for entry in _iter_layer_entries(spec.entry):
        cfg = entry.get("config")
        if entry is spec.entry or not isinstance(cfg, Mapping):
            continue
        if not isinstance(entry.get("class_name"), str):
            continue
        if entry.get("class_name") in ("__keras_tensor__",):
            continue
        name = str(cfg.get("name") or spec.name)
        stack.append((name, entry["class_name"], cfg, entry.get("module")))
    for name, cls, cfg, module in stack:
        if cls == "Lambda":
            ctx.warn(_lambda_warning(cfg, name))
        message = _module_warning(module, name, cls)
        if message:
            ctx.warn(message)
        for key, obj_cls, obj_module in _foreign_objects(cfg):
            ctx.warn(
                f"layer {name!r} names {obj_cls!r} from module {obj_module[:80]!r} "
                f"in its config key {key!r}, outside Keras: Keras would import "
                "that module to build the layer (modelconv never does)"
            )
    if result.known and result.weights and any(w.shape is None for w in result.weights):
        ctx.warn(
            f"layer {spec.name!r} ({spec.class_name}): parameter count unknown "
            "because an input dimension it needs is unknown"
        )
