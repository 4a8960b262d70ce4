"""Migration rules, one test each on a config that needs the rule.

Keras 1.2 configs are written by hand after the layouts Keras 1.2.2 wrote
(``keras/models.py`` Sequential.get_config returns a bare list;
``keras/engine/topology.py`` writes inbound nodes as [name, node, tensor];
``keras/layers/*.py`` use output_dim, nb_filter, border_mode, init, ...).
tf_keras and Keras 3 fragments are copied from what tf_keras 2.21 and Keras
3.15.1 write for the same layers. No framework is imported here.
"""

from __future__ import annotations

import copy
from typing import Any

import numpy as np
import pytest

from modelconv import migrate
from modelconv.errors import UnsupportedError
from modelconv.formats.base import WriteOptions
from modelconv.keras_config import build_architecture
from modelconv.model import ArraySource, Model, Role, Tensor


def _run(form: int = 2) -> migrate._Run:
    return migrate._Run(form=form)


def _entry(cls: str, **config: Any) -> dict[str, Any]:
    return {"class_name": cls, "config": {"name": cls.lower(), **config}}


def _model(config: dict[str, Any], arrays: dict[str, np.ndarray], **meta: Any) -> Model:
    return Model(
        tensors=[
            Tensor(n, str(a.dtype), a.shape, Role.WEIGHT, (n,), ArraySource(a))
            for n, a in arrays.items()
        ],
        architecture=build_architecture(config),
        metadata={"producer": {"name": "keras", "version": "1.2.2"}, **meta},
        format="hdf5",
        flavour="keras-model",
    )


# --------------------------------------------------------------------------
# Keras 1 -> 2 rules


def test_keras1_argument_names_dense() -> None:
    entry = _entry(
        "Dense",
        output_dim=4,
        init="glorot_uniform",
        W_regularizer=None,
        b_regularizer=None,
        W_constraint=None,
        b_constraint=None,
        bias=False,
        input_dim=3,
    )
    run = _run(1)
    migrate.keras1_argument_names(entry, run)
    config = entry["config"]
    assert config["units"] == 4 and config["use_bias"] is False
    assert config["kernel_initializer"] == "glorot_uniform"
    assert "output_dim" not in config and "W_regularizer" not in config
    assert run.applied == ["keras1_argument_names"]


def test_keras1_convolution_names_and_class() -> None:
    entry = _entry(
        "Convolution2D",
        nb_filter=8,
        nb_row=3,
        nb_col=5,
        border_mode="same",
        subsample=[1, 2],
        dim_ordering="th",
        init="one",
    )
    run = _run(1)
    migrate.keras1_class_names(entry, run)
    migrate.keras1_argument_names(entry, run)
    config = entry["config"]
    assert entry["class_name"] == "Conv2D"
    assert config["filters"] == 8 and config["kernel_size"] == [3, 5]
    assert config["padding"] == "same" and config["strides"] == [1, 2]
    assert config["data_format"] == "channels_first"
    assert config["kernel_initializer"] == "ones"
    assert run.applied == ["keras1_class_names", "keras1_argument_names"]


def test_keras1_recurrent_names_set_gru_reset_after_false() -> None:
    entry = _entry(
        "GRU",
        output_dim=5,
        inner_init="orthogonal",
        inner_activation="sigmoid",
        dropout_W=0.1,
        dropout_U=0.2,
        consume_less="cpu",
        input_dim=3,
    )
    migrate.keras1_argument_names(entry, _run(1))
    config = entry["config"]
    assert config["units"] == 5 and config["recurrent_activation"] == "sigmoid"
    assert (config["dropout"], config["recurrent_dropout"]) == (0.1, 0.2)
    assert config["reset_after"] is False
    assert "consume_less" not in config and "input_dim" not in config


def test_embedding_keeps_output_dim_and_drops_dropout() -> None:
    entry = _entry("Embedding", input_dim=50, output_dim=8, dropout=0.0, init="uniform")
    migrate.keras1_argument_names(entry, _run(1))
    config = entry["config"]
    assert config["output_dim"] == 8 and config["input_dim"] == 50
    assert config["embeddings_initializer"] == "uniform" and "dropout" not in config


