"""pickle and joblib: real files read bit-exact, writers load with pickle/joblib.

Trusted files (made here or by fixtures/make_fixtures.py) are loaded with
``pickle.load`` / ``joblib.load`` in the tests only, to have the truth to
compare with; modelconv itself never does.
"""

from __future__ import annotations

import io
import pickle
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from _keras_models import local_outputs
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from modelconv import dtypes
from modelconv.errors import InputError, ModelconvError
from modelconv.formats import detect, joblibfmt, pickles
from modelconv.formats.base import ReadOptions, WriteOptions
from modelconv.model import ArraySource, Model, Role, Tensor
from modelconv.picklewrite import compression_for, write_document

joblib = pytest.importorskip("joblib")

COMPRESSORS = ["zlib", "gzip", "bz2", "lzma", "xz", "lz4"]


def read(path: Path) -> Model:
    return pickles.read(path, ReadOptions())


def walk(obj: Any, prefix: tuple[str, ...] = ()) -> Iterator[tuple[str, np.ndarray]]:
    """(joined key path, array) for numeric array leaves, as modelconv names them."""
    if isinstance(obj, np.ndarray):
        if obj.dtype.kind in "biufc":
            yield "/".join(prefix) or "array", obj
    elif isinstance(obj, dict):
        for key, value in obj.items():
            yield from walk(value, (*prefix, str(key)))
    elif isinstance(obj, (list, tuple)):
        for index, value in enumerate(obj):
            yield from walk(value, (*prefix, str(index)))


def little(array: np.ndarray) -> bytes:
    """C-order little-endian bytes: equal arrays in either byte order agree."""
    return np.ascontiguousarray(dtypes.to_little_endian(array)).tobytes()


def assert_same_array(tensor: Tensor, want: np.ndarray) -> None:
    got = tensor.read()
    assert tensor.dtype == dtypes.dtype_name(want.dtype), tensor.name
    assert got.shape == want.shape, tensor.name
    assert little(got) == little(want), tensor.name
    step = 7 if tensor.nbytes < 1000 else 4096  # odd pieces on small tensors
    chunks = b"".join(bytes(piece) for piece in tensor.iter_bytes(step))
    assert chunks == little(want), tensor.name


def assert_model_matches(model: Model, truth: Any) -> None:
    expected = dict(walk(truth))
    assert [t.name for t in model.tensors] == list(expected)
    for tensor in model.tensors:
        assert_same_array(tensor, expected[tensor.name])


DATA = {
    "dense/kernel": np.arange(12, dtype="float32").reshape(4, 3),
    "counts": np.arange(5, dtype=">i8"),
    "fortran": np.asfortranarray(np.arange(12.0).reshape(3, 4)),
    "mask": np.array([[True, False]]),
    "scalar": np.array(2.5),
    "empty": np.zeros((0, 2), "float16"),
    "complex": np.array([1 + 2j], "complex64"),
    "nested": {"a": {"b": np.arange(3, dtype="uint16")}},
    "layers": [np.ones((2, 2), "float32"), np.zeros(2, "float32")],
    "big": np.linspace(0, 1, 40_000, dtype="float32"),
    "meta": {"name": "demo", "pair": (1, 2), "lr": 0.001, "none": None},
}


# -- files written by the real libraries, made here


@pytest.mark.parametrize("protocol", range(6))
def test_pickled_dict_of_arrays_reads_exactly(protocol: int, tmp_path: Path) -> None:
    path = tmp_path / f"arrays_p{protocol}.pkl"
    path.write_bytes(pickle.dumps(DATA, protocol=protocol))
    with read(path) as model:
        assert model.recognised == "arrays"
        assert_model_matches(model, DATA)
        assert model.metadata["values"]["meta/name"] == "demo"
        assert model.metadata["values"]["meta/pair"] == [1, 2]


