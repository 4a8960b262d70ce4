"""diff: architecture normalisation, tensor statuses, tolerances, CLI contract."""

from __future__ import annotations

import copy
import json
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from modelconv import api
from modelconv.diff import (
    ChangeKind,
    TensorStatus,
    aligned_chunks,
    diff_models,
    diff_paths,
)
from modelconv.keras_config import build_architecture
from modelconv.model import ArraySource, Model, Role, Tensor

FIXTURE_DIR = Path(__file__).resolve().parent.parent / "fixtures"

# --------------------------------------------------------------------------
# Builders


def tensor(name: str, array: np.ndarray, role: Role = Role.WEIGHT) -> Tensor:
    from modelconv.dtypes import dtype_name

    return Tensor(
        name, dtype_name(array.dtype), array.shape, role=role, source=ArraySource(array)
    )


def _dense3(name: str, units: int, activation: str, **extra: Any) -> dict[str, Any]:
    """A Dense layer entry as Keras 3.x writes it."""
    policy = {
        "module": "keras",
        "class_name": "DTypePolicy",
        "config": {"name": "float32"},
        "registered_name": None,
    }
    init = {
        "module": "keras.initializers",
        "class_name": "GlorotUniform",
        "config": {"seed": None},
        "registered_name": None,
    }
    return {
        "module": "keras.layers",
        "class_name": "Dense",
        "config": {
            "name": name,
            "trainable": True,
            "dtype": policy,
            "units": units,
            "activation": activation,
            "use_bias": True,
            "kernel_initializer": init,
            "bias_initializer": {
                "module": "keras.initializers",
                "class_name": "Zeros",
                "config": {},
                "registered_name": None,
            },
            "kernel_regularizer": None,
            "bias_regularizer": None,
            "kernel_constraint": None,
            "bias_constraint": None,
            "quantization_config": None,
            **extra,
        },
        "registered_name": None,
        "build_config": {"input_shape": [None, 4]},
    }


def keras3_mlp(activation: str = "relu", units: int = 8) -> dict[str, Any]:
    """A Keras 3 Sequential config: Input(4) → Dense(units) → Dense(3)."""
    return {
        "module": "keras",
        "class_name": "Sequential",
        "config": {
            "name": "sequential",
            "trainable": True,
            "layers": [
                {
                    "module": "keras.layers",
                    "class_name": "InputLayer",
                    "config": {
                        "batch_shape": [None, 4],
                        "dtype": "float32",
                        "sparse": False,
                        "ragged": False,
                        "name": "input_layer",
                    },
                    "registered_name": None,
                },
                _dense3("dense", units, activation),
                _dense3("dense_1", 3, "softmax"),
            ],
            "build_input_shape": [None, 4],
        },
        "registered_name": None,
        "build_config": {"input_shape": [None, 4]},
        "compile_config": None,
    }


def keras2_mlp() -> dict[str, Any]:
    """The same MLP as tf.keras 2.x writes it: batch_input_shape on the first
    Dense, plain dtype strings, activity_regularizer, another model name."""

    def dense(name: str, units: int, activation: str, **extra: Any) -> dict:
        return {
            "class_name": "Dense",
            "config": {
                "name": name,
                "trainable": True,
                "dtype": "float32",
                **extra,
                "units": units,
                "activation": activation,
                "use_bias": True,
                "kernel_initializer": {
                    "class_name": "GlorotUniform",
                    "config": {"seed": None},
                },
                "bias_initializer": {"class_name": "Zeros", "config": {}},
                "kernel_regularizer": None,
                "bias_regularizer": None,
                "activity_regularizer": None,
                "kernel_constraint": None,
                "bias_constraint": None,
            },
        }

    return {
        "class_name": "Sequential",
        "config": {
            "name": "sequential_3",
            "layers": [
                {
                    "class_name": "InputLayer",
                    "config": {
                        "batch_input_shape": [None, 4],
                        "dtype": "float32",
                        "sparse": False,
                        "ragged": False,
                        "name": "dense_input",
                    },
                },
                dense("dense", 8, "relu", batch_input_shape=[None, 4]),
                dense("dense_1", 3, "softmax"),
            ],
        },
        "keras_version": "2.15.0",
        "backend": "tensorflow",
    }


def mlp_tensors(seed: int = 0, names: tuple[str, ...] | None = None) -> list[Tensor]:
    rng = np.random.default_rng(seed)
    arrays = [
        rng.standard_normal((4, 8)).astype(np.float32),
        rng.standard_normal(8).astype(np.float32),
        rng.standard_normal((8, 3)).astype(np.float32),
        rng.standard_normal(3).astype(np.float32),
    ]
    names = names or ("dense/kernel", "dense/bias", "dense_1/kernel", "dense_1/bias")
    return [tensor(n, a) for n, a in zip(names, arrays)]


def mlp(config: dict[str, Any] | None = None, seed: int = 0, **kw: Any) -> Model:
    arch = build_architecture(config if config is not None else keras3_mlp())
    return Model(tensors=tuple(mlp_tensors(seed)), architecture=arch, **kw)


def nudged(model: Model, name: str, delta: float, index: int = 0) -> Model:
    tensors = []
    for t in model.tensors:
        if t.name == name:
            array = t.read().copy()
            array.reshape(-1)[index] += delta
            t = tensor(t.name, array, t.role)
        tensors.append(t)
    return model.replace(tensors=tuple(tensors))


def counted(diff: Any) -> list[Any]:
    return [c for c in diff.architecture if c.counts]


