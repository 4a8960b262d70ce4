"""The fast CRC-32 and base64 give exactly what the standard library gives."""

from __future__ import annotations

import base64
import binascii
import zlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from modelconv import accel


@given(st.binary(max_size=4096), st.integers(0, 2**32 - 1))
def test_crc32_is_zlibs(data: bytes, start: int) -> None:
    assert accel.crc32(data) == zlib.crc32(data)
    assert accel.crc32(data, start) == zlib.crc32(data, start)


@given(st.binary(max_size=4096))
def test_base64_round_trips_as_the_stdlib_does(data: bytes) -> None:
    text = accel.b64encode(data)
    assert text == base64.b64encode(data)
    assert accel.b64decode_strict(text) == data


@pytest.mark.parametrize(
    "text", [b"AAA", b"AA=A", b"A===", b"AAAA\n", b"====", b"AA==AAAA", b"AA AA"]
)
def test_strict_decoding_refuses_malformed_text(text: bytes) -> None:
    with pytest.raises(binascii.Error):
        accel.b64decode_strict(text)


def test_the_fast_implementations_are_in_use() -> None:
    """The dependencies are installed with modelconv; the fallbacks are for
    platforms without their wheels."""
    assert accel.pybase64 is not None
    assert accel.crc32.__module__.startswith("isal")
