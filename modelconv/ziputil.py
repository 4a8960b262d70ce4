"""Opening zip archives (NPZ, .keras) without trusting them.

The stdlib ``zipfile`` parses the central directory; everything else is
checked here before a byte is decompressed: member names (no traversal, no
duplicates), the local file header against the central directory, declared
sizes against ``max_bytes`` and ``MAX_ZIP_RATIO``, overlapping members,
encryption and compression methods. Member data is then read by modelconv
itself, capped at the declared size, so a member whose stream yields more
than it declared (a zip bomb that lies) is refused mid-stream.
"""

from __future__ import annotations

import io
import re
import struct
import zipfile
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from .accel import crc32
from .errors import HostileInputError, InputError, LimitExceededError
from .limits import DEFAULT_MAX_BYTES, MAX_ZIP_MEMBERS, MAX_ZIP_RATIO

ZIP_MAGICS = (b"PK\x03\x04", b"PK\x05\x06")

STORED = zipfile.ZIP_STORED
DEFLATED = zipfile.ZIP_DEFLATED

# Method numbers from the PKWARE APPNOTE, so a refusal can name the method.
_METHOD_NAMES = {
    1: "shrink",
    6: "implode",
    9: "deflate64",
    12: "bzip2",
    14: "lzma",
    93: "zstandard",
    95: "xz",
    98: "ppmd",
    99: "AES encryption",
}

_LOCAL_HEADER = struct.Struct("<4sHHHHHIIIHH")
_LOCAL_MAGIC = b"PK\x03\x04"
_FLAG_ENCRYPTED = 0x1
_FLAG_DATA_DESCRIPTOR = 0x8
_FLAG_STRONG_ENCRYPTION = 0x40
_FLAG_UTF8 = 0x800
_ZIP64_EXTRA = 0x0001
_U32_MAX = 0xFFFFFFFF

# Raw bytes read per call while inflating: small enough to keep memory flat,
# large enough that a 1 GiB member needs only ~16k calls.
_RAW_CHUNK = 64 * 1024
_OUT_CHUNK = 1024 * 1024

_DRIVE = re.compile(r"^[A-Za-z]:")


@dataclass(frozen=True)
class Member:
    """One checked zip member and where its data lives in the file."""

    name: str
    method: int
    compressed_size: int
    size: int
    crc: int
    header_offset: int
    data_offset: int

    @property
    def stored(self) -> bool:
        return self.method == STORED

    @property
    def is_dir(self) -> bool:
        return self.name.endswith("/")


def is_zip(head: bytes) -> bool:
    return head[:4] in ZIP_MAGICS


def list_names(path: Path) -> list[str] | None:
    """Member names from the central directory, or None if it cannot be read.

    For sniffers: cheap (central directory only) and never raises.
    """
    try:
        with zipfile.ZipFile(path) as archive:
            if len(archive.filelist) > MAX_ZIP_MEMBERS:
                return None
            return [info.filename for info in archive.filelist]
    except Exception:  # noqa: BLE001 - sniffing must not raise on junk
        return None


def check_member_name(name: str) -> None:
    """Refuse a member name that could escape a folder or confuse readers."""
    problem = None
    if not name:
        problem = "an empty name"
    elif "\x00" in name:
        problem = "a NUL character"
    elif "\\" in name:
        problem = "a backslash"
    elif name.startswith("/"):
        problem = "an absolute path"
    elif _DRIVE.match(name):
        problem = "a drive letter"
    elif ".." in name.split("/"):
        problem = "a '..' segment"
    if problem is not None:
        raise HostileInputError(
            f"zip member name {name!r} has {problem}; such names can write "
            "outside a folder when extracted, so the archive is refused"
        )


