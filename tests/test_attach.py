"""attach_weights: an architecture-only model plus a weights-only model.

Synthetic cases pin the matching rules (by layer name, by order as Keras's
``load_weights`` does, Keras 3 ``layers/<name>/vars/<i>`` paths, mismatches
named); the real fixtures prove that ``to_json()`` + ``save_weights`` pairs
written by tf_keras and Keras 3 convert to an ``.h5`` that Keras loads and
that predicts exactly what the original model predicted.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from _keras_models import local_outputs, stored_io

from modelconv.attach import attach_weights
from modelconv.errors import InputError, UsageError
from modelconv.keras_config import build_architecture
from modelconv.model import ArraySource, Model, Role, Tensor

MLP_CONFIG = {
    "class_name": "Sequential",
    "config": {
        "name": "sequential",
        "layers": [
            {
                "class_name": "Dense",
                "config": {
                    "name": "hidden",
                    "units": 5,
                    "batch_input_shape": [None, 4],
                },
            },
            {"class_name": "Dropout", "config": {"name": "drop", "rate": 0.5}},
            {"class_name": "Dense", "config": {"name": "out", "units": 3}},
        ],
    },
}
SHAPES = {
    "hidden/kernel": (4, 5),
    "hidden/bias": (5,),
    "out/kernel": (5, 3),
    "out/bias": (3,),
}


def arch_model() -> Model:
    return Model(
        architecture=build_architecture(MLP_CONFIG),
        metadata={"producer": {"name": "keras", "version": "2.21.0"}},
        format="keras-json",
        flavour="keras2",
    )


def weights_model(names: dict[str, str], shapes: dict[str, tuple[int, ...]]) -> Model:
    """Tensors named ``names[canonical]`` with distinct values per tensor."""
    tensors = []
    for index, (canonical, name) in enumerate(names.items()):
        shape = shapes[canonical]
        array = np.arange(int(np.prod(shape)), dtype="float32").reshape(shape) + index
        tensors.append(
            Tensor(name, "float32", shape, source_names=(name + ":0",),
                   source=ArraySource(array))
        )  # fmt: skip
    return Model(
        tensors=tuple(tensors),
        metadata={"producer": {"name": "keras", "version": "2.4.0"}, "extra": 1},
        format="hdf5",
        flavour="keras-weights",
    )


def test_matched_by_layer_name() -> None:
    # File order differs from the architecture's; names decide.
    names = {k: k for k in ["out/kernel", "out/bias", "hidden/kernel", "hidden/bias"]}
    weights = weights_model(names, SHAPES)
    model = attach_weights(arch_model(), weights)
    assert model.names == tuple(SHAPES)
    for tensor in model.tensors:
        source = weights.tensor(tensor.name)
        assert tensor.source_names == source.source_names
        assert tensor.read().tobytes() == source.read().tobytes()
        assert tensor.role is Role.WEIGHT
    assert model.metadata["producer"]["version"] == "2.21.0"  # architecture wins
    assert model.metadata["extra"] == 1
    assert model.metadata["weights_source"]["matched_by"] == "name"
    assert model.totals()[0] == sum(int(np.prod(s)) for s in SHAPES.values())
    assert (model.format, model.flavour) == ("keras-json", "keras2")


def test_matched_by_order_when_layer_names_differ() -> None:
    renamed = {
        "hidden/kernel": "dense_7/kernel",
        "hidden/bias": "dense_7/bias",
        "out/kernel": "dense_8/kernel",
        "out/bias": "dense_8/bias",
    }
    weights = weights_model(renamed, SHAPES)
    model = attach_weights(arch_model(), weights)
    assert model.names == tuple(SHAPES)
    assert model.tensor("out/kernel").source_names == ("dense_8/kernel:0",)
    assert model.metadata["weights_source"]["matched_by"] == "order"
    assert any("by order" in w for w in model.warnings)
    expected = weights.tensor("dense_8/kernel").read()
    assert np.array_equal(model.tensor("out/kernel").read(), expected)


def test_keras3_weights_h5_paths() -> None:
    paths = {
        "hidden/kernel": "layers/dense/vars/0",
        "hidden/bias": "layers/dense/vars/1",
        "out/kernel": "layers/dense_1/vars/0",
        "out/bias": "layers/dense_1/vars/1",
    }
    weights = weights_model(paths, SHAPES)
    model = attach_weights(arch_model(), weights)
    assert model.names == tuple(SHAPES)
    assert model.tensor("hidden/bias").source_names == ("layers/dense/vars/1:0",)
    assert model.tensor("out/bias").read().shape == (3,)


def _keras3_bidirectional_config() -> dict[str, Any]:
    def gru(name: str, go_backwards: bool) -> dict[str, Any]:
        config = {"name": name, "units": 2, "go_backwards": go_backwards}
        config["reset_after"] = True
        return {"module": "keras.layers", "class_name": "GRU", "config": config}

    bidi = {
        "name": "bidi",
        "layer": gru("forward_gru", False),
        "backward_layer": gru("backward_gru", True),
    }
    inputs = {"name": "in", "batch_shape": [None, 5, 3]}
    layers = [
        {"class_name": "InputLayer", "config": inputs},
        {"class_name": "Bidirectional", "config": bidi},
        {"class_name": "Dense", "config": {"name": "head", "units": 1}},
    ]
    return {
        "module": "keras",
        "class_name": "Sequential",
        "config": {"name": "s", "layers": layers},
        "registered_name": None,
    }


@pytest.mark.parametrize("names", [True, False], ids=["keras>=3.6", "keras<3.6"])
def test_keras3_weights_file_of_a_bidirectional(tmp_path: Path, names: bool) -> None:
    # What Keras 3 save_weights writes: groups keyed by class name, sorted, so
    # the backward layer comes first; since Keras 3.6 (not in tf_keras's
    # .weights.h5) the layers' own names in a `name` attribute.
    import h5py

    from modelconv import api

    rng = np.random.default_rng(0)
    shapes = {"forward": [(3, 6), (2, 6), (2, 6)], "backward": [(3, 6), (2, 6), (2, 6)]}
    arrays = {
        side: [rng.standard_normal(shape).astype("float32") for shape in sizes]
        for side, sizes in shapes.items()
    }
    head = [rng.standard_normal((4, 1)).astype("float32"), np.ones(1, "float32")]
    path = tmp_path / "m.weights.h5"
    attr = "name" if names else "unused"
    with h5py.File(path, "w") as h5:
        for side in ("backward", "forward"):
            layer = h5.create_group(f"layers/bidirectional/{side}_layer")
            layer.create_group("vars").attrs[attr] = f"{side}_gru"
            cell = layer.create_group("cell/vars")
            cell.attrs[attr] = "gru_cell"
            for index, array in enumerate(arrays[side]):
                cell.create_dataset(str(index), data=array)
        h5.create_group("layers/bidirectional/vars").attrs[attr] = "bidi"
        dense = h5.create_group("layers/dense/vars")
        dense.attrs[attr] = "head"
        for index, array in enumerate(head):
            dense.create_dataset(str(index), data=array)
        h5.create_group("vars").attrs[attr] = "s"
    architecture = Model(
        architecture=build_architecture(_keras3_bidirectional_config())
    )
    model = attach_weights(architecture, api.load(path))
    # Each inner layer was its own group (3 groups for 2 layers), so the file
    # was refused; and by position the backward weights, sorted first, would
    # land on forward_gru unnoticed: both sides have the same shapes.
    for side in ("forward", "backward"):
        for short, array in zip(("kernel", "recurrent_kernel", "bias"), arrays[side]):
            got = model.tensor(f"bidi/{side}_gru/{short}").read()
            assert np.array_equal(got, array), (side, short)
    assert np.array_equal(model.tensor("head/kernel").read(), head[0])


def test_keras3_weights_file_keys_layers_by_class_in_model_order(
    tmp_path: Path,
) -> None:
    # tf_keras and Keras < 3.6 record no names: `layers/batch_normalization`
    # sorts before `layers/dense`, so matching in file order refused the file.
    import h5py

    from modelconv import api

    dense = {"class_name": "Dense", "config": {"name": "first", "units": 2}}
    sub = [{"class_name": "Dense", "config": {"name": "inner", "units": 2}}]
    inputs = {"name": "in", "batch_shape": [None, 4]}
    layers = [
        {"class_name": "InputLayer", "config": inputs},
        dense,
        {"class_name": "BatchNormalization", "config": {"name": "bn"}},
        {"class_name": "Sequential", "config": {"name": "sub", "layers": sub}},
    ]
    config = {"class_name": "Sequential", "config": {"name": "s", "layers": layers}}
    values = {
        "layers/dense/vars": [np.full((4, 2), 1.0), np.full(2, 2.0)],
        "layers/batch_normalization/vars": [np.full(2, 3.0 + i) for i in range(4)],
        "layers/sequential/layers/dense/vars": [np.full((2, 2), 9.0), np.zeros(2)],
    }
    path = tmp_path / "old.weights.h5"
    with h5py.File(path, "w") as h5:
        for group, arrays in values.items():
            for index, array in enumerate(arrays):
                h5.create_dataset(f"{group}/{index}", data=array.astype("float32"))
    model = attach_weights(
        Model(architecture=build_architecture(config)), api.load(path)
    )
    assert model.metadata["weights_source"]["matched_by"] == "keras3-path"
    assert model.tensor("first/bias").read().tolist() == [2.0, 2.0]
    assert model.tensor("bn/moving_variance").read().tolist() == [6.0, 6.0]
    assert model.tensor("sub/inner/kernel").read().tolist() == [[9.0, 9.0]] * 2


def test_short_names_reorder_within_a_layer() -> None:
    names = {"hidden/bias": "hidden/bias", "hidden/kernel": "hidden/kernel"}
    names |= {"out/bias": "out/bias", "out/kernel": "out/kernel"}
    model = attach_weights(arch_model(), weights_model(names, SHAPES))
    assert model.names == tuple(SHAPES)
    assert model.tensor("hidden/kernel").shape == (4, 5)


def test_shape_mismatch_names_layers_and_shapes() -> None:
    wrong = dict(SHAPES, **{"out/kernel": (5, 4), "out/bias": (4,)})
    names = {k: k.replace("out", "dense_9") for k in SHAPES}
    with pytest.raises(InputError) as raised:
        attach_weights(arch_model(), weights_model(names, wrong))
    message = str(raised.value)
    assert "'out'" in message and "[5, 4]" in message and "[5, 3]" in message
    assert "matched by order" in message


def test_same_parameter_count_in_other_shapes_is_refused() -> None:
    # (5, 3) + (3,) and (3, 5) + (3,) both hold 18 parameters; only the
    # parameter count used to be checked, so the transposed kernel attached.
    wrong = dict(SHAPES, **{"out/kernel": (3, 5)})
    with pytest.raises(InputError, match=r"'out'.*\[\[5, 3\], \[3\]\].*\[3, 5\]"):
        attach_weights(arch_model(), weights_model({k: k for k in SHAPES}, wrong))


def test_layer_count_mismatch_names_both_sides() -> None:
    names = {k: k for k in SHAPES}
    shapes = dict(SHAPES)
    names["extra/kernel"] = "extra/kernel"
    shapes["extra/kernel"] = (2, 2)
    with pytest.raises(InputError, match="3 layers.*'extra'.*2 layers"):
        attach_weights(arch_model(), weights_model(names, shapes))


def test_tensor_count_mismatch() -> None:
    names = {k: k for k in SHAPES if k != "out/bias"}
    with pytest.raises(InputError, match="expects 2 tensors"):
        attach_weights(arch_model(), weights_model(names, SHAPES))


def test_refusals() -> None:
    weights = weights_model({k: k for k in SHAPES}, SHAPES)
    with pytest.raises(UsageError, match="architecture"):
        attach_weights(Model(), weights)
    full = arch_model().replace(tensors=weights.tensors)
    with pytest.raises(UsageError, match="already holds 4 weight"):
        attach_weights(full, weights)


def test_optimizer_tensors_come_along() -> None:
    weights = weights_model({k: k for k in SHAPES}, SHAPES)
    slot = Tensor("optimizer/iter", "int64", (), Role.OPTIMIZER,
                  source=ArraySource(np.array(3)))  # fmt: skip
    weights = weights.replace(tensors=(*weights.tensors, slot))
    model = attach_weights(arch_model(), weights)
    assert model.names[-1] == "optimizer/iter"
    assert model.tensor("optimizer/iter").role is Role.OPTIMIZER


# --- real fixtures ----------------------------------------------------------

PAIRS = [
    ("tfk_iris_mlp.json", "tfk_iris_mlp.weights.h5", "tf_keras"),
    ("tfk_functional.json", "tfk_functional.weights.h5", "tf_keras"),
    ("k3_iris_mlp.json", "k3_iris_mlp.weights.h5", "keras3"),
]


def fixture(fixtures_dir: Path, name: str) -> Path:
    path = fixtures_dir / name
    if not path.exists():
        pytest.skip(f"fixture {name} not generated yet")
    return path


def io_arrays(fixtures_dir: Path, json_name: str) -> dict[str, np.ndarray]:
    stem = json_name.removesuffix(".json")
    path = fixture(fixtures_dir, f"{stem}.io.npz")
    with np.load(path, allow_pickle=False) as arrays:
        return {k: arrays[k] for k in arrays.files}


def inputs_outputs(io: dict[str, np.ndarray]) -> tuple[Any, Any]:
    def pick(tag: str) -> Any:
        if tag in io:
            return io[tag]
        return [io[k] for k in sorted(k for k in io if k.startswith(tag))]

    return pick("x"), pick("y")


@pytest.mark.parametrize("arch, weights, _", PAIRS)
def test_fixture_pairs_attach_with_totals(
    fixtures_dir: Path, arch: str, weights: str, _: str
) -> None:
    from modelconv import api

    model = api.load(
        fixture(fixtures_dir, arch), weights=fixture(fixtures_dir, weights)
    )
    with model:
        assert model.by_role(Role.WEIGHT)
        assert model.totals()[0] == sum(
            t.size for t in model.tensors if t.role is Role.WEIGHT
        )
        for tensor in model.tensors:
            assert tensor.read().shape == tensor.shape


@pytest.mark.keras
@pytest.mark.parametrize("arch, weights, loader", PAIRS)
def test_fixture_pairs_convert_to_h5_keras_predicts_identically(
    fixtures_dir: Path,
    tmp_path: Path,
    request: pytest.FixtureRequest,
    run_cli: Any,
    arch: str,
    weights: str,
    loader: str,
) -> None:
    keras_module = request.getfixturevalue(loader)
    arch_path = fixture(fixtures_dir, arch)
    weights_path = fixture(fixtures_dir, weights)
    x, _ = inputs_outputs(io_arrays(fixtures_dir, arch))
    y = local_outputs(arch.removesuffix(".json"))  # Keras' own, on this CPU
    out = tmp_path / "model.h5"
    result = run_cli("convert", arch_path, out, "--weights", weights_path)
    assert result.exit_code == 0, result.stderr
    loaded = keras_module.models.load_model(str(out), compile=False)
    predicted = loaded.predict(x, verbose=0)
    predicted = predicted if isinstance(predicted, list) else [predicted]
    assert len(predicted) == len(y)
    for want, have in zip(y, predicted):
        np.testing.assert_array_equal(have, want)


def test_weights_only_to_full_model_suggests_attaching(
    run_cli: Any, fixtures_dir: Path, tmp_path: Path
) -> None:
    source = fixtures_dir / "k3_iris_mlp.weights.h5"
    for target, flags in (
        ("model.keras", ()),
        ("model.h5", ("--flavour", "keras-model")),
    ):
        result = run_cli("convert", source, tmp_path / target, "--allow-lossy", *flags)
        assert result.exit_code == 2
        assert "weights-only" in result.stderr
        assert f"--weights {source}" in result.stderr
        assert not (tmp_path / target).exists()


@pytest.mark.keras
def test_keras3_json_and_weights_h5_to_keras_archive(
    run_cli: Any, fixtures_dir: Path, tmp_path: Path, keras3: Any
) -> None:
    """Keras 3's to_json() omits the optimizer, so its state has no place."""
    arch = fixtures_dir / "k3_iris_mlp.json"
    weights = fixtures_dir / "k3_iris_mlp.weights.h5"
    out = tmp_path / "model.keras"
    refused = run_cli("convert", arch, out, "--weights", weights)
    assert refused.exit_code == 2
    assert "optimizer" in refused.stderr and "--drop optimizer" in refused.stderr
    result = run_cli("convert", arch, out, "--weights", weights, "--drop", "optimizer")
    assert result.exit_code == 0, result.stderr
    x, _ = stored_io("k3_iris_mlp")
    (want,) = local_outputs("k3_iris_mlp")
    loaded = keras3.saving.load_model(out)
    np.testing.assert_array_equal(loaded.predict(x, verbose=0), want)
