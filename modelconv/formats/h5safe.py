"""Guarded access to HDF5 files that may be hostile.

Everything the HDF5 reader touches goes through here: opening, walking the
tree, resolving a path, reading an attribute, checking a dataset before its
bytes are read, and the lazy tensor source. The rules:

- soft and external links are never followed (a link is inspected with
  ``getlink=True`` before the object behind it is opened);
- datasets with external storage, virtual datasets, reference and opaque
  types, and filters other than HDF5's built-in ones are refused before any
  byte is read, so no filter plugin is ever loaded;
- declared sizes are checked with exact integer arithmetic against the
  caller's byte limit before anything is allocated;
- the walk is iterative, bounded in depth and object count, and refuses
  hard-link cycles;
- any h5py or HDF5 error becomes an InputError.

HDF5's plugin search path is left as it is: h5py's list is process-wide and
changing it would surprise other code in the same process. Refusing unknown
filter ids before reading means a plugin is never needed, so never loaded.
"""

from __future__ import annotations

import math
import mmap
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from .. import dtypes
from ..errors import (
    HostileInputError,
    InputError,
    LimitExceededError,
    UnsupportedDtypeError,
)
from ..limits import MAX_HDF5_DEPTH, MAX_HDF5_OBJECTS, MAX_JSON_DOCUMENT_BYTES

# Filters compiled into HDF5 itself, plus LZF which h5py registers: deflate
# (gzip), shuffle, fletcher32, szip, nbit, scaleoffset, lzf. Any other id
# would make HDF5 search for a plugin library and run it.
BUILTIN_FILTERS = {
    1: "gzip",
    2: "shuffle",
    3: "fletcher32",
    4: "szip",
    5: "nbit",
    6: "scaleoffset",
    32000: "lzf",
}

# An attribute is metadata: configs and name lists. The largest real one is a
# model_config, bounded like any JSON document.
MAX_ATTRIBUTE_BYTES = MAX_JSON_DOCUMENT_BYTES

HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"

# Attribute types read at all: numbers, text, and enums (h5py's bool).
_ATTRIBUTE_CLASSES = frozenset(
    {h5py.h5t.INTEGER, h5py.h5t.FLOAT, h5py.h5t.STRING, h5py.h5t.ENUM}
)

# Errors h5py and HDF5 raise on damaged files. Caught at every boundary and
# turned into InputError with the path and the HDF5 message.
H5_ERRORS = (OSError, RuntimeError, ValueError, KeyError, TypeError, IndexError)


def open_file(path: Path) -> h5py.File:
    """Open ``path`` read-only, turning h5py's errors into InputError."""
    try:
        return h5py.File(path, "r")
    except FileNotFoundError as exc:
        raise InputError(f"no such file: {str(path)!r}; check the path") from exc
    except H5_ERRORS as exc:
        raise InputError(
            f"{str(path)!r} is not a readable HDF5 file ({_reason(exc)}); it may "
            "be truncated or damaged"
        ) from exc


def _reason(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:200] if text else type(exc).__name__


def object_addr(obj: h5py.HLObject) -> int:
    """The file address of an object's header: equal for hard links."""
    try:
        return int(h5py.h5o.get_info(obj.id).addr)
    except H5_ERRORS as exc:
        raise InputError(
            f"HDF5 object {obj.name!r} has an unreadable header ({_reason(exc)}); "
            "the file is damaged"
        ) from exc


def link_kind(group: h5py.Group, name: str) -> str:
    """'hard', 'soft', 'external', 'other' or 'missing' for the link ``name``
    in ``group``."""
    try:
        link = group.get(name, getlink=True)
    except H5_ERRORS as exc:
        raise InputError(
            f"HDF5 link {name!r} in {group.name!r} cannot be read ({_reason(exc)})"
        ) from exc
    if link is None:
        return "missing"
    if isinstance(link, h5py.HardLink):
        return "hard"
    if isinstance(link, h5py.SoftLink):
        return "soft"
    if isinstance(link, h5py.ExternalLink):
        return "external"
    return "other"


