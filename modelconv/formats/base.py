"""The contract every format module follows.

A format module exposes four names:

``sniff(probe: Probe) -> int``
    0 when the content is not this format; otherwise a confidence, where 100
    means the magic bytes and structure are certain and 10 means only the
    extension agrees. Sniffing must be cheap: use ``probe.head`` and at most a
    look at a zip's or folder's listing.
``read(path: Path, options: ReadOptions) -> Model``
    Parse headers into a Model whose tensors read lazily. Nothing from the
    file is executed. Open files go in ``Model.resources``.
``write(model: Model, path: Path, options: WriteOptions) -> None``
    Write to ``path`` (a temporary file, or an empty temporary folder for
    folder formats, chosen by the core), streaming one tensor at a time.
``losses(model: Model, options: WriteOptions) -> list[Loss]``
    What writing ``model`` would fail to carry (dtypes, architecture,
    optimizer state, metadata). An empty list means lossless. The core refuses
    the write unless the user allowed the loss; a writer given a model with
    losses and ``options.allow_lossy`` drops or casts what it must.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from ..limits import DEFAULT_MAX_BYTES
from ..model import Model

HEAD_BYTES = 64 * 1024


@dataclass(frozen=True)
class Probe:
    """What sniffers look at: the path, and the first bytes of a file."""

    path: Path
    head: bytes
    is_dir: bool
    size: int

    @property
    def suffix(self) -> str:
        return self.path.suffix.lower()

    @property
    def name(self) -> str:
        return self.path.name.lower()


@dataclass(frozen=True)
class ReadOptions:
    max_bytes: int = DEFAULT_MAX_BYTES
    # Format-specific switches (for example {"dequantize": True} for tf.js).
    extra: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class WriteOptions:
    flavour: str | None = None
    # "keras2" or "keras3": the Keras line the output is meant for.
    target_keras: str | None = None
    # (name, level) for compressed writers, e.g. ("zlib", 3).
    compress: tuple[str, int | None] | None = None
    allow_lossy: bool = False
    extra: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Loss:
    """One thing a conversion would not carry."""

    what: str  # "architecture", "weights", "optimizer", "dtype", "metadata", ...
    detail: str
    # Tensors the writer leaves out when the loss is allowed. The core takes
    # them out before writing, so the read-back check and the report see
    # exactly what was written.
    tensors: tuple[str, ...] = ()

    def __str__(self) -> str:
        return self.detail


@dataclass(frozen=True)
class Capabilities:
    """What a format can carry, as the capability matrix states it."""

    architecture: bool
    weights: bool
    optimizer: bool
    dtypes: frozenset[str]
    nan_payloads: bool
    metadata: bool
    streaming_read: bool
    streaming_write: bool
    safe_read: bool = True
    # Tensors of role "state" (metric state, label vocabularies, ...).
    state: bool = True


class FormatModule(Protocol):
    def sniff(self, probe: Probe) -> int: ...

    def read(self, path: Path, options: ReadOptions) -> Model: ...

    def write(self, model: Model, path: Path, options: WriteOptions) -> None: ...

    def losses(self, model: Model, options: WriteOptions) -> list[Loss]: ...
