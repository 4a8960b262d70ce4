"""Lazy transformations of a Model before writing: drop, cast, fit a format.

Each returns a new Model whose changed tensors read through a wrapping
source, so nothing is loaded until the writer asks for it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

import numpy as np

from . import dtypes
from .errors import UsageError
from .formats.base import Capabilities, Loss
from .model import Model, Role, Tensor


class CastSource:
    """Reads ``tensor`` and casts it to ``dtype`` on the fly."""

    def __init__(self, tensor: Tensor, dtype: str) -> None:
        self.tensor = tensor
        self.target = dtypes.numpy_dtype(dtype)

    def read(self) -> np.ndarray:
        return self.tensor.read().astype(self.target)

    def iter_chunks(self, max_bytes: int) -> Iterator[np.ndarray]:
        for chunk in self.tensor.iter_chunks(max_bytes):
            yield chunk.astype(self.target)


def nearest_dtype(name: str, allowed: Iterable[str]) -> str | None:
    """The dtype in ``allowed`` that holds ``name`` best, or None."""
    allowed = set(allowed)
    if name in allowed:
        return name
    if name in dtypes.FLOAT_NAMES:
        order = ["float32", "float64", "float16"]
    elif name in dtypes.COMPLEX_NAMES:
        order = ["complex64", "complex128"]
    elif name in dtypes.INT_NAMES:
        order = ["int32", "int64", "float32"]
    else:  # bool
        order = ["uint8", "int32"]
    for candidate in order:
        if candidate in allowed:
            return candidate
    return None


@dataclass(frozen=True)
class Plan:
    """A model fitted to a target, and what fitting it cost."""

    model: Model
    losses: tuple[Loss, ...]
    dropped: tuple[str, ...]
    casts: tuple[str, ...]


def drop_roles(model: Model, roles: Iterable[str]) -> tuple[Model, tuple[str, ...]]:
    """Leave out every tensor whose role is in ``roles`` (--drop)."""
    wanted = {Role(r) for r in roles}
    kept = tuple(t for t in model.tensors if t.role not in wanted)
    dropped = tuple(t.name for t in model.tensors if t.role in wanted)
    return model.replace(tensors=kept), dropped


def cast_floats(model: Model, dtype: str) -> tuple[Model, tuple[str, ...]]:
    """Cast every floating tensor to ``dtype`` (--cast)."""
    if dtype not in dtypes.FLOAT_NAMES:
        raise UsageError(
            f"--cast {dtype!r}: only floating dtypes can be cast to "
            f"({', '.join(sorted(dtypes.FLOAT_NAMES))})"
        )
    tensors, casts = [], []
    for tensor in model.tensors:
        if tensor.dtype in dtypes.FLOAT_NAMES and tensor.dtype != dtype:
            casts.append(f"{tensor.name}: {tensor.dtype} -> {dtype}")
            tensor = tensor.replace(dtype=dtype, source=CastSource(tensor, dtype))
        tensors.append(tensor)
    return model.replace(tensors=tuple(tensors)), tuple(casts)


def fit_to_capabilities(
    model: Model,
    caps: Capabilities,
    fmt: str,
    keeps_stored: Callable[[Tensor], bool] | None = None,
) -> Plan:
    """Drop and cast what a format with ``caps`` cannot hold, listing each loss.

    ``keeps_stored`` (from the format module) says which tensors the writer
    reproduces in a stored form of their own, whatever their dtype: a tf.js
    tensor still quantised as uint8 is written back quantised, not cast.
    """
    losses: list[Loss] = []
    dropped: list[str] = []
    casts: list[str] = []
    tensors: list[Tensor] = []
    if model.architecture is not None and not caps.architecture:
        losses.append(Loss("architecture", f"{fmt} cannot hold the architecture"))
    for tensor in model.tensors:
        carried = caps.weights and (
            tensor.role is Role.WEIGHT
            or (tensor.role is Role.OPTIMIZER and caps.optimizer)
            or (tensor.role is Role.STATE and caps.state)
        )
        if not carried:
            dropped.append(tensor.name)
            continue
        if keeps_stored is not None and keeps_stored(tensor):
            tensors.append(tensor)
            continue
        target = nearest_dtype(tensor.dtype, caps.dtypes)
        if target is None:
            dropped.append(tensor.name)
            losses.append(
                Loss(
                    "dtype", f"{tensor.name}: {fmt} has no dtype to hold {tensor.dtype}"
                )
            )
            continue
        if target != tensor.dtype:
            casts.append(f"{tensor.name}: {tensor.dtype} -> {target}")
            tensor = tensor.replace(dtype=target, source=CastSource(tensor, target))
        tensors.append(tensor)
    if dropped:
        by_role: dict[str, int] = {}
        for name in dropped:
            role = model.tensor(name).role.value
            by_role[role] = by_role.get(role, 0) + 1
        counts = ", ".join(f"{n} {role}" for role, n in by_role.items())
        losses.append(
            Loss("tensors", f"{fmt} cannot hold {len(dropped)} tensors ({counts})")
        )
    if casts:
        losses.append(
            Loss(
                "dtype",
                f"{fmt} cannot hold {len(casts)} tensors' dtypes exactly: "
                + "; ".join(casts[:5])
                + (" ..." if len(casts) > 5 else ""),
            )
        )
    fitted = model.replace(tensors=tuple(tensors))
    return Plan(fitted, tuple(losses), tuple(dropped), tuple(casts))
