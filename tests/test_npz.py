"""NPZ: plain numpy archives read exactly; modelconv NPZ round-trips bit-exact."""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from modelconv import dtypes
from modelconv.errors import UsageError
from modelconv.formats import make_probe, npz
from modelconv.formats.base import ReadOptions, WriteOptions
from modelconv.model import Architecture, ArraySource, Model, Role, Tensor

try:  # tests/ as a package or as a plain folder on sys.path
    from .strategies import models
except ImportError:
    from strategies import models  # type: ignore[no-redef]

SAMPLES = {
    "f32": np.arange(12, dtype=np.float32).reshape(3, 4),
    "f64_fortran": np.asfortranarray(np.arange(24.0).reshape(2, 3, 4)),
    "big_endian": np.arange(6, dtype=">i4").reshape(2, 3),
    "scalar": np.array(-0.0, dtype=np.float64),
    "empty": np.zeros((0, 5), dtype=np.int16),
    "flags": np.array([True, False, True]),
    "c128": np.array([1 + 2j, np.nan + 0j], dtype=np.complex128),
    "u8": np.arange(200, dtype=np.uint8),
    "f16": np.array([np.inf, -np.inf, 1.5], dtype=np.float16),
    "nested/name": np.ones(3, dtype=np.int64),
}


def _src(value: object) -> ArraySource:
    return ArraySource(np.asarray(value))


def _le_bytes(array: np.ndarray) -> bytes:
    return np.ascontiguousarray(dtypes.to_little_endian(array)).tobytes()


def _check_against_np_load(path: Path) -> None:
    model = npz.read(path, ReadOptions())
    try:
        assert model.format == "npz" and model.flavour == "arrays"
        with np.load(path, allow_pickle=False) as reference:
            assert list(model.names) == list(reference.files)
            for tensor in model.tensors:
                expected = reference[tensor.name]
                assert tensor.dtype == dtypes.dtype_name(expected.dtype)
                assert tensor.shape == expected.shape
                assert tensor.source_names == (tensor.name + ".npy",)
                assert _le_bytes(tensor.read()) == _le_bytes(expected)
                pieces = b"".join(bytes(p) for p in tensor.iter_bytes(16))
                assert pieces == _le_bytes(expected)
    finally:
        model.close()


@pytest.mark.parametrize("saver", [np.savez, np.savez_compressed])
def test_plain_archives_match_np_load(tmp_path: Path, saver: object) -> None:
    path = tmp_path / "plain.npz"
    saver(path, **SAMPLES)  # type: ignore[operator]
    _check_against_np_load(path)
    assert npz.sniff(make_probe(path)) == 100


@pytest.mark.parametrize("name", ["plain.npz", "plain_compressed.npz"])
def test_fixture_archives(fixtures_dir: Path, name: str) -> None:
    path = fixtures_dir / name
    if not path.exists():
        pytest.skip(f"fixture {name} not generated yet (fixtures/make_fixtures.py)")
    _check_against_np_load(path)


@pytest.mark.parametrize("version", [(1, 0), (2, 0), (3, 0)])
def test_npy_format_versions(tmp_path: Path, version: tuple[int, int]) -> None:
    path = tmp_path / "v.npz"
    array = np.arange(10, dtype="<f4").reshape(2, 5)
    buffer = io.BytesIO()
    np.lib.format.write_array(buffer, array, version=version)
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("é.npy", buffer.getvalue())
    model = npz.read(path, ReadOptions())
    assert model.names == ("é",)
    np.testing.assert_array_equal(model.tensors[0].read(), array)
    model.close()


def test_tensors_are_lazy(tmp_path: Path) -> None:
    """Listing reads headers only: data damaged later shows only on read."""
    path = tmp_path / "lazy.npz"
    np.savez(path, a=np.arange(1000, dtype="<i8"))
    model = npz.read(path, ReadOptions())
    with path.open("r+b") as handle:  # damage the data after listing
        data = handle.read()
        offset = data.index(np.arange(1000, dtype="<i8").tobytes()) + 800
        handle.seek(offset)
        handle.write(b"\xff" * 8)
    assert model.tensors[0].shape == (1000,)
    with pytest.raises(Exception, match="CRC"):
        model.tensors[0].read()
    model.close()


def _model_bytes(model: Model) -> dict[str, bytes]:
    return {t.name: b"".join(bytes(p) for p in t.iter_bytes()) for t in model.tensors}


def _round_trip(model: Model, path: Path, options: WriteOptions) -> Model:
    npz.write(model, path, options)
    return npz.read(path, ReadOptions())


