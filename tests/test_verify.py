"""verify: round trips through every lossless format, lossy formats, --predict."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from modelconv import api
from modelconv.errors import UsageError
from modelconv.keras_config import build_architecture
from modelconv.model import ArraySource, Model, Role, Tensor
from modelconv.verify import VerifyStatus, verify_path

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"
# Model files written by real Keras; the .io.npz files beside them hold
# inputs and outputs for prediction tests, not models of their own.
FIXTURE_MODELS = sorted(
    p.name
    for p in FIXTURES.glob("*")
    if p.suffix in (".h5", ".keras", ".pkl", ".joblib", ".json", ".npz")
    and not p.name.endswith(".io.npz")
    and p.name != "MANIFEST.json"
)


def _tensor(name: str, array: np.ndarray, role: Role = Role.WEIGHT) -> Tensor:
    from modelconv.dtypes import dtype_name

    return Tensor(
        name, dtype_name(array.dtype), array.shape, role=role, source=ArraySource(array)
    )


def small_model() -> Model:
    """A Keras 3 Sequential Dense(3) on 4 inputs, with weights and one
    optimizer tensor."""
    config = {
        "class_name": "Sequential",
        "config": {
            "name": "sequential",
            "layers": [
                {
                    "class_name": "InputLayer",
                    "config": {
                        "batch_shape": [None, 4],
                        "dtype": "float32",
                        "name": "input_layer",
                    },
                },
                {
                    "class_name": "Dense",
                    "config": {"name": "dense", "units": 3, "activation": "relu"},
                },
            ],
        },
    }
    rng = np.random.default_rng(1)
    return Model(
        tensors=(
            _tensor("dense/kernel", rng.standard_normal((4, 3)).astype(np.float32)),
            _tensor("dense/bias", rng.standard_normal(3).astype(np.float32)),
        ),
        architecture=build_architecture(config),
        metadata={"producer": {"name": "keras", "version": "3.15.1"}},
    )


@pytest.fixture()
def npz_model(tmp_path: Path) -> Path:
    path = tmp_path / "model.npz"
    api.save(small_model(), path)
    return path


def _by_format(result: Any) -> dict[str, Any]:
    return {check.format: check for check in result.formats}


# Round-trip failures found by verify in other modules, and reported; while
# they last, the tests below mark them as expected failures instead of
# hiding them. Remove an entry when its cause is fixed.
def test_every_lossless_format_round_trips(npz_model: Path) -> None:
    result = verify_path(npz_model)
    checks = _by_format(result)
    ran = [c for c in result.formats if c.status is not VerifyStatus.SKIPPED]
    assert {"npz", "json"} <= {c.format for c in ran}
    for check in ran:
        assert check.status is VerifyStatus.PASS, check
        assert check.architecture and check.names and check.dtypes
        assert check.shapes and check.bytes and check.lost == ()
    # keras-json cannot carry weights: listed as skipped, with the reason.
    assert checks["keras-json"].status is VerifyStatus.SKIPPED
    assert "lossy" in (checks["keras-json"].reason or "")
    assert all(c.reason for c in result.formats if c.status is VerifyStatus.SKIPPED)
    assert result.exit_code == 0


def test_lossy_format_runs_only_when_named(npz_model: Path, run_cli: Any) -> None:
    result = verify_path(npz_model, via=["keras-json"])
    (check,) = result.formats
    assert check.status is VerifyStatus.LOSSY
    assert check.architecture is True
    assert check.bytes is False and check.names is False
    assert any("tensors" in loss or "weight" in loss for loss in check.lost)
    assert result.exit_code == 1

    out = run_cli("verify", npz_model, "--via", "keras-json", "--json")
    assert out.exit_code == 1
    document = json.loads(out.stdout)
    assert list(document)[0] == "schema"
    assert document["formats"][0]["status"] == "lossy"
    assert document["formats"][0]["lost"]
    assert set(document["formats"][0]) >= {
        "format",
        "status",
        "architecture",
        "names",
        "dtypes",
        "shapes",
        "bytes",
        "lost",
        "migrations",
    }
    assert document["predict"] is None


def test_via_is_repeatable_and_deduplicated(npz_model: Path) -> None:
    result = verify_path(npz_model, via=["json", "npz", "json"])
    assert [c.format for c in result.formats] == ["json", "npz"]
    assert result.exit_code == 0


def test_unknown_via_is_a_usage_error(npz_model: Path, run_cli: Any) -> None:
    with pytest.raises(UsageError):
        verify_path(npz_model, via=["onnx"])
    assert run_cli("verify", npz_model, "--via", "onnx").exit_code == 2


def test_a_changed_round_trip_fails(
    npz_model: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A writer that changes one value is caught and the tensor named."""
    real_load = api.load

    def corrupting_load(path: Any, **kw: Any) -> Model:
        model = real_load(path, **kw)
        if not Path(path).name.startswith("via-"):
            return model
        kernel = model.tensor("dense/kernel").read().copy()
        kernel[0, 0] = -kernel[0, 0]
        return model.replace(
            tensors=(_tensor("dense/kernel", kernel),) + model.tensors[1:]
        )

    monkeypatch.setattr(api, "load", corrupting_load)
    result = verify_path(npz_model, via=["npz"])
    (check,) = result.formats
    assert check.status is VerifyStatus.FAIL
    assert check.bytes is False and check.names is True and check.dtypes is True
    assert check.problems == ("dense/kernel: changed",)
    assert result.exit_code == 1


