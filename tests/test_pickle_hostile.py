"""Hostile pickle and joblib files, built in code, each refused with nothing run.

Every payload, if it ran, would create a sentinel file in tmp_path; each test
asserts the sentinel never appears. Each file is refused by the library with
a modelconv error and by the CLI with exit 2, one line on stderr and no
traceback.
"""

from __future__ import annotations

import io
import os
import pickle
import struct
import time
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from modelconv.errors import (
    HostileInputError,
    InputError,
    LimitExceededError,
    ModelconvError,
    UnsupportedError,
)
from modelconv.formats import joblibfmt, pickles
from modelconv.formats.base import ReadOptions
from modelconv.picklewrite import OpcodeWriter
from modelconv.unpickle import ByteStore, PickleInput, RestrictedUnpickler

# -- building blocks for hand-made streams


def s(text: str) -> bytes:
    """SHORT_BINUNICODE."""
    data = text.encode()
    return b"\x8c" + bytes([len(data)]) + data


def u(text: str) -> bytes:
    """BINUNICODE."""
    data = text.encode()
    return b"X" + struct.pack("<I", len(data)) + data


def glob(module: str, name: str) -> bytes:
    return b"c" + module.encode() + b"\n" + name.encode() + b"\n"


def stack_glob(module: str, name: str) -> bytes:
    return s(module) + s(name) + b"\x93"


P4 = b"\x80\x04"


class Reduce:
    """Pickles as func(*args): the classic payload shape."""

    def __init__(self, func: Any, *args: Any) -> None:
        self.func, self.args = func, args

    def __reduce__(self) -> Any:
        return self.func, self.args


def touch_cmd(sentinel: Path) -> str:
    return f"touch {sentinel}"


def touch_code(sentinel: Path) -> str:
    return f"open({str(sentinel)!r}, 'w').close()"


# -- the cases: each returns the file bytes, given the sentinel path

Case = Callable[[Path], bytes]
CASES: dict[str, Case] = {}


def case(name: str) -> Callable[[Case], Case]:
    def register(fn: Case) -> Case:
        CASES[name] = fn
        return fn

    return register


@case("reduce_os_system_p0")
def _(p: Path) -> bytes:
    return pickle.dumps(Reduce(os.system, touch_cmd(p)), protocol=0)


@case("reduce_os_system_p2")
def _(p: Path) -> bytes:
    return pickle.dumps(Reduce(os.system, touch_cmd(p)), protocol=2)


@case("reduce_os_system_p5")
def _(p: Path) -> bytes:
    return pickle.dumps(Reduce(os.system, touch_cmd(p)), protocol=5)


@case("subprocess_call")
def _(p: Path) -> bytes:
    import subprocess

    return pickle.dumps(Reduce(subprocess.call, ["touch", str(p)]), protocol=4)


@case("eval_nested_in_containers")
def _(p: Path) -> bytes:
    payload = Reduce(eval, touch_code(p))
    benign = {"weights": np.zeros(3, "f4"), "deep": [1, {"x": (2, [payload])}]}
    return pickle.dumps(benign, protocol=4)


@case("exec_in_a_list")
def _(p: Path) -> bytes:
    return pickle.dumps([1, 2, Reduce(exec, touch_code(p))], protocol=3)


@case("protocol0_global_reduce")
def _(p: Path) -> bytes:
    return b"cos\nsystem\n(S'" + touch_cmd(p).encode() + b"'\ntR."


@case("protocol0_inst")
def _(p: Path) -> bytes:
    return b"(S'" + touch_cmd(p).encode() + b"'\nios\nsystem\n."


@case("obj_opcode")
def _(p: Path) -> bytes:
    return b"(cos\nsystem\nS'" + touch_cmd(p).encode() + b"'\no."


@case("memo_stored_global_reused")
def _(p: Path) -> bytes:
    # The global is stored in the memo, popped, then fetched back and called.
    return (
        P4
        + stack_glob("posix", "system")
        + b"\x94"  # MEMOIZE as 0
        + b"0"  # POP
        + b"h\x00"  # BINGET 0
        + s(touch_cmd(p))
        + b"\x85R."
    )


