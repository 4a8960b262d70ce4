"""modelconv JSON (format ``json``) and Keras ``to_json()`` files (``keras-json``).

modelconv JSON must round-trip every dtype bit for bit (NaN payloads, -0.0,
bfloat16, 0-d and empty tensors, odd names), keep non-finite config values,
validate against docs/modelconv-json.schema.json, write without reading a
whole tensor and read without holding a base64 string.
"""

from __future__ import annotations

import json
import math
import tracemalloc
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from _keras_models import local_outputs
from hypothesis import given
from hypothesis import strategies as st
from strategies import models

from modelconv.errors import InputError, LossyConversionError
from modelconv.formats import detect, jsonfmt, keras_json, make_probe
from modelconv.formats.base import ReadOptions, WriteOptions
from modelconv.model import ArraySource, Model, Role, Tensor, digest

ROOT = Path(__file__).resolve().parent.parent
SCHEMA = json.loads((ROOT / "docs" / "modelconv-json.schema.json").read_text())


def validate(path: Path) -> None:
    jsonschema = pytest.importorskip("jsonschema")
    jsonschema.validate(json.loads(path.read_text()), SCHEMA)


def same_floats(a: Any, b: Any) -> bool:
    """Deep equality where NaN equals NaN with the same bits, and -0.0 != 0.0."""
    if isinstance(a, float) and isinstance(b, float):
        return np.float64(a).tobytes() == np.float64(b).tobytes()
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(same_floats(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(same_floats(x, y) for x, y in zip(a, b))
    return type(a) is type(b) and a == b


def write_read(model: Model, path: Path) -> Model:
    jsonfmt.write(model, path, WriteOptions())
    return jsonfmt.read(path, ReadOptions())


def assert_same_tensors(written: Model, back: Model) -> None:
    assert back.names == written.names
    for want, have in zip(written.tensors, back.tensors):
        assert (have.dtype, have.shape, have.role, have.source_names) == (
            want.dtype,
            want.shape,
            want.role,
            want.source_names,
        )
        assert digest(have) == digest(want), want.name
        assert have.read().tobytes() == want.read().tobytes()


def tensor(name: str, array: np.ndarray, **more: Any) -> Tensor:
    dtype = "bfloat16" if array.dtype.name == "bfloat16" else array.dtype.name
    return Tensor(name, dtype, array.shape, source=ArraySource(array), **more)


# --- modelconv JSON: round trips ------------------------------------------

UNICODE_NAMES = st.text(
    st.characters(blacklist_categories=("Cc",)), min_size=1, max_size=12
)
CONFIG_FLOATS = st.floats(allow_nan=True, allow_infinity=True) | st.sampled_from(
    [-0.0, math.nan, -math.nan, math.inf, -math.inf]
)
JSON_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**64)
    | CONFIG_FLOATS
    | UNICODE_NAMES,
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.dictionaries(
            st.sampled_from(["a", "$float", "$dict", "$bytes", "é", ""])
            | UNICODE_NAMES,
            inner,
            max_size=3,
        )
    ),
    max_leaves=12,
)


@given(model=models(), metadata=st.dictionaries(UNICODE_NAMES, JSON_VALUES))
def test_random_models_round_trip_bit_exact(
    model: Model, metadata: dict[str, Any], tmp_path_factory: pytest.TempPathFactory
) -> None:
    path = tmp_path_factory.mktemp("rt") / "m.json"
    model = model.replace(
        metadata={"source": {"format": "x", "flavour": ""}, **metadata}
    )
    back = write_read(model, path)
    assert_same_tensors(model, back)
    assert same_floats(back.metadata, dict(model.metadata))
    validate(path)


@given(names=st.lists(UNICODE_NAMES, min_size=1, max_size=4, unique=True))
def test_unicode_and_surrogate_names_survive(
    names: list[str], tmp_path_factory: pytest.TempPathFactory
) -> None:
    names = [*names[:-1], names[-1] + "\ud800"]  # a lone surrogate, too
    model = Model(
        tensors=tuple(
            tensor(n, np.arange(i + 1, dtype="int8"), source_names=(n + "/src",))
            for i, n in enumerate(names)
        )
    )
    back = write_read(model, tmp_path_factory.mktemp("names") / "m.json")
    assert_same_tensors(model, back)
    # ensure_ascii keeps the file ASCII whatever the names are.


