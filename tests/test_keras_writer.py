"""The .keras writer: Keras 3 opens what it writes and predicts the same.

Every full-model fixture with recorded inputs and outputs (``*.io.npz``) is
read through the registry, written as ``.keras`` and loaded with Keras 3's
own ``keras.saving.load_model``. Keras 3 sources must predict exactly what
they predicted when they were made; other Keras versions within 1e-6.
"""

from __future__ import annotations

import json
import zipfile
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import pytest
from _keras_models import (
    FIXTURES,
    _io,
    _is_keras3,
    _sources,
    assert_predictions,
    predict,
    read_fixture,
)

from modelconv.formats import keras_zip_writer
from modelconv.formats.base import WriteOptions
from modelconv.model import Model


@pytest.mark.keras
@pytest.mark.parametrize("path", _sources(), ids=lambda p: p.name)
def test_fixture_to_keras_loads_in_keras3(path: Path, keras3: Any, tmp_path: Path):
    x, want = _io(path)
    with read_fixture(path) as model:
        if model.architecture is None or model.architecture.framework != "keras":
            pytest.skip(f"{path.name} holds no Keras model (weights or sklearn)")
        out = tmp_path / "out.keras"
        keras_zip_writer.write(model, out, WriteOptions(allow_lossy=True))
        exact = _is_keras3(model)
    # The Lambda fixture is ours; Keras refuses its bytecode unless asked.
    loaded = keras3.saving.load_model(out, safe_mode="lambda" not in path.name)
    assert_predictions(predict(loaded, x), want, exact)


def _datasets(h5: h5py.File) -> dict[str, bytes]:
    out: dict[str, bytes] = {}

    def visit(name: str, obj: Any) -> None:
        if isinstance(obj, h5py.Dataset):
            out[name] = np.asarray(obj[()]).tobytes()

    h5.visititems(visit)
    return out


@pytest.mark.parametrize(
    "path", sorted(FIXTURES.glob("k3_*.keras")), ids=lambda p: p.name
)
def test_weights_layout_matches_keras3_archive(path: Path, tmp_path: Path) -> None:
    """Object paths and bytes equal those Keras 3.15.1 wrote for the same model."""
    out = tmp_path / "out.keras"
    with read_fixture(path) as model:
        keras_zip_writer.write(model, out, WriteOptions())
    with zipfile.ZipFile(path) as theirs, zipfile.ZipFile(out) as ours:
        assert sorted(ours.namelist()) == sorted(theirs.namelist())
        assert all(i.compress_type == zipfile.ZIP_STORED for i in ours.infolist())
        ours_config = json.loads(ours.read("config.json"))
        theirs_config = json.loads(theirs.read("config.json"))
        assert ours_config["config"] == theirs_config["config"]
        assert ours_config.get("compile_config") == theirs_config.get("compile_config")
        with (
            h5py.File(theirs.open("model.weights.h5")) as a,
            h5py.File(ours.open("model.weights.h5")) as b,
        ):
            assert _datasets(b) == _datasets(a)
        meta = json.loads(ours.read("metadata.json"))
    assert meta["keras_version"] == "3.15.1"
    assert meta["modelconv"]["tensors"], "source tensor names are kept"


def test_source_names_kept_in_metadata(tmp_path: Path) -> None:
    path = FIXTURES / "k3_iris_mlp.h5"
    out = tmp_path / "out.keras"
    with read_fixture(path) as model:
        keras_zip_writer.write(model, out, WriteOptions())
        names = {t.name: list(t.source_names) for t in model.by_role("weight")}
    with zipfile.ZipFile(out) as archive:
        meta = json.loads(archive.read("metadata.json"))
    recorded = {t["name"]: t["source_names"] for t in meta["modelconv"]["tensors"]}
    for name, source_names in names.items():
        assert recorded[name] == source_names


def test_losses_name_missing_architecture() -> None:
    model = Model()
    losses = keras_zip_writer.losses(model, WriteOptions())
    assert [loss.what for loss in losses] == ["architecture"]


