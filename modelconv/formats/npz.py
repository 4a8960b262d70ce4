"""NPZ: NumPy zip archives of named arrays, and modelconv NPZ.

A plain ``np.savez`` archive holds one ``.npy`` member per array. modelconv
NPZ adds a ``__modelconv__.npy`` member, a 1-D uint8 array holding the shared
header (architecture, metadata, tensor names, roles and dtypes), so that a
plain ``np.load(path)`` without pickle still gives every tensor.

Each member's ``.npy`` header is parsed here by a small strict parser, never
by ``ast.literal_eval`` or ``np.load``; object arrays (pickles) are refused.
Tensors read lazily: stored members by offset, deflated members streamed.
"""

from __future__ import annotations

import re
import struct
import zipfile
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from itertools import chain
from math import prod
from pathlib import Path
from typing import Any

import numpy as np

from .. import dtypes
from ..accel import crc32
from ..errors import (
    HostileInputError,
    InputError,
    LimitExceededError,
    UnsupportedDtypeError,
    UsageError,
)
from ..header import header_bytes, model_from_header, model_header, parse_header_bytes
from ..limits import CHUNK_BYTES, MAX_JSON_DOCUMENT_BYTES
from ..model import Model, Role, Tensor
from ..ziputil import Member, SafeZip, is_zip, list_names
from ..zipwrite import StoredZipWriter
from .base import Loss, Probe, ReadOptions, WriteOptions

HEADER_KEY = "__modelconv__"
HEADER_MEMBER = HEADER_KEY + ".npy"
NPY_SUFFIX = ".npy"
NPY_MAGIC = b"\x93NUMPY"

# numpy itself refuses headers over 10000 bytes unless told otherwise; 64 KiB
# leaves room for 64 dimensions and any padding while bounding the parser.
MAX_NPY_HEADER = 64 * 1024
# numpy's own limit on dimensions (NPY_MAXDIMS is 64 in numpy 2).
MAX_NDIM = 64
# A dimension of more than 20 digits cannot fit in 64 bits anyway.
MAX_DIM_DIGITS = 20
# Escaped member names look like this; verbatim names never do.
_ESCAPED = re.compile(r"t\d{5,}")
_DRIVE = re.compile(r"^[A-Za-z]:")
# Keys longer than this are escaped; zip allows 65535 bytes, tools far less.
MAX_KEY_BYTES = 1024
# 1980-01-01, the zip epoch: fixed so identical models give identical files.
_ZIP_DATE = (1980, 1, 1, 0, 0, 0)

# Arrays of strings (label vocabularies) are not tensors; small ones are kept
# in metadata under this key so that nothing the file said is dropped.
TEXT_KEY = "text_arrays"
MAX_TEXT_BYTES = 2**20

_OBJECT_MESSAGE = (
    "this npz holds pickled objects; modelconv never unpickles npz members"
)


# -- the .npy header -----------------------------------------------------


@dataclass(frozen=True)
class NpyHeader:
    """What a ``.npy`` header declares, and where the data starts."""

    dtype: np.dtype
    fortran_order: bool
    shape: tuple[int, ...]
    data_offset: int

    @property
    def count(self) -> int:
        return prod(self.shape)

    @property
    def nbytes(self) -> int:
        return self.count * self.dtype.itemsize


_TOKEN = re.compile(
    r"""\s*(?:
        (?P<str>'[^'\\\n]*'|"[^"\\\n]*")
      | (?P<int>\d+)L?
      | (?P<bool>True|False)
      | (?P<punct>[{}():,\[])
    )""",
    re.VERBOSE,
)


