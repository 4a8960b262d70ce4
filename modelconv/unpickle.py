"""The restricted unpickler shared by the pickle and joblib formats.

A pickle is a program for a small stack machine; ``pickle.load`` runs it and
calls whatever callables it names. This module runs the same opcodes on its
own machine, where a global is never imported: ``find_class`` answers with an
inert marker for an exact allow-list of ``(module, name)`` pairs (numpy
arrays, dtypes and scalars, joblib's array wrapper, the Keras model-pickle
shapes, scikit-learn MLP records) and records every other global as an
offender. REDUCE, NEWOBJ and BUILD act only on those markers; they build
plain records and never call into the file's choice of code. When the stream
ends, any offender turns into one HostileInputError that lists each of them
with its byte offset, so the user sees them all at once.

Array bytes are not held in memory: bytes and strings of ``LAZY_MIN_BYTES``
or more become ``Span`` references into the (decompressed) stream, read later
through a tensor's source. Everything else counts against the structure
budget (``limits.MAX_PICKLE_STRUCTURE_BYTES``) and an object budget, and the
machine never copies or expands shared references, so a stream whose shared
references double at each step costs time linear in its length.
"""

from __future__ import annotations

import codecs
import io
import math
import re
import struct
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import IO, Any

import numpy as np

from .errors import HostileInputError, InputError, LimitExceededError, UnsupportedError
from .limits import DEFAULT_MAX_BYTES, MAX_PICKLE_STRUCTURE_BYTES

# Bytes and strings at least this long are referenced by offset instead of
# read: array data and Keras archives are large, keys and configs are small.
LAZY_MIN_BYTES = 64 * 1024

# Every opcode pushes at most one object; real model pickles hold thousands.
# Ten million keeps a hostile stream of tiny opcodes within about a GiB.
MAX_PICKLE_OBJECTS = 10_000_000

# Protocol 0 lines (ints, floats, globals) are short; a line this long is not
# a number or a module name. Text lines (UNICODE, STRING) use the structure
# budget instead.
MAX_SHORT_LINE = 4096

# LONG4 can declare any length; 1 KiB holds an 8000-bit integer, far beyond
# anything a model pickle stores (numpy's seeds are 128 bits).
MAX_LONG_BYTES = 1024

# Dict keys and set items whose hash the file can choose: Python salts the
# hashes of str and bytes per process, but tuples, complex numbers and ints
# beyond 2**61 can be made to collide, and N colliding keys in one dict cost
# N**2 comparisons. Model pickles key their dicts by strings; 10 000 such
# keys in a whole stream cost well under a second even if all collide.
MAX_CHOSEN_HASH_KEYS = 10_000
HASH_MODULUS = 2**61 - 1  # sys.hash_info.modulus on 64-bit builds

# How many offenders an error message names before summarising.
MAX_LISTED_OFFENDERS = 12


# ---------------------------------------------------------------------------
# Where bytes live


class ByteStore:
    """A seekable file the spans of one stream point into."""

    def __init__(self, handle: IO[bytes], description: str) -> None:
        self.handle = handle
        self.description = description

    def read(self, offset: int, length: int) -> bytes:
        try:
            self.handle.seek(offset)
            data = self.handle.read(length)
        except (OSError, ValueError) as exc:
            raise InputError(
                f"cannot read {length} bytes at offset {offset} of "
                f"{self.description}: {exc}"
            ) from exc
        if len(data) != length:
            raise InputError(
                f"{self.description} is truncated: {length} bytes expected at "
                f"offset {offset}, {len(data)} found; the file changed or is damaged"
            )
        return data


@dataclass(frozen=True)
class Span:
    """``length`` bytes at ``offset`` of a ByteStore, read on demand."""

    store: ByteStore = field(repr=False)
    offset: int
    length: int

    def read(self) -> bytes:
        return self.store.read(self.offset, self.length)

    def iter_bytes(self, piece: int) -> Any:
        piece = max(1, piece)
        for start in range(0, self.length, piece):
            yield self.store.read(self.offset + start, min(piece, self.length - start))


@dataclass(frozen=True)
class LazyBytes:
    """A bytes or bytearray value left in the stream."""

    span: Span


@dataclass(frozen=True)
class LazyText:
    """A long UTF-8 string left in the stream (numpy 1's protocol-2 arrays)."""

    span: Span


@dataclass(frozen=True)
class LazyLatin1:
    """``_codecs.encode(<long text>, 'latin1')``: bytes decoded on demand."""

    span: Span

    def read(self) -> bytes:
        try:
            return self.span.read().decode("utf-8").encode("latin-1")
        except (UnicodeDecodeError, UnicodeEncodeError) as exc:
            raise InputError(
                f"array data at offset {self.span.offset} is not latin-1 text "
                f"as numpy writes it ({exc.reason}); the pickle is damaged"
            ) from exc


Data = bytes | Span | LazyLatin1


def data_length(data: Data) -> int | None:
    """Byte length of array data, or None when only decoding can tell."""
    if isinstance(data, bytes):
        return len(data)
    if isinstance(data, Span):
        return data.length
    return None


def read_data(data: Data) -> bytes:
    return data if isinstance(data, bytes) else data.read()


# ---------------------------------------------------------------------------
# Markers: what allow-listed globals turn into. None of them can be called.


@dataclass(frozen=True)
class GlobalRef:
    module: str
    name: str
    kind: str

    @property
    def qualname(self) -> str:
        return f"{self.module}.{self.name}"


class Tainted:
    """Whatever an offending global produced; only carried to the error."""

    __slots__ = ()


TAINTED = Tainted()


class Opaque:
    """An instance of an allow-listed class, kept as a record, never built."""

    __slots__ = ("cls", "args", "state")

    def __init__(self, cls: GlobalRef, args: tuple[Any, ...]) -> None:
        self.cls = cls
        self.args = args
        self.state: Any = None

    @property
    def attributes(self) -> dict[str, Any]:
        state = self.state
        if isinstance(state, tuple) and len(state) == 2:
            merged: dict[str, Any] = {}
            for part in state:
                if isinstance(part, dict):
                    merged.update(part)
            return merged
        return state if isinstance(state, dict) else {}


class DtypeRef:
    """numpy.dtype(descr, align, copy) plus its BUILD state."""

    __slots__ = ("kind", "size", "byteorder", "dtype")

    def __init__(self, kind: str, size: int) -> None:
        self.kind = kind
        self.size = size
        self.byteorder = "="
        self.dtype: np.dtype | None = None


