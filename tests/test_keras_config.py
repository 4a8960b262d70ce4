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
    h = L.BatchNormalization(renorm=True, name="bn_renorm")(h)
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
    y = L.Resizing(5, 7)(inp)
    y = L.CenterCrop(3, 4)(L.Rescaling(0.5)(y))
    return k.Model(inp, [x, y])


def _attention(k: Any) -> Any:
    L = k.layers
    q = k.Input((6, 8), name="q")
    v = k.Input((5, 4), name="v")
    a = L.MultiHeadAttention(2, 3, name="cross")(q, v)
    b = L.MultiHeadAttention(
        num_heads=2, key_dim=4, value_dim=5, output_shape=7, use_bias=False
    )(a, a)
    return k.Model([q, v], b)


def _more_layers(k: Any) -> Any:
    L = k.layers
    frames = k.Input((4, 10, 9, 2), name="frames")
    x = L.ConvLSTM2D(3, 3, strides=2, padding="same", return_sequences=True)(frames)
    y, h, c = L.ConvLSTM2D(2, (3, 2), return_state=True, name="cl_state")(x)
    seq = k.Input((7, 6), name="seq")
    n = L.Normalization(axis=-1)(seq)
    fixed = L.Normalization(mean=0.5, variance=2.0, name="fixed")(seq)
    a = L.Attention(use_scale=True, score_mode="concat")([n, fixed])
    b = L.AdditiveAttention()([a, n])
    g = L.GroupNormalization(groups=2)(b)
    return k.Model([frames, seq], [y, h, c, g])


def _shared_and_states(k: Any) -> Any:
    """A layer shared across input ranks; Bidirectional returning states."""
    L = k.layers
    flat = k.Input((4,), name="flat")
    seq = k.Input((3, 4), name="seq")
    shared = L.Dense(2, name="shared_rank")
    one, many = shared(flat), shared(seq)
    out, *states = L.Bidirectional(L.LSTM(3, return_state=True), name="bi_state")(
        L.Concatenate(axis=-1)([many, seq])
    )
    return k.Model([flat, seq], [one, out, *states])


