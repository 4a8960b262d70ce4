"""The public API: load, save, convert.

``save`` never writes in place: it writes a temporary file (or folder) beside
the destination, reads it back and compares every tensor with what was
written (checksums taken while writing), and only then moves it into place.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from . import dtypes
from .accel import crc32
from .errors import (
    DestinationExistsError,
    InputError,
    LossyConversionError,
    ReadBackMismatchError,
    UsageError,
)
from .formats import FORMATS, FormatInfo, detect, get_format
from .formats.base import Loss, ReadOptions, WriteOptions
from .limits import DEFAULT_MAX_BYTES
from .model import Model, Tensor, digest
from .transforms import Plan, cast_floats, drop_roles, fit_to_capabilities

Progress = Callable[[int, int], None]

# Compressors each writer understands; anything else is a usage error.
COMPRESSORS: dict[str, tuple[str, ...]] = {
    "hdf5": ("gzip", "lzf"),
    "npz": ("deflate", "zlib"),
    "joblib": ("zlib", "gzip", "bz2", "lzma", "xz", "lz4"),
}
TARGET_KERAS = ("keras2", "keras3")


def load(
    path: str | os.PathLike[str],
    *,
    format: str | None = None,
    weights: str | os.PathLike[str] | None = None,
    weights_format: str | None = None,
    max_bytes: int = DEFAULT_MAX_BYTES,
    extra: dict[str, Any] | None = None,
) -> Model:
    """Read the model at ``path`` (format sniffed unless given); weights lazy.

    ``weights`` attaches a weights-only file to an architecture-only model
    (a ``to_json()`` file beside ``save_weights`` output, for example).
    """
    source = Path(path)
    info = get_format(format) if format else detect(source)
    options = ReadOptions(max_bytes=max_bytes, extra=dict(extra or {}))
    model = info.load().read(source, options)
    if not model.format:
        model = model.replace(format=info.name)
    if weights is not None:
        from .attach import attach_weights

        weights_model = load(weights, format=weights_format, max_bytes=max_bytes)
        model = attach_weights(model, weights_model)
    return model


@dataclass(frozen=True)
class ConvertReport:
    """What a conversion wrote and what it cost."""

    destination: str
    format: str
    flavour: str | None
    tensors: int
    bytes: int
    losses: tuple[str, ...] = ()
    dropped: tuple[str, ...] = ()
    casts: tuple[str, ...] = ()
    migrations: tuple[str, ...] = ()
    source: str | None = None
    source_format: str | None = None
    warnings: tuple[str, ...] = field(default=())

    def to_json(self) -> dict[str, Any]:
        return {
            "schema": 1,
            "source": self.source,
            "source_format": self.source_format,
            "destination": self.destination,
            "format": self.format,
            "flavour": self.flavour,
            "tensors": self.tensors,
            "bytes": self.bytes,
            "losses": list(self.losses),
            "dropped": list(self.dropped),
            "casts": list(self.casts),
            "migrations": list(self.migrations),
            "warnings": list(self.warnings),
        }


def format_for_path(path: Path) -> FormatInfo:
    """The output format implied by a destination's name."""
    name = path.name.lower()
    if name.endswith(".weights.h5") or name.endswith((".h5", ".hdf5")):
        return get_format("hdf5")
    if name == "model.json" and path.is_dir():
        return get_format("tfjs")
    for info in FORMATS:
        for ext in info.extensions:
            if name.endswith(ext) and info.name not in ("keras-json", "tfjs"):
                return info
    raise UsageError(
        f"cannot tell the output format from {path.name!r}; name it with --to "
        f"({', '.join(i.name for i in FORMATS)})"
    )


