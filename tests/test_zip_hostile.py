"""Hostile zip archives and .npy headers, built in code, must be refused.

Every refusal is a modelconv error with exit code 2; no zipfile, struct or
zlib exception may escape, and nothing is decompressed beyond what was
declared.
"""

from __future__ import annotations

import io
import json
import struct
import warnings
import zipfile
import zlib
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from modelconv import ziputil
from modelconv.errors import (
    EXIT_USER,
    HostileInputError,
    InputError,
    LimitExceededError,
    ModelconvError,
    UnsupportedDtypeError,
)
from modelconv.formats import npz
from modelconv.formats.base import ReadOptions
from modelconv.ziputil import SafeZip

NPY_F4 = npz.npy_header_bytes(np.dtype("<f4"), (2,)) + np.zeros(2, "<f4").tobytes()


def make_zip(path: Path, members: list[tuple[str, bytes]], method: int = 0) -> Path:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # zipfile warns on duplicate names
        with zipfile.ZipFile(path, "w", compression=method) as archive:
            for name, data in members:
                archive.writestr(name, data)
    return path


def patch(path: Path, old: bytes, new: bytes, count: int = -1) -> None:
    data = path.read_bytes()
    assert old in data
    path.write_bytes(data.replace(old, new, count))


def refused(path: Path, kind: type[ModelconvError] = InputError) -> ModelconvError:
    with pytest.raises(kind) as info:  # noqa: PT012 - reading may raise too
        model = npz.read(path, ReadOptions())
        for tensor in model.tensors:  # some lies only show when reading
            tensor.read()
    assert info.value.exit_code == EXIT_USER
    return info.value


@pytest.mark.parametrize(
    "name, problem",
    [
        ("../evil.npy", "'..' segment"),
        ("a/../../evil.npy", "'..' segment"),
        ("/etc/evil.npy", "absolute path"),
        ("a\\..\\evil.npy", "backslash"),
        ("C:/evil.npy", "drive letter"),
    ],
)
def test_unsafe_member_names(tmp_path: Path, name: str, problem: str) -> None:
    path = make_zip(tmp_path / "x.npz", [(name, NPY_F4)])
    error = refused(path, HostileInputError)
    assert problem in str(error) and repr(name) in str(error)


def test_nul_in_member_name(tmp_path: Path) -> None:
    path = make_zip(tmp_path / "x.npz", [("aXb.npy", NPY_F4)])
    patch(path, b"aXb.npy", b"a\x00b.npy")
    assert "NUL" in str(refused(path, HostileInputError))


def test_duplicate_members(tmp_path: Path) -> None:
    path = make_zip(tmp_path / "x.npz", [("a.npy", NPY_F4), ("a.npy", NPY_F4)])
    assert "twice" in str(refused(path, HostileInputError))


def test_local_header_name_disagrees(tmp_path: Path) -> None:
    path = make_zip(tmp_path / "x.npz", [("a.npy", NPY_F4)])
    patch(path, b"a.npy", b"b.npy", count=1)  # the local header comes first
    error = refused(path, HostileInputError)
    assert "local header" in str(error) and "'b.npy'" in str(error)


def test_local_header_method_disagrees(tmp_path: Path) -> None:
    path = make_zip(tmp_path / "x.npz", [("a.npy", NPY_F4)])
    data = bytearray(path.read_bytes())
    data[8:10] = struct.pack("<H", 8)  # local method: deflate; central: stored
    path.write_bytes(bytes(data))
    assert "compression method 8" in str(refused(path, HostileInputError))


def test_local_header_size_disagrees(tmp_path: Path) -> None:
    path = make_zip(tmp_path / "x.npz", [("a.npy", NPY_F4)])
    data = bytearray(path.read_bytes())
    (size,) = struct.unpack_from("<I", data, 22)
    struct.pack_into("<II", data, 18, size - 4, size - 4)
    path.write_bytes(bytes(data))
    assert "sizes" in str(refused(path, HostileInputError))


def _central_offset(data: bytes) -> int:
    return data.index(b"PK\x01\x02")


def _set_declared_size(path: Path, size: int) -> None:
    """Set the uncompressed size in both the local header and the directory."""
    data = bytearray(path.read_bytes())
    struct.pack_into("<I", data, 22, size)
    struct.pack_into("<I", data, _central_offset(data) + 24, size)
    path.write_bytes(bytes(data))