class SafeZip:
    """A zip archive whose directory has been checked; members read capped.

    Use as a context manager, or close it (Model.resources does).
    """

    def __init__(self, path: Path, max_bytes: int = DEFAULT_MAX_BYTES) -> None:
        self.path = Path(path)
        self.max_bytes = max_bytes
        try:
            # Unbuffered: every read is a positioned read of the file as it is
            # now, and memory holds nothing beyond what a caller asked for.
            self._fh: io.FileIO = self.path.open("rb", buffering=0)
        except OSError as exc:
            raise InputError(
                f"cannot open {str(self.path)!r}: {exc.strerror}; check the path "
                "and its permissions"
            ) from exc
        try:
            self.file_size = self._fh.seek(0, io.SEEK_END)
            self.members = self._check_directory()
        except BaseException:
            self._fh.close()
            raise

    # -- directory checks ------------------------------------------------

    def _check_directory(self) -> dict[str, Member]:
        self._fh.seek(0)
        try:
            with zipfile.ZipFile(self._fh) as archive:
                infos = list(archive.infolist())
                dir_start = int(getattr(archive, "start_dir", self.file_size))
        except zipfile.BadZipFile as exc:
            raise InputError(
                f"{str(self.path)!r} is not a readable zip archive ({exc}); it "
                "may be truncated or damaged"
            ) from exc
        except (
            OSError,
            ValueError,
            struct.error,
            EOFError,
            NotImplementedError,
            OverflowError,
            IndexError,
            KeyError,
        ) as exc:
            raise InputError(
                f"{str(self.path)!r}: zip directory cannot be parsed ({exc!r}); "
                "the archive is damaged"
            ) from exc

        if len(infos) > MAX_ZIP_MEMBERS:
            raise LimitExceededError(
                f"{str(self.path)!r} has {len(infos)} zip members (limit "
                f"{MAX_ZIP_MEMBERS}); no model archive has that many, so it is "
                "refused"
            )
        members: dict[str, Member] = {}
        total = 0
        for info in infos:
            name = info.orig_filename
            check_member_name(name)
            if name in members:
                raise HostileInputError(
                    f"zip member {name!r} appears twice; readers disagree on which "
                    "copy wins, so the archive is refused"
                )
            member = self._check_member(info)
            total += member.size
            if total > self.max_bytes:
                raise LimitExceededError(
                    f"{str(self.path)!r} declares {total} uncompressed bytes by "
                    f"member {name!r}, beyond the limit of {self.max_bytes}; "
                    "raise --max-bytes if the file is trusted"
                )
            members[name] = member
        self._check_overlaps(list(members.values()), dir_start)
        return members

    def _check_member(self, info: zipfile.ZipInfo) -> Member:
        name = info.orig_filename
        if info.flag_bits & (_FLAG_ENCRYPTED | _FLAG_STRONG_ENCRYPTION):
            raise HostileInputError(
                f"zip member {name!r} is encrypted; modelconv reads only "
                "unencrypted archives"
            )
        if info.compress_type not in (STORED, DEFLATED):
            method = _METHOD_NAMES.get(
                info.compress_type, f"method {info.compress_type}"
            )
            raise InputError(
                f"zip member {name!r} is compressed with {method}; modelconv "
                "reads stored and deflate members only; re-save the archive "
                "without compression or with deflate"
            )
        size, csize = int(info.file_size), int(info.compress_size)
        if size > self.max_bytes:
            raise LimitExceededError(
                f"zip member {name!r} declares {size} bytes, beyond the limit of "
                f"{self.max_bytes}; raise --max-bytes if the file is trusted"
            )
        if info.compress_type == STORED and size != csize:
            raise HostileInputError(
                f"zip member {name!r} is stored but declares {size} bytes with "
                f"{csize} bytes of data; the archive lies about its sizes"
            )
        if size > max(csize, 1) * MAX_ZIP_RATIO:
            raise HostileInputError(
                f"zip member {name!r} declares {size} bytes from {csize} "
                f"compressed (ratio beyond {MAX_ZIP_RATIO}); refused as a "
                "likely zip bomb"
            )
        data_offset = self._check_local_header(info)
        if data_offset + csize > self.file_size:
            raise InputError(
                f"zip member {name!r} needs bytes up to {data_offset + csize} but "
                f"the file has {self.file_size}; the archive is truncated"
            )
        return Member(
            name=name,
            method=info.compress_type,
            compressed_size=csize,
            size=size,
            crc=info.CRC,
            header_offset=info.header_offset,
            data_offset=data_offset,
        )

    def _check_local_header(self, info: zipfile.ZipInfo) -> int:
        """Compare the local file header with the central directory entry.

        Returns the absolute offset of the member's data.
        """
        name = info.orig_filename
        if not 0 <= info.header_offset < self.file_size:
            raise InputError(
                f"zip member {name!r}: local header offset {info.header_offset} "
                f"lies outside the file ({self.file_size} bytes); the archive's "
                "directory is damaged"
            )
        raw = self._pread(info.header_offset, _LOCAL_HEADER.size)
        if len(raw) != _LOCAL_HEADER.size:
            raise InputError(
                f"zip member {name!r}: local header at offset "
                f"{info.header_offset} is cut short; the archive is truncated"
            )
        (magic, _, flags, method, _, _, crc, csize, size, name_len, extra_len) = (
            _LOCAL_HEADER.unpack(raw)
        )
        if magic != _LOCAL_MAGIC:
            raise HostileInputError(
                f"zip member {name!r}: no local header at offset "
                f"{info.header_offset}; the directory points elsewhere"
            )
        tail_len = name_len + extra_len
        tail = self._pread(info.header_offset + _LOCAL_HEADER.size, tail_len)
        if len(tail) != tail_len:
            raise InputError(
                f"zip member {name!r}: local header is cut short; the archive is "
                "truncated"
            )
        local_name = tail[:name_len].decode(
            "utf-8" if flags & _FLAG_UTF8 else "cp437", errors="replace"
        )
        disagreements = []
        if local_name != name:
            disagreements.append(f"name {local_name!r}")
        if method != info.compress_type:
            disagreements.append(f"compression method {method}")
        if not flags & _FLAG_DATA_DESCRIPTOR or (csize or size or crc):
            if size == _U32_MAX or csize == _U32_MAX:
                size, csize = _zip64_sizes(tail[name_len:], size, csize)
            if size != info.file_size or csize != info.compress_size:
                disagreements.append(f"sizes {size}/{csize}")
            if crc != info.CRC and not flags & _FLAG_DATA_DESCRIPTOR:
                disagreements.append(f"crc {crc:08x}")
        if disagreements:
            raise HostileInputError(
                f"zip member {name!r}: local header says {', '.join(disagreements)}"
                " where the central directory disagrees; readers would see "
                "different files, so the archive is refused"
            )
        return info.header_offset + _LOCAL_HEADER.size + name_len + extra_len

    def _check_overlaps(self, members: list[Member], dir_start: int) -> None:
        """Refuse members whose data overlap (the overlapping-file zip bomb)."""
        end = 0
        previous = None
        for member in sorted(members, key=lambda m: m.header_offset):
            if member.header_offset < end:
                raise HostileInputError(
                    f"zip members {previous!r} and {member.name!r} overlap; "
                    "refused as a likely zip bomb"
                )
            end = member.data_offset + member.compressed_size
            previous = member.name
        if end > dir_start:
            raise HostileInputError(
                f"zip member {previous!r} runs into the central directory; the "
                "archive is malformed"
            )

    # -- reading ---------------------------------------------------------

    def member(self, name: str) -> Member:
        try:
            return self.members[name]
        except KeyError:
            raise InputError(f"{str(self.path)!r} has no member {name!r}") from None

    def _pread(self, offset: int, length: int) -> bytes:
        if self._fh.closed:
            raise InputError(
                f"{str(self.path)!r} was closed; read tensors before closing the model"
            )
        self._fh.seek(offset)
        data = self._fh.read(length)
        if len(data) == length or not data:
            return data
        parts = [data]  # a short read from a raw file: keep reading until EOF
        left = length - len(data)
        while left > 0:
            piece = self._fh.read(left)
            if not piece:
                break
            parts.append(piece)
            left -= len(piece)
        return b"".join(parts)

    def read_at(self, member: Member, offset: int, length: int) -> bytes:
        """``length`` bytes of a stored member's data, from ``offset`` in it."""
        if not member.stored:
            raise ValueError(f"member {member.name!r} is compressed")
        if offset < 0 or length < 0 or offset + length > member.size:
            raise InputError(
                f"zip member {member.name!r}: read of {length} bytes at {offset} "
                f"passes its end ({member.size} bytes)"
            )
        data = self._pread(member.data_offset + offset, length)
        if len(data) != length:
            raise InputError(
                f"zip member {member.name!r} is cut short; the archive is truncated"
            )
        return data

    def read_into(self, member: Member, offset: int, view: memoryview) -> None:
        """Fill ``view`` from a stored member's data at ``offset``, copying once."""
        length = len(view)
        if not member.stored:
            raise ValueError(f"member {member.name!r} is compressed")
        if offset < 0 or offset + length > member.size:
            raise InputError(
                f"zip member {member.name!r}: read of {length} bytes at {offset} "
                f"passes its end ({member.size} bytes)"
            )
        if self._fh.closed:
            raise InputError(
                f"{str(self.path)!r} was closed; read tensors before closing the model"
            )
        self._fh.seek(member.data_offset + offset)
        done = 0
        while done < length:
            count = self._fh.readinto(view[done:])
            if not count:
                raise InputError(
                    f"zip member {member.name!r} is cut short; the archive is truncated"
                )
            done += count

    def open(self, name: str) -> MemberReader:
        """A file-like over the member's uncompressed bytes, capped and checked."""
        return MemberReader(self, self.member(name))

    def read(self, name: str, limit: int | None = None) -> bytes:
        """The whole member, refusing one whose declared size exceeds ``limit``."""
        member = self.member(name)
        if limit is not None and member.size > limit:
            raise LimitExceededError(
                f"zip member {name!r} declares {member.size} bytes where at most "
                f"{limit} are expected; refused"
            )
        with self.open(name) as reader:
            return reader.read()

    def slice(self, name: str) -> MemberSlice:
        """A seekable file-like over a stored member's bytes (for h5py)."""
        member = self.member(name)
        if not member.stored:
            raise ValueError(f"member {name!r} is compressed")
        return MemberSlice(self, member)

    def close(self) -> None:
        self._fh.close()

    def __enter__(self) -> SafeZip:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _zip64_sizes(extra: bytes, size: int, csize: int) -> tuple[int, int]:
    """Sizes from a local header's zip64 extra field (APPNOTE 4.5.3)."""
    pos = 0
    while pos + 4 <= len(extra):
        tag, length = struct.unpack_from("<HH", extra, pos)
        body = extra[pos + 4 : pos + 4 + length]
        if tag == _ZIP64_EXTRA:
            values = [
                struct.unpack_from("<Q", body, i)[0] for i in range(0, len(body) - 7, 8)
            ]
            if size == _U32_MAX and values:
                size = values.pop(0)
            if csize == _U32_MAX and values:
                csize = values.pop(0)
            return size, csize
        pos += 4 + length
    return size, csize