@case("stack_global_names_from_memo")
def _(p: Path) -> bytes:
    # Module and name strings come from memo slots filled far earlier.
    return (
        P4
        + s("os")
        + b"\x94"
        + s("system")
        + b"\x94"
        + b"00"
        + b"h\x00h\x01\x93"
        + s(touch_cmd(p))
        + b"\x85R."
    )


@case("stack_global_non_string_operands")
def _(p: Path) -> bytes:
    return P4 + b"K\x01K\x02\x93" + s(touch_cmd(p)) + b"\x85R."


@case("getattr_chain_import")
def _(p: Path) -> bytes:
    # getattr(__import__("os"), "system")(cmd)
    return (
        P4
        + stack_glob("builtins", "getattr")
        + stack_glob("builtins", "__import__")
        + s("os")
        + b"\x85R"
        + s("system")
        + b"\x86R"
        + s(touch_cmd(p))
        + b"\x85R."
    )


@case("getattr_on_an_allowed_global")
def _(p: Path) -> bytes:
    # Both globals are allow-listed, but getattr is read only in the Keras shape.
    return (
        P4
        + stack_glob("builtins", "getattr")
        + stack_glob("numpy", "ndarray")
        + s("__class__")
        + b"\x86R."
    )


@case("keras_shape_with_foreign_class")
def _(p: Path) -> bytes:
    archive = b"PK\x03\x04" + b"\0" * 64
    return (
        P4
        + stack_glob("builtins", "getattr")
        + stack_glob("evil.models", "Sequential")
        + s("_unpickle_model")
        + b"\x86R"
        + stack_glob("_io", "BytesIO")
        + b")\x81"
        + b"B"
        + struct.pack("<I", len(archive))
        + archive
        + b"K\x00N\x87b\x85R."
    )


@case("keras_class_with_other_method")
def _(p: Path) -> bytes:
    return (
        P4
        + stack_glob("builtins", "getattr")
        + stack_glob("keras.src.models.sequential", "Sequential")
        + s("from_config")
        + b"\x86R"
        + b"}\x85R."
    )


@case("dotted_attribute_name")
def _(p: Path) -> bytes:
    return (
        P4
        + stack_glob("numpy", "testing._private.utils.os.system")
        + s(touch_cmd(p))
        + b"\x85R."
    )


@case("dotted_name_on_allowed_module")
def _(p: Path) -> bytes:
    return P4 + stack_glob("collections", "OrderedDict.__init__.__globals__") + b"."


@case("numpy_load_gadget")
def _(p: Path) -> bytes:
    return P4 + stack_glob("numpy", "load") + s("/tmp/evil.npy") + b"\x85R."


@case("numpy_testing_runstring_gadget")
def _(p: Path) -> bytes:
    return (
        P4
        + stack_glob("numpy.testing._private.utils", "runstring")
        + s(touch_code(p))
        + b"}\x86R."
    )


@case("payload_after_benign_pickle")
def _(p: Path) -> bytes:
    return pickle.dumps({"a": 1}, protocol=4) + pickle.dumps(
        Reduce(os.system, touch_cmd(p)), protocol=4
    )


@case("payload_after_first_joblib_array")
def _(p: Path) -> bytes:
    from modelconv.model import ArraySource, Tensor

    out = io.BytesIO()
    w = OpcodeWriter(out)
    w.start()
    w.raw(b"}")
    w.value("a")
    tensor = Tensor("a", "float32", (4,), source=ArraySource(np.ones(4, "f4")))
    w.joblib_array(tensor, True)
    w.raw(b"s")
    w.value("b")
    w.global_("os", "system")
    w.value(touch_cmd(p))
    w.raw(b"\x85Rs.")
    return out.getvalue()


@case("ext1_opcode")
def _(p: Path) -> bytes:
    return P4 + b"\x82\x01" + s(touch_cmd(p)) + b"\x85R."


