"""The restricted unpickler on streams made by the real pickle module."""

from __future__ import annotations

import collections
import io
import pickle
import struct

import numpy as np
import pytest

from modelconv.errors import HostileInputError, InputError, UnsupportedError
from modelconv.unpickle import (
    LAZY_MIN_BYTES,
    ArrayRef,
    ByteStore,
    Opaque,
    PickleInput,
    RestrictedUnpickler,
    Span,
    allowed_kind,
)


def decode(data: bytes, **limits: int) -> object:
    handle = io.BytesIO(data)
    stream = PickleInput(handle, ByteStore(handle, "test"), size=len(data))
    return RestrictedUnpickler(stream, **limits).load().root


def plain(value: object) -> object:
    """Decoded value → ordinary Python, with arrays materialised."""
    if isinstance(value, ArrayRef):
        return value.to_numpy() if value.values is None else value.values
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(plain(v) for v in value)
    return value


ARRAYS = {
    "f32": np.arange(12, dtype="float32").reshape(3, 4),
    "big_endian": np.arange(5, dtype=">i4"),
    "fortran": np.asfortranarray(np.arange(6, dtype="float64").reshape(2, 3)),
    "bool": np.array([True, False, True]),
    "f16": np.array([1.5, -2.0], dtype="float16"),
    "c128": np.array([1 + 2j], dtype="complex128"),
    "u64": np.array([2**64 - 1], dtype="uint64"),
    "zero_d": np.array(7, dtype="int8"),
    "empty": np.zeros((0, 3), dtype="float32"),
    "labels": np.array(["cat", "dog"]),
    "big": np.arange(LAZY_MIN_BYTES, dtype="float32"),  # referenced lazily
}


@pytest.mark.parametrize("protocol", range(6))
def test_arrays_decode_exactly_at_every_protocol(protocol: int) -> None:
    decoded = decode(pickle.dumps(ARRAYS, protocol=protocol))
    assert isinstance(decoded, dict)
    for name, want in ARRAYS.items():
        got = plain(decoded[name])
        assert isinstance(got, np.ndarray)
        assert got.dtype == want.dtype and got.shape == want.shape, name
        assert got.tobytes() == want.tobytes(), name


def test_large_data_is_a_span_not_read_during_decoding() -> None:
    data = pickle.dumps({"big": ARRAYS["big"]}, protocol=4)
    decoded = decode(data)
    ref = decoded["big"]  # type: ignore[index]
    assert isinstance(ref, ArrayRef) and isinstance(ref.data, Span)
    assert ref.data.length == ARRAYS["big"].nbytes


@pytest.mark.parametrize("protocol", [0, 1, 2, 3])
def test_numpy1_module_paths(protocol: int) -> None:
    data = pickle.dumps(ARRAYS, protocol=protocol)
    data = data.replace(b"numpy._core", b"numpy.core")
    assert b"numpy.core.multiarray" in data
    decoded = decode(data)
    got = plain(decoded["f32"])  # type: ignore[index]
    assert np.array_equal(got, ARRAYS["f32"])  # type: ignore[arg-type]


def test_scalars_containers_and_numpy_scalars() -> None:
    value = {
        "int": 2**70,
        "neg": -5,
        "float": 1.5,
        "none": None,
        "flags": (True, False),
        "bytes": b"\x00\x01",
        "text": "h\u00e9llo",
        "set": {1, 2},
        "frozen": frozenset({"a"}),
        "ordered": collections.OrderedDict([("b", 1), ("a", 2)]),
        "np_float": np.float64(2.5),
        "np_int": np.int32(-3),
        "complex": 1 + 2j,
        "bytearray": bytearray(b"xyz"),
    }
    for protocol in range(6):
        decoded = decode(pickle.dumps(value, protocol=protocol))
        assert isinstance(decoded, dict)
        for key in ("int", "neg", "float", "none", "flags", "text", "complex"):
            assert decoded[key] == value[key], (protocol, key)
        assert decoded["set"] == {1, 2}
        assert decoded["frozen"] == frozenset({"a"})
        assert list(decoded["ordered"].items()) == [("b", 1), ("a", 2)]
        assert decoded["np_float"] == 2.5 and decoded["np_int"] == -3
        assert bytes(decoded["bytes"]) == b"\x00\x01"
        assert bytes(decoded["bytearray"]) == b"xyz"


def test_shared_references_stay_shared() -> None:
    shared = np.arange(3.0)
    decoded = decode(pickle.dumps({"a": shared, "b": shared}, protocol=4))
    assert decoded["a"] is decoded["b"]  # type: ignore[index]


def test_object_array_of_plain_values_is_kept_as_values() -> None:
    values = np.array(["x", 1, None], dtype=object)
    decoded = decode(pickle.dumps(values, protocol=4))
    assert isinstance(decoded, ArrayRef) and decoded.values == ["x", 1, None]


def test_object_array_holding_an_object_is_refused() -> None:
    values = np.array([collections.OrderedDict()], dtype=object)
    with pytest.raises(UnsupportedError, match="holds a dict"):
        decode(pickle.dumps(values, protocol=4))
    values = np.array([collections.Counter], dtype=object)
    with pytest.raises(HostileInputError, match="collections.Counter"):
        decode(pickle.dumps(values, protocol=4))


def test_structured_and_datetime_dtypes_are_refused() -> None:
    with pytest.raises(UnsupportedError):
        decode(pickle.dumps(np.zeros(2, dtype=[("a", "i4")]), protocol=4))
    with pytest.raises(UnsupportedError):
        decode(pickle.dumps(np.zeros(2, dtype="M8[s]"), protocol=4))


def test_sklearn_like_records_are_opaque_and_never_built() -> None:
    from sklearn.preprocessing import LabelBinarizer

    binarizer = LabelBinarizer().fit(["a", "b", "c"])
    decoded = decode(pickle.dumps(binarizer, protocol=4))
    assert isinstance(decoded, Opaque)
    assert decoded.cls.name == "LabelBinarizer"
    classes = decoded.attributes["classes_"]
    assert plain(classes).tolist() == ["a", "b", "c"]  # type: ignore[union-attr]


def test_allow_list_is_exact() -> None:
    assert allowed_kind("numpy", "dtype") == "np-dtype"
    assert allowed_kind("numpy._core.multiarray", "_reconstruct") == "np-reconstruct"
    assert allowed_kind("__builtin__", "set") == "set"
    for module, name in [
        ("numpy", "load"),
        ("numpy.core.multiarray", "_reconstruct.__globals__"),
        ("builtins", "eval"),
        ("os", "system"),
        ("keras.src.models.sequential", "Sequential._unpickle_model"),
        ("joblib.numpy_pickle", "NDArrayWrapper"),
    ]:
        assert allowed_kind(module, name) is None


def test_frames_are_checked_against_the_stream() -> None:
    data = b"\x80\x04\x95" + struct.pack("<Q", 10**9) + b"N."
    with pytest.raises(InputError, match="declares 1000000000 bytes"):
        decode(data)


def test_unknown_protocol_is_refused() -> None:
    with pytest.raises(InputError, match="protocol 9"):
        decode(b"\x80\x09N.")


def test_truncated_stream_is_an_input_error() -> None:
    data = pickle.dumps(ARRAYS, protocol=4)
    for cut in (1, 10, len(data) // 2, len(data) - 1):
        with pytest.raises(InputError):
            decode(data[:cut])
