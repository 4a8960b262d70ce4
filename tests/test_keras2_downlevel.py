"""Down-level to tf_keras: Keras 3 models written as legacy HDF5 for Keras 2.

tf_keras 2.21 cannot open any HDF5 file Keras 3 writes (its configs hold
Keras 3 node records, DTypePolicy objects and ``batch_shape``). Every Keras 3
full-model fixture is converted with ``--for keras2`` (``target_keras``) and
must load in ``tf_keras.models.load_model`` with predictions within 1e-6.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import pytest
from _keras_models import FIXTURES, _io, _is_keras3, predict, read_fixture

from modelconv import migrate
from modelconv.formats import hdf5
from modelconv.formats.base import WriteOptions

KERAS2 = WriteOptions(flavour="keras-model", target_keras="keras2", allow_lossy=True)


def _keras3_sources() -> list[Path]:
    found = []
    for io in sorted(FIXTURES.glob("k3_*.io.npz")):
        stem = io.name[: -len(".io.npz")]
        for suffix in (".h5", ".keras", ".pkl", ".joblib"):
            path = FIXTURES / f"{stem}{suffix}"
            if path.exists():
                found.append(path)
    return found


@pytest.mark.keras
@pytest.mark.parametrize("path", _keras3_sources(), ids=lambda p: p.name)
def test_keras3_fixture_loads_in_tf_keras(
    path: Path, tf_keras: Any, tmp_path: Path
) -> None:
    x, want = _io(path)
    out = tmp_path / "out.h5"
    with read_fixture(path) as model:
        assert _is_keras3(model)
        hdf5.write(model, out, KERAS2)
    loaded = tf_keras.models.load_model(out, compile=False)
    got = predict(loaded, x)
    assert len(got) == len(want)
    for a, b in zip(got, want):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-6)


def test_keras2_file_has_the_tf_keras_form(tmp_path: Path) -> None:
    """Root attributes, config form and weight names as tf_keras 2.21 writes."""
    out = tmp_path / "out.h5"
    with read_fixture(FIXTURES / "k3_conv_lstm.h5") as model:
        hdf5.write(model, out, KERAS2)
    with h5py.File(out) as h5:
        assert str(h5.attrs["keras_version"]).startswith("2.")
        assert h5.attrs["backend"] == "tensorflow"
        config = json.loads(h5.attrs["model_config"])
        text = h5.attrs["model_config"]
        weights = h5["model_weights"]
        lstm_names = [n.decode() if isinstance(n, bytes) else n
                      for n in weights["lstm"].attrs["weight_names"]]  # fmt: skip
    assert "__keras_tensor__" not in text and "registered_name" not in text
    assert "DTypePolicy" not in text and "batch_shape" not in text
    assert config["class_name"] == "Sequential"
    first = config["config"]["layers"][0]
    assert first["class_name"] == "InputLayer"
    assert "batch_input_shape" in first["config"]
    # Keras 2 style names with the ":0" output slot, in kernel, recurrent
    # kernel, bias order (tf_keras loads them by position).
    assert lstm_names == ["lstm/kernel:0", "lstm/recurrent_kernel:0", "lstm/bias:0"]


def test_functional_keras2_nodes_are_nested_lists() -> None:
    with read_fixture(FIXTURES / "k3_functional.h5") as model:
        out = migrate.prepare_hdf5(model, KERAS2)
    assert out.architecture is not None
    layers = out.architecture.config["config"]["layers"]
    concat = next(e for e in layers if e["name"] == "concat")
    # tf_keras numbers the nested Sequential's calls from 1.
    assert concat["inbound_nodes"] == [
        [["sub_model", 1, 0, {}], ["sub_model", 2, 0, {}]]
    ]
    assert "node_form_keras2" in out.migrations
    assert "nested_model_node_offset" in out.migrations
    assert not out.by_role("optimizer")
    assert any("optimizer" in w for w in out.warnings)


def test_untouched_tensors_keep_their_bytes() -> None:
    with read_fixture(FIXTURES / "k3_rnn_zoo.h5") as model:
        out = migrate.prepare_hdf5(model, KERAS2)
        for tensor in out.tensors:
            source = model.tensor(tensor.name)
            assert tensor.source is source.source
            assert tensor.dtype == source.dtype


def _tf_keras_sources() -> list[Path]:
    return [
        FIXTURES / f"{io.name[: -len('.io.npz')]}.h5"
        for io in sorted(FIXTURES.glob("tfk_*.io.npz"))
        if (FIXTURES / f"{io.name[: -len('.io.npz')]}.h5").exists()
    ]


@pytest.mark.keras
@pytest.mark.parametrize("path", _tf_keras_sources(), ids=lambda p: p.name)
def test_tf_keras_h5_for_keras3_loads_in_keras3(
    path: Path, keras3: Any, tmp_path: Path
) -> None:
    """The other direction, ``--for keras3`` with HDF5 output: a tf_keras file
    migrated to the Keras 3 form loads in Keras 3's legacy HDF5 loader."""
    x, want = _io(path)
    out = tmp_path / "out.h5"
    options = WriteOptions(flavour="keras-model", target_keras="keras3")
    with read_fixture(path) as model:
        migrated = migrate.prepare_hdf5(model, options)
        assert "dtype_policy" in migrated.migrations
        hdf5.write(model, out, options)
    loaded = keras3.saving.load_model(out, compile=False)
    got = predict(loaded, x)
    for a, b in zip(got, want, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-6)