# --------------------------------------------------------------------------
# Tensors


def test_model_against_itself_is_identical() -> None:
    model = mlp()
    result = diff_models(model, model)
    assert result.identical and result.exit_code == 0
    assert [t.status for t in result.tensors] == [TensorStatus.SAME] * 4
    assert all(t.matched_by == "name" for t in result.tensors)


def test_one_nudged_weight_is_the_only_difference() -> None:
    a = mlp()
    b = nudged(a, "dense_1/kernel", 1e-3, index=5)
    result = diff_models(a, b)
    assert result.exit_code == 1 and result.differences == 1
    changed = [t for t in result.tensors if t.counts]
    assert [t.name for t in changed] == ["dense_1/kernel"]
    assert changed[0].status is TensorStatus.CHANGED
    assert changed[0].max_abs_diff == pytest.approx(1e-3, rel=1e-3)
    assert changed[0].mismatched == 1
    assert changed[0].mismatched_fraction == pytest.approx(1 / 24)

    tolerant = diff_models(a, b, atol=1e-2)
    assert tolerant.exit_code == 0
    statuses = {t.name: t.status for t in tolerant.tensors}
    assert statuses["dense_1/kernel"] is TensorStatus.CLOSE
    assert statuses["dense/kernel"] is TensorStatus.SAME


def test_rtol_is_relative_to_b() -> None:
    a = Model(tensors=(tensor("w", np.array([100.0, 1.0])),))
    b = Model(tensors=(tensor("w", np.array([101.0, 1.0])),))
    assert diff_models(a, b, rtol=0.0099).exit_code == 1
    assert diff_models(a, b, rtol=0.01).exit_code == 0
    assert diff_models(a, b).tensors[0].max_rel_diff == pytest.approx(1 / 101)


def test_negative_zero_is_changed_with_zero_difference() -> None:
    a = Model(tensors=(tensor("w", np.zeros(4, np.float32)),))
    b = Model(tensors=(tensor("w", -np.zeros(4, np.float32)),))
    result = diff_models(a, b).tensors[0]
    assert result.status is TensorStatus.CHANGED
    assert result.max_abs_diff == 0.0 and result.mismatched == 4


def test_nan_payloads_differ_in_bytes_not_numbers() -> None:
    bits = np.array([0x7FC00000, 0x7FC00001], dtype=np.uint32)
    a = Model(tensors=(tensor("w", bits[:1].view(np.float32)),))
    b = Model(tensors=(tensor("w", bits[1:].view(np.float32)),))
    result = diff_models(a, b).tensors[0]
    assert result.status is TensorStatus.CHANGED and result.max_abs_diff == 0.0
    # Within a tolerance, NaN equals NaN unless --nan-differs.
    assert diff_models(a, b, atol=1e-6).tensors[0].status is TensorStatus.CLOSE
    strict = diff_models(a, b, atol=1e-6, nan_differs=True).tensors[0]
    assert strict.status is TensorStatus.CHANGED and math.isnan(strict.max_abs_diff)


@pytest.mark.parametrize("dtype", ["float32", "bfloat16", "complex64"])
def test_nan_differs_counts_nan_in_identical_bytes(dtype: str) -> None:
    from modelconv.dtypes import numpy_dtype

    values = np.array([np.nan, 1.0]).astype(numpy_dtype(dtype))
    a = Model(tensors=(tensor("w", values),))
    b = Model(tensors=(tensor("w", values.copy()),))
    assert diff_models(a, b).identical
    # Byte-identical NaNs were reported `same` even under --nan-differs.
    result = diff_models(a, b, nan_differs=True, ulps=4).tensors[0]
    assert result.status is TensorStatus.CHANGED and result.mismatched == 1
    assert math.isnan(result.max_abs_diff)


def test_nan_against_number_is_a_difference() -> None:
    a = Model(tensors=(tensor("w", np.array([np.nan, 1.0])),))
    b = Model(tensors=(tensor("w", np.array([0.0, 1.0])),))
    result = diff_models(a, b, atol=10).tensors[0]
    assert result.status is TensorStatus.CHANGED and math.isnan(result.max_abs_diff)
    assert result.mismatched == 1


def test_infinities_of_the_same_sign_are_equal() -> None:
    a = Model(tensors=(tensor("w", np.array([np.inf, -np.inf, 1.0])),))
    b = Model(tensors=(tensor("w", np.array([np.inf, -np.inf, 2.0])),))
    result = diff_models(a, b).tensors[0]
    assert result.max_abs_diff == 1.0 and result.mismatched == 1


def test_ulps() -> None:
    x = np.array([1.0, 2.0], dtype=np.float32)
    y = np.nextafter(x, np.float32(3))
    a, b = Model(tensors=(tensor("w", x),)), Model(tensors=(tensor("w", y),))
    assert diff_models(a, b).exit_code == 1
    assert diff_models(a, b, ulps=1).tensors[0].status is TensorStatus.CLOSE
    z = np.nextafter(y, np.float32(3))
    c = Model(tensors=(tensor("w", z),))
    assert diff_models(a, c, ulps=1).exit_code == 1
    # -0.0 and +0.0 are 0 ulps apart; the smallest subnormals straddle zero.
    zeros = Model(tensors=(tensor("w", np.array([0.0, 0.0], np.float32)),))
    tiny = np.array([-1e-45, 1e-45], dtype=np.float32)
    assert diff_models(zeros, Model(tensors=(tensor("w", tiny),)), ulps=1).identical