class ArrayRef:
    """A numpy array: dtype, shape, order and where its bytes are.

    ``values`` holds the elements of an object array (plain scalars only);
    such arrays are metadata, never tensors.
    """

    __slots__ = ("dtype", "shape", "fortran", "data", "values", "ready", "offset")

    def __init__(self, offset: int) -> None:
        self.dtype: np.dtype | None = None
        self.shape: tuple[int, ...] = ()
        self.fortran = False
        self.data: Data | None = None
        self.values: list[Any] | None = None
        self.ready = False
        self.offset = offset

    @property
    def size(self) -> int:
        return math.prod(self.shape)

    def to_numpy(self) -> np.ndarray:
        """The array in memory (for tensor sources and small metadata arrays)."""
        if self.dtype is None or self.data is None:
            raise InputError(
                f"array at offset {self.offset} never received its data (no "
                "BUILD followed its construction); the pickle is damaged"
            )
        raw = read_data(self.data)
        if len(raw) != self.size * self.dtype.itemsize:
            raise InputError(
                f"array at offset {self.offset}: {len(raw)} bytes of data where "
                f"shape {list(self.shape)} and dtype {self.dtype.str} need "
                f"{self.size * self.dtype.itemsize}; the pickle is damaged"
            )
        flat = np.frombuffer(raw, dtype=self.dtype)
        if self.fortran and len(self.shape) > 1:
            return flat.reshape(self.shape[::-1]).transpose()
        return flat.reshape(self.shape)


@dataclass
class BytesIORecord:
    data: Any = None


@dataclass(frozen=True)
class UnpickleModel:
    """``getattr(<Keras model class>, "_unpickle_model")``."""

    cls: GlobalRef


@dataclass(frozen=True)
class KerasModelRecord:
    """A pickled Keras model: the archive bytes and how they were wrapped."""

    archive: bytes | Span
    via: GlobalRef  # the model class (Keras 3) or the tf_keras function


class JoblibWrapper:
    """joblib's NumpyArrayWrapper before its BUILD."""

    __slots__ = ("offset",)

    def __init__(self, offset: int) -> None:
        self.offset = offset


@dataclass(frozen=True)
class Offender:
    what: str
    opcode: str
    offset: int
    reason: str = ""

    def __str__(self) -> str:
        text = f"{self.what} ({self.opcode} at offset {self.offset})"
        return f"{text}: {self.reason}" if self.reason else text


# ---------------------------------------------------------------------------
# The allow-list. Module paths are those the libraries write, checked against
# pickles made by numpy 1.26 / 2.x, joblib 1.x, scikit-learn 0.2x-1.x,
# Keras 3.x and tf_keras 2.13+.

_NUMPY_CORE = ("numpy.core", "numpy._core")
_ALLOWED: dict[tuple[str, str], str] = {}
for _core in _NUMPY_CORE:
    _ALLOWED[(f"{_core}.multiarray", "_reconstruct")] = "np-reconstruct"
    _ALLOWED[(f"{_core}.multiarray", "scalar")] = "np-scalar"
    _ALLOWED[(f"{_core}.numeric", "_frombuffer")] = "np-frombuffer"
_ALLOWED.update(
    {
        ("numpy", "ndarray"): "np-ndarray",
        ("numpy", "memmap"): "np-ndarray",
        ("numpy", "dtype"): "np-dtype",
        ("_codecs", "encode"): "codecs-encode",
        ("collections", "OrderedDict"): "ordereddict",
        ("builtins", "set"): "set",
        ("builtins", "frozenset"): "frozenset",
        ("builtins", "bytearray"): "bytearray",
        ("builtins", "bytes"): "bytes",
        ("builtins", "complex"): "complex",
        ("builtins", "object"): "object",
        ("builtins", "getattr"): "getattr",
        ("copyreg", "_reconstructor"): "reconstructor",
        ("_io", "BytesIO"): "bytesio",
        ("io", "BytesIO"): "bytesio",
        ("joblib.numpy_pickle", "NumpyArrayWrapper"): "joblib-wrapper",
        ("sklearn.externals.joblib.numpy_pickle", "NumpyArrayWrapper"): (
            "joblib-wrapper"
        ),
    }
)
# Keras 3 pickles a model as getattr(<class>, "_unpickle_model")(BytesIO(...))
# (keras/src/models/model.py, Model.__reduce__, Keras 3.0 onwards).
for _name, _module in (
    ("Sequential", "keras.src.models.sequential"),
    ("Functional", "keras.src.models.functional"),
    ("Model", "keras.src.models.model"),
):
    _ALLOWED[(_module, _name)] = "keras-model-class"
# tf.keras 2.7-2.12 (keras.saving.pickle_utils), Keras 2.13-2.15
# (keras.src.saving.pickle_utils) and tf_keras pickle a model as
# deserialize_model_from_bytecode(<bytes>).
for _module in (
    "keras.saving.pickle_utils",
    "keras.src.saving.pickle_utils",
    "tf_keras.saving.pickle_utils",
    "tf_keras.src.saving.pickle_utils",
):
    _ALLOWED[(_module, "deserialize_model_from_bytecode")] = "keras-bytecode"
# scikit-learn MLP estimators and their parts, kept as opaque records.
for _module, _names in (
    (
        "sklearn.neural_network._multilayer_perceptron",
        ("MLPClassifier", "MLPRegressor"),
    ),
    ("sklearn.neural_network.multilayer_perceptron", ("MLPClassifier", "MLPRegressor")),
    (
        "sklearn.neural_network._stochastic_optimizers",
        ("AdamOptimizer", "SGDOptimizer"),
    ),
    ("sklearn.preprocessing._label", ("LabelBinarizer",)),
    ("sklearn.preprocessing.label", ("LabelBinarizer",)),
    (
        "numpy.random._pickle",
        ("__randomstate_ctor", "__bit_generator_ctor", "__generator_ctor"),
    ),
    ("numpy.random", ("__RandomState_ctor",)),
    ("numpy.random.mtrand", ("RandomState", "__RandomState_ctor")),
    ("numpy.random._mt19937", ("MT19937",)),
    ("numpy.random._pcg64", ("PCG64", "PCG64DXSM")),
    ("numpy.random._philox", ("Philox",)),
    ("numpy.random._sfc64", ("SFC64",)),
    ("numpy.random.bit_generator", ("SeedSequence", "__pyx_unpickle_SeedSequence")),
    ("numpy.random._generator", ("Generator",)),
):
    for _name in _names:
        _ALLOWED[(_module, _name)] = "opaque"

# Python 2 names, mapped as pickle's fix_imports does.
_PY2_MODULES = {"__builtin__": "builtins", "copy_reg": "copyreg"}

# Recognised but refused, with the reason.
_KNOWN_REFUSALS = {
    ("joblib.numpy_pickle", "NDArrayWrapper"): (
        "old joblib (< 0.10) keeps arrays in companion .npy files named by the "
        "pickle; re-save with a current joblib"
    ),
    ("joblib.numpy_pickle", "ZNDArrayWrapper"): (
        "old joblib (< 0.10) keeps arrays in companion .z files; re-save with a "
        "current joblib"
    ),
}

_DESCR = re.compile(r"^[<>|=]?([biufcUSO?])(\d{0,6})$")
_ORDER = {"C": False, "F": True}


def allowed_kind(module: str, name: str) -> str | None:
    """The marker kind for an allow-listed global, or None."""
    module = _PY2_MODULES.get(module, module)
    return _ALLOWED.get((module, name))


# ---------------------------------------------------------------------------
# The input stream


