"""Writing zip archives of stored (uncompressed) members, streaming.

NPZ and ``.keras`` outputs are zips whose members are stored, not
compressed (Keras writes ``.keras`` members stored too). The standard
``zipfile`` writes the same layout, but computes each member's CRC-32 with
zlib at about 4 GiB/s and copies a file into an archive 8 KiB at a time;
this writer takes the CRC from ``accel`` and the data in whatever pieces
the caller has. The layout is the one ``zipfile`` writes with
``force_zip64=True`` (PKWARE APPNOTE 6.3, sections 4.3.7, 4.3.12, 4.3.14
to 4.3.16 and 4.5.3): a local header with a ZIP64 extra field, the data,
then the header patched in place with the CRC and sizes; a central
directory whose ZIP64 extra field appears only where a size or offset
needs it; and the ZIP64 end records only where the archive needs them.
Python's ``zipfile``, numpy's ``np.load`` and Keras read the result.
"""

from __future__ import annotations

import io
import struct
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import IO

from .accel import crc32
from .ziputil import SeekableWindow

_LOCAL = struct.Struct("<4sHHHHHIIIHH")
_CENTRAL = struct.Struct("<4sHHHHHHIIIHHHHHII")
_END = struct.Struct("<4sHHHHIIH")
_END64 = struct.Struct("<4sQHHIIQQQQ")
_LOCATOR64 = struct.Struct("<4sIQI")
_READ_BLOCK = 8 * 2**20

_U16_MAX = 0xFFFF
_U32_MAX = 0xFFFFFFFF
# Past this, sizes and offsets go to ZIP64 fields: zipfile's own limit
# (ZIP64_LIMIT), kept because some readers take the 32-bit fields as signed.
_LIMIT = (1 << 31) - 1
_VERSION = 45  # 4.5: ZIP64 extensions
_MADE_BY = (3 << 8) | _VERSION  # 3: Unix, so external_attr holds a mode
_FLAG_UTF8 = 0x800
_MODE = 0o100644 << 16  # a regular file, rw-r--r--
# MS-DOS date and time of 1980-01-01 00:00:00, the earliest a zip can hold;
# a fixed stamp makes the same model give the same bytes.
_DOS_DATE = (0 << 9) | (1 << 5) | 1
_DOS_TIME = 0


@dataclass(frozen=True)
class _Entry:
    name: bytes
    flags: int
    crc: int
    size: int
    offset: int


class StoredZipWriter:
    """A zip being written member by member; ``close`` writes the directory."""

    def __init__(self, path: Path) -> None:
        # Readable too: a member written through member_file is read back
        # for its CRC.
        self._fh: io.BufferedRandom = open(path, "w+b")
        self._entries: list[_Entry] = []

    def __enter__(self) -> StoredZipWriter:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        if kind is None:
            self.close()
        else:
            self._fh.close()

    def writestr(self, name: str, data: bytes) -> None:
        self.write_member(name, [data])

    def write_member(self, name: str, pieces: Iterable[bytes | memoryview]) -> None:
        with self.member(name) as write:
            for piece in pieces:
                write(piece)

    def write_file(self, name: str, source: Path, block: int = 8 * 2**20) -> None:
        """Copy a file into the archive as one member, ``block`` bytes a time."""
        with open(source, "rb") as handle:
            self.write_member(name, iter(lambda: handle.read(block), b""))

    @contextmanager
    def member(self, name: str) -> Iterator[_Sink]:
        """A member: write its data through the yielded callable."""
        encoded = name.encode("utf-8")
        flags = 0 if encoded.isascii() else _FLAG_UTF8
        offset = self._fh.tell()
        self._fh.write(_local_header(encoded, flags, 0, 0))
        sink = _Sink(self._fh)
        yield sink
        end = self._fh.tell()
        self._fh.seek(offset)
        self._fh.write(_local_header(encoded, flags, sink.crc, sink.size))
        self._fh.seek(end)
        self._entries.append(_Entry(encoded, flags, sink.crc, sink.size, offset))

    @contextmanager
    def member_file(self, name: str) -> Iterator[MemberWindow]:
        """A member written through a seekable file (h5py writes the weights
        file of a ``.keras`` archive into it in place, with no copy).

        Its CRC can only be taken once the file is complete, so the member is
        read back once, from the page cache, at the end.
        """
        encoded = name.encode("utf-8")
        flags = 0 if encoded.isascii() else _FLAG_UTF8
        offset = self._fh.tell()
        header = _local_header(encoded, flags, 0, 0)
        self._fh.write(header)
        window = MemberWindow(self._fh, offset + len(header))
        yield window
        size, crc = window.extent, 0
        self._fh.seek(offset + len(header))
        buffer = bytearray(_READ_BLOCK)
        left = size
        while left > 0:
            count = self._fh.readinto(memoryview(buffer)[: min(left, _READ_BLOCK)])
            if not count:
                raise OSError(f"zip member {name!r} is shorter than was written")
            crc = crc32(memoryview(buffer)[:count], crc)
            left -= count
        self._fh.seek(offset)
        self._fh.write(_local_header(encoded, flags, crc, size))
        self._fh.seek(offset + len(header) + size)
        self._fh.truncate()
        self._entries.append(_Entry(encoded, flags, crc, size, offset))

    def close(self) -> None:
        if self._fh.closed:
            return
        start = self._fh.tell()
        for entry in self._entries:
            self._fh.write(_central_header(entry))
        end = self._fh.tell()
        self._fh.write(_end_records(len(self._entries), start, end - start, end))
        self._fh.close()


