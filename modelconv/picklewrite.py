"""A streaming pickle writer for modelconv's pickle and joblib files.

The document is the plain dict ``{"modelconv": 1, "architecture": ...,
"metadata": ..., "tensors": [...], "arrays": {name: ndarray}}``. Opcodes are
written by hand so that each array goes out from its lazy source one chunk at
a time; memory stays near one chunk whatever the model's size.

Arrays in a pickle are written as numpy 1 writes them at protocols 2 to 4:
``numpy.core.multiarray._reconstruct(numpy.ndarray, (0,), b"b")`` and a BUILD
whose state carries the bytes as one BINBYTES8. numpy 1.x resolves that name
directly and numpy 2.x keeps it as a warning-free alias for old pickles
(numpy/core/multiarray.py), so ``pickle.load`` works under both; the
``numpy._core`` path of numpy 2 would fail under numpy 1.

Arrays in a joblib file use joblib's own layout (joblib/numpy_pickle.py,
joblib >= 1.2): a ``NumpyArrayWrapper`` BUILD, one padding-length byte,
padding to a 16-byte boundary of the uncompressed stream, then the raw bytes,
so ``joblib.load`` reads them (and can memory-map them) as its own.
"""

from __future__ import annotations

import bz2
import gzip
import lzma
import struct
import zlib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import IO, Any

from . import dtypes
from .errors import UsageError
from .formats.base import Loss
from .header import model_header
from .model import Model, Tensor

PROTOCOL = 4
JOBLIB_ALIGNMENT = 16  # joblib.numpy_pickle.NUMPY_ARRAY_ALIGNMENT_BYTES

# Accepted levels per compressor, as the underlying libraries define them;
# 3 is joblib's default level for every compressor.
COMPRESS_LEVELS: dict[str, range] = {
    "zlib": range(0, 10),
    "gzip": range(0, 10),
    "bz2": range(1, 10),
    "lzma": range(0, 10),
    "xz": range(0, 10),
    "lz4": range(0, 17),
}
DEFAULT_LEVEL = 3

SUFFIX_COMPRESSION = {
    ".z": "zlib",
    ".gz": "gzip",
    ".bz2": "bz2",
    ".xz": "xz",
    ".lzma": "lzma",
    ".lz4": "lz4",
}


