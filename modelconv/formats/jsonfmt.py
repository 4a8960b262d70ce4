"""modelconv JSON: the shared header with every tensor's bytes inline, in base64.

The document is the header of ``modelconv/header.py`` itself::

    {"modelconv": 1, "architecture": {...} | null, "metadata": {...},
     "tensors": [{"name", "role", "dtype", "shape", "source_names",
                  "attrs"?, "data": "<base64>"}]}

``data`` holds the tensor's C-order little-endian bytes (bfloat16 as its
uint16 bits), so every dtype, NaN payload and -0.0 survives. JSON itself has
no NaN or Infinity, and Python's bare ``NaN`` is not JSON, so non-finite
floats in the architecture, metadata and attrs are written as tagged objects
(``{"$float": "NaN"}``); see ``docs/modelconv-json.schema.json``.

Writing streams: the small parts first, then each tensor's entry with its
bytes base64-encoded chunk by chunk straight to the file. Reading scans the
file once with a bounded tokenizer that records where each ``data`` string
lies without keeping it, parses the remaining skeleton with the bounded JSON
parser, and decodes a tensor's base64 only when its bytes are asked for.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import re
import struct
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import numpy as np

from .. import dtypes
from ..accel import b64decode_strict, b64encode
from ..errors import (
    HostileInputError,
    InputError,
    LimitExceededError,
    LossyConversionError,
)
from ..header import HEADER_KEY, check_header, declared_nbytes, model_header
from ..header import model_from_header as _model_from_header
from ..jsonsafe import loads_bounded
from ..limits import MAX_JSON_DEPTH, MAX_JSON_DOCUMENT_BYTES
from ..model import Model
from .base import Loss, Probe, ReadOptions, WriteOptions

FORMAT = "json"
FLAVOUR = "modelconv"

# Tags for values JSON cannot spell. An object whose only key is one of these
# is written inside {"$dict": ...} so that it is never mistaken for a tag.
FLOAT_TAG = "$float"
BYTES_TAG = "$bytes"
DICT_TAG = "$dict"
_TAGS = frozenset({FLOAT_TAG, BYTES_TAG, DICT_TAG})
_CANONICAL_NAN_BITS = 0x7FF8000000000000

# Base64 is written from pieces of this many bytes: a multiple of 3 so that
# no padding appears mid-string, and big enough to amortise the calls.
_ENCODE_BYTES = 3 * 2**20
# The scanner reads the file in blocks of this size; memory stays near it
# plus the skeleton (everything except the base64 strings).
_SCAN_BLOCK = 2**20

_HEAD = re.compile(rb'^\s*\{\s*"modelconv"\s*:')


def sniff(probe: Probe) -> int:
    if probe.is_dir:
        return 0
    head = probe.head.removeprefix(b"\xef\xbb\xbf")
    if _HEAD.match(head):
        return 100
    # Another writer may order the keys differently; the name still shows.
    if head.lstrip().startswith(b"{") and b'"modelconv"' in head:
        return 60 if b'"tensors"' in head else 0
    return 0


# --- values JSON cannot spell ----------------------------------------------


def encode_value(value: Any, where: str, problems: list[str]) -> Any:
    """``value`` as plain JSON data, tagging what JSON cannot spell.

    Anything that cannot be kept losslessly is described in ``problems`` and
    replaced by its ``repr``.
    """
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        return _encode_float(value)
    if isinstance(value, np.generic) and value.dtype.kind in "biuf":
        return encode_value(value.item(), where, problems)
    if isinstance(value, (bytes, bytearray)):
        return {BYTES_TAG: base64.b64encode(bytes(value)).decode("ascii")}
    if isinstance(value, Mapping):
        return _encode_mapping(value, where, problems)
    if isinstance(value, (list, tuple)):
        return [encode_value(v, f"{where}[{i}]", problems) for i, v in enumerate(value)]
    problems.append(f"{where} is a {type(value).__name__}, which JSON cannot hold")
    return repr(value)


def _encode_float(value: float) -> Any:
    if math.isfinite(value):
        return value
    if value != value:
        bits = struct.unpack("<Q", struct.pack("<d", value))[0]
        if bits == _CANONICAL_NAN_BITS:
            return {FLOAT_TAG: "NaN"}
        return {FLOAT_TAG: f"NaN:0x{bits:016x}"}
    return {FLOAT_TAG: "Infinity" if value > 0 else "-Infinity"}


def _encode_mapping(value: Mapping[Any, Any], where: str, problems: list[str]) -> Any:
    result: dict[str, Any] = {}
    for key, item in value.items():
        if not isinstance(key, str):
            problems.append(
                f"{where} has the non-string key {key!r}, which JSON turns into "
                "a string"
            )
            key = str(key)
        result[key] = encode_value(item, f"{where}.{key}", problems)
    if len(result) == 1 and next(iter(result)) in _TAGS:
        return {DICT_TAG: result}
    return result


def decode_value(value: Any) -> Any:
    """The inverse of ``encode_value`` on parsed JSON data."""
    if isinstance(value, list):
        return [decode_value(v) for v in value]
    if not isinstance(value, dict):
        return value
    if len(value) == 1:
        key, item = next(iter(value.items()))
        if key == FLOAT_TAG:
            return _decode_float(item)
        if key == BYTES_TAG:
            return _decode_bytes(item)
        if key == DICT_TAG and isinstance(item, dict):
            return {k: decode_value(v) for k, v in item.items()}
    return {k: decode_value(v) for k, v in value.items()}


def _decode_float(text: Any) -> float:
    special = {"NaN": math.nan, "Infinity": math.inf, "-Infinity": -math.inf}
    if isinstance(text, str) and text in special:
        return special[text]
    match = re.fullmatch(r"NaN:0x([0-9a-f]{16})", text if isinstance(text, str) else "")
    if match:
        value = struct.unpack("<d", struct.pack("<Q", int(match.group(1), 16)))[0]
        if value != value:
            return float(value)
    raise InputError(
        f"modelconv JSON: bad {FLOAT_TAG} value {text!r}; expected NaN, "
        "Infinity, -Infinity or NaN:0x<16 hex digits of a NaN>"
    )


def _decode_bytes(text: Any) -> bytes:
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, TypeError, ValueError) as exc:
        raise InputError(
            f"modelconv JSON: bad {BYTES_TAG} value (not base64: {exc})"
        ) from exc


# --- writing ----------------------------------------------------------------


def _encoded_parts(model: Model) -> tuple[dict[str, Any], list[str]]:
    """The header with tags applied and attrs added; plus what cannot be kept."""
    problems: list[str] = []
    header = model_header(model)
    header["architecture"] = encode_value(
        header["architecture"], "architecture", problems
    )
    header["metadata"] = encode_value(header["metadata"], "metadata", problems)
    for tensor, entry in zip(model.tensors, header["tensors"]):
        entry.pop("key", None)
        if tensor.attrs:
            entry["attrs"] = encode_value(
                dict(tensor.attrs), f"tensor {tensor.name!r} attrs", problems
            )
    return header, problems


def losses(model: Model, options: WriteOptions) -> list[Loss]:
    _, problems = _encoded_parts(model)
    return [Loss("metadata", problem) for problem in problems]


def _dumps(value: Any) -> bytes:
    # ASCII output keeps lone surrogates in names representable; allow_nan is
    # off because every non-finite float has been tagged already.
    return json.dumps(value, ensure_ascii=True, allow_nan=False).encode("ascii")


def write(model: Model, path: Path, options: WriteOptions) -> None:
    header, problems = _encoded_parts(model)
    if problems and not options.allow_lossy:
        raise LossyConversionError(
            f"modelconv JSON cannot hold {problems[0]}; pass --allow-lossy to "
            "write its repr instead"
        )
    with open(path, "wb") as out:
        out.write(b'{"' + HEADER_KEY.encode() + b'": ')
        out.write(_dumps(header[HEADER_KEY]))
        out.write(b',\n "architecture": ' + _dumps(header["architecture"]))
        out.write(b',\n "metadata": ' + _dumps(header["metadata"]))
        out.write(b',\n "tensors": [')
        for index, (tensor, entry) in enumerate(zip(model.tensors, header["tensors"])):
            text = _dumps(entry)
            out.write(b"\n  " if index == 0 else b",\n  ")
            out.write(text[:-1] + b', "data": "')
            _write_base64(tensor, out)
            out.write(b'"}')
        out.write(b"\n ]\n}\n")


def _write_base64(tensor: Any, out: IO[bytes]) -> None:
    carry = b""
    for piece in tensor.iter_bytes(_ENCODE_BYTES):
        data = carry + piece if carry else piece
        cut = len(data) - len(data) % 3
        out.write(b64encode(data[:cut]))
        carry = bytes(data[cut:])
    out.write(b64encode(carry))


# --- reading ----------------------------------------------------------------


@dataclass(frozen=True)
class _Span:
    """Where one tensor's base64 text lies in the file (quotes excluded)."""

    entry: int
    start: int
    end: int