def refuse_link(kind: str, where: str) -> HostileInputError:
    return HostileInputError(
        f"HDF5 {kind} link at {where!r}: modelconv never follows soft or "
        "external links, since they can point outside the file; re-save the "
        "model without links"
    )


def child(group: h5py.Group, name: str) -> h5py.HLObject:
    """The object behind hard link ``name``; refuse any other link."""
    kind = link_kind(group, name)
    where = f"{group.name.rstrip('/')}/{name}"
    if kind != "hard":
        raise refuse_link(kind, where)
    try:
        return group[name]
    except H5_ERRORS as exc:
        raise InputError(
            f"HDF5 object {where!r} cannot be opened ({_reason(exc)}); the file "
            "is damaged"
        ) from exc


def resolve(group: h5py.Group, path: str) -> h5py.HLObject | None:
    """The object at ``path`` below ``group``, segment by segment, or None.

    Every segment must be a hard link; soft and external links are refused.
    Empty segments and '.' or '..' are refused too: Keras never writes them.
    """
    current: h5py.HLObject = group
    for part in path.split("/"):
        if part in ("", ".", ".."):
            raise HostileInputError(
                f"HDF5 path {path!r} has an empty, '.' or '..' segment; Keras "
                "never writes such names, so the file is refused"
            )
        if not isinstance(current, h5py.Group):
            return None
        # One look at the link itself tells whether it is there and what it
        # is, without following it (a dangling or external link included).
        kind = link_kind(current, part)
        where = f"{current.name.rstrip('/')}/{part}"
        if kind == "missing":
            return None
        if kind != "hard":
            raise refuse_link(kind, where)
        try:
            current = current[part]
        except H5_ERRORS as exc:
            raise InputError(
                f"HDF5 object {where!r} cannot be opened ({_reason(exc)}); the "
                "file is damaged"
            ) from exc
    return current


@dataclass(frozen=True)
class Entry:
    """One object met by ``walk``: its path below the start and the object."""

    path: str
    obj: h5py.HLObject

    @property
    def is_group(self) -> bool:
        return isinstance(self.obj, h5py.Group)


def walk(
    start: h5py.Group,
    *,
    max_depth: int = MAX_HDF5_DEPTH,
    max_objects: int = MAX_HDF5_OBJECTS,
) -> Iterator[Entry]:
    """Every group and dataset below ``start``, depth first, names sorted.

    Iterative, so deep trees cannot exhaust Python's stack. A group reached
    again from inside itself (a hard-link cycle) is refused; one reached
    twice from different places is walked once.
    """
    seen_groups = {object_addr(start)}
    # Each stack item: (group, its path, addresses of its ancestors, depth).
    stack: list[tuple[h5py.Group, str, frozenset[int], int]] = [
        (start, "", frozenset({object_addr(start)}), 0)
    ]
    count = 0
    while stack:
        group, prefix, ancestors, depth = stack.pop()
        names = _sorted_names(group)
        children: list[tuple[h5py.Group, str, frozenset[int], int]] = []
        for name in names:
            count += 1
            if count > max_objects:
                raise LimitExceededError(
                    f"HDF5 file holds more than {max_objects} objects; no model "
                    "has this many, so the file is refused"
                )
            path = f"{prefix}{name}"
            obj = child(group, name)
            if isinstance(obj, h5py.Group):
                addr = object_addr(obj)
                if addr in ancestors:
                    raise HostileInputError(
                        f"HDF5 group {path!r} is a hard link back to one of its "
                        "own ancestors (a cycle); the file is refused"
                    )
                if depth + 1 > max_depth:
                    raise LimitExceededError(
                        f"HDF5 groups nest deeper than {max_depth} levels at "
                        f"{path[:200]!r}; no model nests this deep, so the file "
                        "is refused"
                    )
                yield Entry(path, obj)
                if addr in seen_groups:
                    continue
                seen_groups.add(addr)
                children.append((obj, f"{path}/", ancestors | {addr}, depth + 1))
            elif isinstance(obj, h5py.Dataset):
                yield Entry(path, obj)
            # Named datatypes carry no tensor; they are skipped.
        stack.extend(reversed(children))