@pytest.mark.keras
def test_nested_batchnorm_keras_to_keras2_h5_loads_in_tf_keras(
    k3_nested_batchnorm: Any, tf_keras: Any, tmp_path: Path
) -> None:
    """tf_keras loads a nested model's HDF5 weights by position, trainable
    first; the .keras reader's sublayer order put a moving mean where a
    kernel belongs."""
    out = tmp_path / "out.h5"
    with read_fixture(k3_nested_batchnorm.keras) as model:
        hdf5.write(model, out, KERAS2)
    loaded = tf_keras.models.load_model(out, compile=False)
    got = loaded.predict(k3_nested_batchnorm.x, verbose=0)
    np.testing.assert_allclose(got, k3_nested_batchnorm.want, rtol=1e-6, atol=1e-6)


@pytest.mark.keras
def test_tf_keras_op_layer_reads_and_converts_for_tf_keras(
    tf_keras: Any, tmp_path: Path
) -> None:
    """tf.keras records ``x + y`` on Keras tensors as a TFOpLambda whose
    inbound node is one bare [layer, node, tensor, {"y": ...}] (its ConvNeXt
    has 18). Reading such a file failed; Keras 3 has no such layer, so .keras
    output is refused by name, and tf_keras output loads."""
    from modelconv import api
    from modelconv.errors import UnsupportedError

    x = tf_keras.Input((3,))
    a = tf_keras.layers.Dense(3, name="a")(x)
    model = tf_keras.Model(x, tf_keras.layers.Dense(2, name="out")(a + x))
    src = tmp_path / "m.h5"
    model.save(src)
    with api.load(src) as read:
        assert read.architecture is not None
        layers = read.architecture.layers
        op = next(la for la in layers if la.class_name == "TFOpLambda")
        assert op.inbound == ("a", layers[0].name)  # x, and y from its kwargs
        assert op.output_shape == [None, 3]
        assert read.architecture.layer("out").params == 8
    with pytest.raises(UnsupportedError, match="TFOpLambda"):
        api.convert(src, tmp_path / "m.keras")
    out = tmp_path / "out.h5"
    api.convert(src, out, target_keras="keras2")
    probe = np.ones((2, 3), "float32")
    loaded = tf_keras.models.load_model(out, compile=False)
    np.testing.assert_array_equal(
        loaded.predict(probe, verbose=0), model.predict(probe, verbose=0)
    )


@pytest.mark.keras
def test_multi_head_attention_for_keras2_loads_in_tf_keras(
    k3_attention: Any, tf_keras: Any, tmp_path: Path
) -> None:
    """Keras 3 calls mha(x, x) with two positional tensors; tf_keras writes the
    second as value=[layer, node, tensor], needs query_shape, key_shape and
    value_shape in the config, and refuses use_gate and sliding_window."""
    from modelconv import api

    for src in (k3_attention.h5, k3_attention.keras):
        out = tmp_path / f"{src.suffix[1:]}.h5"
        api.convert(src, out, target_keras="keras2")
        loaded = tf_keras.models.load_model(out, compile=False)
        got = loaded.predict(k3_attention.x, verbose=0)
        np.testing.assert_allclose(got, k3_attention.want, rtol=1e-6, atol=1e-6)


@pytest.mark.keras
def test_keras3_operator_ops_become_merge_layers(
    keras3: Any, tf_keras: Any, tmp_path: Path
) -> None:
    """Keras 3 records ``a + b`` on Keras tensors as an Add op called with two
    positional tensors (ConvNeXt has 18); down-levelling refused it. tf_keras's
    Add and Multiply layers on [a, b] compute the same."""
    from modelconv import api

    x = keras3.Input((3,))
    a = keras3.layers.Dense(3, name="a")(x)
    b = keras3.layers.Dense(3, name="b")(x)
    model = keras3.Model(x, keras3.layers.Dense(1, name="out")((a + b) * a))
    probe = np.random.default_rng(4).normal(size=(2, 3)).astype("float32")
    want = model.predict(probe, verbose=0)
    for suffix in (".h5", ".keras"):
        src, out = tmp_path / f"m{suffix}", tmp_path / f"{suffix[1:]}-k2.h5"
        model.save(src)
        api.convert(src, out, target_keras="keras2")
        loaded = tf_keras.models.load_model(out, compile=False)
        got = loaded.predict(probe, verbose=0)
        np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)
    # Keras 3's .h5 names no module for the op; the .keras written from it
    # said keras.layers, and Keras 3 called the Add layer with two tensors.
    api.convert(tmp_path / "m.h5", tmp_path / "back.keras")
    back = keras3.saving.load_model(tmp_path / "back.keras")
    np.testing.assert_array_equal(back.predict(probe, verbose=0), want)
