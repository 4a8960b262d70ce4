"""Properties of diff: self-identity, single-bit sensitivity, symmetry."""

from __future__ import annotations

import copy
import json
from typing import Any

import numpy as np
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from modelconv.diff import ChangeKind, TensorStatus, diff_models
from modelconv.dtypes import numpy_dtype
from modelconv.keras_config import build_architecture
from modelconv.model import ArraySource, Model, Role, Tensor

DTYPES = [
    "bool",
    "int8",
    "int32",
    "uint16",
    "uint64",
    "float16",
    "bfloat16",
    "float32",
    "float64",
    "complex64",
    "complex128",
]


@st.composite
def arrays(draw: st.DrawFn, dtype: str | None = None) -> np.ndarray:
    """Arrays of any carried dtype with arbitrary bit patterns (NaN payloads,
    -0.0, subnormals and infinities included)."""
    name = dtype or draw(st.sampled_from(DTYPES))
    shape = draw(hnp.array_shapes(min_dims=0, max_dims=3, min_side=1, max_side=5))
    target = numpy_dtype(name)
    raw = draw(
        hnp.arrays(
            np.uint8,
            int(np.prod(shape)) * target.itemsize,
            elements=st.integers(0, 255),
        )
    )
    if name == "bool":
        raw = raw & 1  # numpy bools are 0 or 1
    return raw.view(target).reshape(shape)


NAMES = st.sampled_from(
    ["dense/kernel", "dense/bias", "conv/kernel", "bn/gamma", "bn/moving_mean", "x"]
)


@st.composite
def models(draw: st.DrawFn) -> Model:
    names = draw(st.lists(NAMES, min_size=1, max_size=4, unique=True))
    tensors = []
    for name in names:
        array = draw(arrays())
        role = draw(st.sampled_from([Role.WEIGHT, Role.STATE]))
        tensors.append(_tensor(name, array, role))
    return Model(tensors=tuple(tensors))


def _tensor(name: str, array: np.ndarray, role: Role = Role.WEIGHT) -> Tensor:
    from modelconv.dtypes import dtype_name

    return Tensor(
        name,
        dtype_name(array.dtype),
        array.shape,
        role=role,
        source=ArraySource(array),
    )


@given(models())
def test_model_against_itself_is_identical(model: Model) -> None:
    result = diff_models(model, model)
    assert result.identical
    assert all(t.status is TensorStatus.SAME for t in result.tensors)


@given(models(), st.data())
def test_any_single_bit_flip_is_found_in_its_tensor(model: Model, data: Any) -> None:
    target = data.draw(st.sampled_from(model.names), label="tensor")
    original = model.tensor(target).read()
    raw = np.ascontiguousarray(original).reshape(-1).view(np.uint8).copy()
    byte = data.draw(st.integers(0, raw.size - 1), label="byte")
    bit = data.draw(st.integers(0, 7), label="bit")
    if original.dtype == np.bool_:
        bit = 0  # a bool's other bits are not part of its value
    raw[byte] ^= np.uint8(1 << bit)
    flipped = raw.view(original.dtype).reshape(original.shape)
    other = model.replace(
        tensors=tuple(
            _tensor(t.name, flipped, t.role) if t.name == target else t
            for t in model.tensors
        )
    )
    result = diff_models(model, other)
    assert result.exit_code == 1
    counted = [t for t in result.tensors if t.counts]
    assert [t.name for t in counted] == [target]
    assert counted[0].status is TensorStatus.CHANGED
    assert counted[0].mismatched == 1


def _swap_ok(forward: Any, backward: Any) -> None:
    """Every change of A→B appears in B→A with a and b (and added/removed)
    swapped. Paths name A's layer, so renamed layers' paths differ."""
    kinds = {
        ChangeKind.ADDED: ChangeKind.REMOVED,
        ChangeKind.REMOVED: ChangeKind.ADDED,
    }

    def key(kind: ChangeKind, a: Any, b: Any) -> str:
        return json.dumps([kind.value, a, b], sort_keys=True)

    flipped = sorted(
        key(kinds.get(c.kind, c.kind), c.b, c.a) for c in backward.architecture
    )
    assert sorted(key(c.kind, c.a, c.b) for c in forward.architecture) == flipped


STATUS_SWAP = {
    TensorStatus.ONLY_IN_A: TensorStatus.ONLY_IN_B,
    TensorStatus.ONLY_IN_B: TensorStatus.ONLY_IN_A,
}


def _nan_equal(x: float | None, y: float | None) -> bool:
    if x is None or y is None:
        return x is y
    return x == y or (x != x and y != y)


@st.composite
def model_pairs(draw: st.DrawFn) -> tuple[Model, Model]:
    """Two models sharing some tensor names, with related or unrelated values,
    and Keras configs that differ in units, activation and layers."""
    a_names = draw(st.lists(NAMES, min_size=0, max_size=4, unique=True))
    b_names = draw(st.lists(NAMES, min_size=0, max_size=4, unique=True))
    a_tensors, b_tensors = [], []
    for name in a_names:
        array = draw(arrays())
        a_tensors.append(_tensor(name, array))
        if name in b_names:
            how = draw(st.sampled_from(["same", "noise", "other", "cast"]))
            if how == "same":
                other = array
            elif how == "noise" and array.dtype.kind == "f":
                other = (array + np.asarray(draw(st.floats(-1, 1)))).astype(array.dtype)
            elif how == "cast" and array.dtype.kind == "f":
                other = array.astype(np.float64)
            else:
                other = draw(arrays())
            b_tensors.append(_tensor(name, other))
    b_tensors += [_tensor(n, draw(arrays())) for n in b_names if n not in a_names]
    return (
        Model(tensors=tuple(a_tensors), architecture=draw(configs())),
        Model(tensors=tuple(b_tensors), architecture=draw(configs())),
    )


