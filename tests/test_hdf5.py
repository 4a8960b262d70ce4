"""HDF5 reader and writer: real Keras fixtures, built legacy files, round trips."""

from __future__ import annotations

import hashlib
import json
import math
import shutil
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import pytest
from _keras_models import local_outputs
from hypothesis import given
from hypothesis import strategies as st

from modelconv import api, dtypes
from modelconv.formats import hdf5
from modelconv.formats.base import Probe, ReadOptions, WriteOptions
from modelconv.model import ArraySource, Model, Role, Tensor

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"


def manifest() -> list[dict[str, Any]]:
    path = FIXTURES / "MANIFEST.json"
    if not path.exists():
        return []
    data = json.loads(path.read_text())
    return data if isinstance(data, list) else data.get("entries", [])


def fixture(name: str) -> Path:
    path = FIXTURES / name
    if not path.exists():
        pytest.skip(f"fixture {name} not generated yet (run fixtures/make_fixtures.py)")
    return path


def entry(name: str) -> dict[str, Any]:
    for item in manifest():
        if item.get("file") == name:
            return item
    pytest.skip(f"MANIFEST.json has no entry for {name} yet")


def read(path: Path, **kw: Any) -> Model:
    return hdf5.read(path, ReadOptions(**kw))


def le_bytes(array: np.ndarray) -> bytes:
    return np.ascontiguousarray(dtypes.to_little_endian(np.asarray(array))).tobytes()


def sha(array: np.ndarray) -> str:
    return hashlib.sha256(le_bytes(array)).hexdigest()


def assert_same_tensors(a: Model, b: Model, *, names: bool = True) -> None:
    assert len(a.tensors) == len(b.tensors)
    for ta, tb in zip(a.tensors, b.tensors):
        if names:
            assert ta.name == tb.name
        assert (ta.dtype, ta.shape) == (tb.dtype, tb.shape), ta.name
        assert le_bytes(ta.read()) == le_bytes(tb.read()), ta.name
        chunked = b"".join(bytes(p) for p in tb.iter_bytes(max_bytes=7))
        assert chunked == le_bytes(ta.read()), ta.name


H5_FIXTURES = [
    "k3_iris_mlp.h5",
    "tfk_iris_mlp.h5",
    "k3_iris_mlp.weights.h5",
    "tfk_iris_mlp.weights.h5",
    "k3_conv_lstm.h5",
    "tfk_conv_lstm.h5",
    "k3_functional.h5",
    "tfk_functional.h5",
    "tfk_functional.weights.h5",
    "k3_dtypes.h5",
    "k3_dtypes.weights.h5",
    "k3_rnn_zoo.h5",
    "h5py_tree.h5",
]


# --------------------------------------------------------------------------
# Reading the real fixtures


def test_sniff_magic_and_userblock(tmp_path: Path) -> None:
    magic = b"\x89HDF\r\n\x1a\n"
    assert hdf5.sniff(Probe(tmp_path / "x", magic + b"\0" * 100, False, 108)) == 100
    block = b"\0" * 512 + magic + b"\0" * 10
    assert hdf5.sniff(Probe(tmp_path / "x", block, False, len(block))) == 100
    assert hdf5.sniff(Probe(tmp_path / "x", b"PK\x03\x04", False, 4)) == 0
    assert hdf5.sniff(Probe(tmp_path, b"", True, 0)) == 0
    path = tmp_path / "ub.h5"
    with h5py.File(path, "w", userblock_size=1024) as h5:
        h5["w"] = np.arange(3.0)
    probe = Probe(path, path.read_bytes()[:4096], False, path.stat().st_size)
    assert hdf5.sniff(probe) == 100
    with read(path) as model:
        assert model.names == ("w",)