def test_hyperslabs_cover_every_element_once() -> None:
    shape = (3, 4, 5)
    seen = np.zeros(shape, dtype=int)
    flat = np.arange(60)
    for start in range(0, 60, 7):
        chunk = flat[start : start + 7]
        for where, piece in keras_zip_writer._hyperslabs((), start, chunk, shape):
            seen[where] += 1
            assert np.array_equal(np.arange(60).reshape(shape)[where], piece)
    assert (seen == 1).all()


# --------------------------------------------------------------------------
# tf_keras models built in the test, converted the way an HDF5 reader sees
# them (config from to_json, canonical tensor names), then loaded in Keras 3.


def _tf_keras_models(tfk: Any) -> dict[str, tuple[Any, Any]]:
    L = tfk.layers
    rng = np.random.default_rng(0)
    image = tfk.Sequential(
        [
            L.Conv2D(3, 3, input_shape=(8, 8, 2), kernel_regularizer="l2"),
            L.BatchNormalization(),
            L.MaxPooling2D(),
            L.DepthwiseConv2D(2),
            L.SeparableConv2D(2, 2, padding="same"),
            L.Conv2DTranspose(2, 2),
            L.LayerNormalization(),
            L.GlobalAveragePooling2D(),
            L.Dropout(0.2),
            L.Dense(3, activation="softmax"),
        ]
    )
    text = tfk.Sequential(
        [
            L.Embedding(10, 4, input_length=6),
            L.Conv1D(3, 2),
            L.SimpleRNN(3, return_sequences=True),
            L.GRU(3, return_sequences=True, reset_after=False),
            L.LSTM(2),
        ]
    )
    a, b = tfk.Input((5, 3)), tfk.Input((5, 3))
    h = L.TimeDistributed(L.Dense(2))(L.Concatenate()([a, b]))
    h2 = L.Bidirectional(L.LSTM(2, return_sequences=True))(h)
    h = L.Multiply()([L.Add()([h, L.Dense(2)(h2)]), h])
    functional = tfk.Model([a, b], L.GlobalMaxPooling1D()(h))
    # ConvLSTM2D defaults to hard_sigmoid in tf_keras, which Keras 3 redefined;
    # sigmoid keeps the model migratable (see test_hard_sigmoid_is_refused).
    conv_lstm = tfk.Sequential(
        [
            L.ConvLSTM2D(
                2, 3, recurrent_activation="sigmoid", input_shape=(3, 6, 6, 1)
            ),
            L.Flatten(),
            L.Dense(1),
        ]
    )
    pair = [rng.random((4, 5, 3), dtype=np.float32) for _ in range(2)]
    return {
        "image": (image, rng.random((4, 8, 8, 2), dtype=np.float32)),
        "text": (text, rng.integers(0, 10, (4, 6))),
        "functional": (functional, pair),
        "conv_lstm": (conv_lstm, rng.random((2, 3, 6, 6, 1), dtype=np.float32)),
    }


@pytest.mark.keras
def test_tf_keras_models_load_in_keras3(
    keras3: Any, tf_keras: Any, tmp_path: Path
) -> None:
    """tf_keras configs Keras 3 rejects as they are (time_major, BatchNormalization
    axis lists, groups, unused separable arguments) load after migration."""
    from _keras_models import ir_from_tf_keras

    for name, (model, x) in _tf_keras_models(tf_keras).items():
        want = predict(model, x)
        ir = ir_from_tf_keras(model)
        out = tmp_path / f"{name}.keras"
        keras_zip_writer.write(ir, out, WriteOptions())
        loaded = keras3.saving.load_model(out)
        assert_predictions(predict(loaded, x), want, exact=False)
        with zipfile.ZipFile(out) as archive:
            meta = json.loads(archive.read("metadata.json"))
        assert "dtype_policy" in meta["modelconv"]["migrations"], name