class PickleInput:
    """The bytes of a pickle stream, read in order.

    ``raw`` is a buffered binary reader positioned at the first opcode.
    ``store`` is where spans point: the same file for an uncompressed input,
    a spool file for a compressed one (``spool`` then receives every skipped
    byte). ``size`` is the stream length when known.
    """

    def __init__(
        self,
        raw: IO[bytes],
        store: ByteStore,
        *,
        size: int | None,
        start: int = 0,
        spool: IO[bytes] | None = None,
        description: str = "the pickle stream",
    ) -> None:
        self.raw = raw
        self.store = store
        self.size = size
        self.pos = start
        self.spool = spool
        self.description = description

    def _wrap(self, exc: Exception) -> InputError:
        return InputError(
            f"cannot read {self.description} at offset {self.pos}: {exc}; the "
            "file is damaged"
        )

    def remaining(self) -> int | None:
        return None if self.size is None else self.size - self.pos

    def check_available(self, n: int, what: str, opcode_offset: int) -> None:
        left = self.remaining()
        if left is not None and n > left:
            raise InputError(
                f"{what} at offset {opcode_offset} declares {n} bytes but only "
                f"{left} remain in {self.description}; the file is truncated or "
                "lies about its sizes"
            )

    def read(self, n: int) -> bytes:
        try:
            data = self.raw.read(n)
        except Exception as exc:  # decompressors raise many types
            raise self._wrap(exc) from exc
        if data is None or len(data) != n:
            got = 0 if data is None else len(data)
            raise InputError(
                f"{self.description} ends at offset {self.pos + got} in the middle "
                f"of a {n}-byte read; the file is truncated"
            )
        self.pos += n
        return data

    def readline(self, limit: int) -> bytes:
        try:
            line = self.raw.readline(limit + 1)
        except Exception as exc:
            raise self._wrap(exc) from exc
        if not line.endswith(b"\n"):
            if len(line) > limit:
                raise LimitExceededError(
                    f"a protocol-0 line at offset {self.pos} is longer than "
                    f"{limit} bytes; refused"
                )
            raise InputError(
                f"{self.description} ends inside a text line at offset "
                f"{self.pos}; the file is truncated"
            )
        self.pos += len(line)
        return line[:-1]

    def skip(self, n: int) -> Span:
        """Pass over ``n`` bytes, returning where they can be read later."""
        if self.spool is None:
            span = Span(self.store, self.pos, n)
            try:
                self.raw.seek(n, io.SEEK_CUR)
            except Exception as exc:
                raise self._wrap(exc) from exc
            self.pos += n
            return span
        start = self.spool.seek(0, io.SEEK_END)
        left = n
        while left:
            piece = self.read(min(left, 1 << 20))
            self.spool.write(piece)
            left -= len(piece)
        return Span(self.store, start, n)

    def at_end(self) -> bool:
        left = self.remaining()
        if left is not None:
            return left == 0
        try:
            return self.raw.read(1) == b""
        except Exception as exc:
            raise self._wrap(exc) from exc


# ---------------------------------------------------------------------------
# The machine


class _Mark:
    __slots__ = ()


@dataclass
class Decoded:
    """The result of running a pickle stream."""

    root: Any
    protocol: int
    array_bytes: int
    offenders: tuple[Offender, ...] = ()


