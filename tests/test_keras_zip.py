""".keras archives: real ones written by Keras 3 and tf_keras, and hostile ones.

Each tensor's bytes must equal what Keras itself holds for that variable,
under the canonical ``layer/weight`` name; optimizer and metric state get
their roles.
"""

from __future__ import annotations

import hashlib
import io
import json
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import pytest

from modelconv import dtypes
from modelconv.errors import (
    HostileInputError,
    InputError,
    ModelconvError,
    UnsupportedError,
)
from modelconv.formats import keras_zip, make_probe
from modelconv.formats.base import ReadOptions, WriteOptions
from modelconv.model import Model, Role


def _bytes(array: Any) -> bytes:
    array = np.asarray(array)
    return np.ascontiguousarray(dtypes.to_little_endian(array)).tobytes()


def _read(path: Path) -> Model:
    return keras_zip.read(path, ReadOptions())


def _short(variable: Any) -> str:
    # Keras 3 Variable.name is short ("kernel"); tf_keras's is "dense/kernel:0".
    return variable.name.split("/")[-1].split(":")[0]


def expected_weights(layer: Any, prefix: str = "") -> Iterator[tuple[str, Any]]:
    """(canonical name, variable) for a Keras layer, as COMMON.md defines them."""
    sublayers = getattr(layer, "layers", None)
    if sublayers is not None:
        for sub in sublayers:
            yield from expected_weights(sub, prefix)
        return
    if type(layer).__name__ == "Bidirectional":
        for half in (layer.forward_layer, layer.backward_layer):
            for variable in half.weights:
                name = f"{prefix}{layer.name}/{half.name}/{_short(variable)}"
                yield name, variable
        return
    for variable in layer.weights:
        if type(layer).__name__ == "MultiHeadAttention":  # query/kernel, ...
            # Keras 3 has Variable.path; tf_keras names are "mha/query/kernel:0"
            sub = getattr(variable, "path", variable.name).split("/")[-2]
            yield f"{prefix}{layer.name}/{sub}/{_short(variable)}", variable
            continue
        yield f"{prefix}{layer.name}/{_short(variable)}", variable


def _expected(model: Any) -> dict[str, bytes]:
    result = {}
    for layer in model.layers:
        if getattr(layer, "layers", None) is not None:
            items = expected_weights(layer, f"{layer.name}/")
        else:
            items = expected_weights(layer)
        for name, variable in items:
            result[name] = _bytes(variable.numpy())
    return result


def _check_against_keras(path: Path, model: Any) -> Model:
    read = _read(path)
    weights = {t.name: _bytes(t.read()) for t in read.by_role(Role.WEIGHT)}
    assert weights == _expected(model)
    optimizer = getattr(model, "optimizer", None)
    if optimizer is not None and optimizer.variables:
        saved = [_bytes(t.read()) for t in read.by_role(Role.OPTIMIZER)]
        assert saved == [_bytes(v.numpy()) for v in optimizer.variables]
    for tensor in read.tensors:
        assert tensor.source_names and tensor.source_names[0] in _h5_paths(path)
        chunks = b"".join(bytes(p) for p in tensor.iter_bytes(7))
        assert chunks == _bytes(tensor.read())
    return read


def _h5_paths(path: Path) -> set[str]:
    with zipfile.ZipFile(path) as archive:
        data = archive.read("model.weights.h5")
    paths: set[str] = set()
    with h5py.File(io.BytesIO(data), "r") as h5:
        h5.visititems(
            lambda name, obj: paths.add(name) if isinstance(obj, h5py.Dataset) else None
        )
    return paths


