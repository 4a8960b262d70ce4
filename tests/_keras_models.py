"""Test helpers: small Keras models and their modelconv IR, built in memory.

The IR is what a reader produces: the model config verbatim, and tensors
with canonical ``layer/weight`` names in Keras variable order. Building it
from a live model lets the writer tests run whether or not the format
readers are present.
"""

from __future__ import annotations

import functools
import json
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from modelconv.formats import detect
from modelconv.formats.base import ReadOptions
from modelconv.keras_config import build_architecture
from modelconv.model import ArraySource, Model, Role, Tensor


def _short(variable: Any) -> str:
    return variable.name.split("/")[-1].split(":")[0]


def _layer_tensors(layer: Any, prefix: str) -> list[Tensor]:
    """Canonical tensors of one layer: ``prefix/weight``, RNN cells left out."""
    out: list[Tensor] = []
    cls = type(layer).__name__
    if cls == "Bidirectional":
        for inner in (layer.forward_layer, layer.backward_layer):
            out += _layer_tensors(inner, f"{prefix}/{inner.name}")
        return out
    if hasattr(layer, "layers") and cls in ("Sequential", "Functional", "Model"):
        for inner in layer.layers:
            out += _layer_tensors(inner, f"{prefix}/{inner.name}")
        return out
    for variable in layer.weights:
        array = np.asarray(variable.numpy())
        role = Role.WEIGHT
        out.append(
            Tensor(
                f"{prefix}/{_short(variable)}",
                str(array.dtype) if array.dtype.name != "bfloat16" else "bfloat16",
                array.shape,
                role,
                (variable.name if ":" in variable.name else variable.path,),
                ArraySource(array),
            )
        )
    return out


def model_tensors(kmodel: Any) -> list[Tensor]:
    out: list[Tensor] = []
    for layer in kmodel.layers:
        out += _layer_tensors(layer, layer.name)
    return out


def ir_from_keras3(kmodel: Any, scratch: Path) -> Model:
    """The IR a `.keras` reader gives for ``kmodel`` (config from a real save)."""
    path = scratch / "source.keras"
    kmodel.save(path)
    with zipfile.ZipFile(path) as archive:
        config = json.loads(archive.read("config.json"))
    return Model(
        tensors=model_tensors(kmodel),
        architecture=build_architecture(config),
        metadata={"producer": {"name": "keras", "version": "3.15.1"}},
        format="keras",
        flavour="keras3",
    )


def ir_from_tf_keras(kmodel: Any, backend: str = "tensorflow") -> Model:
    """The IR an HDF5 reader gives for a tf_keras model (its to_json config)."""
    config = json.loads(kmodel.to_json())
    config.pop("keras_version", None)
    config.pop("backend", None)
    return Model(
        tensors=model_tensors(kmodel),
        architecture=build_architecture(config),
        metadata={
            "producer": {"name": "keras", "version": "2.21.0"},
            "backend": backend,
        },
        format="hdf5",
        flavour="keras-model",
    )


def ir_from_config(
    config: dict,
    arrays: list[tuple[str, np.ndarray]],
    version: str = "1.2.2",
    backend: str | None = None,
) -> Model:
    metadata: dict[str, Any] = {"producer": {"name": "keras", "version": version}}
    if backend is not None:
        metadata["backend"] = backend
    return Model(
        tensors=[
            Tensor(name, str(a.dtype), a.shape, Role.WEIGHT, (name,), ArraySource(a))
            for name, a in arrays
        ],
        architecture=build_architecture(config),
        metadata=metadata,
        format="hdf5",
        flavour="keras-model",
    )


# Fixture helpers shared by the writer and down-level tests.

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"
# Pickles and joblib dumps of the same models are covered too: the readers
# recognise pickled Keras models without running anything.
SOURCE_SUFFIXES = (".h5", ".keras", ".pkl", ".joblib")


def _sources() -> list[Path]:
    found = []
    for io in sorted(FIXTURES.glob("*.io.npz")):
        stem = io.name[: -len(".io.npz")]
        for suffix in SOURCE_SUFFIXES:
            path = FIXTURES / f"{stem}{suffix}"
            if path.exists():
                found.append(path)
    return found