def _check_np_load(path: Path, model: Model) -> None:
    """Plain np.load (no pickle) gives every tensor's bytes under its key."""
    with np.load(path, allow_pickle=False) as loaded:
        header = json.loads(loaded["__modelconv__"].tobytes())
        assert len(loaded.files) == len(model.tensors) + 1
        for entry, tensor in zip(header["tensors"], model.tensors):
            assert entry["name"] == tensor.name
            array = loaded[entry.get("key", entry["name"])]
            assert array.dtype == dtypes.storage_dtype(tensor.dtype)
            assert array.shape == tensor.shape
            expected = b"".join(bytes(p) for p in tensor.iter_bytes())
            assert array.tobytes() == expected


@given(model=models(), compress=st.sampled_from([None, ("deflate", 1), ("zlib", None)]))
def test_modelconv_round_trip(
    tmp_path_factory: pytest.TempPathFactory,
    model: Model,
    compress: tuple[str, int | None] | None,
) -> None:
    path = tmp_path_factory.mktemp("rt") / "m.npz"
    back = _round_trip(model, path, WriteOptions(compress=compress))
    try:
        assert back.flavour == "modelconv"
        assert back.names == model.names
        for a, b in zip(model.tensors, back.tensors):
            assert (a.dtype, a.shape, a.role, a.source_names) == (
                b.dtype,
                b.shape,
                b.role,
                b.source_names,
            )
            array = b.read()
            assert array.dtype == dtypes.numpy_dtype(a.dtype)
            assert array.shape == a.shape
        assert _model_bytes(back) == _model_bytes(model)
        assert back.metadata["note"] == "hypothesis"
        _check_np_load(path, model)
        assert npz.sniff(make_probe(path)) == 100
    finally:
        back.close()


def test_names_needing_escapes(tmp_path: Path) -> None:
    names = [
        "..",
        "/abs",
        "a//b",
        "",
        "__modelconv__",
        "t00001",
        "w.npy",
        "w",
        "c:/x",
        "tab\there",
        "back\\slash",
        "dense/kernel",
        "层/é",
        "x" * 2000,
    ]
    tensors = [
        Tensor(n, "float32", (1,), source=ArraySource(np.array([i], np.float32)))
        for i, n in enumerate(names)
    ]
    model = Model(tensors=tuple(tensors))
    keys = npz.member_keys(model.names)
    assert keys["dense/kernel"] == "dense/kernel" and keys["层/é"] == "层/é"
    assert keys["w"] == "w" and keys["w.npy"] != "w.npy"
    assert keys["t00001"] != "t00001" and keys["__modelconv__"] != "__modelconv__"
    assert len(set(keys.values())) == len(names)
    back = _round_trip(model, tmp_path / "names.npz", WriteOptions())
    assert back.names == tuple(names)
    assert [float(t.read()[0]) for t in back.tensors] == list(range(len(names)))
    back.close()
    _check_np_load(tmp_path / "names.npz", model)


def test_architecture_metadata_and_roles_survive(tmp_path: Path) -> None:
    config = {"class_name": "Sequential", "config": {"name": "s", "layers": []}}
    import ml_dtypes

    tensors = (
        Tensor(
            "dense/kernel",
            "bfloat16",
            (2, 2),
            Role.WEIGHT,
            ("layers/dense/vars/0",),
            ArraySource(np.array([[1, -0.0], [np.nan, 3]], dtype=ml_dtypes.bfloat16)),
        ),
        Tensor("optimizer/0", "int64", (), Role.OPTIMIZER, (), _src(np.int64(7))),
        Tensor("seed", "uint32", (2,), Role.STATE, (), _src(np.uint32([1, 2]))),
    )
    model = Model(
        tensors=tensors,
        architecture=Architecture("keras", config, form=3),
        metadata={"producer": {"name": "keras", "version": "3.15.1"}, "x": [1.5]},
        format="keras",
        flavour="keras3",
    )
    back = _round_trip(model, tmp_path / "arch.npz", WriteOptions())
    assert back.architecture is not None
    assert back.architecture.config == config
    assert back.metadata["producer"] == {"name": "keras", "version": "3.15.1"}
    assert back.metadata["source"] == {"format": "keras", "flavour": "keras3"}
    assert [t.role for t in back.tensors] == [Role.WEIGHT, Role.OPTIMIZER, Role.STATE]
    assert back.tensors[0].source_names == ("layers/dense/vars/0",)
    assert back.tensors[0].read().dtype == ml_dtypes.bfloat16
    assert _model_bytes(back) == _model_bytes(model)
    back.close()


def test_writer_stores_by_default_and_deflates_on_request(tmp_path: Path) -> None:
    array = np.zeros(10000, np.float32)
    model = Model(tensors=(Tensor("z", "float32", (10000,), source=_src(array)),))
    npz.write(model, tmp_path / "s.npz", WriteOptions())
    npz.write(model, tmp_path / "d.npz", WriteOptions(compress=("deflate", 9)))
    with zipfile.ZipFile(tmp_path / "s.npz") as stored:
        assert {i.compress_type for i in stored.infolist()} == {zipfile.ZIP_STORED}
    with zipfile.ZipFile(tmp_path / "d.npz") as deflated:
        assert {i.compress_type for i in deflated.infolist()} == {zipfile.ZIP_DEFLATED}
    assert (tmp_path / "d.npz").stat().st_size < 2000
    with pytest.raises(UsageError, match="deflate"):
        npz.write(model, tmp_path / "x.npz", WriteOptions(compress=("lz4", None)))
    with pytest.raises(UsageError, match="0 to 9"):
        npz.write(model, tmp_path / "x.npz", WriteOptions(compress=("zlib", 12)))
    assert npz.losses(model, WriteOptions()) == []