@case("ext2_opcode")
def _(p: Path) -> bytes:
    return P4 + b"\x83\x01\x02" + b"."


@case("ext4_opcode")
def _(p: Path) -> bytes:
    return P4 + b"\x84\x01\x02\x03\x04" + b"."


@case("persistent_id")
def _(p: Path) -> bytes:
    return b"P" + touch_cmd(p).encode() + b"\n."


@case("binpersid")
def _(p: Path) -> bytes:
    return P4 + s("payload") + b"Q."


@case("newobj_ex")
def _(p: Path) -> bytes:
    return P4 + stack_glob("os", "system") + b")}\x92."


@case("out_of_band_buffer")
def _(p: Path) -> bytes:
    return b"\x80\x05\x97."


@case("memo_index_2_31")
def _(p: Path) -> bytes:
    return (
        P4
        + b"K\x01r"
        + struct.pack("<I", 2**31)
        + b"j"
        + struct.pack("<I", 2**31)
        + b"."
    )


@case("binbytes8_16_gib")
def _(p: Path) -> bytes:
    return P4 + b"\x8e" + struct.pack("<Q", 16 * 2**30) + b"\0" * 32 + b"."


@case("binunicode8_huge")
def _(p: Path) -> bytes:
    return P4 + b"\x8d" + struct.pack("<Q", 2**62) + b"abc."


@case("long4_huge")
def _(p: Path) -> bytes:
    return P4 + b"\x8b" + struct.pack("<i", 2**30) + b"\0" * 16 + b"."


@case("array_declares_more_than_its_data")
def _(p: Path) -> bytes:
    return (
        P4
        + glob("numpy.core.multiarray", "_reconstruct")
        + glob("numpy", "ndarray")
        + b"K\x00\x85C\x01b\x87R"
        + b"(K\x01(J\x00\xca\x9a\x3bt"  # shape (10**9,)
        + glob("numpy", "dtype")
        + s("<f8")
        + b"\x85R\x89C\x08"
        + b"\0" * 8
        + b"tb."
    )


@case("joblib_array_declares_more_than_the_file")
def _(p: Path) -> bytes:
    out = io.BytesIO()
    w = OpcodeWriter(out)
    w.start()
    w.global_("joblib.numpy_pickle", "NumpyArrayWrapper")
    w.raw(b")\x81}")
    w.value("subclass")
    w.global_("numpy", "ndarray")
    w.raw(b"s")
    w.value("shape")
    w.shape((2**40,))
    w.raw(b"s")
    w.value("order")
    w.value("C")
    w.raw(b"s")
    w.value("dtype")
    w.dtype("float64")
    w.raw(b"sb")
    w.raw(b"\0" * 64 + b".")
    return out.getvalue()


@case("old_ndarraywrapper_pointing_up")
def _(p: Path) -> bytes:
    return (
        P4
        + stack_glob("joblib.numpy_pickle", "NDArrayWrapper")
        + b")\x81}"
        + s("filename")
        + s("../../../etc/passwd")
        + b"s"
        + s("subclass")
        + stack_glob("numpy", "ndarray")
        + b"sb."
    )


@case("copyreg_reconstructor_of_foreign_class")
def _(p: Path) -> bytes:
    return (
        glob("copy_reg", "_reconstructor")
        + b"("
        + glob("os", "_wrap_close")
        + glob("__builtin__", "object")
        + b"NtR."
    )


@case("builtins_import")
def _(p: Path) -> bytes:
    return P4 + stack_glob("builtins", "__import__") + s("os") + b"\x85R."


@case("truncated_mid_string")
def _(p: Path) -> bytes:
    return P4 + b"X" + struct.pack("<I", 1000) + b"short"


@case("not_an_opcode_after_proto")
def _(p: Path) -> bytes:
    return P4 + b"\xff\xfe."


