"""Round-trip fidelity: convert a model through formats and back, and prove
what survived.

Each format gets a FormatCheck: the model read from the intermediate file is
compared with the model read from FILE (architecture, tensor names and order,
dtypes, shapes, bytes). ``--predict`` additionally runs both in Keras, but
only through ``.keras`` files modelconv wrote itself, never the user's file.
"""

from __future__ import annotations

import importlib.util
import os
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Any

import numpy as np

from .callable_module import make_callable
from .diff import SCHEMA, ArchChange, ChangeKind, Diff, diff_models, json_value
from .errors import (
    InternalError,
    LossyConversionError,
    ModelconvError,
    UsageError,
)
from .formats import FORMATS, FormatInfo, get_format
from .formats.base import WriteOptions
from .limits import DEFAULT_MAX_BYTES
from .model import Model, Role

# Problems listed per format in the human output; --json lists them all.
MAX_PROBLEMS = 20

# Predictions of the same weights on the same inputs are computed by the same
# kernels, so they agree exactly in practice; the margin only absorbs
# reordered float sums should a backend choose another kernel.
PREDICT_RTOL = 1e-6
PREDICT_ATOL = 1e-6
# Generated inputs: unknown dimensions (the batch) get this size.
PREDICT_BATCH = 4


class VerifyStatus(str, Enum):
    PASS = "pass"
    FAIL = "fail"
    LOSSY = "lossy"
    SKIPPED = "skipped"
    ERROR = "error"

    def __str__(self) -> str:
        return self.value


FAILING = frozenset({VerifyStatus.FAIL, VerifyStatus.LOSSY, VerifyStatus.ERROR})


@dataclass(frozen=True)
class FormatCheck:
    """One format's round trip: what survived, and what did not."""

    format: str
    status: VerifyStatus
    architecture: bool | None = None
    names: bool | None = None
    dtypes: bool | None = None
    shapes: bool | None = None
    bytes: bool | None = None
    lost: tuple[str, ...] = ()
    migrations: tuple[str, ...] = ()
    reason: str | None = None
    problems: tuple[str, ...] = ()
    # Observations that are not failures (format-specific optimizer names).
    notes: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        return {
            "format": self.format,
            "status": self.status.value,
            "architecture": self.architecture,
            "names": self.names,
            "dtypes": self.dtypes,
            "shapes": self.shapes,
            "bytes": self.bytes,
            "lost": list(self.lost),
            "migrations": list(self.migrations),
            "reason": self.reason,
            "problems": list(self.problems),
            "notes": list(self.notes),
        }


@dataclass(frozen=True)
class PredictCheck:
    """Keras predictions of one round-tripped model against the source's."""

    format: str
    status: VerifyStatus
    max_abs_diff: float | None = None
    message: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "format": self.format,
            "status": self.status.value,
            "max_abs_diff": json_value(self.max_abs_diff),
            "message": self.message,
        }


@dataclass(frozen=True)
class PredictReport:
    status: VerifyStatus
    reason: str | None = None
    checks: tuple[PredictCheck, ...] = ()

    def to_json(self) -> dict[str, Any]:
        return {
            "status": self.status.value,
            "reason": self.reason,
            "checks": [check.to_json() for check in self.checks],
        }


@dataclass(frozen=True)
class Verify:
    """Everything ``modelconv verify`` reports, as plain data."""

    file: str
    formats: tuple[FormatCheck, ...]
    predict: PredictReport | None = None

    @property
    def exit_code(self) -> int:
        failed = any(check.status in FAILING for check in self.formats)
        if self.predict is not None and self.predict.status in FAILING:
            failed = True
        return 1 if failed else 0

    def to_json(self) -> dict[str, Any]:
        return {
            "schema": SCHEMA,
            "file": self.file,
            "ok": self.exit_code == 0,
            "formats": [check.to_json() for check in self.formats],
            "predict": None if self.predict is None else self.predict.to_json(),
        }


def verify_path(
    path: str | os.PathLike[str],
    *,
    via: Sequence[str] | None = None,
    weights: str | os.PathLike[str] | None = None,
    source_format: str | None = None,
    predict: bool = False,
    max_bytes: int = DEFAULT_MAX_BYTES,
) -> Verify:
    """Convert the model at ``path`` through formats and back; see module doc.

    Without ``via``, every writable format that can carry the model losslessly
    is used, and the others are listed as skipped with the reason. A format
    named in ``via`` runs even when lossy, and is then reported ``lossy``.
    """
    from . import api

    source = Path(path)
    named = _named_formats(via or ())
    model = api.load(source, format=source_format, weights=weights, max_bytes=max_bytes)
    with model, tempfile.TemporaryDirectory(prefix="modelconv-verify-") as tmp:
        work = Path(tmp)
        checks: list[FormatCheck] = []
        outputs: dict[str, Path] = {}
        for info in named or [i for i in FORMATS if i.writable]:
            check, output = check_format(model, info, work, named=bool(named))
            checks.append(check)
            if output is not None:
                outputs[info.name] = output
        report = _predict(model, checks, outputs, work) if predict else None
    return Verify(file=str(source), formats=tuple(checks), predict=report)


