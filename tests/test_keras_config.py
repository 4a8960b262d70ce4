"""keras_config: Keras configs of every form to layers, params and shapes.

Counts and shapes are checked against real Keras 3 and tf_keras models (built
once per module, never trained); Keras 1.2 configs are written by hand after
the layout Keras 1.2.2 writes; malformed configs are built in code.
"""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from modelconv.errors import InputError, LimitExceededError
from modelconv.keras_config import build_architecture, detect_form, layer_weight_names
from modelconv.model import Architecture

# --------------------------------------------------------------------------
# Models built with real Keras. Each builder takes the keras module (Keras 3
# or tf_keras: the layer API used here is common to both).


def _mlp(k: Any) -> Any:
    L = k.layers
    inp = k.Input((8,), name="x")
    h = L.Dense(16, activation="relu", name="d1")(inp)
    h = L.BatchNormalization(center=False, name="bn")(h)
    h = L.Dropout(0.5)(h)
    frozen = L.Dense(6, name="frozen")
    frozen.trainable = False
    h = frozen(h)
    h = L.Activation("tanh")(h)
    out = L.Dense(3, use_bias=False, name="out")(h)
    return k.Model(inp, out)


def _conv2d(k: Any) -> Any:
    L = k.layers
    return k.Sequential(
        [
            k.Input((32, 30, 3)),
            L.Conv2D(8, 3, strides=2, padding="same"),
            L.Conv2D(4, (3, 5), dilation_rate=2, use_bias=False),
            L.Conv2D(8, 3, groups=2, padding="same"),
            L.SeparableConv2D(6, 3, depth_multiplier=2),
            L.DepthwiseConv2D(3, depth_multiplier=2, padding="same", strides=2),
            L.MaxPooling2D(),
            L.ZeroPadding2D(((1, 2), (0, 1))),
            L.AveragePooling2D(pool_size=2, strides=1, padding="same"),
            L.Conv2DTranspose(5, 3, strides=2),
            L.Conv2DTranspose(3, 3, strides=2, padding="same", output_padding=1),
            L.Cropping2D(((1, 0), (2, 1))),
            L.UpSampling2D((2, 3)),
            L.BatchNormalization(scale=False),
            L.GlobalAveragePooling2D(keepdims=True),
            L.Flatten(),
            L.Dense(4),
        ],
        name="conv2d_model",
    )


def _channels_first(k: Any) -> Any:
    L = k.layers
    return k.Sequential(
        [
            k.Input((3, 17, 16)),
            L.Conv2D(5, 3, data_format="channels_first", strides=(2, 1)),
            L.MaxPooling2D(data_format="channels_first", padding="same", strides=3),
            L.BatchNormalization(axis=1),
            L.GlobalMaxPooling2D(data_format="channels_first"),
        ]
    )


def _conv1d3d(k: Any) -> Any:
    L = k.layers
    a = k.Input((20, 4), name="seq")
    x = L.Conv1D(6, 3, padding="causal", dilation_rate=2)(a)
    x = L.SeparableConv1D(5, 3, depth_multiplier=3)(x)
    x = L.DepthwiseConv1D(3, depth_multiplier=2)(x)
    x = L.MaxPooling1D(3)(x)
    x = L.AveragePooling1D(2, padding="same")(x)
    x = L.UpSampling1D(3)(x)
    x = L.ZeroPadding1D(2)(x)
    x = L.Conv1DTranspose(4, 3, strides=2)(x)
    x = L.GlobalMaxPooling1D()(x)
    b = k.Input((9, 12, 7, 2), name="vol")
    y = L.Conv3D(4, 3, strides=(1, 2, 1))(b)
    y = L.MaxPooling3D()(y)
    y = L.AveragePooling3D(pool_size=(1, 2, 1))(y)
    y = L.Conv3DTranspose(2, 2, strides=2)(y)
    y = L.GlobalAveragePooling3D()(y)
    return k.Model([a, b], [x, y])