@pytest.mark.parametrize("compress", [None, *COMPRESSORS])
def test_joblib_files_read_exactly(compress: str | None, tmp_path: Path) -> None:
    path = tmp_path / "arrays.joblib"
    joblib.dump(DATA, path, compress=(compress, 3) if compress else 0)
    assert detect(path).name == "joblib"
    with joblibfmt.read(path, ReadOptions()) as model:
        assert_model_matches(model, joblib.load(path))
        if compress:
            assert any("compressed" in w for w in model.warnings)


def test_joblib_without_alignment_padding(tmp_path: Path) -> None:
    # joblib < 1.2, and joblib writing to an unseekable handle, add no padding.
    class Unseekable(io.RawIOBase):
        def __init__(self) -> None:
            self.buffer = bytearray()

        def writable(self) -> bool:
            return True

        def write(self, data: Any) -> int:
            self.buffer += bytes(data)
            return len(data)

        def tell(self) -> int:
            raise io.UnsupportedOperation

    sink = Unseekable()
    joblib.dump(DATA, sink)
    path = tmp_path / "old.joblib"
    path.write_bytes(bytes(sink.buffer))
    assert b"numpy_array_alignment_bytes" in path.read_bytes()
    with read(path) as model:
        assert_model_matches(model, joblib.load(path))


def test_layer_list_and_bare_array(tmp_path: Path) -> None:
    layers = [np.ones((3, 2), "float32"), np.arange(2, dtype="float32")]
    joblib.dump(layers, tmp_path / "list.joblib")
    with read(tmp_path / "list.joblib") as model:
        assert [t.name for t in model.tensors] == ["0", "1"]
        assert_model_matches(model, layers)
    bare = np.asfortranarray(np.arange(6, dtype="int16").reshape(2, 3))
    joblib.dump(bare, tmp_path / "bare.joblib")
    with read(tmp_path / "bare.joblib") as model:
        assert_same_array(model.tensor("array"), bare)


def _mlp(kind: str) -> Any:
    from sklearn.neural_network import MLPClassifier, MLPRegressor

    rng = np.random.default_rng(0)
    x = rng.normal(size=(40, 4))
    if kind == "classifier":
        y = np.array(["setosa", "versicolor", "virginica"] * 14)[:40]
        return MLPClassifier(
            hidden_layer_sizes=(6, 5), max_iter=30, random_state=1
        ).fit(x, y)
    return MLPRegressor(
        hidden_layer_sizes=(7,), solver="sgd", max_iter=30, random_state=1
    ).fit(x, x[:, :2])


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
@pytest.mark.parametrize("kind", ["classifier", "regressor"])
@pytest.mark.parametrize("how", ["pickle", "joblib", "joblib-z3"])
def test_sklearn_mlp(kind: str, how: str, tmp_path: Path) -> None:
    estimator = _mlp(kind)
    path = tmp_path / "mlp.bin"
    if how == "pickle":
        path.write_bytes(pickle.dumps(estimator))
    else:
        joblib.dump(estimator, path, compress=3 if how == "joblib-z3" else 0)
    check_sklearn_model(read(path), estimator)


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
def test_sklearn_layer_sizes_that_disagree_with_the_weights_are_said(
    tmp_path: Path,
) -> None:
    """An edited estimator whose recorded sizes no longer match coefs_ reads,
    with each disagreement named; a real one reads without a word."""
    estimator = _mlp("classifier")
    path = tmp_path / "mlp.pkl"
    path.write_bytes(pickle.dumps(estimator))
    with read(path) as model:
        assert not [w for w in model.warnings if "scikit-learn MLP" in w]
    estimator.hidden_layer_sizes = (9, 5)  # not refitted: coefs_ stay (4, 6)...
    path.write_bytes(pickle.dumps(estimator))
    with read(path) as model:
        found = [w for w in model.warnings if "scikit-learn MLP" in w]
        assert any("layer_0/kernel has shape [4, 6]" in w for w in found), found
        assert any("[4, 9]" in w for w in found), found


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
def test_other_sklearn_estimators_are_refused_by_class_with_a_way_out(
    tmp_path: Path, run_cli: Any
) -> None:
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import StandardScaler

    x = np.random.default_rng(0).normal(size=(20, 3))
    y = (x[:, 0] > 0).astype(int)
    cases = {
        "LogisticRegression": LogisticRegression().fit(x, y),
        "Pipeline, StandardScaler": Pipeline(
            [("scale", StandardScaler()), ("mlp", _mlp("classifier"))]
        ),
    }
    for classes, estimator in cases.items():
        path = tmp_path / "estimator.joblib"
        joblib.dump(estimator, path, compress=3)
        result = run_cli("inspect", path)
        assert result.exit_code == 2, result.stderr
        assert len(result.stderr.strip().splitlines()) == 1
        assert f"scikit-learn {classes}:" in result.stderr
        assert "np.savez" in result.stderr