@case("joblib_object_array")
def _(p: Path) -> bytes:
    out = io.BytesIO()
    w = OpcodeWriter(out)
    w.start()
    w.global_("joblib.numpy_pickle", "NumpyArrayWrapper")
    w.raw(b")\x81}(")
    w.value("subclass")
    w.global_("numpy", "ndarray")
    w.value("shape")
    w.shape((1,))
    w.value("order")
    w.value("C")
    w.value("dtype")
    w.global_("numpy", "dtype")
    w.value("O8")
    w.raw(b"\x85R")
    w.raw(b"ub")
    w.raw(pickle.dumps(np.array([Reduce(os.system, touch_cmd(p))], dtype=object)))
    w.raw(b".")
    return out.getvalue()


@case("frombuffer_order_is_a_list")
def _(p: Path) -> bytes:
    # An unhashable order once escaped as a TypeError from the _ORDER lookup.
    return (
        P4
        + stack_glob("numpy._core.numeric", "_frombuffer")
        + b"(C\x04\0\0\0\0"
        + s("<f4")
        + b"K\x01\x85]tR."
    )


@case("joblib_order_is_a_dict")
def _(p: Path) -> bytes:
    return (
        P4
        + stack_glob("joblib.numpy_pickle", "NumpyArrayWrapper")
        + b")\x81}("
        + s("subclass")
        + stack_glob("numpy", "ndarray")
        + s("shape")
        + b"K\x01\x85"
        + s("order")
        + b"}"
        + s("dtype")
        + s("<f4")
        + b"ub"
        + b"\0" * 4
        + b"."
    )


@case("numpy_str_scalar_beyond_unicode")
def _(p: Path) -> bytes:
    # numpy raises SystemError (an internal error, exit 3) for such a scalar.
    return (
        P4
        + stack_glob("numpy._core.multiarray", "scalar")
        + stack_glob("numpy", "dtype")
        + s("<U1")
        + b"\x85R"
        + b"C\x04\xff\xff\xff\xff"
        + b"\x86R."
    )


@case("payload_after_first_joblib_array_zlib")
def _(p: Path) -> bytes:
    return zlib.compress(CASES["payload_after_first_joblib_array"](p))


def _zlib_bomb(p: Path) -> bytes:
    # 64 MiB of zeros in ~64 KiB; not a pickle once decompressed.
    encoder = zlib.compressobj(9)
    chunk = b"\0" * (1 << 20)
    return b"".join(encoder.compress(chunk) for _ in range(64)) + encoder.flush()


CASES["zlib_bomb_of_zeros"] = _zlib_bomb


@case("zlib_bomb_declaring_a_terabyte")
def _(p: Path) -> bytes:
    stream = P4 + b"\x8e" + struct.pack("<Q", 2**40) + b"\0" * (1 << 20)
    return zlib.compress(stream, 9)


# -- helpers


def refused(data: bytes, tmp_path: Path, name: str = "payload.pkl") -> Exception:
    sentinel = tmp_path / "sentinel"
    path = tmp_path / name
    path.write_bytes(data)
    with pytest.raises(ModelconvError) as info:
        with pickles.read(path, ReadOptions()) as model:
            for tensor in model.tensors:
                tensor.read()
    assert not sentinel.exists()
    return info.value


@pytest.mark.parametrize("name", sorted(CASES))
def test_hostile_file_is_refused_and_nothing_runs(name: str, tmp_path: Path) -> None:
    sentinel = tmp_path / "sentinel"
    data = CASES[name](sentinel)
    error = refused(data, tmp_path)
    assert isinstance(error, InputError), error
    assert "\n" not in str(error)


@pytest.mark.parametrize(
    "name",
    [
        "reduce_os_system_p0",
        "reduce_os_system_p2",
        "protocol0_global_reduce",
        "protocol0_inst",
        "obj_opcode",
        "memo_stored_global_reused",
        "stack_global_names_from_memo",
        "getattr_chain_import",
        "dotted_attribute_name",
        "numpy_load_gadget",
        "numpy_testing_runstring_gadget",
        "payload_after_first_joblib_array",
        "keras_shape_with_foreign_class",
        "old_ndarraywrapper_pointing_up",
        "eval_nested_in_containers",
    ],
)
def test_refusal_is_hostile_and_names_the_global(name: str, tmp_path: Path) -> None:
    error = refused(CASES[name](tmp_path / "sentinel"), tmp_path)
    assert isinstance(error, HostileInputError)
    assert "offset" in str(error)


