"""Write tf.js layers models with the real tensorflowjs converter (4.22.0).

tensorflowjs does not install beside TensorFlow 2.21 (its dependencies pin
older releases), so this script loads only the converter modules it needs
from an unpacked wheel (`pip download --no-deps tensorflowjs`), without the
package __init__ files that import everything else.
Usage: python make_tfjs_real.py UNPACKED_WHEEL_DIR OUT_DIR
"""
import importlib.util, os, sys, types, json
os.environ["TF_USE_LEGACY_KERAS"] = "1"
import numpy as np
np.object = object  # write_weights.py names np.object, gone in numpy 2
wheel, out = sys.argv[1], sys.argv[2]
for pkg in ("tensorflowjs", "tensorflowjs.converters"):
    mod = types.ModuleType(pkg); mod.__path__ = [os.path.join(wheel, *pkg.split("."))]
    sys.modules[pkg] = mod
def load(name):
    spec = importlib.util.spec_from_file_location(name, os.path.join(wheel, *name.split(".")) + ".py")
    m = importlib.util.module_from_spec(spec); sys.modules[name] = m; spec.loader.exec_module(m); return m
for n in ("tensorflowjs.version", "tensorflowjs.quantization", "tensorflowjs.read_weights",
          "tensorflowjs.write_weights", "tensorflowjs.converters.common",
          "tensorflowjs.converters.keras_h5_conversion"):
    load(n)
conv = sys.modules["tensorflowjs.converters.keras_h5_conversion"]
import tf_keras
tf_keras.utils.set_random_seed(7)
inp = tf_keras.Input((4,))
x = tf_keras.layers.Dense(16, activation="relu", name="dense")(inp)
x = tf_keras.layers.BatchNormalization(name="bn")(x)
x = tf_keras.layers.Reshape((4, 4))(x)
x = tf_keras.layers.LSTM(3, name="lstm")(x)
y = tf_keras.layers.Dense(3, activation="softmax", name="out")(x)
model = tf_keras.Model(inp, y, name="tfjs_real")
model.compile("adam", "categorical_crossentropy")
os.makedirs(out, exist_ok=True)
model.save(os.path.join(out, "source.h5"))
for name, qmap, shard in [("plain", None, 256), ("uint8", {"uint8": True}, 4 * 2**20),
                          ("uint16", {"uint16": True}, 4 * 2**20), ("float16", {"float16": True}, 4 * 2**20)]:
    os.makedirs(os.path.join(out, name), exist_ok=True)
    topology, groups = conv.h5_merged_saved_model_to_tfjs_format(os.path.join(out, "source.h5"))
    conv.write_artifacts(topology, groups, os.path.join(out, name),
                         quantization_dtype_map=qmap, weight_shard_size_bytes=shard)
weights = {w.name: w.numpy() for w in model.weights}
np.savez(os.path.join(out, "expected.npz"), **{k.replace("/", "|"): v for k, v in weights.items()})
print(json.dumps({k: list(v.shape) for k, v in weights.items()}))