@pytest.mark.parametrize(
    "dtype", ["float16", "bfloat16", "float64", "complex64", "complex128"]
)
def test_float_like_dtypes(dtype: str) -> None:
    from modelconv.dtypes import numpy_dtype

    base = np.array([1.0, -2.0, 0.5, 3.0]).astype(numpy_dtype(dtype))
    other = base.copy()
    other[2] = np.array(0.75).astype(numpy_dtype(dtype))
    a, b = Model(tensors=(tensor("w", base),)), Model(tensors=(tensor("w", other),))
    result = diff_models(a, b).tensors[0]
    assert result.status is TensorStatus.CHANGED
    assert result.max_abs_diff == pytest.approx(0.25)
    assert diff_models(a, b, atol=0.25).tensors[0].status is TensorStatus.CLOSE


def test_complex_difference_is_its_magnitude() -> None:
    a = Model(tensors=(tensor("w", np.array([1 + 1j], np.complex64)),))
    b = Model(tensors=(tensor("w", np.array([4 + 5j], np.complex64)),))
    assert diff_models(a, b).tensors[0].max_abs_diff == pytest.approx(5.0)


@pytest.mark.parametrize("dtype", ["int8", "int64", "uint16", "bool"])
def test_integers_compare_exactly_even_with_tolerance(dtype: str) -> None:
    base = np.array([0, 1, 1, 0]).astype(dtype)
    other = base.copy()
    other[0] = 1
    a, b = Model(tensors=(tensor("w", base),)), Model(tensors=(tensor("w", other),))
    result = diff_models(a, b, atol=5).tensors[0]
    assert result.status is TensorStatus.CHANGED and result.mismatched == 1
    assert result.max_abs_diff == 1.0


def test_only_in_shape_and_dtype_statuses() -> None:
    a = Model(
        tensors=(
            tensor("gone", np.ones(2)),
            tensor("shape", np.ones((2, 3))),
            tensor("dtype", np.ones(3, np.float32)),
        )
    )
    b = Model(
        tensors=(
            tensor("shape", np.ones((3, 2))),
            tensor("dtype", np.ones(3, np.float64)),
            tensor("new", np.ones(2)),
        )
    )
    result = {t.name: t for t in diff_models(a, b).tensors}
    assert result["gone"].status is TensorStatus.ONLY_IN_A
    assert result["gone"].name_b is None
    assert result["new"].status is TensorStatus.ONLY_IN_B
    assert result["new"].name_a is None
    assert result["shape"].status is TensorStatus.SHAPE_CHANGED
    assert result["dtype"].status is TensorStatus.DTYPE_CHANGED
    # Values still compared across a cast: equal numbers, 0 difference.
    assert result["dtype"].max_abs_diff == 0.0


def test_tensors_match_by_layer_and_position_when_names_differ() -> None:
    # A legacy .h5 says dense/kernel; an archive may only know dense/0.
    a = Model(tensors=tuple(mlp_tensors()))
    b = Model(
        tensors=tuple(
            mlp_tensors(names=("dense/0", "dense/1", "dense_1/0", "dense_1/1"))
        )
    )
    result = diff_models(a, b)
    assert result.identical
    assert [t.matched_by for t in result.tensors] == ["position"] * 4
    assert result.tensors[0].name_b == "dense/0"


def test_top_level_arrays_of_unrelated_models_are_not_paired() -> None:
    # With no layer to anchor on, `weights` was paired with `counts` (and
    # `x` with `y`) by position alone, reporting shape changes or `same`.
    a = Model(tensors=(tensor("w", np.ones(2)), tensor("x", np.ones(3))))
    b = Model(tensors=(tensor("w", np.ones(2)), tensor("y", np.ones(3))))
    result = diff_models(a, b)
    assert [(t.name, t.status) for t in result.tensors] == [
        ("w", TensorStatus.SAME),
        ("x", TensorStatus.ONLY_IN_A),
        ("y", TensorStatus.ONLY_IN_B),
    ]
    assert result.exit_code == 1


def _bidirectional_model(keras3: bool, backward_units: int = 4) -> Model:
    def gru(name: str, go_backwards: bool, units: int = 4) -> dict[str, Any]:
        config: dict[str, Any] = {"name": name, "units": units}
        config["go_backwards"] = go_backwards
        if keras3:
            config["zero_output_for_mask"] = False
        else:
            config["implementation"] = 2  # tf.keras only; Keras 3 ignores it
        return {"class_name": "GRU", "config": config}

    wrapper: dict[str, Any] = {"name": "bidi", "merge_mode": "concat"}
    if keras3:  # Keras 3 renames the layer and always writes the backward one
        wrapper["layer"] = gru("forward_gru", False)
        wrapper["backward_layer"] = gru("backward_gru", True, backward_units)
    else:
        wrapper["layer"] = gru("gru", False)
    inputs = {"name": "in", "batch_shape": [None, 5, 3]}
    layers = [
        {"class_name": "InputLayer", "config": inputs},
        {"class_name": "Bidirectional", "config": wrapper},
    ]
    config = {"class_name": "Sequential", "config": {"name": "s", "layers": layers}}
    return Model(architecture=build_architecture(config))


def test_bidirectional_keras2_and_keras3_forms_are_the_same() -> None:
    result = diff_models(_bidirectional_model(False), _bidirectional_model(True))
    assert counted(result) == []
    # A backward layer that really differs is still a change.
    other = diff_models(_bidirectional_model(False), _bidirectional_model(True, 5))
    assert [c.path for c in counted(other)] == ["/layers/bidi/config/backward_layer"]


