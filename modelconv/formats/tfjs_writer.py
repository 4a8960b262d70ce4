"""Write TensorFlow.js layers models, in the layout tfjs-converter writes.

tfjs-layers reads Keras 2 configs only, so ``prepare`` moves a Keras 3 or
Keras 1 config to the tf_keras 2.x form first (``migrate.migrate_keras2``),
which also gives every tensor its Keras 2 weight name. The layout follows
tfjs-converter 4.x (``keras_h5_conversion.write_artifacts`` and
``write_weights.write_weights``):

- one weight group; its tensors' little-endian bytes concatenated in model
  order and cut into ``group1-shard<i>of<n>.bin`` files of 4 MiB;
- manifest names are the Keras 2 HDF5 weight names without ``:0``;
- ``modelTopology`` is ``{"keras_version", "backend", "model_config",
  "training_config"?}``.

A tensor read from tf.js still in its quantised form (its dtype is the
quantisation dtype and its attrs say so) is written back quantised, with the
same ``quantization`` entry, so tf.js to tf.js keeps the bytes.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import IO, Any

from ..errors import InternalError, UnsupportedError
from ..model import Model, Role, Tensor
from .base import Loss, WriteOptions
from .tfjs import keeps_stored

# tfjs-converter's default shard size: the largest file all major browsers
# cache (write_weights.py).
SHARD_BYTES = 4 * 2**20
PLAIN_DTYPES = frozenset({"float32", "int32", "bool", "complex64"})


def prepare(model: Model, options: WriteOptions) -> Model:
    """The model with its config in the Keras 2 form tfjs-layers reads."""
    architecture = model.architecture
    if architecture is None:
        return model
    if architecture.framework != "keras":
        raise UnsupportedError(
            f"a TensorFlow.js layers model holds a Keras architecture, and this "
            f"model's is {architecture.framework}; write npz or modelconv JSON"
        )
    from ..migrate import migrate_keras2

    migrated = migrate_keras2(model)
    # The migration leaves optimizer state out; keep it so that the core
    # reports it as a loss instead of it vanishing silently.
    names = {t.name for t in migrated.tensors}
    left_out = tuple(
        t for t in model.tensors if t.role is not Role.WEIGHT and t.name not in names
    )
    tensors = (*migrated.tensors, *left_out)
    if architecture.form == 2:
        # Already the tf_keras 2.x form that tfjs-converter copies verbatim:
        # keep it byte for byte and take only the Keras 2 weight names.
        return model.replace(tensors=tensors)
    return migrated.replace(tensors=tensors)


# Metadata the model.json holds in places of its own; the rest goes to
# "userDefinedMetadata", which tfjs-converter writes from --metadata.
_PLACED = frozenset(
    {"producer", "backend", "keras_version", "training_config", "source", "tfjs"}
)


def _user_metadata(model: Model) -> dict[str, Any]:
    return {k: v for k, v in model.metadata.items() if k not in _PLACED}


def losses(model: Model, options: WriteOptions) -> list[Loss]:
    try:
        json.dumps(_user_metadata(model))
    except (TypeError, ValueError) as exc:
        return [Loss("metadata", f"tf.js model.json cannot hold the metadata ({exc})")]
    if model.architecture is None:
        return []
    return [
        Loss("architecture", f"tf.js cannot load layer {name!r}: {why}")
        for name, why in _unloadable_layers(model.architecture.config)
    ]


def _unloadable_layers(node: Any) -> Iterator[tuple[str, str]]:
    """Layers tfjs-layers 4.22 refuses to build, anywhere in a config.

    The bytes would still be written exactly, but ``tf.loadLayersModel``
    fails on these (checked with tfjs-layers 4.22.0 under Node), so the
    conversion says so instead of producing a model that cannot load.
    """
    stack = [node]
    while stack:
        item = stack.pop()
        if isinstance(item, list):
            stack.extend(item)
            continue
        if not isinstance(item, Mapping):
            continue
        cls, config = item.get("class_name"), item.get("config")
        if isinstance(config, Mapping):
            name = str(config.get("name", cls))
            if cls in ("GRU", "GRUCell") and config.get("reset_after"):
                yield (
                    name,
                    (
                        "its GRU supports reset_after=False only, and this layer "
                        "has reset_after=True (the Keras >= 2.3 default)"
                    ),
                )
            elif cls == "Lambda":
                yield name, "a Lambda holds Python code, which tf.js cannot run"
        stack.extend(v for v in item.values() if isinstance(v, (Mapping, list)))


def _quantization(tensor: Tensor) -> Mapping[str, Any] | None:
    """The tf.js quantisation a tensor still carries in its stored form."""
    if keeps_stored(tensor):
        quantization: Mapping[str, Any] = tensor.attrs["tfjs_quantization"]
        return quantization
    return None


def _weight_name(tensor: Tensor) -> str:
    for name in tensor.source_names:
        # tfjs-converter drops TensorFlow's output slot from Keras 2 names.
        if name.endswith(":0"):
            return name[:-2]
    if tensor.attrs.get("tfjs_dtype") and tensor.source_names:
        return tensor.source_names[0]
    return tensor.name


def _specs(tensors: list[Tensor], keras_names: bool) -> list[dict[str, Any]]:
    """Manifest entries. ``keras_names``: name each weight as tf.js looks it
    up in a topology (the Keras 2 weight name); without a topology nothing
    looks names up, and the canonical names come back as they were."""
    names = [_weight_name(t) if keras_names else t.name for t in tensors]
    if len(set(names)) != len(names):
        names = [t.name for t in tensors]
    specs = []
    for name, tensor in zip(names, tensors):
        quantization = _quantization(tensor)
        spec: dict[str, Any] = {"name": name, "shape": list(tensor.shape)}
        if quantization is not None:
            spec["dtype"] = str(tensor.attrs.get("tfjs_dtype", "float32"))
            spec["quantization"] = dict(quantization)
        elif tensor.dtype in PLAIN_DTYPES:
            spec["dtype"] = tensor.dtype
        else:
            raise UnsupportedError(
                f"tensor {tensor.name!r} is {tensor.dtype}; tf.js holds "
                f"{', '.join(sorted(PLAIN_DTYPES))} (cast with --cast float32)"
            )
        specs.append(spec)
    return specs


class _Shards:
    """Bytes written across fixed-size shard files, opened one at a time."""

    def __init__(self, folder: Path, total: int) -> None:
        self.folder = folder
        self.count = math.ceil(total / SHARD_BYTES)
        self.paths = [
            f"group1-shard{i + 1}of{self.count}.bin" for i in range(self.count)
        ]
        self.index = -1
        self.room = 0
        self.handle: IO[bytes] | None = None
        self.written = 0

    def write(self, data: memoryview) -> None:
        while len(data):
            if self.room == 0:
                self._next()
            assert self.handle is not None
            piece = data[: self.room]
            self.handle.write(piece)
            self.room -= len(piece)
            self.written += len(piece)
            data = data[len(piece) :]

    def _next(self) -> None:
        self.close()
        self.index += 1
        if self.index >= self.count:
            raise InternalError("tf.js writer: more bytes than the tensors declare")
        self.handle = open(self.folder / self.paths[self.index], "wb")
        self.room = SHARD_BYTES

    def close(self) -> None:
        if self.handle is not None:
            self.handle.close()
            self.handle = None


def _topology(model: Model) -> dict[str, Any] | None:
    if model.architecture is None:
        return None
    producer = model.producer
    topology: dict[str, Any] = {
        "keras_version": str(producer.get("version") or "2.21.0"),
        "backend": str(model.metadata.get("backend") or "tensorflow"),
        "model_config": dict(model.architecture.config),
    }
    training = model.metadata.get("training_config")
    if training is not None:
        topology["training_config"] = training
    return topology


def write(model: Model, path: Path, options: WriteOptions) -> None:
    from .. import __version__

    path.mkdir(parents=True, exist_ok=True)
    tensors = list(model.tensors)
    specs = _specs(tensors, keras_names=model.architecture is not None)
    total = sum(t.nbytes for t in tensors)
    shards = _Shards(path, total)
    try:
        for tensor in tensors:
            for piece in tensor.iter_bytes():
                shards.write(piece)
    finally:
        shards.close()
    if shards.written != total:
        raise InternalError(
            f"tf.js writer: wrote {shards.written} bytes where the tensors "
            f"declare {total}"
        )
    topology = _topology(model)
    version = topology["keras_version"] if topology else None
    document: dict[str, Any] = {
        "format": "layers-model",
        "generatedBy": f"keras v{version}" if version else None,
        "convertedBy": f"modelconv {__version__}",
    }
    user = _user_metadata(model)
    if user:
        document["userDefinedMetadata"] = user
    document["modelTopology"] = topology
    document["weightsManifest"] = [{"paths": shards.paths, "weights": specs}]
    text = json.dumps(document, default=repr if options.allow_lossy else None)
    (path / "model.json").write_text(text, encoding="utf-8")