class OpcodeWriter:
    """Writes pickle opcodes to ``out`` and counts the stream position."""

    def __init__(self, out: IO[bytes]) -> None:
        self.out = out
        self.pos = 0

    def raw(self, data: bytes | memoryview) -> None:
        self.out.write(data)
        self.pos += len(data)

    def start(self) -> None:
        self.raw(b"\x80" + bytes([PROTOCOL]))

    def stop(self) -> None:
        self.raw(b".")

    def global_(self, module: str, name: str) -> None:
        self.raw(b"c" + module.encode("ascii") + b"\n" + name.encode("ascii") + b"\n")

    def string(self, text: str) -> None:
        data = text.encode("utf-8", "surrogatepass")
        if len(data) < 256:
            self.raw(b"\x8c" + bytes([len(data)]) + data)
        elif len(data) < 2**32:
            self.raw(b"X" + struct.pack("<I", len(data)) + data)
        else:
            self.raw(b"\x8d" + struct.pack("<Q", len(data)) + data)

    def integer(self, value: int) -> None:
        if 0 <= value < 256:
            self.raw(b"K" + bytes([value]))
        elif 0 <= value < 65536:
            self.raw(b"M" + struct.pack("<H", value))
        elif -(2**31) <= value < 2**31:
            self.raw(b"J" + struct.pack("<i", value))
        else:
            data = value.to_bytes((value.bit_length() + 8) // 8, "little", signed=True)
            if len(data) < 256:
                self.raw(b"\x8a" + bytes([len(data)]) + data)
            else:
                self.raw(b"\x8b" + struct.pack("<i", len(data)) + data)

    def value(self, obj: Any) -> None:
        """Plain data: dicts, lists, tuples, str, int, float, bool, None, bytes."""
        if obj is None:
            self.raw(b"N")
        elif obj is True:
            self.raw(b"\x88")
        elif obj is False:
            self.raw(b"\x89")
        elif isinstance(obj, int):
            self.integer(int(obj))
        elif isinstance(obj, float):
            self.raw(b"G" + struct.pack(">d", obj))
        elif isinstance(obj, str):
            self.string(obj)
        elif isinstance(obj, bytes):
            self.raw(b"\x8e" + struct.pack("<Q", len(obj)) + obj)
        elif isinstance(obj, Mapping):
            self.raw(b"}")
            for key, item in obj.items():
                self.value(key if isinstance(key, (str, int)) else str(key))
                self.value(item)
                self.raw(b"s")
        elif isinstance(obj, Sequence):
            self.raw(b"]")
            for item in obj:
                self.value(item)
                self.raw(b"a")
        else:
            # losses() reported it; the value is kept as text.
            self.string(str(obj))

    def shape(self, shape: Sequence[int]) -> None:
        self.raw(b"(")
        for dim in shape:
            self.integer(int(dim))
        self.raw(b"t")

    def dtype(self, name: str) -> None:
        self.global_("numpy", "dtype")
        self.string(dtypes.storage_dtype(name).str)
        self.raw(b"\x85R")

    def data(self, tensor: Tensor) -> None:
        written = 0
        for piece in tensor.iter_bytes():
            self.raw(piece)
            written += len(piece)
        if written != tensor.nbytes:
            from .errors import InputError

            raise InputError(
                f"tensor {tensor.name!r} yielded {written} bytes where its shape "
                f"and dtype need {tensor.nbytes}; nothing was written"
            )

    def numpy_array(self, tensor: Tensor) -> None:
        self.global_("numpy.core.multiarray", "_reconstruct")
        self.global_("numpy", "ndarray")
        self.raw(b"K\x00\x85C\x01b\x87R")
        self.raw(b"(K\x01")
        self.shape(tensor.shape)
        self.dtype(tensor.dtype)
        self.raw(b"\x89")  # not Fortran order
        self.raw(b"\x8e" + struct.pack("<Q", tensor.nbytes))
        self.data(tensor)
        self.raw(b"tb")

    def joblib_array(self, tensor: Tensor, allow_mmap: bool) -> None:
        self.global_("joblib.numpy_pickle", "NumpyArrayWrapper")
        self.raw(b")\x81}(")
        self.string("subclass")
        self.global_("numpy", "ndarray")
        self.string("shape")
        self.shape(tensor.shape)
        self.string("order")
        self.string("C")
        self.string("dtype")
        self.dtype(tensor.dtype)
        self.string("allow_mmap")
        self.value(allow_mmap)
        self.string("numpy_array_alignment_bytes")
        self.integer(JOBLIB_ALIGNMENT)
        self.raw(b"ub")
        # joblib's padding rule: the length byte, then enough 0xff bytes that
        # the data starts on a multiple of the alignment (16 when aligned).
        padding = JOBLIB_ALIGNMENT - (self.pos + 1) % JOBLIB_ALIGNMENT
        self.raw(bytes([padding]) + b"\xff" * padding)
        self.data(tensor)


def plain_problems(value: Any, where: str, depth: int = 0) -> list[str]:
    """Paths of values the writer can only keep as text."""
    if value is None or isinstance(value, (bool, int, float, str, bytes)):
        return []
    if depth > 200:
        return [where]
    if isinstance(value, Mapping):
        found = []
        for key, item in value.items():
            if not isinstance(key, (str, int)):
                found.append(f"{where}/{key!r}")
            found += plain_problems(item, f"{where}/{key}", depth + 1)
        return found
    if isinstance(value, (list, tuple)):
        found = []
        for index, item in enumerate(value):
            found += plain_problems(item, f"{where}/{index}", depth + 1)
        return found
    return [where]


def metadata_losses(model: Model) -> list[Loss]:
    header = model_header(model)
    problems = plain_problems(header.get("metadata"), "metadata")
    problems += plain_problems(header.get("architecture"), "architecture")
    if not problems:
        return []
    shown = ", ".join(problems[:5]) + (" ..." if len(problems) > 5 else "")
    return [
        Loss(
            "metadata",
            f"values that are not plain data would be written as text: {shown}",
        )
    ]


def write_document(
    model: Model, out: IO[bytes], *, joblib_arrays: bool, allow_mmap: bool = True
) -> None:
    """The modelconv dict, streaming each tensor from its source."""
    writer = OpcodeWriter(out)
    writer.start()
    writer.raw(b"}")
    for key, value in model_header(model).items():
        writer.value(key)
        writer.value(value)
        writer.raw(b"s")
    writer.value("arrays")
    writer.raw(b"}")
    for tensor in model.tensors:
        writer.value(tensor.name)
        if joblib_arrays:
            writer.joblib_array(tensor, allow_mmap)
        else:
            writer.numpy_array(tensor)
        writer.raw(b"s")
    writer.raw(b"s")
    writer.stop()


# Keras 3 pickles a model as getattr(<class>, "_unpickle_model") applied to an
# io.BytesIO holding the .keras archive (keras/src/models/model.py,
# Model.__reduce__); BytesIO's state is (bytes, position, __dict__).
KERAS_MODEL_CLASSES = {
    "Sequential": ("keras.src.models.sequential", "Sequential"),
    "Functional": ("keras.src.models.functional", "Functional"),
    "Model": ("keras.src.models.functional", "Functional"),
}


def write_keras_pickle(model: Model, archive: Path, out: IO[bytes]) -> None:
    """The exact form Keras 3 emits, built without importing Keras."""
    arch = model.architecture
    class_name = str(arch.config.get("class_name")) if arch is not None else ""
    module, name = KERAS_MODEL_CLASSES.get(class_name, KERAS_MODEL_CLASSES["Model"])
    size = archive.stat().st_size
    writer = OpcodeWriter(out)
    writer.start()
    writer.global_("builtins", "getattr")
    writer.global_(module, name)
    writer.string("_unpickle_model")
    writer.raw(b"\x86R")
    writer.global_("_io", "BytesIO")
    writer.raw(b")\x81")
    writer.raw(b"\x8e" + struct.pack("<Q", size))
    with archive.open("rb") as handle:
        while piece := handle.read(1 << 20):
            writer.raw(piece)
    writer.raw(b"K\x00N\x87b\x85R")
    writer.stop()


class _ZlibWriter:
    """A raw zlib stream, as joblib's BinaryZlibFile writes it."""

    def __init__(self, out: IO[bytes], level: int) -> None:
        self._out = out
        self._encoder = zlib.compressobj(level, zlib.DEFLATED, zlib.MAX_WBITS)

    def write(self, data: bytes | memoryview) -> int:
        self._out.write(self._encoder.compress(data))
        return len(data)

    def close(self) -> None:
        self._out.write(self._encoder.flush())

    def __enter__(self) -> _ZlibWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def check_compress(compress: tuple[str, int | None]) -> tuple[str, int]:
    name, level = compress
    if name not in COMPRESS_LEVELS:
        raise UsageError(
            f"--compress {name!r}: the joblib writer knows {', '.join(COMPRESS_LEVELS)}"
        )
    level = DEFAULT_LEVEL if level is None else level
    allowed = COMPRESS_LEVELS[name]
    if level not in allowed:
        raise UsageError(
            f"--compress {name}:{level}: the level must be between {allowed.start} "
            f"and {allowed.stop - 1}"
        )
    return name, level


def open_compressor(out: IO[bytes], name: str, level: int) -> Any:
    """A writable stream compressing into ``out`` as joblib's compressors do."""
    if name == "zlib":
        return _ZlibWriter(out, level)
    if name == "gzip":
        return gzip.GzipFile(fileobj=out, mode="wb", compresslevel=level, mtime=0)
    if name == "bz2":
        return bz2.BZ2File(out, "wb", compresslevel=level)
    if name == "lzma":
        return lzma.LZMAFile(out, "wb", format=lzma.FORMAT_ALONE, preset=level)
    if name == "xz":
        return lzma.LZMAFile(out, "wb", format=lzma.FORMAT_XZ, preset=level)
    from .formats.pickles import _lz4_frame

    return _lz4_frame().LZ4FrameFile(out, "wb", compression_level=level)


def destination_name(path_name: str) -> str:
    """The destination's name behind the core's temporary ``.<name>.modelconv-*``."""
    marker = ".modelconv-"
    if path_name.startswith(".") and marker in path_name:
        return path_name[1 : path_name.rindex(marker)]
    return path_name


def compression_for(path_name: str) -> str | None:
    name = destination_name(path_name).lower()
    for suffix, compressor in SUFFIX_COMPRESSION.items():
        if name.endswith(suffix):
            return compressor
    return None