class RestrictedUnpickler:
    """Runs pickle opcodes without importing or calling anything."""

    def __init__(
        self,
        stream: PickleInput,
        *,
        max_bytes: int = DEFAULT_MAX_BYTES,
        max_structure: int = MAX_PICKLE_STRUCTURE_BYTES,
        max_objects: int = MAX_PICKLE_OBJECTS,
    ) -> None:
        self.input = stream
        self.max_bytes = max_bytes
        self.max_structure = max_structure
        self.max_objects = max_objects
        self.structure = 0
        self.objects = 0
        self.array_bytes = 0
        self.protocol = 0
        self.stack: list[Any] = []
        self.metastack: list[list[Any]] = []
        self.memo: dict[int, Any] = {}
        self.offenders: list[Offender] = []
        self.chosen_hash_keys = 0
        self.op_offset = 0
        self.op_name = ""

    # -- running

    def load(self) -> Decoded:
        try:
            root = self._run()
        except InputError as exc:
            if self.offenders:
                raise self._refusal(f" (the stream is also broken: {exc})") from exc
            raise
        except RecursionError as exc:  # nothing here recurses; belt and braces
            raise LimitExceededError("pickle structure nests too deep") from exc
        if self.offenders:
            raise self._refusal("")
        if not self.input.at_end():
            raise HostileInputError(
                f"{self.input.description} continues after its STOP opcode at "
                f"offset {self.op_offset}; a second payload can hide there, so "
                "the file is refused"
            )
        return Decoded(root, self.protocol, self.array_bytes)

    def _refusal(self, suffix: str) -> HostileInputError:
        listed = [str(o) for o in self.offenders[:MAX_LISTED_OFFENDERS]]
        more = len(self.offenders) - len(listed)
        if more:
            listed.append(f"and {more} more")
        return HostileInputError(
            "refused to read the pickle: it names code modelconv does not run: "
            + "; ".join(listed)
            + f"{suffix}. Nothing was executed; modelconv reads only arrays, "
            "Keras model objects and scikit-learn MLPs from pickles"
            + self._sklearn_hint()
        )

    def _sklearn_hint(self) -> str:
        # Other estimators are the commonest refusal of an honest file: say
        # which classes were found and how to get their arrays out.
        classes = sorted(
            {
                o.what.rsplit(".", 1)[-1]
                for o in self.offenders
                if o.what.startswith("sklearn.")
            }
        )
        if not classes:
            return ""
        return (
            f". It holds scikit-learn {', '.join(classes[:8])}: in a trusted "
            "session, np.savez the fitted arrays you need (e.g. coef_, "
            "intercept_), or pickle a Pipeline's fitted MLPClassifier or "
            "MLPRegressor step on its own"
        )

    def _run(self) -> Any:
        stream = self.input
        dispatch = _DISPATCH
        while True:
            self.op_offset = stream.pos
            code = stream.read(1)[0]
            handler = dispatch.get(code)
            if handler is None:
                raise InputError(
                    f"byte 0x{code:02x} at offset {self.op_offset} is not a pickle "
                    "opcode; the file is not a pickle or is damaged"
                )
            self.op_name = handler.__name__[4:].upper()
            self._count_structure(1)
            if handler is _op_stop:
                return self._pop()
            handler(self)

    # -- budgets

    def _count_structure(self, n: int) -> None:
        self.structure += n
        if self.structure > self.max_structure:
            raise LimitExceededError(
                f"the non-array part of the pickle exceeds {self.max_structure} "
                "bytes; no model pickle has such a structure, so it is refused"
            )

    def _read(self, n: int) -> bytes:
        self.input.check_available(n, self.op_name, self.op_offset)
        self._count_structure(n)
        return self.input.read(n)

    def _length(self, size: int) -> int:
        fmt = {1: "<B", 4: "<I", 8: "<Q"}[size]
        return int(struct.unpack(fmt, self._read(size))[0])

    def _push(self, value: Any) -> None:
        self.objects += 1
        if self.objects > self.max_objects:
            raise LimitExceededError(
                f"the pickle builds more than {self.max_objects} objects; refused"
            )
        self.stack.append(value)

    def _pop(self) -> Any:
        if not self.stack:
            raise InputError(
                f"{self.op_name} at offset {self.op_offset} pops an empty stack; "
                "the pickle is damaged"
            )
        return self.stack.pop()

    def _top(self) -> Any:
        if not self.stack:
            raise InputError(
                f"{self.op_name} at offset {self.op_offset} needs a value on the "
                "stack; the pickle is damaged"
            )
        return self.stack[-1]

    def _pop_mark(self) -> list[Any]:
        if not self.metastack:
            raise InputError(
                f"{self.op_name} at offset {self.op_offset} has no matching MARK; "
                "the pickle is damaged"
            )
        items = self.stack
        self.stack = self.metastack.pop()
        return items

    def _bytes_value(self, n: int, lazy: Callable[[Span], Any]) -> Any:
        self.input.check_available(n, self.op_name, self.op_offset)
        if n >= LAZY_MIN_BYTES:
            self._count_array(n)
            return lazy(self.input.skip(n))
        return self._read(n)

    def _count_array(self, n: int) -> None:
        self.array_bytes += n
        if self.array_bytes > self.max_bytes:
            raise LimitExceededError(
                f"the pickle declares more than {self.max_bytes} bytes of data "
                f"(at offset {self.op_offset}); raise --max-bytes if the file is "
                "trusted to be this large"
            )

    def _offend(self, what: str, reason: str = "") -> Tainted:
        self.offenders.append(Offender(what, self.op_name, self.op_offset, reason))
        return TAINTED

    def _damaged(self, what: str) -> InputError:
        return InputError(
            f"{self.op_name} at offset {self.op_offset}: {what}; the pickle is "
            "damaged or not one modelconv understands"
        )

    # -- globals

    def find_class(self, module: Any, name: Any) -> Any:
        if not isinstance(module, str) or not isinstance(name, str):
            return self._offend(
                "a global named by non-string values", "STACK_GLOBAL needs strings"
            )
        qual = f"{module}.{name}"
        kind = allowed_kind(module, name)
        if kind is not None:
            module = _PY2_MODULES.get(module, module)
            return GlobalRef(module, name, kind)
        refusal = _KNOWN_REFUSALS.get((module, name))
        if refusal is not None:
            return self._offend(qual, refusal)
        return self._offend(qual)

    # -- calls on markers

    def reduce(self, func: Any, args: Any) -> Any:
        if isinstance(func, Tainted) or _is_tainted(args):
            return TAINTED
        if not isinstance(args, tuple):
            raise self._damaged("REDUCE arguments are not a tuple")
        if isinstance(func, UnpickleModel):
            return self._unpickle_model(func, args)
        if not isinstance(func, GlobalRef):
            return self._offend(
                f"a call of a {type(func).__name__} value",
                "only allow-listed globals may be called",
            )
        handler = _REDUCERS.get(func.kind)
        if handler is None:
            return self._offend(func.qualname, "not callable in a model pickle")
        return handler(self, func, args)

    def newobj(self, cls: Any, args: Any) -> Any:
        if isinstance(cls, Tainted) or _is_tainted(args):
            return TAINTED
        if not isinstance(cls, GlobalRef) or not isinstance(args, tuple):
            raise self._damaged("NEWOBJ needs a class and a tuple")
        if cls.kind == "opaque":
            return Opaque(cls, args)
        if cls.kind == "joblib-wrapper" and not args:
            return JoblibWrapper(self.op_offset)
        if cls.kind == "bytesio" and not args:
            return BytesIORecord()
        if cls.kind == "ordereddict" and not args:
            return {}
        if cls.kind in ("set", "frozenset") and not args:
            return set()
        return self._offend(cls.qualname, "not instantiable in a model pickle")

    def build(self, obj: Any, state: Any) -> None:
        if isinstance(obj, Tainted) or _is_tainted(state):
            return
        if isinstance(obj, Opaque):
            obj.state = state
        elif isinstance(obj, ArrayRef) and not obj.ready:
            self._build_array(obj, state)
        elif isinstance(obj, DtypeRef):
            self._build_dtype(obj, state)
        elif isinstance(obj, JoblibWrapper):
            self.stack[-1] = self._joblib_array(state)
        elif isinstance(obj, BytesIORecord):
            if not isinstance(state, tuple) or len(state) < 1:
                raise self._damaged("BytesIO state is not a tuple")
            obj.data = state[0]
        elif isinstance(obj, dict) and (state is None or state == {}):
            return
        else:
            self._offend(
                f"BUILD of a {type(obj).__name__} value",
                "only allow-listed records take state",
            )

    # -- numpy

    def make_dtype(self, descr: Any) -> DtypeRef:
        if isinstance(descr, DtypeRef):
            return descr
        if not isinstance(descr, str):
            raise self._damaged("numpy.dtype needs a string description")
        match = _DESCR.match(descr)
        if match is None:
            raise UnsupportedError(
                f"numpy dtype {descr!r} at offset {self.op_offset} is not one "
                "modelconv reads (structured, datetime and void dtypes are refused)"
            )
        kind, digits = match.groups()
        ref = DtypeRef(kind, int(digits) if digits else 0)
        if descr[:1] in "<>|=":
            ref.byteorder = descr[0]
            ref.dtype = self._finish_dtype(ref)
        elif kind in "b?O" or (kind in "iufc" and ref.size):
            ref.dtype = self._finish_dtype(ref)
        return ref

    def _build_dtype(self, ref: DtypeRef, state: Any) -> None:
        # numpy's dtype state: (version, byteorder, subdescr, names, fields,
        # elsize, alignment, flags[, metadata]); versions 3 and 4 are written.
        if not isinstance(state, tuple) or len(state) not in (8, 9):
            raise self._damaged("numpy dtype state is not an 8- or 9-tuple")
        _version, byteorder, subdescr, names, fields, elsize = state[:6]
        if subdescr is not None or names is not None or fields is not None:
            raise UnsupportedError(
                f"structured or sub-array numpy dtype at offset {self.op_offset}; "
                "modelconv reads plain numeric arrays only"
            )
        if len(state) == 9 and state[8] not in (None, {}):
            raise UnsupportedError(
                f"numpy dtype with metadata at offset {self.op_offset} (a "
                "datetime or custom dtype); refused"
            )
        if byteorder not in ("<", ">", "|", "="):
            raise self._damaged(f"dtype byte order {byteorder!r}")
        ref.byteorder = byteorder
        if ref.kind in "US" and isinstance(elsize, int) and elsize > 0:
            ref.size = elsize // 4 if ref.kind == "U" else elsize
        ref.dtype = self._finish_dtype(ref)

    def _finish_dtype(self, ref: DtypeRef) -> np.dtype:
        kind = "b" if ref.kind == "?" else ref.kind
        if kind == "O":
            return np.dtype(object)
        size = ref.size or (1 if kind == "b" else 0)
        if kind in "US" and size == 0:
            size = 1
        if not 0 < size <= 2**20:
            raise self._damaged(f"dtype size {size}")
        order = ref.byteorder if ref.byteorder in "<>" else "="
        if kind in "bS":
            order = "|"
        try:
            return np.dtype(f"{order}{kind}{size}")
        except (TypeError, ValueError) as exc:
            raise UnsupportedError(
                f"numpy dtype {kind}{size} at offset {self.op_offset} is not one "
                "modelconv reads"
            ) from exc

    def dtype_of(self, value: Any) -> np.dtype:
        ref = self.make_dtype(value)
        if ref.dtype is None:
            ref.dtype = self._finish_dtype(ref)
        return ref.dtype

    def _shape(self, value: Any) -> tuple[int, ...]:
        if isinstance(value, int) and not isinstance(value, bool):
            value = (value,)
        if not isinstance(value, (tuple, list)) or not all(
            isinstance(d, int) and not isinstance(d, bool) and 0 <= d < 2**63
            for d in value
        ):
            raise self._damaged("array shape is not a tuple of non-negative ints")
        if len(value) > 64:
            raise self._damaged(f"array has {len(value)} dimensions (numpy allows 64)")
        return tuple(value)

    def fortran_order(self, order: Any) -> bool:
        # The order comes from the file: it may be a list or dict, which
        # cannot even be looked up in _ORDER (unhashable), so check the type.
        if isinstance(order, str) and order in _ORDER:
            return _ORDER[order]
        shown = repr(order[:8]) if isinstance(order, str) else type(order).__name__
        raise self._damaged(f"array order {shown} (numpy writes 'C' or 'F')")

    def array(
        self, dtype: np.dtype, shape: tuple[int, ...], fortran: bool, data: Any
    ) -> ArrayRef:
        # numpy refuses a shape whose non-zero dimensions overflow its byte
        # count, even when another dimension is 0 (so no data is declared).
        extent = math.prod(d for d in shape if d) * max(1, dtype.itemsize)
        if extent >= 2**63:
            raise InputError(
                f"array at offset {self.op_offset} declares shape {list(shape)}, "
                "beyond what numpy can hold; the pickle is damaged"
            )
        ref = ArrayRef(self.op_offset)
        ref.dtype, ref.shape, ref.fortran = dtype, shape, fortran
        if dtype.hasobject:
            ref.values = self._object_values(data, ref.size)
            ref.ready = True
            return ref
        need = ref.size * dtype.itemsize
        if isinstance(data, str):
            try:
                data = data.encode("latin-1")
            except UnicodeEncodeError as exc:
                raise self._damaged("array data text is not latin-1") from exc
        elif isinstance(data, LazyBytes):
            data = data.span
        elif isinstance(data, bytearray):
            data = bytes(data)
        if not isinstance(data, (bytes, Span, LazyLatin1)):
            raise self._damaged(f"array data is a {type(data).__name__}")
        have = data_length(data)
        if isinstance(data, LazyLatin1) and not need <= data.span.length <= 2 * need:
            # Each latin-1 byte is one or two UTF-8 bytes in the stream.
            have = data.span.length
        if have is not None and have != need:
            raise InputError(
                f"array at offset {self.op_offset} declares shape {list(shape)} "
                f"of {dtype.str} ({need} bytes) but carries {have} bytes of data; "
                "the pickle lies about its sizes, so it is refused"
            )
        ref.data = data
        ref.ready = True
        return ref

    def _object_values(self, data: Any, size: int) -> list[Any]:
        if not isinstance(data, list) or len(data) != size:
            raise UnsupportedError(
                f"numpy object array at offset {self.op_offset} does not hold "
                f"{size} plain values; object arrays are refused"
            )
        for item in data:
            if not isinstance(item, (str, bytes, int, float, bool, type(None))):
                raise UnsupportedError(
                    f"numpy object array at offset {self.op_offset} holds a "
                    f"{type(item).__name__}; only plain values are read"
                )
        return data

    def _build_array(self, ref: ArrayRef, state: Any) -> None:
        # ndarray.__setstate__: (version, shape, dtype, is_fortran, data) with
        # version 1, or the 4-tuple without it written by old numpy.
        if isinstance(state, tuple) and len(state) == 5:
            state = state[1:]
        if not isinstance(state, tuple) or len(state) != 4:
            raise self._damaged("ndarray state is not a 4- or 5-tuple")
        shape, dtype, fortran, data = state
        built = self.array(
            self.dtype_of(dtype), self._shape(shape), bool(fortran), data
        )
        for name in ArrayRef.__slots__:
            if name != "offset":
                setattr(ref, name, getattr(built, name))

    def _joblib_array(self, state: Any) -> ArrayRef:
        # joblib.numpy_pickle.NumpyArrayWrapper: after BUILD, joblib >= 1.2
        # writes one padding-length byte and that many padding bytes so the
        # data is aligned to numpy_array_alignment_bytes; older joblib writes
        # the data directly. The data is raw, in the wrapper's order.
        if not isinstance(state, dict):
            raise self._damaged("NumpyArrayWrapper state is not a dict")
        subclass = state.get("subclass")
        if not (isinstance(subclass, GlobalRef) and subclass.kind == "np-ndarray"):
            self._offend("a NumpyArrayWrapper of an ndarray subclass")
            return ArrayRef(self.op_offset)
        dtype = self.dtype_of(state.get("dtype"))
        shape = self._shape(state.get("shape"))
        fortran = self.fortran_order(state.get("order", "C"))
        if dtype.hasobject:
            raise UnsupportedError(
                f"joblib object array at offset {self.op_offset}: joblib stores "
                "it as a nested pickle of Python objects; refused"
            )
        if state.get("numpy_array_alignment_bytes") is not None:
            padding = self._read(1)[0]
            self.input.check_available(padding, "array padding", self.op_offset)
            self._read(padding)
        need = math.prod(shape) * dtype.itemsize
        self.input.check_available(need, "joblib array data", self.op_offset)
        self._count_array(need)
        return self.array(dtype, shape, fortran, self.input.skip(need))

    # -- Keras

    def _unpickle_model(self, func: UnpickleModel, args: tuple[Any, ...]) -> Any:
        if len(args) != 1 or not isinstance(args[0], BytesIORecord):
            return self._offend(
                f"{func.cls.qualname}._unpickle_model with unexpected arguments"
            )
        archive = _archive_bytes(args[0].data)
        if archive is None:
            raise self._damaged("the Keras model's BytesIO holds no bytes")
        return KerasModelRecord(archive, func.cls)