@pytest.mark.keras
def test_keras1_hand_written_model_loads_in_keras3(keras3: Any, tmp_path: Path) -> None:
    """A Keras 1.2 model, config and weights laid out as Keras 1.2.2 wrote them,
    converts and predicts what the same maths gives in Keras 3."""
    from _keras_models import ir_from_config

    rng = np.random.default_rng(7)
    units, dim, steps = 3, 2, 4
    # Keras 1.2.2 LSTM (consume_less="cpu") trainable_weights, in this order:
    # W_i, U_i, b_i, W_c, U_c, b_c, W_f, U_f, b_f, W_o, U_o, b_o
    # (keras/layers/recurrent.py); canonical names as keras_config gives them.
    shapes = [(dim, units), (units, units), (units,)] * 4
    lstm = [rng.normal(size=s).astype("float32") for s in shapes]
    kinds = ["kernel", "recurrent_kernel", "bias"] * 4
    lstm_names = [f"lstm_1/{k}_{g}" for k, g in zip(kinds, "iiicccfffooo")]
    dense = [rng.normal(size=(units, 2)).astype("float32"), np.zeros(2, "float32")]
    config = {
        "class_name": "Sequential",
        "config": [
            {
                "class_name": "LSTM",
                "config": {
                    "name": "lstm_1", "trainable": True, "output_dim": units,
                    "init": "glorot_uniform", "inner_init": "orthogonal",
                    "forget_bias_init": "one", "activation": "tanh",
                    "inner_activation": "sigmoid", "W_regularizer": None,
                    "U_regularizer": None, "b_regularizer": None, "dropout_W": 0.0,
                    "dropout_U": 0.0, "return_sequences": False,
                    "go_backwards": False, "stateful": False, "unroll": False,
                    "consume_less": "cpu", "input_dim": dim, "input_length": None,
                    "batch_input_shape": [None, steps, dim],
                    "input_dtype": "float32",
                },
            },
            {
                "class_name": "Dense",
                "config": {
                    "name": "dense_1", "trainable": True, "output_dim": 2,
                    "init": "glorot_uniform", "activation": "linear",
                    "W_regularizer": None, "b_regularizer": None,
                    "activity_regularizer": None, "W_constraint": None,
                    "b_constraint": None, "bias": True, "input_dim": units,
                },
            },
        ],
    }  # fmt: skip
    arrays = list(zip(lstm_names, lstm)) + [
        ("dense_1/kernel", dense[0]),
        ("dense_1/bias", dense[1]),
    ]
    model = ir_from_config(config, arrays)
    out = tmp_path / "k1.keras"
    keras_zip_writer.write(model, out, WriteOptions())
    loaded = keras3.saving.load_model(out)

    # The same model built directly in Keras 3, with the gates in i, f, c, o.
    L = keras3.layers
    reference = keras3.Sequential(
        [
            keras3.Input((steps, dim)),
            L.LSTM(units, recurrent_activation="sigmoid"),
            L.Dense(2),
        ]
    )
    w = lstm
    reference.set_weights(
        [
            np.concatenate([w[0], w[6], w[3], w[9]], -1),
            np.concatenate([w[1], w[7], w[4], w[10]], -1),
            np.concatenate([w[2], w[8], w[5], w[11]], -1),
            *dense,
        ]
    )
    x = rng.normal(size=(5, steps, dim)).astype("float32")
    assert_predictions(predict(loaded, x), predict(reference, x), exact=True)
    with zipfile.ZipFile(out) as archive:
        meta = json.loads(archive.read("metadata.json"))
    assert {"keras1_argument_names", "keras1_recurrent_weights"} <= set(
        meta["modelconv"]["migrations"]
    )


def test_hard_sigmoid_is_refused(tmp_path: Path) -> None:
    from _keras_models import ir_from_config

    from modelconv.errors import UnsupportedError

    config = {
        "class_name": "Sequential",
        "config": {
            "name": "s",
            "layers": [
                {
                    "class_name": "LSTM",
                    "config": {
                        "name": "lstm",
                        "units": 1,
                        "recurrent_activation": "hard_sigmoid",
                        "batch_input_shape": [None, 2, 1],
                    },
                }
            ],
        },
    }
    model = ir_from_config(config, [], version="2.21.0")
    with pytest.raises(UnsupportedError, match="hard_sigmoid"):
        keras_zip_writer.write(model, tmp_path / "x.keras", WriteOptions())