def test_every_dtype_edge_values(tmp_path: Path) -> None:
    import ml_dtypes

    nan_payload = np.array([0x7FF8000000000123, 0xFFF0000000000001], "<u8")
    arrays = {
        "f64/nan_payloads": nan_payload.view("<f8"),
        "f32/signed_zero": np.array([-0.0, 0.0, -np.inf], "float32"),
        "f16/subnormal": np.array([6e-8, -6e-8], "float16"),
        "bf16/values": np.array([1.5, -0.0, np.nan], ml_dtypes.bfloat16),
        "c128/x": np.array([complex(-0.0, np.nan)], "complex128"),
        "c64/x": np.array([[1 + 2j]], "complex64"),
        "u64/max": np.array([2**64 - 1], "uint64"),
        "i64/min": np.array([-(2**63)], "int64"),
        "bool/x": np.array([[True, False]]),
        "scalar/x": np.array(3.25, "float32"),
        "empty/x": np.zeros((0, 7), "int32"),
        "empty/y": np.zeros((3, 0), "uint16"),
    }
    roles = [Role.WEIGHT, Role.OPTIMIZER, Role.STATE]
    model = Model(
        tensors=tuple(
            tensor(name, array, role=roles[i % 3])
            for i, (name, array) in enumerate(arrays.items())
        )
    )
    path = tmp_path / "edges.json"
    back = write_read(model, path)
    assert_same_tensors(model, back)
    validate(path)
    assert path.read_bytes().isascii()
    entry = json.loads(path.read_text())["tensors"][3]
    # bfloat16 is stored as its uint16 bits, little-endian.
    raw = np.frombuffer(__import__("base64").b64decode(entry["data"]), "<u2")
    assert raw.tolist() == arrays["bf16/values"].view("<u2").tolist()


def test_config_non_finite_values_are_tagged_and_restored(tmp_path: Path) -> None:
    odd_nan = np.array([0x7FF800000000BEEF], "<u8").view("<f8")[0].item()
    config = {
        "class_name": "Sequential",
        "config": {
            "name": "s",
            "layers": [
                {
                    "class_name": "Dense",
                    "config": {"name": "d", "units": 2, "clip": math.inf},
                }
            ],
        },
        "nan": math.nan,
        "odd": odd_nan,
        "neg": -math.inf,
        "zero": -0.0,
        "looks_like_tag": {"$float": "NaN"},
        "raw": b"\x00\xff",
    }
    from modelconv.model import Architecture

    model = Model(
        tensors=(tensor("d/kernel", np.ones((2, 2), "float32")),),
        architecture=Architecture("keras", config),
    )
    path = tmp_path / "cfg.json"
    back = write_read(model, path)
    text = path.read_text()
    assert "NaN," not in text and "Infinity," not in text  # no bare non-JSON
    json.loads(text, parse_constant=lambda c: pytest.fail(f"bare {c} written"))
    assert same_floats(dict(back.architecture.config), config)
    validate(path)


def test_written_file_is_the_shared_header(tmp_path: Path) -> None:
    model = Model(tensors=(tensor("a/b", np.arange(4, dtype="int16")),))
    path = tmp_path / "h.json"
    jsonfmt.write(model, path, WriteOptions())
    document = json.loads(path.read_text())
    assert list(document) == ["modelconv", "architecture", "metadata", "tensors"]
    assert document["modelconv"] == 1
    entry = document["tensors"][0]
    assert list(entry)[-1] == "data"
    assert entry["data"] == "AAABAAIAAwA="
    assert jsonfmt.sniff(make_probe(path)) == 100
    assert detect(path).name == "json"


# --- modelconv JSON: streaming --------------------------------------------


