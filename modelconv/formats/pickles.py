"""Python pickles, read without executing anything; written as plain dicts.

Reading runs the stream through ``modelconv.unpickle`` (no globals imported,
nothing called) and recognises what it holds:

- ``modelconv``: a file this module or joblibfmt wrote (header + arrays);
- ``keras-model``: a pickled Keras 3 or tf_keras model, whose embedded
  ``.keras`` archive is read with the ``.keras`` reader;
- ``sklearn-mlp``: a pickled MLPClassifier or MLPRegressor;
- ``arrays``: any container of numpy arrays (dict keys joined with ``/``,
  list and tuple items numbered), other leaves kept as metadata.

The reader is shared with joblibfmt: joblib's in-stream arrays and its
compressed streams are handled here too, so a joblib file named ``.pkl``
still reads.

Writing produces a plain dict ``{"modelconv": 1, "architecture", "metadata",
"tensors", "arrays": {name: ndarray}}`` that ``pickle.load`` opens with numpy
alone (see ``picklewrite``).
"""

from __future__ import annotations

import base64
import bz2
import gzip
import io
import lzma
import math
import pickletools
import shutil
import tempfile
import zlib
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import IO, Any

import numpy as np

from .. import dtypes
from ..errors import (
    InputError,
    LimitExceededError,
    ModelconvError,
    UnsupportedError,
)
from ..header import HEADER_KEY, check_header, model_from_header
from ..limits import MAX_JSON_DEPTH, MAX_JSON_INT_DIGITS
from ..model import Architecture, Model, Role, Tensor
from ..unpickle import (
    ArrayRef,
    BytesIORecord,
    ByteStore,
    DtypeRef,
    GlobalRef,
    KerasModelRecord,
    LazyBytes,
    LazyLatin1,
    LazyText,
    Opaque,
    PickleInput,
    RestrictedUnpickler,
    Span,
)
from .base import Loss, Probe, ReadOptions, WriteOptions

FORMAT = "pickle"

# The legacy (pre-zip) PyTorch checkpoint starts with this pickled magic
# number; detection names it instead of reading torch globals as offenders.
TORCH_LEGACY_MAGIC = b"\x8a\x0al\xfc\x9cF\xf9 j\xa8P\x19"

# Every container node visited while turning the structure into tensors and
# metadata counts; shared references are visited once, so this bounds work.
MAX_WALK_NODES = 2_000_000

# A string-label array or object array longer than this is summarised in
# metadata rather than listed.
MAX_METADATA_LIST = 100_000

# Small bytes values are kept in metadata as base64; longer ones are noted.
MAX_METADATA_BYTES = 4096

# Compression magic bytes, as joblib writes them (joblib/compressor.py).
COMPRESSION_MAGIC: tuple[tuple[str, bytes], ...] = (
    ("zlib", b"\x78"),
    ("gzip", b"\x1f\x8b"),
    ("bz2", b"BZh"),
    ("lzma", b"\x5d\x00\x00"),
    ("xz", b"\xfd\x37\x7a\x58\x5a\x00"),
    ("lz4", b"\x04\x22\x4d\x18"),
)


# ---------------------------------------------------------------------------
# Sniffing


def pickle_score(head: bytes, size: int) -> int:
    """Confidence that ``head`` starts a pickle stream (0 when it does not)."""
    if len(head) >= 2 and head[0] == 0x80 and 2 <= head[1] <= 5:
        if TORCH_LEGACY_MAGIC in head[:32]:
            return 0
        return 90
    if not head or head[:1] not in b"(}]cN)KJIVXSUG":
        return 0
    return _protocol0_score(head, size)


def _protocol0_score(head: bytes, size: int) -> int:
    """Protocols 0 and 1 have no magic: parse the head's opcodes (no execution)."""
    count = 0
    try:
        for opcode, _arg, pos in pickletools.genops(io.BytesIO(head)):
            count += 1
            if opcode.name == "STOP":
                return 70 if (pos or 0) + 1 == size else 0
            if opcode.name in ("INST", "OBJ") and count == 1:
                return 0
    except (ValueError, UnicodeDecodeError, OverflowError):
        # Running off the end of the head is expected for a long pickle.
        return 40 if count >= 8 and len(head) < size else 0
    return 0


