"""The core: dtypes, the IR, the header, bounded JSON, the registry, the CLI shell."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from modelconv import dtypes
from modelconv.errors import (
    HostileInputError,
    InputError,
    LimitExceededError,
    UnknownFormatError,
    UnsupportedDtypeError,
    UnsupportedError,
    UsageError,
)
from modelconv.formats import detect, get_format, make_probe
from modelconv.header import check_header, model_header
from modelconv.jsonsafe import loads_bounded
from modelconv.model import ArraySource, Model, Role, Tensor, digest


def test_every_dtype_name_maps_to_numpy_and_back() -> None:
    for name in dtypes.DTYPE_NAMES:
        assert dtypes.dtype_name(dtypes.numpy_dtype(name)) == name
        assert dtypes.storage_dtype(name).itemsize == dtypes.itemsize(name)


@pytest.mark.parametrize("bad", ["U5", "O", "S3", "V8", [("a", "i4")]])
def test_dtypes_outside_the_closed_list_are_refused(bad: object) -> None:
    with pytest.raises(UnsupportedDtypeError):
        dtypes.dtype_name(np.dtype(bad))  # type: ignore[call-overload]


def test_big_endian_arrays_read_as_their_name_and_hash_little_endian() -> None:
    big = np.arange(6, dtype=">f4").reshape(2, 3)
    assert dtypes.dtype_name(big.dtype) == "float32"
    tensor = Tensor("t", "float32", (2, 3), source=ArraySource(big))
    little = Tensor("t", "float32", (2, 3), source=ArraySource(big.astype("<f4")))
    assert digest(tensor) == digest(little)


def test_tensor_checks_declared_shape_and_size() -> None:
    tensor = Tensor("t", "float32", (3,), source=ArraySource(np.zeros(4, "f4")))
    with pytest.raises(InputError, match="declares"):
        tensor.read()
    with pytest.raises(InputError, match="declares 3"):
        list(tensor.iter_chunks())


def test_zero_d_and_empty_tensors() -> None:
    scalar = Tensor("s", "int64", (), source=ArraySource(np.array(7)))
    empty = Tensor("e", "float16", (0, 4), source=ArraySource(np.zeros((0, 4), "f2")))
    assert scalar.size == 1 and scalar.nbytes == 8
    assert empty.size == 0 and list(empty.iter_bytes()) == []
    assert scalar.read() == 7


def test_model_refuses_duplicate_tensor_names() -> None:
    with pytest.raises(InputError, match="unique"):
        Model(tensors=(Tensor("a", "bool", ()), Tensor("a", "bool", ())))


def test_role_only_weight_counts_in_totals() -> None:
    model = Model(
        tensors=(
            Tensor("d/kernel", "float32", (4, 2)),
            Tensor("opt/m", "float32", (4, 2), role=Role.OPTIMIZER),
            Tensor("seed", "int64", (2,), role="state"),
        )
    )
    assert model.totals() == (8, None, None)


def test_header_carries_names_roles_and_keys() -> None:
    model = Model(
        tensors=(Tensor("a/..", "bfloat16", (2,), source_names=("x:0",)),),
        metadata={"producer": {"name": "keras", "version": "2.21.0"}},
    )
    header = check_header(json.loads(json.dumps(model_header(model, {"a/..": "t0"}))))
    (entry,) = header["tensors"]
    assert entry == {
        "name": "a/..",
        "role": "weight",
        "dtype": "bfloat16",
        "shape": [2],
        "source_names": ["x:0"],
        "key": "t0",
    }


@pytest.mark.parametrize(
    ("text", "error"),
    [
        ("[" * 100_000 + "]" * 100_000, LimitExceededError),
        ('{"a": ' + "9" * 5000 + "}", LimitExceededError),
        ('{"a": 1, "a": 2}', HostileInputError),
        ("{not json", InputError),
    ],
)
def test_bounded_json_refuses_hostile_documents(
    text: str, error: type[Exception]
) -> None:
    with pytest.raises(error):
        loads_bounded(text)


def test_bounded_json_keeps_nan_in_configs() -> None:
    assert np.isnan(loads_bounded('{"x": NaN}')["x"])


def test_format_names_and_aliases() -> None:
    assert get_format("h5").name == "hdf5"
    assert get_format("pkl").name == "pickle"
    with pytest.raises(UsageError, match="choose one of"):
        get_format("onnx")


@pytest.mark.parametrize(
    ("name", "content", "expected"),
    [
        ("model.tflite", b"\x1c\x00\x00\x00TFL3" + b"\x00" * 32, "TensorFlow Lite"),
        ("model.gguf", b"GGUF\x03\x00\x00\x00" + b"\x00" * 32, "GGUF"),
        ("model.onnx", b"\x08\x07\x12\x07pytorch", "ONNX"),
        ("w.index", b"\x00\x01\x02", "checkpoint"),
        ("model.weights.json", b'{"weight_map": {}}', "sharded weights"),
    ],
)
def test_known_unsupported_artifacts_are_named(
    tmp_path: Path, name: str, content: bytes, expected: str
) -> None:
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises((UnsupportedError, UnknownFormatError), match=expected):
        detect(path)


def test_saved_model_folder_is_named(tmp_path: Path) -> None:
    (tmp_path / "saved_model.pb").write_bytes(b"\x08\x01")
    (tmp_path / "variables").mkdir()
    with pytest.raises(UnsupportedError, match="SavedModel"):
        detect(tmp_path)


def test_random_bytes_are_an_unknown_format(tmp_path: Path) -> None:
    path = tmp_path / "noise.bin"
    path.write_bytes(bytes(range(7, 200)))
    with pytest.raises(UnknownFormatError, match="modelconv formats"):
        detect(path)


def test_missing_file_is_an_input_error(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="no such file"):
        make_probe(tmp_path / "absent.h5")


def test_import_pulls_no_framework_and_no_heavy_module() -> None:
    code = (
        "import sys, modelconv, modelconv.cli;"
        "heavy = [m for m in ('tensorflow', 'keras', 'tf_keras', 'torch', 'h5py',"
        " 'numpy', 'rich') if m in sys.modules];"
        "print(','.join(heavy))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == ""


def test_help_and_version(run_cli) -> None:  # type: ignore[no-untyped-def]
    result = run_cli("--help")
    assert result.exit_code == 0
    for command in ("inspect", "convert", "formats", "Exit codes"):
        assert command in result.stdout
    version = run_cli("--version")
    assert version.exit_code == 0 and "modelconv" in version.stdout


def test_formats_json_lists_every_registered_format(run_cli) -> None:  # type: ignore[no-untyped-def]
    result = run_cli("formats", "--json")
    document = json.loads(result.stdout)
    assert document["schema"] == 1
    names = [f["name"] for f in document["formats"]]
    assert names == [
        "hdf5",
        "keras",
        "npz",
        "json",
        "keras-json",
        "tfjs",
        "pickle",
        "joblib",
    ]


def test_missing_file_gives_one_line_and_exit_2(run_cli, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    result = run_cli("inspect", tmp_path / "nope.h5", "--json")
    assert result.exit_code == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: no such file")
    assert json.loads(result.stdout)["error"]["kind"] == "bad-input"


def test_unknown_format_option_is_a_usage_error(run_cli, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    src = tmp_path / "a.bin"
    src.write_bytes(b"x" * 10)
    result = run_cli("inspect", src, "--from", "nonsense")
    assert result.exit_code == 2
    assert "unknown format 'nonsense'" in result.stderr


@pytest.mark.parametrize("suffix", [".npz", ".h5", ".json", ".pkl", ".joblib"])
def test_metadata_with_a_lone_surrogate_round_trips(
    tmp_path: Path, suffix: str
) -> None:
    """A pickle's str may hold a lone surrogate, which has no UTF-8 form; the
    header escapes it instead of failing the write (exit 3 before)."""
    import modelconv

    model = Model(
        tensors=(Tensor("w", "float32", (3,), source=ArraySource(np.ones(3, "f4"))),),
        metadata={"note": "\ud800 é"},
    )
    path = tmp_path / f"m{suffix}"
    modelconv.save(model, path)
    with modelconv.load(path) as back:
        assert back.metadata["note"] == "\ud800 é"


def test_stats_of_any_bit_pattern_raise_no_numpy_warning() -> None:
    """Signalling NaNs, infinities and values that overflow when squared
    are counted or shown, never printed by numpy as warnings."""
    import warnings

    from modelconv.inspect import inspect_model

    bits = np.array([0x7F800001, 0xFF800001, 0x7F7FFFFF, 0xFF7FFFFF], "<u4")
    values = np.concatenate([bits.view("<f4"), np.array([np.inf, -np.inf, 1], "<f4")])
    model = Model(
        tensors=(
            Tensor("w", "float32", (7,), source=ArraySource(values)),
            Tensor("d", "float64", (2,), source=ArraySource(np.array([1e308, -1e308]))),
        )
    )
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        report = inspect_model(model, "m.npz", stats=True)
    stats = report.to_json()["tensors"][0]["stats"]
    assert stats["nan_count"] == 2 and stats["inf_count"] == 2