def _named_formats(names: Iterable[str]) -> list[FormatInfo]:
    infos: list[FormatInfo] = []
    for name in names:
        info = get_format(name)
        if not info.writable:
            raise UsageError(f"--via {name!r}: modelconv cannot write {info.name}")
        if info not in infos:
            infos.append(info)
    return infos


def format_losses(model: Model, info: FormatInfo) -> list[str]:
    """What writing ``model`` as ``info`` would lose, as ``api.save`` sees it."""
    from .transforms import fit_to_capabilities

    module = info.load()
    options = WriteOptions()
    prepare = getattr(module, "prepare", None)
    work = prepare(model, options) if prepare is not None else model
    keeps_stored = getattr(module, "keeps_stored", None)
    plan = fit_to_capabilities(work, info.capabilities, info.name, keeps_stored)
    losses = list(plan.losses) + list(module.losses(plan.model, options))
    return [str(loss) for loss in losses]


def check_format(
    model: Model, info: FormatInfo, work: Path, *, named: bool
) -> tuple[FormatCheck, Path | None]:
    """Round-trip ``model`` through ``info`` inside ``work``.

    Returns the check and the intermediate file (None when nothing was
    written), which ``--predict`` reuses.
    """
    from . import api

    try:
        losses = format_losses(model, info)
    except ImportError as exc:
        # A format module that is missing or fails to import (its writer not
        # yet part of this build) makes only that format unavailable.
        reason = "no writer for this format in this build"
        if not (exc.name or "").startswith("modelconv.formats"):
            reason += f" ({_message(exc)})"
        if named:
            return FormatCheck(info.name, VerifyStatus.ERROR, reason=reason), None
        return _skipped(info, reason), None
    except ModelconvError as exc:
        # The format cannot take this model at all (a dtype, a construct it
        # does not support): unusable, so skipped unless it was asked for.
        if named:
            return FormatCheck(info.name, VerifyStatus.ERROR, reason=str(exc)), None
        return _skipped(info, f"unsupported: {exc}"), None
    except Exception as exc:  # noqa: BLE001 - reported per format
        return FormatCheck(info.name, VerifyStatus.ERROR, reason=_message(exc)), None
    if losses and not named:
        return _skipped(info, "lossy: " + "; ".join(losses), losses), None

    suffix = info.extensions[0] if info.extensions and not info.writes_folder else ""
    output = work / f"via-{info.name}{suffix}"
    try:
        report = api.save(model, output, format=info.name, allow_lossy=bool(losses))
        expected = _as_written(model, info, bool(losses))
        with api.load(output, format=info.name) as back:
            result = diff_models(expected, back, optimizer=True)
            slashes = "slash_free_layer_names" in report.migrations
            names_ok = _names(expected, slashes) == _names(back, slashes)
    except ModelconvError as exc:
        if not named and not isinstance(exc, InternalError):
            # The writer refused this model (a construct it has no place
            # for): the format cannot carry it, as if losses() had said so.
            return _skipped(info, f"refused: {exc}", losses), None
        return FormatCheck(
            info.name, VerifyStatus.ERROR, lost=tuple(losses), reason=str(exc)
        ), None
    except Exception as exc:  # noqa: BLE001 - every failure is reported per format
        message = _message(exc)
        return FormatCheck(
            info.name, VerifyStatus.ERROR, lost=tuple(losses), reason=message
        ), None
    return _judge(info, result, names_ok, losses, report.migrations), output


def _as_written(model: Model, info: FormatInfo, lossy: bool) -> Model:
    """The model as the format's writer means to write it.

    A writer may migrate the model first (a Keras 1 file bound for
    ``.keras`` takes Keras 3 class, argument and weight names). Those
    migrations are named rules, listed in the check; what comes back is
    compared with their result, so any other change still fails the check.
    """
    prepare = getattr(info.load(), "prepare", None)
    if prepare is None:
        return model
    return prepare(model, WriteOptions(allow_lossy=lossy))