@st.composite
def configs(draw: st.DrawFn) -> Any:
    layers = [
        {
            "class_name": "InputLayer",
            "config": {"batch_shape": [None, 4], "dtype": "float32", "name": "inp"},
        }
    ]
    for name in draw(st.lists(st.sampled_from(["d1", "d2", "d3"]), unique=True)):
        config: dict[str, Any] = {
            "name": name,
            "units": draw(st.sampled_from([2, 4])),
            "activation": draw(st.sampled_from(["relu", "tanh"])),
        }
        if draw(st.booleans()):
            config["use_bias"] = draw(st.booleans())
        layers.append({"class_name": "Dense", "config": config})
    return build_architecture(
        {"class_name": "Sequential", "config": {"name": "seq", "layers": layers}}
    )


@given(model_pairs())
def test_swapping_a_and_b_swaps_the_report(pair: tuple[Model, Model]) -> None:
    a, b = pair
    forward, backward = diff_models(a, b), diff_models(b, a)
    _swap_ok(forward, backward)
    renames_f = {
        (c.a, c.b) for c in forward.architecture if c.kind is ChangeKind.RENAMED
    }
    renames_b = {
        (c.b, c.a) for c in backward.architecture if c.kind is ChangeKind.RENAMED
    }
    assert renames_f == renames_b

    back = {(t.name_b, t.name_a): t for t in backward.tensors}
    assert len(back) == len(forward.tensors)
    for t in forward.tensors:
        mirror = back[(t.name_a, t.name_b)]
        assert STATUS_SWAP.get(t.status, t.status) is mirror.status
        assert _nan_equal(t.max_abs_diff, mirror.max_abs_diff)
        assert t.mismatched == mirror.mismatched
        assert (t.dtype_a, t.shape_a) == (mirror.dtype_b, mirror.shape_b)
    assert forward.identical == backward.identical


@given(model_pairs(), st.floats(0, 2))
def test_swap_symmetry_holds_with_atol(pair: tuple[Model, Model], atol: float) -> None:
    a, b = pair
    forward, backward = diff_models(a, b, atol=atol), diff_models(b, a, atol=atol)
    statuses_f = sorted(
        STATUS_SWAP.get(t.status, t.status).value for t in forward.tensors
    )
    statuses_b = sorted(t.status.value for t in backward.tensors)
    assert statuses_f == statuses_b


def test_config_strategy_is_not_trivial() -> None:
    # Guards the property above against a strategy that never differs.
    base = {
        "class_name": "Sequential",
        "config": {
            "name": "seq",
            "layers": [{"class_name": "Dense", "config": {"name": "d1", "units": 2}}],
        },
    }
    other = copy.deepcopy(base)
    other["config"]["layers"][0]["config"]["units"] = 4
    result = diff_models(
        Model(architecture=build_architecture(base)),
        Model(architecture=build_architecture(other)),
    )
    assert [(c.a, c.b) for c in result.architecture if c.counts] == [(2, 4)]


@given(
    st.data(),
    st.floats(min_value=1e-12, max_value=10),
    st.floats(min_value=0, max_value=1),
    st.booleans(),
    st.sampled_from([64, 32]),
)
def test_mismatches_agree_with_numpy_isclose(
    data: Any, atol: float, rtol: float, nan_differs: bool, width: int
) -> None:
    """With a tolerance, an element mismatches exactly where numpy's isclose
    (|a - b| <= atol + rtol * |b|, in float32 for float32 arrays) says it is
    not close."""
    values = st.one_of(
        st.floats(allow_nan=True, allow_infinity=True, width=width),
        st.sampled_from([0.0, -0.0, 1.0, 1.0 + 1e-9, 1.0 + 2**-23]),
    )
    dtype = np.float64 if width == 64 else np.float32
    size = data.draw(st.integers(1, 20))
    x = np.array(data.draw(st.lists(values, min_size=size, max_size=size)), dtype)
    y = np.array(data.draw(st.lists(values, min_size=size, max_size=size)), dtype)
    result = diff_models(
        Model(tensors=(_tensor("w", x),)),
        Model(tensors=(_tensor("w", y),)),
        atol=atol,
        rtol=rtol,
        nan_differs=nan_differs,
    ).tensors[0]
    with np.errstate(invalid="ignore", over="ignore"):
        close = np.isclose(x, y, rtol=rtol, atol=atol, equal_nan=not nan_differs)
    same_bits = x.view(f"u{x.itemsize}") == y.view(f"u{y.itemsize}")
    if nan_differs:
        # Identical bytes are equal unless they hold a NaN: a NaN always
        # differs, even from the same bits.
        nan = np.isnan(x) | np.isnan(y)
        same_bits &= ~nan
        close = (close & ~nan) | same_bits
    assert result.mismatched == int(np.count_nonzero(~close))
    expected = TensorStatus.SAME if same_bits.all() else TensorStatus.CLOSE
    if not close.all():
        expected = TensorStatus.CHANGED
    assert result.status is expected