# Gadgets from public scanner bypasses (picklescan, modelscan, fickling
# write-ups) and look-alike names: none is on the allow-list, each must be
# named in the refusal.
GADGETS = [
    ("operator", "attrgetter"),
    ("_operator", "methodcaller"),
    ("functools", "partial"),
    ("runpy", "_run_code"),
    ("pdb", "Pdb"),
    ("bdb", "Bdb"),
    ("code", "InteractiveInterpreter"),
    ("timeit", "timeit"),
    ("pip._internal", "main"),
    ("ctypes", "CDLL"),
    ("importlib", "import_module"),
    ("webbrowser", "open"),
    ("pydoc", "pipepager"),
    ("numpy.f2py.crackfortran", "myeval"),
    ("numpy.lib.npyio", "load"),
    ("torch._utils", "_rebuild_tensor_v2"),
    ("torch.serialization", "load"),
    ("copyreg", "__newobj__"),
    ("builtins", "object.__reduce_ex__"),
    ("os ", "system"),
    ("builtins\n", "eval"),
    ("nt", "system"),
    ("\uff4f\uff53", "system"),  # fullwidth 'os'
    ("numpy\x00", "ndarray"),
    ("numpy.core", "multiarray._reconstruct"),
]


@pytest.mark.parametrize("module, name", GADGETS)
def test_scanner_bypass_gadgets_are_refused_by_name(
    module: str, name: str, tmp_path: Path
) -> None:
    call = stack_glob(module, name) + s(touch_cmd(tmp_path / "sentinel")) + b"\x85R."
    error = refused(P4 + call, tmp_path)
    assert isinstance(error, HostileInputError)
    assert f"{module}.{name}" in str(error)


def test_every_offender_is_listed_with_its_offset(tmp_path: Path) -> None:
    data = pickle.dumps(
        [Reduce(os.system, "x"), Reduce(eval, "1"), {"k": Reduce(exec, "2")}],
        protocol=4,
    )
    message = str(refused(data, tmp_path))
    for name in ("posix.system", "builtins.eval", "builtins.exec"):
        assert name in message
    assert message.count("offset") >= 3


def test_specific_refusals_say_why(tmp_path: Path) -> None:
    cases = {
        "old_ndarraywrapper_pointing_up": "companion",
        "payload_after_benign_pickle": "after its STOP",
        "memo_index_2_31": "memo index",
        "binbytes8_16_gib": "17179869184 bytes",
        "array_declares_more_than_its_data": "carries 8 bytes",
        "out_of_band_buffer": "out-of-band",
        "ext1_opcode": "extension code",
    }
    for name, words in cases.items():
        sub = tmp_path / name
        sub.mkdir()
        assert words in str(refused(CASES[name](sub / "sentinel"), sub)), name


def test_zlib_bomb_stops_at_the_first_bad_opcode_quickly(tmp_path: Path) -> None:
    path = tmp_path / "bomb.joblib"
    path.write_bytes(_zlib_bomb(tmp_path / "sentinel"))
    start = time.perf_counter()
    with pytest.raises(InputError, match="not a pickle opcode"):
        joblibfmt.read(path, ReadOptions())
    assert time.perf_counter() - start < 2


def test_compressed_declared_size_beyond_max_bytes_is_refused(tmp_path: Path) -> None:
    stream = P4 + b"\x8e" + struct.pack("<Q", 8 << 20) + b"\0" * (8 << 20) + b"."
    path = tmp_path / "big.joblib"
    path.write_bytes(zlib.compress(stream))
    with pytest.raises(LimitExceededError, match="max-bytes"):
        joblibfmt.read(path, ReadOptions(max_bytes=1 << 20))