def _skipped(info: FormatInfo, reason: str, losses: Sequence[str] = ()) -> FormatCheck:
    return FormatCheck(
        info.name, VerifyStatus.SKIPPED, lost=tuple(losses), reason=reason
    )


def _judge(
    info: FormatInfo,
    result: Diff,
    names_ok: bool,
    losses: Sequence[str],
    migrations: Sequence[str],
) -> FormatCheck:
    matched = [t for t in result.tensors if t.name_a and t.name_b]
    slashes = "slash_free_layer_names" in migrations
    complete = len(matched) == len(result.tensors)
    changes = [
        change
        for change in result.architecture
        if change.counts and not (slashes and _slash_rename(change))
    ]
    architecture = not changes
    dtypes_ok = complete and all(t.dtype_a == t.dtype_b for t in matched)
    shapes_ok = complete and all(t.shape_a == t.shape_b for t in matched)
    bytes_ok = complete and all(t.status.value == "same" for t in matched)

    problems = [f"{change.kind.value} {change.path or '/'}" for change in changes]
    problems += [f"{t.name}: {t.status.value}" for t in result.tensors if t.counts]
    renamed = [
        t
        for t in matched
        if _canonical(t.name_a or "", slashes) != _canonical(t.name_b or "", slashes)
    ]
    problems += [
        f"{t.name_a} reads back as {t.name_b}"
        for t in renamed
        if t.role != Role.OPTIMIZER.value
    ]
    if not names_ok and not renamed and complete:
        problems.append("tensor order changed")
    notes = []
    optimizer_renamed = sum(1 for t in renamed if t.role == Role.OPTIMIZER.value)
    if optimizer_renamed:
        notes.append(
            f"{optimizer_renamed} optimizer state tensors take {info.name}'s own "
            "names (matched by order)"
        )
    survived = architecture and names_ok and dtypes_ok and shapes_ok and bytes_ok
    if losses:
        status = VerifyStatus.LOSSY
    elif survived:
        status = VerifyStatus.PASS
    else:
        status = VerifyStatus.FAIL
    return FormatCheck(
        format=info.name,
        status=status,
        architecture=architecture,
        names=names_ok,
        dtypes=dtypes_ok,
        shapes=shapes_ok,
        bytes=bytes_ok,
        lost=tuple(losses),
        migrations=tuple(migrations),
        problems=tuple(problems),
        notes=tuple(notes),
    )


def _names(model: Model, slashes: bool = False) -> list[str]:
    """Tensor names in order, optimizer state by position only.

    Optimizer variables have no canonical names: a legacy .h5 calls them
    `optimizer/adam/dense_kernel_momentum`, a .keras archive `optimizer/0`,
    and Keras itself restores them by order. Their count and order count;
    their names are format-specific.
    """
    return [
        f"optimizer#{index}"
        if t.role is Role.OPTIMIZER
        else _canonical(t.name, slashes)
        for index, t in enumerate(model.tensors)
    ]


def _slash_rename(change: ArchChange) -> bool:
    """A layer renamed only by the Keras 3 migration ("conv1/conv" -> "conv1_conv")."""
    return (
        change.kind is ChangeKind.RENAMED
        and isinstance(change.a, str)
        and change.a.replace("/", "_") == change.b
    )


def _canonical(name: str, slashes: bool = False) -> str:
    """A weight name with the one short name the Keras lines disagree on.

    Keras 1 and 2 call a DepthwiseConv kernel ``depthwise_kernel``, Keras 3
    ``kernel`` (keras_config): a tf_keras model read back from the Keras 3
    file written for it has the same tensor under the other name.
    SeparableConv keeps ``depthwise_kernel`` in every line and has no
    ``kernel``, so the two never meet.
    """
    if name.endswith("/depthwise_kernel"):
        name = name.removesuffix("depthwise_kernel") + "kernel"
    if slashes:
        # The Keras 3 migration renamed layers with "/" in their names
        # (tf.keras DenseNet's conv1/conv -> conv1_conv).
        name = name.replace("/", "_")
    return name


# --------------------------------------------------------------------------
# --predict: a functional check in Keras, on modelconv-written files only


def keras_available() -> bool:
    return importlib.util.find_spec("keras") is not None