def _sorted_names(group: h5py.Group) -> list[str]:
    try:
        return sorted(group.keys())
    except H5_ERRORS as exc:
        raise InputError(
            f"HDF5 group {group.name!r} cannot be listed ({_reason(exc)}); the "
            "file is damaged"
        ) from exc


# --------------------------------------------------------------------------
# Attributes


def attr_names(obj: h5py.HLObject) -> list[str]:
    try:
        return list(obj.attrs.keys())
    except H5_ERRORS as exc:
        raise InputError(
            f"attributes of HDF5 object {obj.name!r} cannot be listed ({_reason(exc)})"
        ) from exc


def read_attr(obj: h5py.HLObject, name: str) -> Any:
    """The attribute's value, after checking its declared size; None if absent."""
    try:
        if name not in obj.attrs:
            return None
        aid = obj.attrs.get_id(name)
        shape = aid.shape
        h5type = aid.get_type()
        itemsize = h5type.get_size()
        cls = h5type.get_class()
    except H5_ERRORS as exc:
        raise InputError(
            f"attribute {name!r} of {obj.name!r} cannot be read ({_reason(exc)})"
        ) from exc
    if cls not in _ATTRIBUTE_CLASSES:
        # Variable-length sequences, references and opaque data are never
        # written by Keras, and reading a damaged one can crash libhdf5.
        raise InputError(
            f"attribute {name!r} of {obj.name!r} has an HDF5 type of class "
            f"{cls}, not text or numbers; the file is damaged or not a model"
        )
    if cls == h5py.h5t.STRING and h5type.is_variable_str():
        check_vlen_attribute(obj, name)
    declared = math.prod(shape or ()) * max(1, int(itemsize))
    if declared > MAX_ATTRIBUTE_BYTES:
        raise LimitExceededError(
            f"attribute {name!r} of {obj.name!r} declares {declared} bytes "
            f"(limit {MAX_ATTRIBUTE_BYTES}); refused"
        )
    try:
        return obj.attrs[name]
    except H5_ERRORS as exc:
        raise InputError(
            f"attribute {name!r} of {obj.name!r} cannot be read ({_reason(exc)}); "
            "its type may be unsupported or the file damaged"
        ) from exc


# Variable-length strings (every attribute Keras writes through h5py 3) live
# in global heap collections, and libhdf5 1.14 trusts them too much: a free
# object of size 0 in a collection makes it loop forever, an object size
# past the collection makes it read wild memory, and the length stored in a
# string's heap ID makes it allocate and clear that many bytes (up to 4 GiB
# each) before it notices the mismatch. All three were found by fuzzing
# Keras files. So before libhdf5 reads a variable-length attribute, its
# heap IDs are read from the raw object header, each collection they point
# at is walked here (libhdf5 loads no other), and the IDs are checked
# against it. Only those collections are read, never the whole file: a
# model's raw tensor data may be gigabytes.

MAX_HEADER_CHUNKS = 1000
MAX_HEADER_CHUNK_BYTES = 64 * 2**20


@dataclass(frozen=True)
class _FileFacts:
    path: str
    base: int  # userblock size: HDF5 addresses are relative to it
    sizeof_addr: int
    sizeof_size: int
    # collection address -> {object index: object size}, or None where no
    # collection is; filled as heap IDs point at collections
    heaps: dict[int, dict[int, int] | None]


_FACTS: dict[tuple[str, int, int], _FileFacts] = {}


def check_global_heaps(h5: h5py.File) -> None:
    """Refuse a file whose global heap collections are inconsistent."""
    _file_facts(h5)


def _file_facts(h5: h5py.File) -> _FileFacts:
    path = h5.filename
    try:
        stat = os.stat(path)
    except (OSError, TypeError, ValueError) as exc:
        raise InputError(
            f"cannot check the HDF5 file {path!r} before reading its text "
            f"attributes ({exc}); modelconv reads text only from files on disk"
        ) from exc
    key = (path, stat.st_size, stat.st_mtime_ns)
    facts = _FACTS.get(key)
    if facts is not None:
        return facts
    try:
        fcpl = h5.id.get_create_plist()
        sizeof_addr, sizeof_size = (int(n) for n in fcpl.get_sizes())
        base = int(fcpl.get_userblock())
    except H5_ERRORS as exc:
        raise InputError(f"HDF5 file {path!r}: cannot read its sizes ({exc})") from exc
    facts = _FileFacts(path, base, sizeof_addr, sizeof_size, {})
    _FACTS[key] = facts
    return facts