@pytest.mark.parametrize("name", H5_FIXTURES)
def test_every_tensor_equals_what_h5py_reads(name: str) -> None:
    path = fixture(name)
    with read(path) as model, h5py.File(path, "r") as h5:
        assert model.tensors
        base = {"keras-model": "model_weights/", "tree": ""}.get(model.flavour, "")
        for tensor in model.tensors:
            (source,) = tensor.source_names
            if tensor.role is Role.OPTIMIZER and model.flavour == "keras-model":
                source = f"optimizer_weights/{source}"
            elif model.flavour != "keras3-weights":
                source = base + source
            raw = h5[source][()]
            if tensor.dtype == "bfloat16":
                raw = np.asarray(raw).view(dtypes.numpy_dtype("bfloat16"))
            assert le_bytes(tensor.read()) == le_bytes(raw), tensor.name
            assert tensor.shape == np.shape(raw)


@pytest.mark.parametrize(
    "name",
    [n for n in H5_FIXTURES if n.endswith(".h5") and not n.endswith("weights.h5")]
    + ["tfk_functional.weights.h5", "tfk_iris_mlp.weights.h5"],
)
def test_canonical_names_and_bytes_match_the_manifest(name: str) -> None:
    path = fixture(name)
    facts = entry(name)
    weights = facts.get("weights") or {}
    if name.startswith("h5py_"):
        pytest.skip("a generic tree has no Keras weight names")
    with read(path) as model:
        if model.flavour == "keras3-weights":
            pytest.skip("Keras 3 weights files are positional")
        by_name = {t.name: t for t in model.tensors}
        for key, rec in weights.items():
            tensor = by_name.get(rec["canonical"])
            assert tensor is not None, (key, rec["canonical"], sorted(by_name))
            assert sha(tensor.read()) == rec["sha256"], key
            assert tensor.role is Role.WEIGHT
            if "h5_path" in rec and not rec.get("h5_path_ambiguous"):
                assert rec["h5_path"].endswith(tensor.source_names[0])


def test_keras3_full_model_metadata_and_optimizer() -> None:
    path = fixture("k3_iris_mlp.h5")
    with read(path) as model:
        assert model.flavour == "keras-model"
        assert model.producer["name"] == "keras"
        assert str(model.producer["version"]).startswith("3.")
        assert model.metadata["backend"] == "tensorflow"
        assert model.architecture is not None
        assert model.architecture.framework == "keras"
        assert model.architecture.config["class_name"] == "Sequential"
        assert isinstance(model.metadata["training_config"], dict)
        optimizer = model.by_role(Role.OPTIMIZER)
        assert optimizer, "the fixture was compiled with Adam"
        assert all(t.name.startswith("optimizer/") for t in optimizer)
        assert [t.name for t in model.by_role(Role.WEIGHT)][:2] == [
            "dense/kernel",
            "dense/bias",
        ]
        # Keras >= 3.3 writes the Sequential model's name in front.
        assert model.tensor("dense/kernel").source_names[0].startswith("dense/")


def test_tf_keras_rnn_names_drop_the_cell() -> None:
    with read(fixture("tfk_conv_lstm.h5")) as model:
        names = {t.name for t in model.by_role(Role.WEIGHT)}
        assert "lstm/kernel" in names and "lstm/recurrent_kernel" in names
        assert not any("lstm_cell" in n for n in names)
        source = model.tensor("lstm/kernel").source_names[0]
        assert source.endswith("lstm_cell/kernel:0")


def test_keras3_weights_are_positional_with_a_warning() -> None:
    with read(fixture("k3_iris_mlp.weights.h5")) as model:
        assert model.flavour == "keras3-weights"
        assert any("positional" in w for w in model.warnings)
        assert all(t.name.rsplit("/", 1)[-1].isdigit() for t in model.tensors)
        assert all(t.source_names[0].split("/")[-2] == "vars" for t in model.tensors)


def test_keras3_bfloat16_is_honoured() -> None:
    with read(fixture("k3_dtypes.weights.h5")) as model:
        bf16 = [t for t in model.tensors if t.dtype == "bfloat16"]
        assert bf16
        assert bf16[0].read().dtype == dtypes.numpy_dtype("bfloat16")