def test_human_output(npz_model: Path, run_cli: Any) -> None:
    out = run_cli("verify", npz_model, "--via", "npz", "--via", "keras-json")
    assert out.exit_code == 1
    assert "npz" in out.stdout and "lossy" in out.stdout
    assert "keras-json: lost:" in out.stdout


def test_predict_without_keras_says_so(
    npz_model: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from modelconv import verify

    monkeypatch.setattr(verify, "keras_available", lambda: False)
    result = verify_path(npz_model, via=["npz"], predict=True)
    assert result.predict is not None
    assert result.predict.status is VerifyStatus.SKIPPED
    assert "Keras is not installed" in (result.predict.reason or "")
    assert result.exit_code == 0


def _keras_writer() -> None:
    if importlib.util.find_spec("modelconv.formats.keras_zip") is None:
        pytest.skip("no .keras writer in this build yet")


@pytest.mark.keras
def test_predict_compares_keras_outputs(npz_model: Path, keras3: Any) -> None:
    _keras_writer()
    result = verify_path(npz_model, via=["npz", "json"], predict=True)
    assert result.predict is not None, result
    assert result.predict.status is VerifyStatus.PASS, result.predict
    assert [c.format for c in result.predict.checks] == ["npz", "json"]
    assert all(c.max_abs_diff == 0.0 for c in result.predict.checks)


@pytest.mark.parametrize("name", FIXTURE_MODELS)
def test_fixture_round_trips(name: str) -> None:
    result = verify_path(FIXTURES / name)
    ran = [c for c in result.formats if c.status is not VerifyStatus.SKIPPED]
    assert ran, f"no format could carry {name}"
    failed = [c for c in ran if c.status is not VerifyStatus.PASS]
    assert [c.to_json() for c in failed] == []
    assert result.exit_code == 0


@pytest.mark.parametrize("name", ["k3_iris_mlp.h5", "tfk_iris_mlp.h5"])
def test_fixture_via_keras_json_loses_weights(name: str, run_cli: Any) -> None:
    path = FIXTURES / name
    if not path.exists():
        pytest.skip(f"fixture {name} not generated")
    out = run_cli("verify", path, "--via", "keras-json", "--json")
    assert out.exit_code == 1
    (check,) = json.loads(out.stdout)["formats"]
    assert check["status"] == "lossy"
    assert any("weight" in loss for loss in check["lost"])


@pytest.mark.keras
def test_predict_on_a_two_input_fixture(keras3: Any) -> None:
    _keras_writer()
    path = FIXTURES / "k3_functional.h5"
    if not path.exists():
        pytest.skip("fixture k3_functional.h5 not generated")
    result = verify_path(path, via=["npz"], predict=True)
    assert result.predict is not None
    assert result.predict.status is VerifyStatus.PASS, result.predict
    assert result.exit_code == 0


@pytest.mark.keras
def test_predict_skips_lambda_models_in_safe_mode(keras3: Any) -> None:
    _keras_writer()
    path = FIXTURES / "k3_lambda.keras"
    if not path.exists():
        pytest.skip("fixture k3_lambda.keras not generated")
    result = verify_path(path, via=["npz"], predict=True)
    assert result.predict is not None
    assert result.predict.status is VerifyStatus.SKIPPED
    assert "safe_mode=True" in (result.predict.reason or "")
    assert result.exit_code == 0


def test_cli_help(run_cli: Any) -> None:
    out = run_cli("verify", "--help")
    assert out.exit_code == 0
    for option in ("--via", "--predict", "--weights", "--json"):
        assert option in out.stdout


def test_public_api(npz_model: Path) -> None:
    import modelconv
    import modelconv.verify  # binds the package attribute to the module

    assert modelconv.verify(npz_model, via=["json"]).exit_code == 0


def test_a_writer_refusal_skips_unless_named(
    npz_model: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from modelconv.errors import ReadBackMismatchError, UnsupportedError

    real_save = api.save

    def refusing_save(model: Model, path: Any, **kw: Any) -> Any:
        if kw.get("format") == "json":
            raise UnsupportedError("json has no place for this construct")
        if kw.get("format") == "npz":
            raise ReadBackMismatchError("npz read back differently")
        return real_save(model, path, **kw)

    monkeypatch.setattr(api, "save", refusing_save)
    checks = _by_format(verify_path(npz_model))
    assert checks["json"].status is VerifyStatus.SKIPPED
    assert "no place" in (checks["json"].reason or "")
    # modelconv's own faults are never hidden as skips.
    assert checks["npz"].status is VerifyStatus.ERROR

    named = verify_path(npz_model, via=["json"])
    assert named.formats[0].status is VerifyStatus.ERROR
    assert named.exit_code == 1


def test_optimizer_names_are_format_specific_weight_names_are_not(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    model = small_model()
    slot = _tensor("optimizer/adam/dense_kernel_m", np.zeros((4, 3), np.float32))
    model = model.replace(tensors=model.tensors + (slot.replace(role=Role.OPTIMIZER),))
    path = tmp_path / "with_optimizer.npz"
    api.save(model, path)
    real_load = api.load
    rename: dict[str, str] = {}

    def renaming_load(source: Any, **kw: Any) -> Model:
        loaded = real_load(source, **kw)
        if not Path(source).name.startswith("via-"):
            return loaded
        return loaded.replace(
            tensors=tuple(
                t.replace(name=rename.get(t.name, t.name)) for t in loaded.tensors
            )
        )

    monkeypatch.setattr(api, "load", renaming_load)
    rename.update({"optimizer/adam/dense_kernel_m": "optimizer/0"})
    (check,) = verify_path(path, via=["npz"]).formats
    assert check.status is VerifyStatus.PASS and check.names is True
    assert check.notes and "optimizer" in check.notes[0]

    rename.update({"dense/bias": "dense/b"})
    (check,) = verify_path(path, via=["npz"]).formats
    assert check.status is VerifyStatus.FAIL and check.names is False
    assert "dense/bias reads back as dense/b" in check.problems


@pytest.mark.keras
def test_tf_keras_depthwise_and_transpose_convs_verify_via_keras(
    tf_keras: Any, tmp_path: Path
) -> None:
    """tf_keras writes groups=1 on DepthwiseConv2D, SeparableConv2D and
    Conv2DTranspose and calls the depthwise kernel `depthwise_kernel`; the
    Keras 3 file drops the one and renames the other. Neither is a change
    (MobileNetV2, EfficientNet, Xception and NASNet all failed verify), nor
    is dropping a SeparableConv's unused kernel_* arguments."""
    layers = tf_keras.layers
    model = tf_keras.Sequential(
        [
            tf_keras.Input((8, 8, 3)),
            layers.DepthwiseConv2D(3),
            # Unused by a separable convolution; NASNet sets it anyway.
            layers.SeparableConv2D(4, 3, kernel_initializer="he_normal"),
            layers.Conv2DTranspose(2, 3),
        ]
    )
    path = tmp_path / "m.h5"
    model.save(path)
    result = verify_path(path, via=["keras"])
    check = result.formats[0]
    assert check.status is VerifyStatus.PASS, check.problems


def _keras21_functional_file(path: Path) -> None:
    """Keras 2.1.6 as it wrote a functional model: class "Model", bytes
    attributes, nested-list inbound nodes, dense_1/kernel:0 names."""
    import h5py

    def node(name: str) -> list[Any]:
        return [[[name, 0, 0, {}]]]

    layers = [
        {
            "name": "input_1",
            "class_name": "InputLayer",
            "config": {"batch_input_shape": [None, 4], "name": "input_1"},
            "inbound_nodes": [],
        },
        {
            "name": "dense_1",
            "class_name": "Dense",
            "config": {"name": "dense_1", "units": 2, "activation": "linear"},
            "inbound_nodes": node("input_1"),
        },
    ]
    config = {
        "class_name": "Model",
        "config": {
            "name": "model_1",
            "layers": layers,
            "input_layers": [["input_1", 0, 0]],
            "output_layers": [["dense_1", 0, 0]],
        },
    }
    with h5py.File(path, "w") as h5:
        h5.attrs["keras_version"] = np.bytes_(b"2.1.6")
        h5.attrs["backend"] = np.bytes_(b"tensorflow")
        h5.attrs["model_config"] = np.bytes_(json.dumps(config).encode())
        weights = h5.create_group("model_weights")
        weights.attrs["layer_names"] = [b"input_1", b"dense_1"]
        weights.create_group("input_1").attrs["weight_names"] = np.array([], "f8")
        dense = weights.create_group("dense_1")
        dense.attrs["weight_names"] = [b"dense_1/kernel:0", b"dense_1/bias:0"]
        dense["dense_1/kernel:0"] = np.ones((4, 2), "f4")
        dense["dense_1/bias:0"] = np.zeros(2, "f4")


def test_keras21_model_class_verifies_via_keras(tmp_path: Path) -> None:
    """Keras 2.0-2.3 named the functional class "Model", Keras 3 writes
    "Functional": verify reported 'changed /class_name' for every such file."""
    path = tmp_path / "k21.h5"
    _keras21_functional_file(path)
    check = verify_path(path, via=["keras"]).formats[0]
    assert check.status is VerifyStatus.PASS, check.problems


@pytest.mark.keras
def test_slash_layer_names_verify_via_keras(tfk_slash_names: Any) -> None:
    """The Keras 3 migration renames "conv1/conv" to "conv1_conv" on purpose;
    verify reported each renamed layer and tensor as a change."""
    check = verify_path(tfk_slash_names.h5, via=["keras"]).formats[0]
    assert check.status is VerifyStatus.PASS, check.problems
    assert "slash_free_layer_names" in check.migrations


def test_a_keras1_file_passes_through_keras_with_its_migrations_listed(
    tmp_path: Path,
) -> None:
    """A Keras 1 file bound for .keras is migrated (class, argument and weight
    names); what comes back is compared with the migrated model, so the
    check passes and names the rules instead of failing on each rename."""
    import h5py

    config = {
        "class_name": "Sequential",
        "config": [
            {
                "class_name": "Dense",
                "config": {"name": "dense_1", "output_dim": 3, "input_dim": 4},
            }
        ],
    }
    path = tmp_path / "k1.h5"
    with h5py.File(path, "w") as h5:
        h5.attrs["keras_version"] = np.bytes_(b"1.2.2")
        h5.attrs["model_config"] = np.bytes_(json.dumps(config).encode())
        weights = h5.create_group("model_weights")
        weights.attrs["layer_names"] = np.array([b"dense_1"])
        layer = weights.create_group("dense_1")
        layer.attrs["weight_names"] = np.array([b"dense_1_W", b"dense_1_b"])
        layer["dense_1_W"] = np.arange(12, dtype="f4").reshape(4, 3)
        layer["dense_1_b"] = np.ones(3, dtype="f4")
    result = verify_path(path, via=["keras"])
    (check,) = result.formats
    assert check.status is VerifyStatus.PASS, check.problems
    assert {"keras1_argument_names", "keras1_weight_names"} <= set(check.migrations)