def save(
    model: Model,
    path: str | os.PathLike[str],
    *,
    format: str | None = None,
    flavour: str | None = None,
    target_keras: str | None = None,
    compress: str | None = None,
    force: bool = False,
    allow_lossy: bool = False,
    drop: Iterable[str] = (),
    cast: str | None = None,
    progress: Progress | None = None,
    source: str | os.PathLike[str] | None = None,
) -> ConvertReport:
    """Write ``model`` to ``path`` atomically and check it by reading it back.

    ``source`` (the file ``model`` came from) only makes error hints concrete.
    """
    dest = Path(path)
    info = get_format(format) if format else format_for_path(dest)
    module = info.load()
    options = _write_options(info, flavour, target_keras, compress, allow_lossy)
    _check_destination(dest, force)

    work, dropped = drop_roles(model, drop)
    casts: tuple[str, ...] = ()
    if cast is not None:
        work, casts = cast_floats(work, cast)
    prepare = getattr(module, "prepare", None)
    if prepare is not None:
        work = prepare(work, options)
    keeps_stored = getattr(module, "keeps_stored", None)
    plan = fit_to_capabilities(work, info.capabilities, info.name, keeps_stored)
    losses = list(plan.losses) + list(module.losses(plan.model, options))
    if model.architecture is None and any(x.what == "architecture" for x in losses):
        # No permission makes an architecture appear: say where one comes from.
        raise LossyConversionError(
            f"{info.name} output needs an architecture and this model has none "
            "(a weights-only file); attach one with `modelconv convert ARCH.json "
            f"--weights {source or 'WEIGHTS'} {dest}` (ARCH.json from "
            "model.to_json()), or write weights only (--to npz, or --to hdf5 "
            "--flavour keras-weights)"
        )
    if losses and not allow_lossy:
        raise LossyConversionError(
            f"converting to {info.name} would lose: "
            + "; ".join(str(loss) for loss in losses)
            + ". Pass --allow-lossy to accept this, or choose another format"
        )
    written, left_out = _leave_out(plan.model, losses)
    recorder = _Recorder(written, progress)
    _write_checked(module, info, recorder.model, dest, options, recorder, force)
    return ConvertReport(
        destination=str(dest),
        format=info.name,
        flavour=_written_flavour(module, info, written, options),
        tensors=len(written.tensors),
        bytes=sum(t.nbytes for t in written.tensors),
        losses=tuple(str(loss) for loss in losses),
        dropped=dropped + plan.dropped + left_out,
        casts=casts + plan.casts,
        migrations=tuple(plan.model.migrations),
        source_format=model.format or None,
        warnings=tuple(model.warnings),
    )


def _written_flavour(
    module: Any, info: FormatInfo, model: Model, options: WriteOptions
) -> str | None:
    """The flavour written: the one asked for, or the writer's default."""
    if options.flavour is not None:
        return options.flavour
    default = getattr(module, "default_flavour", None)
    if callable(default):
        return str(default(model))
    return info.flavours_write[0] if info.flavours_write else None


def _leave_out(model: Model, losses: list[Loss]) -> tuple[Model, tuple[str, ...]]:
    """The model without the tensors that allowed losses name."""
    names = {name for loss in losses for name in loss.tensors}
    if not names:
        return model, ()
    kept = tuple(t for t in model.tensors if t.name not in names)
    left_out = tuple(t.name for t in model.tensors if t.name in names)
    return model.replace(tensors=kept), left_out


def convert(
    src: str | os.PathLike[str],
    dst: str | os.PathLike[str],
    *,
    source_format: str | None = None,
    weights: str | os.PathLike[str] | None = None,
    max_bytes: int = DEFAULT_MAX_BYTES,
    **save_options: Any,
) -> ConvertReport:
    """Read ``src`` and save it to ``dst`` (see ``save`` for the options)."""
    source, dest = Path(src), Path(dst)
    if dest.exists() and source.exists() and dest.resolve() == source.resolve():
        raise UsageError(
            f"source and destination are the same file ({str(dest)!r}); "
            "modelconv never writes over its input"
        )
    model = load(source, format=source_format, weights=weights, max_bytes=max_bytes)
    with model:
        report = save(model, dest, source=source, **save_options)
    return ConvertReport(
        **{**report.__dict__, "source": str(source), "source_format": model.format}
    )