def _collection(facts: _FileFacts, heap: int) -> dict[int, int] | None:
    """The objects of the collection at address ``heap``; None if none is."""
    if heap in facts.heaps:
        return facts.heaps[heap]
    objects = None
    start = facts.base + heap
    with open(facts.path, "rb") as handle:
        size = os.fstat(handle.fileno()).st_size
        if start + 4 <= size:
            with mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) as data:
                if data[start : start + 4] == b"GCOL":
                    objects = _check_collection(
                        data, start, facts.sizeof_size, facts.path
                    )
    facts.heaps[heap] = objects
    return objects


def _check_collection(
    data: mmap.mmap, start: int, sizeof_size: int, path: str
) -> dict[int, int] | None:
    header = 8 + sizeof_size  # signature, version, 3 reserved, collection size
    object_header = 8 + sizeof_size  # index, refcount, 4 reserved, size
    if start + header > len(data) or data[start + 4] != 1:
        return None  # not a collection header (version 1 is the only one)
    size = int.from_bytes(data[start + 8 : start + header], "little")
    if size < header + object_header or start + size > len(data):
        return None  # implausible: "GCOL" inside raw data, not a heap
    objects: dict[int, int] = {}
    end = start + size
    pos = start + header
    while pos + object_header <= end:  # a smaller tail is free space
        index = int.from_bytes(data[pos : pos + 2], "little")
        length = int.from_bytes(data[pos + 8 : pos + object_header], "little")
        need = length if index == 0 else object_header + (length + 7) // 8 * 8
        if need <= 0 or pos + need > end:
            raise HostileInputError(
                f"{path!r}: HDF5 global heap at byte {start} has an object of "
                f"size {length} at byte {pos} that does not fit its collection; "
                "libhdf5 would loop or read outside it, so the file is refused"
            )
        if index:
            objects[index] = length
        pos += need
    return objects


def check_vlen_attribute(obj: h5py.HLObject, name: str) -> None:
    """Check a variable-length string attribute's heap IDs before reading it."""
    facts = _file_facts(obj.file)
    where = f"attribute {name!r} of {obj.name!r}"
    with open(facts.path, "rb") as handle:
        reader = _Reader(handle, facts)
        dense = False
        for kind, payload in _header_messages(reader, object_addr(obj)):
            if kind == 0x0C:
                found = _attribute_message(payload, facts, name, where)
                if found:
                    return
            elif kind == 0x15:
                dense = True
    raise InputError(
        f"{where} is not stored in its object's header"
        + (" (dense attribute storage)" if dense else "")
        + "; modelconv cannot check its text before libhdf5 reads it, so it is "
        "refused (Keras never stores attributes that way)"
    )


class _Reader:
    def __init__(self, handle: Any, facts: _FileFacts) -> None:
        self.handle = handle
        self.facts = facts
        self.size = os.fstat(handle.fileno()).st_size

    def read(self, addr: int, length: int, what: str) -> bytes:
        start = self.facts.base + addr
        if addr < 0 or length < 0 or start + length > self.size:
            raise InputError(
                f"HDF5 {what} at address {addr} (+{length} bytes) lies outside "
                "the file; the file is damaged"
            )
        self.handle.seek(start)
        return bytes(self.handle.read(length))


def _number(data: bytes, pos: int, width: int) -> int:
    if pos + width > len(data):
        raise InputError("HDF5 object header is truncated; the file is damaged")
    return int.from_bytes(data[pos : pos + width], "little")