def test_tree_fixture_reads_paths_and_attributes() -> None:
    with read(fixture("h5py_tree.h5")) as model:
        assert model.flavour == "tree"
        assert all(t.role is Role.WEIGHT for t in model.tensors)
        assert all(not t.name.startswith("/") for t in model.tensors)
        assert "attributes" in model.metadata or "group_attributes" in model.metadata


def test_reading_is_lazy(tmp_path: Path) -> None:
    path = tmp_path / "big.h5"
    with h5py.File(path, "w") as h5:
        h5.create_dataset("zeros", shape=(1 << 20, 64), dtype="f4")  # 256 MiB
    with read(path) as model:
        (tensor,) = model.tensors
        assert tensor.nbytes == 256 << 20
        first = next(tensor.iter_chunks(max_bytes=1 << 16))
        assert first.size * 4 <= 1 << 16 and not first.any()


# --------------------------------------------------------------------------
# Old Keras layouts built in code


def _keras1_file(path: Path) -> None:
    """A Keras 1.2-style file: bytes attributes, no backend, dense_1_W names."""
    config = {
        "class_name": "Sequential",
        "config": [
            {
                "class_name": "Dense",
                "config": {"name": "dense_1", "output_dim": 3, "input_dim": 4},
            }
        ],
    }
    with h5py.File(path, "w") as h5:
        h5.attrs["keras_version"] = np.bytes_(b"1.2.2")
        h5.attrs["model_config"] = np.bytes_(json.dumps(config).encode())
        weights = h5.create_group("model_weights")
        weights.attrs["layer_names"] = np.array([b"dense_1"], dtype="S7")
        layer = weights.create_group("dense_1")
        layer.attrs["weight_names"] = np.array([b"dense_1_W", b"dense_1_b"])
        layer["dense_1_W"] = np.arange(12, dtype="f4").reshape(4, 3)
        layer["dense_1_b"] = np.zeros(3, dtype="f4")


def test_reads_a_keras1_file(tmp_path: Path) -> None:
    path = tmp_path / "k1.h5"
    _keras1_file(path)
    with read(path) as model:
        assert model.flavour == "keras-model"
        assert model.names == ("dense_1/W", "dense_1/b")
        assert model.producer["version"] == "1.2.2"
        assert "backend" not in model.metadata
        assert model.tensor("dense_1/W").source_names == ("dense_1/dense_1_W",)
        np.testing.assert_array_equal(
            model.tensor("dense_1/W").read(), np.arange(12).reshape(4, 3)
        )


def _keras2_split_file(path: Path, layers: int) -> list[str]:
    """Keras 2.0-2.2 style: bytes attrs, dense_N/kernel:0, split layer_names."""
    names = [f"dense_{i}_{'x' * 200}" for i in range(layers)]
    config = {
        "class_name": "Sequential",
        "config": {
            "name": "sequential_1",
            "layers": [
                {"class_name": "Dense", "config": {"name": n, "units": 2}}
                for n in names
            ],
        },
    }
    with h5py.File(path, "w") as h5:
        h5.attrs["keras_version"] = b"2.1.6"
        h5.attrs["backend"] = b"tensorflow"
        h5.attrs["model_config"] = json.dumps(config).encode()
        weights = h5.create_group("model_weights")
        data = np.array([n.encode() for n in names])
        pieces = np.array_split(data, 2)
        for i, piece in enumerate(pieces):
            weights.attrs[f"layer_names{i}"] = piece
        for i, name in enumerate(names):
            group = weights.create_group(name)
            group.attrs["weight_names"] = np.array(
                [f"{name}/kernel:0".encode(), f"{name}/bias:0".encode()]
            )
            group[f"{name}/kernel:0"] = np.full((2, 2), i, dtype="f4")
            group[f"{name}/bias:0"] = np.full(2, -i, dtype="f4")
    return names