def compression_of(head: bytes) -> str | None:
    """The compressor joblib used, from the magic bytes, or None."""
    for name, magic in COMPRESSION_MAGIC:
        if head.startswith(magic):
            if name == "zlib" and (len(head) < 2 or (0x78 * 256 + head[1]) % 31):
                return None
            return name
    return None


# A bz2 block can be 900 kB before it yields a byte; sniffing reads at most
# this much compressed input to see the stream's first bytes.
SNIFF_COMPRESSED_BYTES = 2 * 2**20


def _head_decoder(compressor: str) -> Any:
    if compressor == "zlib":
        return zlib.decompressobj(zlib.MAX_WBITS)
    if compressor == "gzip":
        return zlib.decompressobj(31)
    if compressor == "bz2":
        return bz2.BZ2Decompressor()
    if compressor in ("lzma", "xz"):
        kind = lzma.FORMAT_ALONE if compressor == "lzma" else lzma.FORMAT_XZ
        return lzma.LZMADecompressor(format=kind)
    return _lz4_frame().LZ4FrameDecompressor()


def decompressed_head(probe: Probe, compressor: str, want: int = 4096) -> bytes:
    """The first bytes of a compressed file (empty when it does not decode)."""
    try:
        decoder = _head_decoder(compressor)
        with open(probe.path, "rb") as handle:
            out = b""
            read = 0
            while len(out) < want and read < SNIFF_COMPRESSED_BYTES:
                piece = handle.read(1 << 16)
                if not piece:
                    break
                read += len(piece)
                out += decoder.decompress(piece, want - len(out))
            return out
    except Exception:  # any decoder failure means "not this format"
        return b""


def sniff(probe: Probe) -> int:
    if probe.is_dir:
        return 0
    score = pickle_score(probe.head, probe.size)
    if score and b"joblib.numpy_pickle" in probe.head[:4096]:
        score -= 5  # joblib's sniffer claims these; ours still reads them
    return score


# ---------------------------------------------------------------------------
# Decompression


class _ZlibRaw(io.RawIOBase):
    """A raw zlib stream (joblib's BinaryZlibFile) decoded in bounded pieces."""

    def __init__(self, handle: IO[bytes], wbits: int) -> None:
        self._handle = handle
        self._decoder = zlib.decompressobj(wbits)
        self._pending = b""

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        while True:
            if self._pending:
                n = min(len(view), len(self._pending))
                view[:n] = self._pending[:n]
                self._pending = self._pending[n:]
                return n
            if self._decoder.eof:
                return 0
            source = self._decoder.unconsumed_tail or self._handle.read(1 << 16)
            if not source:
                raise EOFError("compressed stream ends before its end marker")
            self._pending = self._decoder.decompress(source, max(len(view), 1 << 16))


def open_decompressor(handle: IO[bytes], compressor: str) -> Any:
    """A reader of the decompressed stream; each read returns bounded output."""
    if compressor == "zlib":
        return io.BufferedReader(_ZlibRaw(handle, zlib.MAX_WBITS), 1 << 16)
    if compressor == "gzip":
        return gzip.GzipFile(fileobj=handle, mode="rb")
    if compressor == "bz2":
        return bz2.BZ2File(handle, "rb")
    if compressor == "lzma":
        return lzma.LZMAFile(handle, "rb", format=lzma.FORMAT_ALONE)
    if compressor == "xz":
        return lzma.LZMAFile(handle, "rb", format=lzma.FORMAT_XZ)
    if compressor == "lz4":
        return _lz4_frame().LZ4FrameFile(handle, "rb")
    raise UnsupportedError(f"unknown compressor {compressor!r}")


def _lz4_frame() -> Any:
    try:
        import lz4.frame
    except ImportError as exc:
        raise UnsupportedError(
            "this file is lz4-compressed and the 'lz4' package is not installed; "
            "install it with `pip install lz4` (or modelconv[lz4])"
        ) from exc
    return lz4.frame


# ---------------------------------------------------------------------------
# Reading


@dataclass
class _Context:
    path: Path
    format: str
    options: ReadOptions
    resources: ExitStack
    warnings: list[str] = field(default_factory=list)


def read(path: Path, options: ReadOptions) -> Model:
    return read_model(path, options, FORMAT)


def read_model(path: Path, options: ReadOptions, format: str) -> Model:
    """Read a pickle or joblib file (plain or compressed) into a Model."""
    resources = ExitStack()
    try:
        ctx = _Context(Path(path), format, options, resources)
        root = _decode(ctx)
        return _recognise(root, ctx)
    except BaseException:
        resources.close()
        raise