def _recurrent(k: Any) -> Any:
    L = k.layers
    inp = k.Input((10, 5))
    x = L.LSTM(7, return_sequences=True)(inp)
    x = L.GRU(6, return_sequences=True, reset_after=False)(x)
    x = L.GRU(4, return_sequences=True)(x)
    x = L.SimpleRNN(3, return_sequences=True, use_bias=False)(x)
    x = L.Bidirectional(L.LSTM(2, return_sequences=True), merge_mode="sum")(x)
    x = L.Bidirectional(L.GRU(3, return_sequences=True), merge_mode="concat")(x)
    seq, h, c = L.LSTM(4, return_state=True, name="stateful_out")(x)
    both = L.Bidirectional(L.SimpleRNN(2), merge_mode=None, name="bi_none")(x)
    out = L.Concatenate()([seq, h, c, *both])
    return k.Model(inp, out)


def _embedding(k: Any) -> Any:
    L = k.layers
    inp = k.Input((12,), dtype="int32")
    x = L.Embedding(100, 8)(inp)
    x = L.TimeDistributed(L.Dense(5))(x)
    x = L.LayerNormalization()(x)
    x = L.LayerNormalization(axis=[1, 2], center=False)(x)
    x = L.Reshape((-1, 4))(x)
    x = L.Permute((2, 1))(x)
    x = L.PReLU(shared_axes=[2])(x)
    x = L.Flatten()(x)
    x = L.RepeatVector(3)(x)
    x = L.TimeDistributed(L.Conv1D(2, 3), name="td_conv")(L.Reshape((3, 60, 1))(x))
    return k.Model(inp, x)


def _graph(k: Any) -> Any:
    """Several inputs and outputs, shared layers, nested models."""
    L = k.layers
    a = k.Input((8,), name="a")
    b = k.Input((8,), name="b")
    inner_seq = k.Sequential(
        [k.Input((8,)), L.Dense(5, name="s1"), L.BatchNormalization(name="s_bn")],
        name="inner_seq",
    )
    i = k.Input((5,))
    j = L.Dense(4, name="f1")(i)
    j = L.Dense(4, name="f2")(j)
    inner_fn = k.Model(i, [j, L.Dense(2, name="f3")(j)], name="inner_fn")
    frozen = k.Sequential([k.Input((4,)), L.Dense(4, name="z1")], name="frozen_seq")
    frozen.trainable = False
    shared = L.Dense(8, name="shared")
    sa, sb = shared(a), shared(b)
    x = inner_seq(L.Add()([sa, sb]))
    p, q = inner_fn(x)
    y = inner_seq(L.Multiply()([a, b]))
    merged = L.Concatenate(axis=1)([p, frozen(p), L.Average()([p, p])])
    m = L.Maximum()([L.Subtract()([x, y]), L.Minimum()([x, y])])
    dot = L.Dot(axes=1)([p, L.Dense(4)(q)])
    return k.Model([a, b], [merged, q, m, dot])


def _weightless(k: Any) -> Any:
    L = k.layers
    inp = k.Input((6, 6, 2))
    x = L.ReLU()(inp)
    x = L.LeakyReLU()(x)
    x = L.GaussianNoise(0.1)(x)
    x = L.SpatialDropout2D(0.1)(x)
    x = L.Cropping2D(1)(x)
    x = L.Reshape((4, 8))(x)
    x = L.Cropping1D((1, 2))(x)
    x = L.Softmax()(x)
    x = L.UpSampling1D(2)(x)
    return k.Model(inp, x)


def _attention(k: Any) -> Any:
    L = k.layers
    q = k.Input((6, 8), name="q")
    v = k.Input((5, 4), name="v")
    a = L.MultiHeadAttention(2, 3, name="cross")(q, v)
    b = L.MultiHeadAttention(
        num_heads=2, key_dim=4, value_dim=5, output_shape=7, use_bias=False
    )(a, a)
    return k.Model([q, v], b)