class _DictParser:
    """A strict parser for ``{'descr': str, 'fortran_order': bool, 'shape': (int,)}``.

    It accepts exactly the literals numpy writes, and nothing else: no
    expressions, no nesting beyond the shape tuple, no duplicate keys.
    """

    def __init__(self, text: str, where: str) -> None:
        self.text = text
        self.pos = 0
        self.where = where

    def fail(self, what: str) -> InputError:
        snippet = self.text[self.pos : self.pos + 30]
        return InputError(
            f"{self.where}: .npy header not understood ({what} at {snippet!r}); "
            "the member is not a valid .npy array"
        )

    def token(self) -> tuple[str, str]:
        match = _TOKEN.match(self.text, self.pos)
        if match is None:
            raise self.fail("unexpected text")
        self.pos = match.end()
        kind = match.lastgroup or ""
        return kind, match.group(kind)

    def expect(self, punct: str) -> None:
        if self.token() != ("punct", punct):
            raise self.fail(f"expected {punct!r}")

    def parse(self) -> dict[str, Any]:
        self.expect("{")
        result: dict[str, Any] = {}
        while True:
            kind, value = self.token()
            if (kind, value) == ("punct", "}"):
                break
            if kind != "str":
                raise self.fail("expected a key")
            key = value[1:-1]
            if key in result:
                raise HostileInputError(
                    f"{self.where}: .npy header repeats key {key!r}; refused"
                )
            self.expect(":")
            if key == "descr" and self.text[self.pos :].lstrip().startswith("["):
                raise UnsupportedDtypeError(
                    f"{self.where}: structured dtype in .npy header; modelconv "
                    "carries only plain numeric and bool arrays"
                )
            result[key] = self.value()
            kind, value = self.token()
            if (kind, value) == ("punct", "}"):
                break
            if (kind, value) != ("punct", ","):
                raise self.fail("expected ',' or '}'")
        if self.text[self.pos :].strip():
            raise self.fail("text after the header dict")
        return result

    def value(self) -> Any:
        kind, value = self.token()
        if kind == "str":
            return value[1:-1]
        if kind == "bool":
            return value == "True"
        if (kind, value) == ("punct", "("):
            return self.shape()
        raise self.fail("expected a string, True/False or a tuple")

    def shape(self) -> tuple[int, ...]:
        dims: list[int] = []
        while True:
            kind, value = self.token()
            if (kind, value) == ("punct", ")"):
                return tuple(dims)
            if kind != "int":
                raise self.fail("expected a dimension")
            if len(value) > MAX_DIM_DIGITS:
                raise LimitExceededError(
                    f"{self.where}: .npy dimension with {len(value)} digits; refused"
                )
            dims.append(int(value))
            if len(dims) > MAX_NDIM:
                raise LimitExceededError(
                    f"{self.where}: .npy shape has more than {MAX_NDIM} dimensions"
                )
            kind, value = self.token()
            if (kind, value) == ("punct", ")"):
                return tuple(dims)
            if (kind, value) != ("punct", ","):
                raise self.fail("expected ',' or ')'")


_DESCR = re.compile(r"([<>|=]?)([A-Za-z])(\d{0,3})")


def descr_dtype(descr: str, where: str, allow_text: bool = False) -> np.dtype:
    """The numpy dtype for a ``.npy`` descr, refusing objects and non-numerics.

    With ``allow_text``, fixed-width strings (``<U16``, ``|S8``) pass too.
    """
    match = _DESCR.fullmatch(descr)
    if match is not None and match.group(2) == "O":
        raise HostileInputError(f"{where}: {_OBJECT_MESSAGE}")
    if allow_text and match is not None and match.group(2) in "US":
        return np.dtype(descr)
    if match is None or match.group(2) not in "biufc":
        raise UnsupportedDtypeError(
            f"{where}: unsupported dtype {descr!r}; modelconv carries only "
            f"{', '.join(dtypes.DTYPE_NAMES)}"
        )
    try:
        dtype = np.dtype(descr)
    except TypeError as exc:
        raise UnsupportedDtypeError(
            f"{where}: unsupported dtype {descr!r} ({exc})"
        ) from exc
    dtypes.dtype_name(dtype)
    return dtype


