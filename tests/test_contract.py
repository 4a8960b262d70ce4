"""The contract every registered format keeps, and the capability matrix.

For each writable format, random models restricted to what its capabilities
claim are saved through the public API, read back and compared bit for bit,
names and roles included. A capability the registry claims but a format does
not keep fails here; docs/formats.md's matrix is generated from the same
registry and checked against it.
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