class MemberReader(io.RawIOBase):
    """The uncompressed bytes of one member, never more than it declared.

    The CRC is checked once the last declared byte has been delivered.
    """

    def __init__(self, archive: SafeZip, member: Member) -> None:
        super().__init__()
        self._archive = archive
        self.member = member
        self._raw_pos = 0
        self._delivered = 0
        self._crc = 0
        self._pending = b""
        self._inflate = zlib.decompressobj(-15) if not member.stored else None
        self._produced = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
        view = memoryview(buffer).cast("B")
        left = self.member.size - self._delivered
        want = min(len(view), left)
        if want <= 0:
            return 0
        data = self._next(want)
        view[: len(data)] = data
        self._delivered += len(data)
        self._crc = crc32(data, self._crc)
        if self._delivered == self.member.size:
            self._finish()
        return len(data)

    def _next(self, want: int) -> bytes:
        member = self.member
        if self._inflate is None:
            data = self._archive.read_at(member, self._delivered, want)
            return data
        while not self._pending:
            self._pending = self._inflate_some()
        data, self._pending = self._pending[:want], self._pending[want:]
        return data

    def _inflate_some(self) -> bytes:
        member = self.member
        inflate = self._inflate
        assert inflate is not None
        if inflate.eof:
            raise InputError(
                f"zip member {member.name!r} inflates to {self._produced} bytes "
                f"where it declares {member.size}; the archive is damaged"
            )
        data = inflate.unconsumed_tail
        length = min(_RAW_CHUNK, member.compressed_size - self._raw_pos)
        if not data and length > 0:
            data = self._archive._pread(member.data_offset + self._raw_pos, length)
            if len(data) != length:
                raise InputError(
                    f"zip member {member.name!r} is cut short; the archive is truncated"
                )
            self._raw_pos += length
        # With no input left, zlib may still hold output it could not hand
        # over under the last call's cap; an empty call drains it, capped.
        try:
            out = inflate.decompress(data, _OUT_CHUNK)
        except zlib.error as exc:
            raise InputError(
                f"zip member {member.name!r}: deflate data is corrupt ({exc})"
            ) from exc
        if not out and not data and not inflate.eof:
            raise InputError(
                f"zip member {member.name!r}: deflate stream ends early; the "
                "archive is truncated"
            )
        self._produced += len(out)
        if self._produced > member.size:
            raise HostileInputError(
                f"zip member {member.name!r} inflates to more than the {member.size}"
                " bytes it declares; refused as a zip bomb"
            )
        return out

    def _finish(self) -> None:
        """After the last declared byte: the stream must end, the CRC match."""
        if self._inflate is not None:
            while not self._inflate.eof:
                if self._inflate_some():
                    break  # _inflate_some already refused any extra byte
        if self._crc != self.member.crc:
            raise InputError(
                f"zip member {self.member.name!r} fails its CRC check "
                f"({self._crc:08x} against {self.member.crc:08x}); the archive "
                "is damaged"
            )

    def read_exact(self, length: int) -> bytes:
        """Exactly ``length`` bytes, or InputError if the member ends first."""
        parts = []
        left = length
        while left > 0:
            piece = self.read(min(left, _OUT_CHUNK))
            if not piece:
                raise InputError(
                    f"zip member {self.member.name!r} ends before the {length} "
                    "bytes its content declares"
                )
            parts.append(piece)
            left -= len(piece)
        return b"".join(parts)

    def iter_chunks(self, chunk: int = _OUT_CHUNK) -> Iterator[bytes]:
        while True:
            piece = self.read(chunk)
            if not piece:
                return
            yield piece


