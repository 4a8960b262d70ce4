"""The committed fixtures agree with fixtures/MANIFEST.json.

A regenerated or hand-edited fixture cannot drift silently: every file's
bytes are pinned by sha256, and the manifest's weight checksums are checked
against what h5py and numpy read from the files (no modelconv, no
TensorFlow, no unpickling).
"""

from __future__ import annotations

import hashlib
import io
import json
import zipfile
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import pytest

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"
MANIFEST = FIXTURES / "MANIFEST.json"
NOT_FIXTURES = {"make_fixtures.py", "README.md", "MANIFEST.json"}

PRODUCERS = {
    "keras3",
    "tf_keras",
    "h5py",
    "numpy",
    "numpy1",
    "joblib",
    "pickle",
    "sklearn",
}
KINDS = {
    "keras-model-h5",
    "keras-weights-h5",
    "keras3-weights-h5",
    "keras-archive",
    "keras-json",
    "h5-tree",
    "npz",
    "pickle",
    "joblib",
}
H5_KINDS = {"keras-model-h5", "keras-weights-h5", "keras3-weights-h5", "h5-tree"}
KERAS_PRODUCERS = {"keras3", "tf_keras"}

# First bytes of each compressed joblib stream (joblib 1.6 compressors).
JOBLIB_MAGIC = {
    "zlib": b"\x78",
    "gzip": b"\x1f\x8b",
    "bz2": b"BZh",
    "lzma": b"\x5d\x00\x00",
    "xz": b"\xfd7zXZ\x00",
    "lz4": b"\x04\x22\x4d\x18",
}


def load_manifest() -> list[dict[str, Any]]:
    return json.loads(MANIFEST.read_text())


ENTRIES = load_manifest() if MANIFEST.exists() else []
BY_FILE = {e["file"]: e for e in ENTRIES}


def entries_where(pred) -> list[dict[str, Any]]:
    return [e for e in ENTRIES if pred(e)]


def ids(entries: list[dict[str, Any]]) -> list[str]:
    return [e["file"] for e in entries]


def sha256_le(arr: np.ndarray) -> str:
    """sha256 of C-order little-endian bytes, as the manifest records it."""
    if arr.dtype.byteorder == ">":
        arr = arr.astype(arr.dtype.newbyteorder("<"))
    return hashlib.sha256(np.ascontiguousarray(arr).tobytes()).hexdigest()


def open_h5(entry: dict[str, Any]) -> h5py.File:
    path = FIXTURES / entry["file"]
    if entry.get("h5_member"):
        with zipfile.ZipFile(path) as zf:
            return h5py.File(io.BytesIO(zf.read(entry["h5_member"])), "r")
    return h5py.File(path, "r")


def test_manifest_is_a_nonempty_list_of_known_kinds() -> None:
    assert isinstance(ENTRIES, list) and len(ENTRIES) >= 50
    assert len(BY_FILE) == len(ENTRIES), "a file is listed twice"
    for e in ENTRIES:
        assert e["producer"] in PRODUCERS, e["file"]
        assert e["kind"] in KINDS, e["file"]
        assert e["io"] is None or e["io"] in BY_FILE, e["file"]
        assert "keras" in e["versions"] and "numpy" in e["versions"]


def test_every_file_in_fixtures_is_listed() -> None:
    on_disk = {p.name for p in FIXTURES.iterdir() if p.is_file()} - NOT_FIXTURES
    assert on_disk == set(BY_FILE)


def test_total_size_stays_small() -> None:
    assert sum(e["file_size"] for e in ENTRIES) < 6 * 1024 * 1024


@pytest.mark.parametrize("entry", ENTRIES, ids=ids(ENTRIES))
def test_file_bytes_match_manifest(entry: dict[str, Any]) -> None:
    data = (FIXTURES / entry["file"]).read_bytes()
    assert len(data) == entry["file_size"]
    assert hashlib.sha256(data).hexdigest() == entry["file_sha256"], (
        f"{entry['file']} changed: rerun fixtures/make_fixtures.py and commit "
        "the new MANIFEST.json with the files"
    )


H5_ENTRIES = entries_where(lambda e: e["kind"] in H5_KINDS or e.get("h5_member"))


