"""Hypothesis strategies for random models: every dtype, odd shapes and names."""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
from hypothesis import strategies as st

from modelconv import dtypes
from modelconv.model import ArraySource, Model, Role, Tensor

NAME_PARTS = st.sampled_from(
    ["dense", "kernel", "bias", "a", "b", "..", ".", "é", "层", "x y", "k:0", ""]
)


@st.composite
def tensor_names(draw: st.DrawFn, count: int) -> list[str]:
    """Unique names, some colliding as paths (``a`` beside ``a/b``)."""
    names: list[str] = []
    while len(names) < count:
        parts = draw(st.lists(NAME_PARTS, min_size=1, max_size=3))
        name = "/".join(parts)
        if draw(st.booleans()) and names:
            name = names[-1] + "/" + name  # a path below an existing tensor
        if name and name not in names:
            names.append(name)
    return names


@st.composite
def arrays(draw: st.DrawFn, dtype: str) -> np.ndarray:
    shape = draw(st.lists(st.integers(0, 4), min_size=0, max_size=3).map(tuple))
    size = int(np.prod(shape)) if shape else 1
    if dtype == "bool":
        raw = draw(st.lists(st.booleans(), min_size=size, max_size=size))
        return np.array(raw, dtype=bool).reshape(shape)
    width = dtypes.itemsize(dtype)
    # Raw bytes reach every bit pattern: NaN payloads, -0.0, subnormals.
    data = draw(st.binary(min_size=size * width, max_size=size * width))
    special = draw(st.sampled_from([b"", b"\x00" * width]))
    if special and size:
        data = special + data[width:]
    array = np.frombuffer(data, dtype=dtypes.storage_dtype(dtype)).copy()
    return array.view(dtypes.numpy_dtype(dtype)).reshape(shape)


@st.composite
def models(
    draw: st.DrawFn,
    allowed_dtypes: Iterable[str] = dtypes.DTYPE_NAMES,
    roles: Iterable[Role] = tuple(Role),
    max_tensors: int = 5,
) -> Model:
    allowed = sorted(allowed_dtypes)
    role_list = list(roles)
    count = draw(st.integers(0, max_tensors))
    names = draw(tensor_names(count))
    tensors = []
    for name in names:
        dtype = draw(st.sampled_from(allowed))
        array = draw(arrays(dtype))
        tensors.append(
            Tensor(
                name=name,
                dtype=dtype,
                shape=array.shape,
                role=draw(st.sampled_from(role_list)),
                source_names=(name,),
                source=ArraySource(array),
            )
        )
    return Model(tensors=tuple(tensors), metadata={"note": "hypothesis"})