def check_sklearn_model(model: Model, estimator: Any) -> None:
    import sklearn

    with model:
        assert model.recognised == "sklearn-mlp"
        assert model.producer == {
            "name": "scikit-learn",
            "version": sklearn.__version__,
        }
        arch = model.architecture
        assert arch is not None and arch.framework == "sklearn"
        expected_total = sum(c.size for c in estimator.coefs_) + sum(
            b.size for b in estimator.intercepts_
        )
        assert model.totals() == (expected_total, expected_total, 0)
        assert [layer.name for layer in arch.layers] == [
            f"layer_{i}" for i in range(len(estimator.coefs_))
        ]
        assert arch.layers[-1].config["activation"] == estimator.out_activation_
        for index, (kernel, bias) in enumerate(
            zip(estimator.coefs_, estimator.intercepts_)
        ):
            assert_same_array(model.tensor(f"layer_{index}/kernel"), kernel)
            assert_same_array(model.tensor(f"layer_{index}/bias"), bias)
        optimizer = model.by_role(Role.OPTIMIZER)
        assert optimizer, "optimizer moments are carried"
        assert all(
            t.role is not Role.WEIGHT
            for t in model.tensors[2 * len(estimator.coefs_) :]
        )
        config = arch.config
        assert config["hidden_layer_sizes"] == list(estimator.hidden_layer_sizes)
        assert config["n_features_in_"] == estimator.n_features_in_
        if hasattr(estimator, "classes_"):
            assert config["classes_"] == estimator.classes_.tolist()
        assert config["_sklearn_version"] == sklearn.__version__


# -- writers


def random_model(seed: int = 0) -> Model:
    rng = np.random.default_rng(seed)
    tensors = []
    for index, name in enumerate(dtypes.DTYPE_NAMES):
        raw = rng.integers(0, 256, size=6 * dtypes.itemsize(name), dtype="uint8")
        array = raw.view(dtypes.numpy_dtype(name)).reshape(2, 3)
        role = [Role.WEIGHT, Role.OPTIMIZER, Role.STATE][index % 3]
        tensors.append(
            Tensor(
                f"layer_{index}/{name}", name, (2, 3), role, source=ArraySource(array)
            )
        )
    return Model(tensors=tuple(tensors), metadata={"note": "x", "n": [1, 2.5, None]})


def assert_round_trip(model: Model, back: Model) -> None:
    assert back.recognised == "modelconv"
    assert [(t.name, t.dtype, t.shape, t.role) for t in back.tensors] == [
        (t.name, t.dtype, t.shape, t.role) for t in model.tensors
    ]
    for want, got in zip(model.tensors, back.tensors):
        assert b"".join(bytes(p) for p in got.iter_bytes()) == b"".join(
            bytes(p) for p in want.iter_bytes()
        ), want.name
    for key, value in model.metadata.items():
        assert back.metadata[key] == value, key


