"""The contract every registered format keeps, and the capability matrix.

For each writable format, random models restricted to what its capabilities
claim are saved through the public API, read back and compared bit for bit,
names and roles included. Then every cell of the matrix is checked for every
writable format, .keras and tf.js included: a model that needs the thing is
saved and read back, so a "yes" that loses it and a "no" that keeps it both
fail. docs/formats.md's matrix is generated from the same registry and
checked against it by test_cli_docs.py.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import pytest
from hypothesis import given, settings
from strategies import models

from modelconv import api
from modelconv.formats import FORMATS, FormatInfo
from modelconv.model import Model, Role, digest

WRITABLE = [info for info in FORMATS if info.writable and info.capabilities.weights]
SUFFIX = {
    "hdf5": ".h5",
    "keras": ".keras",
    "npz": ".npz",
    "json": ".json",
    "tfjs": "",
    "pickle": ".pkl",
    "joblib": ".joblib",
}
# Formats that hold an architecture-free set of named tensors. .keras and
# tf.js need a Keras architecture, so they are covered by the fixture tests.
TREE_FLAVOURS = {"hdf5": "tree"}
NEEDS_ARCHITECTURE = {"keras", "tfjs"}


def roles_for(info: FormatInfo) -> tuple[Role, ...]:
    caps = info.capabilities
    roles = [Role.WEIGHT]
    if caps.optimizer:
        roles.append(Role.OPTIMIZER)
    if caps.state:
        roles.append(Role.STATE)
    return tuple(roles)


def assert_same(written: Model, read: Model) -> None:
    assert read.names == written.names
    for want, have in zip(written.tensors, read.tensors):
        assert (have.dtype, have.shape, have.role) == (
            want.dtype,
            want.shape,
            want.role,
        )
        assert digest(have) == digest(want), want.name


@pytest.mark.parametrize(
    "info",
    [i for i in WRITABLE if i.name not in NEEDS_ARCHITECTURE],
    ids=lambda i: i.name,
)
def test_random_models_round_trip_bit_exact(info: FormatInfo) -> None:
    @settings(max_examples=40)
    @given(models(info.capabilities.dtypes, roles_for(info)))
    def check(model: Model) -> None:
        with tempfile.TemporaryDirectory() as folder:
            path = Path(folder) / f"m{SUFFIX[info.name]}"
            api.save(
                model, path, format=info.name, flavour=TREE_FLAVOURS.get(info.name)
            )
            with api.load(path, format=info.name) as back:
                assert_same(model, back)

    check()


class _NoWholeRead:
    """A source that only streams: read() of the whole array is refused."""

    def __init__(self, array) -> None:  # type: ignore[no-untyped-def]
        self.array = array

    def read(self):  # type: ignore[no-untyped-def]
        raise AssertionError("a streaming writer must not read whole tensors")

    def iter_chunks(self, max_bytes: int):  # type: ignore[no-untyped-def]
        from modelconv.model import ArraySource

        yield from ArraySource(self.array).iter_chunks(max_bytes)


@pytest.mark.parametrize(
    "info",
    [
        i
        for i in WRITABLE
        if i.capabilities.streaming_write and i.name not in NEEDS_ARCHITECTURE
    ],
    ids=lambda i: i.name,
)
def test_streaming_writers_never_read_a_whole_tensor(
    info: FormatInfo, tmp_path: Path
) -> None:
    import numpy as np

    from modelconv.model import Tensor

    big = np.arange(3 * 2**20, dtype=np.float32).reshape(3, 2**20)
    model = Model(
        tensors=(Tensor("big/kernel", "float32", big.shape, source=_NoWholeRead(big)),)
    )
    path = tmp_path / f"m{SUFFIX[info.name]}"
    api.save(model, path, format=info.name, flavour=TREE_FLAVOURS.get(info.name))
    with api.load(path, format=info.name) as back:
        chunks = list(back.tensors[0].iter_chunks(2**20))
        assert len(chunks) > 1, "a streaming reader yields the tensor in pieces"
        assert np.array_equal(np.concatenate(chunks), big.reshape(-1))


@pytest.mark.parametrize(
    "info",
    [
        i
        for i in WRITABLE
        if i.capabilities.metadata and i.name not in NEEDS_ARCHITECTURE
    ],
    ids=lambda i: i.name,
)
def test_metadata_survives_where_claimed(info: FormatInfo, tmp_path: Path) -> None:
    import numpy as np

    from modelconv.model import ArraySource, Tensor

    meta = {"producer": {"name": "keras", "version": "2.21.0"}, "note": "é"}
    model = Model(
        tensors=(Tensor("a", "int8", (2,), source=ArraySource(np.ones(2, "i1"))),),
        metadata=meta,
    )
    path = tmp_path / f"m{SUFFIX[info.name]}"
    api.save(model, path, format=info.name, flavour=TREE_FLAVOURS.get(info.name))
    with api.load(path, format=info.name) as back:
        assert back.metadata["producer"] == meta["producer"]
        assert back.metadata["note"] == "é"


# --------------------------------------------------------------------------
# Every cell of the matrix, for every format, the Keras-only ones included.
# A "yes" is a round trip that keeps the thing; a "no" is a conversion that
# refuses it, or a file that does not have it when read back. Either way a
# matrix that disagrees with the behaviour fails here.

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"
CELLS = (
    "architecture",
    "weights",
    "optimizer",
    "state",
    "bfloat16",
    "float64",
    "nan_payloads",
    "metadata",
)

# Cells where the registry and the behaviour disagree today. Each is a
# strict expected failure: it fails loudly once the behaviour or the
# registry changes, so the entry must then be removed.
KNOWN_DISAGREEMENTS: dict[tuple[str, str], str] = {}


def _cell_params() -> list[object]:
    params: list[object] = []
    for info in FORMATS:
        if not info.writable:
            continue
        for cell in CELLS:
            reason = KNOWN_DISAGREEMENTS.get((info.name, cell))
            marks = [pytest.mark.xfail(strict=True, reason=reason)] if reason else []
            params.append(
                pytest.param(info, cell, marks=marks, id=f"{info.name}-{cell}")
            )
    return params


def _keras_model() -> Model:
    """The Keras 3 iris MLP, weights only, its tensors held in memory."""
    from modelconv.model import ArraySource

    with api.load(FIXTURES / "k3_iris_mlp.h5") as model:
        weights = tuple(
            t.replace(source=ArraySource(t.read())) for t in model.by_role(Role.WEIGHT)
        )
        return model.replace(tensors=weights, resources=None)


def _needing(cell: str) -> tuple[Model, dict[str, object]]:
    """A Keras model that needs ``cell`` to survive, and the save options."""
    import numpy as np

    from modelconv.model import ArraySource, Tensor

    model = _keras_model()
    if cell == "architecture":
        # Only the architecture is at stake: other losses are allowed.
        return model, {"allow_lossy": True}
    if cell == "weights":
        return model, {}
    if cell == "nan_payloads":
        bias = model.tensor("dense/bias")
        payload = np.full(bias.shape, 0x7FC00123, np.uint32).view(np.float32)
        tensors = tuple(
            t.replace(source=ArraySource(payload)) if t is bias else t
            for t in model.tensors
        )
        return model.replace(tensors=tensors), {}
    if cell in ("bfloat16", "float64"):
        return model, {"cast": cell}
    if cell == "metadata":
        return model.replace(metadata={**model.metadata, "note": "kept?"}), {}
    role = Role.OPTIMIZER if cell == "optimizer" else Role.STATE
    if cell == "optimizer":
        name, value = "optimizer/iteration", np.array(3, np.int64)
    else:
        # State a Keras layer can own: a SeedGenerator's, as Dropout has.
        name, value = "dense/seed_generator/0", np.array([7, 0], np.uint32)
    extra = Tensor(
        name, str(value.dtype), value.shape, role=role, source=ArraySource(value)
    )
    return model.replace(tensors=model.tensors + (extra,)), {}


def _claims(info: FormatInfo, cell: str) -> bool:
    caps = info.capabilities
    if cell in ("bfloat16", "float64"):
        return cell in caps.dtypes
    return bool(getattr(caps, cell))


def _kept(cell: str, want: Model, back: Model) -> bool:
    if cell == "architecture":
        return back.architecture is not None and [
            layer.name for layer in back.architecture.layers
        ] == [layer.name for layer in want.architecture.layers]  # type: ignore[union-attr]
    if cell == "metadata":
        return back.metadata.get("note") == "kept?"
    if cell in ("optimizer", "state"):
        role = Role.OPTIMIZER if cell == "optimizer" else Role.STATE
        return len(back.by_role(role)) == len(want.by_role(role)) == 1
    dtype = cell if cell in ("bfloat16", "float64") else "float32"
    if not back.tensors or any(t.dtype != dtype for t in back.by_role(Role.WEIGHT)):
        return False
    written = {t.name: t for t in want.by_role(Role.WEIGHT)}
    return all(
        digest(t) == digest(written[t.name])
        for t in back.by_role(Role.WEIGHT)
        if t.name in written
    ) and len(back.by_role(Role.WEIGHT)) == len(written)


def _keeps(info: FormatInfo, cell: str, folder: Path) -> tuple[bool, list[str]]:
    """Whether some write flavour of ``info`` keeps ``cell``, and the refusals.

    A matrix cell is about the format: "yes" when at least one of its
    flavours carries the thing (HDF5 keeps state tensors in a tree, not in a
    Keras full-model file).
    """
    from modelconv.errors import LossyConversionError, UnsupportedError
    from modelconv.transforms import cast_floats

    model, options = _needing(cell)
    if "cast" in options:
        model, _ = cast_floats(model, str(options.pop("cast")))
    refusals: list[str] = []
    for index, flavour in enumerate((None, *info.flavours_write)):
        path = folder / f"m{index}{SUFFIX.get(info.name, '.json')}"
        try:
            api.save(
                model,
                path,
                format=info.name,
                flavour=flavour,
                allow_lossy=bool(options.get("allow_lossy")),
            )
        except (LossyConversionError, UnsupportedError) as refusal:
            refusals.append(f"{flavour}: {refusal}")
            continue
        with api.load(path, format=info.name) as back:
            if _kept(cell, model, back):
                return True, refusals
    return False, refusals


@pytest.mark.parametrize(("info", "cell"), _cell_params())
def test_matrix_cell_matches_behaviour(
    info: FormatInfo, cell: str, tmp_path: Path
) -> None:
    claimed = _claims(info, cell)
    kept, refusals = _keeps(info, cell, tmp_path)
    verdict = "no flavour kept it" if claimed else "a flavour kept it"
    assert kept == claimed, (
        f"the matrix says {info.name} {'keeps' if claimed else 'cannot keep'} "
        f"{cell}, but {verdict}" + "".join(f"\n  refused by {r}" for r in refusals)
    )


@pytest.mark.parametrize(
    "info",
    [i for i in WRITABLE if i.name in NEEDS_ARCHITECTURE],
    ids=lambda i: i.name,
)
def test_keras_formats_stream_and_keep_the_architecture(
    info: FormatInfo, tmp_path: Path
) -> None:
    model = _keras_model()
    streaming = model.replace(
        tensors=tuple(t.replace(source=_NoWholeRead(t.read())) for t in model.tensors)
    )
    path = tmp_path / f"m{SUFFIX[info.name]}"
    api.save(streaming, path, format=info.name)
    with api.load(path, format=info.name) as back:
        assert back.architecture is not None, "the architecture did not survive"
        assert [layer.name for layer in back.architecture.layers] == [
            layer.name
            for layer in model.architecture.layers  # type: ignore[union-attr]
        ]
        assert info.capabilities.architecture and info.capabilities.streaming_write
        kernel = back.tensor("dense_1/kernel")
        assert len(list(kernel.iter_chunks(1024))) > 1
        assert info.capabilities.streaming_read
        assert_same(model, back)


@pytest.mark.parametrize("info", list(FORMATS), ids=lambda i: i.name)
def test_safe_read_runs_nothing_from_the_file(
    info: FormatInfo, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Reading calls no unpickler, no unmarshaller and no pickling np.load."""
    import marshal
    import pickle

    import numpy as np

    model = _keras_model()
    path = tmp_path / f"m{SUFFIX.get(info.name, '.json')}"
    api.save(model, path, format=info.name, allow_lossy=True)

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("a reader tried to run code from the file")

    real_np_load = np.load

    def np_load(*args: object, **kwargs: object) -> object:
        if kwargs.get("allow_pickle"):
            refuse()
        return real_np_load(*args, **kwargs)  # type: ignore[call-overload]

    for target, name in (
        (pickle, "load"),
        (pickle, "loads"),
        (pickle, "Unpickler"),
        (marshal, "loads"),
    ):
        monkeypatch.setattr(target, name, refuse)
    monkeypatch.setattr(np, "load", np_load)
    assert info.capabilities.safe_read
    with api.load(path, format=info.name) as back:
        for tensor in back.tensors:
            tensor.read()