@pytest.mark.parametrize(
    ("mode", "cls", "extra"),
    [
        ("sum", "Add", {}),
        ("mul", "Multiply", {}),
        ("ave", "Average", {}),
        ("max", "Maximum", {}),
        ("concat", "Concatenate", {"axis": 1}),
        ("dot", "Dot", {"axes": 1, "normalize": False}),
        ("cos", "Dot", {"axes": 1, "normalize": True}),
    ],
)
def test_keras1_merge_layers(mode: str, cls: str, extra: dict[str, Any]) -> None:
    entry = _entry("Merge", mode=mode, concat_axis=1, dot_axes=1, mode_type="raw")
    migrate.keras1_merge_layers(entry, _run(1))
    assert entry["class_name"] == cls
    assert entry["config"] == {"name": "merge", "trainable": True, **extra}


def test_keras1_merge_with_a_function_mode_is_refused() -> None:
    entry = _entry("Merge", mode=["4wEAAA", None, None], mode_type="lambda")
    with pytest.raises(UnsupportedError, match="Merge layer 'merge'"):
        migrate.keras1_merge_layers(entry, _run(1))


def test_keras1_sequential_list_and_model_class() -> None:
    seq = {"class_name": "Sequential", "config": [_entry("Dense", units=2)]}
    run = _run(1)
    migrate.sequential_layer_list(seq, run)
    assert seq["config"]["layers"][0]["class_name"] == "Dense"
    functional = {"class_name": "Model", "config": {"layers": []}}
    migrate.functional_class_name(functional, run)
    assert functional["class_name"] == "Functional"
    assert run.applied == ["sequential_layer_list", "functional_class_name"]


# --------------------------------------------------------------------------
# Keras 2 -> 3 rules


def test_batch_shape_on_input_layer_and_dropped_elsewhere() -> None:
    inp = _entry("InputLayer", batch_input_shape=[None, 3], dtype="float32")
    dense = _entry("Dense", units=2, batch_input_shape=[None, 3], input_dim=3)
    run = _run()
    migrate.batch_shape(inp, run)
    migrate.batch_shape(dense, run)
    assert inp["config"]["batch_shape"] == [None, 3]
    assert "batch_input_shape" not in dense["config"]
    assert "input_dim" not in dense["config"]
    assert run.applied == ["batch_shape"]


def test_sequential_input_layer_inserted_from_first_layer() -> None:
    seq = {
        "class_name": "Sequential",
        "config": {"layers": [_entry("Dense", units=2, batch_input_shape=[None, 7])]},
    }
    migrate.sequential_input_layer(seq, _run())
    first = seq["config"]["layers"][0]
    assert first["class_name"] == "InputLayer"
    assert first["config"]["batch_shape"] == [None, 7]


def test_dtype_policy_from_plain_string_and_tf_keras_policy() -> None:
    dense = _entry("Dense", dtype="float32")
    mixed = _entry(
        "Dense", dtype={"class_name": "Policy", "config": {"name": "mixed_float16"}}
    )
    inp = _entry("InputLayer", dtype="float32")
    run = _run()
    for entry in (dense, mixed, inp):
        migrate.dtype_policy(entry, run)
    assert dense["config"]["dtype"] == {
        "module": "keras",
        "class_name": "DTypePolicy",
        "config": {"name": "float32"},
        "registered_name": None,
    }
    assert mixed["config"]["dtype"]["config"]["name"] == "mixed_float16"
    assert inp["config"]["dtype"] == "float32"  # Keras 3 InputLayer keeps a string


def test_drop_rejected_arguments_time_major_and_fused() -> None:
    lstm = _entry("LSTM", units=2, time_major=False, implementation=2)
    bn = _entry("BatchNormalization", fused=None, renorm=False)
    run = _run()
    migrate.drop_rejected_arguments(lstm, run)
    migrate.drop_rejected_arguments(bn, run)
    assert "time_major" not in lstm["config"]
    assert lstm["config"]["implementation"] == 2  # Keras 3 still accepts it
    assert "fused" not in bn["config"] and bn["config"]["renorm"] is False


def test_drop_rejected_arguments_refuses_a_meaningful_value() -> None:
    with pytest.raises(UnsupportedError, match="time_major=True"):
        migrate.drop_rejected_arguments(_entry("GRU", time_major=True), _run())


def test_separable_conv_unused_kernel_arguments_dropped() -> None:
    entry = _entry(
        "SeparableConv2D",
        groups=1,
        kernel_initializer={"class_name": "Ones"},
        kernel_regularizer=None,
        kernel_constraint=None,
    )
    migrate.drop_rejected_arguments(entry, _run())
    assert set(entry["config"]) == {"name"}