@pytest.mark.keras
def test_tf_keras_lstm_h5_that_keras3_cannot_open(
    keras3: Any, tf_keras: Any, tmp_path: Path
) -> None:
    """Keras 3 refuses a tf_keras HDF5 file holding an LSTM (it rejects
    ``time_major``); converted to .keras, Keras 3 opens it and predicts the
    same. Uses fixtures/tfk_conv_lstm.h5 when present, else makes the same
    kind of file with tf_keras here."""
    path = FIXTURES / "tfk_conv_lstm.h5"
    rng = np.random.default_rng(5)
    if path.exists():
        x, want = _io(path)
    else:
        L = tf_keras.layers
        source = tf_keras.Sequential(
            [
                L.Embedding(20, 4, input_length=7),
                L.Conv1D(4, 3, activation="relu"),
                L.LSTM(3),
                L.Dense(2),
            ]
        )
        x = rng.integers(0, 20, (5, 7))
        want = predict(source, x)
        path = tmp_path / "tfk_conv_lstm.h5"
        source.save(path)
    with pytest.raises(Exception, match="time_major"):
        keras3.saving.load_model(path)
    out = tmp_path / "out.keras"
    with read_fixture(path) as model:
        keras_zip_writer.write(model, out, WriteOptions(allow_lossy=True))
        assert (
            "drop_rejected_arguments"
            in keras_zip_writer.prepare(model, WriteOptions()).migrations
        )
    loaded = keras3.saving.load_model(out)
    assert_predictions(predict(loaded, x), want, exact=False)


@pytest.mark.keras
def test_keras1_functional_merge_and_th_convolution(
    keras3: Any, tmp_path: Path
) -> None:
    """Keras 1.2 functional model (``Model`` class, [name, node, tensor]
    inbound triples, ``Merge(mode="concat")``) and a ``dim_ordering="th"``
    Convolution2D whose kernel Keras 1.2 stored as (filters, in, rows, cols)
    (keras/layers/convolutional.py), checked against the same maths built
    directly in Keras 3."""
    from _keras_models import ir_from_config

    rng = np.random.default_rng(11)
    conv_w = rng.normal(size=(2, 1, 3, 3)).astype("float32")  # th layout
    conv_b = rng.normal(size=(2,)).astype("float32")
    dense_a = [rng.normal(size=(18, 3)).astype("float32"), np.zeros(3, "float32")]
    dense_b = [rng.normal(size=(18, 2)).astype("float32"), np.ones(2, "float32")]

    def layer(cls: str, name: str, nodes: Any, **config: Any) -> dict[str, Any]:
        return {
            "name": name,
            "class_name": cls,
            "config": {"name": name, "trainable": True, **config},
            "inbound_nodes": nodes,
        }

    config = {
        "class_name": "Model",
        "config": {
            "name": "model_1",
            "layers": [
                layer("InputLayer", "input_1", [], batch_input_shape=[None, 1, 6, 6],
                      input_dtype="float32", sparse=False),
                layer("Convolution2D", "conv", [[["input_1", 0, 0]]], nb_filter=2,
                      nb_row=3, nb_col=3, init="glorot_uniform", activation="relu",
                      border_mode="same", subsample=[2, 2], dim_ordering="th",
                      W_regularizer=None, b_regularizer=None, bias=True),
                layer("Flatten", "flat", [[["conv", 0, 0]]]),
                layer("Dense", "a", [[["flat", 0, 0]]], output_dim=3,
                      init="glorot_uniform", activation="linear", bias=True,
                      input_dim=18),
                layer("Dense", "b", [[["flat", 0, 0]]], output_dim=2,
                      init="glorot_uniform", activation="tanh", bias=True,
                      input_dim=18),
                layer("Merge", "merge_1", [[["a", 0, 0], ["b", 0, 0]]],
                      mode="concat", concat_axis=-1, dot_axes=-1,
                      output_shape=None, mode_type="raw"),
            ],
            "input_layers": [["input_1", 0, 0]],
            "output_layers": [["merge_1", 0, 0]],
        },
    }  # fmt: skip
    arrays = [
        ("conv/kernel", conv_w),
        ("conv/bias", conv_b),
        ("a/kernel", dense_a[0]),
        ("a/bias", dense_a[1]),
        ("b/kernel", dense_b[0]),
        ("b/bias", dense_b[1]),
    ]
    model = ir_from_config(config, arrays)
    out = tmp_path / "k1f.keras"
    keras_zip_writer.write(model, out, WriteOptions())
    loaded = keras3.saving.load_model(out)

    L = keras3.layers
    inp = keras3.Input((1, 6, 6))
    conv = L.Conv2D(2, 3, strides=2, padding="same", activation="relu",
                    data_format="channels_first")  # fmt: skip
    flat = L.Flatten()(conv(inp))
    a, b = L.Dense(3), L.Dense(2, activation="tanh")
    reference = keras3.Model(inp, L.Concatenate()([a(flat), b(flat)]))
    conv.set_weights([np.transpose(conv_w, (2, 3, 1, 0)), conv_b])
    a.set_weights(dense_a)
    b.set_weights(dense_b)
    # TensorFlow on CPU cannot run channels_first convolutions, so the proof is
    # the graph and every weight, compared with the reference built directly.
    assert [type(x).__name__ for x in loaded.layers] == [
        type(x).__name__ for x in reference.layers
    ]
    assert loaded.get_layer("merge_1").output.shape == reference.output.shape
    for got, want in zip(loaded.get_weights(), reference.get_weights()):
        np.testing.assert_array_equal(got, want)
    assert loaded.get_layer("conv").data_format == "channels_first"
    with zipfile.ZipFile(out) as archive:
        meta = json.loads(archive.read("metadata.json"))
    assert {
        "keras1_merge_layers",
        "node_form_keras3",
        "channels_first_kernels",
        "functional_class_name",
    } <= set(meta["modelconv"]["migrations"])


