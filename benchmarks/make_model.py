"""Write a large Keras legacy HDF5 model for the benchmarks.

The file follows the layout tf_keras 2.x writes with ``model.save("x.h5")``
for a Sequential of Dense layers (root attributes ``keras_version``,
``backend``, ``model_config``; ``model_weights/<layer>/<layer>/kernel:0``), so
that Keras itself can load it for the baseline. It is written with h5py one
layer at a time, because building a multi-GiB model in Keras would need
several times its size in memory.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import h5py
import numpy as np

UNITS = 4096
LAYER_BYTES = UNITS * UNITS * 4 + UNITS * 4


def sequential_config(n_layers: int) -> dict:
    layers: list[dict] = [
        {
            "class_name": "InputLayer",
            "config": {
                "batch_input_shape": [None, UNITS],
                "dtype": "float32",
                "sparse": False,
                "ragged": False,
                "name": "input_1",
            },
        }
    ]
    for index in range(n_layers):
        layers.append(
            {
                "class_name": "Dense",
                "config": {
                    "name": f"dense_{index}",
                    "trainable": True,
                    "dtype": "float32",
                    "units": UNITS,
                    "activation": "linear",
                    "use_bias": True,
                    "kernel_initializer": {"class_name": "Zeros", "config": {}},
                    "bias_initializer": {"class_name": "Zeros", "config": {}},
                    "kernel_regularizer": None,
                    "bias_regularizer": None,
                    "activity_regularizer": None,
                    "kernel_constraint": None,
                    "bias_constraint": None,
                },
            }
        )
    return {
        "class_name": "Sequential",
        "config": {"name": "sequential", "layers": layers},
    }


def write_model(path: Path, n_layers: int, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    with h5py.File(path, "w") as f:
        f.attrs["backend"] = "tensorflow"
        f.attrs["keras_version"] = "2.21.0"
        f.attrs["model_config"] = json.dumps(sequential_config(n_layers))
        weights = f.create_group("model_weights")
        names = [f"dense_{i}" for i in range(n_layers)]
        weights.attrs["layer_names"] = np.array([n.encode() for n in names])
        weights.attrs["backend"] = "tensorflow"
        weights.attrs["keras_version"] = "2.21.0"
        for name in names:
            group = weights.create_group(name)
            group.attrs["weight_names"] = np.array(
                [f"{name}/kernel:0".encode(), f"{name}/bias:0".encode()]
            )
            inner = group.create_group(name)
            kernel = rng.standard_normal((UNITS, UNITS), dtype=np.float32)
            inner.create_dataset("kernel:0", data=kernel)
            del kernel
            inner.create_dataset(
                "bias:0", data=rng.standard_normal(UNITS, dtype=np.float32)
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("path", type=Path)
    parser.add_argument("--layers", type=int, default=16)
    args = parser.parse_args()
    write_model(args.path, args.layers)


if __name__ == "__main__":
    main()