class _StreamOnly:
    def __init__(self, array: np.ndarray) -> None:
        self.array = array

    def read(self) -> np.ndarray:
        raise AssertionError("the writer must stream, not read whole tensors")

    def iter_chunks(self, max_bytes: int):  # type: ignore[no-untyped-def]
        yield from ArraySource(self.array).iter_chunks(max_bytes)


def test_big_tensor_streams_both_ways(tmp_path: Path) -> None:
    big = np.arange(6 * 2**20, dtype="float32")  # 24 MiB, 32 MiB of base64
    model = Model(
        tensors=(
            Tensor("big/kernel", "float32", big.shape, source=_StreamOnly(big)),
            tensor("small/bias", np.array([1.0, 2.0], "float64")),
        )
    )
    path = tmp_path / "big.json"
    jsonfmt.write(model, path, WriteOptions())
    tracemalloc.start()
    try:
        back = jsonfmt.read(path, ReadOptions())
        _, peak_scan = tracemalloc.get_traced_memory()
        tracemalloc.reset_peak()
        total = 0
        for chunk in back.tensors[0].iter_chunks(2**20):
            assert chunk.nbytes <= 2**20 + 12
            total += chunk.size
        _, peak_chunks = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert total == big.size
    assert peak_scan < 8 * 2**20, "reading the header must not hold the base64"
    assert peak_chunks < 8 * 2**20, "chunked reads must stay near one chunk"
    assert np.array_equal(back.tensors[0].read(), big)
    assert back.tensors[1].read().tolist() == [1.0, 2.0]


@pytest.mark.parametrize("max_bytes", [1, 4, 5, 12, 13, 1000])
def test_chunks_of_any_size_reassemble(tmp_path: Path, max_bytes: int) -> None:
    array = np.arange(37, dtype="complex64") * (1 - 1j)
    model = Model(tensors=(tensor("c/x", array),))
    back = write_read(model, tmp_path / "c.json")
    pieces = list(back.tensors[0].iter_chunks(max_bytes))
    assert np.concatenate(pieces).tobytes() == array.tobytes()


def test_lossy_metadata_needs_permission(tmp_path: Path) -> None:
    model = Model(metadata={"when": object(), 3: "int key"})
    losses = jsonfmt.losses(model, WriteOptions())
    assert len(losses) == 2 and all(loss.what == "metadata" for loss in losses)
    with pytest.raises(LossyConversionError, match="--allow-lossy"):
        jsonfmt.write(model, tmp_path / "x.json", WriteOptions())
    jsonfmt.write(model, tmp_path / "x.json", WriteOptions(allow_lossy=True))
    assert jsonfmt.read(tmp_path / "x.json", ReadOptions()).metadata["3"] == "int key"


def test_damaged_data_is_an_input_error(tmp_path: Path) -> None:
    model = Model(tensors=(tensor("a", np.arange(6, dtype="int32")),))
    path = tmp_path / "d.json"
    jsonfmt.write(model, path, WriteOptions())
    text = path.read_text()
    data = json.loads(text)["tensors"][0]["data"]
    short = path.with_name("short.json")
    short.write_text(text.replace(data, data[:-4]))
    with pytest.raises(InputError, match="base64 characters"):
        jsonfmt.read(short, ReadOptions())
    bad = path.with_name("bad.json")
    bad.write_text(text.replace(data, "!" + data[1:]))
    back = jsonfmt.read(bad, ReadOptions())
    with pytest.raises(InputError, match="base64"):
        back.tensors[0].read()


# --- modelconv JSON from real fixtures --------------------------------------


def manifest(fixtures_dir: Path) -> list[dict[str, Any]]:
    path = fixtures_dir / "MANIFEST.json"
    if not path.exists():
        pytest.skip("fixtures/MANIFEST.json not generated yet")
    return json.loads(path.read_text())


def fixture(fixtures_dir: Path, name: str) -> Path:
    path = fixtures_dir / name
    if not path.exists():
        pytest.skip(f"fixture {name} not generated yet")
    return path