def _archive_bytes(value: Any) -> bytes | Span | None:
    if isinstance(value, LazyBytes):
        return value.span
    if isinstance(value, (bytes, bytearray)):
        return bytes(value)
    return None


def _is_tainted(value: Any) -> bool:
    if isinstance(value, Tainted):
        return True
    if isinstance(value, tuple):
        return any(isinstance(item, Tainted) for item in value)
    return False


def _simple_key(machine: RestrictedUnpickler, key: Any) -> Any:
    """Dict keys and set items: hashing must stay cheap and call nothing."""
    if isinstance(key, (str, bytes, float, bool, type(None), Tainted)):
        return key
    if isinstance(key, int) and -HASH_MODULUS < key < HASH_MODULUS:
        return key  # hashes to itself (bar -1): no floods of collisions
    if isinstance(key, (int, complex)):
        _count_chosen_hash(machine)
        return key
    if isinstance(key, LazyText):
        return machine._offend("a dict key longer than 64 KiB")
    if (
        isinstance(key, tuple)
        and len(key) <= 64
        and all(isinstance(k, (str, bytes, int, float, bool, type(None))) for k in key)
    ):
        _count_chosen_hash(machine)
        return key
    raise machine._damaged(f"a {type(key).__name__} used as a dict key or set item")