def test_stored_member_declaring_more_than_it_holds(tmp_path: Path) -> None:
    path = make_zip(tmp_path / "x.npz", [("a.npy", NPY_F4)])
    _set_declared_size(path, 10**9)
    assert "lies about its sizes" in str(refused(path, HostileInputError))


def test_declared_ratio_beyond_limit_refused_before_inflating(tmp_path: Path) -> None:
    path = make_zip(tmp_path / "x.npz", [("a.npy", NPY_F4)], zipfile.ZIP_DEFLATED)
    _set_declared_size(path, 2**31)
    assert "zip bomb" in str(refused(path, HostileInputError))


def test_declared_size_beyond_max_bytes(tmp_path: Path) -> None:
    path = make_zip(tmp_path / "x.npz", [("a.npy", NPY_F4)])
    with pytest.raises(LimitExceededError, match="--max-bytes"):
        SafeZip(path, max_bytes=10)


def test_deflate_stream_longer_than_declared(tmp_path: Path) -> None:
    """A bomb that declares 4 KiB but inflates to 8 MiB stops at the cap."""
    payload = b"\x00" * (8 * 2**20)
    path = make_zip(tmp_path / "x.zip", [("a.bin", payload)], zipfile.ZIP_DEFLATED)
    _set_declared_size(path, 4096)
    with SafeZip(path) as archive, pytest.raises(HostileInputError, match="bomb"):
        archive.read("a.bin")


def test_deflate_stream_shorter_than_declared(tmp_path: Path) -> None:
    path = make_zip(tmp_path / "x.zip", [("a.bin", b"abc" * 100)], 8)
    _set_declared_size(path, 400)
    with SafeZip(path) as archive, pytest.raises(InputError, match="declares 400"):
        archive.read("a.bin")


def test_crc_mismatch(tmp_path: Path) -> None:
    path = make_zip(tmp_path / "x.zip", [("a.bin", b"hello world")])
    patch(path, b"hello world", b"hello WORLD")
    with SafeZip(path) as archive, pytest.raises(InputError, match="CRC"):
        archive.read("a.bin")


def test_encrypted_member(tmp_path: Path) -> None:
    path = make_zip(tmp_path / "x.npz", [("a.npy", NPY_F4)])
    data = bytearray(path.read_bytes())
    central = _central_offset(data)
    for offset in (6, central + 8):
        (flags,) = struct.unpack_from("<H", data, offset)
        struct.pack_into("<H", data, offset, flags | 1)
    path.write_bytes(bytes(data))
    assert "encrypted" in str(refused(path, HostileInputError))


def test_unsupported_compression_named(tmp_path: Path) -> None:
    path = make_zip(tmp_path / "x.npz", [("a.npy", NPY_F4)], zipfile.ZIP_BZIP2)
    assert "bzip2" in str(refused(path, InputError))


def test_too_many_members(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ziputil, "MAX_ZIP_MEMBERS", 3)
    members = [(f"m{i}.npy", NPY_F4) for i in range(5)]
    path = make_zip(tmp_path / "x.npz", members)
    assert "5 zip members" in str(refused(path, LimitExceededError))


def test_overlapping_members(tmp_path: Path) -> None:
    """Two directory entries sharing bytes: the overlapping-file bomb shape."""
    inner = io.BytesIO()
    make_zip(tmp_path / "inner.zip", [("b.npy", NPY_F4)])
    inner_bytes = (tmp_path / "inner.zip").read_bytes()
    local_b = inner_bytes[: _central_offset(inner_bytes)]
    del inner
    path = tmp_path / "x.npz"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("a.npy", local_b)
        first = archive.filelist[0]
        with zipfile.ZipFile(tmp_path / "inner.zip") as source:
            second = source.getinfo("b.npy")
        second.header_offset = first.header_offset + 30 + len("a.npy")
        archive.filelist.append(second)
        archive.NameToInfo["b.npy"] = second
    assert "overlap" in str(refused(path, HostileInputError))


