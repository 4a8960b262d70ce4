"""save/convert: atomic writes, no silent overwrite, no silent loss."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from modelconv import api
from modelconv.errors import (
    DestinationExistsError,
    LossyConversionError,
    ReadBackMismatchError,
    UsageError,
)
from modelconv.model import ArraySource, Model, Role, Tensor

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"
load, convert = api.load, api.convert


def small_model() -> Model:
    return Model(
        tensors=(
            Tensor(
                "dense/kernel",
                "float64",
                (2, 3),
                source=ArraySource(np.arange(6.0).reshape(2, 3)),
            ),
            Tensor(
                "optimizer/m",
                "float32",
                (3,),
                role=Role.OPTIMIZER,
                source=ArraySource(np.ones(3, "f4")),
            ),
        )
    )


def leftovers(folder: Path) -> list[str]:
    return [p.name for p in folder.iterdir() if ".modelconv-" in p.name]


def test_existing_destination_needs_force(tmp_path: Path) -> None:
    dest = tmp_path / "m.npz"
    dest.write_bytes(b"keep me")
    with pytest.raises(DestinationExistsError, match="--force"):
        api.save(small_model(), dest)
    assert dest.read_bytes() == b"keep me"
    api.save(small_model(), dest, force=True)
    with api.load(dest) as back:
        assert back.names == ("dense/kernel", "optimizer/m")
    assert leftovers(tmp_path) == []


def test_a_failing_writer_leaves_nothing_behind(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from modelconv.formats import get_format

    module = get_format("npz").load()

    def broken(model, path, options):  # type: ignore[no-untyped-def]
        Path(path).write_bytes(b"half")
        raise OSError("disk full")

    monkeypatch.setattr(module, "write", broken)
    with pytest.raises(OSError):
        api.save(small_model(), tmp_path / "m.npz")
    assert list(tmp_path.iterdir()) == []


def test_read_back_mismatch_keeps_the_destination(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from modelconv.formats import get_format

    module = get_format("npz").load()
    real_write = module.write

    def corrupting(model, path, options):  # type: ignore[no-untyped-def]
        first = model.tensors[0]
        bad = first.read().copy()
        bad.flat[0] += 1
        changed = first.replace(source=ArraySource(bad))
        real_write(model.replace(tensors=(changed, *model.tensors[1:])), path, options)

    monkeypatch.setattr(module, "write", corrupting)
    dest = tmp_path / "m.npz"
    dest.write_bytes(b"old")
    with pytest.raises(ReadBackMismatchError) as info:
        api.save(small_model(), dest, force=True)
    assert info.value.exit_code == 3
    assert dest.read_bytes() == b"old"
    assert leftovers(tmp_path) == []


def test_lossy_target_is_refused_then_allowed(tmp_path: Path) -> None:
    model = small_model()
    with pytest.raises(LossyConversionError, match="float64"):
        api.save(model, tmp_path / "out", format="tfjs")
    assert list(tmp_path.iterdir()) == []


def test_drop_and_cast_are_explicit_losses(tmp_path: Path) -> None:
    report = api.save(
        small_model(), tmp_path / "m.npz", drop=["optimizer"], cast="float16"
    )
    assert report.dropped == ("optimizer/m",)
    assert report.casts == ("dense/kernel: float64 -> float16",)
    with api.load(tmp_path / "m.npz") as back:
        (tensor,) = back.tensors
        assert tensor.dtype == "float16"
        assert np.array_equal(tensor.read(), np.arange(6.0, dtype="f2").reshape(2, 3))


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"format": "npz", "target_keras": "keras2"}, "--for applies"),
        ({"format": "npz", "compress": "lz4"}, "npz writer knows"),
        ({"format": "npz", "compress": "zlib:x"}, "integer"),
        ({"format": "npz", "flavour": "tree"}, "does not apply"),
        ({"format": "nope"}, "unknown format"),
    ],
)
def test_options_that_do_not_apply_are_usage_errors(
    tmp_path: Path, options: dict, message: str
) -> None:
    with pytest.raises(UsageError, match=message):
        api.save(small_model(), tmp_path / "m.npz", **options)


def test_convert_refuses_to_write_over_its_source(tmp_path: Path) -> None:
    src = tmp_path / "m.npz"
    api.save(small_model(), src)
    with pytest.raises(UsageError, match="same file"):
        api.convert(src, src, force=True)


def test_cli_convert_round_trip_and_json_report(run_cli, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    src = tmp_path / "m.npz"
    api.save(small_model(), src)
    result = run_cli("convert", src, tmp_path / "m.h5", "--json")
    assert result.exit_code == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["schema"] == 1 and report["tensors"] == 2
    again = run_cli("convert", src, tmp_path / "m.h5")
    assert again.exit_code == 2 and "--force" in again.stderr
    assert len(again.stderr.strip().splitlines()) == 1


def test_public_functions_stay_callable_after_their_modules_load() -> None:
    """modelconv.inspect/diff/verify are functions even once the submodules of
    the same names have been imported (as the CLI and renderers do)."""
    import importlib

    import modelconv

    for name in ("inspect", "diff", "verify", "render"):
        importlib.import_module(f"modelconv.{name}")
    path = FIXTURES / "k3_iris_mlp.h5"
    with modelconv.load(path) as model:
        assert modelconv.inspect(model, path).total_params == 2499
    assert modelconv.diff(path, FIXTURES / "k3_iris_mlp.keras").identical
    assert callable(modelconv.verify)


@pytest.mark.parametrize(
    ("source", "target", "options", "left_out"),
    [
        # Keras 3 optimizer state has no tf_keras layout.
        ("k3_iris_mlp.keras", "old.h5", {"target_keras": "keras2"}, "optimizer"),
        # A Keras 2 optimizer's state has no Keras 3 layout.
        ("tfk_iris_mlp.h5", "new.keras", {}, "optimizer"),
        # tf_keras metric state has no place in a .keras archive.
        ("tfk_iris_mlp.keras", "new.keras", {}, "state"),
    ],
)
def test_allowed_losses_leave_tensors_out_and_say_so(
    source: str, target: str, options: dict[str, str], left_out: str, tmp_path: Path
) -> None:
    """A writer's left-out tensors are refused, then dropped and reported when
    allowed; the read-back check compares what was really written."""
    from modelconv.errors import LossyConversionError

    src, dst = FIXTURES / source, tmp_path / target
    with pytest.raises(LossyConversionError, match=f"--drop {left_out}"):
        convert(src, dst, **options)
    assert not dst.exists()
    report = convert(src, dst, allow_lossy=True, **options)
    with load(src) as original, load(dst) as written:
        expected = {t.name for t in original.by_role(left_out)}
        assert expected and set(report.dropped) >= expected
        assert report.tensors == len(written.tensors)
        assert not written.by_role(left_out)
        assert written.by_role("weight")