def _zoo(keras: Any) -> dict[str, Any]:
    """Small models covering the layer families and nesting forms."""
    layers = keras.layers
    keras.utils.set_random_seed(7)
    inputs = keras.Input((6, 5))
    x = layers.Conv1D(4, 3, name="conv")(inputs)
    x = layers.BatchNormalization()(x)
    x = layers.LSTM(3, return_sequences=True)(x)
    x = layers.Bidirectional(layers.GRU(2))(x)
    x = layers.Dense(3)(x)
    x = layers.Dense(2, use_bias=False)(x)
    functional = keras.Model(inputs, x, name="zoo")
    functional.compile("adam", "mse")
    # Build the optimizer's slots and fill them with distinct values, which
    # costs far less than a training step yet gives every slot its own bytes.
    functional.optimizer.build(functional.trainable_variables)
    rng = np.random.default_rng(7)
    for variable in functional.optimizer.variables:
        current = np.asarray(variable.numpy())
        variable.assign(rng.integers(1, 100, current.shape).astype(current.dtype))

    inner = keras.Sequential(
        [keras.Input((4,)), layers.Dense(3, name="inner_dense")], name="inner"
    )
    nested = keras.Sequential(
        [
            keras.Input((4,)),
            inner,
            layers.Dropout(0.1),
            layers.LayerNormalization(),
            layers.Dense(2),
        ]
    )
    tokens = keras.Sequential(
        [
            keras.Input((5,), dtype="int32"),
            layers.Embedding(10, 4),
            layers.SimpleRNN(3),
            layers.Dense(1, dtype="bfloat16", name="out16"),
        ]
    )
    queries = keras.Input((5, 8))
    attended = layers.MultiHeadAttention(2, 4, name="mha")(queries, queries)
    attention = keras.Model(queries, layers.Dense(2)(attended))
    for variable in attention.weights:  # distinct bytes for every weight
        current = np.asarray(variable.numpy())
        variable.assign(rng.random(current.shape).astype(current.dtype))
    return {
        "functional": functional,
        "nested": nested,
        "tokens": tokens,
        "attention": attention,
    }


@pytest.mark.keras
def test_keras3_archives_match_keras(keras3: Any, tmp_path: Path) -> None:
    for stem, model in _zoo(keras3).items():
        path = tmp_path / f"{stem}.keras"
        model.save(path)
        assert keras_zip.sniff(make_probe(path)) == 100
        read = _check_against_keras(path, model)
        assert read.format == "keras" and read.flavour == "keras3"
        assert read.producer["name"] == "keras"
        assert read.producer["version"] == keras3.__version__
        assert "date_saved" in read.metadata
        if stem == "functional":
            assert read.metadata["training_config"]["loss"] == "mse"
            assert read.by_role(Role.OPTIMIZER)
        if stem == "tokens":
            assert read.tensor("out16/kernel").dtype == "bfloat16"
        assert not [w for w in read.warnings if "position" in w], read.warnings
        if stem == "attention":  # Keras' order, though saved by attribute name
            assert [t.name for t in read.tensors][:4] == [
                "mha/query/kernel",
                "mha/query/bias",
                "mha/key/kernel",
                "mha/key/bias",
            ]
        read.close()


@pytest.mark.keras
def test_tf_keras_archives_match_tf_keras(tf_keras: Any, tmp_path: Path) -> None:
    for stem, model in _zoo(tf_keras).items():
        if stem == "tokens":
            continue  # tf_keras has no bfloat16 Dense without a mixed policy
        path = tmp_path / f"{stem}.keras"
        model.save(path, save_format="keras_v3")
        read = _check_against_keras(path, model)
        assert read.flavour == "tf-keras"
        assert read.producer["version"].startswith("2.")
        read.close()


def _fixture_entries(fixtures_dir: Path) -> list[dict[str, Any]]:
    manifest = fixtures_dir / "MANIFEST.json"
    if not manifest.exists():
        return []
    entries = json.loads(manifest.read_text())
    return [e for e in entries if e.get("kind") == "keras-archive"]


def test_fixture_archives_match_manifest(fixtures_dir: Path) -> None:
    entries = _fixture_entries(fixtures_dir)
    if not entries:
        pytest.skip("no .keras fixtures yet (fixtures/make_fixtures.py)")
    for entry in entries:
        read = _read(fixtures_dir / entry["file"])
        by_path = {t.source_names[0]: t for t in read.tensors}
        for key, record in entry.get("weights", {}).items():
            tensor = by_path[record["h5_path"]]
            digest = hashlib.sha256(_bytes(tensor.read())).hexdigest()
            assert digest == record["sha256"], (entry["file"], key)
            assert tensor.name == record["canonical"], (entry["file"], key)
            assert tensor.role is Role.WEIGHT
        read.close()


# -- hostile and damaged archives -----------------------------------------


def _archive(path: Path, members: dict[str, bytes], method: int = 0) -> Path:
    with zipfile.ZipFile(path, "w", compression=method) as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return path


def _weights_h5(build: Any = None) -> bytes:
    buffer = io.BytesIO()
    with h5py.File(buffer, "w") as h5:
        group = h5.create_group("layers/dense/vars")
        group["0"] = np.arange(6, dtype="<f4").reshape(2, 3)
        group["1"] = np.zeros(3, dtype="<f4")
        h5.create_group("optimizer/vars")["0"] = np.int64(4)
        h5.create_group("metrics/mean/vars")["0"] = np.float32(1.5)
        if build is not None:
            build(h5)
    return buffer.getvalue()