def test_batchnorm_axis_list_to_int() -> None:
    entry = _entry("BatchNormalization", axis=[3])
    migrate.batchnorm_axis(entry, _run())
    assert entry["config"]["axis"] == 3
    with pytest.raises(UnsupportedError, match="axes"):
        migrate.batchnorm_axis(_entry("BatchNormalization", axis=[1, 2]), _run())


def test_hard_sigmoid_from_keras2_is_refused_but_not_from_keras3() -> None:
    entry = _entry("LSTM", recurrent_activation="hard_sigmoid")
    with pytest.raises(UnsupportedError, match="hard_sigmoid"):
        migrate.hard_sigmoid_activation(entry, _run(2))
    migrate.hard_sigmoid_activation(entry, _run(3))  # Keras 3 meaning already


def test_object_modules_and_legacy_module_paths() -> None:
    entry = {
        "module": "keras.src.engine.base_layer",
        "class_name": "Dense",
        "config": {"kernel_initializer": {"class_name": "GlorotUniform", "config": {}}},
    }
    migrate.object_modules(entry, _run())
    assert entry["module"] == "keras.layers" and entry["registered_name"] is None
    init = entry["config"]["kernel_initializer"]
    assert init["module"] == "keras.initializers"


def test_node_form_keras3_from_keras1_and_keras2_lists() -> None:
    k1 = {"name": "m", "inbound_nodes": [[["a", 0, 0], ["b", 1, 0]]]}
    k2 = {"name": "d", "inbound_nodes": [[["a", 0, 0, {"training": False}]]]}
    run = _run()
    migrate.node_form_keras3(k1, run, {"a": [None, 3]})
    migrate.node_form_keras3(k2, run)
    args = k1["inbound_nodes"][0]["args"][0]
    assert [t["config"]["keras_history"] for t in args] == [["a", 0, 0], ["b", 1, 0]]
    assert args[0]["config"]["shape"] == [None, 3]
    node = k2["inbound_nodes"][0]
    assert node["args"][0]["class_name"] == "__keras_tensor__"
    assert node["kwargs"] == {"training": False}


def _nested_functional(first_index: int) -> dict[str, Any]:
    sub = {
        "class_name": "Sequential",
        "name": "sub",
        "config": {
            "name": "sub",
            "layers": [_entry("InputLayer", batch_input_shape=[None, 2])],
        },
        "inbound_nodes": [[["in", 0, 0, {}]], [["in", 0, 0, {}]]],
    }
    add = {
        "class_name": "Add",
        "name": "add",
        "config": {"name": "add"},
        "inbound_nodes": [
            [["sub", first_index, 0, {}], ["sub", first_index + 1, 0, {}]]
        ],
    }
    return {
        "class_name": "Functional",
        "config": {
            "name": "f",
            "layers": [
                _entry("InputLayer", batch_input_shape=[None, 2]) | {"name": "in"},
                sub,
                add,
            ],
            "input_layers": [["in", 0, 0]],
            "output_layers": [["add", 0, 0]],
        },
    }


def test_nested_model_node_index_renumbered_both_ways() -> None:
    config = _nested_functional(1)  # tf_keras numbers the sub-model's calls from 1
    run = _run(2)
    migrate.nested_model_node_index(config, run)
    refs = config["config"]["layers"][2]["inbound_nodes"][0]
    assert [r[1] for r in refs] == [0, 1]
    migrate.nested_model_node_offset(config, run)
    assert [r[1] for r in refs] == [1, 2]
    assert run.applied == ["nested_model_node_index", "nested_model_node_offset"]


def test_lambda_function_records_move_between_forms() -> None:
    keras3 = _entry(
        "Lambda",
        function={
            "class_name": "__lambda__",
            "config": {"code": "4wE=", "defaults": None, "closure": None},
        },
        arguments={},
    )
    original = copy.deepcopy(keras3)
    migrate.lambda_function_keras2(keras3, _run(3))
    config = keras3["config"]
    assert config["function"] == ["4wE=", None, None]
    assert config["function_type"] == "lambda"
    assert config["output_shape_type"] == "raw" and config["output_shape"] is None
    migrate.lambda_function_keras3(keras3, _run(2))
    assert keras3["config"]["function"] == original["config"]["function"]
    assert "function_type" not in keras3["config"]


# --------------------------------------------------------------------------
# Keras 3 -> 2 rules