def doubling_stream(levels: int, as_dict_key: bool = False) -> bytes:
    """t0 = (); t[i+1] = (t[i], t[i]): 2**levels leaves if expanded."""
    out = bytearray(P4 + b")\x94")  # memo 0 = ()
    for i in range(levels):
        out += b"j" + struct.pack("<I", i) + b"j" + struct.pack("<I", i)
        out += b"\x86\x94"  # TUPLE2, MEMOIZE as i + 1
    if as_dict_key:
        out += b"}" + b"j" + struct.pack("<I", levels) + b"K\x01s"
    else:
        out += b"}" + s("tree") + b"j" + struct.pack("<I", levels) + b"s"
    return bytes(out + b".")


def test_doubling_shared_references_take_linear_time(tmp_path: Path) -> None:
    # 2**30 and 2**150 nodes if expanded; each shared tuple is visited once.
    for levels in (30, 150):
        path = tmp_path / f"doubling{levels}.pkl"
        path.write_bytes(doubling_stream(levels))
        start = time.perf_counter()
        with pickles.read(path, ReadOptions()) as model:
            assert model.tensors == ()
            assert len(model.metadata["values"]) <= levels + 2
        assert time.perf_counter() - start < 1.0


def test_doubling_beyond_the_depth_limit_is_refused_quickly(tmp_path: Path) -> None:
    path = tmp_path / "doubling.pkl"
    path.write_bytes(doubling_stream(5000))
    start = time.perf_counter()
    with pytest.raises(LimitExceededError, match="deeper"):
        pickles.read(path, ReadOptions())
    assert time.perf_counter() - start < 2.0


def test_doubling_tuple_as_a_dict_key_is_refused_without_hashing(
    tmp_path: Path,
) -> None:
    path = tmp_path / "key.pkl"
    path.write_bytes(doubling_stream(40, as_dict_key=True))
    start = time.perf_counter()
    with pytest.raises(InputError, match="dict key"):
        pickles.read(path, ReadOptions())
    assert time.perf_counter() - start < 1.0


def colliding_keys_stream(count: int) -> bytes:
    """A dict of ``count`` distinct ints that all share one hash (i * (2**61-1))."""
    modulus = 2**61 - 1
    keys = b"".join(
        b"\x8a\x0a" + (i * modulus).to_bytes(10, "little", signed=True) + b"N"
        for i in range(1, count + 1)
    )
    return P4 + b"}(" + keys + b"u."


def test_hash_colliding_dict_keys_are_refused_in_linear_time(tmp_path: Path) -> None:
    # 40 000 colliding keys took about ten seconds to insert before the cap;
    # the budget stops the flood after 10 000, well under a second.
    path = tmp_path / "collide.pkl"
    path.write_bytes(colliding_keys_stream(40_000))
    start = time.perf_counter()
    with pytest.raises(LimitExceededError, match="collide"):
        pickles.read(path, ReadOptions())
    assert time.perf_counter() - start < 2.0


def test_a_few_large_int_and_tuple_keys_still_read(tmp_path: Path) -> None:
    value = {2**70: 1, (1, "a"): 2, 3 + 4j: 3, -1: 4}
    path = tmp_path / "keys.pkl"
    path.write_bytes(colliding_keys_stream(100))
    with pickles.read(path, ReadOptions()) as model:
        assert len(model.metadata["values"]) == 100
    path.write_bytes(pickle.dumps({"keys": value}, protocol=4))
    with pickles.read(path, ReadOptions()) as model:
        assert model.metadata["values"]["keys/(1, 'a')"] == 2
        assert len(model.metadata["values"]) == 4


def same_name_tree(depth: int) -> bytes:
    """2**depth paths x/x/.../x (str or bytes key at each level), one shared array."""
    array = pickle.dumps(np.zeros(1, "f4"), protocol=4)[2:-1]
    node = b"h\x64"  # BINGET 100: the array
    for _ in range(depth):
        node = b"}(" + s("x") + node + b"C\x01x" + node + b"u"
    return P4 + array + b"q\x640" + node + b"."  # BINPUT 100, POP


