"""tf.js output loads in the real TensorFlow.js and predicts what Keras does.

``tests/tfjs_node/predict.js`` loads a folder with tfjs-layers 4.22 (pure
JavaScript, CPU backend) under Node and prints its predictions. ``.ci/run``
installs it (``npm ci --prefix tests/tfjs_node``); elsewhere the tests skip
when Node or those packages are missing, and fail under CI=true instead, so
that CI cannot pass without running them.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from _keras_models import local_outputs, stored_io

from modelconv import api
from modelconv.errors import LossyConversionError

NODE_DIR = Path(__file__).resolve().parent / "tfjs_node"
FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"

# Full-model fixtures whose layers tfjs-layers builds, in every source format.
LOADABLE = [
    "k3_iris_mlp.h5",
    "k3_iris_mlp.keras",
    "k3_iris_mlp.pkl",
    "k3_functional.h5",
    "k3_functional.keras",
    "tfk_iris_mlp.h5",
    "tfk_functional.h5",
    "tfk_same_mlp.h5",
]


@pytest.fixture(scope="session")
def node() -> str:
    found = shutil.which("node")
    installed = (NODE_DIR / "node_modules" / "@tensorflow" / "tfjs-layers").is_dir()
    if found and installed:
        return found
    why = "node is not on PATH" if not found else "run npm ci --prefix tests/tfjs_node"
    if os.environ.get("CI"):
        pytest.fail(f"the TensorFlow.js check cannot run in CI: {why}")
    pytest.skip(why)


def tfjs_predict(node: str, folder: Path, inputs: list[np.ndarray]) -> list[Any]:
    request = folder.parent / "inputs.json"
    request.write_text(
        json.dumps(
            [{"shape": list(x.shape), "data": x.ravel().tolist()} for x in inputs]
        )
    )
    done = subprocess.run(
        [node, str(NODE_DIR / "predict.js"), str(folder), str(request)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    if done.returncode != 0:
        raise AssertionError(f"tf.js refused the model: {done.stderr.strip()[:2000]}")
    return [
        np.asarray(out["data"], dtype=np.float32).reshape(out["shape"])
        for out in json.loads(done.stdout)
    ]


@pytest.mark.keras
@pytest.mark.parametrize("name", LOADABLE)
def test_tfjs_output_predicts_like_keras(
    name: str, node: str, keras3: Any, tf_keras: Any, tmp_path: Path
) -> None:
    out = tmp_path / "web"
    api.convert(FIXTURES / name, out, format="tfjs", drop=("optimizer", "state"))
    stem = name.split(".")[0]
    x, _ = stored_io(stem)
    inputs = x if isinstance(x, list) else [x]
    predicted = tfjs_predict(node, out, inputs)
    want = local_outputs(stem)
    assert len(predicted) == len(want)
    for have, expected in zip(predicted, want):
        assert have.shape == expected.shape
        # tf.js sums in float32 in its own order: within 1e-6, as across Keras
        # versions, not bit for bit.
        np.testing.assert_allclose(have, expected, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize(
    ("name", "refusal", "tfjs_error"),
    [
        ("tfk_conv_lstm.h5", "reset_after", "reset_after"),
        ("k3_lambda.h5", "Lambda", "Unknown layer: Lambda"),
    ],
)
def test_layers_tfjs_cannot_build_are_refused(
    name: str, refusal: str, tfjs_error: str, node: str, tmp_path: Path
) -> None:
    """The refusal is true: forced through, tf.js itself fails on the layer."""
    out = tmp_path / "web"
    with pytest.raises(LossyConversionError, match=refusal):
        api.convert(FIXTURES / name, out, format="tfjs", drop=("optimizer", "state"))
    assert not out.exists()
    api.convert(
        FIXTURES / name,
        out,
        format="tfjs",
        drop=("optimizer", "state"),
        allow_lossy=True,
    )
    x, _ = stored_io(name.split(".")[0])
    with pytest.raises(AssertionError, match=tfjs_error):
        tfjs_predict(node, out, x if isinstance(x, list) else [x])
