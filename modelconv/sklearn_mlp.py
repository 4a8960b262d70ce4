"""scikit-learn MLPClassifier / MLPRegressor configs as an Architecture.

The config is what modelconv keeps from a pickled estimator (never
instantiated): ``estimator``, ``hidden_layer_sizes``, ``activation``,
``out_activation_``, ``n_features_in_``, ``n_outputs_``, ``classes_``,
``solver`` and ``_sklearn_version``. The layers are the dense steps between
consecutive sizes, named ``layer_<i>`` like the tensors
``layer_<i>/kernel`` (``coefs_[i]``) and ``layer_<i>/bias``
(``intercepts_[i]``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .errors import InputError
from .model import Architecture, Layer

ESTIMATORS = ("MLPClassifier", "MLPRegressor")
CONFIG_KEYS = (
    "estimator",
    "hidden_layer_sizes",
    "activation",
    "out_activation_",
    "n_features_in_",
    "n_outputs_",
    "n_layers_",
    "classes_",
    "solver",
    "_sklearn_version",
)


def layer_sizes(config: Mapping[str, Any]) -> list[int]:
    """Input width, hidden widths and output width, in order."""
    hidden = config.get("hidden_layer_sizes", [])
    if isinstance(hidden, int) and not isinstance(hidden, bool):
        hidden = [hidden]
    sizes = [config.get("n_features_in_"), *hidden, config.get("n_outputs_")]
    if not all(isinstance(s, int) and not isinstance(s, bool) and s > 0 for s in sizes):
        raise InputError(
            "scikit-learn MLP config: layer sizes "
            f"{sizes!r} are not positive integers (n_features_in_, "
            "hidden_layer_sizes, n_outputs_); the estimator was not fitted or "
            "the file is damaged"
        )
    return [int(s) for s in sizes]


def build_architecture(config: Mapping[str, Any]) -> Architecture:
    """Dense layers ``layer_0..`` with their parameter counts and totals."""
    sizes = layer_sizes(config)
    hidden_activation = config.get("activation", "relu")
    layers = []
    for index, (units_in, units_out) in enumerate(zip(sizes, sizes[1:])):
        last = index == len(sizes) - 2
        name = f"layer_{index}"
        params = units_in * units_out + units_out
        layers.append(
            Layer(
                name=name,
                class_name="Dense",
                config={
                    "units": units_out,
                    "input_dim": units_in,
                    "activation": config.get("out_activation_")
                    if last
                    else hidden_activation,
                },
                inbound=(f"layer_{index - 1}",) if index else (),
                tensor_names=(f"{name}/kernel", f"{name}/bias"),
                params=params,
                trainable_params=params,
                output_shape=[None, units_out],
                module="sklearn.neural_network",
            )
        )
    total = sum(layer.params or 0 for layer in layers)
    return Architecture(
        framework="sklearn",
        config=dict(config),
        layers=tuple(layers),
        total_params=total,
        trainable_params=total,
    )