BUILDERS: dict[str, Callable[[Any], Any]] = {
    "shared_and_states": _shared_and_states,
    "more_layers": _more_layers,
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


_CELL = re.compile(r"^(lstm|gru|simple_rnn|conv_lstm(\dd)?)_cell(_\d+)?$")


def _canonical(name: str) -> str:
    """Canonical name of a Keras variable (COMMON naming rule)."""
    parts = [p for p in name.removesuffix(":0").split("/") if not _CELL.match(p)]
    return "/".join(parts)


def _check_against_keras(model: Any, keras3: bool) -> Architecture:
    """Totals, per-layer counts, shapes and weight names equal Keras's."""
    config = json.loads(model.to_json())
    arch = build_architecture(config)
    assert arch.form == (3 if keras3 else 2)
    assert arch.total_params == model.count_params()
    assert arch.trainable_params == _tensor_count(model.trainable_weights)
    names = [layer.name for layer in model.layers]
    # keras.ops calls are graph nodes of the Architecture, not Keras layers.
    layers = [
        x for x in arch.layers if not (x.module or "").startswith("keras.src.ops")
    ]
    assert [layer.name for layer in layers] == names
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
def test_shared_layer_with_different_shapes_reports_none(
    keras3_models: dict[str, Any],
) -> None:
    model = keras3_models["shared_and_states"]
    arch = build_architecture(json.loads(model.to_json()))
    shared = arch.layer("shared_rank")
    assert shared is not None
    assert shared.inbound == ("flat", "seq")
    assert shared.output_shape is None  # [None, 2] then [None, 3, 2]
    assert shared.params == 10
    bi = arch.layer("bi_state")
    assert bi is not None
    assert bi.output_shape == [[None, 6], [None, 3], [None, 3], [None, 3], [None, 3]]


@pytest.mark.keras
@pytest.mark.parametrize("name", sorted(BUILDERS))
def test_tf_keras_models_match_keras(
    tf_keras_models: dict[str, Any], name: str
) -> None:
    _check_against_keras(tf_keras_models[name], keras3=False)


# --------------------------------------------------------------------------
# Keras 1.2 configs, written by hand after the layouts Keras 1.2.2 writes:
# Sequential.get_config returns a bare list of {"class_name", "config"}
# (keras/models.py); Container.get_config writes inbound nodes as
# [name, node_index, tensor_index] triples (keras/engine/topology.py); layer
# configs use output_dim, nb_filter, nb_row/nb_col, border_mode, init,
# W_regularizer, dim_ordering, bias, p, consume_less (keras/layers/*.py).


def _k1(cls: str, **config: Any) -> dict[str, Any]:
    return {"class_name": cls, "config": {"trainable": True, **config}}


def _k1_dense(name: str, units: int, **extra: Any) -> dict[str, Any]:
    return _k1(
        "Dense",
        name=name,
        output_dim=units,
        init="glorot_uniform",
        activation="relu",
        W_regularizer=None,
        b_regularizer=None,
        activity_regularizer=None,
        W_constraint=None,
        b_constraint=None,
        bias=extra.pop("bias", True),
        input_dim=extra.pop("input_dim", None),
        **extra,
    )


def test_keras1_sequential_list_of_dense() -> None:
    config = {
        "class_name": "Sequential",
        "keras_version": "1.2.2",
        "config": [
            _k1_dense("dense_1", 32, input_dim=784, batch_input_shape=[None, 784],
                      input_dtype="float32"),
            _k1("Dropout", name="dropout_1", p=0.5),
            _k1_dense("dense_2", 10, bias=False),
        ],
    }  # fmt: skip
    arch = build_architecture(config)
    assert arch.form == 1
    assert [layer.params for layer in arch.layers] == [784 * 32 + 32, 0, 320]
    assert arch.total_params == arch.trainable_params == 25120 + 320
    assert arch.layers[2].output_shape == [None, 10]
    assert arch.layers[2].inbound == ("dropout_1",)
    assert arch.layers[0].tensor_names == ("dense_1/kernel", "dense_1/bias")
    assert arch.layers[2].tensor_names == ("dense_2/kernel",)


def test_keras1_convolution_th_ordering() -> None:
    conv = _k1(
        "Convolution2D", name="convolution2d_1", nb_filter=8, nb_row=3, nb_col=5,
        init="glorot_uniform", activation="relu", border_mode="valid",
        subsample=[1, 2], dim_ordering="th", W_regularizer=None, bias=True,
        batch_input_shape=[None, 1, 28, 28], input_dtype="float32",
    )  # fmt: skip
    pool = _k1(
        "MaxPooling2D", name="maxpooling2d_1", pool_size=[2, 2],
        border_mode="valid", strides=None, dim_ordering="th",
    )  # fmt: skip
    conv1d = _k1(
        "Convolution1D", name="c1", nb_filter=4, filter_length=3,
        border_mode="same", subsample_length=1, bias=True,
        input_dim=None, input_length=None,
    )  # fmt: skip
    config = {
        "class_name": "Sequential",
        "config": [
            conv,
            pool,
            _k1("Flatten", name="flatten_1"),
            _k1("Reshape", name="r", target_shape=[-1, 13]),
            conv1d,
            _k1("MaxPooling1D", name="p1", pool_length=2, stride=None,
                border_mode="valid"),
            _k1("BatchNormalization", name="bn", mode=0, axis=-1,
                epsilon=0.001, momentum=0.99),
            _k1_dense("dense_1", 10),
        ],
    }  # fmt: skip
    arch = build_architecture(config)
    assert arch.form == 1
    shapes = [layer.output_shape for layer in arch.layers]
    # th ordering: (channels, rows, cols); cols 28 -> (28 - 5) // 2 + 1 = 12.
    assert shapes[:4] == [
        [None, 8, 26, 12],
        [None, 8, 13, 6],
        [None, 624],
        [None, 48, 13],
    ]
    assert shapes[4:] == [[None, 48, 4], [None, 24, 4], [None, 24, 4], [None, 24, 10]]
    assert arch.layers[0].params == 8 * 1 * 3 * 5 + 8
    assert arch.layers[4].params == 3 * 13 * 4 + 4
    bn = arch.layers[6]
    assert (bn.params, bn.trainable_params) == (16, 8)
    assert bn.tensor_names == (
        "bn/gamma", "bn/beta", "bn/moving_mean", "bn/moving_variance",
    )  # fmt: skip


def test_keras1_lstm_with_split_gate_weights() -> None:
    embedding = _k1(
        "Embedding", name="embedding_1", input_dim=1000, output_dim=16,
        init="uniform", input_length=20, mask_zero=False, dropout=0.0,
        batch_input_shape=[None, 20], input_dtype="int32",
    )  # fmt: skip
    lstm = _k1(
        "LSTM", name="lstm_1", output_dim=8, init="glorot_uniform",
        inner_init="orthogonal", return_sequences=False, go_backwards=False,
        stateful=False, unroll=False, consume_less="cpu",
        input_dim=16, input_length=None,
    )  # fmt: skip
    gru = dict(lstm, config=dict(lstm["config"], name="gru_1", consume_less="gpu"))
    gru["class_name"] = "GRU"
    config = {
        "class_name": "Sequential",
        "config": [
            embedding,
            _k1("Bidirectional", name="bidirectional_1", merge_mode="concat",
                layer=dict(lstm, config=dict(lstm["config"], return_sequences=True))),
            gru,
            _k1_dense("dense_1", 1),
        ],
    }  # fmt: skip
    arch = build_architecture(config)
    assert arch.form == 1
    lstm_params = 4 * (16 * 8 + 8 * 8 + 8)
    assert [layer.params for layer in arch.layers] == [
        16000,
        2 * lstm_params,
        3 * (16 * 8 + 8 * 8 + 8),
        9,
    ]
    assert arch.layers[1].output_shape == [None, 20, 16]
    # Keras 1.2 LSTM (consume_less "cpu") trainable_weights: i, c, f, o.
    names = arch.layers[1].tensor_names
    assert len(names) == 24
    assert names[:4] == (
        "bidirectional_1/forward_lstm_1/kernel_i",
        "bidirectional_1/forward_lstm_1/recurrent_kernel_i",
        "bidirectional_1/forward_lstm_1/bias_i",
        "bidirectional_1/forward_lstm_1/kernel_c",
    )
    assert names[12] == "bidirectional_1/backward_lstm_1/kernel_i"
    assert arch.layers[2].tensor_names == (
        "gru_1/kernel", "gru_1/recurrent_kernel", "gru_1/bias",
    )  # fmt: skip


def _k1_node(*sources: str) -> list[list[list[Any]]]:
    return [[[source, 0, 0] for source in sources]]


def test_keras1_functional_model_with_merge_and_shared_layer() -> None:
    def layer(cls: str, name: str, nodes: Any, **config: Any) -> dict[str, Any]:
        return {
            "name": name,
            "class_name": cls,
            "config": {"name": name, "trainable": True, **config},
            "inbound_nodes": nodes,
        }

    inp = {"batch_input_shape": [None, 12], "input_dtype": "float32", "sparse": False}
    shared = _k1_dense("shared", 6)["config"]
    config = {
        "class_name": "Model",
        "config": {
            "name": "model_1",
            "layers": [
                layer("InputLayer", "input_1", [], **inp),
                layer("InputLayer", "input_2", [], **inp),
                {"name": "shared", "class_name": "Dense", "config": shared,
                 "inbound_nodes": _k1_node("input_1") + _k1_node("input_2")},
                layer("Merge", "merge_1", [[["shared", 0, 0], ["shared", 1, 0]]],
                      mode="concat", concat_axis=-1, dot_axes=-1, output_shape=None,
                      output_mask=None, arguments={}, mode_type="raw",
                      output_shape_type="raw"),
                layer("Merge", "merge_2", [[["shared", 0, 0], ["shared", 1, 0]]],
                      mode="sum", concat_axis=-1),
            ],
            "input_layers": [["input_1", 0, 0], ["input_2", 0, 0]],
            "output_layers": [["merge_1", 0, 0], ["merge_2", 0, 0]],
        },
    }  # fmt: skip
    arch = build_architecture(config)
    assert arch.form == 1
    assert arch.total_params == 12 * 6 + 6
    shared_layer = arch.layer("shared")
    assert shared_layer is not None
    assert shared_layer.inbound == ("input_1", "input_2")
    assert shared_layer.output_shape == [None, 6]
    assert arch.layer("merge_1").output_shape == [None, 12]  # type: ignore[union-attr]
    assert arch.layer("merge_2").output_shape == [None, 6]  # type: ignore[union-attr]
    assert arch.layer("merge_1").inbound == ("shared", "shared")  # type: ignore[union-attr]


def test_keras1_sequential_starting_with_merge_of_branches() -> None:
    left = {
        "class_name": "Sequential",
        "config": [_k1_dense("dense_1", 4, input_dim=3, batch_input_shape=[None, 3])],
    }
    right = {
        "class_name": "Sequential",
        "config": [
            _k1_dense("dense_2", 5, input_dim=2, batch_input_shape=[None, 2]),
            _k1("Activation", name="act", activation="relu"),
        ],
    }
    config = {
        "class_name": "Sequential",
        "config": [
            _k1("Merge", name="merge_1", mode="concat", concat_axis=-1,
                layers=[left, right]),
            _k1_dense("dense_3", 2),
        ],
    }  # fmt: skip
    arch = build_architecture(config)
    assert [layer.name for layer in arch.layers] == [
        "dense_1", "dense_2", "act", "merge_1", "dense_3",
    ]  # fmt: skip
    assert arch.layer("merge_1").inbound == ("dense_1", "act")  # type: ignore[union-attr]
    assert arch.layer("merge_1").output_shape == [None, 9]  # type: ignore[union-attr]
    assert arch.total_params == (3 * 4 + 4) + (2 * 5 + 5) + (9 * 2 + 2)


# --------------------------------------------------------------------------
# Keras 2 and 3 forms written by hand: small configs for the cases real
# Keras cannot easily produce (custom classes, unknown dims).


def _k2_layer(cls: str, name: str, nodes: Any = (), **config: Any) -> dict[str, Any]:
    """A Keras 2 (tf.keras) functional layer entry."""
    return {
        "class_name": cls,
        "name": name,
        "config": {"name": name, "trainable": True, **config},
        "inbound_nodes": [[[src, 0, 0, {}] for src in node] for node in nodes],
    }


def _k2_model(*layers: dict[str, Any], inputs: Any, outputs: Any) -> dict[str, Any]:
    return {
        "class_name": "Functional",
        "config": {
            "name": "model",
            "layers": list(layers),
            "input_layers": [[n, 0, 0] for n in inputs],
            "output_layers": [[n, 0, 0] for n in outputs],
        },
    }


def _simple_k2() -> dict[str, Any]:
    return _k2_model(
        _k2_layer("InputLayer", "in", batch_input_shape=[None, 4]),
        _k2_layer("Dense", "d1", [["in"]], units=3),
        _k2_layer("Dense", "d2", [["d1"]], units=2, use_bias=False),
        inputs=["in"],
        outputs=["d2"],
    )


def test_keras2_sequential_as_name_and_layers_without_input_layer() -> None:
    config = {
        "class_name": "Sequential",
        "config": {
            "name": "sequential",
            "layers": [
                {"class_name": "Dense", "config": {"name": "dense", "units": 5,
                 "batch_input_shape": [None, 7]}},
                {"class_name": "Dense", "config": {"name": "dense_1", "units": 1}},
            ],
        },
    }  # fmt: skip
    arch = build_architecture(config)
    assert arch.form == 2
    assert arch.total_params == 7 * 5 + 5 + 6
    assert arch.layers[1].inbound == ("dense",)


def test_unknown_input_dim_gives_none_never_a_guess() -> None:
    config = {
        "class_name": "Sequential",
        "config": {"name": "s", "layers": [
            {"class_name": "Dense", "config": {"name": "a", "units": 5}},
            {"class_name": "Dense", "config": {"name": "b", "units": 1}},
        ]},
    }  # fmt: skip
    arch = build_architecture(config)
    assert arch.layers[0].params is None
    assert arch.layers[0].output_shape is None
    # Limitation: a's output rank is unknown, so b's input is too, although
    # its width (a's units) is known; b's count is then unknown as well.
    assert arch.layers[1].params is None
    assert arch.total_params is None and arch.trainable_params is None
    assert any("'a'" in w and "unknown" in w for w in arch.warnings)


def _k3_config() -> dict[str, Any]:
    """A Keras 3 functional config with a custom class in the middle."""

    def tensor(src: str, shape: list[Any]) -> dict[str, Any]:
        return {
            "class_name": "__keras_tensor__",
            "config": {
                "shape": shape,
                "dtype": "float32",
                "keras_history": [src, 0, 0],
            },
        }

    return {
        "module": "keras.src.models.functional",
        "class_name": "Functional",
        "config": {
            "name": "f",
            "layers": [
                {"module": "keras.layers", "class_name": "InputLayer", "name": "i",
                 "config": {"name": "i", "batch_shape": [None, 3]},
                 "inbound_nodes": []},
                {"module": "my_package.layers", "class_name": "Mystery",
                 "registered_name": "Custom>Mystery", "name": "m",
                 "config": {"name": "m"},
                 "inbound_nodes": [{"args": [tensor("i", [None, 3])], "kwargs": {}}]},
                {"module": "keras.layers", "class_name": "Dense", "name": "d",
                 "config": {"name": "d", "units": 2},
                 "inbound_nodes": [{"args": [tensor("m", [None, 9])], "kwargs": {}}]},
            ],
            "input_layers": [["i", 0, 0]],
            "output_layers": [["d", 0, 0]],
        },
    }  # fmt: skip


def test_keras3_build_config_and_recorded_shapes_fill_gaps() -> None:
    config = _k3_config()
    arch = build_architecture(config)
    assert arch.form == 3
    mystery, dense = arch.layers[1], arch.layers[2]
    assert mystery.params is None and mystery.output_shape is None
    assert mystery.module == "my_package.layers"
    # The keras_tensor record says what Mystery produced: 9 wide.
    assert dense.params == 9 * 2 + 2
    assert dense.output_shape == [None, 2]
    assert arch.total_params is None
    assert any("my_package.layers" in w for w in arch.warnings)
    assert any("'Mystery'" in w and "unknown" in w for w in arch.warnings)


def test_subclassed_model_has_no_layers_and_a_warning() -> None:
    arch = build_architecture(
        {"class_name": "MyModel", "module": "mine", "config": {"units": 3}}
    )
    assert arch.layers == () and arch.total_params is None
    assert arch.warnings


def test_lambda_warnings_say_whether_bytecode_is_carried() -> None:
    k2_lambda = _k2_layer(
        "Lambda", "lam", [["in"]], function=["4wEAAAAAAAAA\n", None, None],
        function_type="lambda", module="__main__", output_shape=[6],
        output_shape_type="raw", arguments={},
    )  # fmt: skip
    named = _k2_layer(
        "Lambda", "named", [["in"]], function="my_function",
        function_type="function", module="my_module",
    )  # fmt: skip
    config = _k2_model(
        _k2_layer("InputLayer", "in", batch_input_shape=[None, 4]),
        k2_lambda,
        named,
        inputs=["in"],
        outputs=["lam", "named"],
    )
    arch = build_architecture(config)
    assert arch.layer("lam").output_shape == [None, 6]  # type: ignore[union-attr]
    assert arch.layer("named").output_shape is None  # type: ignore[union-attr]
    text = "\n".join(arch.warnings)
    assert "'lam'" in text and "bytecode" in text
    assert "'named'" in text and "my_function" in text
    named_warning = [w for w in arch.warnings if "'named'" in w][0]
    assert "bytecode" not in named_warning


def test_layer_weight_names_for_helpers() -> None:
    dense = {"class_name": "Dense", "config": {"name": "d", "units": 3}}
    assert layer_weight_names(dense) == ["kernel", "bias"]
    bn = {"class_name": "BatchNormalization",
          "config": {"name": "bn", "center": False, "scale": True}}  # fmt: skip
    assert layer_weight_names(bn) == ["gamma", "moving_mean", "moving_variance"]
    bi = {"class_name": "Bidirectional", "config": {
        "name": "bi", "layer": {"class_name": "GRU",
                                "config": {"name": "gru", "units": 2}}}}  # fmt: skip
    assert layer_weight_names(bi) == [
        f"{d}_gru/{w}"
        for d in ("forward", "backward")
        for w in ("kernel", "recurrent_kernel", "bias")
    ]
    nested = copy.deepcopy(_simple_k2())
    nested["config"]["layers"][1]["config"]["trainable"] = False
    # Legacy order: trainable weights first (d2), then frozen d1.
    assert layer_weight_names(nested) == ["d2/kernel", "d1/kernel", "d1/bias"]
    assert layer_weight_names({"class_name": "Mystery", "config": {}}) == []


def test_detect_form() -> None:
    assert detect_form(_simple_k2()) == 2
    assert detect_form({"class_name": "Sequential", "config": [_k1_dense("d", 2)]}) == 1


# --------------------------------------------------------------------------
# Malformed and hostile configs: always InputError, naming layer and key.


def _mutated(edit: Callable[[dict[str, Any]], None]) -> dict[str, Any]:
    config = copy.deepcopy(_simple_k2())
    edit(config)
    return config


def _layers(config: dict[str, Any]) -> list[dict[str, Any]]:
    return config["config"]["layers"]


MALFORMED: dict[str, tuple[Any, str]] = {
    "not a mapping": ([1, 2], "JSON object"),
    "no class_name": ({"config": {}}, "class_name"),
    "layers not a list": (
        {"class_name": "Functional", "config": {"name": "m", "layers": 3}},
        "'layers'",
    ),
    "units a string": (
        _mutated(lambda c: _layers(c)[1]["config"].update(units="3")),
        "'d1', key 'units'",
    ),
    "units negative": (
        _mutated(lambda c: _layers(c)[1]["config"].update(units=-3)),
        "'units'",
    ),
    "units absurd": (
        _mutated(lambda c: _layers(c)[1]["config"].update(units=10**30)),
        "'units'",
    ),
    "units boolean": (
        _mutated(lambda c: _layers(c)[1]["config"].update(units=True)),
        "'units'",
    ),
    "unknown inbound layer": (
        _mutated(lambda c: _layers(c)[2].update(inbound_nodes=[[["ghost", 0, 0, {}]]])),
        "'ghost'",
    ),
    "cycle": (
        _mutated(lambda c: _layers(c)[1].update(inbound_nodes=[[["d2", 0, 0, {}]]])),
        "cycle",
    ),
    "self loop": (
        _mutated(lambda c: _layers(c)[1].update(inbound_nodes=[[["d1", 0, 0, {}]]])),
        "cycle",
    ),
    "node index out of range": (
        _mutated(lambda c: _layers(c)[2].update(inbound_nodes=[[["d1", 5, 0, {}]]])),
        "node 5",
    ),
    "inbound entry malformed": (
        _mutated(lambda c: _layers(c)[2].update(inbound_nodes=[[["d1"]]])),
        "'d2', key 'inbound_nodes'",
    ),
    "inbound nodes not a list": (
        _mutated(lambda c: _layers(c)[2].update(inbound_nodes="d1")),
        "'inbound_nodes'",
    ),
    "duplicate layer names": (
        _mutated(lambda c: _layers(c)[2]["config"].update(name="d1") or
                 _layers(c)[2].update(name="d1")),
        "two layers named 'd1'",
    ),
    "layer without name": (
        _mutated(lambda c: _layers(c)[2].pop("name") and
                 _layers(c)[2]["config"].pop("name")),
        "'name'",
    ),
    "layer config missing": (
        _mutated(lambda c: _layers(c)[2].pop("config")),
        "'config'",
    ),
    "kernel size wrong length": (
        {"class_name": "Sequential", "config": {"name": "s", "layers": [
            {"class_name": "Conv2D", "config": {"name": "c", "filters": 2,
             "kernel_size": [3, 3, 3], "batch_input_shape": [None, 8, 8, 1]}}]}},
        "'c', key 'kernel_size'",
    ),
    "shape with a string": (
        _mutated(lambda c: _layers(c)[0]["config"].update(
            batch_input_shape=[None, "4"])),
        "'in', key 'batch_input_shape'",
    ),
    "unknown output layer": (
        _mutated(lambda c: c["config"].update(output_layers=[["nope", 0, 0]])),
        "'nope'",
    ),
    "keras3 history malformed": (
        _mutated(lambda c: _layers(c)[2].update(inbound_nodes=[{"args": [
            {"class_name": "__keras_tensor__", "config": {"keras_history": "d1"}}
        ]}])),
        "'keras_history'",
    ),
}  # fmt: skip


@pytest.mark.parametrize("case", sorted(MALFORMED))
def test_malformed_configs_raise_input_error(case: str) -> None:
    config, expected = MALFORMED[case]
    with pytest.raises(InputError) as info:
        build_architecture(config)
    message = str(info.value)
    assert expected in message
    assert "\n" not in message


def test_deep_nesting_is_refused() -> None:
    config: dict[str, Any] = {
        "class_name": "Dense",
        "config": {"name": "d", "units": 1},
    }
    for level in range(5000):
        config = {"class_name": "Sequential",
                  "config": {"name": f"s{level}", "layers": [config]}}  # fmt: skip
    with pytest.raises(LimitExceededError):
        build_architecture(config)


def test_deep_wrapper_nesting_is_refused() -> None:
    layer: dict[str, Any] = {"class_name": "Dense", "config": {"name": "d", "units": 1}}
    for level in range(5000):
        layer = {"class_name": "TimeDistributed",
                 "config": {"name": f"t{level}", "layer": layer}}  # fmt: skip
    config = {"class_name": "Sequential", "config": {"name": "s", "layers": [layer]}}
    with pytest.raises(LimitExceededError):
        build_architecture(config)


def test_shared_nested_models_do_not_blow_up() -> None:
    """Each level calls the level below twice; evaluation stays linear."""
    model: dict[str, Any] = _simple_k2()
    for level in range(40):
        inner = copy.deepcopy(model)
        inner["config"]["name"] = inner_name = f"m{level}"
        model = _k2_model(
            _k2_layer("InputLayer", "in", batch_input_shape=[None, 4]),
            {**inner, "name": inner_name,
             "inbound_nodes": [[["in", 0, 0, {}]], [["in", 0, 0, {}]]]},
            inputs=["in"],
            outputs=[inner_name],
        )  # fmt: skip
    arch = build_architecture(model)
    assert arch.total_params == 4 * 3 + 3 + 3 * 2


def _json_values() -> st.SearchStrategy[Any]:
    scalars = st.one_of(
        st.none(),
        st.booleans(),
        st.integers(min_value=-(2**70), max_value=2**70),
        st.floats(allow_nan=True),
        st.text(max_size=6),
    )
    return st.recursive(
        scalars,
        lambda children: st.one_of(
            st.lists(children, max_size=4),
            st.dictionaries(st.text(max_size=6), children, max_size=4),
        ),
        max_leaves=12,
    )


def _paths(value: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    found = [prefix]
    if isinstance(value, dict):
        for key, child in value.items():
            found += _paths(child, (*prefix, key))
    elif isinstance(value, list):
        for index, child in enumerate(value):
            found += _paths(child, (*prefix, index))
    return found


_SEEDS = [
    _simple_k2(),
    _k3_config(),
    {"class_name": "Sequential", "config": [_k1_dense("d", 2, input_dim=3)]},
    MALFORMED["units a string"][0],
]


@given(
    seed=st.sampled_from(range(len(_SEEDS))),
    pick=st.integers(min_value=0),
    replacement=_json_values(),
)
def test_fuzzed_configs_raise_only_input_error(
    seed: int, pick: int, replacement: Any
) -> None:
    config = copy.deepcopy(_SEEDS[seed])
    paths = _paths(config)
    path = paths[pick % len(paths)]
    if not path:
        config = replacement
    else:
        parent = config
        for key in path[:-1]:
            parent = parent[key]
        parent[path[-1]] = replacement
    try:
        arch = build_architecture(config)
    except InputError:
        return
    assert isinstance(arch, Architecture)


# --------------------------------------------------------------------------
# The real Keras-written fixtures (fixtures/MANIFEST.json lists their facts).

_CONFIG_KINDS = ("keras-model-h5", "keras-json", "keras-archive")


def _fixture_config(path: Any, kind: str) -> dict[str, Any]:
    """The model config of a trusted fixture, read the plain way."""
    if kind == "keras-json":
        return json.loads(path.read_text())
    if kind == "keras-archive":
        import zipfile

        with zipfile.ZipFile(path) as archive:
            return json.loads(archive.read("config.json"))
    import h5py

    with h5py.File(path, "r") as handle:
        raw = handle.attrs["model_config"]
    return json.loads(raw.decode() if isinstance(raw, bytes) else raw)


def _manifest_entries() -> list[dict[str, Any]]:
    from pathlib import Path

    manifest = Path(__file__).resolve().parent.parent / "fixtures" / "MANIFEST.json"
    if not manifest.exists():
        return []
    return [
        entry
        for entry in json.loads(manifest.read_text())
        if entry.get("kind") in _CONFIG_KINDS and entry.get("total_params") is not None
    ]


@pytest.mark.parametrize("entry", _manifest_entries(), ids=lambda entry: entry["file"])
def test_fixture_configs_match_their_manifest(fixtures_dir: Any, entry: Any) -> None:
    config = _fixture_config(fixtures_dir / entry["file"], entry["kind"])
    arch = build_architecture(config)
    if entry["file"] == "k3_lambda.h5":
        # Keras 3 legacy HDF5 configs carry no build_config, and a Lambda's
        # output shape is not in the config: the Dense after it cannot be
        # counted from the config alone (the .keras twin records it).
        assert arch.layer("post").params is None  # type: ignore[union-attr]
        assert arch.total_params is None
    else:
        assert arch.total_params == entry["total_params"]
        assert arch.trainable_params == entry["trainable_params"]
    model_name = config["config"]["name"]
    expected_layers = [layer["name"] for layer in entry["layers"]]
    assert [layer.name for layer in arch.layers] == expected_layers
    for fact in entry["layers"]:
        ours = arch.layer(fact["name"])
        assert ours is not None and ours.class_name == fact["class_name"]
        names = [_canonical(n).removeprefix(model_name + "/") for n in fact["weights"]]
        names = [
            n if n.startswith(fact["name"] + "/") else f"{fact['name']}/{n}"
            for n in names
        ]
        assert list(ours.tensor_names) == names, fact["name"]
    if entry["model"] == "lambda":
        assert any("bytecode" in w for w in arch.warnings)


def test_unknown_class_inside_nested_model_is_named() -> None:
    inner = {
        "class_name": "Sequential",
        "name": "inner",
        "config": {"name": "inner", "layers": [
            {"class_name": "InputLayer", "config": {"name": "ii",
             "batch_input_shape": [None, 4]}},
            {"class_name": "Dense", "config": {"name": "d", "units": 2}},
            {"class_name": "Sparkle", "config": {"name": "sp"}},
        ]},
        "inbound_nodes": [[["in", 0, 0, {}]]],
    }  # fmt: skip
    config = _k2_model(
        _k2_layer("InputLayer", "in", batch_input_shape=[None, 4]),
        inner,
        inputs=["in"],
        outputs=["inner"],
    )
    arch = build_architecture(config)
    layer = arch.layer("inner")
    assert layer is not None
    assert layer.params is None and layer.tensor_names == ()
    assert any("'sp'" in w and "'Sparkle'" in w for w in arch.warnings)
    assert not any("'inner'" in w and "unknown to" in w for w in arch.warnings)


@pytest.mark.keras
def test_keras3_dict_inputs_outputs_and_ops(keras3: Any) -> None:
    L = keras3.layers
    a = keras3.Input((4,), name="x")
    b = keras3.Input((3,), name="y")
    mean = keras3.ops.mean(keras3.ops.stack([a, a], axis=1), axis=1)
    out = {"o1": L.Dense(2)(mean), "o2": L.Dense(5)(L.Concatenate()([a, b]))}
    model = keras3.Model({"x": a, "y": b}, out)
    config = json.loads(model.to_json())
    assert isinstance(config["config"]["output_layers"], dict)
    arch = _check_against_keras(model, keras3=True)
    # keras.ops calls are graph nodes without weights, not unknown layers.
    assert not any("unknown" in w for w in arch.warnings)


def test_layer_weight_names_follow_the_form() -> None:
    depthwise = {
        "class_name": "DepthwiseConv2D",
        "config": {"name": "dw", "kernel_size": [3, 3], "depth_multiplier": 1},
    }
    assert layer_weight_names(depthwise, form=2) == ["depthwise_kernel", "bias"]
    assert layer_weight_names(depthwise, form=3) == ["kernel", "bias"]
    wrapped = {
        "class_name": "TimeDistributed",
        "config": {"name": "td", "layer": {
            "class_name": "Dense", "config": {"name": "dense", "units": 2}}},
    }  # fmt: skip
    assert layer_weight_names(wrapped, form=2) == ["kernel", "bias"]
    assert layer_weight_names(wrapped, form=3) == ["dense/kernel", "dense/bias"]
    with pytest.raises(InputError):
        layer_weight_names([])  # type: ignore[arg-type]


@pytest.mark.keras
def test_keras3_serialized_object_as_in_keras_archives(
    keras3: Any, keras3_models: dict[str, Any]
) -> None:
    """config.json of a .keras archive is serialize_keras_object(model)."""
    model = keras3_models["graph"]
    config = keras3.saving.serialize_keras_object(model)
    arch = build_architecture(config)
    assert arch.form == 3
    assert arch.total_params == model.count_params()
    assert arch.trainable_params == _tensor_count(model.trainable_weights)


def test_keras1_nested_sequential_node_numbering() -> None:
    """Keras 1.2 numbers a nested container's nodes from 1 (topology.py)."""
    inner = {
        "name": "sequential_1",
        "class_name": "Sequential",
        "config": [_k1_dense("dense_1", 4, input_dim=6, batch_input_shape=[None, 6])],
        "inbound_nodes": [[["input_1", 0, 0]], [["input_2", 0, 0]]],
    }
    inp = {"batch_input_shape": [None, 6], "input_dtype": "float32", "sparse": False}
    merge = {
        "name": "merge_1",
        "class_name": "Merge",
        "config": {"name": "merge_1", "mode": "concat", "concat_axis": -1},
        "inbound_nodes": [[["sequential_1", 1, 0], ["sequential_1", 2, 0]]],
    }
    config = {
        "class_name": "Model",
        "config": {
            "name": "model_1",
            "layers": [
                {"name": "input_1", "class_name": "InputLayer",
                 "config": {"name": "input_1", **inp}, "inbound_nodes": []},
                {"name": "input_2", "class_name": "InputLayer",
                 "config": {"name": "input_2", **inp}, "inbound_nodes": []},
                inner,
                merge,
            ],
            "input_layers": [["input_1", 0, 0], ["input_2", 0, 0]],
            "output_layers": [["merge_1", 0, 0]],
        },
    }  # fmt: skip
    arch = build_architecture(config)
    assert arch.form == 1
    assert arch.total_params == 6 * 4 + 4
    nested = arch.layer("sequential_1")
    assert nested is not None
    assert nested.tensor_names == (
        "sequential_1/dense_1/kernel",
        "sequential_1/dense_1/bias",
    )
    assert arch.layer("merge_1").output_shape == [None, 8]  # type: ignore[union-attr]


def test_objects_from_modules_outside_keras_are_warned_about() -> None:
    """Not only layer classes: an activation naming os.system is flagged."""
    dense = {
        "module": "keras.layers",
        "class_name": "Dense",
        "config": {
            "name": "d",
            "units": 2,
            "activation": {
                "module": "os",
                "class_name": "function",
                "config": "system",
                "registered_name": "function",
            },
            "kernel_initializer": {
                "module": "keras.initializers",
                "class_name": "GlorotUniform",
                "config": {"seed": None},
            },
        },
    }
    config = {
        "module": "keras",
        "class_name": "Sequential",
        "config": {
            "name": "s",
            "layers": [
                {
                    "module": "keras.layers",
                    "class_name": "InputLayer",
                    "config": {"batch_shape": [None, 3], "name": "input"},
                },
                dense,
            ],
        },
    }
    warnings = build_architecture(config).warnings
    flagged = [w for w in warnings if "outside Keras" in w]
    assert len(flagged) == 1
    assert "'activation'" in flagged[0] and "'os'" in flagged[0]


@pytest.mark.parametrize(
    ("keras3", "bias"), [(True, 2 * 3 * 4), (False, 3 * 4)], ids=["keras3", "keras2"]
)
def test_gru_without_reset_after_takes_its_versions_default(
    keras3: bool, bias: int
) -> None:
    """reset_after defaults to True in Keras 3 (two bias rows) and to False in
    the Keras 2 versions that could leave it out."""
    gru: dict[str, Any] = {"name": "gru", "units": 4}
    if keras3:
        policy = {"name": "float32"}
        gru["dtype"] = {
            "module": "keras",
            "class_name": "DTypePolicy",
            "config": policy,
        }
        inputs = {
            "class_name": "InputLayer",
            "config": {"batch_shape": [None, 5, 3], "name": "x"},
        }
    else:
        gru["batch_input_shape"] = [None, 5, 3]
        inputs = None
    layers = [inputs] if inputs else []
    layers.append({"class_name": "GRU", "config": gru})
    config = {"class_name": "Sequential", "config": {"name": "s", "layers": layers}}
    if keras3:
        config["module"] = "keras"
    arch = build_architecture(config)
    assert arch.form == (3 if keras3 else 2)
    params = [layer.params for layer in arch.layers if layer.class_name == "GRU"]
    assert params == [3 * (3 * 4 + 4 * 4) + bias]