def test_tensors_follow_a_renamed_layer() -> None:
    config = keras3_mlp()
    renamed = copy.deepcopy(config)
    renamed["config"]["layers"][2]["config"]["name"] = "head"
    a = mlp(config)
    b = Model(
        tensors=tuple(
            mlp_tensors(
                names=("dense/kernel", "dense/bias", "head/kernel", "head/bias")
            )
        ),
        architecture=build_architecture(renamed),
    )
    result = diff_models(a, b)
    assert [(c.kind, c.a, c.b) for c in counted(result)] == [
        (ChangeKind.RENAMED, "dense_1", "head")
    ]
    assert all(t.status is TensorStatus.SAME for t in result.tensors)
    assert result.tensors[2].name_b == "head/kernel"


def test_optimizer_state_only_with_flag() -> None:
    a = Model(tensors=(tensor("opt/m", np.zeros(3), Role.OPTIMIZER),))
    b = Model(tensors=(tensor("opt/m", np.ones(3), Role.OPTIMIZER),))
    assert diff_models(a, b).identical
    assert diff_models(a, b).tensors == ()
    assert diff_models(a, b, optimizer=True).exit_code == 1


class _OddChunks:
    """A source that yields chunks of uneven, fixed sizes."""

    def __init__(self, array: np.ndarray, sizes: list[int]) -> None:
        self.array, self.sizes = array, sizes

    def read(self) -> np.ndarray:
        return self.array

    def iter_chunks(self, max_bytes: int) -> Iterator[np.ndarray]:
        flat, start, i = self.array.reshape(-1), 0, 0
        while start < flat.size:
            step = self.sizes[i % len(self.sizes)]
            yield flat[start : start + step]
            start, i = start + step, i + 1


def test_chunks_of_different_sizes_are_realigned() -> None:
    array = np.arange(100, dtype=np.float32)
    other = array.copy()
    other[[0, 37, 99]] += 1
    ta = Tensor("w", "float32", (100,), source=_OddChunks(array, [7, 30]))
    tb = Tensor("w", "float32", (100,), source=_OddChunks(other, [13]))
    pairs = list(aligned_chunks(ta, tb))
    assert sum(len(x) for x, _ in pairs) == 100
    assert all(len(x) == len(y) for x, y in pairs)
    result = diff_models(Model(tensors=(ta,)), Model(tensors=(tb,))).tensors[0]
    assert result.mismatched == 3 and result.max_abs_diff == 1.0


def test_small_chunk_size_gives_same_result() -> None:
    a = mlp()
    b = nudged(a, "dense/kernel", 0.5, index=31)
    whole = diff_models(a, b)
    tiny = diff_models(a, b, chunk_bytes=8)
    assert whole.to_json()["tensors"] == tiny.to_json()["tensors"]


def test_progress_reports_bytes_of_a() -> None:
    seen: list[int] = []
    model = mlp()
    diff_models(model, model, progress=seen.append)
    assert sum(seen) == sum(t.nbytes for t in model.tensors)


# --------------------------------------------------------------------------
# Architecture


def test_changed_activation_shows_both_values() -> None:
    result = diff_models(mlp(keras3_mlp("relu")), mlp(keras3_mlp("tanh")))
    changes = counted(result)
    assert [(c.kind, c.path, c.a, c.b) for c in changes] == [
        (ChangeKind.CHANGED, "/layers/dense/config/activation", "relu", "tanh")
    ]
    assert result.exit_code == 1
    # The weights are the same, so the architecture change is the only one.
    assert result.differences == 1


def test_keras2_and_keras3_serialisations_of_one_mlp_are_equal() -> None:
    result = diff_models(mlp(keras3_mlp()), mlp(keras2_mlp()))
    assert counted(result) == [], [c.to_json() for c in counted(result)]
    assert result.identical
    defaults = {c.path for c in result.architecture}
    # Spelled-out defaults are listed, not counted.
    assert "/layers/dense/config/quantization_config" in defaults
    assert "/layers/dense/config/activity_regularizer" in defaults
    assert "/layers/dense/config/batch_shape" in defaults


