"""Shared test fixtures.

Hypothesis: the "ci" profile (CI=true) is thorough, "dev" is quick.
Keras and TensorFlow are imported once per session, lazily, by the fixtures
below; tests that do not use them never pay for the import.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, settings

settings.register_profile(
    "ci",
    max_examples=200,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
settings.register_profile(
    "dev",
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
settings.load_profile(
    os.environ.get("HYPOTHESIS_PROFILE", "ci" if os.environ.get("CI") else "dev")
)

# Keras 3 on the TensorFlow backend; tf_keras stays a separate package.
os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.pop("TF_USE_LEGACY_KERAS", None)

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"


@pytest.fixture(scope="session")
def fixtures_dir() -> Path:
    return FIXTURES


@dataclass(frozen=True)
class CliResult:
    exit_code: int
    stdout: str
    stderr: str


@pytest.fixture(scope="session")
def run_cli() -> Callable[..., CliResult]:
    """Run the modelconv CLI in-process; returns exit code, stdout, stderr."""
    from click.testing import CliRunner

    from modelconv.cli import main

    def run(*args: Any, input: str | None = None) -> CliResult:
        runner = CliRunner()
        result = runner.invoke(
            main, [str(a) for a in args], input=input, catch_exceptions=False
        )
        return CliResult(result.exit_code, result.stdout, result.stderr)

    return run


@pytest.fixture(scope="session")
def keras3() -> Any:
    """Keras 3 (TensorFlow backend), imported once per session."""
    keras = pytest.importorskip("keras")
    if not keras.__version__.startswith("3"):
        pytest.skip(f"Keras 3 needed, found {keras.__version__}")
    return keras


@pytest.fixture(scope="session")
def tf_keras() -> Any:
    """tf_keras (Keras 2), imported once per session."""
    return pytest.importorskip("tf_keras")


@dataclass(frozen=True)
class SavedModel:
    """One model saved by its Keras (Keras 3 or tf_keras) as legacy .h5 and
    .keras, with a probe input and the predictions on it."""

    h5: Path
    keras: Path
    x: Any
    want: Any


def _saved(model: Any, folder: Path, x: Any) -> SavedModel:
    """``model`` saved by its own Keras as m.h5 and m.keras, with its
    predictions on ``x``."""
    model.save(folder / "m.h5")
    model.save(folder / "m.keras")
    return SavedModel(
        folder / "m.h5", folder / "m.keras", x, model.predict(x, verbose=0)
    )


@pytest.fixture(scope="session")
def k3_nested_batchnorm(keras3: Any, tmp_path_factory: Any) -> SavedModel:
    """Keras 3 nested Sequential with BatchNormalization, trained one step."""
    import numpy as np
    from _keras_models import nested_batchnorm_model

    folder = tmp_path_factory.mktemp("k3_nested_batchnorm")
    model = nested_batchnorm_model(keras3)
    x = np.random.default_rng(1).normal(size=(3, 4)).astype("float32")
    return _saved(model, folder, x)


@pytest.fixture(scope="session")
def tfk_slash_names(tf_keras: Any, tmp_path_factory: Any) -> SavedModel:
    """tf_keras functional model with "/" in its layer names (as DenseNet)."""
    import numpy as np
    from _keras_models import slash_named_model

    folder = tmp_path_factory.mktemp("tfk_slash_names")
    model = slash_named_model(tf_keras)
    x = np.random.default_rng(2).normal(size=(2, 6, 6, 2)).astype("float32")
    return _saved(model, folder, x)


def _attention_probe() -> Any:
    import numpy as np

    return np.random.default_rng(3).integers(0, 20, size=(2, 5)).astype("float32")


@pytest.fixture(scope="session")
def k3_attention(keras3: Any, tmp_path_factory: Any) -> SavedModel:
    """Keras 3 MultiHeadAttention model, saved as .h5 and .keras."""
    from _keras_models import attention_model

    folder = tmp_path_factory.mktemp("k3_attention")
    model = attention_model(keras3)
    x = _attention_probe()
    return _saved(model, folder, x)


@pytest.fixture(scope="session")
def tfk_attention(tf_keras: Any, tmp_path_factory: Any) -> SavedModel:
    """tf_keras MultiHeadAttention model, saved as .h5 and .keras."""
    from _keras_models import attention_model

    folder = tmp_path_factory.mktemp("tfk_attention")
    model = attention_model(tf_keras)
    x = _attention_probe()
    return _saved(model, folder, x)