@dataclass
class _Frame:
    is_object: bool
    expect_key: bool = True
    key: str | None = None
    index: int = 0


_STRUCTURAL = re.compile(rb'["{}\[\]:,]')


class _Scanner:
    """One pass over a modelconv JSON file that never holds a base64 string.

    Everything except the ``tensors[i].data`` strings is copied to a skeleton
    (bounded in size and depth); each data string is replaced by ``""`` and
    its byte offsets recorded.
    """

    def __init__(self, handle: IO[bytes], what: str, max_skeleton: int) -> None:
        self.handle = handle
        self.what = what
        self.max_skeleton = max_skeleton
        self.buf = b""
        self.pos = 0
        self.base = 0
        self.skeleton = bytearray()
        self.spans: list[_Span] = []
        self.stack: list[_Frame] = []

    def run(self) -> tuple[bytes, list[_Span]]:
        while True:
            match = _STRUCTURAL.search(self.buf, self.pos)
            if match is None:
                self._emit(self.buf[self.pos :])
                self.pos = len(self.buf)
                if not self._refill():
                    break
                continue
            at = match.start()
            self._emit(self.buf[self.pos : at])
            self.pos = at + 1
            self._token(self.buf[at : at + 1])
        if self.stack:
            raise InputError(
                f"{self.what} ends inside an unclosed object or array; the file "
                "is truncated"
            )
        return bytes(self.skeleton), self.spans

    def _token(self, char: bytes) -> None:
        if char == b'"':
            self._string()
        elif char in b"{[":
            if len(self.stack) >= MAX_JSON_DEPTH:
                raise LimitExceededError(
                    f"{self.what}: JSON nesting deeper than {MAX_JSON_DEPTH} "
                    "levels; no model nests this deep, so the file is refused"
                )
            self.stack.append(_Frame(is_object=char == b"{"))
            self._emit(char)
        elif char in b"}]":
            if not self.stack or self.stack[-1].is_object != (char == b"}"):
                raise InputError(
                    f"{self.what} is not valid JSON: unexpected {char.decode()} "
                    f"at byte {self.base + self.pos - 1}"
                )
            self.stack.pop()
            self._emit(char)
        elif char == b":":
            if self.stack:
                self.stack[-1].expect_key = False
            self._emit(char)
        else:  # ","
            if self.stack:
                frame = self.stack[-1]
                frame.expect_key = frame.is_object
                frame.index += 1
            self._emit(char)

    def _in_data_value(self) -> bool:
        stack = self.stack
        return (
            len(stack) == 3
            and stack[0].is_object
            and stack[0].key == "tensors"
            and not stack[1].is_object
            and stack[2].is_object
            and not stack[2].expect_key
            and stack[2].key == "data"
        )

    def _string(self) -> None:
        frame = self.stack[-1] if self.stack else None
        if frame is not None and frame.is_object and frame.expect_key:
            raw = self._read_string(keep=True)
            try:
                frame.key = json.loads(raw)
            except ValueError as exc:
                raise InputError(f"{self.what}: bad object key ({exc})") from exc
            return
        if self._in_data_value():
            start = self.base + self.pos
            self._read_string(keep=False)
            end = self.base + self.pos - 1
            self.spans.append(_Span(self.stack[1].index, start, end))
            self._emit(b'""')
            return
        self._read_string(keep=True)

    def _next_stop(self) -> int:
        """Index of the next quote or backslash in the buffer, or -1.

        bytes.find is memchr-fast, which matters for megabytes of base64.
        """
        quote = self.buf.find(b'"', self.pos)
        end = len(self.buf) if quote < 0 else quote
        backslash = self.buf.find(b"\\", self.pos, end)
        return backslash if backslash >= 0 else quote

    def _read_string(self, keep: bool) -> bytes:
        """Consume a string whose opening quote is read; return it if kept."""
        kept = bytearray(b'"')
        while True:
            at = self._next_stop()
            if at < 0:
                if keep:
                    kept += self.buf[self.pos :]
                    self._check_size(len(kept))
                self.pos = len(self.buf)
                if not self._refill():
                    raise InputError(f"{self.what} ends inside a string; truncated")
                continue
            if self.buf[at : at + 1] == b'"':
                if keep:
                    kept += self.buf[self.pos : at + 1]
                    self._emit(kept)
                self.pos = at + 1
                return bytes(kept)
            if not keep:
                raise HostileInputError(
                    f"{self.what}: tensor data holds a backslash escape at byte "
                    f"{self.base + at}; modelconv JSON data must be plain base64"
                )
            if at + 1 >= len(self.buf):
                kept += self.buf[self.pos : at]
                self.pos = at
                if not self._refill():
                    raise InputError(f"{self.what} ends inside a string; truncated")
                continue
            kept += self.buf[self.pos : at + 2]
            self.pos = at + 2

    def _emit(self, data: bytes | bytearray) -> None:
        if data:
            self.skeleton += data
            self._check_size(0)

    def _check_size(self, pending: int) -> None:
        if len(self.skeleton) + pending > self.max_skeleton:
            raise LimitExceededError(
                f"{self.what}: more than {self.max_skeleton} bytes outside the "
                "tensor data; refused as no real header is that large"
            )

    def _refill(self) -> bool:
        block = self.handle.read(_SCAN_BLOCK)
        self.base += self.pos
        self.buf = self.buf[self.pos :] + block
        self.pos = 0
        return bool(block)