CONFIG = {
    "module": "keras",
    "class_name": "Sequential",
    "config": {
        "name": "s",
        "layers": [
            {
                "module": "keras.layers",
                "class_name": "InputLayer",
                "config": {"batch_shape": [None, 2], "dtype": "float32", "name": "in"},
            },
            {
                "module": "keras.layers",
                "class_name": "Dense",
                "config": {"name": "d", "units": 3, "use_bias": True},
            },
        ],
    },
    "compile_config": {"loss": "mse"},
}
METADATA = b'{"keras_version": "3.4.1", "date_saved": "2024-07-01@10:00:00"}'


def _members(**changes: bytes | None) -> dict[str, bytes]:
    members = {
        "metadata.json": METADATA,
        "config.json": json.dumps(CONFIG).encode(),
        "model.weights.h5": _weights_h5(),
    }
    members.update(changes)  # type: ignore[arg-type]
    return {k: v for k, v in members.items() if v is not None}


def test_built_archive_roles_and_names(tmp_path: Path) -> None:
    path = _archive(tmp_path / "m.keras", _members())
    read = _read(path)
    assert [(t.name, t.role) for t in read.tensors] == [
        ("d/kernel", Role.WEIGHT),
        ("d/bias", Role.WEIGHT),
        ("optimizer/0", Role.OPTIMIZER),
        ("metrics/mean/0", Role.STATE),
    ]
    assert read.tensors[0].source_names == ("layers/dense/vars/0",)
    np.testing.assert_array_equal(read.tensors[0].read(), np.arange(6.0).reshape(2, 3))
    assert read.metadata["producer"] == {"name": "keras", "version": "3.4.1"}
    assert read.metadata["training_config"] == {"loss": "mse"}
    read.close()


def test_compressed_weights_member_still_reads(tmp_path: Path) -> None:
    path = _archive(tmp_path / "m.keras", _members(), zipfile.ZIP_DEFLATED)
    read = _read(path)
    assert read.tensor("d/bias").read().tolist() == [0.0, 0.0, 0.0]
    read.close()


def test_unmatched_layer_groups_named_by_path(tmp_path: Path) -> None:
    def extra(h5: h5py.File) -> None:
        h5.create_group("layers/mystery/vars")["0"] = np.ones(2, "<f8")

    path = _archive(
        tmp_path / "m.keras", _members(**{"model.weights.h5": _weights_h5(extra)})
    )
    read = _read(path)
    assert read.tensor("mystery/0").role is Role.WEIGHT
    assert any("mystery" in w for w in read.warnings)
    read.close()


def test_external_link_in_weights_refused(tmp_path: Path) -> None:
    def link(h5: h5py.File) -> None:
        h5["layers/dense/evil"] = h5py.ExternalLink("/etc/passwd", "/x")

    path = _archive(
        tmp_path / "m.keras", _members(**{"model.weights.h5": _weights_h5(link)})
    )
    with pytest.raises(HostileInputError, match="link"):
        _read(path)


@pytest.mark.parametrize(
    "changes, kind, match",
    [
        ({"config.json": None}, InputError, "config.json"),
        ({"config.json": b'{"a": 1, "a": 2}'}, HostileInputError, "duplicate"),
        ({"config.json": b"[1, 2]"}, InputError, "object"),
        ({"config.json": b"\xff\xfe"}, InputError, "UTF-8"),
        ({"config.json": b"[" * 1000 + b"]" * 1000}, InputError, "deeper"),
        ({"model.weights.h5": b"not hdf5 at all"}, InputError, "HDF5"),
        (
            {"model.weights.h5": None, "model.weights.npz": b"PK"},
            UnsupportedError,
            "pickled",
        ),
    ],
)
def test_damaged_archives(
    tmp_path: Path, changes: dict[str, bytes | None], kind: type, match: str
) -> None:
    path = _archive(tmp_path / "m.keras", _members(**changes))  # type: ignore[arg-type]
    with pytest.raises(kind, match=match) as info:
        _read(path)
    assert isinstance(info.value, ModelconvError) and info.value.exit_code == 2


def test_unsafe_member_in_archive(tmp_path: Path) -> None:
    members = _members()
    members["../../escape.txt"] = b"x"
    with pytest.raises(HostileInputError, match="'..' segment"):
        _read(_archive(tmp_path / "m.keras", members))


def test_truncated_archive(tmp_path: Path) -> None:
    path = _archive(tmp_path / "m.keras", _members())
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(InputError):
        _read(path)