def test_truncated_zip(tmp_path: Path) -> None:
    path = tmp_path / "x.npz"
    np.savez(path, a=np.arange(1000.0), b=np.ones(50))
    data = path.read_bytes()
    for cut in (len(data) // 2, len(data) - 30, 10):
        path.write_bytes(data[:cut])
        refused(path, InputError)


def test_truncated_member_data(tmp_path: Path) -> None:
    """A directory intact but member data cut: the data range is checked."""
    path = make_zip(tmp_path / "x.npz", [("a.npy", NPY_F4)])
    data = path.read_bytes()
    central = _central_offset(data)
    end = data.index(b"PK\x05\x06")
    # Move the directory 8 bytes earlier, over the member's last bytes.
    cut = data[: central - 8] + data[central:]
    eocd = bytearray(cut[end - 8 :])
    struct.pack_into("<I", eocd, 16, central - 8)
    path.write_bytes(cut[: end - 8] + bytes(eocd))
    refused(path, InputError)


def test_directory_offset_past_its_position(tmp_path: Path) -> None:
    """An end record claiming the directory starts 8 bytes later than it does
    puts the first local header at offset -8: refused, not an OSError."""
    path = make_zip(tmp_path / "x.npz", [("a.npy", NPY_F4)])
    data = bytearray(path.read_bytes())
    end = data.index(b"PK\x05\x06")
    struct.pack_into("<I", data, end + 16, _central_offset(bytes(data)) + 8)
    path.write_bytes(bytes(data))
    assert "lies outside the file" in str(refused(path, InputError))


def test_random_bytes(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    path = tmp_path / "x.npz"
    path.write_bytes(b"PK\x03\x04" + rng.bytes(5000))
    refused(path, InputError)
    path.write_bytes(rng.bytes(5000))
    refused(path, InputError)


def test_object_array_refused_naming_member(tmp_path: Path) -> None:
    path = tmp_path / "x.npz"
    np.savez(path, good=np.ones(3), evil=np.array([{"a": 1}, None], dtype=object))
    error = refused(path, HostileInputError)
    assert "evil.npy" in str(error) and "never unpickles" in str(error)


def _npy(header: str, data: bytes = b"", version: int = 1) -> bytes:
    text = header.encode("latin-1")
    if version == 1:
        return b"\x93NUMPY\x01\x00" + struct.pack("<H", len(text)) + text + data
    return (
        b"\x93NUMPY" + bytes((version, 0)) + struct.pack("<I", len(text)) + text + data
    )


def test_npy_header_claiming_terabytes(tmp_path: Path) -> None:
    header = "{'descr': '<f8', 'fortran_order': False, 'shape': (1000000, 1000000), }"
    path = make_zip(tmp_path / "x.npz", [("big.npy", _npy(header, b"\x00" * 64))])
    error = refused(path, HostileInputError)
    assert "8000000000000 bytes" in str(error)


F4 = "'<f4'"
WEIRD_HEADERS = [
    # (descr, fortran_order, shape, tail): fields spliced into a header dict
    (F4, "False", "(1+1,)", "", InputError),
    ("__import__('os').system('x')", "False", "(2,)", "", InputError),
    (F4, "False", "(-2,)", "", InputError),
    (F4, "0", "(2,)", "", InputError),
    (F4, "False", "[2]", "", InputError),
    ("[('a', '<f4')]", "False", "(2,)", "", UnsupportedDtypeError),
    (F4, "False", "(2,), 'descr': '<f4'", "", HostileInputError),
    (F4, "False", "(2,), 'x': 1", "", InputError),
    (F4, "False", "((2,),)", "", InputError),
    (F4, "False", "(2,)", " junk", InputError),
    ("'<f4\\''", "False", "(2,)", "", InputError),
    ("'<m8'", "False", "(2,)", "", UnsupportedDtypeError),
    ("'<f16'", "False", "(2,)", "", UnsupportedDtypeError),
    ("'<M8[s]'", "False", "(2,)", "", UnsupportedDtypeError),
    ("'|V2'", "False", "(2,)", "", UnsupportedDtypeError),
    (F4, "False", "(" + "9" * 40 + ",)", "", LimitExceededError),
    (F4, "False", "(" + "1," * 70 + ")", "", LimitExceededError),
    (F4, "False", "(2,)", "CUT", InputError),
]


@pytest.mark.parametrize("descr, fortran, shape, tail, kind", WEIRD_HEADERS)
def test_npy_header_weird_literals(
    tmp_path: Path,
    descr: str,
    fortran: str,
    shape: str,
    tail: str,
    kind: type[ModelconvError],
) -> None:
    header = f"{{'descr': {descr}, 'fortran_order': {fortran}, 'shape': {shape}, }}"
    if tail == "CUT":  # an unterminated dict
        header = header[:-1]
    else:
        header += tail
    data = np.zeros(2, "<f4").tobytes()
    path = make_zip(tmp_path / "x.npz", [("w.npy", _npy(header, data))])
    refused(path, kind)


def test_npy_header_length_bounded(tmp_path: Path) -> None:
    member = b"\x93NUMPY\x02\x00" + struct.pack("<I", 2**31) + b"{" * 100
    path = make_zip(tmp_path / "x.npz", [("w.npy", member)])
    assert "limit" in str(refused(path, LimitExceededError))


@pytest.mark.parametrize(
    "member", [b"", b"\x93NUMPY", b"\x93NUMPY\x09\x00\x10\x00", b"PK\x03\x04junk"]
)
def test_npy_prefix_damaged(tmp_path: Path, member: bytes) -> None:
    path = make_zip(tmp_path / "x.npz", [("w.npy", member)])
    refused(path, InputError)


def test_npy_trailing_bytes(tmp_path: Path) -> None:
    header = "{'descr': '<f4', 'fortran_order': False, 'shape': (2,), }"
    path = make_zip(tmp_path / "x.npz", [("w.npy", _npy(header, b"\x00" * 12))])
    assert "follow the array" in str(refused(path, InputError))


def test_damaged_modelconv_header(tmp_path: Path) -> None:
    text = b'{"modelconv": 1, "tensors": [{"name": "w", "dtype": "float32", '
    text += b'"shape": [3], "role": "weight", "source_names": []}]}'
    head = npz.npy_header_bytes(np.dtype("u1"), (len(text),)) + text
    path = make_zip(
        tmp_path / "x.npz", [("__modelconv__.npy", head), ("w.npy", NPY_F4)]
    )
    assert "declares float32 [3]" in str(refused(path, InputError))
    path = make_zip(tmp_path / "y.npz", [("__modelconv__.npy", NPY_F4)])
    assert "1-D uint8" in str(refused(path, InputError))


def test_lazy_read_detects_corrupt_data(tmp_path: Path) -> None:
    """Headers read fine; the CRC catches damage when the tensor is read."""
    path = tmp_path / "x.npz"
    np.savez(path, w=np.arange(100, dtype="<i4"))
    data = bytearray(path.read_bytes())
    offset = bytes(data).index(np.arange(100, dtype="<i4").tobytes())
    data[offset + 40] ^= 0xFF
    path.write_bytes(bytes(data))
    model = npz.read(path, ReadOptions())
    with pytest.raises(InputError, match="CRC"):
        model.tensors[0].read()
    model.close()


def test_sniff_never_raises_on_junk(tmp_path: Path) -> None:
    from modelconv.formats import make_probe

    path = tmp_path / "x.npz"
    path.write_bytes(b"PK\x03\x04" + zlib.compress(b"junk") * 10)
    assert npz.sniff(make_probe(path)) == 10
    path = tmp_path / "x.bin"
    path.write_bytes(b"PK\x03\x04" + b"\x00" * 100)
    assert npz.sniff(make_probe(path)) == 0


def test_messages_name_the_member(tmp_path: Path) -> None:
    header = "{'descr': '<f4', 'fortran_order': False, 'shape': (2+2,), }"
    path = make_zip(tmp_path / "x.npz", [("odd.npy", _npy(header, b""))])
    message = str(refused(path, InputError))
    assert "'odd.npy'" in message and "not understood" in message


# -- legitimate archives that must still open ----------------------------


def test_zip64_archive_opens(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """zip64 extra fields in local headers and directory, and a zip64 end record."""
    monkeypatch.setattr(zipfile, "ZIP64_LIMIT", 100)
    monkeypatch.setattr(zipfile, "ZIP_FILECOUNT_LIMIT", 2)
    path = tmp_path / "z64.npz"
    arrays = {f"a{i}": np.arange(300, dtype="<i4") * i for i in range(4)}
    np.savez(path, **arrays)
    monkeypatch.undo()
    assert b"PK\x06\x06" in path.read_bytes()  # the zip64 end of directory
    model = npz.read(path, ReadOptions())
    for tensor in model.tensors:
        np.testing.assert_array_equal(tensor.read(), arrays[tensor.name])
    model.close()


def test_highly_compressible_member_opens(tmp_path: Path) -> None:
    """Zeros deflate ~1000:1, inside MAX_ZIP_RATIO: a real file, not a bomb."""
    path = tmp_path / "zeros.npz"
    np.savez_compressed(path, z=np.zeros(2**22, dtype=np.float32))
    model = npz.read(path, ReadOptions())
    pieces = list(model.tensors[0].iter_chunks(2**20))
    assert len(pieces) == 16 and all(not p.any() for p in pieces)
    model.close()


def test_member_reader_streams_in_small_pieces(tmp_path: Path) -> None:
    payload = np.random.default_rng(1).bytes(100_000)
    for method in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
        path = make_zip(tmp_path / f"s{method}.zip", [("m.bin", payload)], method)
        with SafeZip(path) as archive:
            member = archive.member("m.bin")
            if member.stored:
                raw = path.read_bytes()
                start = member.data_offset
                assert raw[start : start + member.size] == payload
            with archive.open("m.bin") as reader:
                assert b"".join(reader.iter_chunks(777)) == payload
            with (
                archive.slice("m.bin")
                if member.stored
                else archive.open("m.bin") as handle
            ):
                handle.seek(5000) if member.stored else handle.read(5000)
                assert handle.read(10) == payload[5000:5010]


@given(
    data=st.binary(max_size=5000),
    repeat=st.integers(1, 400),
    level=st.integers(0, 9),
    chunk=st.integers(1, 70_000),
)
def test_member_reader_any_chunking(
    tmp_path_factory: pytest.TempPathFactory,
    data: bytes,
    repeat: int,
    level: int,
    chunk: int,
) -> None:
    payload = data * repeat
    path = tmp_path_factory.mktemp("r") / "m.zip"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED, compresslevel=level) as z:
        z.writestr("m.bin", payload)
    with SafeZip(path) as archive, archive.open("m.bin") as reader:
        assert b"".join(reader.iter_chunks(chunk)) == payload


class _Unseekable(io.RawIOBase):
    """A write-only stream zipfile cannot seek: it then writes data descriptors."""

    def __init__(self, sink: io.BytesIO) -> None:
        self.sink = sink

    def writable(self) -> bool:
        return True

    def write(self, data: bytes) -> int:  # type: ignore[override]
        return self.sink.write(data)


def test_data_descriptor_archive_opens(tmp_path: Path) -> None:
    sink = io.BytesIO()
    buffer = io.BytesIO()
    np.save(buffer, np.arange(50, dtype="<i2"))
    with zipfile.ZipFile(_Unseekable(sink), "w", zipfile.ZIP_DEFLATED) as archive:
        with archive.open("a.npy", "w") as member:
            member.write(buffer.getvalue())
    path = tmp_path / "dd.npz"
    path.write_bytes(sink.getvalue())
    assert struct.unpack_from("<H", path.read_bytes(), 6)[0] & 0x8  # descriptor
    model = npz.read(path, ReadOptions())
    np.testing.assert_array_equal(model.tensors[0].read(), np.arange(50))
    model.close()


def test_cli_refuses_with_exit_2_and_json(tmp_path: Path, run_cli: Any) -> None:
    """Through the command line: one-line error, exit 2, a JSON error document."""
    traversal = make_zip(tmp_path / "t.npz", [("../x.npy", NPY_F4)])
    pickled = tmp_path / "o.npz"
    np.savez(pickled, a=np.array([None, {}], dtype=object))
    bomb = make_zip(tmp_path / "b.npz", [("a.npy", NPY_F4)], zipfile.ZIP_DEFLATED)
    _set_declared_size(bomb, 2**31)
    cases = {traversal: "refused", pickled: "refused", bomb: "refused"}
    for path, kind in cases.items():
        result = run_cli("inspect", path, "--json")
        assert result.exit_code == 2, result
        assert json.loads(result.stdout)["error"]["kind"] == kind
        assert "error:" in result.stderr and len(result.stderr.splitlines()) == 1