def _header_messages(reader: _Reader, addr: int) -> Iterator[tuple[int, bytes]]:
    """(type, payload) of every message in an object header, v1 or v2.

    Layouts from the HDF5 file format specification, section IV.A: version 1
    headers have a 16-byte prefix and 8-byte message headers; version 2
    ("OHDR") a variable prefix, 4-byte message headers (6 when creation order
    is tracked) and continuation chunks that start with "OCHK".
    """
    head = reader.read(addr, 16, "object header")
    version2 = head[:4] == b"OHDR"
    if version2:
        flags = head[5]
        pos = 6 + (16 if flags & 0x20 else 0) + (4 if flags & 0x10 else 0)
        width = 1 << (flags & 0x03)
        prefix = reader.read(addr, pos + width, "object header")
        first = (addr + pos + width, _number(prefix, pos, width), False)
        message_head = 6 if flags & 0x04 else 4
    else:
        if head[0] != 1:
            raise InputError(f"HDF5 object header at {addr} has an unknown version")
        first = (addr + 16, _number(head, 8, 4), False)
        message_head = 8
    chunks = [first]
    seen: set[int] = set()
    while chunks:
        start, length, continued = chunks.pop(0)
        if start in seen or len(seen) >= MAX_HEADER_CHUNKS:
            raise HostileInputError(
                f"HDF5 object header at {addr} has looping or too many "
                "continuation chunks; the file is refused"
            )
        if length > MAX_HEADER_CHUNK_BYTES:
            raise LimitExceededError(
                f"HDF5 object header chunk of {length} bytes at {start}; refused"
            )
        seen.add(start)
        data = reader.read(start, length, "object header chunk")
        if version2 and continued:
            if data[:4] != b"OCHK":
                raise InputError("HDF5 continuation chunk lacks its signature")
            data = data[4:-4]  # signature and checksum
        for kind, payload in _chunk_messages(data, version2, message_head):
            if kind == 0x10:  # continuation: address, then length
                width = reader.facts.sizeof_addr
                target = _number(payload, 0, width)
                size = _number(payload, width, reader.facts.sizeof_size)
                chunks.append((target, size, True))
            yield kind, payload


def _chunk_messages(
    data: bytes, version2: bool, message_head: int
) -> Iterator[tuple[int, bytes]]:
    pos = 0
    # A tail shorter than a message header is a gap (version 2) or padding.
    while pos + message_head <= len(data):
        if version2:
            kind, size = data[pos], _number(data, pos + 1, 2)
        else:
            kind, size = _number(data, pos, 2), _number(data, pos + 2, 2)
        body = data[pos + message_head : pos + message_head + size]
        if len(body) != size:
            raise InputError("HDF5 object header message overruns its chunk")
        yield kind, body
        pos += message_head + size


def _pad8(n: int) -> int:
    return (n + 7) // 8 * 8


def _attribute_message(
    payload: bytes, facts: _FileFacts, name: str, where: str
) -> bool:
    """Check the heap IDs of attribute ``name``; False if this is another one."""
    version = payload[0] if payload else 0
    if version not in (1, 2, 3):
        raise InputError(f"{where}: attribute message version {version} unknown")
    flags = payload[1] if version > 1 else 0
    name_size = _number(payload, 2, 2)
    type_size = _number(payload, 4, 2)
    space_size = _number(payload, 6, 2)
    pad = _pad8 if version == 1 else (lambda n: n)
    pos = 8 + (1 if version == 3 else 0)
    raw_name = payload[pos : pos + name_size].split(b"\0", 1)[0]
    if raw_name.decode("utf-8", "replace") != name:
        return False
    if flags & 0x03:
        raise InputError(f"{where} uses a shared datatype or dataspace; refused")
    pos += pad(name_size)
    dtype = payload[pos : pos + type_size]
    pos += pad(type_size)
    space = payload[pos : pos + space_size]
    pos += pad(space_size)
    if not dtype or dtype[0] & 0x0F != 9:
        return True  # not variable-length: nothing in the heap to check
    count = _space_count(space, facts.sizeof_size, where)
    width = 4 + facts.sizeof_addr + 4
    data = payload[pos:]
    if count * width > len(data):
        raise InputError(f"{where}: its data is shorter than its dataspace")
    for i in range(count):
        item = data[i * width : (i + 1) * width]
        length = int.from_bytes(item[:4], "little")
        if length == 0:
            continue
        heap = int.from_bytes(item[4 : 4 + facts.sizeof_addr], "little")
        index = int.from_bytes(item[4 + facts.sizeof_addr :], "little")
        stored = (_collection(facts, heap) or {}).get(index)
        if stored is None or length > stored:
            raise HostileInputError(
                f"{where}: string {i} claims {length} bytes in global heap "
                f"object {index} at {heap}, which holds "
                f"{'nothing' if stored is None else stored}; libhdf5 would "
                "allocate the claim before noticing, so the file is refused"
            )
    return True