@pytest.mark.parametrize("entry", H5_ENTRIES, ids=ids(H5_ENTRIES))
def test_h5_weights_and_datasets_match_h5py(entry: dict[str, Any]) -> None:
    with open_h5(entry) as h5:
        seen = {}

        def visit(name: str, obj: Any) -> None:
            if isinstance(obj, h5py.Dataset):
                seen[name] = obj

        h5.visititems(visit)
        assert set(seen) == set(entry["h5_datasets"])
        for name, rec in entry["h5_datasets"].items():
            arr = np.asarray(seen[name][()])
            assert list(arr.shape) == rec["shape"], name
            assert str(seen[name].dtype) == rec["h5_dtype"], name
            # Opaque |V2 (Keras' bfloat16) hashes as its raw bytes.
            assert sha256_le(arr) == rec["sha256"], name
        for key, w in entry["weights"].items():
            assert w["h5_path"] in seen, key
            arr = np.asarray(seen[w["h5_path"]][()])
            assert sha256_le(arr) == w["sha256"], key
            assert list(arr.shape) == w["shape"], key


KERAS_MODELS = entries_where(
    lambda e: e["producer"] in KERAS_PRODUCERS and e["kind"] != "npz"
)


@pytest.mark.parametrize("entry", KERAS_MODELS, ids=ids(KERAS_MODELS))
def test_keras_totals_agree_with_weights(entry: dict[str, Any]) -> None:
    weights = entry["weights"]
    sizes = {k: int(np.prod(w["shape"])) for k, w in weights.items()}
    trainable = sum(n for k, n in sizes.items() if weights[k]["trainable"])
    assert entry["total_params"] == sum(sizes.values())
    assert entry["trainable_params"] == trainable
    assert entry["non_trainable_params"] == entry["total_params"] - trainable
    assert entry["layer_names"] == [layer["name"] for layer in entry["layers"]]
    assert entry["n_layers"] == len(entry["layers"])
    listed = [k for layer in entry["layers"] for k in layer["weights"]]
    assert listed == list(weights)
    for key, w in weights.items():
        assert w["canonical"].startswith(w["layer"] + "/")
        assert ":" not in w["canonical"] and "_cell" not in w["canonical"], key


LEGACY_H5 = entries_where(lambda e: e["kind"] in {"keras-model-h5", "keras-weights-h5"})


@pytest.mark.parametrize("entry", LEGACY_H5, ids=ids(LEGACY_H5))
def test_legacy_h5_root_facts(entry: dict[str, Any]) -> None:
    with h5py.File(FIXTURES / entry["file"], "r") as h5:
        group = h5["model_weights"] if entry["kind"] == "keras-model-h5" else h5
        names = [
            n.decode() if isinstance(n, bytes) else str(n)
            for n in group.attrs["layer_names"]
        ]
        assert names == entry["h5_layer_names"]
        assert sorted(h5.attrs) == entry["root_attrs"]
        assert ("optimizer_weights" in h5) == entry["has_optimizer_weights"]
        version = entry["keras_version"]
    assert version.startswith("3.") == (entry["producer"] == "keras3")


def test_trained_legacy_h5_carries_optimizer_state() -> None:
    for name in ("k3_iris_mlp.h5", "tfk_iris_mlp.h5"):
        assert BY_FILE[name]["has_optimizer_weights"], name
        assert BY_FILE[name]["has_training_config"], name
    assert not BY_FILE["tfk_same_mlp.h5"]["has_optimizer_weights"]


def weight_hashes(name: str) -> list[str]:
    return [w["sha256"] for w in BY_FILE[name]["weights"].values()]


def test_one_model_saved_many_ways_has_one_set_of_weights() -> None:
    reference = weight_hashes("k3_iris_mlp.h5")
    for name in (
        "k3_iris_mlp.keras",
        "k3_iris_mlp.weights.h5",
        "k3_iris_mlp.json",
        "k3_iris_mlp.pkl",
        "k3_iris_mlp.joblib",
        "tfk_same_mlp.h5",
        "layer_list.joblib",
    ):
        assert weight_hashes(name) == reference, name
    assert weight_hashes("k3_iris_mlp_run2.h5") != reference
    tfk = weight_hashes("tfk_iris_mlp.h5")
    for name in ("tfk_iris_mlp.weights.h5", "tfk_iris_mlp.keras", "tfk_iris_mlp.pkl"):
        assert weight_hashes(name) == tfk, name


NPZ_ENTRIES = entries_where(lambda e: e["kind"] == "npz")