def test_pickle_writer_loads_with_pickle_and_round_trips(tmp_path: Path) -> None:
    model = random_model()
    path = tmp_path / "out.pkl"
    pickles.write(model, path, WriteOptions())
    loaded = pickle.loads(path.read_bytes())
    assert loaded["modelconv"] == 1
    for tensor in model.tensors:
        array = loaded["arrays"][tensor.name]
        want = dtypes.storage_dtype(tensor.dtype)
        assert array.dtype == want and array.flags.writeable
        assert array.tobytes() == b"".join(bytes(p) for p in tensor.iter_bytes())
    assert loaded["arrays"]["layer_10/bfloat16"].dtype == np.dtype("<u2")
    with read(path) as back:
        assert_round_trip(model, back)
        assert back.tensor("layer_10/bfloat16").read().dtype.name == "bfloat16"


@pytest.mark.parametrize("compress", [None, *COMPRESSORS])
def test_joblib_writer_loads_with_joblib_and_round_trips(
    compress: str | None, tmp_path: Path
) -> None:
    model = random_model(1)
    path = tmp_path / "out.joblib"
    joblibfmt.write(
        model, path, WriteOptions(compress=(compress, 1) if compress else None)
    )
    loaded = joblib.load(path)
    for tensor in model.tensors:
        assert loaded["arrays"][tensor.name].tobytes() == b"".join(
            bytes(p) for p in tensor.iter_bytes()
        )
    assert detect(path).name == "joblib"
    with joblibfmt.read(path, ReadOptions()) as back:
        assert_round_trip(model, back)


def test_uncompressed_joblib_arrays_are_aligned_and_mappable(tmp_path: Path) -> None:
    path = tmp_path / "out.joblib"
    joblibfmt.write(random_model(), path, WriteOptions())
    mapped = joblib.load(path, mmap_mode="r")
    assert isinstance(mapped["arrays"]["layer_5/uint8"], np.memmap)


def test_destination_suffix_implies_compression(tmp_path: Path) -> None:
    assert compression_for(".m.joblib.gz.modelconv-x1y2") == "gzip"
    assert compression_for("m.joblib.lz4") == "lz4"
    assert compression_for(".m.joblib.modelconv-abc") is None
    path = tmp_path / ".model.joblib.bz2.modelconv-abc123"
    joblibfmt.write(random_model(), path, WriteOptions())
    assert path.read_bytes()[:3] == b"BZh"


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
def test_sklearn_model_round_trips_through_pickle_writer(tmp_path: Path) -> None:
    source = tmp_path / "mlp.pkl"
    source.write_bytes(pickle.dumps(_mlp("classifier")))
    with read(source) as model:
        pickles.write(model, tmp_path / "copy.pkl", WriteOptions())
        with read(tmp_path / "copy.pkl") as back:
            assert back.architecture is not None
            assert back.architecture.framework == "sklearn"
            assert back.totals() == model.totals()
            assert_round_trip(model, back)


def test_convert_through_the_api_to_npz_and_hdf5(tmp_path: Path) -> None:
    from modelconv.api import convert, load

    source = tmp_path / "arrays.joblib"
    joblib.dump(DATA, source, compress=("xz", 3))
    truth = joblib.load(source)
    for target in ("out.npz", "out.h5", "out.pkl", "out.joblib.lz4"):
        convert(source, tmp_path / target)
        with load(tmp_path / target) as model:
            expected = dict(walk(truth))
            for name, array in expected.items():
                assert_same_array(model.tensor(name), array)


def test_cli_convert_with_compress_level(tmp_path: Path, run_cli: Any) -> None:
    source = tmp_path / "arrays.pkl"
    source.write_bytes(pickle.dumps(DATA, protocol=4))
    result = run_cli("convert", source, tmp_path / "out.joblib", "--compress", "lz4:3")
    assert result.exit_code == 0, result.stderr
    assert (tmp_path / "out.joblib").read_bytes()[:4] == b"\x04\x22\x4d\x18"
    truth = joblib.load(tmp_path / "out.joblib")
    for name, array in walk(DATA):
        assert truth["arrays"][name].tobytes() == array.astype(
            array.dtype.newbyteorder("<")
        ).tobytes(order="C")


# -- hypothesis


NAMES = st.text(
    alphabet=st.characters(blacklist_categories=("Cs",)), min_size=1, max_size=12
)


