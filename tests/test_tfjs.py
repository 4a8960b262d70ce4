"""TensorFlow.js layers models (format ``tfjs``), read and written.

Two kinds of input:

- ``tests/data/tfjs_real/``: folders written by the real tensorflowjs
  converter 4.22.0 (``keras_h5_conversion.write_artifacts``) from a tf_keras
  model, plain (cut into 256-byte shards) and quantised to uint8, uint16 and
  float16, with the model's weights in ``expected.npz``. tensorflowjs does not
  install beside TensorFlow 2.21, so ``make_tfjs_real.py`` there loads its
  converter modules from the unpacked wheel.
- folders built here from the documented layout (tfjs-converter
  ``write_weights.py``: groups of tensors concatenated little-endian in
  manifest order, cut into shards; tfjs-core ``io_utils.ts``
  ``decodeWeights``: quantised values decode as ``q * scale + min``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from strategies import models

from modelconv.errors import UnsupportedError
from modelconv.formats import detect, make_probe, tfjs
from modelconv.formats.base import ReadOptions, WriteOptions
from modelconv.model import Model, Role

REAL = Path(__file__).resolve().parent / "data" / "tfjs_real"
DEQUANTIZE = ReadOptions(extra={"dequantize": True})


def expected_weights() -> dict[str, np.ndarray]:
    """Canonical name -> array, from the Keras variable names of the source."""
    with np.load(REAL / "expected.npz", allow_pickle=False) as arrays:
        return {
            tfjs.canonical_name(key.replace("|", "/")): arrays[key]
            for key in arrays.files
        }


# --- files written by the real converter -----------------------------------


def test_real_plain_model_reads_exact_weights() -> None:
    expected = expected_weights()
    folder = REAL / "plain"
    assert len(list(folder.glob("*.bin"))) == 4, "tensors cross shard boundaries"
    assert detect(folder).name == "tfjs"
    assert detect(folder / "model.json").name == "tfjs"
    model = tfjs.read(folder, ReadOptions())
    assert (model.format, model.flavour) == ("tfjs", "layers-model")
    assert model.producer == {"name": "keras", "version": "2.21.0"}
    assert model.metadata["tfjs"]["convertedBy"].startswith("TensorFlow.js Converter")
    assert "training_config" in model.metadata
    assert sorted(model.names) == sorted(expected)
    assert model.tensor("lstm/kernel").source_names == ("lstm/lstm_cell/kernel",)
    for tensor in model.tensors:
        array = tensor.read()
        assert array.dtype == np.float32
        assert array.tobytes() == expected[tensor.name].tobytes(), tensor.name
        pieces = list(tensor.iter_chunks(20))
        assert np.concatenate(pieces).tobytes() == array.tobytes()
    assert model.warnings == ()


def test_real_model_architecture_and_totals() -> None:
    model = tfjs.read(REAL / "plain" / "model.json", ReadOptions())
    architecture = model.architecture
    assert architecture is not None
    assert architecture.config["class_name"] == "Functional"
    assert "keras_version" not in architecture.config
    total = sum(a.size for a in expected_weights().values())
    if architecture.total_params is None:
        pytest.skip("keras_config does not derive totals for this config")
    assert model.totals()[0] == total
    names = {n for layer in architecture.layers for n in layer.tensor_names}
    assert names == set(model.names)


@pytest.mark.parametrize("stored", ["uint8", "uint16", "float16"])
def test_real_quantised_models_show_stored_values(stored: str) -> None:
    model = tfjs.read(REAL / stored, ReadOptions())
    assert len(model.warnings) == 1 and "quantised" in model.warnings[0]
    for tensor in model.tensors:
        assert tensor.dtype == stored
        assert tensor.attrs["tfjs_dtype"] == "float32"
        assert tensor.attrs["tfjs_quantization"]["dtype"] == stored
        assert tensor.read().dtype == np.dtype(stored)


@pytest.mark.parametrize("stored", ["uint8", "uint16", "float16"])
def test_real_quantised_models_dequantise_on_request(stored: str) -> None:
    expected = expected_weights()
    model = tfjs.read(REAL / stored, DEQUANTIZE)
    assert "dequantised" in model.warnings[0]
    for tensor in model.tensors:
        assert tensor.dtype == "float32"
        values = tensor.read()
        want = expected[tensor.name]
        if stored == "float16":
            assert values.tobytes() == want.astype(np.float16).astype("<f4").tobytes()
            continue
        scale = tensor.attrs["tfjs_quantization"]["scale"]
        # Nudging the range so that 0 is exact costs up to one step.
        assert np.max(np.abs(values - want)) <= scale * 1.0001, tensor.name
        chunks = np.concatenate(list(tensor.iter_chunks(8)))
        assert chunks.tobytes() == values.reshape(-1).tobytes()


# --- folders built from the documented layout ------------------------------


def build(
    folder: Path,
    groups: list[list[dict[str, Any]]],
    shard_size: int = 4 * 2**20,
    topology: Any = None,
) -> Path:
    """Write a tf.js layers model: entries {name, array, quantization?, group?}."""
    folder.mkdir(parents=True, exist_ok=True)
    manifest = []
    for number, group in enumerate(groups, 1):
        data = b"".join(np.ascontiguousarray(e["array"]).tobytes() for e in group)
        count = max(1, -(-len(data) // shard_size))
        paths = []
        for index in range(count):
            name = f"group{number}-shard{index + 1}of{count}.bin"
            chunk = data[index * shard_size : (index + 1) * shard_size]
            (folder / name).write_bytes(chunk)
            paths.append(name)
        weights = []
        for entry in group:
            spec = {
                "name": entry["name"],
                "shape": list(entry["array"].shape),
                "dtype": entry.get("dtype", str(entry["array"].dtype)),
            }
            for key in ("quantization", "group"):
                if key in entry:
                    spec[key] = entry[key]
            weights.append(spec)
        manifest.append({"paths": paths, "weights": weights})
    document = {
        "format": "layers-model",
        "generatedBy": "test",
        "convertedBy": None,
        "modelTopology": topology,
        "weightsManifest": manifest,
    }
    (folder / "model.json").write_text(json.dumps(document))
    return folder


def test_every_tfjs_dtype_across_odd_shards(tmp_path: Path) -> None:
    arrays = {
        "a/f32": np.array([[-0.0, np.nan], [np.inf, 1.5]], "<f4"),
        "a/i32": np.array([-(2**31), 2**31 - 1, 7], "<i4"),
        "b/flag": np.array([True, False, True]),
        "b/c64": np.array([1 + 2j, -0.0 - 1j], "<c8"),
        "c/scalar": np.array(2.5, "<f4"),
        "c/empty": np.zeros((0, 4), "<f4"),
    }
    names = list(arrays)
    groups = [
        [{"name": n, "array": arrays[n]} for n in names[:3]],
        [{"name": n, "array": arrays[n]} for n in names[3:]],
    ]
    folder = build(tmp_path / "m", groups, shard_size=7)  # cuts elements in two
    model = tfjs.read(folder, ReadOptions())
    assert model.names == tuple(names)
    assert model.architecture is None
    for name, array in arrays.items():
        tensor = model.tensor(name)
        assert tensor.dtype == ("bool" if array.dtype == bool else array.dtype.name)
        assert tensor.shape == array.shape
        assert tensor.read().tobytes() == array.tobytes()
        assert (
            np.concatenate([*tensor.iter_chunks(5), np.zeros(0, array.dtype)]).tobytes()
            == array.reshape(-1).tobytes()
        )


def test_int32_quantisation_rounds_like_tfjs(tmp_path: Path) -> None:
    stored = np.array([0, 1, 2, 3, 255], "<u1")
    quantization = {"dtype": "uint8", "scale": 0.5, "min": -1.0}
    folder = build(
        tmp_path / "m",
        [[{"name": "e/ids", "array": stored, "dtype": "int32",
           "quantization": quantization}]],
    )  # fmt: skip
    shown = tfjs.read(folder, ReadOptions()).tensors[0]
    assert shown.dtype == "uint8" and shown.read().tolist() == stored.tolist()
    values = tfjs.read(folder, DEQUANTIZE).tensors[0].read()
    # Math.round: halves go up (-0.5 -> 0, 0.5 -> 1).
    assert values.dtype == np.int32
    assert values.tolist() == [-1, 0, 0, 1, 127]


def test_optimizer_group_and_js_layers_topology(tmp_path: Path) -> None:
    topology = {
        "class_name": "Sequential",
        "config": {
            "name": "seq",
            "layers": [
                {
                    "class_name": "Dense",
                    "config": {
                        "name": "d",
                        "units": 2,
                        "batch_input_shape": [None, 3],
                        "use_bias": True,
                    },
                }
            ],
        },
        "keras_version": "tfjs-layers 4.22.0",
        "backend": "tensor_flow.js",
    }
    groups = [
        [
            {"name": "d/kernel", "array": np.ones((3, 2), "<f4")},
            {"name": "d/bias", "array": np.zeros(2, "<f4")},
            {"name": "d/kernel/m", "array": np.ones((3, 2), "<f4"),
             "group": "optimizer"},
        ]
    ]  # fmt: skip
    model = tfjs.read(build(tmp_path / "m", groups, topology=topology), ReadOptions())
    assert model.tensor("d/kernel/m").role is Role.OPTIMIZER
    assert model.tensor("d/kernel").role is Role.WEIGHT
    assert model.producer["version"] == "tfjs-layers 4.22.0"
    assert model.architecture.config["class_name"] == "Sequential"
    assert model.totals()[0] == 8


@given(
    specs=st.lists(
        st.tuples(
            st.sampled_from(["float32", "int32", "bool", "complex64"]),
            st.lists(st.integers(0, 3), max_size=3),
            st.binary(min_size=64, max_size=64),
        ),
        min_size=1,
        max_size=5,
    ),
    shard_size=st.integers(1, 40),
)
def test_random_layouts_read_bit_exact(
    specs: list[tuple[str, list[int], bytes]],
    shard_size: int,
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    entries = []
    for index, (dtype, shape, noise) in enumerate(specs):
        size = int(np.prod(shape)) if shape else 1
        width = np.dtype(dtype).itemsize
        raw = (noise * (size * width // 64 + 1))[: size * width]
        array = np.frombuffer(raw, np.uint8).copy()
        if dtype == "bool":
            array = (array % 2).astype(bool)
        else:
            array = array.view(np.dtype(dtype).newbyteorder("<"))
        entries.append({"name": f"l{index}/w", "array": array.reshape(shape)})
    folder = build(tmp_path_factory.mktemp("tfjs") / "m", [entries], shard_size)
    model = tfjs.read(folder, ReadOptions())
    for entry, tensor in zip(entries, model.tensors):
        assert tensor.shape == entry["array"].shape
        assert tensor.read().tobytes() == entry["array"].tobytes()


def test_canonical_names() -> None:
    assert tfjs.canonical_name("dense_1/kernel") == "dense_1/kernel"
    assert tfjs.canonical_name("lstm/lstm_cell/kernel") == "lstm/kernel"
    assert tfjs.canonical_name("gru_1/gru_cell_1/bias:0") == "gru_1/bias"
    assert (
        tfjs.canonical_name("bidirectional/forward_lstm/lstm_cell_2/kernel")
        == "bidirectional/forward_lstm/kernel"
    )


def test_sniff() -> None:
    assert tfjs.sniff(make_probe(REAL / "plain")) == 100
    assert tfjs.sniff(make_probe(REAL / "plain" / "model.json")) == 100
    assert tfjs.sniff(make_probe(REAL)) == 0


def test_writing_without_the_writer_module_says_why(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import sys

    # None in sys.modules makes the import fail as if the module were absent.
    monkeypatch.setitem(sys.modules, "modelconv.formats.tfjs_writer", None)
    with pytest.raises(UnsupportedError, match="Keras 2 config down-level"):
        tfjs.write(Model(), tmp_path / "out", WriteOptions())
    with pytest.raises(UnsupportedError, match="not available yet"):
        tfjs.losses(Model(), WriteOptions())


# --- writing -----------------------------------------------------------------


def shard_bytes(folder: Path) -> bytes:
    document = json.loads((folder / "model.json").read_text())
    return b"".join(
        (folder / name).read_bytes()
        for group in document["weightsManifest"]
        for name in group["paths"]
    )


def test_rewriting_a_real_model_reproduces_the_converter(tmp_path: Path) -> None:
    from modelconv import api

    out = tmp_path / "again"
    api.convert(REAL / "plain", out, format="tfjs")
    ours = json.loads((out / "model.json").read_text())
    real = json.loads((REAL / "plain" / "model.json").read_text())
    assert ours["format"] == "layers-model"
    assert ours["modelTopology"] == real["modelTopology"]
    assert [g["weights"] for g in ours["weightsManifest"]] == [
        g["weights"] for g in real["weightsManifest"]
    ]
    assert ours["weightsManifest"][0]["paths"] == ["group1-shard1of1.bin"]
    assert shard_bytes(out) == shard_bytes(REAL / "plain")


@pytest.mark.parametrize("stored", ["uint8", "uint16", "float16"])
def test_rewriting_a_quantised_model_keeps_its_quantisation(
    tmp_path: Path, stored: str
) -> None:
    from modelconv import api

    # The cast to tf.js's plain dtypes ran before the writer saw the tensors,
    # so the conversion was refused as lossy (uint8 -> int32).
    out = tmp_path / "again"
    report = api.convert(REAL / stored, out, format="tfjs")
    assert report.casts == () and report.losses == ()
    ours = json.loads((out / "model.json").read_text())
    real = json.loads((REAL / stored / "model.json").read_text())
    assert [g["weights"] for g in ours["weightsManifest"]] == [
        g["weights"] for g in real["weightsManifest"]
    ]
    assert shard_bytes(out) == shard_bytes(REAL / stored)


def test_big_tensors_are_cut_into_4_mib_shards(tmp_path: Path) -> None:
    from modelconv import api
    from modelconv.model import ArraySource, Tensor

    big = np.arange(5 * 2**18 + 3, dtype="<f4")  # 5 MiB + 12 bytes
    model = Model(
        tensors=(
            Tensor("a/kernel", "float32", big.shape, source=ArraySource(big)),
            Tensor("a/flag", "bool", (3,), source=ArraySource(np.ones(3, bool))),
        )
    )
    out = tmp_path / "big"
    api.save(model, out, format="tfjs")
    sizes = sorted(p.stat().st_size for p in out.glob("*.bin"))
    assert sizes == [big.nbytes + 3 - 4 * 2**20, 4 * 2**20]
    back = tfjs.read(out, ReadOptions())
    assert back.tensor("a/kernel").read().tobytes() == big.tobytes()
    assert back.tensor("a/flag").read().tolist() == [True] * 3


@given(model=models(sorted(tfjs.TFJS_DTYPES), (Role.WEIGHT,)))
def test_random_weights_round_trip_through_tfjs(
    model: Model, tmp_path_factory: pytest.TempPathFactory
) -> None:
    from modelconv import api

    out = tmp_path_factory.mktemp("tfjs") / "m"
    api.save(model, out, format="tfjs")
    back = tfjs.read(out, ReadOptions())
    assert len(back.tensors) == len(model.tensors)
    for want, have in zip(model.tensors, back.tensors):
        assert (have.dtype, have.shape) == (want.dtype, want.shape)
        assert have.read().tobytes() == want.read().tobytes()


@pytest.mark.keras
@pytest.mark.parametrize("name", ["k3_functional.h5", "tfk_iris_mlp.h5"])
def test_written_tfjs_loads_in_tf_keras_as_tfjs_layers_would(
    fixtures_dir: Path, tmp_path: Path, tf_keras: Any, name: str
) -> None:
    """tfjs-layers builds the model from the Keras 2 config and assigns each
    variable the manifest weight of the same name; do the same with tf_keras."""
    from modelconv import api

    source = fixtures_dir / name
    io_path = fixtures_dir / name.replace(".h5", ".io.npz")
    if not source.exists() or not io_path.exists():
        pytest.skip(f"fixture {name} not generated yet")
    out = tmp_path / "web"
    api.convert(source, out, format="tfjs", allow_lossy=True)
    document = json.loads((out / "model.json").read_text())
    topology = document["modelTopology"]
    assert topology["keras_version"].startswith("2.")
    keras_model = tf_keras.models.model_from_json(json.dumps(topology["model_config"]))
    written = tfjs.read(out, ReadOptions())
    by_tfjs_name = {t.source_names[0]: t for t in written.tensors}
    for variable in keras_model.weights:
        variable.assign(by_tfjs_name[variable.name.removesuffix(":0")].read())
    with np.load(io_path, allow_pickle=False) as io:
        inputs = [io[k] for k in sorted(io.files) if k.startswith("x")]
        outputs = [io[k] for k in sorted(io.files) if k.startswith("y")]
    predicted = keras_model.predict(inputs if len(inputs) > 1 else inputs[0], verbose=0)
    if len(outputs) == 1:
        predicted = [predicted]
    for want, have in zip(outputs, predicted):
        np.testing.assert_allclose(have, want, rtol=1e-6, atol=1e-6)


@pytest.mark.keras
def test_real_tfjs_model_converts_to_h5_that_keras_loads(
    tmp_path: Path, tf_keras: Any
) -> None:
    from modelconv import api

    out = tmp_path / "from_tfjs.h5"
    try:
        api.convert(REAL / "plain", out)
    except UnsupportedError as exc:
        pytest.skip(f"hdf5 writer not available: {exc}")
    loaded = tf_keras.models.load_model(out, compile=False)
    expected = expected_weights()
    for variable in loaded.weights:
        name = tfjs.canonical_name(variable.name)
        assert variable.numpy().tobytes() == expected[name].tobytes(), name