def test_reads_keras2_split_layer_names(tmp_path: Path) -> None:
    path = tmp_path / "k2.h5"
    names = _keras2_split_file(path, 400)
    with read(path) as model:
        assert len(model.tensors) == 800
        assert model.names[:2] == (f"{names[0]}/kernel", f"{names[0]}/bias")
        assert model.tensor(f"{names[399]}/bias").read().tolist() == [-399, -399]
        assert model.producer["version"] == "2.1.6"


def test_empty_weight_names_as_float64_array(tmp_path: Path) -> None:
    path = tmp_path / "w.h5"
    with h5py.File(path, "w") as h5:
        h5.attrs["layer_names"] = [b"input_1", b"dense"]
        h5.attrs["keras_version"] = b"2.2.4"
        h5.create_group("input_1").attrs["weight_names"] = np.array([], "f8")
        dense = h5.create_group("dense")
        dense.attrs["weight_names"] = [b"dense/kernel:0"]
        dense["dense/kernel:0"] = np.ones((2, 2), "f4")
    with read(path) as model:
        assert model.flavour == "keras-weights"
        assert model.names == ("dense/kernel",)


@pytest.mark.parametrize(
    ("layer", "weight", "keras1", "expected"),
    [
        ("dense_1", "dense_1_W", True, "dense_1/W"),
        ("dense_1", "dense_1/kernel:0", False, "dense_1/kernel"),
        ("dense", "kernel", False, "dense/kernel"),
        ("dense", "sequential/dense/kernel", False, "dense/kernel"),
        ("lstm", "lstm/lstm_cell/kernel:0", False, "lstm/kernel"),
        ("lstm", "sequential/lstm/lstm_cell/kernel", False, "lstm/kernel"),
        ("inner", "dense_2/kernel:0", False, "inner/dense_2/kernel"),
        ("inner", "inner/dense_2/kernel", False, "inner/dense_2/kernel"),
        (
            "bidirectional",
            "bidirectional/forward_lstm/lstm_cell_1/kernel:0",
            False,
            "bidirectional/forward_lstm/kernel",
        ),
    ],
)
def test_canonical_name_forms(
    layer: str, weight: str, keras1: bool, expected: str
) -> None:
    assert hdf5.canonical_name(layer, weight, keras1) == expected


# --------------------------------------------------------------------------
# Writing and reading back


def write(model: Model, path: Path, **kw: Any) -> Path:
    hdf5.write(model, path, WriteOptions(**kw))
    return path


KERAS_MODELS = [
    "k3_iris_mlp.h5",
    "tfk_iris_mlp.h5",
    "k3_conv_lstm.h5",
    "tfk_conv_lstm.h5",
]


@pytest.mark.parametrize("name", KERAS_MODELS)
def test_keras_model_rewrite_is_exact(name: str, tmp_path: Path) -> None:
    with read(fixture(name)) as model:
        assert hdf5.losses(model, WriteOptions()) == []
        out = write(model, tmp_path / "out.h5")
        with read(out) as back:
            assert back.flavour == "keras-model"
            assert_same_tensors(model, back)
            assert [t.source_names for t in back.tensors] == [
                t.source_names for t in model.tensors
            ]
            assert [t.role for t in back.tensors] == [t.role for t in model.tensors]
            assert back.architecture.config == model.architecture.config
            assert back.metadata["training_config"] == model.metadata["training_config"]
            assert back.producer == model.producer
    with h5py.File(fixture(name), "r") as src, h5py.File(out, "r") as dst:
        for key in ("keras_version", "backend"):
            assert src.attrs[key] == dst.attrs[key]
        assert list(src["model_weights"].attrs["layer_names"]) == list(
            dst["model_weights"].attrs["layer_names"]
        )
        layouts: list[Any] = []
        dst.visititems(
            lambda _, obj: (
                layouts.append(obj.chunks) if isinstance(obj, h5py.Dataset) else None
            )
        )
        assert layouts and all(c is None for c in layouts)  # contiguous by default