def test_to_keras2_gives_tf_keras_form() -> None:
    config = _nested_functional(1)
    keras3, _ = migrate.to_keras3(config)
    keras2, applied = migrate.to_keras2(keras3)
    layers = keras2["config"]["layers"]
    assert "module" not in keras2 and all("module" not in e for e in layers)
    assert layers[0]["config"]["batch_input_shape"] == [None, 2]
    assert layers[2]["inbound_nodes"] == [[["sub", 1, 0, {}], ["sub", 2, 0, {}]]]
    assert keras2["config"]["input_layers"] == [["in", 0, 0]]
    assert {"node_form_keras2", "batch_input_shape", "nested_model_node_offset"} <= set(
        applied
    )


def test_plain_dtype_and_keras3_arguments_dropped() -> None:
    entry = {
        "module": "keras.layers",
        "class_name": "Dense",
        "registered_name": None,
        "build_config": {"input_shape": [None, 3]},
        "config": {
            "name": "d",
            "dtype": {
                "module": "keras",
                "class_name": "DTypePolicy",
                "config": {"name": "float32"},
            },
            "lora_rank": None,
            "kernel_initializer": {
                "module": "keras.initializers",
                "class_name": "GlorotUniform",
                "config": {"seed": None, "input_axes": None},
                "registered_name": None,
            },
        },
    }
    run = _run(3)
    for rule in migrate.KERAS2_LAYER_RULES:
        rule(entry, run)
    assert entry == {
        "class_name": "Dense",
        "config": {
            "name": "d",
            "dtype": "float32",
            "kernel_initializer": {"class_name": "GlorotUniform", "config": {}},
        },
    }


def test_keras3_argument_with_a_value_is_refused_for_keras2() -> None:
    entry = _entry("Dense", lora_rank=4)
    with pytest.raises(UnsupportedError, match="lora_rank=4"):
        migrate.drop_keras3_arguments(entry, _run(3))


# --------------------------------------------------------------------------
# Weight rules


def _k1_lstm_model(units: int = 3, dim: int = 2) -> tuple[Model, list[np.ndarray]]:
    rng = np.random.default_rng(0)
    shapes = [(dim, units), (units, units), (units,)] * 4
    arrays = [rng.normal(size=s).astype("float32") for s in shapes]
    gates = "iiicccfffooo"
    kinds = ["kernel", "recurrent_kernel", "bias"] * 4
    names = [f"lstm_1/{k}_{g}" for k, g in zip(kinds, gates)]
    config = {
        "class_name": "Sequential",
        "config": [
            {
                "class_name": "LSTM",
                "config": {
                    "name": "lstm_1",
                    "output_dim": units,
                    "inner_activation": "sigmoid",
                    "activation": "tanh",
                    "batch_input_shape": [None, 4, dim],
                    "consume_less": "cpu",
                    "return_sequences": False,
                },
            },
        ],
    }
    return _model(config, dict(zip(names, arrays))), arrays


def test_keras1_lstm_twelve_arrays_merged_in_ifco_order() -> None:
    model, w = _k1_lstm_model()
    migrated = migrate.migrate_keras3(model)
    assert migrated.names == ("lstm_1/kernel", "lstm_1/recurrent_kernel", "lstm_1/bias")
    kernel = migrated.tensor("lstm_1/kernel").read()
    # Keras 1 i, c, f, o -> Keras 2 i, f, c, o
    np.testing.assert_array_equal(kernel, np.concatenate([w[0], w[6], w[3], w[9]], -1))
    bias = migrated.tensor("lstm_1/bias").read()
    np.testing.assert_array_equal(bias, np.concatenate([w[2], w[8], w[5], w[11]], -1))
    assert "keras1_recurrent_weights" in migrated.migrations
    assert "keras1_argument_names" in migrated.migrations


def test_keras1_gru_nine_arrays_merged() -> None:
    rng = np.random.default_rng(1)
    shapes = [(2, 3), (3, 3), (3,)] * 3
    arrays = [rng.normal(size=s).astype("float32") for s in shapes]
    names = [
        f"gru_1/{k}_{g}"
        for k, g in zip(["kernel", "recurrent_kernel", "bias"] * 3, "zzzrrrhhh")
    ]
    config = {
        "class_name": "Sequential",
        "config": [
            {
                "class_name": "GRU",
                "config": {
                    "name": "gru_1",
                    "output_dim": 3,
                    "inner_activation": "sigmoid",
                    "batch_input_shape": [None, 4, 2],
                },
            }
        ],
    }
    migrated = migrate.migrate_keras3(_model(config, dict(zip(names, arrays))))
    kernel = migrated.tensor("gru_1/kernel").read()
    np.testing.assert_array_equal(kernel, np.concatenate(arrays[0::3], -1))
    layer = migrated.architecture.config["config"]["layers"][1]  # type: ignore[union-attr]
    assert layer["config"]["reset_after"] is False