FULL_FIXTURES = [
    "k3_iris_mlp.h5",
    "k3_iris_mlp.keras",
    "k3_functional.h5",
    "k3_dtypes.keras",
    "k3_rnn_zoo.h5",
    "tfk_iris_mlp.h5",
    "tfk_functional.h5",
    "k3_iris_mlp.weights.h5",
]


@pytest.mark.parametrize("name", FULL_FIXTURES)
def test_fixture_round_trips_through_modelconv_json(
    fixtures_dir: Path, tmp_path: Path, name: str
) -> None:
    from modelconv import api
    from modelconv.errors import UnknownFormatError, UnsupportedError

    source = fixture(fixtures_dir, name)
    try:
        model = api.load(source)
    except (UnknownFormatError, UnsupportedError) as exc:
        pytest.skip(f"no reader for {name} yet: {exc}")
    with model:
        path = tmp_path / "m.json"
        back = write_read(model, path)
        assert_same_tensors(model, back)
        if model.architecture is not None:
            assert same_floats(
                dict(back.architecture.config), dict(model.architecture.config)
            )
        validate(path)


# --- keras-json -----------------------------------------------------------

KERAS_JSON = [
    "k3_iris_mlp.json",
    "k3_functional.json",
    "tfk_iris_mlp.json",
    "tfk_functional.json",
]


@pytest.mark.parametrize("name", KERAS_JSON)
def test_keras_json_fixture_reads_with_count_params_totals(
    fixtures_dir: Path, name: str
) -> None:
    path = fixture(fixtures_dir, name)
    assert detect(path).name == "keras-json"
    model = keras_json.read(path, ReadOptions())
    assert model.tensors == ()
    assert model.flavour == ("keras3" if name.startswith("k3") else "keras2")
    config = model.architecture.config
    assert "keras_version" not in config and config["class_name"]
    if name.startswith("tfk"):
        assert model.producer["version"].startswith("2.")
        assert model.metadata["backend"] == "tensorflow"
    facts = next(e for e in manifest(fixtures_dir) if e["file"] == name)
    if model.architecture.total_params is None:
        pytest.skip("keras_config does not derive parameter totals yet")
    assert model.totals() == (
        facts["total_params"],
        facts["trainable_params"],
        facts["non_trainable_params"],
    )


@pytest.mark.parametrize("name", KERAS_JSON)
def test_keras_json_writes_back_what_to_json_wrote(
    fixtures_dir: Path, tmp_path: Path, name: str
) -> None:
    path = fixture(fixtures_dir, name)
    model = keras_json.read(path, ReadOptions())
    out = tmp_path / "back.json"
    assert keras_json.losses(model, WriteOptions()) == []
    keras_json.write(model, out, WriteOptions())
    assert json.loads(out.read_text()) == json.loads(path.read_text())


def test_keras_json_forms_and_losses(tmp_path: Path) -> None:
    keras1 = {
        "class_name": "Sequential",
        "config": [
            {
                "class_name": "Dense",
                "config": {"name": "dense_1", "output_dim": 3, "input_dim": 4},
            }
        ],
        "keras_version": "1.2.2",
        "backend": "theano",
    }
    keras2 = {
        "class_name": "Sequential",
        "config": {"name": "s", "layers": []},
        "keras_version": "2.3.1",
        "backend": "tensorflow",
    }
    keras3 = {"module": "keras", "class_name": "Sequential", "config": {"layers": []}}
    # Keras 2.0 and 2.1 wrote a Sequential as a list too; it used to be
    # reported as keras1 despite its version.
    keras21 = {**keras1, "keras_version": "2.1.6", "backend": "tensorflow"}
    keras21["config"] = [{"class_name": "Dense", "config": {"name": "d", "units": 3}}]
    for document, flavour in (
        (keras1, "keras1"),
        (keras2, "keras2"),
        (keras3, "keras3"),
        (keras21, "keras2"),
    ):
        path = tmp_path / f"{flavour}-{document.get('keras_version')}.json"
        path.write_text(json.dumps(document))
        assert keras_json.sniff(make_probe(path)) == 90
        model = keras_json.read(path, ReadOptions())
        assert model.flavour == flavour
        with_weights = model.replace(
            tensors=(tensor("d/kernel", np.ones(2, "float32")),)
        )
        (loss,) = keras_json.losses(with_weights, WriteOptions())
        assert loss.what == "weights" and "1 weight" in loss.detail
        out = path.with_suffix(".out.json")
        keras_json.write(with_weights, out, WriteOptions(allow_lossy=True))
        assert json.loads(out.read_text()) == document