@pytest.mark.parametrize("entry", NPZ_ENTRIES, ids=ids(NPZ_ENTRIES))
def test_npz_arrays_match_manifest(entry: dict[str, Any]) -> None:
    with np.load(FIXTURES / entry["file"], allow_pickle=False) as z:
        assert sorted(z.files) == sorted(entry["weights"])
        for key in z.files:
            arr = z[key]
            assert sha256_le(arr) == entry["weights"][key]["sha256"], key
            assert list(arr.shape) == entry["weights"][key]["shape"], key


IO_USERS = entries_where(lambda e: e["io"] is not None)


@pytest.mark.parametrize("entry", IO_USERS, ids=ids(IO_USERS))
def test_io_companion_has_inputs_and_outputs(entry: dict[str, Any]) -> None:
    keys = set(BY_FILE[entry["io"]]["weights"])
    assert keys & {"x", "x0"} and keys & {"y", "y0"}, entry["io"]


PICKLED = entries_where(lambda e: e["kind"] in {"pickle", "joblib"})


def stream_bytes(entry: dict[str, Any]) -> bytes:
    """The pickle stream, decompressed with the stdlib where joblib compressed."""
    import bz2
    import gzip
    import lzma
    import zlib

    data = (FIXTURES / entry["file"]).read_bytes()
    comp = entry.get("compression")
    if comp is None:
        return data
    assert data.startswith(JOBLIB_MAGIC[comp]), entry["file"]
    if comp == "zlib":
        return zlib.decompress(data)
    if comp == "gzip":
        return gzip.decompress(data)
    if comp == "bz2":
        return bz2.decompress(data)
    if comp in ("lzma", "xz"):
        return lzma.decompress(data)
    lz4_frame = pytest.importorskip("lz4.frame")
    return lz4_frame.decompress(data)


@pytest.mark.parametrize("entry", PICKLED, ids=ids(PICKLED))
def test_pickled_fixtures_name_what_they_hold(entry: dict[str, Any]) -> None:
    stream = stream_bytes(entry)
    content = entry["content"]
    if content == "keras-model" and entry["producer"] == "keras3":
        assert b"_unpickle_model" in stream
    elif content == "keras-model":
        assert b"deserialize_model_from_bytecode" in stream
    elif content == "sklearn-mlp":
        assert b"sklearn.neural_network" in stream
    if content == "arrays" and entry["kind"] == "pickle":
        legacy = b"numpy.core.multiarray" in stream
        assert legacy == (entry["producer"] == "numpy1"), entry["file"]
        if entry.get("pickle_protocol") == 0:
            assert stream.startswith(b"(") or stream.startswith(b"c")
        else:
            assert stream[:2] == bytes([0x80, entry["pickle_protocol"]])


def test_tf_keras_conv_lstm_carries_time_major() -> None:
    with h5py.File(FIXTURES / "tfk_conv_lstm.h5", "r") as h5:
        config = h5.attrs["model_config"]
    text = config.decode() if isinstance(config, bytes) else config
    assert '"time_major"' in text


def test_sklearn_facts() -> None:
    clf = BY_FILE["sk_mlp_classifier.pkl"]["sklearn"]
    assert clf["classes_"] == ["setosa", "versicolor", "virginica"]
    assert clf["n_features_in_"] == 4 and clf["out_activation_"] == "softmax"
    reg = BY_FILE["sk_mlp_regressor.joblib"]["sklearn"]
    assert reg["out_activation_"] == "identity" and reg["n_features_in_"] == 5
    shapes = [w["shape"] for w in BY_FILE["sk_mlp_classifier.pkl"]["weights"].values()]
    assert shapes[:3] == [[4, 16], [16, 8], [8, 3]]


def test_load_checks_record_what_the_real_libraries_open() -> None:
    loads = {e["file"]: e.get("loads_in") for e in ENTRIES}
    # Every Keras model file was loaded back by the script in both libraries.
    for e in KERAS_MODELS:
        assert set(loads[e["file"]] or {}) == {"keras3", "tf_keras"}, e["file"]
    for name in ("k3_iris_mlp.h5", "k3_iris_mlp.keras", "k3_iris_mlp.weights.h5"):
        assert loads[name]["keras3"] == "equal", name
    for name in ("tfk_iris_mlp.h5", "tfk_iris_mlp.keras", "tfk_conv_lstm.h5"):
        assert loads[name]["tf_keras"] == "equal", name
    assert "time_major" in loads["tfk_conv_lstm.h5"]["keras3"]
    assert loads["tfk_same_mlp.h5"] == {"keras3": "equal", "tf_keras": "equal"}