@pytest.mark.parametrize("name", [*KERAS_MODELS, "k3_dtypes.h5", "h5py_tree.h5"])
def test_tree_round_trip_keeps_everything(name: str, tmp_path: Path) -> None:
    with read(fixture(name)) as model:
        out = write(model, tmp_path / "tree.h5", flavour="tree")
        with read(out) as back:
            assert back.flavour == "tree"
            assert_same_tensors(model, back)
            assert [t.source_names for t in back.tensors] == [
                t.source_names for t in model.tensors
            ]
            assert [t.role for t in back.tensors] == [t.role for t in model.tensors]
            if model.architecture is not None:
                assert back.architecture.config == model.architecture.config
            for key, value in model.metadata.items():
                assert back.metadata[key] == value


def test_keras_weights_flavour(tmp_path: Path) -> None:
    with read(fixture("tfk_iris_mlp.h5")) as model:
        options = WriteOptions(flavour="keras-weights")
        kinds = {loss.what for loss in hdf5.losses(model, options)}
        assert {"architecture", "optimizer"} <= kinds
        out = write(model, tmp_path / "w.h5", flavour="keras-weights")
        with read(out) as back:
            assert back.flavour == "keras-weights"
            weights = model.replace(tensors=model.by_role(Role.WEIGHT))
            assert_same_tensors(weights, back)


def test_keras3_weights_flavour(tmp_path: Path) -> None:
    with read(fixture("k3_iris_mlp.weights.h5")) as model:
        assert hdf5.losses(model, WriteOptions(flavour="keras3-weights")) == []
        out = write(model, tmp_path / "w.weights.h5", flavour="keras3-weights")
        with read(out) as back:
            assert back.flavour == "keras3-weights"
            assert_same_tensors(model, back)
            assert back.names == model.names


def test_compression_opt_in(tmp_path: Path) -> None:
    model = Model(
        tensors=(
            Tensor(
                "a/b", "float32", (64, 64), source=ArraySource(np.zeros((64, 64), "f4"))
            ),
        )
    )
    out = write(model, tmp_path / "z.h5", flavour="tree", compress=("gzip", 6))
    with h5py.File(out, "r") as h5:
        assert h5["a/b"].compression == "gzip"
    with read(out) as back:
        assert_same_tensors(model, back)


def _predict_matches(loaded: Any, io_path: Path) -> None:
    with np.load(io_path, allow_pickle=False) as io:
        x = io["x"]
    # The original loaded by its own Keras on this CPU (see local_outputs).
    (y,) = local_outputs(io_path.name.removesuffix(".io.npz"))
    got = np.asarray(loaded.predict(x, verbose=0))
    assert got.dtype == y.dtype
    assert got.tobytes() == y.tobytes()


def test_written_keras3_model_loads_in_keras3(keras3: Any, tmp_path: Path) -> None:
    with read(fixture("k3_iris_mlp.h5")) as model:
        out = write(model, tmp_path / "k3.h5", flavour="keras-model")
    loaded = keras3.models.load_model(out)
    _predict_matches(loaded, fixture("k3_iris_mlp.io.npz"))


def test_written_tf_keras_model_loads_in_tf_keras(
    tf_keras: Any, tmp_path: Path
) -> None:
    with read(fixture("tfk_iris_mlp.h5")) as model:
        out = write(model, tmp_path / "tfk.h5", flavour="keras-model")
    loaded = tf_keras.models.load_model(out)
    _predict_matches(loaded, fixture("tfk_iris_mlp.io.npz"))


def test_keras_model_needs_an_architecture(tmp_path: Path) -> None:
    model = Model(
        tensors=(Tensor("a/b", "float32", (1,), source=ArraySource(np.ones(1, "f4"))),)
    )
    assert hdf5.losses(model, WriteOptions(flavour="keras-model"))
    from modelconv.errors import UsageError

    with pytest.raises(UsageError):
        hdf5.write(model, tmp_path / "x.h5", WriteOptions(flavour="keras-model"))
    with pytest.raises(UsageError):
        hdf5.write(model, tmp_path / "x.h5", WriteOptions(flavour="nonsense"))