def test_channels_first_kernel_transposed_and_theano_flip() -> None:
    rng = np.random.default_rng(2)
    kernel = rng.normal(size=(4, 1, 3, 2)).astype(
        "float32"
    )  # (filters, in, rows, cols)
    bias = rng.normal(size=(4,)).astype("float32")
    config = {
        "class_name": "Sequential",
        "config": [
            {
                "class_name": "Convolution2D",
                "config": {
                    "name": "conv",
                    "nb_filter": 4,
                    "nb_row": 3,
                    "nb_col": 2,
                    "dim_ordering": "th",
                    "border_mode": "valid",
                    "batch_input_shape": [None, 1, 6, 6],
                },
            }
        ],
    }
    model = _model(config, {"conv/kernel": kernel, "conv/bias": bias})
    migrated = migrate.migrate_keras3(model)
    expected = np.transpose(kernel, (2, 3, 1, 0))
    np.testing.assert_array_equal(migrated.tensor("conv/kernel").read(), expected)
    # Untouched tensors keep their source, so they stay bit-exact.
    assert migrated.tensor("conv/bias").source is model.tensor("conv/bias").source
    assert "theano_kernel_flip" not in migrated.migrations

    theano = _model(
        config, {"conv/kernel": kernel, "conv/bias": bias}, backend="theano"
    )
    flipped = migrate.migrate_keras3(theano)
    np.testing.assert_array_equal(
        flipped.tensor("conv/kernel").read(), expected[::-1, ::-1, :, :]
    )
    again = migrate.migrate_keras3(flipped)  # a migrated model is not flipped twice
    np.testing.assert_array_equal(
        again.tensor("conv/kernel").read(), expected[::-1, ::-1, :, :]
    )


def test_prepare_hdf5_keras2_names_and_bfloat16() -> None:
    import ml_dtypes

    kernel = np.arange(6, dtype=np.float32).reshape(2, 3).astype(ml_dtypes.bfloat16)
    config = {
        "module": "keras",
        "class_name": "Sequential",
        "registered_name": None,
        "config": {
            "name": "s",
            "layers": [
                {
                    "module": "keras.layers",
                    "class_name": "InputLayer",
                    "registered_name": None,
                    "config": {
                        "name": "i",
                        "batch_shape": [None, 2],
                        "dtype": "float32",
                    },
                },
                {
                    "module": "keras.layers",
                    "class_name": "LSTM",
                    "registered_name": None,
                    "config": {
                        "name": "lstm",
                        "units": 1,
                        "dtype": {
                            "module": "keras",
                            "class_name": "DTypePolicy",
                            "config": {"name": "bfloat16"},
                            "registered_name": None,
                        },
                    },
                },
            ],
        },
    }
    model = Model(
        tensors=[Tensor("lstm/kernel", "bfloat16", (2, 3), source=ArraySource(kernel))],
        architecture=build_architecture(config),
        metadata={"producer": {"name": "keras", "version": "3.15.1"}},
    )
    out = migrate.prepare_hdf5(model, WriteOptions(target_keras="keras2"))
    tensor = out.tensor("lstm/kernel")
    assert tensor.source_names == ("lstm/lstm_cell/kernel:0",)
    assert tensor.dtype == "float32"
    np.testing.assert_array_equal(tensor.read(), kernel.astype(np.float32))
    assert out.metadata["keras_version"].startswith("2.")
    assert "bfloat16_as_float32" in out.migrations
    lstm = out.architecture.config["config"]["layers"][1]  # type: ignore[union-attr]
    assert (
        lstm["config"]["dtype"] == "bfloat16" and lstm["config"]["time_major"] is False
    )