def _decode_base64(text: bytes) -> bytes:
    """Strict base64 decoding (see accel: SIMD where pybase64 is installed)."""
    return b64decode_strict(text)


class Base64Source:
    """A tensor whose bytes are a base64 string at known offsets in a file."""

    def __init__(
        self, path: Path, span: _Span, name: str, dtype: str, shape: tuple[int, ...]
    ):
        self.path = path
        self.span = span
        self.name = name
        self.dtype = dtype
        self.shape = shape
        self.nbytes = math.prod(shape) * dtypes.itemsize(dtype)

    def read(self) -> np.ndarray:
        data = b"".join(self._pieces(max(self.nbytes, 3)))
        return self._array(data).reshape(self.shape)

    def iter_chunks(self, max_bytes: int) -> Iterator[np.ndarray]:
        for data in self._pieces(max_bytes):
            yield self._array(data)

    def _array(self, data: bytes) -> np.ndarray:
        array = np.frombuffer(data, dtype=dtypes.storage_dtype(self.dtype))
        if self.dtype == "bfloat16":
            array = array.view(dtypes.numpy_dtype("bfloat16"))
        return array

    def _pieces(self, max_bytes: int) -> Iterator[bytes]:
        unit = 3 * dtypes.itemsize(self.dtype)
        step = max(unit, max_bytes // unit * unit)
        remaining = self.nbytes
        try:
            with open(self.path, "rb") as handle:
                handle.seek(self.span.start)
                while remaining > 0:
                    want = min(step, remaining)
                    text = handle.read(4 * math.ceil(want / 3))
                    data = _decode_base64(text)
                    if len(data) != want:
                        raise InputError(
                            f"tensor {self.name!r}: base64 data decodes to the "
                            "wrong length; the file is damaged or was changed"
                        )
                    remaining -= want
                    yield data
        except binascii.Error as exc:
            raise InputError(
                f"tensor {self.name!r}: data is not valid base64 ({exc}); the file "
                "is damaged"
            ) from exc
        except OSError as exc:
            raise InputError(
                f"cannot read {str(self.path)!r}: {exc.strerror}; check the file"
            ) from exc


def _scan(path: Path) -> tuple[bytes, list[_Span]]:
    what = f"modelconv JSON {path.name!r}"
    try:
        with open(path, "rb") as handle:
            return _Scanner(handle, what, MAX_JSON_DOCUMENT_BYTES).run()
    except OSError as exc:
        raise InputError(
            f"cannot read {str(path)!r}: {exc.strerror}; check the path"
        ) from exc


def read(path: Path, options: ReadOptions) -> Model:
    skeleton, spans = _scan(path)
    document = loads_bounded(skeleton, what=f"modelconv JSON {path.name!r}")
    if not isinstance(document, dict) or HEADER_KEY not in document:
        raise InputError(
            f"{str(path)!r} is JSON but not a modelconv JSON model (no top-level "
            f"{HEADER_KEY!r} key); name its format with --from"
        )
    header = check_header(document)
    entries = header["tensors"]
    by_entry = {span.entry: span for span in spans}
    total = 0
    sources = []
    for index, entry in enumerate(entries):
        span = by_entry.get(index)
        if span is None or not isinstance(entry.get("data"), str):
            raise InputError(
                f"modelconv JSON: tensor {entry['name']!r} has no base64 'data' "
                "string; the file is damaged"
            )
        sources.append(_source_for(path, span, entry))
        total += declared_nbytes(entry)
        if total > options.max_bytes:
            raise LimitExceededError(
                f"modelconv JSON declares more than {options.max_bytes} bytes of "
                "tensors; raise --max-bytes if the file is trusted"
            )
    header = dict(header)
    header["architecture"] = decode_value(header.get("architecture"))
    header["metadata"] = decode_value(header.get("metadata", {}))
    model = _model_from_header(header, sources, format=FORMAT, flavour=FLAVOUR)
    return _with_attrs(model, entries)


def _source_for(path: Path, span: _Span, entry: Mapping[str, Any]) -> Base64Source:
    nbytes = declared_nbytes(entry)
    chars = 4 * math.ceil(nbytes / 3)
    if span.end - span.start != chars:
        raise InputError(
            f"modelconv JSON: tensor {entry['name']!r} holds "
            f"{span.end - span.start} base64 characters where shape "
            f"{entry['shape']} of {entry['dtype']} needs {chars}; the file is "
            "damaged"
        )
    return Base64Source(
        path, span, entry["name"], entry["dtype"], tuple(entry["shape"])
    )


def _with_attrs(model: Model, entries: list[dict[str, Any]]) -> Model:
    if not any("attrs" in entry for entry in entries):
        return model
    tensors = []
    for tensor, entry in zip(model.tensors, entries):
        attrs = entry.get("attrs")
        if attrs is not None:
            if not isinstance(attrs, dict):
                raise InputError(
                    f"modelconv JSON: tensor {tensor.name!r} has 'attrs' that is "
                    "not an object"
                )
            tensor = tensor.replace(attrs=decode_value(attrs))
        tensors.append(tensor)
    return model.replace(tensors=tuple(tensors))