def stored_io(stem: str) -> tuple[Any, list[np.ndarray]]:
    """Inputs and the outputs recorded when fixture ``stem`` was made."""
    data = np.load(FIXTURES / f"{stem}.io.npz")
    xs = [data[k] for k in sorted(data.files) if k.startswith("x")]
    ys = [data[k] for k in sorted(data.files) if k.startswith("y")]
    return (xs[0] if len(xs) == 1 else xs), ys


@functools.cache
def local_outputs(stem: str) -> tuple[np.ndarray, ...]:
    """What the Keras that made fixture ``stem`` predicts here, from the file.

    Keras' float results depend on the CPU (oneDNN picks kernels by
    instruction set), so outputs recorded on the machine that made the
    fixtures can differ here in the last bit. Exact comparisons are made
    against the original file loaded by its own Keras on this machine; the
    recorded outputs are checked against these within 1e-6 elsewhere.
    """
    x, recorded = stored_io(stem)
    if stem.startswith("k3_"):
        import keras

        source = FIXTURES / f"{stem}.keras"
        if not source.exists():
            source = FIXTURES / f"{stem}.h5"
        loaded = keras.saving.load_model(source, safe_mode="lambda" not in stem)
    elif stem.startswith("tfk_"):
        import tf_keras

        loaded = tf_keras.models.load_model(FIXTURES / f"{stem}.h5")
    else:  # scikit-learn: numpy arithmetic, recorded outputs are the reference
        return tuple(recorded)
    return tuple(predict(loaded, x))


def _io(path: Path) -> tuple[Any, list[np.ndarray]]:
    """Inputs of a fixture and its original's outputs on this machine."""
    stem = path.name.split(".")[0]
    x, _ = stored_io(stem)
    return x, list(local_outputs(stem))


def read_fixture(path: Path) -> Model:
    return detect(path).load().read(path, ReadOptions())


def predict(model: Any, x: Any) -> list[np.ndarray]:
    out = model.predict(x, verbose=0)
    return [np.asarray(y) for y in (out if isinstance(out, list) else [out])]


def assert_predictions(got: list[np.ndarray], want: list[np.ndarray], exact: bool):
    assert len(got) == len(want)
    for a, b in zip(got, want):
        if exact:
            np.testing.assert_array_equal(a, b)
        else:
            np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-6)


def _is_keras3(model: Model) -> bool:
    return str(model.producer.get("version") or "").startswith("3")


def nested_batchnorm_model(keras: Any) -> Any:
    """A functional model around a Sequential holding BatchNormalization,
    trained one step with Adam: the nested model's non-trainable weights
    (moving mean and variance) sit between its trainable ones, so a legacy
    HDF5 file (trainable first) and a .keras archive (sublayer by sublayer)
    list them in different orders. Works for Keras 3 and tf_keras alike."""
    layers = keras.layers
    inner = keras.Sequential(
        [
            keras.Input((4,)),
            layers.Dense(5, activation="relu"),
            layers.BatchNormalization(),
            layers.Dense(3),
        ],
        name="inner",
    )
    x = keras.Input((4,))
    model = keras.Model(x, layers.Dense(2)(inner(x)))
    model.compile(optimizer="adam", loss="mse")
    rng = np.random.default_rng(0)
    data = rng.normal(size=(8, 4)).astype("float32")
    model.fit(data, np.zeros((8, 2), "float32"), epochs=1, verbose=0)
    return model


def slash_named_model(keras: Any) -> Any:
    """tf_keras layers named like DenseNet's (``conv1/conv``, ``conv1/bn``):
    tf.keras allows "/" in a layer name, Keras 3 refuses it."""
    layers = keras.layers
    x = keras.Input((6, 6, 2))
    y = layers.Conv2D(3, 3, name="conv1/conv")(x)
    y = layers.BatchNormalization(name="conv1/bn")(y)
    y = layers.Activation("relu", name="conv1/relu")(y)
    y = layers.GlobalAveragePooling2D(name="pool")(y)
    return keras.Model(x, layers.Dense(2, name="fc/dense")(y))


def attention_model(keras: Any) -> Any:
    """Self-attention over an embedded sequence, called as mha(x, x):
    Keras 3 records both tensors as positional arguments, tf_keras the
    second as value=. Works for Keras 3 and tf_keras alike."""
    layers = keras.layers
    x = keras.Input((5,))
    y = layers.Embedding(20, 4)(x)
    y = layers.MultiHeadAttention(num_heads=2, key_dim=3)(y, y)
    return keras.Model(x, layers.Dense(1)(layers.GlobalAveragePooling1D()(y)))