class SeekableWindow(io.RawIOBase):
    """A seekable, readable view of part of a file; subclasses say where it
    ends (``_end``) and move the bytes. Shared by the read-side member slice
    and the write-side member window of ``zipwrite``."""

    _pos = 0

    def _end(self) -> int:
        raise NotImplementedError

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        if whence == io.SEEK_SET:
            pos = offset
        elif whence == io.SEEK_CUR:
            pos = self._pos + offset
        elif whence == io.SEEK_END:
            pos = self._end() + offset
        else:
            raise ValueError(f"bad whence {whence}")
        if pos < 0:
            raise ValueError("negative seek position")
        self._pos = pos
        return pos


class MemberSlice(SeekableWindow):
    """A read-only, seekable file-like over a stored member's byte range.

    h5py opens it with its file-object driver, so a ``model.weights.h5``
    inside a ``.keras`` archive is read in place, without extracting it.
    """

    def __init__(self, archive: SafeZip, member: Member) -> None:
        super().__init__()
        self._archive = archive
        self._member = member
        self._pos = 0

    def _end(self) -> int:
        return self._member.size

    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
        view = memoryview(buffer).cast("B")
        length = max(0, min(len(view), self._member.size - self._pos))
        if length == 0:
            return 0
        self._archive.read_into(self._member, self._pos, view[:length])
        self._pos += length
        return length