def _count_chosen_hash(machine: RestrictedUnpickler) -> None:
    machine.chosen_hash_keys += 1
    if machine.chosen_hash_keys > MAX_CHOSEN_HASH_KEYS:
        raise LimitExceededError(
            f"the pickle uses more than {MAX_CHOSEN_HASH_KEYS} tuples, complex "
            "numbers or integers beyond 2**61 as dict keys or set items (at "
            f"offset {machine.op_offset}); their hashes can be made to collide, "
            "which makes reading quadratic, so the file is refused"
        )


# ---------------------------------------------------------------------------
# Reducers: what calling an allow-listed global means.


def _r_reconstruct(m: RestrictedUnpickler, g: GlobalRef, args: tuple) -> Any:
    # numpy pickles an array as _reconstruct(ndarray, (0,), b"b") + BUILD.
    if len(args) != 3 or not (
        isinstance(args[0], GlobalRef) and args[0].kind == "np-ndarray"
    ):
        return m._offend(f"{g.qualname} of something other than numpy.ndarray")
    return ArrayRef(m.op_offset)


def _r_frombuffer(m: RestrictedUnpickler, g: GlobalRef, args: tuple) -> Any:
    # numpy >= 1.16 under protocol 5: _frombuffer(buffer, dtype, shape, order).
    if len(args) != 4:
        raise m._damaged("_frombuffer needs (buffer, dtype, shape, order)")
    buf = args[0]
    if not isinstance(buf, (bytes, bytearray, LazyBytes)):
        raise m._damaged(f"_frombuffer of a {type(buf).__name__}")
    fortran = m.fortran_order(args[3])
    return m.array(m.dtype_of(args[1]), m._shape(args[2]), fortran, buf)


def _r_scalar(m: RestrictedUnpickler, g: GlobalRef, args: tuple) -> Any:
    # numpy.core.multiarray.scalar(dtype, bytes): a numpy scalar.
    if len(args) not in (1, 2):
        raise m._damaged("numpy scalar needs (dtype, data)")
    dtype = m.dtype_of(args[0])
    if dtype.hasobject:
        return m._offend("a numpy object scalar", "object scalars are refused")
    raw = args[1] if len(args) == 2 else b"\0" * dtype.itemsize
    if isinstance(raw, str):
        raw = raw.encode("latin-1", errors="replace")
    if not isinstance(raw, bytes) or len(raw) != dtype.itemsize:
        raise m._damaged(f"numpy scalar of {dtype.str} with wrong data")
    if dtype.kind == "U":
        # numpy turns a code point beyond Unicode into a SystemError.
        codes = np.frombuffer(raw, dtype=np.dtype("u4").newbyteorder(dtype.byteorder))
        if codes.size and int(codes.max()) > 0x10FFFF:
            raise m._damaged("numpy str scalar holds a code point beyond Unicode")
    return np.frombuffer(raw, dtype=dtype)[0].item()


def _r_dtype(m: RestrictedUnpickler, g: GlobalRef, args: tuple) -> Any:
    if not args:
        raise m._damaged("numpy.dtype needs a description")
    return m.make_dtype(args[0])


def _r_codecs_encode(m: RestrictedUnpickler, g: GlobalRef, args: tuple) -> Any:
    # numpy 1 under protocols 0-2 writes bytes as _codecs.encode(str, "latin1").
    if len(args) != 2 or args[1] not in ("latin1", "latin-1"):
        return m._offend(f"{g.qualname} with an encoding other than latin1")
    text = args[0]
    if isinstance(text, LazyText):
        return LazyLatin1(text.span)
    if not isinstance(text, str):
        raise m._damaged("_codecs.encode of a non-string")
    try:
        return text.encode("latin-1")
    except UnicodeEncodeError as exc:
        raise m._damaged("_codecs.encode text is not latin-1") from exc


def _r_ordereddict(m: RestrictedUnpickler, g: GlobalRef, args: tuple) -> Any:
    result: dict[Any, Any] = {}
    if args:
        pairs = args[0]
        if len(args) != 1 or not isinstance(pairs, (list, tuple)):
            raise m._damaged("OrderedDict needs a list of pairs")
        for pair in pairs:
            if not isinstance(pair, (list, tuple)) or len(pair) != 2:
                raise m._damaged("OrderedDict item is not a pair")
            result[_simple_key(m, pair[0])] = pair[1]
    return result


def _r_set(m: RestrictedUnpickler, g: GlobalRef, args: tuple) -> Any:
    items = args[0] if args else []
    if len(args) > 1 or not isinstance(items, (list, tuple)):
        raise m._damaged(f"{g.name} needs one list")
    values = {_simple_key(m, item) for item in items}
    return frozenset(values) if g.kind == "frozenset" else values


def _r_bytearray(m: RestrictedUnpickler, g: GlobalRef, args: tuple) -> Any:
    if not args:
        return b""
    value = args[0]
    if isinstance(value, (bytes, bytearray)) and len(args) == 1:
        return bytes(value)
    if isinstance(value, LazyBytes) and len(args) == 1:
        return value
    if isinstance(value, str) and len(args) == 2 and args[1] in ("latin-1", "latin1"):
        return value.encode("latin-1", errors="replace")
    raise m._damaged(f"{g.name} with unexpected arguments")


def _r_complex(m: RestrictedUnpickler, g: GlobalRef, args: tuple) -> Any:
    if not all(isinstance(a, (int, float)) for a in args) or len(args) > 2:
        raise m._damaged("complex needs numbers")
    try:
        return complex(*args)
    except OverflowError as exc:
        raise m._damaged("complex parts overflow a float") from exc


def _r_reconstructor(m: RestrictedUnpickler, g: GlobalRef, args: tuple) -> Any:
    # Protocols 0 and 1: copyreg._reconstructor(cls, object, None) + BUILD.
    if (
        len(args) == 3
        and isinstance(args[0], GlobalRef)
        and args[0].kind == "opaque"
        and isinstance(args[1], GlobalRef)
        and args[1].kind == "object"
        and args[2] is None
    ):
        return Opaque(args[0], ())
    return m._offend(f"{g.qualname} of something other than an allow-listed class")