@pytest.mark.keras
def test_keras1_functional_merge_predicts_like_keras3(
    keras3: Any, tmp_path: Path
) -> None:
    """Keras 1.2 ``Model`` with a shared input, inbound triples and
    ``Merge(mode="sum")``: predictions equal the same model built in Keras 3."""
    from _keras_models import ir_from_config

    rng = np.random.default_rng(12)
    wa = [rng.normal(size=(5, 3)).astype("float32"), rng.normal(size=3).astype("f4")]
    wb = [rng.normal(size=(5, 3)).astype("float32"), rng.normal(size=3).astype("f4")]

    def dense(name: str) -> dict[str, Any]:
        return {
            "name": name,
            "class_name": "Dense",
            "config": {"name": name, "output_dim": 3, "init": "glorot_uniform",
                       "activation": "relu", "bias": True, "input_dim": 5},
            "inbound_nodes": [[["input_1", 0, 0]]],
        }  # fmt: skip

    config = {
        "class_name": "Model",
        "config": {
            "name": "model_1",
            "layers": [
                {"name": "input_1", "class_name": "InputLayer", "inbound_nodes": [],
                 "config": {"name": "input_1", "batch_input_shape": [None, 5],
                            "input_dtype": "float32", "sparse": False}},
                dense("a"),
                dense("b"),
                {"name": "merge_1", "class_name": "Merge",
                 "config": {"name": "merge_1", "mode": "sum", "concat_axis": -1,
                            "dot_axes": -1, "mode_type": "raw"},
                 "inbound_nodes": [[["a", 0, 0], ["b", 0, 0]]]},
            ],
            "input_layers": [["input_1", 0, 0]],
            "output_layers": [["merge_1", 0, 0]],
        },
    }  # fmt: skip
    arrays = [("a/kernel", wa[0]), ("a/bias", wa[1])]
    arrays += [("b/kernel", wb[0]), ("b/bias", wb[1])]
    out = tmp_path / "k1m.keras"
    keras_zip_writer.write(ir_from_config(config, arrays), out, WriteOptions())
    loaded = keras3.saving.load_model(out)

    L = keras3.layers
    inp = keras3.Input((5,))
    a, b = L.Dense(3, activation="relu"), L.Dense(3, activation="relu")
    reference = keras3.Model(inp, L.Add()([a(inp), b(inp)]))
    a.set_weights(wa)
    b.set_weights(wb)
    x = rng.normal(size=(6, 5)).astype("float32")
    assert_predictions(predict(loaded, x), predict(reference, x), exact=True)


