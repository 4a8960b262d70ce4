"""The one dtype vocabulary.

modelconv speaks of dtypes by name, from a closed list. numpy dtypes are
derived from the names; bfloat16 comes from ml_dtypes, imported only when a
bfloat16 tensor is actually met.
"""

from __future__ import annotations

from functools import cache

import numpy as np

from .errors import UnsupportedDtypeError

DTYPE_NAMES: tuple[str, ...] = (
    "bool",
    "int8",
    "int16",
    "int32",
    "int64",
    "uint8",
    "uint16",
    "uint32",
    "uint64",
    "float16",
    "bfloat16",
    "float32",
    "float64",
    "complex64",
    "complex128",
)

FLOAT_NAMES = frozenset({"float16", "bfloat16", "float32", "float64"})
COMPLEX_NAMES = frozenset({"complex64", "complex128"})
INT_NAMES = frozenset(
    {"int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64"}
)

_ITEMSIZE = {
    "bool": 1,
    "int8": 1,
    "int16": 2,
    "int32": 4,
    "int64": 8,
    "uint8": 1,
    "uint16": 2,
    "uint32": 4,
    "uint64": 8,
    "float16": 2,
    "bfloat16": 2,
    "float32": 4,
    "float64": 8,
    "complex64": 8,
    "complex128": 16,
}


def check_name(name: str) -> str:
    """Return ``name`` if it is in the closed list, else raise naming it."""
    if name not in _ITEMSIZE:
        raise UnsupportedDtypeError(
            f"unsupported dtype {name!r}; modelconv carries only "
            f"{', '.join(DTYPE_NAMES)}"
        )
    return name


def itemsize(name: str) -> int:
    """Bytes per element of the dtype called ``name``."""
    return _ITEMSIZE[check_name(name)]


@cache
def _bfloat16() -> np.dtype:
    import ml_dtypes

    return np.dtype(ml_dtypes.bfloat16)


def numpy_dtype(name: str) -> np.dtype:
    """The native-order numpy dtype for ``name`` (bfloat16 via ml_dtypes)."""
    check_name(name)
    if name == "bfloat16":
        return _bfloat16()
    return np.dtype(name)


def storage_dtype(name: str) -> np.dtype:
    """The little-endian dtype used to store ``name`` in files.

    bfloat16 is stored as its uint16 bit pattern, so that numpy alone can read
    modelconv's files; the header records the real dtype.
    """
    check_name(name)
    if name == "bfloat16":
        return np.dtype("<u2")
    return np.dtype(name).newbyteorder("<")


def dtype_name(dtype: np.dtype | str | type) -> str:
    """The closed-list name of a numpy dtype, in either byte order.

    Raises UnsupportedDtypeError for strings, objects, structured dtypes,
    float8 and anything else not in the list.
    """
    dt = np.dtype(dtype)
    if dt.name == "bfloat16":
        return "bfloat16"
    if dt.fields is not None or dt.subdtype is not None:
        raise UnsupportedDtypeError(
            f"unsupported dtype {dt.str!r} (structured); modelconv carries only "
            "plain numeric and bool tensors"
        )
    if dt.kind in "biufc":
        name = dt.newbyteorder("=").name
        if name in _ITEMSIZE:
            return name
    raise UnsupportedDtypeError(
        f"unsupported dtype {dt.name!r} ({dt.str}); modelconv carries only "
        f"{', '.join(DTYPE_NAMES)}"
    )


def to_little_endian(array: np.ndarray) -> np.ndarray:
    """``array`` with little-endian byte order, copying only when needed."""
    dt = array.dtype
    if dt.byteorder == ">" or (dt.byteorder == "=" and not _NATIVE_LITTLE):
        return array.astype(dt.newbyteorder("<"))
    return array


_NATIVE_LITTLE = np.little_endian


def le_bytes(array: np.ndarray) -> memoryview:
    """The C-order little-endian bytes of ``array`` as a flat uint8 view.

    Copies only when the array is big-endian or not C-contiguous. The uint8
    view is needed because the buffer protocol has no code for bfloat16.
    """
    array = to_little_endian(np.asarray(array))
    if not array.flags.c_contiguous:
        array = np.ascontiguousarray(array)
    return array.reshape(-1).view(np.uint8).data