def test_added_removed_and_connections() -> None:
    functional_a = {
        "class_name": "Functional",
        "config": {
            "name": "net",
            "layers": [
                {
                    "class_name": "InputLayer",
                    "name": "x",
                    "config": {"batch_input_shape": [None, 4], "name": "x"},
                    "inbound_nodes": [],
                },
                {
                    "class_name": "Dense",
                    "name": "d1",
                    "config": {"name": "d1", "units": 4},
                    "inbound_nodes": [[["x", 0, 0, {}]]],
                },
                {
                    "class_name": "Dense",
                    "name": "d2",
                    "config": {"name": "d2", "units": 4},
                    "inbound_nodes": [[["d1", 0, 0, {}]]],
                },
            ],
            "input_layers": [["x", 0, 0]],
            "output_layers": [["d2", 0, 0]],
        },
    }

    def k3_node(source: str) -> list[dict[str, Any]]:
        history = {"shape": [None, 4], "keras_history": [source, 0, 0]}
        return [
            {
                "args": [{"class_name": "__keras_tensor__", "config": history}],
                "kwargs": {},
            }
        ]

    functional_b = {
        "class_name": "Functional",
        "config": {
            "name": "net",
            "layers": [
                {
                    "class_name": "InputLayer",
                    "name": "x",
                    "config": {"batch_shape": [None, 4], "name": "x"},
                    "inbound_nodes": [],
                },
                {
                    "class_name": "Dense",
                    "name": "d1",
                    "config": {"name": "d1", "units": 4},
                    "inbound_nodes": k3_node("x"),
                },
                {
                    "class_name": "Dense",
                    "name": "d2",
                    "config": {"name": "d2", "units": 4},
                    "inbound_nodes": k3_node("x"),
                },
                {
                    "class_name": "Dropout",
                    "name": "drop",
                    "config": {"name": "drop", "rate": 0.5},
                    "inbound_nodes": k3_node("d2"),
                },
            ],
            "input_layers": ["x", 0, 0],
            "output_layers": ["drop", 0, 0],
        },
    }
    a = Model(architecture=build_architecture(functional_a))
    b = Model(architecture=build_architecture(functional_b))
    found = {(c.kind, c.path): c for c in counted(diff_models(a, b))}
    assert set(found) == {
        (ChangeKind.ADDED, "/layers/drop"),
        (ChangeKind.CONNECTIONS, "/layers/d2/inbound"),
        (ChangeKind.CONNECTIONS, "/outputs"),
    }
    assert found[(ChangeKind.CONNECTIONS, "/layers/d2/inbound")].a == ["d1"]
    assert found[(ChangeKind.CONNECTIONS, "/layers/d2/inbound")].b == ["x"]

    swapped = {(c.kind, c.path) for c in counted(diff_models(b, a))}
    assert (ChangeKind.REMOVED, "/layers/drop") in swapped


def test_architecture_missing_on_one_side() -> None:
    with_arch = mlp()
    weights_only = Model(tensors=with_arch.tensors)
    result = diff_models(with_arch, weights_only)
    assert [c.kind for c in result.architecture] == [ChangeKind.REMOVED]
    assert result.exit_code == 1


def test_json_pointer_escapes() -> None:
    config = keras3_mlp()
    other = copy.deepcopy(config)
    other["config"]["layers"][1]["config"]["a/b~c"] = 1
    config["config"]["layers"][1]["config"]["a/b~c"] = 2
    changes = counted(diff_models(mlp(config), mlp(other)))
    assert changes[0].path == "/layers/dense/config/a~1b~0c"


# --------------------------------------------------------------------------
# Metadata and the JSON document


def test_metadata_counts_only_when_strict() -> None:
    a = mlp(metadata={"producer": {"name": "keras", "version": "3.3.3"}})
    b = mlp(metadata={"producer": {"name": "keras", "version": "3.15.1"}})
    loose = diff_models(a, b)
    assert loose.identical and len(loose.metadata) == 1
    assert loose.metadata[0].path == "/producer"
    assert diff_models(a, b, strict=True).exit_code == 1


def test_json_document_shape() -> None:
    a = Model(tensors=(tensor("w", np.array([np.nan, 1.0])),))
    b = Model(tensors=(tensor("w", np.array([0.0, 1.0])),))
    document = diff_models(a, b).to_json()
    assert next(iter(document)) == "schema" and document["schema"] == 1
    text = json.dumps(document, allow_nan=False)
    entry = json.loads(text)["tensors"][0]
    assert entry["max_abs_diff"] == "nan"
    assert set(entry) >= {
        "name",
        "name_a",
        "name_b",
        "matched_by",
        "status",
        "max_abs_diff",
        "max_rel_diff",
        "mismatched",
        "mismatched_fraction",
    }
    assert set(document) >= {"identical", "architecture", "tensors", "metadata"}


# --------------------------------------------------------------------------
# Files and the command line


@pytest.fixture()
def saved(tmp_path: Path) -> dict[str, Path]:
    model = mlp(keras3_mlp())
    paths = {
        "a": tmp_path / "a.npz",
        "a_json": tmp_path / "a.json",
        "nudged": tmp_path / "nudged.npz",
        "tanh": tmp_path / "tanh.npz",
    }
    api.save(model, paths["a"])
    api.save(model, paths["a_json"])
    api.save(nudged(model, "dense/bias", 1e-3), paths["nudged"])
    api.save(mlp(keras3_mlp("tanh")), paths["tanh"])
    return paths


def test_diff_paths_across_formats(saved: dict[str, Path]) -> None:
    result = diff_paths(saved["a"], saved["a_json"])
    assert result.identical
    assert result.source_a["format"] == "npz" and result.source_b["format"] == "json"


def test_cli_exit_codes_and_summary(run_cli: Any, saved: dict[str, Path]) -> None:
    same = run_cli("diff", saved["a"], saved["a_json"])
    assert same.exit_code == 0 and same.stdout.startswith("identical")

    nudge = run_cli("diff", saved["a"], saved["nudged"])
    assert nudge.exit_code == 1
    assert nudge.stdout.startswith("1 difference")
    assert "dense/bias" in nudge.stdout and "3 tensors identical" in nudge.stdout

    assert run_cli("diff", saved["a"], saved["nudged"], "--atol", "1e-2").exit_code == 0

    tanh = run_cli("diff", saved["a"], saved["tanh"])
    assert tanh.exit_code == 1 and "relu" in tanh.stdout and "tanh" in tanh.stdout


def test_cli_json(run_cli: Any, saved: dict[str, Path]) -> None:
    out = run_cli("diff", saved["a"], saved["nudged"], "--json")
    assert out.exit_code == 1
    document = json.loads(out.stdout)
    assert list(document)[0] == "schema"
    changed = [t for t in document["tensors"] if t["status"] != "same"]
    assert [t["name"] for t in changed] == ["dense/bias"]
    assert changed[0]["max_abs_diff"] == pytest.approx(1e-3, rel=1e-3)