def _decode(ctx: _Context) -> Any:
    try:
        handle = ctx.resources.enter_context(open(ctx.path, "rb"))
        size = ctx.path.stat().st_size
        head = handle.read(16)
        handle.seek(0)
    except OSError as exc:
        raise InputError(
            f"cannot read {str(ctx.path)!r}: {exc.strerror}; check the path"
        ) from exc
    if head.startswith(b"ZF"):
        raise UnsupportedError(
            f"{str(ctx.path)!r} is an old joblib (< 0.10) zlib file ('ZF' header); "
            "re-save it with a current joblib"
        )
    compressor = compression_of(head) if pickle_score(head, size) == 0 else None
    if compressor is None:
        store = ByteStore(handle, repr(str(ctx.path)))
        stream = PickleInput(handle, store, size=size, description=store.description)
    else:
        spool = ctx.resources.enter_context(tempfile.TemporaryFile())
        reader = ctx.resources.enter_context(open_decompressor(handle, compressor))
        description = f"the {compressor}-decompressed stream of {str(ctx.path)!r}"
        store = ByteStore(spool, description)
        stream = PickleInput(
            reader, store, size=None, spool=spool, description=description
        )
        ctx.warnings.append(
            f"the file is {compressor}-compressed: reading it decompressed the "
            "whole stream in order, keeping array bytes in a temporary file"
        )
    machine = RestrictedUnpickler(stream, max_bytes=ctx.options.max_bytes)
    try:
        return machine.load().root
    except ModelconvError:
        raise
    except (OSError, EOFError, ValueError, lzma.LZMAError, RuntimeError) as exc:
        raise InputError(
            f"cannot decode {str(ctx.path)!r} at offset {stream.pos}: {exc}; the "
            "file is damaged"
        ) from exc


def _recognise(root: Any, ctx: _Context) -> Model:
    if isinstance(root, KerasModelRecord):
        return _keras_model(root, ctx)
    if isinstance(root, Opaque) and root.cls.name in ("MLPClassifier", "MLPRegressor"):
        return _sklearn_model(root, ctx)
    if isinstance(root, dict) and root.get(HEADER_KEY) is not None:
        return _modelconv_model(root, ctx)
    walker = _Walker(ctx)
    walker.walk(root, (), Role.WEIGHT)
    return Model(
        tensors=tuple(walker.tensors),
        metadata={"values": walker.values} if walker.values else {},
        format=ctx.format,
        flavour="arrays",
        recognised="arrays",
        warnings=tuple(ctx.warnings + walker.warnings),
        resources=ctx.resources,
    )


# -- tensors over array references