BUILDERS: dict[str, Callable[[Any], Any]] = {
    "attention": _attention,
    "mlp": _mlp,
    "conv2d": _conv2d,
    "channels_first": _channels_first,
    "conv1d3d": _conv1d3d,
    "recurrent": _recurrent,
    "embedding": _embedding,
    "graph": _graph,
    "weightless": _weightless,
}


def _tensor_count(weights: list[Any]) -> int:
    total = 0
    for w in weights:
        n = 1
        for d in w.shape:
            n *= int(d)
        total += n
    return total


def _keras_shape(layer: Any, keras3: bool) -> Any:
    """The layer's output shape as Keras reports it, or None if ambiguous."""
    if keras3:
        if len(layer._inbound_nodes) > 1:
            return None
        out = layer.output
        if isinstance(out, (list, tuple)):
            shapes = [list(t.shape) for t in out]
            return shapes[0] if len(shapes) == 1 else shapes
        return list(out.shape)
    try:
        shape = layer.output_shape
    except (AttributeError, RuntimeError):
        return None
    if isinstance(shape, list):
        # tf_keras reports an InputLayer's shape as a list of one tuple.
        shapes = [list(s) for s in shape]
        return shapes[0] if len(shapes) == 1 else shapes
    return list(shape)


_CELL = re.compile(r"^(lstm|gru|simple_rnn)_cell(_\d+)?$")


def _canonical(name: str) -> str:
    """Canonical name of a Keras variable (COMMON naming rule)."""
    parts = [p for p in name.removesuffix(":0").split("/") if not _CELL.match(p)]
    return "/".join(parts)


def _check_against_keras(model: Any, keras3: bool) -> Architecture:
    config = json.loads(model.to_json())
    arch = build_architecture(config)
    assert arch.form == (3 if keras3 else 2)
    assert arch.total_params == model.count_params()
    assert arch.trainable_params == _tensor_count(model.trainable_weights)
    names = [layer.name for layer in model.layers]
    assert [layer.name for layer in arch.layers] == names
    for layer in model.layers:
        ours = arch.layer(layer.name)
        assert ours is not None
        assert ours.params == layer.count_params(), layer.name
        assert ours.trainable_params == _tensor_count(layer.trainable_weights), (
            layer.name
        )
        expected = _keras_shape(layer, keras3)
        if expected is not None:
            assert ours.output_shape == expected, layer.name
        legacy = layer.trainable_weights + layer.non_trainable_weights
        keras_names = [_canonical(w.path if keras3 else w.name) for w in legacy]
        # Keras >= 3.3 prefixes a Sequential's own name; both Kerases leave
        # the nested model's name out of the weights of a Functional built
        # before it was wrapped.
        keras_names = [n.removeprefix(model.name + "/") for n in keras_names]
        keras_names = [
            n if n.startswith(layer.name + "/") else f"{layer.name}/{n}"
            for n in keras_names
        ]
        assert list(ours.tensor_names) == keras_names, layer.name
    return arch


@pytest.fixture(scope="module")
def keras3_models(keras3: Any) -> dict[str, Any]:
    return {name: build(keras3) for name, build in BUILDERS.items()}


@pytest.fixture(scope="module")
def tf_keras_models(tf_keras: Any) -> dict[str, Any]:
    return {name: build(tf_keras) for name, build in BUILDERS.items()}


@pytest.mark.keras
@pytest.mark.parametrize("name", sorted(BUILDERS))
def test_keras3_models_match_keras(keras3_models: dict[str, Any], name: str) -> None:
    _check_against_keras(keras3_models[name], keras3=True)


@pytest.mark.keras
@pytest.mark.parametrize("name", sorted(BUILDERS))
def test_tf_keras_models_match_keras(
    tf_keras_models: dict[str, Any], name: str
) -> None:
    _check_against_keras(tf_keras_models[name], keras3=False)
