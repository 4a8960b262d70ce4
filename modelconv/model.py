"""The intermediate representation: Model, Layer, Tensor.

Every format reads into these records and writes from them. Tensors are lazy:
a Tensor knows its name, dtype, shape and role from the file's headers, and
reading its bytes is a separate, explicit step through its source.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from contextlib import ExitStack
from dataclasses import dataclass, field, replace
from enum import Enum
from math import prod
from typing import Any, Protocol, runtime_checkable

import numpy as np

from . import dtypes
from .accel import crc32
from .errors import InputError
from .limits import CHUNK_BYTES


class Role(str, Enum):
    """What a tensor is for. Only WEIGHT counts in parameter totals."""

    WEIGHT = "weight"
    OPTIMIZER = "optimizer"
    STATE = "state"

    def __str__(self) -> str:
        return self.value


@runtime_checkable
class TensorSource(Protocol):
    """Where a tensor's bytes come from.

    ``read`` returns the whole array; ``iter_chunks`` yields 1-D pieces of the
    array in C order, each at most about ``max_bytes`` long. Both return
    arrays of the tensor's numpy dtype (native byte order is not required).
    """

    def read(self) -> np.ndarray: ...

    def iter_chunks(self, max_bytes: int) -> Iterator[np.ndarray]: ...


class ArraySource:
    """A source over an array already in memory."""

    def __init__(self, array: np.ndarray) -> None:
        self.array = array

    def read(self) -> np.ndarray:
        return self.array

    def iter_chunks(self, max_bytes: int) -> Iterator[np.ndarray]:
        flat = self.array.reshape(-1) if self.array.ndim != 1 else self.array
        if not flat.flags.c_contiguous:
            flat = np.ascontiguousarray(flat)
        step = max(1, max_bytes // max(1, flat.itemsize))
        for start in range(0, flat.size, step):
            yield flat[start : start + step]


class CallableSource:
    """A source that calls ``reader`` for the whole array.

    Chunks are cut from the full array; use it for formats whose tensors are
    small or cannot be read piecewise.
    """

    def __init__(self, reader: Callable[[], np.ndarray]) -> None:
        self._reader = reader

    def read(self) -> np.ndarray:
        return self._reader()

    def iter_chunks(self, max_bytes: int) -> Iterator[np.ndarray]:
        yield from ArraySource(self.read()).iter_chunks(max_bytes)


@dataclass(frozen=True)
class Tensor:
    """A named array: header facts plus a lazy source of its bytes."""

    name: str
    dtype: str
    shape: tuple[int, ...]
    role: Role = Role.WEIGHT
    source_names: tuple[str, ...] = ()
    source: TensorSource | None = field(default=None, compare=False, repr=False)
    # Format-specific facts a writer of the same format may use to reproduce
    # the source exactly (an HDF5 dataset attribute, a tf.js quantisation).
    attrs: Mapping[str, Any] = field(default_factory=dict, compare=False)

    def __post_init__(self) -> None:
        dtypes.check_name(self.dtype)
        object.__setattr__(self, "shape", tuple(int(d) for d in self.shape))
        object.__setattr__(self, "role", Role(self.role))
        object.__setattr__(self, "source_names", tuple(self.source_names))

    @property
    def size(self) -> int:
        """Number of elements (1 for a 0-d tensor)."""
        return prod(self.shape)

    @property
    def nbytes(self) -> int:
        return self.size * dtypes.itemsize(self.dtype)

    @property
    def numpy_dtype(self) -> np.dtype:
        return dtypes.numpy_dtype(self.dtype)

    def read(self) -> np.ndarray:
        """The whole array, checked against the declared dtype and shape."""
        if self.source is None:
            raise InputError(f"tensor {self.name!r} has no data source")
        array = np.asarray(self.source.read())
        return self._checked(array, whole=True)

    def iter_chunks(self, max_bytes: int = CHUNK_BYTES) -> Iterator[np.ndarray]:
        """1-D C-order pieces of the array, checked to add up to its size."""
        if self.source is None:
            raise InputError(f"tensor {self.name!r} has no data source")
        seen = 0
        for chunk in self.source.iter_chunks(max_bytes):
            chunk = self._checked(np.asarray(chunk), whole=False)
            seen += chunk.size
            if seen > self.size:
                break
            yield chunk
        if seen != self.size:
            raise InputError(
                f"tensor {self.name!r}: the file holds {seen} elements where its "
                f"header declares {self.size} (shape {list(self.shape)}); the file "
                "is truncated or inconsistent"
            )

    def iter_bytes(self, max_bytes: int = CHUNK_BYTES) -> Iterator[memoryview]:
        """The C-order little-endian bytes, in pieces."""
        for chunk in self.iter_chunks(max_bytes):
            chunk = dtypes.to_little_endian(chunk)
            if not chunk.flags.c_contiguous:
                chunk = np.ascontiguousarray(chunk)
            # A uint8 view, because the buffer protocol has no code for
            # bfloat16 and memoryview() refuses it.
            yield chunk.view(np.uint8).data

    def replace(self, **changes: Any) -> Tensor:
        return replace(self, **changes)

    def _checked(self, array: np.ndarray, whole: bool) -> np.ndarray:
        expected = self.numpy_dtype
        if array.dtype.newbyteorder("=") != expected and not (
            self.dtype == "bfloat16" and array.dtype.name == "bfloat16"
        ):
            raise InputError(
                f"tensor {self.name!r}: data has dtype {array.dtype} where the "
                f"header declares {self.dtype}"
            )
        if whole and tuple(array.shape) != self.shape:
            raise InputError(
                f"tensor {self.name!r}: data has shape {list(array.shape)} where "
                f"the header declares {list(self.shape)}"
            )
        return array


def digest(tensor: Tensor, max_bytes: int = CHUNK_BYTES) -> str:
    """A fast checksum (crc32) of the tensor's C-order little-endian bytes.

    Used for the read-back check after writing; sha256 is for --checksums.
    """
    crc = 0
    for piece in tensor.iter_bytes(max_bytes):
        crc = crc32(piece, crc)
    return f"crc32:{crc:08x}:{tensor.nbytes}"


@dataclass(frozen=True)
class Layer:
    """A node of the architecture graph."""

    name: str
    class_name: str
    config: Mapping[str, Any] = field(default_factory=dict, repr=False)
    inbound: tuple[str, ...] = ()
    tensor_names: tuple[str, ...] = ()
    params: int | None = None
    trainable_params: int | None = None
    # A list of dims (None for unknown), a list of such lists for several
    # outputs, or None when it cannot be inferred.
    output_shape: Any = None
    module: str | None = None
    # The shape of each weight in ``tensor_names`` order, when the config
    # determines them all; None otherwise.
    weight_shapes: tuple[tuple[int, ...], ...] | None = field(
        default=None, compare=False
    )

    @property
    def non_trainable_params(self) -> int | None:
        if self.params is None or self.trainable_params is None:
            return None
        return self.params - self.trainable_params


@dataclass(frozen=True)
class Architecture:
    """A framework config kept verbatim, plus the layers derived from it.

    ``framework`` is "keras" for Keras configs of any version (``form`` says
    1, 2 or 3 for the serialisation form) or "sklearn" for scikit-learn
    estimators. ``config`` is the source of truth; ``layers`` are derived.
    """

    framework: str
    config: Mapping[str, Any] = field(repr=False)
    layers: tuple[Layer, ...] = ()
    form: int | None = None
    total_params: int | None = None
    trainable_params: int | None = None
    warnings: tuple[str, ...] = ()

    @property
    def non_trainable_params(self) -> int | None:
        if self.total_params is None or self.trainable_params is None:
            return None
        return self.total_params - self.trainable_params

    def layer(self, name: str) -> Layer | None:
        for layer in self.layers:
            if layer.name == name:
                return layer
        return None


@dataclass(frozen=True)
class Model:
    """Architecture (optional), ordered tensors and metadata.

    ``metadata`` holds what the file said about itself: ``producer``
    (``{"name", "version"}``), ``backend``, ``training_config`` and anything
    else. ``format`` and ``flavour`` say where the model was read from.
    A Model read from a file keeps that file open until ``close``.
    """

    tensors: tuple[Tensor, ...] = ()
    architecture: Architecture | None = None
    metadata: Mapping[str, Any] = field(default_factory=dict)
    format: str = ""
    flavour: str = ""
    recognised: str | None = None
    warnings: tuple[str, ...] = ()
    migrations: tuple[str, ...] = ()
    resources: ExitStack | None = field(default=None, compare=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "tensors", tuple(self.tensors))
        seen: set[str] = set()
        for tensor in self.tensors:
            if tensor.name in seen:
                raise InputError(
                    f"two tensors are named {tensor.name!r}; tensor names must "
                    "be unique within a model"
                )
            seen.add(tensor.name)

    def tensor(self, name: str) -> Tensor:
        for tensor in self.tensors:
            if tensor.name == name:
                return tensor
        raise KeyError(name)

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(t.name for t in self.tensors)

    def by_role(self, role: Role | str) -> tuple[Tensor, ...]:
        role = Role(role)
        return tuple(t for t in self.tensors if t.role is role)

    @property
    def producer(self) -> Mapping[str, Any]:
        producer = self.metadata.get("producer") or {}
        return producer if isinstance(producer, Mapping) else {}

    def totals(self) -> tuple[int | None, int | None, int | None]:
        """(total, trainable, non-trainable) parameters.

        From the architecture when it knows them, else from the weight tensors
        (then trainability is unknown).
        """
        arch = self.architecture
        if arch is not None and arch.total_params is not None:
            return arch.total_params, arch.trainable_params, arch.non_trainable_params
        if arch is not None and arch.framework == "keras" and not self.tensors:
            return None, None, None
        total = sum(t.size for t in self.tensors if t.role is Role.WEIGHT)
        return total, None, None

    def replace(self, **changes: Any) -> Model:
        return replace(self, **changes)

    def close(self) -> None:
        if self.resources is not None:
            self.resources.close()

    def __enter__(self) -> Model:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