def _r_opaque(m: RestrictedUnpickler, g: GlobalRef, args: tuple) -> Any:
    return Opaque(g, args)


def _r_getattr(m: RestrictedUnpickler, g: GlobalRef, args: tuple) -> Any:
    if (
        len(args) == 2
        and isinstance(args[0], GlobalRef)
        and args[0].kind == "keras-model-class"
        and args[1] == "_unpickle_model"
    ):
        return UnpickleModel(args[0])
    target = args[0].qualname if args and isinstance(args[0], GlobalRef) else "?"
    attr = args[1] if len(args) > 1 and isinstance(args[1], str) else "?"
    return m._offend(
        f"builtins.getattr({target}, {attr[:60]!r})",
        "getattr is read only in the Keras model shape",
    )


def _r_keras_bytecode(m: RestrictedUnpickler, g: GlobalRef, args: tuple) -> Any:
    archive = _archive_bytes(args[0]) if len(args) == 1 else None
    if archive is None:
        return m._offend(f"{g.qualname} with unexpected arguments")
    return KerasModelRecord(archive, g)


def _r_bytesio(m: RestrictedUnpickler, g: GlobalRef, args: tuple) -> Any:
    record = BytesIORecord()
    if args:
        record.data = args[0]
    return record


_REDUCERS: dict[str, Callable[[RestrictedUnpickler, GlobalRef, tuple], Any]] = {
    "np-reconstruct": _r_reconstruct,
    "np-frombuffer": _r_frombuffer,
    "np-scalar": _r_scalar,
    "np-dtype": _r_dtype,
    "codecs-encode": _r_codecs_encode,
    "ordereddict": _r_ordereddict,
    "set": _r_set,
    "frozenset": _r_set,
    "bytearray": _r_bytearray,
    "bytes": _r_bytearray,
    "complex": _r_complex,
    "reconstructor": _r_reconstructor,
    "opaque": _r_opaque,
    "getattr": _r_getattr,
    "keras-bytecode": _r_keras_bytecode,
    "bytesio": _r_bytesio,
}


# ---------------------------------------------------------------------------
# Opcodes. Each handler is named _op_<opcode name>.

M = RestrictedUnpickler


def _op_proto(m: M) -> None:
    m.protocol = m._read(1)[0]
    if m.protocol > 5:
        raise InputError(
            f"pickle protocol {m.protocol} at offset {m.op_offset} is newer than "
            "the 5 modelconv knows"
        )


def _op_frame(m: M) -> None:
    # Frames only group opcodes for buffering; their content is read as is.
    m.input.check_available(m._length(8), "FRAME", m.op_offset)


def _op_stop(m: M) -> None:  # handled in the loop
    raise AssertionError


def _op_mark(m: M) -> None:
    m.metastack.append(m.stack)
    m.stack = []


def _op_pop(m: M) -> None:
    if m.stack:
        m.stack.pop()
    else:
        m._pop_mark()


def _op_pop_mark(m: M) -> None:
    m._pop_mark()


def _op_dup(m: M) -> None:
    m._push(m._top())


def _int_line(m: M, line: bytes) -> int:
    text = line.rstrip(b"L").decode("ascii", errors="replace")
    try:
        return int(text, 10)
    except ValueError as exc:
        raise m._damaged(f"integer text {text[:40]!r}") from exc


def _op_int(m: M) -> None:
    line = m.input.readline(MAX_SHORT_LINE)
    m._count_structure(len(line))
    if line == b"00":
        m._push(False)
    elif line == b"01":
        m._push(True)
    else:
        m._push(_int_line(m, line))


def _op_long(m: M) -> None:
    line = m.input.readline(MAX_SHORT_LINE)
    m._count_structure(len(line))
    m._push(_int_line(m, line))


def _op_binint(m: M) -> None:
    m._push(struct.unpack("<i", m._read(4))[0])


def _op_binint1(m: M) -> None:
    m._push(m._read(1)[0])


def _op_binint2(m: M) -> None:
    m._push(struct.unpack("<H", m._read(2))[0])


def _op_long1(m: M) -> None:
    m._push(int.from_bytes(m._read(m._read(1)[0]), "little", signed=True))


def _op_long4(m: M) -> None:
    n = struct.unpack("<i", m._read(4))[0]
    if not 0 <= n <= MAX_LONG_BYTES:
        raise LimitExceededError(
            f"LONG4 at offset {m.op_offset} declares a {n}-byte integer; refused"
        )
    m._push(int.from_bytes(m._read(n), "little", signed=True))


def _op_float(m: M) -> None:
    line = m.input.readline(MAX_SHORT_LINE)
    m._count_structure(len(line))
    try:
        m._push(float(line.decode("ascii")))
    except (UnicodeDecodeError, ValueError) as exc:
        raise m._damaged("float text") from exc


def _op_binfloat(m: M) -> None:
    m._push(struct.unpack(">d", m._read(8))[0])


def _op_none(m: M) -> None:
    m._push(None)


def _op_newtrue(m: M) -> None:
    m._push(True)


def _op_newfalse(m: M) -> None:
    m._push(False)


def _py2_string(m: M, raw: bytes) -> str:
    # Python 2 str: Python 3 reads it as text; latin-1 keeps every byte, which
    # is what numpy asks for when loading Python 2 array pickles.
    return raw.decode("latin-1")


def _op_string(m: M) -> None:
    line = m.input.readline(m.max_structure)
    m._count_structure(len(line))
    if len(line) < 2 or line[0] != line[-1] or line[:1] not in (b"'", b'"'):
        raise m._damaged("STRING is not quoted")
    try:
        raw = codecs.escape_decode(line[1:-1])[0]
    except ValueError as exc:
        raise m._damaged("STRING escapes") from exc
    m._push(_py2_string(m, raw))


def _op_binstring(m: M) -> None:
    n = struct.unpack("<i", m._read(4))[0]
    if n < 0:
        raise m._damaged("negative BINSTRING length")
    m._push(_py2_string(m, m._read(n)))


def _op_short_binstring(m: M) -> None:
    m._push(_py2_string(m, m._read(m._read(1)[0])))


def _op_unicode(m: M) -> None:
    line = m.input.readline(m.max_structure)
    m._count_structure(len(line))
    try:
        m._push(line.decode("raw-unicode-escape"))
    except UnicodeDecodeError as exc:
        raise m._damaged("UNICODE escapes") from exc


def _utf8(m: M, n: int) -> Any:
    value = m._bytes_value(n, LazyText)
    if isinstance(value, LazyText):
        return value
    try:
        return value.decode("utf-8", "surrogatepass")
    except UnicodeDecodeError as exc:
        raise m._damaged("string is not UTF-8") from exc


def _op_short_binunicode(m: M) -> None:
    m._push(_utf8(m, m._read(1)[0]))


def _op_binunicode(m: M) -> None:
    m._push(_utf8(m, m._length(4)))


def _op_binunicode8(m: M) -> None:
    m._push(_utf8(m, m._length(8)))