def test_cli_error_is_exit_2_with_json(run_cli: Any, saved: dict[str, Path]) -> None:
    out = run_cli("diff", saved["a"], saved["a"].parent / "missing.npz", "--json")
    assert out.exit_code == 2
    assert json.loads(out.stdout)["error"]["kind"]
    assert out.stderr.startswith("error:")


@pytest.mark.parametrize(
    "args",
    [
        ("diff", "a.npz", "b.npz", "--atol", "-1"),
        ("diff", "a.npz"),
        ("verify", "m.npz", "--bogus"),
        ("inspect",),
    ],
)
def test_cli_bad_option_with_json_prints_the_error_document(
    run_cli: Any, args: tuple[str, ...]
) -> None:
    # Click's usage errors bypassed the error document --json promises.
    out = run_cli(*args, "--json")
    assert out.exit_code == 2
    error = json.loads(out.stdout)["error"]
    assert error["kind"] == "usage" and error["message"]


def test_cli_help_lists_options(run_cli: Any) -> None:
    out = run_cli("diff", "--help")
    for option in ("--atol", "--rtol", "--ulps", "--nan-differs", "--optimizer"):
        assert option in out.stdout
    assert "--strict" in out.stdout and "--from-a" in out.stdout


# --------------------------------------------------------------------------
# Real files written by Keras


_READERS = {".h5": "hdf5", ".keras": "keras_zip"}


def _fixture(fixtures_dir: Path, name: str) -> Path:
    import importlib.util

    path = fixtures_dir / name
    if not path.exists():
        pytest.skip(f"fixture {name} not generated")
    reader = _READERS[path.suffix]
    if importlib.util.find_spec(f"modelconv.formats.{reader}") is None:
        pytest.skip(f"no {reader} reader in this build yet")
    return path


def test_fixture_h5_and_keras_are_identical(fixtures_dir: Path, run_cli: Any) -> None:
    h5 = _fixture(fixtures_dir, "k3_iris_mlp.h5")
    archive = _fixture(fixtures_dir, "k3_iris_mlp.keras")
    result = diff_paths(h5, archive)
    assert result.identical, result.to_json()
    assert run_cli("diff", h5, archive).exit_code == 0
    assert run_cli("diff", h5, h5).exit_code == 0


def test_fixture_two_training_runs_differ_in_weights_only(fixtures_dir: Path) -> None:
    run1 = _fixture(fixtures_dir, "k3_iris_mlp.h5")
    run2 = _fixture(fixtures_dir, "k3_iris_mlp_run2.h5")
    result = diff_paths(run1, run2)
    assert counted(result) == []
    assert result.exit_code == 1
    assert any(t.status is TensorStatus.CHANGED for t in result.tensors)
    assert all(
        t.status in (TensorStatus.CHANGED, TensorStatus.SAME) for t in result.tensors
    )


def test_fixture_tf_keras_and_keras3_mlp(fixtures_dir: Path) -> None:
    tfk = _fixture(fixtures_dir, "tfk_same_mlp.h5")
    k3 = _fixture(fixtures_dir, "k3_iris_mlp.h5")
    result = diff_paths(tfk, k3)
    kinds = {c.kind for c in counted(result)}
    assert not kinds & {ChangeKind.ADDED, ChangeKind.REMOVED}
    for change in counted(result):
        assert not change.path.endswith(("/units", "/activation")), change
    assert counted(result) == [], [c.to_json() for c in counted(result)]


def test_keras1_and_keras2_serialisations_of_one_mlp_are_equal() -> None:
    """Keras 1 names (output_dim, init, bias) and Keras 2.0's VarianceScaling
    spelling of glorot_uniform are normalised away."""

    def k1(name: str, units: int, activation: str, **extra: Any) -> dict:
        config = {
            "name": name,
            "output_dim": units,
            "init": "glorot_uniform",
            "activation": activation,
            "bias": True,
            "W_regularizer": None,
            "b_constraint": None,
            "trainable": True,
            **extra,
        }
        return {"class_name": "Dense", "config": config}

    def k2(name: str, units: int, activation: str, **extra: Any) -> dict:
        glorot = {
            "class_name": "VarianceScaling",
            "config": {
                "scale": 1.0,
                "mode": "fan_avg",
                "distribution": "uniform",
                "seed": None,
            },
        }
        config = {
            "name": name,
            "trainable": True,
            **extra,
            "units": units,
            "activation": activation,
            "use_bias": True,
            "kernel_initializer": glorot,
            "bias_initializer": {"class_name": "Zeros", "config": {}},
            "kernel_regularizer": None,
        }
        return {"class_name": "Dense", "config": config}

    keras1 = {
        "class_name": "Sequential",
        "config": [
            k1("dense_1", 8, "relu", batch_input_shape=[None, 4], input_dim=4),
            k1("dense_2", 3, "softmax"),
        ],
    }
    keras2 = {
        "class_name": "Sequential",
        "config": {
            "name": "sequential_1",
            "layers": [
                k2("dense_1", 8, "relu", batch_input_shape=[None, 4]),
                k2("dense_2", 3, "softmax"),
            ],
        },
    }
    a = Model(architecture=build_architecture(keras1))
    b = Model(architecture=build_architecture(keras2))
    result = diff_models(a, b)
    assert counted(result) == [], [c.to_json() for c in counted(result)]

    keras2["config"]["layers"][1]["config"]["units"] = 4
    changed = counted(diff_models(a, Model(architecture=build_architecture(keras2))))
    assert [(c.path, c.a, c.b) for c in changed] == [
        ("/layers/dense_2/config/units", 3, 4)
    ]