def test_keras_json_keeps_bare_nan_as_keras_does(tmp_path: Path) -> None:
    path = tmp_path / "nan.json"
    path.write_text('{"class_name": "Sequential", "config": {"layers": [], "x": NaN}}')
    model = keras_json.read(path, ReadOptions())
    assert math.isnan(model.architecture.config["config"]["x"])
    keras_json.write(model, tmp_path / "out.json", WriteOptions())
    assert "NaN" in (tmp_path / "out.json").read_text()


def test_sniffers_tell_the_json_formats_apart(tmp_path: Path) -> None:
    documents = {
        "json": '{"modelconv": 1, "architecture": null, "metadata": {}, "tensors": []}',
        "keras-json": '{"class_name": "Sequential", "config": {"layers": []}}',
        "tfjs": '{"format": "layers-model", "modelTopology": {"class_name": "S", '
        '"config": {"layers": []}}, "weightsManifest": []}',
    }
    for expected, text in documents.items():
        path = tmp_path / f"{expected}.json"
        path.write_text(text)
        assert detect(path).name == expected


# --- through the command line, with Keras as the judge ----------------------

KERAS_FULL = [("k3_iris_mlp.h5", "keras3"), ("tfk_iris_mlp.h5", "tf_keras")]


@pytest.mark.keras
@pytest.mark.parametrize("name, loader", KERAS_FULL)
def test_modelconv_json_of_a_keras_model_converts_to_h5_keras_predicts(
    fixtures_dir: Path,
    tmp_path: Path,
    request: pytest.FixtureRequest,
    run_cli: Any,
    name: str,
    loader: str,
) -> None:
    source = fixture(fixtures_dir, name)
    io_path = fixture(fixtures_dir, name.replace(".h5", ".io.npz"))
    keras_module = request.getfixturevalue(loader)
    as_json = tmp_path / "model.json"
    assert run_cli("convert", source, as_json).exit_code == 0
    validate(as_json)
    back = tmp_path / "back.h5"
    result = run_cli("convert", as_json, back)
    assert result.exit_code == 0, result.stderr
    with np.load(io_path, allow_pickle=False) as io:
        x = io["x"]
    (y,) = local_outputs(name.removesuffix(".h5"))  # Keras' own, on this CPU
    loaded = keras_module.models.load_model(str(back), compile=False)
    np.testing.assert_array_equal(loaded.predict(x, verbose=0), y)


@pytest.mark.parametrize("name", KERAS_JSON)
def test_cli_inspect_keras_json_totals(
    fixtures_dir: Path, run_cli: Any, name: str
) -> None:
    path = fixture(fixtures_dir, name)
    facts = next(e for e in manifest(fixtures_dir) if e["file"] == name)
    result = run_cli("inspect", path, "--json")
    assert result.exit_code == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["format"] == "keras-json"
    assert report["total_params"] == facts["total_params"]
    assert report["trainable_params"] == facts["trainable_params"]
    assert [layer["name"] for layer in report["layers"]] == facts["layer_names"]


def test_cli_keras_json_output_needs_allow_lossy(
    fixtures_dir: Path, tmp_path: Path, run_cli: Any
) -> None:
    source = fixture(fixtures_dir, "k3_iris_mlp.h5")
    out = tmp_path / "arch.json"
    refused = run_cli("convert", source, out, "--to", "keras-json")
    assert refused.exit_code == 2 and not out.exists()
    allowed = run_cli("convert", source, out, "--to", "keras-json", "--allow-lossy")
    assert allowed.exit_code == 0, allowed.stderr
    model = keras_json.read(out, ReadOptions())
    assert model.tensors == () and model.architecture is not None