def _space_count(space: bytes, sizeof_size: int, where: str) -> int:
    if len(space) < 4:
        raise InputError(f"{where}: its dataspace is truncated")
    version, rank = space[0], space[1]
    if version == 1:
        pos = 8
    elif version == 2:
        if space[3] == 2:
            return 0  # null dataspace
        pos = 4
    else:
        raise InputError(f"{where}: dataspace version {version} unknown")
    count = 1
    for axis in range(rank):
        start = pos + axis * sizeof_size
        if start + sizeof_size > len(space):
            raise InputError(f"{where}: its dataspace is truncated")
        count *= int.from_bytes(space[start : start + sizeof_size], "little")
    if count * 16 > MAX_ATTRIBUTE_BYTES:
        raise LimitExceededError(f"{where} declares {count} strings; refused")
    return count


def as_text(value: Any, what: str) -> str:
    """A str from an attribute holding str, bytes or a 0-d/1-element array."""
    if isinstance(value, np.ndarray) and value.size == 1:
        value = value.reshape(-1)[0]
    if isinstance(value, (bytes, np.bytes_)):
        try:
            return bytes(value).decode("utf-8")
        except UnicodeDecodeError as exc:
            raise InputError(f"{what} is not UTF-8 text ({exc.reason})") from exc
    if isinstance(value, str):
        try:
            # h5py decodes a variable-length string with surrogateescape, so
            # bytes that are not UTF-8 arrive as lone surrogates.
            value.encode("utf-8")
        except UnicodeEncodeError as exc:
            raise InputError(
                f"{what} holds bytes that are not UTF-8 ({value[:60]!r}); the "
                "file is damaged"
            ) from exc
        return value
    raise InputError(
        f"{what} should be text but holds {type(value).__name__}; the file is "
        "not a Keras file or is damaged"
    )


def name_list(obj: h5py.HLObject, name: str) -> list[str] | None:
    """A list-of-names attribute, joined from ``name0``, ``name1``... if split.

    Keras splits attributes over its 64512-byte header limit into numbered
    pieces (every Keras 2 and 3 writer does). An empty list may be stored
    as an empty float64 array (numpy's default for ``np.asarray([])``).
    Returns None when neither form is present.
    """
    value = read_attr(obj, name)
    if value is not None:
        return _names_from(value, f"attribute {name!r} of {obj.name!r}")
    parts: list[str] = []
    index = 0
    while True:
        piece = read_attr(obj, f"{name}{index}")
        if piece is None:
            break
        parts.extend(_names_from(piece, f"attribute {name}{index!r} of {obj.name!r}"))
        index += 1
        if index > MAX_HDF5_OBJECTS:
            raise LimitExceededError(f"attribute {name!r} is split too many times")
    return parts if index else None


def _names_from(value: Any, what: str) -> list[str]:
    array = np.asarray(value)
    if array.size == 0:
        return []
    if array.ndim == 0:
        array = array.reshape(1)
    if array.ndim != 1:
        raise InputError(f"{what} should be a list of names; found shape {array.shape}")
    return [as_text(item, what) for item in array]