@st.composite
def models(draw: Any) -> Model:
    count = draw(st.integers(0, 5))
    names = draw(st.lists(NAMES, min_size=count, max_size=count, unique=True))
    tensors = []
    for name in names:
        dtype = draw(st.sampled_from(dtypes.DTYPE_NAMES))
        shape = tuple(draw(st.lists(st.integers(0, 4), max_size=3)))
        size = int(np.prod(shape)) * dtypes.itemsize(dtype)
        raw = draw(st.binary(min_size=size, max_size=size))
        array = np.frombuffer(raw, dtype=dtypes.numpy_dtype(dtype)).reshape(shape)
        role = draw(st.sampled_from(list(Role)))
        tensors.append(Tensor(name, dtype, shape, role, source=ArraySource(array)))
    return Model(tensors=tuple(tensors), metadata={"note": draw(NAMES)})


@settings(suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(model=models(), compress=st.sampled_from([None, *COMPRESSORS]))
def test_random_models_round_trip_bit_exact(
    model: Model, compress: str | None, tmp_path: Path
) -> None:
    pkl = tmp_path / "h.pkl"
    pickles.write(model, pkl, WriteOptions())
    with read(pkl) as back:
        assert_round_trip(model, back)
    jl = tmp_path / "h.joblib"
    joblibfmt.write(
        model, jl, WriteOptions(compress=(compress, 1) if compress else None)
    )
    with joblibfmt.read(jl, ReadOptions()) as back:
        assert_round_trip(model, back)


def _valid_files() -> dict[str, bytes]:
    files = {
        "p2": pickle.dumps(DATA, protocol=2),
        "p5": pickle.dumps(DATA, protocol=5),
    }
    sink = io.BytesIO()
    joblib.dump(DATA, sink)
    files["joblib"] = sink.getvalue()
    sink = io.BytesIO()
    joblib.dump(DATA, sink, compress=("zlib", 1))
    files["joblib-zlib"] = sink.getvalue()
    buffer = io.BytesIO()
    write_document(random_model(), buffer, joblib_arrays=True)
    files["modelconv"] = buffer.getvalue()
    return files


VALID = _valid_files()


@settings(suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    which=st.sampled_from(sorted(VALID)),
    edits=st.lists(
        st.tuples(st.integers(0, 2**20), st.integers(0, 255)), min_size=1, max_size=6
    ),
    cut=st.one_of(st.none(), st.integers(0, 2**20)),
)
def test_random_mutations_raise_only_modelconv_errors(
    which: str, edits: list[tuple[int, int]], cut: int | None, tmp_path: Path
) -> None:
    data = bytearray(VALID[which])
    for offset, value in edits:
        data[offset % len(data)] = value
    if cut is not None:
        data = data[: cut % (len(data) + 1)]
    path = tmp_path / "mutant.pkl"
    path.write_bytes(bytes(data))
    try:
        with pickles.read(path, ReadOptions(max_bytes=2**26)) as model:
            for tensor in model.tensors:
                tensor.read()
                for _ in tensor.iter_chunks(64):
                    pass
    except ModelconvError:
        pass


# -- fixtures written by the real libraries (fixtures/make_fixtures.py)


def fixture(fixtures_dir: Path, name: str) -> Path:
    path = fixtures_dir / name
    if not path.exists():
        pytest.skip(f"fixture {name} is missing; run fixtures/make_fixtures.py")
    return path


ARRAY_FIXTURES = [
    "arrays_p0.pkl",
    "arrays_p2.pkl",
    "arrays_p4.pkl",
    "arrays_p5.pkl",
    "arrays_numpy1_p2.pkl",
    "arrays_numpy1_p4.pkl",
    "arrays.joblib",
    "arrays.joblib.z",
    "arrays.joblib.gz",
    "arrays.joblib.bz2",
    "arrays.joblib.xz",
    "arrays.joblib.lzma",
    "arrays.joblib.lz4",
    "arrays_zlib9.joblib",
    "layer_list.joblib",
    "fortran.joblib",
]


@pytest.mark.parametrize("name", ARRAY_FIXTURES)
def test_array_fixtures_read_exactly(name: str, fixtures_dir: Path) -> None:
    path = fixture(fixtures_dir, name)
    truth = joblib.load(path)  # trusted fixture; joblib.load also opens pickles
    with read(path) as model:
        assert model.recognised == "arrays"
        assert_model_matches(model, truth)


@pytest.mark.filterwarnings("ignore::UserWarning")
@pytest.mark.parametrize(
    "name",
    [
        "sk_mlp_classifier.pkl",
        "sk_mlp_classifier.joblib",
        "sk_mlp_regressor.pkl",
        "sk_mlp_regressor.joblib",
    ],
)
def test_sklearn_fixtures(name: str, fixtures_dir: Path) -> None:
    path = fixture(fixtures_dir, name)
    check_sklearn_model(read(path), joblib.load(path))


@pytest.mark.keras
@pytest.mark.parametrize(
    "name", ["k3_iris_mlp.pkl", "k3_iris_mlp.joblib", "tfk_iris_mlp.pkl"]
)
def test_pickled_keras_models(name: str, fixtures_dir: Path, tmp_path: Path) -> None:
    pytest.importorskip("modelconv.formats.keras_zip")
    path = fixture(fixtures_dir, name)
    keras_path = fixtures_dir / (name.split(".")[0] + ".keras")
    with read(path) as model:
        assert model.recognised == "keras-model"
        assert model.flavour == "keras-model"
        assert model.architecture is not None
        if keras_path.exists():
            from modelconv.formats import keras_zip

            with keras_zip.read(keras_path, ReadOptions()) as reference:
                assert model.names == reference.names
                assert model.totals() == reference.totals()
                for want, got in zip(reference.tensors, model.tensors):
                    assert np.array_equal(want.read(), got.read(), equal_nan=True)


def test_read_errors_are_modelconv_errors(tmp_path: Path) -> None:
    path = tmp_path / "empty.pkl"
    path.write_bytes(b"\x80\x04")
    with pytest.raises(InputError, match="truncated|ends"):
        read(path)


@pytest.mark.keras
@pytest.mark.parametrize(
    "name, drop",
    [
        ("k3_iris_mlp.joblib", ()),
        ("k3_iris_mlp.pkl", ()),
        ("tfk_iris_mlp.pkl", ("state",)),
    ],
)
def test_pickled_keras_model_converts_to_h5_with_same_predictions(
    name: str, drop: tuple[str, ...], fixtures_dir: Path, tmp_path: Path, request: Any
) -> None:
    pytest.importorskip("modelconv.formats.keras_zip")
    from modelconv.api import convert

    path = fixture(fixtures_dir, name)
    io_path = fixture(fixtures_dir, name.split(".")[0] + ".io.npz")
    keras = request.getfixturevalue("keras3" if name.startswith("k3") else "tf_keras")
    target = tmp_path / "model.h5"
    convert(path, target, drop=drop)
    data = np.load(io_path)
    model = keras.models.load_model(str(target), compile=False)
    (want,) = local_outputs(name.split(".")[0])  # Keras' own, on this CPU
    assert np.array_equal(model.predict(data["x"], verbose=0), want)


def _probe(path: Path) -> Any:
    from modelconv.formats import make_probe

    return make_probe(path)


@pytest.mark.parametrize(
    "content",
    [
        b"hello world, this is a text file\n" * 10,
        b'{"class_name": "Sequential"}',
        b"(not a pickle at all)" * 20,
        b"\x89HDF\r\n\x1a\n" + b"\0" * 100,
        b"PK\x03\x04" + b"\0" * 100,
        b"\x1f\x8b" + b"\0" * 100,
        b"x\x9c" + b"\0" * 100,
    ],
)
def test_sniffers_do_not_claim_other_content(content: bytes, tmp_path: Path) -> None:
    path = tmp_path / "file.bin"
    path.write_bytes(content)
    probe = _probe(path)
    assert pickles.sniff(probe) == 0
    assert joblibfmt.sniff(probe) == 0


@pytest.mark.parametrize("protocol", range(6))
def test_pickles_of_every_protocol_are_detected(protocol: int, tmp_path: Path) -> None:
    path = tmp_path / "model.bin"
    path.write_bytes(pickle.dumps(DATA, protocol=protocol))
    assert detect(path).name == "pickle"


def test_joblib_stream_named_pkl_still_reads(tmp_path: Path) -> None:
    path = tmp_path / "model.pkl"
    joblib.dump(DATA, path)
    info = detect(path)
    assert info.name in ("pickle", "joblib")
    with info.load().read(path, ReadOptions()) as model:
        assert_model_matches(model, DATA)


def test_lz4_missing_is_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    from modelconv.errors import UnsupportedError

    path = tmp_path / "a.joblib"
    joblib.dump(DATA, path, compress=("lz4", 1))
    monkeypatch.setitem(sys.modules, "lz4", None)
    monkeypatch.setitem(sys.modules, "lz4.frame", None)
    with pytest.raises(UnsupportedError, match="'lz4' package"):
        joblibfmt.read(path, ReadOptions())


@pytest.mark.keras
@pytest.mark.parametrize("target", ["model.pkl", "model.joblib.gz"])
def test_keras_flavour_loads_as_a_live_keras_model(
    target: str, fixtures_dir: Path, tmp_path: Path, keras3: Any
) -> None:
    pytest.importorskip("modelconv.formats.keras_zip")
    from modelconv.api import convert

    source = fixture(fixtures_dir, "k3_iris_mlp.keras")
    data = np.load(fixture(fixtures_dir, "k3_iris_mlp.io.npz"))
    convert(source, tmp_path / target, flavour="keras")
    with read(tmp_path / target) as model:
        assert model.recognised == "keras-model"
    live = joblib.load(tmp_path / target)  # our own output: trusted here
    assert isinstance(live, keras3.Model)
    (want,) = local_outputs("k3_iris_mlp")
    assert np.array_equal(live.predict(data["x"], verbose=0), want)


def test_an_array_under_several_keys_is_a_tensor_under_each(tmp_path: Path) -> None:
    """np.savez of this dict keeps every key; so must reading the pickle."""
    shared = np.arange(3, dtype=np.float32)
    inner = {"w": np.ones(2, np.int8)}
    path = tmp_path / "shared.pkl"
    data = {"x": shared, "y": shared, "z": [shared, shared], "c1": inner, "c2": inner}
    path.write_bytes(pickle.dumps(data, protocol=4))
    with pickles.read(path, ReadOptions()) as model:
        assert model.names == ("x", "y", "z/0", "z/1", "c1/w")
        for name in ("x", "y", "z/0", "z/1"):
            assert model.tensor(name).read().tobytes() == shared.tobytes()
        # A shared container is walked once; the other path is recorded.
        assert model.metadata["values"]["c2"] == {"same_as": "c1"}
        assert any("'c2' is the same container as 'c1'" in w for w in model.warnings)


def test_integers_too_long_for_json_are_kept_as_hex(tmp_path: Path) -> None:
    """Metadata integers longer than any JSON reader takes (modelconv's
    refuses over 100 digits) are kept exactly as tagged hex text, so the
    model converts to modelconv's own formats and reads back."""
    import modelconv

    path = tmp_path / "big.pkl"
    big, huge = 10**400, -(10**700)
    path.write_bytes(pickle.dumps({"w": np.ones(2, "f4"), "big": big, "huge": huge}))
    with read(path) as model:
        values = model.metadata["values"]
        assert values["big"] == {"int": hex(big)}
        assert int(values["huge"]["int"], 16) == huge
        assert values == {"big": {"int": hex(big)}, "huge": {"int": hex(huge)}}
        for suffix in (".json", ".npz", ".h5"):
            modelconv.save(model, tmp_path / f"out{suffix}")