def test_many_paths_with_one_name_take_linear_time(tmp_path: Path) -> None:
    # Each clash once rescanned every earlier suffix: 8192 tensors named
    # x/x/.../x took about seven seconds.
    path = tmp_path / "names.pkl"
    path.write_bytes(same_name_tree(13))
    start = time.perf_counter()
    with pickles.read(path, ReadOptions()) as model:
        names = [tensor.name for tensor in model.tensors]
    assert time.perf_counter() - start < 1.5
    assert len(names) == len(set(names)) == 2**13


def test_structure_budget_is_enforced() -> None:
    data = pickle.dumps(["x" * 1000], protocol=4)
    big = pickle.dumps([f"{i:0100d}" for i in range(100)], protocol=4)
    for payload, ok in ((data, True), (big, False)):
        stream = PickleInput(
            io.BytesIO(payload), ByteStore(io.BytesIO(payload), "t"), size=len(payload)
        )
        machine = RestrictedUnpickler(stream, max_structure=5000)
        if ok:
            machine.load()
        else:
            with pytest.raises(LimitExceededError, match="non-array part"):
                machine.load()


def test_object_budget_is_enforced() -> None:
    payload = P4 + b"]" + b"(" + b"N" * 1000 + b"e."
    stream = PickleInput(
        io.BytesIO(payload), ByteStore(io.BytesIO(payload), "t"), size=len(payload)
    )
    with pytest.raises(LimitExceededError, match="objects"):
        RestrictedUnpickler(stream, max_objects=500).load()


def test_old_tf_keras_tar_pickle_is_refused_by_name(tmp_path: Path) -> None:
    import tarfile

    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        info = tarfile.TarInfo("saved_model.pb")
        info.size = 4
        tar.addfile(info, io.BytesIO(b"\0\0\0\0"))
    archive = buffer.getvalue()
    data = (
        P4
        + stack_glob("keras.saving.pickle_utils", "deserialize_model_from_bytecode")
        + b"\x8e"
        + struct.pack("<Q", len(archive))
        + archive
        + b"\x85R."
    )
    error = refused(data, tmp_path)
    assert isinstance(error, UnsupportedError)
    assert "tf.keras 2.7-2.12" in str(error)


@pytest.mark.parametrize("name", sorted(CASES))
def test_cli_refuses_with_exit_2_and_one_line(
    name: str, tmp_path: Path, run_cli: Any
) -> None:
    sentinel = tmp_path / "sentinel"
    suffix = ".joblib" if "joblib" in name or "zlib" in name else ".pkl"
    path = tmp_path / f"payload{suffix}"
    path.write_bytes(CASES[name](sentinel))
    result = run_cli("inspect", path)
    assert result.exit_code == 2, (result.stdout, result.stderr)
    assert "Traceback" not in result.stderr + result.stdout
    assert len(result.stderr.strip().splitlines()) == 1
    assert not sentinel.exists()


@pytest.mark.parametrize(
    "data",
    [
        # _reconstruct without the BUILD that gives it data
        P4
        + glob("numpy.core.multiarray", "_reconstruct")
        + glob("numpy", "ndarray")
        + b"K\x00\x85C\x01b\x87R.",
        # shape (0, 2**62, 2**62): no data, yet numpy cannot make the array
        P4
        + glob("numpy.core.multiarray", "_reconstruct")
        + glob("numpy", "ndarray")
        + b"K\x00\x85C\x01b\x87R"
        + b"(K\x01(K\x00"
        + (b"\x8a\x08" + (2**62).to_bytes(8, "little")) * 2
        + b"t"
        + glob("numpy", "dtype")
        + s("<f4")
        + b"\x85R\x89C\x00tb.",
        # a '<U1' array whose code point is beyond Unicode
        pickle.dumps(np.array(["a"]), protocol=4).replace(
            b"a\x00\x00\x00", b"\xff" * 4
        ),
    ],
)
def test_damaged_arrays_found_by_fuzzing_are_input_errors(
    data: bytes, tmp_path: Path
) -> None:
    error = refused(data, tmp_path)
    assert isinstance(error, InputError)