def test_sniff(tmp_path: Path) -> None:
    path = _archive(tmp_path / "m.keras", _members())
    assert keras_zip.sniff(make_probe(path)) == 100
    npz_like = _archive(tmp_path / "a.npz", {"a.npy": b""})
    assert keras_zip.sniff(make_probe(npz_like)) == 0
    junk = tmp_path / "j.keras"
    junk.write_bytes(b"PK\x03\x04" + b"\x00" * 64)
    assert keras_zip.sniff(make_probe(junk)) == 20


def test_naming_helpers() -> None:
    assert keras_zip.to_snake_case("BatchNormalization") == "batch_normalization"
    assert keras_zip.to_snake_case("Conv2DTranspose") == "conv2d_transpose"
    assert keras_zip.to_snake_case("LSTM") == "lstm"
    assert keras_zip.container_keys(["InputLayer", "Dense", "Dense", "LSTM"]) == [
        "input_layer",
        "dense",
        "dense_1",
        "lstm",
    ]


def test_write_delegates_or_says_not_available(tmp_path: Path) -> None:
    try:
        from modelconv.formats import keras_zip_writer  # noqa: F401
    except ModuleNotFoundError:
        with pytest.raises(UnsupportedError, match="not available yet"):
            keras_zip.write(Model(), tmp_path / "x.keras", WriteOptions())
        with pytest.raises(UnsupportedError, match="not available yet"):
            keras_zip.losses(Model(), WriteOptions())
    else:
        assert isinstance(keras_zip.losses(Model(), WriteOptions()), list)


def test_fixture_archives_round_trip_through_npz(
    fixtures_dir: Path, tmp_path: Path
) -> None:
    """keras → modelconv NPZ → read: names, roles, bytes, config all survive."""
    from modelconv.formats import npz

    archives = sorted(fixtures_dir.glob("*.keras"))
    if not archives:
        pytest.skip("no .keras fixtures yet (fixtures/make_fixtures.py)")
    for path in archives:
        source = _read(path)
        target = tmp_path / f"{path.stem}.npz"
        npz.write(source, target, WriteOptions())
        back = npz.read(target, ReadOptions())
        assert [(t.name, t.role, t.dtype, t.shape) for t in back.tensors] == [
            (t.name, t.role, t.dtype, t.shape) for t in source.tensors
        ]
        assert [t.source_names for t in back.tensors] == [
            t.source_names for t in source.tensors
        ]
        for a, b in zip(source.tensors, back.tensors):
            assert _bytes(a.read()) == _bytes(b.read()), (path.name, a.name)
        assert source.architecture is not None and back.architecture is not None
        assert back.architecture.config == source.architecture.config
        assert back.metadata["producer"] == source.metadata["producer"]
        source.close()
        back.close()


def test_lambda_archive_is_flagged_not_run(fixtures_dir: Path) -> None:
    path = fixtures_dir / "k3_lambda.keras"
    if not path.exists():
        pytest.skip("fixture k3_lambda.keras not generated yet")
    read = _read(path)
    assert read.architecture is not None
    assert any("Lambda" in w for w in read.architecture.warnings)
    assert read.names == ("pre/kernel", "pre/bias", "post/kernel", "post/bias")
    read.close()


def test_subclassed_model_and_seed_state(tmp_path: Path) -> None:
    """No layer list in the config: names from paths; seed generators are state."""

    def build(h5: h5py.File) -> None:
        h5.create_group("vars")["0"] = np.float32(2.0)
        h5.create_group("layers/random_flip/seed_generator/vars")["0"] = np.uint32(
            [1, 2]
        )

    config = {"class_name": "MyModel", "config": {"name": "mine"}}
    members = _members(
        **{
            "config.json": json.dumps(config).encode(),
            "model.weights.h5": _weights_h5(build),
        }
    )
    read = _read(_archive(tmp_path / "sub.keras", members))
    roles = {t.name: t.role for t in read.tensors}
    assert roles["dense/0"] is Role.WEIGHT and roles["dense/1"] is Role.WEIGHT
    assert roles["vars/0"] is Role.WEIGHT
    assert roles["random_flip/seed_generator/0"] is Role.STATE
    assert roles["optimizer/0"] is Role.OPTIMIZER
    assert any("subclassed" in w for w in read.warnings)
    read.close()


def test_seed_generator_inside_a_known_layer(tmp_path: Path) -> None:
    def build(h5: h5py.File) -> None:
        h5.create_group("layers/dense/seed_generator/vars")["0"] = np.uint32([3, 4])

    members = _members(**{"model.weights.h5": _weights_h5(build)})
    read = _read(_archive(tmp_path / "seed.keras", members))
    assert read.tensor("d/seed_generator/0").role is Role.STATE
    assert read.tensor("d/kernel").role is Role.WEIGHT
    assert not read.warnings
    read.close()