def _write_options(
    info: FormatInfo,
    flavour: str | None,
    target_keras: str | None,
    compress: str | None,
    allow_lossy: bool,
) -> WriteOptions:
    if not info.writable:
        raise UsageError(f"modelconv cannot write {info.name} files")
    if flavour is not None and flavour not in info.flavours_write:
        raise UsageError(
            f"--flavour {flavour!r} does not apply to {info.name}; choose one of "
            f"{', '.join(info.flavours_write)}"
        )
    if target_keras is not None:
        if target_keras not in TARGET_KERAS:
            raise UsageError(f"--for {target_keras!r}: choose keras2 or keras3")
        if info.name not in ("hdf5", "keras"):
            raise UsageError(
                f"--for applies to hdf5 and keras outputs, not {info.name}"
            )
    return WriteOptions(
        flavour=flavour,
        target_keras=target_keras,
        compress=_parse_compress(info, compress),
        allow_lossy=allow_lossy,
    )


def _parse_compress(
    info: FormatInfo, spec: str | None
) -> tuple[str, int | None] | None:
    if spec is None:
        return None
    name, _, level_text = spec.partition(":")
    known = COMPRESSORS.get(info.name, ())
    if name not in known:
        choices = ", ".join(known) if known else "none"
        raise UsageError(f"--compress {spec!r}: {info.name} writer knows {choices}")
    level: int | None = None
    if level_text:
        try:
            level = int(level_text)
        except ValueError:
            raise UsageError(
                f"--compress {spec!r}: the level after ':' must be an integer"
            ) from None
    return name, level


def _check_destination(dest: Path, force: bool) -> None:
    if dest.exists() and not force:
        raise DestinationExistsError(
            f"{str(dest)!r} exists; pass --force to replace it"
        )
    parent = dest.parent if str(dest.parent) else Path(".")
    if not parent.is_dir():
        raise InputError(
            f"the destination folder {str(parent)!r} does not exist; create it first"
        )


class _RecordingSource:
    """Passes a tensor's data to the writer and checksums it on the way."""

    def __init__(self, recorder: _Recorder, tensor: Tensor) -> None:
        self.recorder = recorder
        self.tensor = tensor

    def read(self) -> np.ndarray:
        array = self.tensor.read()
        crc = crc32(dtypes.le_bytes(array))
        self.recorder.record(self.tensor, crc, self.tensor.nbytes)
        return array

    def iter_chunks(self, max_bytes: int) -> Iterator[np.ndarray]:
        crc = 0
        done = 0
        for chunk in self.tensor.iter_chunks(max_bytes):
            crc = crc32(dtypes.le_bytes(chunk), crc)
            done += chunk.nbytes
            self.recorder.advance(chunk.nbytes)
            yield chunk
        if done == self.tensor.nbytes:
            self.recorder.record(self.tensor, crc, 0)


class _Recorder:
    def __init__(self, model: Model, progress: Progress | None) -> None:
        self.digests: dict[str, str] = {}
        self.progress = progress
        self.total = sum(t.nbytes for t in model.tensors)
        self.done = 0
        self.model = model.replace(
            tensors=tuple(
                t.replace(source=_RecordingSource(self, t)) for t in model.tensors
            )
        )

    def advance(self, nbytes: int) -> None:
        self.done += nbytes
        if self.progress is not None:
            self.progress(min(self.done, self.total), self.total)

    def record(self, tensor: Tensor, crc: int, nbytes: int) -> None:
        self.digests[tensor.name] = f"crc32:{crc:08x}:{tensor.nbytes}"
        if nbytes:
            self.advance(nbytes)

    def expected(self, tensor: Tensor) -> str:
        found = self.digests.get(tensor.name)
        return found if found is not None else digest(tensor)