def parse_npy_header(
    prefix: bytes, read_more: Any, where: str, allow_text: bool = False
) -> NpyHeader:
    """Parse a .npy header; ``prefix`` holds its first 12 bytes (or fewer).

    ``read_more(n)`` returns the next ``n`` bytes after the prefix.
    """
    if not prefix.startswith(NPY_MAGIC) or len(prefix) < 10:
        raise InputError(
            f"{where}: not a .npy array (first bytes {prefix[:8].hex(' ')}); "
            "the member is damaged"
        )
    major, minor = prefix[6], prefix[7]
    if (major, minor) not in ((1, 0), (2, 0), (3, 0)):
        raise InputError(
            f"{where}: .npy format version {major}.{minor} is not supported "
            "(1.0, 2.0 and 3.0 are)"
        )
    if major == 1:
        (length,) = struct.unpack_from("<H", prefix, 8)
        start = 10
    else:
        if len(prefix) < 12:
            raise InputError(f"{where}: .npy header is cut short")
        (length,) = struct.unpack_from("<I", prefix, 8)
        start = 12
    if length > MAX_NPY_HEADER:
        raise LimitExceededError(
            f"{where}: .npy header declares {length} bytes (limit "
            f"{MAX_NPY_HEADER}); refused"
        )
    raw = prefix[start : start + length]
    if len(raw) < length:
        raw += read_more(length - len(raw))
    try:
        text = raw.decode("utf-8" if major == 3 else "latin-1")
    except UnicodeDecodeError as exc:
        raise InputError(f"{where}: .npy header is not UTF-8 ({exc.reason})") from exc
    fields = _DictParser(text, where).parse()
    if set(fields) != {"descr", "fortran_order", "shape"}:
        raise InputError(
            f"{where}: .npy header has keys {sorted(fields)}; expected descr, "
            "fortran_order and shape"
        )
    descr, fortran, shape = fields["descr"], fields["fortran_order"], fields["shape"]
    if not isinstance(descr, str) or not isinstance(fortran, bool):
        raise InputError(f"{where}: .npy header has a bad descr or fortran_order")
    if not isinstance(shape, tuple):
        raise InputError(f"{where}: .npy header shape {shape!r} is not a tuple")
    dtype = descr_dtype(descr, where, allow_text)
    return NpyHeader(dtype, fortran, shape, start + length)


def npy_header_bytes(dtype: np.dtype, shape: Sequence[int]) -> bytes:
    """A .npy header as numpy writes it: version 1.0 (2.0 if long), 64-aligned."""
    shape_text = repr(tuple(int(d) for d in shape))
    text = (
        f"{{'descr': {dtype.str!r}, 'fortran_order': False, 'shape': {shape_text}, }}"
    )
    for major, prefix_len, fmt in ((1, 10, "<H"), (2, 12, "<I")):
        padded = len(text) + 1
        padded += -(prefix_len + padded) % 64
        if major == 2 or padded < 2**16:
            body = text.ljust(padded - 1) + "\n"
            return (
                NPY_MAGIC
                + bytes((major, 0))
                + struct.pack(fmt, padded)
                + body.encode("latin-1")
            )
    raise AssertionError("unreachable")


# -- lazy sources --------------------------------------------------------


