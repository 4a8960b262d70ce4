"""inspect: a Model (plus the file it came from) ─▶ an InspectReport record.

Without checksums or stats this reads headers only; with them, each tensor is
streamed once in chunks.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from . import dtypes
from .callable_module import make_callable
from .errors import ModelconvError
from .model import Model, Role, Tensor


@dataclass(frozen=True)
class Stats:
    min: float | None
    max: float | None
    mean: float | None
    std: float | None
    nan_count: int
    inf_count: int

    def to_json(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass(frozen=True)
class TensorInfo:
    name: str
    role: str
    dtype: str
    shape: tuple[int, ...]
    nbytes: int
    source_names: tuple[str, ...]
    sha256: str | None = None
    stats: Stats | None = None

    def to_json(self) -> dict[str, Any]:
        doc: dict[str, Any] = {
            "name": self.name,
            "role": self.role,
            "dtype": self.dtype,
            "shape": list(self.shape),
            "nbytes": self.nbytes,
            "source_names": list(self.source_names),
        }
        if self.sha256 is not None:
            doc["sha256"] = self.sha256
        if self.stats is not None:
            doc["stats"] = self.stats.to_json()
        return doc


@dataclass(frozen=True)
class LayerInfo:
    name: str
    class_name: str
    params: int | None
    trainable_params: int | None
    output_shape: Any
    inbound: tuple[str, ...]

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "class_name": self.class_name,
            "params": self.params,
            "trainable_params": self.trainable_params,
            "output_shape": self.output_shape,
            "inbound": list(self.inbound),
        }


@dataclass(frozen=True)
class InspectReport:
    path: str
    format: str
    flavour: str
    producer: dict[str, Any]
    backend: str | None
    file_size: int | None
    recognised: str | None
    migrations: tuple[str, ...]
    warnings: tuple[str, ...]
    layers: tuple[LayerInfo, ...]
    tensors: tuple[TensorInfo, ...]
    total_params: int | None
    trainable_params: int | None
    non_trainable_params: int | None
    total_bytes: int
    has_architecture: bool = False
    metadata: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "schema": 1,
            "path": self.path,
            "format": self.format,
            "flavour": self.flavour,
            "producer": self.producer,
            "backend": self.backend,
            "file_size": self.file_size,
            "recognised": self.recognised,
            "migrations": list(self.migrations),
            "warnings": list(self.warnings),
            "layers": [layer.to_json() for layer in self.layers],
            "tensors": [tensor.to_json() for tensor in self.tensors],
            "total_params": self.total_params,
            "trainable_params": self.trainable_params,
            "non_trainable_params": self.non_trainable_params,
            "total_bytes": self.total_bytes,
        }


def inspect_model(
    model: Model,
    path: str | Path,
    *,
    checksums: bool = False,
    stats: bool = False,
) -> InspectReport:
    """Describe ``model`` (read from ``path``) as a plain record."""
    path = Path(path)
    file_size = _size_on_disk(path)
    arch = model.architecture
    layers = tuple(
        LayerInfo(
            layer.name,
            layer.class_name,
            layer.params,
            layer.trainable_params,
            layer.output_shape,
            layer.inbound,
        )
        for layer in (arch.layers if arch is not None else ())
    )
    tensors = tuple(_tensor_info(t, checksums, stats) for t in model.tensors)
    total, trainable, non_trainable = model.totals()
    migrations, blocked = _planned_migrations(model)
    producer = dict(model.producer) or {"name": None, "version": None}
    backend = model.metadata.get("backend")
    return InspectReport(
        path=str(path),
        format=model.format,
        flavour=model.flavour,
        producer={"name": producer.get("name"), "version": producer.get("version")},
        backend=backend if isinstance(backend, str) else None,
        file_size=file_size,
        recognised=model.recognised,
        migrations=migrations,
        warnings=_warnings(model) + blocked,
        layers=layers,
        tensors=tensors,
        total_params=total,
        trainable_params=trainable,
        non_trainable_params=non_trainable,
        total_bytes=sum(t.nbytes for t in model.tensors),
        has_architecture=arch is not None,
    )


def _size_on_disk(path: Path) -> int | None:
    try:
        if path.is_dir():
            return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
        return path.stat().st_size
    except OSError:
        return None


def _planned_migrations(model: Model) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """The rules that would bring this model to Keras 3, and why not if none can.

    A model that cannot be migrated still inspects; the reason becomes a
    warning, so that ``convert`` to ``.keras`` is not a surprise.
    """
    if model.migrations:
        return tuple(model.migrations), ()
    if model.architecture is None or model.architecture.framework != "keras":
        return (), ()
    from .migrate import planned_migrations

    try:
        return tuple(planned_migrations(model)), ()
    except ModelconvError as exc:
        return (), (f"not convertible to Keras 3 as it stands: {exc}",)


def _warnings(model: Model) -> tuple[str, ...]:
    found: list[str] = list(model.warnings)
    arch = model.architecture
    if arch is not None:
        found.extend(arch.warnings)
        mentioned = {name for layer in arch.layers for name in layer.tensor_names}
        if arch.form == 1:
            # Keras 1 files keep their own names (dense_1_W -> dense_1/W, an
            # LSTM's W_i, U_i, ...), never the architecture's Keras 2+ ones:
            # a weight is mentioned when its layer is.
            mentioned = {name.rpartition("/")[0] for name in mentioned}
        if mentioned:
            loose = [
                t.name
                for t in model.tensors
                if t.role is Role.WEIGHT
                and (t.name.rpartition("/")[0] if arch.form == 1 else t.name)
                not in mentioned
            ]
            if loose:
                shown = ", ".join(loose[:5]) + (" ..." if len(loose) > 5 else "")
                found.append(
                    f"{len(loose)} weight tensors are not mentioned by the "
                    f"architecture: {shown}"
                )
    return tuple(dict.fromkeys(found))


def _tensor_info(tensor: Tensor, checksums: bool, stats: bool) -> TensorInfo:
    sha = None
    summary = None
    if checksums or stats:
        hasher = hashlib.sha256() if checksums else None
        acc = _StatsAccumulator(tensor.dtype) if stats else None
        for chunk in tensor.iter_chunks():
            if hasher is not None:
                hasher.update(dtypes.le_bytes(chunk))
            if acc is not None:
                acc.add(chunk)
        sha = hasher.hexdigest() if hasher is not None else None
        summary = acc.result() if acc is not None else None
    return TensorInfo(
        tensor.name,
        tensor.role.value,
        tensor.dtype,
        tensor.shape,
        tensor.nbytes,
        tensor.source_names,
        sha,
        summary,
    )


class _StatsAccumulator:
    """min, max, mean, std over finite values, merged chunk by chunk.

    Complex tensors are summarised by magnitude; bool as 0/1.
    """

    def __init__(self, dtype: str) -> None:
        self.dtype = dtype
        self.count = 0
        self.mean = 0.0
        self.m2 = 0.0
        self.low = math.inf
        self.high = -math.inf
        self.nans = 0
        self.infs = 0

    def add(self, chunk: np.ndarray) -> None:
        # Any bit pattern is a valid tensor: signalling NaNs warn when cast
        # and huge values overflow when squared; the figures say what came
        # of them (NaN counts, an infinite std), so numpy need not also warn.
        with np.errstate(all="ignore"):
            self._add(chunk)

    def _add(self, chunk: np.ndarray) -> None:
        if self.dtype in dtypes.COMPLEX_NAMES:
            self.nans += int(np.count_nonzero(np.isnan(chunk)))
            self.infs += int(np.count_nonzero(np.isinf(chunk)))
            values = np.abs(chunk).astype(np.float64)
        else:
            values = chunk.astype(np.float64)
            self.nans += int(np.count_nonzero(np.isnan(values)))
            self.infs += int(np.count_nonzero(np.isinf(values)))
        values = values[np.isfinite(values)]
        if values.size == 0:
            return
        n = values.size
        mean = float(values.mean())
        m2 = float(((values - mean) ** 2).sum())
        total = self.count + n
        delta = mean - self.mean
        self.mean += delta * n / total
        self.m2 += m2 + delta * delta * self.count * n / total
        self.count = total
        self.low = min(self.low, float(values.min()))
        self.high = max(self.high, float(values.max()))

    def result(self) -> Stats:
        if self.count == 0:
            return Stats(None, None, None, None, self.nans, self.infs)
        std = math.sqrt(self.m2 / self.count)
        return Stats(self.low, self.high, self.mean, std, self.nans, self.infs)


make_callable(__name__, inspect_model)
