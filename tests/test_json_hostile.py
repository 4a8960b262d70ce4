"""Hostile JSON for the three JSON formats: refused with a modelconv error.

Every case is built in code: absurd nesting, huge integers, duplicate keys,
tf.js shard paths that leave the model's folder, shards whose sizes disagree
with the manifest, and valid JSON that is no model. Through the CLI each is
exit 2 with one line on stderr and no traceback.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from modelconv.errors import (
    HostileInputError,
    InputError,
    LimitExceededError,
    ModelconvError,
    UnknownFormatError,
    UnsupportedDtypeError,
    UnsupportedError,
)
from modelconv.formats import jsonfmt, keras_json, tfjs
from modelconv.formats.base import ReadOptions
from modelconv.jsonsafe import loads_bounded

DEEP = 200_000
HUGE_INT = "9" * 5000
OPTIONS = ReadOptions()

MODELCONV_HEAD = '{"modelconv": 1, "architecture": null, "metadata": '
KERAS_HEAD = '{"class_name": "Sequential", "config": '
TFJS_HEAD = '{"format": "layers-model", "weightsManifest": [], "modelTopology": '


def deep(n: int = DEEP) -> str:
    return "[" * n + "]" * n


CASES = {
    # name: (file text, reader, expected error)
    "json-deep": (
        MODELCONV_HEAD + deep() + ', "tensors": []}',
        jsonfmt.read,
        LimitExceededError,
    ),
    "keras-json-deep": (KERAS_HEAD + deep() + "}", keras_json.read, LimitExceededError),
    "tfjs-deep": (TFJS_HEAD + deep() + "}", tfjs.read, LimitExceededError),
    "json-huge-int": (
        MODELCONV_HEAD + '{"n": ' + HUGE_INT + '}, "tensors": []}',
        jsonfmt.read,
        LimitExceededError,
    ),
    "keras-json-huge-int": (
        KERAS_HEAD + '{"layers": [], "n": ' + HUGE_INT + "}}",
        keras_json.read,
        LimitExceededError,
    ),
    "tfjs-huge-int": (
        '{"modelTopology": null, "weightsManifest": [{"paths": [], "weights": '
        '[{"name": "a", "dtype": "float32", "shape": [' + HUGE_INT + "]}]}]}",
        tfjs.read,
        LimitExceededError,
    ),
    "json-duplicate-key": (
        '{"modelconv": 1, "modelconv": 1, "architecture": null, "metadata": {}, '
        '"tensors": []}',
        jsonfmt.read,
        HostileInputError,
    ),
    "json-duplicate-data": (
        MODELCONV_HEAD + '{}, "tensors": [{"name": "a", "role": "weight", '
        '"dtype": "int8", "shape": [1], "source_names": [], "data": "AA==", '
        '"data": "AQ=="}]}',
        jsonfmt.read,
        HostileInputError,
    ),
    "keras-json-duplicate-key": (
        '{"class_name": "Sequential", "class_name": "Functional", "config": {}}',
        keras_json.read,
        HostileInputError,
    ),
    "tfjs-duplicate-key": (
        '{"modelTopology": null, "weightsManifest": [], "weightsManifest": []}',
        tfjs.read,
        HostileInputError,
    ),
    "json-not-a-model": ('{"hello": "world"}', jsonfmt.read, InputError),
    "keras-json-not-a-model": ('{"hello": "world"}', keras_json.read, InputError),
    "keras-json-list": ("[1, 2, 3]", keras_json.read, InputError),
    "tfjs-not-a-model": ('{"hello": "world"}', tfjs.read, InputError),
    "json-truncated": (MODELCONV_HEAD + '{}, "tensors": [', jsonfmt.read, InputError),
    "json-escaped-data": (
        MODELCONV_HEAD + '{}, "tensors": [{"name": "a", "role": "weight", '
        '"dtype": "int8", "shape": [1], "source_names": [], "data": "A\\u0041=="}]}',
        jsonfmt.read,
        HostileInputError,
    ),
    "json-data-not-string": (
        MODELCONV_HEAD + '{}, "tensors": [{"name": "a", "role": "weight", '
        '"dtype": "int8", "shape": [1], "source_names": [], "data": 5}]}',
        jsonfmt.read,
        InputError,
    ),
    "json-string-dtype": (
        MODELCONV_HEAD + '{}, "tensors": [{"name": "a", "role": "weight", '
        '"dtype": "str", "shape": [1], "source_names": [], "data": "AA=="}]}',
        jsonfmt.read,
        UnsupportedDtypeError,
    ),
    "json-lying-shape": (
        MODELCONV_HEAD + '{}, "tensors": [{"name": "a", "role": "weight", '
        '"dtype": "float64", "shape": [1000000000, 1000000000], '
        '"source_names": [], "data": "AA=="}]}',
        jsonfmt.read,
        InputError,
    ),
    "tfjs-string-tensor": (
        '{"modelTopology": null, "weightsManifest": [{"paths": [], "weights": '
        '[{"name": "vocab", "dtype": "string", "shape": [2]}]}]}',
        tfjs.read,
        UnsupportedDtypeError,
    ),
    # An object where a dtype string belongs: no TypeError from a set lookup.
    "tfjs-dtype-an-object": (
        '{"modelTopology": null, "weightsManifest": [{"paths": [], "weights": '
        '[{"name": "w", "dtype": {"a": 1}, "shape": [2]}]}]}',
        tfjs.read,
        UnsupportedDtypeError,
    ),
    "tfjs-quantization-dtype-an-object": (
        '{"modelTopology": null, "weightsManifest": [{"paths": [], "weights": '
        '[{"name": "w", "dtype": "float32", "shape": [2], '
        '"quantization": {"dtype": {"a": 1}, "scale": 1, "min": 0}}]}]}',
        tfjs.read,
        UnsupportedError,
    ),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_hostile_json_is_refused(tmp_path: Path, case: str) -> None:
    text, reader, error = CASES[case]
    path = tmp_path / "model.json"
    path.write_text(text)
    with pytest.raises(error) as raised:
        reader(path, OPTIONS)
    message = str(raised.value)
    assert "\n" not in message and len(message) < 400


def test_bounded_parser_limits_directly() -> None:
    with pytest.raises(LimitExceededError, match="nesting"):
        loads_bounded(deep())
    with pytest.raises(LimitExceededError, match="5000 digits"):
        loads_bounded("[" + HUGE_INT + "]")
    with pytest.raises(LimitExceededError, match="digits"):
        loads_bounded("[-" + HUGE_INT + "]")
    with pytest.raises(HostileInputError, match="duplicate JSON key 'a'"):
        loads_bounded('{"b": {"a": 1, "a": 2}}')
    with pytest.raises(LimitExceededError, match="bytes"):
        loads_bounded(b"[" + b" " * 100 + b"]", max_bytes=50)
    # Brackets inside strings do not count as nesting.
    assert loads_bounded(json.dumps({"s": "[" * 1000})) == {"s": "[" * 1000}
    assert loads_bounded('{"x": NaN}')["x"] != loads_bounded('{"x": NaN}')["x"]


# --- tf.js shard paths and sizes ---------------------------------------------


def tfjs_folder(tmp_path: Path, paths: list[str], shard_bytes: int = 16) -> Path:
    folder = tmp_path / "web_model"
    folder.mkdir()
    (folder / "group1-shard1of1.bin").write_bytes(bytes(shard_bytes))
    (tmp_path / "outside.bin").write_bytes(bytes(16))
    manifest = [
        {
            "paths": ["group1-shard1of1.bin"],
            "weights": [{"name": "d/kernel", "shape": [2, 2], "dtype": "float32"}],
        },
        {
            "paths": paths,
            "weights": [{"name": "d/bias", "shape": [4], "dtype": "float32"}],
        },
    ]
    (folder / "model.json").write_text(
        json.dumps({"modelTopology": None, "weightsManifest": manifest})
    )
    return folder


ESCAPING_PATHS = [
    "../outside.bin",
    "sub/../../outside.bin",
    "..\\outside.bin",
    "/etc/passwd",
    "\\\\server\\share\\x.bin",
    "C:\\Windows\\x.bin",
    "file:///etc/passwd",
    "https://example.com/x.bin",
    "//example.com/x.bin",
    "",
    "a\x00b",
]


@pytest.mark.parametrize("shard", ESCAPING_PATHS)
def test_shard_paths_leaving_the_folder_are_refused_before_opening(
    tmp_path: Path, shard: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = tfjs_folder(tmp_path, [shard])

    def no_stat(*args: object) -> object:
        raise AssertionError("a shard was examined before every path was checked")

    monkeypatch.setattr(tfjs, "_sized", no_stat)
    with pytest.raises(HostileInputError, match="shard path"):
        tfjs.read(folder, OPTIONS)


def test_symlinked_shard_leaving_the_folder_is_refused(tmp_path: Path) -> None:
    folder = tfjs_folder(tmp_path, ["link.bin"])
    (folder / "link.bin").symlink_to(tmp_path / "outside.bin")
    with pytest.raises(HostileInputError, match="link"):
        tfjs.read(folder, OPTIONS)


@pytest.mark.parametrize("shard_bytes", [15, 17, 0, 1 << 16])
def test_shard_sizes_must_match_the_manifest(tmp_path: Path, shard_bytes: int) -> None:
    folder = tfjs_folder(tmp_path, ["group1-shard1of1.bin"], shard_bytes)
    # Both groups name the same 16-byte shard; resize it to disagree.
    with pytest.raises(HostileInputError, match="manifest declares 16"):
        tfjs.read(folder, OPTIONS)


def test_shard_that_is_not_a_regular_file_is_refused(tmp_path: Path) -> None:
    # A folder whose st_size happened to match the manifest passed the size
    # check, and reading its bytes failed only later.
    folder = tfjs_folder(tmp_path, ["sub"])
    (folder / "sub").mkdir()
    with pytest.raises(HostileInputError, match="'sub' of group 2 is not a regular"):
        tfjs.read(folder, OPTIONS)


@pytest.mark.parametrize(
    "document",
    [{"weightsManifest": []}, {"modelTopology": None, "weightsManifest": []}],
    ids=["manifest-only", "null-topology"],
)
def test_model_json_with_neither_topology_nor_weights_is_flagged(
    tmp_path: Path, document: dict
) -> None:
    """Nothing to read is said, not shown as an empty model without a word
    (modelconv itself writes such a file for an empty model, so it opens)."""
    (tmp_path / "model.json").write_text(json.dumps(document))
    model = tfjs.read(tmp_path, OPTIONS)
    assert not model.tensors and model.architecture is None
    assert any("neither a model topology nor any weights" in w for w in model.warnings)


def test_missing_shard_is_an_input_error(tmp_path: Path) -> None:
    folder = tfjs_folder(tmp_path, ["group2-shard1of1.bin"])
    with pytest.raises(InputError, match="group2-shard1of1.bin"):
        tfjs.read(folder, OPTIONS)


def test_tfjs_max_bytes_is_enforced(tmp_path: Path) -> None:
    folder = tfjs_folder(tmp_path, ["group1-shard1of1.bin"])
    with pytest.raises(LimitExceededError, match="max-bytes"):
        tfjs.read(folder, ReadOptions(max_bytes=8))


def test_graph_models_are_named_and_refused(tmp_path: Path) -> None:
    path = tmp_path / "model.json"
    path.write_text(
        json.dumps(
            {
                "format": "graph-model",
                "modelTopology": {"node": [], "versions": {}},
                "weightsManifest": [],
            }
        )
    )
    with pytest.raises(ModelconvError, match="graph model"):
        tfjs.read(path, OPTIONS)


# --- through the command line --------------------------------------------------


CLI_CASES = [
    "json-deep",
    "keras-json-deep",
    "tfjs-deep",
    "json-huge-int",
    "keras-json-huge-int",
    "json-duplicate-key",
    "keras-json-duplicate-key",
    "tfjs-duplicate-key",
    "json-truncated",
]


def assert_one_line_exit_2(result: object) -> None:
    assert result.exit_code == 2, (result.stdout, result.stderr)  # type: ignore[attr-defined]
    lines = result.stderr.strip().splitlines()  # type: ignore[attr-defined]
    assert len(lines) == 1, result.stderr  # type: ignore[attr-defined]
    assert "Traceback" not in result.stderr  # type: ignore[attr-defined]


@pytest.mark.parametrize("case", CLI_CASES)
def test_cli_hostile_json_exit_2_one_line(
    tmp_path: Path, run_cli: object, case: str
) -> None:
    path = tmp_path / "model.json"
    path.write_text(CASES[case][0])
    assert_one_line_exit_2(run_cli("inspect", path))  # type: ignore[operator]


@pytest.mark.parametrize(
    "text",
    ['{"hello": "world"}', "[1, 2, 3]", deep(), "[" + HUGE_INT + "]", "{"],
    ids=["object", "list", "deep", "huge-int", "broken"],
)
def test_cli_json_that_is_no_model_exit_2(
    tmp_path: Path, run_cli: object, text: str
) -> None:
    path = tmp_path / "thing.json"
    path.write_text(text)
    assert_one_line_exit_2(run_cli("inspect", path))  # type: ignore[operator]
    for fmt in ("json", "keras-json", "tfjs"):
        assert_one_line_exit_2(run_cli("inspect", path, "--from", fmt))  # type: ignore[operator]


def test_keras_json_with_wrong_value_types_says_which(tmp_path: Path) -> None:
    # Both keys present: the message used to claim they were missing.
    path = tmp_path / "model.json"
    path.write_text('{"class_name": 5, "config": {}}')
    with pytest.raises(InputError, match="'class_name' must be a string"):
        keras_json.read(path, OPTIONS)


@pytest.mark.parametrize("shard", ["../outside.bin", "/etc/passwd", "http://x/y.bin"])
def test_cli_escaping_shard_exit_2(tmp_path: Path, run_cli: object, shard: str) -> None:
    folder = tfjs_folder(tmp_path, [shard])
    assert_one_line_exit_2(run_cli("inspect", folder))  # type: ignore[operator]
    assert_one_line_exit_2(run_cli("inspect", folder / "model.json"))  # type: ignore[operator]


def test_cli_shard_size_mismatch_exit_2(tmp_path: Path, run_cli: object) -> None:
    folder = tfjs_folder(tmp_path, ["group1-shard1of1.bin"], 15)
    assert_one_line_exit_2(run_cli("inspect", folder))  # type: ignore[operator]


def _two_layer_config() -> dict[str, Any]:
    dense = {"name": "d", "units": 2, "batch_input_shape": [None, 3]}
    return {
        "class_name": "Sequential",
        "module": "keras",
        "config": {"name": "m", "layers": [{"class_name": "Dense", "config": dense}]},
    }


def _damaged(change: str) -> dict[str, Any]:
    config = _two_layer_config()
    if change == "module-a-list":
        config["module"] = []
    elif change == "layers-an-int":
        config["class_name"] = "NotAModel"  # read as a subclassed model
        config["config"]["layers"] = 3
    elif change == "node-null":  # Sequential ignores nodes; migration did not
        config["config"]["layers"][0]["inbound_nodes"] = [None]
    else:  # a layer config that is a list, as only nested models have
        config["config"]["layers"].append(
            {"class_name": "Dropout", "config": [None], "name": "x"}
        )
    return config


@pytest.mark.parametrize(
    "change", ["module-a-list", "layers-an-int", "layer-config", "node-null"]
)
def test_keras_config_damage_blocks_migration_with_a_reason(
    tmp_path: Path, change: str
) -> None:
    """Such configs read, but the Keras 3 migration (run by inspect and by
    conversion to .keras) met them with TypeError or AttributeError."""
    from modelconv.inspect import inspect_model
    from modelconv.migrate import migrate_keras3

    path = tmp_path / "model.json"
    path.write_text(json.dumps(_damaged(change)))
    model = keras_json.read(path, OPTIONS)
    report = inspect_model(model, path)
    assert any("not convertible to Keras 3" in w for w in report.warnings)
    with pytest.raises(InputError):
        migrate_keras3(model)


def test_unknown_json_is_not_guessed(tmp_path: Path) -> None:
    from modelconv.formats import detect

    path = tmp_path / "thing.json"
    path.write_text('{"hello": "world"}')
    with pytest.raises(UnknownFormatError):
        detect(path)


def test_lone_surrogate_in_a_keras_config_is_refused_up_front(
    tmp_path: Path, run_cli: Any
) -> None:
    """No UTF-8 file can hold it, so the model could never be written back."""
    path = tmp_path / "s.json"
    layer = {"name": "\\udfff", "units": 2, "batch_input_shape": [None, 3]}
    text = json.dumps(
        {
            "class_name": "Sequential",
            "config": {
                "name": "m",
                "layers": [{"class_name": "Dense", "config": layer}],
            },
        }
    ).replace("\\\\udfff", "\\udfff")
    path.write_text(text, encoding="ascii")
    for args in (("inspect", path), ("convert", path, tmp_path / "s.h5")):
        result = run_cli(*args)
        assert result.exit_code == 2
        assert "lone surrogate" in result.stderr
        assert "Traceback" not in result.stderr
    assert not (tmp_path / "s.h5").exists()


def test_names_the_terminal_cannot_encode_are_escaped(tmp_path: Path) -> None:
    """modelconv JSON keeps a lone surrogate in a tensor name; inspect shows it
    escaped instead of failing (a real process, with a real stdout)."""
    import subprocess
    import sys

    import numpy as np

    from modelconv import api
    from modelconv.model import ArraySource, Model, Role, Tensor

    source = ArraySource(np.ones(2, np.float32))
    tensor = Tensor("a\ud800b", "float32", (2,), Role.WEIGHT, (), source)
    api.save(Model(tensors=(tensor,)), tmp_path / "m.json")
    done = subprocess.run(
        [sys.executable, "-m", "modelconv", "inspect", str(tmp_path / "m.json")],
        capture_output=True,
        env={**os.environ, "COLUMNS": "100"},
    )
    assert done.returncode == 0, done.stderr
    assert b"a\\ud800b" in done.stdout