def _op_short_binbytes(m: M) -> None:
    m._push(m._read(m._read(1)[0]))


def _op_binbytes(m: M) -> None:
    m._push(m._bytes_value(m._length(4), LazyBytes))


def _op_binbytes8(m: M) -> None:
    m._push(m._bytes_value(m._length(8), LazyBytes))


def _op_bytearray8(m: M) -> None:
    m._push(m._bytes_value(m._length(8), LazyBytes))


def _op_empty_list(m: M) -> None:
    m._push([])


def _op_empty_tuple(m: M) -> None:
    m._push(())


def _op_empty_dict(m: M) -> None:
    m._push({})


def _op_empty_set(m: M) -> None:
    m._push(set())


def _op_list(m: M) -> None:
    m._push(m._pop_mark())


def _op_tuple(m: M) -> None:
    m._push(tuple(m._pop_mark()))


def _op_tuple1(m: M) -> None:
    m._push((m._pop(),))


def _op_tuple2(m: M) -> None:
    b = m._pop()
    m._push((m._pop(), b))


def _op_tuple3(m: M) -> None:
    c = m._pop()
    b = m._pop()
    m._push((m._pop(), b, c))


def _op_dict(m: M) -> None:
    items = m._pop_mark()
    if len(items) % 2:
        raise m._damaged("DICT with an odd number of items")
    m._push({_simple_key(m, items[i]): items[i + 1] for i in range(0, len(items), 2)})


def _append(m: M, target: Any, items: list[Any]) -> None:
    if isinstance(target, list):
        target.extend(items)
    elif not isinstance(target, Tainted):
        raise m._damaged(f"APPEND to a {type(target).__name__}")


def _op_append(m: M) -> None:
    value = m._pop()
    _append(m, m._top(), [value])


def _op_appends(m: M) -> None:
    items = m._pop_mark()
    _append(m, m._top(), items)


def _setitems(m: M, items: list[Any]) -> None:
    target = m._top()
    if isinstance(target, Tainted):
        return
    if not isinstance(target, dict) or len(items) % 2:
        raise m._damaged(f"SETITEM on a {type(target).__name__}")
    for i in range(0, len(items), 2):
        target[_simple_key(m, items[i])] = items[i + 1]


def _op_setitem(m: M) -> None:
    value = m._pop()
    key = m._pop()
    _setitems(m, [key, value])


def _op_setitems(m: M) -> None:
    _setitems(m, m._pop_mark())


def _op_additems(m: M) -> None:
    items = m._pop_mark()
    target = m._top()
    if not isinstance(target, set):
        raise m._damaged(f"ADDITEMS on a {type(target).__name__}")
    target.update(_simple_key(m, item) for item in items)


def _op_frozenset(m: M) -> None:
    m._push(frozenset(_simple_key(m, item) for item in m._pop_mark()))


def _memo_get(m: M, index: int) -> None:
    if index not in m.memo:
        raise m._damaged(f"memo index {index} was never stored")
    m._push(m.memo[index])


def _memo_put(m: M, index: int) -> None:
    # Picklers number memo entries from 0 in order, one per stored object, so
    # an index beyond the stream's length cannot be genuine.
    if index < 0 or index > m.op_offset:
        raise HostileInputError(
            f"{m.op_name} at offset {m.op_offset} stores memo index {index}, "
            "beyond anything the stream could have stored; refused"
        )
    m.memo[index] = m._top()


def _op_get(m: M) -> None:
    _memo_get(m, _int_line(m, m.input.readline(MAX_SHORT_LINE)))


def _op_binget(m: M) -> None:
    _memo_get(m, m._read(1)[0])


def _op_long_binget(m: M) -> None:
    _memo_get(m, m._length(4))


def _op_put(m: M) -> None:
    _memo_put(m, _int_line(m, m.input.readline(MAX_SHORT_LINE)))


def _op_binput(m: M) -> None:
    _memo_put(m, m._read(1)[0])


def _op_long_binput(m: M) -> None:
    _memo_put(m, m._length(4))


def _op_memoize(m: M) -> None:
    _memo_put(m, len(m.memo))


def _global_line(m: M) -> str:
    line = m.input.readline(MAX_SHORT_LINE)
    m._count_structure(len(line))
    try:
        return line.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise m._damaged("global name is not UTF-8") from exc


def _op_global(m: M) -> None:
    module = _global_line(m)
    name = _global_line(m)
    m._push(m.find_class(module, name))


def _op_stack_global(m: M) -> None:
    name = m._pop()
    module = m._pop()
    m._push(m.find_class(module, name))


def _op_reduce(m: M) -> None:
    args = m._pop()
    func = m._pop()
    m._push(m.reduce(func, args))


def _op_newobj(m: M) -> None:
    args = m._pop()
    cls = m._pop()
    m._push(m.newobj(cls, args))


def _op_build(m: M) -> None:
    state = m._pop()
    m.build(m._top(), state)


def _op_inst(m: M) -> None:
    module = _global_line(m)
    name = _global_line(m)
    m._pop_mark()
    m._offend(f"{module}.{name}", "INST creates an object by calling its class")
    m._push(TAINTED)


def _op_obj(m: M) -> None:
    items = m._pop_mark()
    what = items[0].qualname if items and isinstance(items[0], GlobalRef) else "?"
    m._offend(f"OBJ of {what}", "OBJ creates an object by calling its class")
    m._push(TAINTED)


def _op_newobj_ex(m: M) -> None:
    m._pop()
    m._pop()
    cls = m._pop()
    what = cls.qualname if isinstance(cls, GlobalRef) else "?"
    m._offend(f"NEWOBJ_EX of {what}", "keyword construction is not read")
    m._push(TAINTED)


def _ext(m: M, size: int) -> None:
    code = int.from_bytes(m._read(size), "little")
    m._offend(f"extension code {code}", "copyreg extension registry lookups")
    m._push(TAINTED)


def _op_ext1(m: M) -> None:
    _ext(m, 1)


def _op_ext2(m: M) -> None:
    _ext(m, 2)


def _op_ext4(m: M) -> None:
    _ext(m, 4)


def _op_persid(m: M) -> None:
    m.input.readline(MAX_SHORT_LINE)
    m._offend("a persistent id", "persistent ids load external objects")
    m._push(TAINTED)


def _op_binpersid(m: M) -> None:
    m._pop()
    m._offend("a persistent id", "persistent ids load external objects")
    m._push(TAINTED)


def _op_next_buffer(m: M) -> None:
    m._offend("an out-of-band buffer", "out-of-band buffers are not read")
    m._push(TAINTED)


def _op_readonly_buffer(m: M) -> None:
    m._offend("an out-of-band buffer", "out-of-band buffers are not read")


_DISPATCH: dict[int, Callable[[M], None]] = {}


def _register() -> None:
    import pickle

    for name, value in vars(pickle).items():
        if name.isupper() and isinstance(value, bytes) and len(value) == 1:
            handler = globals().get(f"_op_{name.lower()}")
            if handler is not None:
                _DISPATCH[value[0]] = handler


_register()
