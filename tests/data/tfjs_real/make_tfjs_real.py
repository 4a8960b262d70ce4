"""Write tf.js layers models with the real tensorflowjs converter (4.22.0).

tensorflowjs does not install beside TensorFlow 2.21 (its dependencies pin
older releases), so this script loads only the converter modules it needs
from an unpacked wheel (``pip download --no-deps tensorflowjs``, then unzip),
skipping the package ``__init__`` files that import everything else.

Usage: python make_tfjs_real.py UNPACKED_WHEEL_DIR OUT_DIR

Writes OUT_DIR/{plain,uint8,uint16,float16}/ (model.json + shards; plain is
cut into 256-byte shards so that tensors cross shard boundaries) and
OUT_DIR/expected.npz (the model's weights, "/" in names spelled "|").
"""

from __future__ import annotations

import importlib.util
import json
import os
import sys
import types

os.environ["TF_USE_LEGACY_KERAS"] = "1"

import numpy as np  # noqa: E402

MODULES = (
    "tensorflowjs.version",
    "tensorflowjs.quantization",
    "tensorflowjs.read_weights",
    "tensorflowjs.write_weights",
    "tensorflowjs.converters.common",
    "tensorflowjs.converters.keras_h5_conversion",
)
VARIANTS = (
    ("plain", None, 256),
    ("uint8", {"uint8": True}, 4 * 2**20),
    ("uint16", {"uint16": True}, 4 * 2**20),
    ("float16", {"float16": True}, 4 * 2**20),
)


def load_converter(wheel: str) -> types.ModuleType:
    np.object = object  # type: ignore[attr-defined]  # write_weights names it
    for package in ("tensorflowjs", "tensorflowjs.converters"):
        module = types.ModuleType(package)
        module.__path__ = [os.path.join(wheel, *package.split("."))]
        sys.modules[package] = module
    for name in MODULES:
        path = os.path.join(wheel, *name.split(".")) + ".py"
        spec = importlib.util.spec_from_file_location(name, path)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules["tensorflowjs.converters.keras_h5_conversion"]


def build_model():  # type: ignore[no-untyped-def]
    import tf_keras

    tf_keras.utils.set_random_seed(7)
    inputs = tf_keras.Input((4,))
    x = tf_keras.layers.Dense(16, activation="relu", name="dense")(inputs)
    x = tf_keras.layers.BatchNormalization(name="bn")(x)
    x = tf_keras.layers.Reshape((4, 4))(x)
    x = tf_keras.layers.LSTM(3, name="lstm")(x)
    y = tf_keras.layers.Dense(3, activation="softmax", name="out")(x)
    model = tf_keras.Model(inputs, y, name="tfjs_real")
    model.compile("adam", "categorical_crossentropy")
    return model


def main(wheel: str, out: str) -> None:
    converter = load_converter(wheel)
    model = build_model()
    os.makedirs(out, exist_ok=True)
    source = os.path.join(out, "source.h5")
    model.save(source)
    for name, quantization, shard_size in VARIANTS:
        folder = os.path.join(out, name)
        os.makedirs(folder, exist_ok=True)
        topology, groups = converter.h5_merged_saved_model_to_tfjs_format(source)
        converter.write_artifacts(
            topology,
            groups,
            folder,
            quantization_dtype_map=quantization,
            weight_shard_size_bytes=shard_size,
        )
    os.remove(source)
    weights = {w.name.replace("/", "|"): w.numpy() for w in model.weights}
    np.savez(os.path.join(out, "expected.npz"), **weights)
    print(json.dumps({k: list(v.shape) for k, v in weights.items()}))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