def plain_value(value: Any) -> Any:
    """An attribute value as JSON-ready data (text, numbers, lists)."""
    if isinstance(value, (bytes, np.bytes_)):
        try:
            return bytes(value).decode("utf-8")
        except UnicodeDecodeError:
            return {"bytes_hex": bytes(value).hex()}
    if isinstance(value, np.ndarray):
        if value.dtype.kind in "OSU" or value.dtype.kind in "biuf":
            return (
                [plain_value(v) for v in value.reshape(-1)]
                if value.ndim
                else (plain_value(value.reshape(-1)[0]))
            )
        return repr(value)[:1000]
    if isinstance(value, np.generic):
        if isinstance(value, np.bool_):
            return bool(value)
        if isinstance(value, np.integer):
            return int(value)
        if isinstance(value, np.floating):
            return float(value)
        if isinstance(value, np.complexfloating):
            return [float(value.real), float(value.imag)]
        return repr(value)[:1000]
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    return repr(value)[:1000]


# --------------------------------------------------------------------------
# Datasets


@dataclass(frozen=True)
class DatasetInfo:
    """A dataset that passed the checks: its closed-list dtype and shape."""

    dtype: str
    shape: tuple[int, ...]
    # Stored as a 2-byte pattern (uint16 or opaque) holding bfloat16.
    bfloat16_bits: bool = False

    @property
    def nbytes(self) -> int:
        return math.prod(self.shape) * dtypes.itemsize(self.dtype)


class SkippedDataset(InputError):
    """A dataset that is not a tensor (strings, compound, vlen): kept out."""


def check_dataset(
    dset: h5py.Dataset, where: str, *, opaque2_is_bfloat16: bool = False
) -> DatasetInfo:
    """Check a dataset's storage and type before any of its bytes are read.

    Raises HostileInputError for external storage, virtual datasets and
    unknown filters; UnsupportedDtypeError for numeric types outside the
    closed list; SkippedDataset for text, compound and variable-length data.
    """
    try:
        dcpl = dset.id.get_create_plist()
        external = dcpl.get_external_count()
        virtual = dset.is_virtual
        filters = [dcpl.get_filter(i)[0] for i in range(dcpl.get_nfilters())]
        h5type = dset.id.get_type()
        dtype = dset.dtype
    except H5_ERRORS as exc:
        raise InputError(
            f"HDF5 dataset {where!r} cannot be opened ({_reason(exc)}); the file "
            "is damaged or uses a feature modelconv does not read"
        ) from exc
    if external:
        raise HostileInputError(
            f"HDF5 dataset {where!r} keeps its bytes in external files; "
            "modelconv reads only data stored inside the file"
        )
    if virtual:
        raise HostileInputError(
            f"HDF5 dataset {where!r} is a virtual dataset (it maps other files); "
            "modelconv reads only data stored inside the file"
        )
    unknown = [f for f in filters if f not in BUILTIN_FILTERS]
    if unknown:
        raise HostileInputError(
            f"HDF5 dataset {where!r} uses filter id(s) {unknown}, which would load "
            "a plugin library; modelconv allows only the built-in filters "
            f"({', '.join(sorted(BUILTIN_FILTERS.values()))})"
        )
    if dset.shape is None:
        raise SkippedDataset(f"HDF5 dataset {where!r} has a null dataspace")
    return DatasetInfo(
        *_dtype_of(dset, h5type, dtype, where, opaque2_is_bfloat16),
    )


def _dtype_of(
    dset: h5py.Dataset,
    h5type: Any,
    dtype: np.dtype,
    where: str,
    opaque2_is_bfloat16: bool,
) -> tuple[str, tuple[int, ...], bool]:
    shape = tuple(int(d) for d in dset.shape)
    marked = _bfloat16_marked(dset, where)
    cls = h5type.get_class()
    if cls == h5py.h5t.OPAQUE:
        if dtype.itemsize == 2 and (marked or opaque2_is_bfloat16):
            return "bfloat16", shape, True
        raise UnsupportedDtypeError(
            f"HDF5 dataset {where!r} has an opaque {dtype.itemsize}-byte type "
            "(float8 and other ml_dtypes types are stored this way); modelconv "
            f"carries only {', '.join(dtypes.DTYPE_NAMES)}"
        )
    if cls in (h5py.h5t.STRING, h5py.h5t.VLEN, h5py.h5t.REFERENCE) or (
        dtype.kind in "OSUV" and dtype.fields is None
    ):
        raise SkippedDataset(
            f"HDF5 dataset {where!r} holds {dtype} data (text, references or "
            "variable-length), not a tensor; it is left out"
        )
    if dtype.fields is not None and dtype.kind != "c":
        raise SkippedDataset(
            f"HDF5 dataset {where!r} holds compound records {dtype}, not a "
            "tensor; it is left out"
        )
    if marked and dtype.itemsize == 2 and dtype.kind in "ui":
        return "bfloat16", shape, True
    return dtypes.dtype_name(dtype), shape, False