class ArrayRefSource:
    """Reads an array the unpickler found; ``view`` reinterprets storage."""

    def __init__(self, ref: ArrayRef, view: np.dtype | None = None) -> None:
        self.ref = ref
        self.view = view

    def _cast(self, array: np.ndarray) -> np.ndarray:
        return array if self.view is None else array.view(self.view)

    def read(self) -> np.ndarray:
        return self._cast(self.ref.to_numpy())

    def iter_chunks(self, max_bytes: int) -> Iterator[np.ndarray]:
        ref = self.ref
        assert ref.dtype is not None
        data = ref.data
        if isinstance(data, Span) and (not ref.fortran or len(ref.shape) <= 1):
            itemsize = ref.dtype.itemsize
            piece = max(1, max_bytes // itemsize) * itemsize
            for raw in data.iter_bytes(piece):
                yield self._cast(np.frombuffer(raw, dtype=ref.dtype))
            return
        flat = np.ascontiguousarray(self.read()).reshape(-1)
        step = max(1, max_bytes // max(1, flat.itemsize))
        for start in range(0, flat.size, step):
            yield flat[start : start + step]


def is_numeric(ref: ArrayRef) -> bool:
    return (
        ref.values is None
        and ref.dtype is not None
        and ref.dtype.kind in "biufc"
        and ref.dtype.fields is None
    )


def tensor_from_ref(
    name: str, ref: ArrayRef, role: Role, source_names: tuple[str, ...] = ()
) -> Tensor:
    assert ref.dtype is not None
    return Tensor(
        name=name,
        dtype=dtypes.dtype_name(ref.dtype),
        shape=ref.shape,
        role=role,
        source_names=source_names,
        source=ArrayRefSource(ref),
    )


# -- the container walk


class _Walker:
    """Containers → tensors and JSON-able metadata, each node visited once."""

    def __init__(self, ctx: _Context) -> None:
        self.ctx = ctx
        self.tensors: list[Tensor] = []
        self.names: set[str] = set()
        self.next_suffix: dict[str, int] = {}
        self.values: dict[str, Any] = {}
        self.warnings: list[str] = []
        self.seen: dict[int, str] = {}
        self.nodes = 0
        self.shared = 0

    def _visit(self, value: Any, path: tuple[str, ...]) -> str | None:
        """Count a node; return the earlier path of a shared reference."""
        self.nodes += 1
        if self.nodes > MAX_WALK_NODES:
            raise LimitExceededError(
                f"the pickle holds more than {MAX_WALK_NODES} containers and "
                "values; refused"
            )
        if len(path) > MAX_JSON_DEPTH:
            raise LimitExceededError(
                f"the pickle nests deeper than {MAX_JSON_DEPTH} levels; refused"
            )
        key = id(value)
        if key in self.seen:
            return self.seen[key]
        self.seen[key] = "/".join(path)
        return None

    def _note_shared(self, path: str, earlier: str) -> None:
        """Say once that shared containers are listed under their first path."""
        self.shared += 1
        if self.shared == 1:
            self.warnings.append(
                f"{path!r} is the same container as {earlier!r}; shared "
                "containers are listed once, under their first path (metadata "
                "'same_as' records the others)"
            )

    def _unique(self, name: str) -> str:
        # Many paths can join to one name ("a/b" as one key or two levels,
        # str or bytes keys): resume the suffix count where it stopped, so N
        # clashes cost N steps rather than N**2.
        name = name or "array"
        candidate, n = name, self.next_suffix.get(name, 1)
        while candidate in self.names:
            candidate, n = f"{name}_{n}", n + 1
        self.next_suffix[name] = n
        self.names.add(candidate)
        return candidate

    def add_tensor(self, ref: ArrayRef, path: tuple[str, ...], role: Role) -> None:
        joined = "/".join(path)
        name = self._unique(joined)
        names = (joined,) if name != joined else ()
        self.tensors.append(tensor_from_ref(name, ref, role, names))

    def walk(self, value: Any, path: tuple[str, ...], role: Role) -> None:
        if isinstance(value, (dict, list, tuple, set, frozenset, Opaque, ArrayRef)):
            earlier = self._visit(value, path)
            if earlier is not None and isinstance(value, ArrayRef):
                # One array under several keys is a tensor under each, as
                # np.savez of the same dict would keep it; each container is
                # still walked once, so the count stays linear in the stream.
                if is_numeric(value):
                    self.add_tensor(value, path, role)
                else:
                    self.values["/".join(path)] = {"same_as": earlier}
                return
            if earlier is not None:
                self.values["/".join(path)] = {"same_as": earlier}
                self._note_shared("/".join(path), earlier)
                return
        if isinstance(value, ArrayRef):
            if is_numeric(value):
                self.add_tensor(value, path, role)
            else:
                self.values["/".join(path)] = self.plain(value)
            return
        if isinstance(value, dict):
            for key, item in value.items():
                self.walk(item, (*path, _key_text(key)), role)
            return
        if isinstance(value, (list, tuple)) and not _all_plain(value):
            for index, item in enumerate(value):
                self.walk(item, (*path, str(index)), role)
            return
        if isinstance(value, Opaque):
            self.values["/".join((*path, "__class__"))] = value.cls.qualname
            self.walk(value.attributes, path, role)
            return
        if isinstance(value, KerasModelRecord):
            self.warnings.append(
                f"a pickled Keras model sits inside the container at "
                f"{'/'.join(path)!r}; only a model pickled on its own is read"
            )
        self.values["/".join(path) or "value"] = self.plain(value)

    def plain(self, value: Any, depth: int = 0) -> Any:
        """A JSON-able copy of a non-array value (bounded, shared refs cut)."""
        return to_plain(value, self, depth)


def _key_text(key: Any) -> str:
    if isinstance(key, str):
        return key
    if isinstance(key, bytes):
        return key.decode("latin-1")
    return str(key)


def _all_plain(items: Any) -> bool:
    return all(
        isinstance(v, (str, int, float, bool, type(None), complex)) for v in items
    )


# The longest integers kept as numbers in metadata: at most 332 bits have at
# most 100 decimal digits, MAX_JSON_INT_DIGITS, what modelconv's JSON reader
# accepts.
_PLAIN_INT_BITS = int(MAX_JSON_INT_DIGITS * math.log2(10))


def to_plain(value: Any, walker: _Walker | None = None, depth: int = 0) -> Any:
    """JSON-able data from a decoded value; arrays become lists when small."""
    if depth > MAX_JSON_DEPTH:
        raise LimitExceededError(
            f"the pickle nests deeper than {MAX_JSON_DEPTH} levels; refused"
        )
    if walker is not None and isinstance(value, (dict, list, tuple, Opaque)):
        walker.nodes += 1
        if walker.nodes > MAX_WALK_NODES:
            raise LimitExceededError(
                f"the pickle holds more than {MAX_WALK_NODES} values; refused"
            )
    if isinstance(value, int) and value.bit_length() > _PLAIN_INT_BITS:
        # JSON readers (modelconv's own among them) refuse integers this
        # long; kept exact as hex text, tagged like bytes are.
        return {"int": hex(value)}
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, complex):
        return {"real": value.real, "imag": value.imag}
    if isinstance(value, dict):
        return {_key_text(k): to_plain(v, walker, depth + 1) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_plain(v, walker, depth + 1) for v in value]
    if isinstance(value, (set, frozenset)):
        return sorted((to_plain(v, walker, depth + 1) for v in value), key=repr)
    if isinstance(value, bytes):
        if len(value) <= MAX_METADATA_BYTES:
            return {"base64": base64.b64encode(value).decode("ascii")}
        return f"<{len(value)} bytes>"
    if isinstance(value, (LazyBytes, LazyText, LazyLatin1)):
        return f"<{value.span.length} bytes, not read>"
    if isinstance(value, ArrayRef):
        return _array_plain(value)
    if isinstance(value, Opaque):
        result = {"__class__": value.cls.qualname}
        result.update(to_plain(value.attributes, walker, depth + 1))
        return result
    if isinstance(value, GlobalRef):
        return value.qualname
    if isinstance(value, DtypeRef):
        return str(value.dtype) if value.dtype is not None else value.kind
    if isinstance(value, BytesIORecord):
        return "<io.BytesIO>"
    return f"<{type(value).__name__}>"


def _array_plain(ref: ArrayRef) -> Any:
    if not ref.ready:
        ref.to_numpy()  # raises: the array never received its data
    if ref.values is not None:
        if len(ref.values) > MAX_METADATA_LIST:
            return f"<object array of {len(ref.values)} values>"
        return to_plain(list(ref.values))
    if ref.size > MAX_METADATA_LIST:
        return f"<{ref.dtype} array of shape {list(ref.shape)}>"
    array = ref.to_numpy()
    if array.dtype.kind == "S":
        return [to_plain(bytes(v)) for v in array.reshape(-1)]
    if array.dtype.kind == "U":
        flat = np.ascontiguousarray(array).reshape(-1)
        codes = flat.view(array.dtype.byteorder + "u4")
        if codes.size and int(codes.max()) > 0x10FFFF:
            raise InputError(
                f"string array at offset {ref.offset} holds code points beyond "
                "Unicode; the pickle is damaged"
            )
    return array.tolist()


# -- modelconv's own files


def _modelconv_model(root: dict[Any, Any], ctx: _Context) -> Model:
    arrays = root.get("arrays")
    if not isinstance(arrays, dict):
        raise InputError(
            f"{str(ctx.path)!r} has a modelconv header but no 'arrays' dict; the "
            "file is damaged"
        )
    header = check_header(to_plain({k: v for k, v in root.items() if k != "arrays"}))
    sources = []
    for entry in header["tensors"]:
        key = entry.get("key", entry["name"])
        ref = arrays.get(key)
        if not isinstance(ref, ArrayRef) or not is_numeric(ref):
            raise InputError(
                f"modelconv pickle: tensor {entry['name']!r} has no numeric array "
                f"under key {key!r}; the file is damaged"
            )
        storage = dtypes.storage_dtype(entry["dtype"])
        assert ref.dtype is not None
        if ref.dtype.newbyteorder("<") != storage or list(ref.shape) != list(
            entry["shape"]
        ):
            raise InputError(
                f"modelconv pickle: tensor {entry['name']!r} is stored as "
                f"{ref.dtype.str} {list(ref.shape)} where the header declares "
                f"{entry['dtype']} {entry['shape']}; the file is damaged"
            )
        view = dtypes.numpy_dtype("bfloat16") if entry["dtype"] == "bfloat16" else None
        sources.append(ArrayRefSource(ref, view))
    return model_from_header(
        header,
        sources,
        format=ctx.format,
        recognised="modelconv",
        warnings=tuple(ctx.warnings),
        resources=ctx.resources,
    )


# -- scikit-learn


def _sklearn_model(record: Opaque, ctx: _Context) -> Model:
    from ..sklearn_mlp import CONFIG_KEYS, build_architecture

    attrs = record.attributes
    walker = _Walker(ctx)
    tensors: list[Tensor] = []
    for attr, weight in (("coefs_", "kernel"), ("intercepts_", "bias")):
        items = attrs.get(attr)
        if not isinstance(items, (list, tuple)):
            raise InputError(
                f"the pickled {record.cls.name} has no {attr} list; it was not "
                "fitted, so it holds no weights to read"
            )
        for index, ref in enumerate(items):
            if not isinstance(ref, ArrayRef) or not is_numeric(ref):
                raise InputError(
                    f"{record.cls.name}.{attr}[{index}] is not a numeric array; "
                    "the file is damaged"
                )
            walker._visit(ref, (attr, str(index)))
            name = f"layer_{index}/{weight}"
            walker.names.add(name)
            tensors.append(
                tensor_from_ref(name, ref, Role.WEIGHT, (f"{attr}/{index}",))
            )
    tensors.sort(key=lambda t: (int(t.name.split("/")[0][6:]), t.name.endswith("bias")))

    config: dict[str, Any] = {"estimator": record.cls.name}
    for key in CONFIG_KEYS[1:]:
        if key in attrs:
            config[key] = to_plain(attrs[key])
    if "n_features_in_" not in config and tensors:
        config["n_features_in_"] = tensors[0].shape[0]
    if "n_outputs_" not in config and tensors:
        config["n_outputs_"] = tensors[-1].shape[-1]
    if isinstance(config.get("hidden_layer_sizes"), int):
        config["hidden_layer_sizes"] = [config["hidden_layer_sizes"]]

    for attr, value in attrs.items():
        name = _key_text(attr)
        if name in ("coefs_", "intercepts_") or name in CONFIG_KEYS:
            continue
        role = Role.OPTIMIZER if name == "_optimizer" else Role.STATE
        walker.walk(value, (name,), role)
    architecture = build_architecture(config)
    ctx.warnings.extend(_sklearn_shape_mismatches(architecture, tensors))
    version = config.get("_sklearn_version")
    metadata: dict[str, Any] = {
        "producer": {"name": "scikit-learn", "version": version},
        "estimator": f"{record.cls.module}.{record.cls.name}",
    }
    if walker.values:
        metadata["values"] = walker.values
    return Model(
        tensors=tuple(tensors + walker.tensors),
        architecture=architecture,
        metadata=metadata,
        format=ctx.format,
        flavour="sklearn-mlp",
        recognised="sklearn-mlp",
        warnings=tuple(ctx.warnings + walker.warnings),
        resources=ctx.resources,
    )


def _sklearn_shape_mismatches(
    architecture: Architecture, tensors: list[Tensor]
) -> list[str]:
    """Where coefs_ and intercepts_ disagree with the layer sizes the
    estimator records (n_features_in_, hidden_layer_sizes, n_outputs_).

    scikit-learn keeps both in step, so a disagreement means a damaged or
    edited file; the parameter totals shown come from the recorded sizes.
    """
    shapes = {t.name: t.shape for t in tensors}
    found = []
    for layer in architecture.layers:
        units_in = layer.config.get("input_dim")
        units_out = layer.config.get("units")
        expected = {
            f"{layer.name}/kernel": (units_in, units_out),
            f"{layer.name}/bias": (units_out,),
        }
        for name, shape in expected.items():
            if shapes.get(name) != shape:
                found.append(
                    f"scikit-learn MLP: {name} has shape "
                    f"{list(shapes[name]) if name in shapes else 'none'} where the "
                    f"recorded layer sizes give {list(shape)}; the file is damaged "
                    "or was edited, and the parameter totals shown may be wrong"
                )
    extra = sorted(
        set(shapes) - {n for layer in architecture.layers for n in layer.tensor_names}
    )
    found += [
        f"scikit-learn MLP: {name} belongs to no layer of the recorded sizes; the "
        "file is damaged or was edited"
        for name in extra
    ]
    return found


# -- Keras


def _keras_model(record: KerasModelRecord, ctx: _Context) -> Model:
    archive = record.archive
    head = archive[:512] if isinstance(archive, bytes) else _span_head(archive, 512)
    if len(head) >= 262 and head[257:262] == b"ustar":
        raise UnsupportedError(
            f"{str(ctx.path)!r} is a tf.keras 2.7-2.12 pickled model: a tar of a "
            "TensorFlow SavedModel, which modelconv does not read; load it with "
            "that TensorFlow version and save it as .keras or .h5"
        )
    if not head.startswith(b"PK\x03\x04"):
        raise InputError(
            f"{str(ctx.path)!r} has the shape of a pickled Keras model "
            f"({record.via.qualname}) but its archive is not a .keras zip (first "
            f"bytes {head[:8].hex(' ')}); the file is damaged"
        )
    try:
        from . import keras_zip
    except ImportError as exc:
        raise UnsupportedError(
            "reading a pickled Keras model needs the .keras reader, which this "
            "modelconv build lacks"
        ) from exc

    folder = Path(tempfile.mkdtemp(prefix="modelconv-pickled-keras-"))
    ctx.resources.callback(shutil.rmtree, folder, True)
    target = folder / "model.keras"
    with target.open("wb") as out:
        if isinstance(archive, bytes):
            out.write(archive)
        else:
            for piece in archive.iter_bytes(1 << 20):
                out.write(piece)
    try:
        inner = keras_zip.read(target, ctx.options)
    except ModelconvError:
        raise
    except Exception as exc:  # h5py and zip errors from a damaged archive
        raise InputError(
            f"the .keras archive inside {str(ctx.path)!r} cannot be read "
            f"({type(exc).__name__}: {exc}); the pickle is damaged"
        ) from exc
    ctx.resources.callback(inner.close)
    kind = "Keras 3" if record.via.kind == "keras-model-class" else "tf_keras"
    metadata = dict(inner.metadata)
    metadata["pickled_as"] = f"{kind} model object ({record.via.qualname})"
    return inner.replace(
        format=ctx.format,
        flavour="keras-model",
        recognised="keras-model",
        metadata=metadata,
        warnings=tuple(ctx.warnings) + tuple(inner.warnings),
        resources=ctx.resources,
    )


def _span_head(span: Span, n: int) -> bytes:
    return span.store.read(span.offset, min(n, span.length))


# ---------------------------------------------------------------------------
# Writing


KERAS_FLAVOUR = "keras"


def prepare(model: Model, options: WriteOptions) -> Model:
    """For the Keras flavour, the model as the ``.keras`` writer prepares it."""
    if options.flavour == KERAS_FLAVOUR:
        from . import keras_zip_writer

        return keras_zip_writer.prepare(model, options)
    return model


def losses(model: Model, options: WriteOptions) -> list[Loss]:
    """The modelconv dict carries everything; the Keras form what .keras does."""
    if options.flavour == KERAS_FLAVOUR:
        from . import keras_zip

        return keras_zip.losses(model, options)
    from ..picklewrite import metadata_losses

    return metadata_losses(model)


def write(model: Model, path: Path, options: WriteOptions) -> None:
    with open(path, "wb") as out:
        write_stream(model, out, path, options, joblib_arrays=False)


def write_stream(
    model: Model,
    out: IO[bytes],
    path: Path,
    options: WriteOptions,
    *,
    joblib_arrays: bool,
    allow_mmap: bool = True,
) -> None:
    """The modelconv dict, or with ``--flavour keras`` a Keras 3 model pickle."""
    from ..picklewrite import write_document, write_keras_pickle

    if options.flavour != KERAS_FLAVOUR:
        write_document(model, out, joblib_arrays=joblib_arrays, allow_mmap=allow_mmap)
        return
    from . import keras_zip

    folder = Path(tempfile.mkdtemp(prefix=".modelconv-keras-", dir=path.parent))
    try:
        archive = folder / "model.keras"
        keras_zip.write(model, archive, replace(options, flavour=None))
        write_keras_pickle(model, archive, out)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