# --------------------------------------------------------------------------
# Hypothesis: any tree model survives the tree flavour bit for bit

_DTYPES = list(dtypes.DTYPE_NAMES)
_SEGMENT = st.sampled_from(
    ["a", "b", "..", ".", "", "ü", "日本", "x y", "__modelconv_escaped__", "0"]
)
_NAME = st.lists(_SEGMENT, min_size=1, max_size=4).map("/".join) | st.text(max_size=12)


@st.composite
def _tensor_specs(
    draw: st.DrawFn,
) -> list[tuple[str, str, tuple[int, ...], bytes, str]]:
    names = draw(st.lists(_NAME, min_size=1, max_size=6, unique=True))
    specs = []
    for name in names:
        dtype = draw(st.sampled_from(_DTYPES))
        shape = tuple(draw(st.lists(st.integers(0, 4), max_size=3)))
        size = math.prod(shape) * dtypes.itemsize(dtype)
        raw = draw(st.binary(min_size=size, max_size=size))
        role = draw(st.sampled_from([r.value for r in Role]))
        specs.append((name, dtype, shape, raw, role))
    return specs


def _array(dtype: str, shape: tuple[int, ...], raw: bytes) -> np.ndarray:
    if dtype == "bool":
        return (np.frombuffer(raw, "u1") % 2).astype(bool).reshape(shape)
    return (
        np.frombuffer(raw, dtypes.storage_dtype(dtype))
        .view(dtypes.numpy_dtype(dtype).newbyteorder("<"))
        .reshape(shape)
    )


@given(_tensor_specs())
def test_tree_round_trip_of_random_models(
    tmp_path_factory: Any, specs: list[Any]
) -> None:
    tensors = tuple(
        Tensor(
            name,
            dtype,
            shape,
            role=Role(role),
            source_names=(f"src:{name}",),
            source=ArraySource(_array(dtype, shape, raw)),
        )
        for name, dtype, shape, raw, role in specs
    )
    model = Model(tensors=tensors, metadata={"note": "nan", "n": [1, 2]})
    out = tmp_path_factory.mktemp("tree") / "t.h5"
    hdf5.write(model, out, WriteOptions(flavour="tree"))
    with read(out) as back:
        assert back.names == model.names
        assert [t.role for t in back.tensors] == [t.role for t in model.tensors]
        assert [t.source_names for t in back.tensors] == [
            t.source_names for t in tensors
        ]
        assert_same_tensors(model, back)
        assert back.metadata["note"] == "nan"


def test_special_float_bits_survive(tmp_path: Path) -> None:
    nan_payload = np.array([0x7FC00001, 0xFFC00002, 0x80000000], dtype="<u4").view(
        "<f4"
    )
    bf16 = np.array([0x7FC1, 0x8000, 0x3F80], dtype="<u2").view(
        dtypes.numpy_dtype("bfloat16")
    )
    model = Model(
        tensors=(
            Tensor("f", "float32", (3,), source=ArraySource(nan_payload)),
            Tensor("bf", "bfloat16", (3,), source=ArraySource(bf16)),
            Tensor("s", "complex128", (), source=ArraySource(np.array(1 - 2j))),
        )
    )
    out = write(model, tmp_path / "s.h5", flavour="tree")
    with h5py.File(out, "r") as h5:
        assert (
            h5["bf"].dtype == np.dtype("<u2") and h5["bf"].attrs["dtype"] == "bfloat16"
        )
    with read(out) as back:
        assert_same_tensors(model, back)