def _temporary_path(dest: Path, folder: bool) -> Path:
    parent = dest.parent if str(dest.parent) else Path(".")
    prefix = f".{dest.name}.modelconv-"
    if folder:
        return Path(tempfile.mkdtemp(prefix=prefix, dir=parent))
    handle, name = tempfile.mkstemp(prefix=prefix, dir=parent)
    os.close(handle)
    return Path(name)


def _write_checked(
    module: Any,
    info: FormatInfo,
    model: Model,
    dest: Path,
    options: WriteOptions,
    recorder: _Recorder,
    force: bool,
) -> None:
    tmp = _temporary_path(dest, info.writes_folder)
    try:
        module.write(model, tmp, options)
        _fsync(tmp)
        written = module.read(tmp, ReadOptions(max_bytes=2**62))
        with written:
            _compare_read_back(model, written, recorder, info.name)
        _move_into_place(tmp, dest, force)
    except BaseException:
        _remove(tmp)
        raise


def _compare_read_back(
    expected: Model, written: Model, recorder: _Recorder, fmt: str
) -> None:
    exp, got = expected.tensors, written.tensors
    got_by_name = {t.name: t for t in got}
    # Pair by name where the names survive; the rest (optimizer slots a
    # .keras archive names by index) in order. A writer may reorder named
    # tensors (a .keras archive lists a nested model's weights layer by
    # layer, legacy HDF5 trainable ones first), so a single renamed tensor
    # must not send every tensor to positional pairing.
    named = [t for t in exp if t.name in got_by_name]
    kept = {t.name for t in named}
    rest_exp = [t for t in exp if t.name not in kept]
    rest_got = [t for t in got if t.name not in kept]
    if len(rest_exp) != len(rest_got):
        raise ReadBackMismatchError(
            f"{fmt} output reads back with {len(got)} tensors where "
            f"{len(exp)} were written; the output was not kept. Please report this"
        )
    pairs = [(t, got_by_name[t.name]) for t in named] + list(zip(rest_exp, rest_got))
    for want, have in pairs:
        if (want.dtype, want.shape) != (have.dtype, have.shape):
            raise ReadBackMismatchError(
                f"{fmt} output: tensor {want.name!r} reads back as {have.dtype} "
                f"{list(have.shape)}, written as {want.dtype} {list(want.shape)}; "
                "the output was not kept. Please report this"
            )
        if recorder.expected(want) != digest(have):
            raise ReadBackMismatchError(
                f"{fmt} output: tensor {want.name!r} reads back with different "
                "bytes; the output was not kept. Please report this"
            )
    if expected.architecture is not None and written.architecture is None:
        from .formats import get_format

        if get_format(fmt).capabilities.architecture:
            raise ReadBackMismatchError(
                f"{fmt} output reads back without its architecture; the output "
                "was not kept. Please report this"
            )


def _fsync(path: Path) -> None:
    """Flush the output to disk once, at the end."""
    paths = [p for p in path.rglob("*") if p.is_file()] if path.is_dir() else [path]
    for item in paths:
        with item.open("rb+") as handle:
            os.fsync(handle.fileno())


def _move_into_place(tmp: Path, dest: Path, force: bool) -> None:
    if tmp.is_dir():
        if dest.exists():
            if not force:
                raise DestinationExistsError(
                    f"{str(dest)!r} appeared while writing; pass --force to replace it"
                )
            old = dest.with_name(f".{dest.name}.modelconv-old")
            os.replace(dest, old)
            os.replace(tmp, dest)
            _remove(old)
        else:
            os.replace(tmp, dest)
        return
    if dest.exists() and not force:
        raise DestinationExistsError(
            f"{str(dest)!r} appeared while writing; pass --force to replace it"
        )
    os.replace(tmp, dest)
    os.chmod(dest, 0o644 & ~_umask())


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _remove(path: Path) -> None:
    if path.is_dir():
        shutil.rmtree(path, ignore_errors=True)
    elif path.exists():
        path.unlink()


__all__ = ["ConvertReport", "Loss", "Plan", "convert", "load", "save"]