def test_writer_is_deterministic(tmp_path: Path) -> None:
    model = Model(tensors=(Tensor("a", "int8", (3,), source=_src(np.int8([1, 2, 3]))),))
    npz.write(model, tmp_path / "1.npz", WriteOptions())
    npz.write(model, tmp_path / "2.npz", WriteOptions())
    assert (tmp_path / "1.npz").read_bytes() == (tmp_path / "2.npz").read_bytes()


def test_writer_streams_chunks(tmp_path: Path) -> None:
    """The writer asks for chunks, never for the whole array."""

    class ChunksOnly:
        def read(self) -> np.ndarray:
            raise AssertionError("writer called read() on a whole tensor")

        def iter_chunks(self, max_bytes: int):  # type: ignore[no-untyped-def]
            for start in range(0, 100, 10):
                yield np.arange(start, start + 10, dtype=np.float64)

    model = Model(tensors=(Tensor("big", "float64", (10, 10), source=ChunksOnly()),))
    npz.write(model, tmp_path / "c.npz", WriteOptions())
    with np.load(tmp_path / "c.npz") as loaded:
        np.testing.assert_array_equal(loaded["big"], np.arange(100.0).reshape(10, 10))


def test_extra_members_are_kept_and_flagged(tmp_path: Path) -> None:
    model = Model(tensors=(Tensor("a", "int8", (1,), source=_src(np.int8([5]))),))
    path = tmp_path / "e.npz"
    npz.write(model, path, WriteOptions())
    buffer = io.BytesIO()
    np.save(buffer, np.arange(3))
    with zipfile.ZipFile(path, "a") as archive:
        archive.writestr("added.npy", buffer.getvalue())
    back = npz.read(path, ReadOptions())
    assert back.names == ("a", "added")
    assert any("added.npy" in w for w in back.warnings)
    back.close()


def test_sniff(tmp_path: Path) -> None:
    keras_like = tmp_path / "m.keras"
    with zipfile.ZipFile(keras_like, "w") as archive:
        archive.writestr("config.json", "{}")
        archive.writestr("model.weights.h5", b"")
        archive.writestr("x.npy", b"")
    assert npz.sniff(make_probe(keras_like)) == 0
    empty = tmp_path / "e.npz"
    np.savez(empty)
    assert npz.sniff(make_probe(empty)) == 50
    assert npz.read(empty, ReadOptions()).tensors == ()


def _manifest_npz(fixtures_dir: Path) -> list[dict[str, object]]:
    manifest = fixtures_dir / "MANIFEST.json"
    if not manifest.exists():
        return []
    return [e for e in json.loads(manifest.read_text()) if e.get("kind") == "npz"]


def test_every_npz_fixture_matches_manifest(fixtures_dir: Path) -> None:
    import hashlib

    entries = _manifest_npz(fixtures_dir)
    if not entries:
        pytest.skip("no npz fixtures yet (fixtures/make_fixtures.py)")
    for entry in entries:
        path = fixtures_dir / str(entry["file"])
        model = npz.read(path, ReadOptions())
        weights = entry["weights"]
        assert isinstance(weights, dict)
        numeric = {k for k, r in weights.items() if r["dtype"] in dtypes.DTYPE_NAMES}
        assert sorted(model.names) == sorted(numeric), entry["file"]
        for key in set(weights) - numeric:  # text arrays go to metadata
            assert len(model.metadata[npz.TEXT_KEY][key]["values"]) > 0
        for tensor in model.tensors:
            record = weights[tensor.name]
            data = b"".join(bytes(p) for p in tensor.iter_bytes())
            assert hashlib.sha256(data).hexdigest() == record["sha256"]
            assert (tensor.dtype, list(tensor.shape)) == (
                record["dtype"],
                record["shape"],
            )
        model.close()


def test_text_members_kept_as_metadata(tmp_path: Path) -> None:
    path = tmp_path / "labels.npz"
    np.savez(path, w=np.ones(2), labels=np.array(["cat", "dög"]), raw=np.bytes_(b"ab"))
    model = npz.read(path, ReadOptions())
    assert model.names == ("w",)
    kept = model.metadata[npz.TEXT_KEY]
    assert kept["labels"]["values"] == ["cat", "dög"]
    assert kept["raw"]["values"] == "ab"
    assert sum("holds text" in w for w in model.warnings) == 2
    model.close()