def _as_keras30(source: Path, path: Path) -> None:
    """A copy of a legacy file with Keras 3.0-3.2's bare weight names.

    Keras 3.0-3.2 ``legacy_h5_format`` wrote ``variable.name`` (``kernel``),
    not the path Keras >= 3.3 writes (``sub_model/sub_dense/kernel``), also
    for the weights of a nested model, all in the nested model's group.
    """
    shutil.copy(source, path)
    with h5py.File(path, "r+") as h5:
        weights = h5["model_weights"]
        for layer in weights.attrs["layer_names"]:
            group = weights[layer]
            bare = []
            for name in group.attrs["weight_names"]:
                name = name.decode() if isinstance(name, bytes) else name
                short = name.rpartition("/")[2]
                data = group[name][()]
                del group[name]
                group[short] = data
                bare.append(short.encode())
            group.attrs["weight_names"] = bare


def test_keras30_bare_names_in_a_nested_model(tmp_path: Path) -> None:
    source = fixture("k3_functional.h5")
    path = tmp_path / "k30.h5"
    _as_keras30(source, path)
    with read(source) as original, read(path) as model:
        assert model.names == original.names
        assert "sub_model/sub_dense/kernel" in model.names
        assert model.tensor("sub_model/sub_dense/kernel").source_names == (
            "sub_model/kernel",
        )
        assert_same_tensors(original, model)
    # Named after the architecture, the weights find their .keras slots.
    result = api.convert(path, tmp_path / "k30.keras")
    assert result.tensors == len(original.tensors)


@pytest.mark.keras
def test_tf_keras_layer_names_with_slashes(
    tfk_slash_names: Any, tf_keras: Any, tmp_path: Path
) -> None:
    """tf.keras DenseNet names layers "conv1/conv" and their weights
    "conv1/conv/kernel:0". They were read as "conv1/conv/conv1/conv/kernel"
    (not in the architecture), and writing HDF5 again failed (exit 3): the
    layer was taken to be "conv1"."""
    with api.load(tfk_slash_names.h5) as model:
        assert not model.warnings
        names = [t.name for t in model.by_role(Role.WEIGHT)]
    assert names[:2] == ["conv1/conv/kernel", "conv1/conv/bias"]
    for src in (tfk_slash_names.h5, tfk_slash_names.keras):
        out = tmp_path / f"{src.suffix[1:]}.h5"
        api.convert(src, out, target_keras="keras2", drop=["optimizer"])
        loaded = tf_keras.models.load_model(out, compile=False)
        got = loaded.predict(tfk_slash_names.x, verbose=0)
        np.testing.assert_allclose(got, tfk_slash_names.want, rtol=1e-6, atol=1e-6)


@pytest.mark.keras
def test_keras3_weight_paths_under_name_scopes(keras3: Any, tmp_path: Path) -> None:
    """Keras >= 3.3 writes a weight's variable path, name scopes first: NASNet
    builds its blocks in name scopes, and 1039 of its weights were read as
    "<layer>/<scopes>/<layer>/kernel", belonging to no layer."""
    x = keras3.Input((4,))
    with keras3.name_scope("block_1"), keras3.name_scope("inner"):
        y = keras3.layers.Dense(3, name="scoped")(x)
    model = keras3.Model(x, keras3.layers.Dense(1, name="head")(y))
    path = tmp_path / "m.h5"
    model.save(path)
    with h5py.File(path) as h5:
        stored = h5["model_weights/scoped"].attrs["weight_names"]
        assert stored[0] == "block_1/inner/scoped/kernel"
    with api.load(path) as read:
        assert not read.warnings
        assert [t.name for t in read.tensors][:2] == ["scoped/kernel", "scoped/bias"]


def test_inspect_keras1_names_are_not_loose(tmp_path: Path, run_cli: Any) -> None:
    """Keras 1 weights keep their names (dense_1/W) while the architecture
    says dense_1/kernel: every Keras 1 file was reported as holding weights
    'not mentioned by the architecture'."""
    path = tmp_path / "k1.h5"
    _keras1_file(path)
    result = run_cli("inspect", path, "--json")
    assert result.exit_code == 0
    report = json.loads(result.stdout)
    assert report["warnings"] == []
    assert report["total_params"] == 15