@pytest.mark.keras
def test_nested_batchnorm_h5_to_keras_loads_in_keras3(
    k3_nested_batchnorm: Any, keras3: Any, tmp_path: Path
) -> None:
    """Legacy .h5 lists a nested model's weights trainable first, the archive
    sublayer by sublayer; the read-back check used to pair them by position
    once the optimizer slots were renamed, and refused a correct file."""
    from modelconv import api

    out = tmp_path / "out.keras"
    api.convert(k3_nested_batchnorm.h5, out)
    loaded = keras3.saving.load_model(out, compile=False)
    got = loaded.predict(k3_nested_batchnorm.x, verbose=0)
    np.testing.assert_array_equal(got, k3_nested_batchnorm.want)
    with read_fixture(k3_nested_batchnorm.keras) as a, read_fixture(out) as b:
        # Both readers list the nested model's weights in one (legacy) order.
        names = [t.name for t in a.by_role("weight")]
        assert names == [t.name for t in b.by_role("weight")]
        # Keras numbers layer names per session, so find them by kind.
        kernels = [i for i, n in enumerate(names) if n.endswith("/kernel")]
        means = [i for i, n in enumerate(names) if n.endswith("/moving_mean")]
        assert kernels[1] < means[0]  # the nested Dense's kernel, then state


@pytest.mark.keras
def test_tf_keras_slash_layer_names_renamed_for_keras3(
    tfk_slash_names: Any, keras3: Any, tmp_path: Path
) -> None:
    """Keras 3 refuses "/" in a layer name (tf.keras DenseNet's "conv1/conv"):
    the migration renames it "conv1_conv", as Keras 3's own DenseNet does."""
    from modelconv import api

    for src in (tfk_slash_names.h5, tfk_slash_names.keras):
        out = tmp_path / f"{src.suffix[1:]}.keras"
        api.convert(src, out, drop=["optimizer"])
        loaded = keras3.saving.load_model(out, compile=False)
        assert "conv1_conv" in [layer.name for layer in loaded.layers]
        got = loaded.predict(tfk_slash_names.x, verbose=0)
        np.testing.assert_allclose(got, tfk_slash_names.want, rtol=1e-6, atol=1e-6)
    out = tmp_path / "k3.h5"
    api.convert(tfk_slash_names.h5, out, target_keras="keras3")
    loaded = keras3.saving.load_model(out, compile=False)
    got = loaded.predict(tfk_slash_names.x, verbose=0)
    np.testing.assert_allclose(got, tfk_slash_names.want, rtol=1e-6, atol=1e-6)


@pytest.mark.keras
def test_keras3_layer_scale_h5_to_keras(keras3: Any, tmp_path: Path) -> None:
    """ConvNeXt's LayerScale lives in keras.applications, not keras.layers,
    and Keras 3 names its one weight "variable_<n>". Its parameters were
    unknown, its weights 'not in the architecture', and the .keras written
    from a Keras 3 .h5 named module keras.layers, which Keras cannot load."""
    from keras.src.applications.convnext import LayerScale

    from modelconv import api

    x = keras3.Input((4,))
    y = LayerScale(1e-6, 3, name="scale")(keras3.layers.Dense(3)(x))
    model = keras3.Model(x, keras3.layers.Dense(1)(y))
    src, out = tmp_path / "m.h5", tmp_path / "m.keras"
    model.save(src)
    with api.load(src) as read:
        assert not read.warnings
        assert read.architecture is not None
        scale = read.architecture.layer("scale")
        assert scale is not None and scale.params == 3
        assert "scale/gamma" in [t.name for t in read.tensors]
    api.convert(src, out)
    loaded = keras3.saving.load_model(out)
    probe = np.ones((2, 4), "float32")
    np.testing.assert_array_equal(
        loaded.predict(probe, verbose=0), model.predict(probe, verbose=0)
    )