def test_keras3_source_needs_no_rule() -> None:
    config = {
        "module": "keras",
        "class_name": "Sequential",
        "registered_name": None,
        "config": {
            "name": "s",
            "layers": [
                {
                    "module": "keras.layers",
                    "class_name": "InputLayer",
                    "registered_name": None,
                    "config": {
                        "name": "i",
                        "batch_shape": [None, 2],
                        "dtype": "float32",
                        "sparse": False,
                        "ragged": False,
                    },
                },
                {
                    "module": "keras.layers",
                    "class_name": "Dense",
                    "registered_name": None,
                    "config": {
                        "name": "d",
                        "units": 1,
                        "dtype": {
                            "module": "keras",
                            "class_name": "DTypePolicy",
                            "config": {"name": "float32"},
                            "registered_name": None,
                        },
                    },
                },
            ],
        },
    }
    new, applied = migrate.to_keras3(config)
    assert applied == [] and new == config


def test_keras1_bidirectional_lstm_merged_per_direction() -> None:
    rng = np.random.default_rng(3)
    shapes = [(2, 3), (3, 3), (3,)] * 4
    kinds = ["kernel", "recurrent_kernel", "bias"] * 4
    arrays: dict[str, np.ndarray] = {}
    for direction in ("forward_lstm_1", "backward_lstm_1"):
        for kind, gate, shape in zip(kinds, "iiicccfffooo", shapes):
            name = f"bi/{direction}/{kind}_{gate}"
            arrays[name] = rng.normal(size=shape).astype("float32")
    lstm = {
        "class_name": "LSTM",
        "config": {"name": "lstm_1", "output_dim": 3, "inner_activation": "sigmoid"},
    }
    config = {
        "class_name": "Sequential",
        "config": [
            {
                "class_name": "Bidirectional",
                "config": {
                    "name": "bi",
                    "layer": lstm,
                    "merge_mode": "concat",
                    "batch_input_shape": [None, 4, 2],
                },
            }
        ],
    }
    migrated = migrate.migrate_keras3(_model(config, arrays))
    assert migrated.names == tuple(
        f"bi/{d}/{k}"
        for d in ("forward_lstm_1", "backward_lstm_1")
        for k in ("kernel", "recurrent_kernel", "bias")
    )
    w = [arrays[n] for n in arrays if n.startswith("bi/backward")]
    np.testing.assert_array_equal(
        migrated.tensor("bi/backward_lstm_1/kernel").read(),
        np.concatenate([w[0], w[6], w[3], w[9]], -1),
    )


def test_keras1_weight_names_become_keras2_names_in_order() -> None:
    """Keras 1.2 names (dense_1_W, running_std...) take the migrated layer's
    Keras 2 names by position; the values are untouched."""
    config = {
        "class_name": "Sequential",
        "config": [
            {
                "class_name": "Dense",
                "config": {"name": "dense_1", "output_dim": 3, "input_dim": 4},
            },
            {
                "class_name": "BatchNormalization",
                "config": {"name": "bn_1", "mode": 0, "axis": -1},
            },
        ],
    }
    rng = np.random.default_rng(3)
    arrays = {
        "dense_1/W": rng.normal(size=(4, 3)).astype("float32"),
        "dense_1/b": rng.normal(size=3).astype("float32"),
        "bn_1/gamma": np.ones(3, "float32"),
        "bn_1/beta": np.zeros(3, "float32"),
        "bn_1/running_mean": np.full(3, 0.5, "float32"),
        "bn_1/running_std": np.full(3, 2.0, "float32"),
    }
    migrated = migrate.migrate_keras3(_model(config, arrays))
    assert migrated.names == (
        "dense_1/kernel",
        "dense_1/bias",
        "bn_1/gamma",
        "bn_1/beta",
        "bn_1/moving_mean",
        "bn_1/moving_variance",
    )
    for new, old in zip(migrated.names, arrays):
        np.testing.assert_array_equal(migrated.tensor(new).read(), arrays[old])
    assert "keras1_weight_names" in migrated.migrations


def test_keras1_weight_names_leave_keras2_files_alone() -> None:
    config = {
        "class_name": "Sequential",
        "config": {
            "name": "s",
            "layers": [
                {
                    "class_name": "Dense",
                    "config": {"name": "d", "units": 3, "batch_input_shape": [None, 4]},
                }
            ],
        },
    }
    arrays = {"d/kernel": np.ones((4, 3), "f4"), "d/bias": np.zeros(3, "f4")}
    migrated = migrate.migrate_keras3(_model(config, arrays))
    assert migrated.names == ("d/kernel", "d/bias")
    assert "keras1_weight_names" not in migrated.migrations