class _Sink:
    """Writes a member's data and keeps its CRC and size."""

    def __init__(self, fh: IO[bytes]) -> None:
        self._fh = fh
        self.crc = 0
        self.size = 0

    def __call__(self, data: bytes | memoryview) -> None:
        self._fh.write(data)
        self.crc = crc32(data, self.crc)
        self.size += memoryview(data).nbytes


class MemberWindow(SeekableWindow):
    """The archive seen from the start of one member's data: a file that
    grows at the archive's end, for writers that seek (HDF5)."""

    def __init__(self, fh: io.BufferedRandom, base: int) -> None:
        super().__init__()
        self._fh = fh
        self._base = base
        self._pos = 0
        self.extent = 0

    def _end(self) -> int:
        return self.extent

    def writable(self) -> bool:
        return True

    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
        view = memoryview(buffer).cast("B")
        want = max(0, min(len(view), self.extent - self._pos))
        self._fh.seek(self._base + self._pos)
        done = 0
        while done < want:
            count = self._fh.readinto(view[done:want])
            if not count:
                break
            done += count
        self._pos += done
        return done

    def write(self, data: bytes | bytearray | memoryview) -> int:  # type: ignore[override]
        self._fh.seek(self._base + self._pos)
        count = self._fh.write(data)
        self._pos += count
        self.extent = max(self.extent, self._pos)
        return count

    def truncate(self, size: int | None = None) -> int:
        size = self._pos if size is None else size
        self._fh.truncate(self._base + size)
        self.extent = size
        return size

    def flush(self) -> None:
        self._fh.flush()


def _local_header(name: bytes, flags: int, crc: int, size: int) -> bytes:
    # Sizes always in the ZIP64 extra field, so that the header keeps its
    # length when it is patched after the data (as zipfile does with
    # force_zip64=True).
    extra = struct.pack("<HHQQ", 0x0001, 16, size, size)
    fixed = _LOCAL.pack(
        b"PK\x03\x04",
        _VERSION,
        flags,
        0,  # stored
        _DOS_TIME,
        _DOS_DATE,
        crc,
        _U32_MAX,
        _U32_MAX,
        len(name),
        len(extra),
    )
    return fixed + name + extra


def _central_header(entry: _Entry) -> bytes:
    big = [entry.size, entry.size] if entry.size > _LIMIT else []
    if entry.offset > _LIMIT:
        big.append(entry.offset)
    extra = struct.pack(f"<HH{len(big)}Q", 0x0001, 8 * len(big), *big) if big else b""
    fixed = _CENTRAL.pack(
        b"PK\x01\x02",
        _MADE_BY,
        _VERSION,
        entry.flags,
        0,  # stored
        _DOS_TIME,
        _DOS_DATE,
        entry.crc,
        _U32_MAX if entry.size > _LIMIT else entry.size,
        _U32_MAX if entry.size > _LIMIT else entry.size,
        len(entry.name),
        len(extra),
        0,  # comment length
        0,  # disk number
        0,  # internal attributes
        _MODE,
        _U32_MAX if entry.offset > _LIMIT else entry.offset,
    )
    return fixed + entry.name + extra


def _end_records(count: int, start: int, size: int, here: int) -> bytes:
    records = b""
    if count > _U16_MAX or start > _LIMIT or size > _LIMIT:
        records = _END64.pack(
            b"PK\x06\x06", 44, _MADE_BY, _VERSION, 0, 0, count, count, size, start
        ) + _LOCATOR64.pack(b"PK\x06\x07", 0, here, 1)
    return records + _END.pack(
        b"PK\x05\x06",
        0,
        0,
        min(count, _U16_MAX),
        min(count, _U16_MAX),
        min(size, _U32_MAX),
        min(start, _U32_MAX),
        0,
    )


__all__ = ["StoredZipWriter"]