def test_public_api_takes_paths_or_models(saved: dict[str, Path]) -> None:
    import modelconv

    model = mlp(keras3_mlp())
    assert modelconv.diff(model, saved["a"]).identical
    assert modelconv.diff(saved["a"], saved["tanh"], atol=1).exit_code == 1


class _Generated:
    """A lazy source that makes each chunk on request: nothing is held."""

    def __init__(self, size: int, offset: float) -> None:
        self.size, self.offset = size, offset

    def read(self) -> np.ndarray:
        raise AssertionError("diff must stream, not read whole tensors")

    def iter_chunks(self, max_bytes: int) -> Iterator[np.ndarray]:
        step = max(1, max_bytes // 4)
        for start in range(0, self.size, step):
            n = min(step, self.size - start)
            values = np.arange(start, start + n) % 1000 + self.offset
            yield values.astype(np.float32)


def test_memory_follows_the_chunk_not_the_tensor() -> None:
    import tracemalloc

    size = 8 * 2**20  # 32 MiB of float32 per side, 4x the allowed peak
    chunk = 64 * 2**10
    a = Model(tensors=(Tensor("w", "float32", (size,), source=_Generated(size, 0)),))
    b = Model(tensors=(Tensor("w", "float32", (size,), source=_Generated(size, 0.5)),))
    tracemalloc.start()
    try:
        result = diff_models(a, b, rtol=1e-3, chunk_bytes=chunk)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert result.tensors[0].mismatched is not None
    assert result.tensors[0].max_abs_diff == 0.5
    assert peak < 8 * 2**20, f"peak {peak / 2**20:.1f} MiB"


def test_lambda_function_spellings_are_equal() -> None:
    code = "4wEAAAAAAAAA"

    def lam(config: dict[str, Any]) -> Model:
        entry = {"class_name": "Lambda", "config": {"name": "lam", **config}}
        layers = [
            {
                "class_name": "InputLayer",
                "config": {"batch_shape": [None, 2], "name": "x"},
            },
            entry,
        ]
        seq = {"class_name": "Sequential", "config": {"name": "s", "layers": layers}}
        return Model(architecture=build_architecture(seq))

    keras3 = lam(
        {
            "function": {
                "class_name": "__lambda__",
                "config": {"code": code, "defaults": None, "closure": None},
            },
            "arguments": {},
        }
    )
    keras2 = lam(
        {
            "function": [code, None, None],
            "function_type": "lambda",
            "module": "__main__",
            "output_shape": None,
            "output_shape_type": "raw",
            "output_shape_module": None,
            "arguments": {},
        }
    )
    assert counted(diff_models(keras3, keras2)) == []
    other = lam({"function": ["AAAA", None, None], "function_type": "lambda"})
    assert [c.path for c in counted(diff_models(keras3, other))] == [
        "/layers/lam/config/function/config/code"
    ]


def test_two_naming_schemes_pair_in_order() -> None:
    """Optimizer state is `optimizer/adam/..._momentum` in legacy .h5 and
    `optimizer/0` in .keras: with no name in common, order decides."""
    rng = np.random.default_rng(3)
    arrays = [rng.standard_normal(s).astype(np.float32) for s in ((4, 3), (3,))]
    legacy = ("optimizer/adam/dense_kernel_m", "optimizer/adam/dense_bias_m")
    a = Model(
        tensors=tuple(tensor(n, x, Role.OPTIMIZER) for n, x in zip(legacy, arrays))
    )
    b = Model(
        tensors=tuple(
            tensor(f"optimizer/{i}", x, Role.OPTIMIZER) for i, x in enumerate(arrays)
        )
    )
    result = diff_models(a, b, optimizer=True)
    assert result.identical
    assert [(t.name_b, t.matched_by) for t in result.tensors] == [
        ("optimizer/0", "position"),
        ("optimizer/1", "position"),
    ]
    # Shapes that do not line up are not paired.
    c = Model(tensors=(tensor("optimizer/0", arrays[1], Role.OPTIMIZER),))
    assert {t.status for t in diff_models(a, c, optimizer=True).tensors} == {
        TensorStatus.ONLY_IN_A,
        TensorStatus.ONLY_IN_B,
    }


def test_a_truncated_source_is_an_input_error_not_a_silent_match() -> None:
    from modelconv.errors import InputError

    full = np.arange(10, dtype=np.float32)
    short = Tensor("w", "float32", (10,), source=_OddChunks(full[:7], [3]))
    good = Tensor("w", "float32", (10,), source=ArraySource(full))
    for a, b in ((short, good), (good, short)):
        with pytest.raises(InputError, match="7 elements"):
            diff_models(Model(tensors=(a,)), Model(tensors=(b,)))


def test_fixture_functional_with_nested_model_across_keras_lines(
    fixtures_dir: Path,
) -> None:
    """tf_keras and Keras 3 write the same functional model (two inputs, a
    shared layer, a nested Sequential, BatchNormalization) differently."""
    tfk = _fixture(fixtures_dir, "tfk_functional.h5")
    k3 = _fixture(fixtures_dir, "k3_functional.h5")
    result = diff_paths(tfk, k3)
    assert counted(result) == [], [c.to_json() for c in counted(result)]
    assert all(t.matched_by == "name" for t in result.tensors)


def _edited_copy(tmp_path: Path, edit: Any) -> Path:
    """A copy of the Keras 3 iris MLP fixture with ``edit(h5file)`` applied."""
    import shutil

    import h5py

    path = tmp_path / "edited.h5"
    shutil.copy(FIXTURE_DIR / "k3_iris_mlp.h5", path)
    with h5py.File(path, "r+") as h5:
        edit(h5)
    return path


def test_fixture_with_one_nudged_weight(run_cli: Any, tmp_path: Path) -> None:
    def nudge(h5: Any) -> None:
        dset = h5["model_weights/dense_1/sequential/dense_1/kernel"]
        values = dset[()]
        values[3, 7] += np.float32(1e-3)
        dset[...] = values

    edited = _edited_copy(tmp_path, nudge)
    original = FIXTURE_DIR / "k3_iris_mlp.h5"
    result = run_cli("diff", original, edited, "--json")
    assert result.exit_code == 1
    report = json.loads(result.stdout)
    assert report["architecture"] == [] or all(
        c["kind"] == "default" for c in report["architecture"]
    )
    moved = [t for t in report["tensors"] if t["status"] != "same"]
    assert [t["name"] for t in moved] == ["dense_1/kernel"]
    assert moved[0]["status"] == "changed"
    assert moved[0]["max_abs_diff"] == pytest.approx(1e-3, rel=1e-3)
    assert moved[0]["mismatched"] == 1
    assert run_cli("diff", original, edited, "--atol", "1e-2").exit_code == 0


def test_fixture_with_a_changed_activation(run_cli: Any, tmp_path: Path) -> None:
    def retune(h5: Any) -> None:
        config = json.loads(h5.attrs["model_config"])
        layer = config["config"]["layers"][1]
        assert layer["config"]["activation"] == "relu"
        layer["config"]["activation"] = "tanh"
        h5.attrs["model_config"] = json.dumps(config)

    edited = _edited_copy(tmp_path, retune)
    result = run_cli("diff", FIXTURE_DIR / "k3_iris_mlp.h5", edited, "--json")
    assert result.exit_code == 1
    report = json.loads(result.stdout)
    changed = [c for c in report["architecture"] if c["kind"] != "default"]
    assert [(c["kind"], c["a"], c["b"]) for c in changed] == [
        ("changed", "relu", "tanh")
    ]
    assert changed[0]["path"].endswith("/activation")
    assert all(t["status"] == "same" for t in report["tensors"])
    human = run_cli("diff", FIXTURE_DIR / "k3_iris_mlp.h5", edited)
    assert "relu" in human.stdout and "tanh" in human.stdout


def _keras1_conv_file(path: Path) -> None:
    """A Keras 1.2 file: Convolution2D with nb_filter/nb_row, dense_1_W names."""
    import h5py

    conv = {
        "name": "convolution2d_1",
        "nb_filter": 2,
        "nb_row": 3,
        "nb_col": 3,
        "border_mode": "same",
        "dim_ordering": "tf",
        "init": "glorot_uniform",
        "activation": "relu",
        "batch_input_shape": [None, 5, 5, 1],
        "subsample": [1, 1],
        "bias": True,
    }
    config = {
        "class_name": "Sequential",
        "config": [
            {"class_name": "Convolution2D", "config": conv},
            {"class_name": "Flatten", "config": {"name": "flatten_1"}},
            {"class_name": "Dense", "config": {"name": "dense_1", "output_dim": 3}},
        ],
    }
    rng = np.random.default_rng(0)
    weights = {
        "convolution2d_1": {
            "convolution2d_1_W": rng.normal(size=(3, 3, 1, 2)).astype("f4"),
            "convolution2d_1_b": np.zeros(2, "f4"),
        },
        "flatten_1": {},
        "dense_1": {
            "dense_1_W": rng.normal(size=(50, 3)).astype("f4"),
            "dense_1_b": np.zeros(3, "f4"),
        },
    }
    with h5py.File(path, "w") as h5:
        h5.attrs["keras_version"] = np.bytes_(b"1.2.2")
        h5.attrs["backend"] = np.bytes_(b"tensorflow")
        h5.attrs["model_config"] = np.bytes_(json.dumps(config).encode())
        group = h5.create_group("model_weights")
        group.attrs["layer_names"] = np.array([n.encode() for n in weights])
        for layer, arrays in weights.items():
            sub = group.create_group(layer)
            sub.attrs["weight_names"] = np.array(
                [n.encode() for n in arrays], dtype="S20"
            )
            for name, array in arrays.items():
                sub[name] = array


def test_a_keras1_file_against_its_conversion_is_identical(tmp_path: Path) -> None:
    """Keras 1 spells every layer differently (Convolution2D, nb_filter,
    dense_1_W); diff compares it as Keras 3 reads it, says so, and finds
    the converted .keras identical."""
    source, converted = tmp_path / "k1.h5", tmp_path / "k1.keras"
    _keras1_conv_file(source)
    api.convert(source, converted)
    result = diff_paths(source, converted)
    assert result.identical, [c.path for c in result.architecture]
    rules = result.source_a["compared_as_keras3"]
    assert {"keras1_class_names", "keras1_weight_names"} <= set(rules)
    assert "compared_as_keras3" not in result.source_b
    swapped = diff_paths(converted, source)
    assert swapped.identical and "compared_as_keras3" in swapped.source_b