def _bfloat16_marked(dset: h5py.Dataset, where: str) -> bool:
    # Keras 3 (saving_lib.H5IOStore, since 3.0) tags bfloat16 datasets with
    # the attribute dtype="bfloat16"; modelconv's own trees do the same.
    try:
        value = read_attr(dset, "dtype")
    except InputError:
        return False
    if value is None:
        return False
    try:
        return as_text(value, f"attribute 'dtype' of {where!r}") == "bfloat16"
    except InputError:
        return False


def check_limit(total: int, max_bytes: int, what: str) -> None:
    if total > max_bytes:
        raise LimitExceededError(
            f"{what} declares {total} bytes, beyond the limit of {max_bytes} "
            "bytes; refused before reading (raise it with --max-bytes if the "
            "file is trusted)"
        )


class H5Source:
    """Reads one checked dataset on demand, whole or in slabs."""

    def __init__(self, dset: h5py.Dataset, info: DatasetInfo, where: str) -> None:
        self._dset = dset
        self._info = info
        self._where = where

    def read(self) -> np.ndarray:
        if math.prod(self._info.shape) == 0:
            return np.empty(self._info.shape, dtype=self._numpy_dtype())
        return self._get(())

    def iter_chunks(self, max_bytes: int) -> Iterator[np.ndarray]:
        shape = self._info.shape
        if math.prod(shape) == 0:
            return
        itemsize = dtypes.itemsize(self._info.dtype)
        for index in slabs(shape, itemsize, max_bytes):
            yield self._get(index).reshape(-1)

    def _numpy_dtype(self) -> np.dtype:
        return dtypes.numpy_dtype(self._info.dtype)

    def _get(self, index: tuple[Any, ...]) -> np.ndarray:
        try:
            array = np.asarray(self._dset[index] if index else self._dset[()])
        except H5_ERRORS as exc:
            raise InputError(
                f"HDF5 dataset {self._where!r} cannot be read ({_reason(exc)}); "
                "the file is truncated or damaged"
            ) from exc
        if self._info.bfloat16_bits:
            # copy(), not ascontiguousarray: the latter turns 0-d into 1-d.
            array = array if array.flags.c_contiguous else array.copy()
            array = array.view(dtypes.numpy_dtype("bfloat16"))
        return array


def slabs(
    shape: tuple[int, ...], itemsize: int, max_bytes: int
) -> Iterator[tuple[Any, ...]]:
    """Index tuples cutting an array into C-order pieces of about max_bytes.

    Pieces are runs of whole rows along axis 0; a row bigger than max_bytes
    is cut along the next axis, and so on.
    """
    if not shape:
        yield ()
        return
    inner = math.prod(shape[1:]) * itemsize
    if len(shape) == 1 or inner <= max_bytes:
        step = max(1, max_bytes // max(1, inner if len(shape) > 1 else itemsize))
        for start in range(0, shape[0], step):
            yield (slice(start, min(start + step, shape[0])),)
        return
    for i in range(shape[0]):
        for rest in slabs(shape[1:], itemsize, max_bytes):
            yield (i, *rest)


def is_hdf5(head: bytes) -> bool:
    """HDF5's signature at offset 0 or at a userblock offset (512, 1024...)."""
    offset = 0
    while offset + len(HDF5_MAGIC) <= len(head):
        if head[offset : offset + len(HDF5_MAGIC)] == HDF5_MAGIC:
            return True
        offset = 512 if offset == 0 else offset * 2
    return False