@pytest.mark.keras
@pytest.mark.parametrize(
    "stem",
    sorted(
        p.name.removesuffix(".io.npz")
        for p in FIXTURES.glob("*.io.npz")
        if not p.name.startswith("sk_")
    ),
)
def test_recorded_outputs_match_this_machines_keras(
    stem: str, keras3: Any, tf_keras: Any
) -> None:
    """The recorded predictions are what Keras computes here, to within 1e-6.

    Tests of converted files compare bit for bit with the original loaded by
    its own Keras on this machine (oneDNN picks kernels by CPU, so the last
    bit may move between machines); this pins those references to the
    predictions recorded when the fixtures were made.
    """
    from _keras_models import local_outputs, stored_io

    _, recorded = stored_io(stem)
    here = local_outputs(stem)
    # k3_dtypes computes in bfloat16 and float16 layers, whose kernels differ
    # between CPUs by up to a few units of bfloat16's 2**-8 precision.
    tolerance = 2e-2 if stem == "k3_dtypes" else 1e-6
    assert len(here) == len(recorded)
    for want, have in zip(recorded, here):
        assert have.dtype == want.dtype and have.shape == want.shape
        np.testing.assert_allclose(have, want, rtol=tolerance, atol=tolerance)


def _inspectable() -> list[dict[str, Any]]:
    return [e for e in json.loads(MANIFEST.read_text()) if e["kind"] != "keras-json"]


@pytest.mark.parametrize("entry", _inspectable(), ids=lambda e: e["file"])
def test_cli_checksums_and_totals_match_the_producing_library(
    entry: dict[str, Any], run_cli: Any
) -> None:
    """``inspect --json --checksums`` gives every weight's bytes and the totals
    the library that wrote the file reported (MANIFEST.json)."""
    result = run_cli("inspect", FIXTURES / entry["file"], "--json", "--checksums")
    assert result.exit_code == 0, result.stderr
    report = json.loads(result.stdout)
    by_name = {t["name"]: t["sha256"] for t in report["tensors"]}
    found = sorted(by_name.values())
    for name, weight in (entry.get("weights") or {}).items():
        if weight["dtype"].startswith(("str", "bytes", "object", "<U", "|S")):
            continue  # text is metadata, not a tensor (with a warning)
        assert weight["sha256"] in found, f"{name}: no tensor has its bytes"
        canonical = weight.get("canonical")
        # A Keras 3 .weights.h5 names variables by position only.
        if canonical is not None and report["flavour"] != "keras3-weights":
            assert by_name.get(canonical) == weight["sha256"], canonical
    if entry.get("total_params") is not None:
        assert report["total_params"] == entry["total_params"]
        # Weights-only files cannot tell trainable from frozen; a Lambda of
        # unknown output shape leaves the layer after it uncounted.
        if report["trainable_params"] is not None:
            assert report["trainable_params"] == entry["trainable_params"]
        elif not entry["file"].startswith("k3_lambda"):
            assert report["flavour"] in ("keras-weights", "keras3-weights", "arrays")


def test_cli_stats_agree_with_numpy(run_cli: Any) -> None:
    result = run_cli("inspect", FIXTURES / "plain.npz", "--json", "--stats")
    assert result.exit_code == 0, result.stderr
    with np.load(FIXTURES / "plain.npz", allow_pickle=False) as data:
        for tensor in json.loads(result.stdout)["tensors"]:
            array = data[tensor["name"]]
            stats = tensor["stats"]
            if array.size == 0 or array.dtype.kind not in "fiu":
                continue
            finite = array[np.isfinite(array)].astype(np.float64)
            assert stats["nan_count"] == int(np.isnan(array).sum())
            assert stats["inf_count"] == int(np.isinf(array).sum())
            if finite.size:
                assert stats["min"] == pytest.approx(float(finite.min()))
                assert stats["max"] == pytest.approx(float(finite.max()))
                assert stats["mean"] == pytest.approx(float(finite.mean()), rel=1e-9)
                assert stats["std"] == pytest.approx(float(finite.std()), rel=1e-9)