def _predict(
    model: Model,
    checks: Sequence[FormatCheck],
    outputs: dict[str, Path],
    work: Path,
) -> PredictReport:
    if not keras_available():
        return PredictReport(
            VerifyStatus.SKIPPED,
            "Keras is not installed, so predictions were not compared "
            "(pip install keras to enable --predict)",
        )
    arch = model.architecture
    if arch is None or arch.framework != "keras":
        return PredictReport(
            VerifyStatus.SKIPPED, "the model has no Keras architecture to run"
        )
    try:
        keras = _import_keras()
        reference = _load_in_keras(keras, model, work / "predict-source.keras")
        inputs = generated_inputs(reference)
        expected = _as_list(reference(inputs, training=False))
    except LossyConversionError as exc:
        return PredictReport(
            VerifyStatus.SKIPPED,
            f"the model cannot be written as .keras without loss: {exc}",
        )
    except Exception as exc:  # noqa: BLE001 - reported, the rest still counts
        if "safe_mode" in str(exc):
            # Lambda layers hold Python code; Keras refuses them in safe mode,
            # and modelconv never turns safe mode off.
            return PredictReport(
                VerifyStatus.SKIPPED,
                "Keras refuses to load this model with safe_mode=True (a Lambda "
                "layer holds Python code), so predictions were not compared",
            )
        return PredictReport(
            VerifyStatus.ERROR,
            f"the source model does not run in Keras: {_message(exc)}",
        )

    results = []
    for check in checks:
        output = outputs.get(check.format)
        if output is None or check.status is VerifyStatus.LOSSY:
            continue
        results.append(
            _predict_one(keras, check.format, output, inputs, expected, work)
        )
    failed = any(result.status in FAILING for result in results)
    status = VerifyStatus.FAIL if failed else VerifyStatus.PASS
    reason = None if results else "no round-tripped model to compare"
    return PredictReport(status, reason, tuple(results))


def _import_keras() -> Any:
    # Imported only here, for --predict: the rest of modelconv never needs it.
    import keras

    return keras


def _load_in_keras(keras: Any, model: Model, path: Path) -> Any:
    """Write ``model`` as .keras with modelconv, load that file in Keras."""
    from . import api

    # Predictions need the architecture and weights only: optimizer and
    # metric state are left out rather than refused.
    api.save(model, path, format="keras", drop=("optimizer", "state"))
    return keras.saving.load_model(str(path), safe_mode=True, compile=False)


def _predict_one(
    keras: Any,
    name: str,
    output: Path,
    inputs: Any,
    expected: list[np.ndarray],
    work: Path,
) -> PredictCheck:
    from . import api

    try:
        with api.load(output, format=name) as back:
            loaded = _load_in_keras(keras, back, work / f"predict-{name}.keras")
        got = _as_list(loaded(inputs, training=False))
    except Exception as exc:  # noqa: BLE001 - reported per format
        return PredictCheck(name, VerifyStatus.ERROR, message=_message(exc))
    if len(got) != len(expected) or any(
        g.shape != e.shape for g, e in zip(got, expected)
    ):
        return PredictCheck(name, VerifyStatus.FAIL, message="output shapes differ")
    worst = max(
        (
            float(np.max(np.abs(g.astype(np.float64) - e)))
            for g, e in zip(got, expected)
            if g.size
        ),
        default=0.0,
    )
    close = all(
        np.allclose(g, e, rtol=PREDICT_RTOL, atol=PREDICT_ATOL, equal_nan=True)
        for g, e in zip(got, expected)
    )
    status = VerifyStatus.PASS if close else VerifyStatus.FAIL
    return PredictCheck(name, status, max_abs_diff=worst)


def generated_inputs(keras_model: Any, seed: int = 0) -> Any:
    """Deterministic inputs matching the model's declared input shapes.

    Unknown dimensions (the batch) get PREDICT_BATCH; float inputs are
    standard normal, integer inputs 0 or 1 (valid indices for any
    Embedding), bool inputs random.
    """
    rng = np.random.default_rng(seed)
    arrays = []
    for tensor in keras_model.inputs:
        shape = tuple(PREDICT_BATCH if d is None else int(d) for d in tensor.shape)
        dtype = np.dtype(str(tensor.dtype).replace("tf.", ""))
        if dtype.kind == "f":
            arrays.append(rng.standard_normal(shape).astype(dtype))
        elif dtype.kind in "iu":
            arrays.append(rng.integers(0, 2, size=shape).astype(dtype))
        else:
            arrays.append(rng.integers(0, 2, size=shape).astype(bool))
    return arrays[0] if len(arrays) == 1 else arrays


def _as_list(outputs: Any) -> list[np.ndarray]:
    if isinstance(outputs, dict):
        outputs = [outputs[k] for k in sorted(outputs)]
    if not isinstance(outputs, (list, tuple)):
        outputs = [outputs]
    return [np.asarray(o, dtype=np.float64) for o in outputs]


def _message(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text[:300]}"


make_callable(__name__, verify_path)