class NpyMemberSource:
    """The array of one ``.npy`` member, read on demand.

    Stored members are read by offset; deflated members are streamed through
    the capped inflater. Fortran-order arrays are returned in C order.
    """

    def __init__(
        self,
        archive: SafeZip,
        member: Member,
        header: NpyHeader,
        view: np.dtype | None = None,
    ) -> None:
        self.archive = archive
        self.member = member
        self.header = header
        self.view = view

    def _raw_pieces(self, max_bytes: int) -> Iterator[np.ndarray]:
        """1-D pieces in file order and file byte order."""
        header = self.header
        itemsize = header.dtype.itemsize
        step = max(1, max_bytes // max(1, itemsize)) * itemsize
        end = header.data_offset + header.nbytes
        if self.member.stored:
            check_crc = end == self.member.size
            crc = crc32(self.archive.read_at(self.member, 0, header.data_offset))
            for start in range(header.data_offset, end, step):
                # Read straight into the array that is handed on: one copy.
                count = min(step, end - start) // max(1, itemsize)
                piece = np.empty(count, header.dtype)
                view = piece.view(np.uint8).data
                self.archive.read_into(self.member, start, view)
                crc = crc32(view, crc)
                yield piece
            if check_crc and crc != self.member.crc:
                raise InputError(
                    f"npz member {self.member.name!r} fails its CRC check; the "
                    "archive is damaged"
                )
            return
        with self.archive.open(self.member.name) as reader:
            reader.read_exact(header.data_offset)
            left = header.nbytes
            while left > 0:
                data = reader.read_exact(min(step, left))
                left -= len(data)
                yield np.frombuffer(bytearray(data), dtype=header.dtype)
            # Drain the rest so the CRC of the whole member is checked.
            for _ in reader.iter_chunks():
                pass

    def _viewed(self, array: np.ndarray) -> np.ndarray:
        if self.view is None:
            return array
        if not array.dtype.isnative:
            array = array.byteswap().view(array.dtype.newbyteorder("="))
        return array.view(self.view)

    def read(self) -> np.ndarray:
        header = self.header
        flat = np.empty(header.count, dtype=header.dtype)
        pos = 0
        for piece in self._raw_pieces(CHUNK_BYTES):
            flat[pos : pos + piece.size] = piece
            pos += piece.size
        if header.fortran_order:
            array = np.ascontiguousarray(flat.reshape(header.shape[::-1]).T)
        else:
            array = flat.reshape(header.shape)
        return self._viewed(array)

    def iter_chunks(self, max_bytes: int) -> Iterator[np.ndarray]:
        if self.header.fortran_order and len(self.header.shape) > 1:
            whole = self.read().reshape(-1)
            step = max(1, max_bytes // max(1, whole.itemsize))
            for start in range(0, whole.size, step):
                yield whole[start : start + step]
            return
        for piece in self._raw_pieces(max_bytes):
            yield self._viewed(piece)


# -- reading -------------------------------------------------------------


def sniff(probe: Probe) -> int:
    if probe.is_dir or not is_zip(probe.head):
        return 0
    names = list_names(probe.path)
    if names is None:
        return 10 if probe.suffix == ".npz" else 0
    if "model.weights.h5" in names and (
        "config.json" in names or "metadata.json" in names
    ):
        return 0
    if HEADER_MEMBER in names or any(n.endswith(NPY_SUFFIX) for n in names):
        return 100
    if not names and probe.suffix == ".npz":
        return 50
    return 0


def read(path: Path, options: ReadOptions) -> Model:
    archive = SafeZip(path, options.max_bytes)
    try:
        resources = ExitStack()
        resources.callback(archive.close)
        if HEADER_MEMBER in archive.members:
            return _read_modelconv(archive, resources)
        return _read_arrays(archive, resources)
    except BaseException:
        archive.close()
        raise


def read_npy_header(
    archive: SafeZip, member: Member, allow_text: bool = False
) -> NpyHeader:
    """Parse a member's .npy header and check its size against the member."""
    where = f"npz member {member.name!r}"
    with archive.open(member.name) as reader:
        prefix = reader.read(min(12, member.size))
        header = parse_npy_header(prefix, reader.read_exact, where, allow_text)
    available = member.size - header.data_offset
    if header.nbytes > available:
        raise HostileInputError(
            f"{where}: .npy header declares shape {list(header.shape)} of "
            f"{header.dtype.str} ({header.nbytes} bytes) but the member holds "
            f"{max(0, available)}; refused"
        )
    if header.nbytes < available:
        raise InputError(
            f"{where}: {available - header.nbytes} bytes follow the array data "
            "the .npy header declares; the member is inconsistent"
        )
    return header


def _array_members(archive: SafeZip) -> list[Member]:
    return [
        m for m in archive.members.values() if not m.is_dir and m.name != HEADER_MEMBER
    ]


def _read_arrays(archive: SafeZip, resources: ExitStack) -> Model:
    tensors = []
    warnings = []
    text: dict[str, Any] = {}
    for member in _array_members(archive):
        if not member.name.endswith(NPY_SUFFIX):
            warnings.append(
                f"npz member {member.name!r} is not a .npy array and was skipped"
            )
            continue
        header = read_npy_header(archive, member, allow_text=True)
        if header.dtype.kind in "US":
            warnings.append(_keep_text(archive, member, header, text))
            continue
        tensors.append(
            Tensor(
                name=member.name[: -len(NPY_SUFFIX)],
                dtype=dtypes.dtype_name(header.dtype),
                shape=header.shape,
                role=Role.WEIGHT,
                source_names=(member.name,),
                source=NpyMemberSource(archive, member, header),
            )
        )
    return Model(
        tensors=tuple(tensors),
        metadata={TEXT_KEY: text} if text else {},
        format="npz",
        flavour="arrays",
        warnings=tuple(warnings),
        resources=resources,
    )


def _keep_text(
    archive: SafeZip, member: Member, header: NpyHeader, text: dict[str, Any]
) -> str:
    """Put a small array of strings in metadata; it is not a tensor.

    Returns the warning that says where it went (or that it was left out).
    """
    name = member.name[: -len(NPY_SUFFIX)]
    what = f"npz member {member.name!r} holds text ({header.dtype.str})"
    if header.nbytes > MAX_TEXT_BYTES or header.fortran_order:
        return f"{what}, not a tensor; left out"
    values = NpyMemberSource(archive, member, header).read()
    if values.dtype.kind == "S":
        values = np.char.decode(values, "latin-1")
    text[name] = {
        "dtype": header.dtype.str,
        "shape": list(header.shape),
        "values": values.tolist(),
    }
    return f"{what}, not a tensor; kept in metadata[{TEXT_KEY!r}]"


def _read_header(archive: SafeZip) -> dict[str, Any]:
    member = archive.member(HEADER_MEMBER)
    if member.size > MAX_JSON_DOCUMENT_BYTES + MAX_NPY_HEADER:
        raise LimitExceededError(
            f"npz member {HEADER_MEMBER!r} is {member.size} bytes; a modelconv "
            "header is never that large, so it is refused"
        )
    header = read_npy_header(archive, member)
    if header.dtype != np.dtype("u1") or len(header.shape) != 1:
        raise InputError(
            f"npz member {HEADER_MEMBER!r} must be a 1-D uint8 array, found "
            f"{header.dtype.str} with shape {list(header.shape)}; the file is "
            "damaged"
        )
    data = NpyMemberSource(archive, member, header).read().tobytes()
    return parse_header_bytes(data)


def _read_modelconv(archive: SafeZip, resources: ExitStack) -> Model:
    header = _read_header(archive)
    sources = []
    used: set[str] = set()
    for entry in header["tensors"]:
        key = entry.get("key", entry["name"])
        if not isinstance(key, str) or key in used:
            raise InputError(
                f"modelconv header: tensor {entry['name']!r} has key {key!r}, "
                "missing or used twice; the file is damaged"
            )
        used.add(key)
        member = archive.member(key + NPY_SUFFIX)
        npy = read_npy_header(archive, member)
        sources.append(_entry_source(archive, member, npy, entry))

    extras = [
        m for m in _array_members(archive) if m.name[: -len(NPY_SUFFIX)] not in used
    ]
    model = model_from_header(header, sources, format="npz", resources=resources)
    if not extras:
        return model
    return _with_extras(model, archive, extras)


def _entry_source(
    archive: SafeZip, member: Member, npy: NpyHeader, entry: Mapping[str, Any]
) -> NpyMemberSource:
    """The source of a header entry, checked against the member's .npy header."""
    storage = dtypes.storage_dtype(entry["dtype"])
    if npy.dtype.newbyteorder("<") != storage or list(npy.shape) != entry["shape"]:
        raise InputError(
            f"npz member {member.name!r} holds {npy.dtype.str} {list(npy.shape)} "
            f"where the modelconv header declares {entry['dtype']} "
            f"{entry['shape']}; the file is damaged"
        )
    view = dtypes.numpy_dtype("bfloat16") if entry["dtype"] == "bfloat16" else None
    return NpyMemberSource(archive, member, npy, view)


def _with_extras(model: Model, archive: SafeZip, extras: list[Member]) -> Model:
    """Arrays added to a modelconv NPZ after it was written, kept and flagged."""
    tensors = list(model.tensors)
    warnings = list(model.warnings)
    for member in extras:
        if not member.name.endswith(NPY_SUFFIX):
            warnings.append(f"npz member {member.name!r} is not a .npy array; skipped")
            continue
        npy = read_npy_header(archive, member)
        name = member.name[: -len(NPY_SUFFIX)]
        warnings.append(
            f"npz member {member.name!r} is not listed in the modelconv header; "
            "kept as a weight named after the member"
        )
        tensors.append(
            Tensor(
                name=name,
                dtype=dtypes.dtype_name(npy.dtype),
                shape=npy.shape,
                source_names=(member.name,),
                source=NpyMemberSource(archive, member, npy),
            )
        )
    return model.replace(tensors=tuple(tensors), warnings=tuple(warnings))


# -- writing -------------------------------------------------------------


def losses(model: Model, options: WriteOptions) -> list[Loss]:
    """None: the header carries architecture, metadata, names and dtypes."""
    return []


def _verbatim(name: str) -> bool:
    """Whether ``name`` can be a member name (plus .npy) as it is."""
    try:
        encoded = name.encode("utf-8")
    except UnicodeEncodeError:
        return False
    if not name or len(encoded) > MAX_KEY_BYTES:
        return False
    if name == HEADER_KEY or _ESCAPED.fullmatch(name) or name.endswith(NPY_SUFFIX):
        return False
    if any(ord(c) < 32 or c in "\\\x7f" for c in name) or _DRIVE.match(name):
        return False
    return not any(part in ("", ".", "..") for part in name.split("/"))


def member_keys(names: Iterable[str]) -> dict[str, str]:
    """Tensor name → member key (member name without .npy).

    Names that cannot be member names are escaped to ``t<index>``; verbatim
    names never match that pattern, so keys are unique.
    """
    return {
        name: name if _verbatim(name) else f"t{index:05d}"
        for index, name in enumerate(names)
    }


def _compression(options: WriteOptions) -> tuple[int, int | None]:
    if options.compress is None:
        return zipfile.ZIP_STORED, None
    name, level = options.compress
    if name in ("stored", "none"):
        return zipfile.ZIP_STORED, None
    if name not in ("deflate", "zlib"):
        raise UsageError(
            f"npz cannot compress with {name!r}; use --compress deflate[:LEVEL] "
            "(or zlib), or leave it out for stored members"
        )
    if level is not None and not 0 <= level <= 9:
        raise UsageError(f"deflate level {level} is out of range; use 0 to 9")
    return zipfile.ZIP_DEFLATED, level


def _zip_info(name: str, method: int, level: int | None) -> zipfile.ZipInfo:
    info = zipfile.ZipInfo(name, date_time=_ZIP_DATE)
    info.compress_type = method
    info.external_attr = 0o644 << 16
    if level is not None:
        # zipfile reads the level from this attribute (public as
        # compress_level from Python 3.13, which keeps this name as an alias);
        # it is how ZipFile.open(str) passes the level on itself.
        info._compresslevel = level  # type: ignore[attr-defined]
    return info


def _write_member(
    archive: zipfile.ZipFile,
    info: zipfile.ZipInfo,
    head: bytes,
    pieces: Iterable[bytes | memoryview],
) -> None:
    with archive.open(info, "w", force_zip64=True) as out:
        out.write(head)
        for piece in pieces:
            out.write(piece)


def write(model: Model, path: Path, options: WriteOptions) -> None:
    """Write a modelconv NPZ, streaming one tensor chunk at a time."""
    method, level = _compression(options)
    keys = member_keys(model.names)
    text = header_bytes(model_header(model, keys))
    if method == zipfile.ZIP_STORED:
        _write_stored(model, path, keys, text)
        return
    with zipfile.ZipFile(path, "w", allowZip64=True) as archive:
        _write_member(
            archive,
            _zip_info(HEADER_MEMBER, method, level),
            npy_header_bytes(np.dtype("u1"), (len(text),)),
            [text],
        )
        for tensor in model.tensors:
            _write_member(
                archive,
                _zip_info(keys[tensor.name] + NPY_SUFFIX, method, level),
                npy_header_bytes(dtypes.storage_dtype(tensor.dtype), tensor.shape),
                tensor.iter_bytes(),
            )


def _write_stored(
    model: Model, path: Path, keys: Mapping[str, str], text: bytes
) -> None:
    """The default, uncompressed layout, through the faster stored-zip writer."""
    with StoredZipWriter(path) as archive:
        archive.write_member(
            HEADER_MEMBER, [npy_header_bytes(np.dtype("u1"), (len(text),)), text]
        )
        for tensor in model.tensors:
            head = npy_header_bytes(dtypes.storage_dtype(tensor.dtype), tensor.shape)
            archive.write_member(
                keys[tensor.name] + NPY_SUFFIX, chain([head], tensor.iter_bytes())
            )