def _keras1_th_conv_file(path: Path, kernel: np.ndarray, dense: np.ndarray) -> None:
    """Keras 1.2.2 Sequential: Convolution2D with dim_ordering "th" (kernel
    stored (filters, channels, rows, cols)), Flatten, Dense; no backend."""
    layers = [
        {
            "class_name": "Convolution2D",
            "config": {
                "name": "convolution2d_1",
                "batch_input_shape": [None, 2, 4, 4],
                "nb_filter": 3,
                "nb_row": 3,
                "nb_col": 3,
                "init": "glorot_uniform",
                "activation": "linear",
                "border_mode": "valid",
                "subsample": [1, 1],
                "dim_ordering": "th",
                "bias": True,
            },
        },
        {"class_name": "Flatten", "config": {"name": "flatten_1"}},
        {
            "class_name": "Dense",
            "config": {"name": "dense_1", "output_dim": 1, "bias": True},
        },
    ]
    config = {"class_name": "Sequential", "config": layers}
    with h5py.File(path, "w") as h5:
        h5.attrs["keras_version"] = np.bytes_(b"1.2.2")
        h5.attrs["model_config"] = np.bytes_(json.dumps(config).encode())
        group = h5.create_group("model_weights")
        group.attrs["layer_names"] = [b"convolution2d_1", b"flatten_1", b"dense_1"]
        conv = group.create_group("convolution2d_1")
        conv.attrs["weight_names"] = [b"convolution2d_1_W", b"convolution2d_1_b"]
        conv["convolution2d_1_W"] = kernel
        conv["convolution2d_1_b"] = np.zeros(3, "f4")
        group.create_group("flatten_1").attrs["weight_names"] = np.array([], "f8")
        out = group.create_group("dense_1")
        out.attrs["weight_names"] = [b"dense_1_W", b"dense_1_b"]
        out["dense_1_W"] = dense
        out["dense_1_b"] = np.zeros(1, "f4")


def test_keras1_channels_first_conv_to_keras(keras3: Any, tmp_path: Path) -> None:
    """The .keras writer transposes a Keras 1 "th" kernel to Keras 3's layout;
    the read-back check compared the file with the untransposed kernel and
    refused every such conversion (exit 3, 'reads back as [3, 3, 2, 3]')."""
    from modelconv import api

    rng = np.random.default_rng(0)
    kernel = rng.normal(size=(3, 2, 3, 3)).astype("f4")
    dense = rng.normal(size=(12, 1)).astype("f4")
    src, out = tmp_path / "k1.h5", tmp_path / "k1.keras"
    _keras1_th_conv_file(src, kernel, dense)
    report = api.convert(src, out)
    assert "channels_first_kernels" in report.migrations
    x = rng.normal(size=(2, 2, 4, 4)).astype("f4")
    # Keras 1 on TensorFlow: cross-correlation, channels first, Flatten in
    # (filters, rows, cols) order.
    conv = np.stack(
        [
            np.einsum("nchw,fchw->nf", x[:, :, r : r + 3, c : c + 3], kernel)
            for r in range(2)
            for c in range(2)
        ],
        axis=-1,
    )
    want = conv.reshape(2, -1) @ dense
    loaded = keras3.saving.load_model(out)
    np.testing.assert_allclose(loaded.predict(x, verbose=0), want, rtol=1e-5, atol=1e-5)


@pytest.mark.keras
def test_multi_head_attention_to_keras(
    k3_attention: Any, tfk_attention: Any, keras3: Any, tmp_path: Path
) -> None:
    """MultiHeadAttention's query/key/value/output sublayers go to
    query_dense, key_dense, value_dense and output_dense (the writer refused
    the layer). From tf_keras, its value= tensor keyword becomes a Keras 3
    tensor, its build shapes leave the config and its build_config takes the
    Keras 3 form; each of those stopped Keras 3 from loading the file."""
    from modelconv import api

    for saved, exact in ((k3_attention, True), (tfk_attention, False)):
        for src in (saved.h5, saved.keras):
            out = tmp_path / f"{len(list(tmp_path.iterdir()))}.keras"
            api.convert(src, out)
            loaded = keras3.saving.load_model(out)
            got = loaded.predict(saved.x, verbose=0)
            assert_predictions([got], [saved.want], exact)
