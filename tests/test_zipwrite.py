"""The stored-zip writer: archives that zipfile, numpy and SafeZip all read."""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from modelconv import zipwrite
from modelconv.ziputil import SafeZip

names = st.text(
    st.characters(blacklist_categories=("Cs", "Cc"), blacklist_characters="/\\:"),
    min_size=1,
    max_size=20,
).filter(lambda n: n not in (".", ".."))


def _check(path: Path, members: dict[str, bytes]) -> None:
    with zipfile.ZipFile(path) as archive:
        assert archive.testzip() is None  # every CRC checks
        assert archive.namelist() == list(members)
        for name, data in members.items():
            info = archive.getinfo(name)
            assert info.compress_type == zipfile.ZIP_STORED
            assert archive.read(name) == data
    safe = SafeZip(path, 2**40)
    try:
        for name, data in members.items():
            member = safe.member(name)
            assert safe.read_at(member, 0, member.size) == data
    finally:
        safe.close()


@settings(max_examples=30, deadline=None)
@given(st.dictionaries(names, st.binary(max_size=300), max_size=5))
def test_members_read_back_with_zipfile_and_safezip(
    tmp_path_factory: pytest.TempPathFactory, members: dict[str, bytes]
) -> None:
    path = tmp_path_factory.mktemp("zip") / "a.zip"
    with zipwrite.StoredZipWriter(path) as archive:
        for name, data in members.items():
            # In uneven pieces, as tensors arrive in chunks.
            archive.write_member(name, [data[:7], memoryview(data)[7:]])
    _check(path, members)


def test_zip64_fields_where_sizes_and_offsets_need_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With the ZIP64 threshold lowered to a few bytes, every size, offset
    and the directory itself go through the ZIP64 fields and records, as a
    multi-GiB model's would."""
    monkeypatch.setattr(zipwrite, "_LIMIT", 10)
    members = {"small": b"abc", "large.npy": bytes(range(200)), "é": b"x" * 50}
    path = tmp_path / "a.zip"
    with zipwrite.StoredZipWriter(path) as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    raw = path.read_bytes()
    assert b"PK\x06\x06" in raw and b"PK\x06\x07" in raw
    _check(path, members)


def test_numpy_loads_an_npz_written_this_way(tmp_path: Path) -> None:
    from modelconv.formats.npz import npy_header_bytes

    array = np.arange(12, dtype="<f4").reshape(3, 4)
    path = tmp_path / "a.npz"
    with zipwrite.StoredZipWriter(path) as archive:
        archive.write_member(
            "w.npy",
            [npy_header_bytes(array.dtype, array.shape), array.tobytes()],
        )
    with np.load(path, allow_pickle=False) as loaded:
        assert np.array_equal(loaded["w"], array)


def test_a_file_is_copied_in_blocks(tmp_path: Path) -> None:
    source = tmp_path / "data.bin"
    data = np.random.default_rng(0).bytes(100_000)
    source.write_bytes(data)
    path = tmp_path / "a.zip"
    with zipwrite.StoredZipWriter(path) as archive:
        archive.write_file("data.bin", source, block=4096)
    _check(path, {"data.bin": data})


def test_an_error_inside_a_member_leaves_no_directory(tmp_path: Path) -> None:
    path = tmp_path / "a.zip"
    with pytest.raises(RuntimeError):
        with zipwrite.StoredZipWriter(path) as archive:
            with archive.member("m") as write:
                write(b"partial")
                raise RuntimeError("source failed")
    with pytest.raises(zipfile.BadZipFile):
        zipfile.ZipFile(path)


def test_h5py_writes_a_member_in_place(tmp_path: Path) -> None:
    """The .keras weights file is written by h5py straight into the archive;
    the member is a whole HDF5 file that h5py opens from the zip."""
    import io

    import h5py

    path = tmp_path / "a.keras"
    weights = np.arange(10_000, dtype="<f4").reshape(100, 100)
    with zipwrite.StoredZipWriter(path) as archive:
        archive.writestr("config.json", b"{}")
        with archive.member_file("model.weights.h5") as handle:
            with h5py.File(handle, "w") as h5:
                h5.create_dataset("vars/0", data=weights)
        archive.writestr("after.txt", b"last")
    with zipfile.ZipFile(path) as archive:
        assert archive.testzip() is None
        data = archive.read("model.weights.h5")
        assert archive.read("after.txt") == b"last"
    with h5py.File(io.BytesIO(data), "r") as h5:
        assert np.array_equal(h5["vars/0"][()], weights)
