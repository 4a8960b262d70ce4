"""TensorFlow.js layers models: ``model.json`` plus ``.bin`` weight shards.

Layout, as tfjs-converter writes it (``tensorflowjs/converters/
keras_h5_conversion.py`` and ``tensorflowjs/write_weights.py``) and as
tfjs-core reads it (``tfjs-core/src/io/io_utils.ts``, ``decodeWeights``):

- ``model.json``: ``{"format": "layers-model", "generatedBy", "convertedBy",
  "modelTopology", "weightsManifest"}``. The Python converter's topology is
  ``{"keras_version", "backend", "model_config": {...}, "training_config"?}``;
  tfjs-layers' own ``model.save()`` writes the Keras config itself
  (``{"class_name", "config", "keras_version", "backend"}``).
- ``weightsManifest``: groups ``{"paths": [...], "weights": [{"name",
  "shape", "dtype", "quantization"?, "group"?}]}``. A group's tensors are
  concatenated little-endian in manifest order and cut into shards (4 MiB
  by default); ``paths`` lists the shards in order, relative to model.json.
- ``dtype`` is the tensor's real dtype; a quantised tensor is stored as
  ``quantization.dtype`` (uint8 / uint16 with ``scale`` and ``min``, or
  float16) and decoded as ``q * scale + min`` (rounded for int32).
- Weight names are the Keras 2 HDF5 weight names without ``:0``.

Quantised tensors are shown as stored (their dtype is the stored dtype and
``attrs`` carries the quantisation) unless ``ReadOptions.extra["dequantize"]``
is set. String tensors are refused.
"""

from __future__ import annotations

import importlib
import math
import re
import stat
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np

from ..errors import (
    HostileInputError,
    InputError,
    LimitExceededError,
    UnsupportedDtypeError,
    UnsupportedError,
)
from ..keras_config import build_architecture
from ..model import Model, Role, Tensor
from .base import Loss, Probe, ReadOptions, WriteOptions
from .keras_json import read_document

FORMAT = "tfjs"
FLAVOUR = "layers-model"
MODEL_JSON = "model.json"

# tf.js weight dtypes and their itemsizes (tfjs-core DTYPE_VALUE_SIZE_MAP).
TFJS_DTYPES = {"float32": 4, "int32": 4, "bool": 1, "complex64": 8}
QUANTIZED_DTYPES = {"uint8": 1, "uint16": 2, "float16": 2}
_READ_BYTES = 4 * 2**20

_OWN_KEYS = frozenset(
    {"producer", "backend", "keras_version", "training_config", "source", "tfjs"}
)
_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.\-]*:")
_CELL = re.compile(r"^(\w*_)?cell(_\d+)?$")


def sniff(probe: Probe) -> int:
    if probe.is_dir:
        return 100 if (probe.path / MODEL_JSON).is_file() else 0
    head = probe.head.removeprefix(b"\xef\xbb\xbf").lstrip()
    if head.startswith(b"{") and (
        b'"modelTopology"' in head or b'"weightsManifest"' in head
    ):
        return 100
    return 0


def _model_json_path(path: Path) -> Path:
    if path.is_dir():
        candidate = path / MODEL_JSON
        if not candidate.is_file():
            raise InputError(
                f"{str(path)!r} is a folder without {MODEL_JSON}; point at a "
                "TensorFlow.js layers model folder or its model.json"
            )
        return candidate
    return path


# --- shard paths ------------------------------------------------------------


def check_shard_path(entry: Any, folder: Path) -> Path:
    """The shard file for manifest path ``entry``, refused if it leaves ``folder``.

    Only the names are examined (and symlinks resolved); nothing is opened.
    """
    if not isinstance(entry, str) or not entry or "\x00" in entry:
        raise HostileInputError(
            f"tf.js manifest shard path {entry!r} is not a file name; refused"
        )
    if _SCHEME.match(entry) or entry.startswith("//"):
        raise HostileInputError(
            f"tf.js manifest shard path {entry!r} is a URL; modelconv reads only "
            "shards beside model.json, so it is refused"
        )
    pure = PurePosixPath(entry.replace("\\", "/"))
    if pure.is_absolute() or ".." in pure.parts:
        raise HostileInputError(
            f"tf.js manifest shard path {entry!r} leaves the model's folder; refused"
        )
    target = folder.joinpath(*pure.parts)
    try:
        inside = target.resolve().is_relative_to(folder.resolve())
    except (OSError, RuntimeError) as exc:
        raise HostileInputError(
            f"tf.js manifest shard path {entry!r} cannot be resolved ({exc})"
        ) from exc
    if not inside:
        raise HostileInputError(
            f"tf.js manifest shard path {entry!r} points outside the model's "
            "folder through a link; refused"
        )
    return target


# --- manifest ---------------------------------------------------------------


@dataclass(frozen=True)
class _Spec:
    """One manifest weight entry, checked."""

    name: str
    shape: tuple[int, ...]
    dtype: str  # the tensor's real dtype
    stored: str  # the dtype of the bytes in the shard
    quantization: Mapping[str, Any] | None
    role: Role

    @property
    def nbytes(self) -> int:
        itemsize = QUANTIZED_DTYPES.get(self.stored) or TFJS_DTYPES[self.stored]
        return math.prod(self.shape) * itemsize


def _spec(entry: Any, where: str) -> _Spec:
    if not isinstance(entry, dict) or not isinstance(entry.get("name"), str):
        raise InputError(f"tf.js manifest: {where} needs a string 'name'")
    name = entry["name"]
    shape = entry.get("shape")
    if not isinstance(shape, list) or not all(
        isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape
    ):
        raise InputError(
            f"tf.js manifest: weight {name!r} has shape {shape!r}; expected a list "
            "of non-negative integers"
        )
    dtype = entry.get("dtype")
    if dtype == "string":
        raise UnsupportedDtypeError(
            f"tf.js weight {name!r} is a string tensor; modelconv carries numeric "
            "and bool tensors only, so this model cannot be read"
        )
    if not isinstance(dtype, str) or dtype not in TFJS_DTYPES:
        raise UnsupportedDtypeError(
            f"tf.js weight {name!r} has dtype {dtype!r}; tf.js weights are "
            f"{', '.join(TFJS_DTYPES)} (or string)"
        )
    quantization = entry.get("quantization")
    stored = dtype
    if quantization is not None:
        stored = _check_quantization(name, dtype, quantization)
    role = Role.OPTIMIZER if entry.get("group") == "optimizer" else Role.WEIGHT
    return _Spec(name, tuple(shape), dtype, stored, quantization, role)


def _check_quantization(name: str, dtype: str, quantization: Any) -> str:
    stored = quantization.get("dtype") if isinstance(quantization, dict) else None
    if not isinstance(stored, str) or stored not in QUANTIZED_DTYPES:
        raise UnsupportedError(
            f"tf.js weight {name!r} has quantization {quantization!r}; modelconv "
            "knows uint8, uint16 and float16"
        )
    if stored == "float16" and dtype != "float32":
        raise InputError(
            f"tf.js weight {name!r}: float16 quantization of a {dtype} tensor; "
            "tf.js allows it for float32 only"
        )
    if stored != "float16":
        for key in ("scale", "min"):
            value = quantization.get(key)
            if not isinstance(value, (int, float)) or isinstance(value, bool):
                raise InputError(
                    f"tf.js weight {name!r}: {stored} quantization needs a numeric "
                    f"{key!r}, found {value!r}"
                )
        if dtype not in ("float32", "int32"):
            raise InputError(
                f"tf.js weight {name!r}: {stored} quantization of a {dtype} "
                "tensor; tf.js allows it for float32 and int32"
            )
    return str(stored)


@dataclass(frozen=True)
class _Group:
    shards: tuple[tuple[Path, int], ...]  # (file, size) in order
    specs: tuple[_Spec, ...]


def _groups(manifest: Any, folder: Path) -> list[tuple[list[Path], list[_Spec]]]:
    """Checked groups: shard paths (none opened yet) and weight specs."""
    if not isinstance(manifest, list):
        raise InputError(
            f"tf.js weightsManifest is a {type(manifest).__name__}; expected a "
            "list of groups"
        )
    checked = []
    for number, group in enumerate(manifest, 1):
        if not isinstance(group, dict) or not isinstance(group.get("paths"), list):
            raise InputError(f"tf.js manifest group {number} has no 'paths' list")
        weights = group.get("weights")
        if not isinstance(weights, list):
            raise InputError(f"tf.js manifest group {number} has no 'weights' list")
        paths = [check_shard_path(entry, folder) for entry in group["paths"]]
        specs = [
            _spec(entry, f"group {number} weight {index}")
            for index, entry in enumerate(weights)
        ]
        checked.append((paths, specs))
    return checked


def _sized(paths: list[Path], specs: list[_Spec], number: int) -> _Group:
    """Stat the shards and check their sizes add up to the manifest's bytes."""
    shards = []
    for shard in paths:
        try:
            info = shard.stat()
        except OSError as exc:
            raise InputError(
                f"tf.js shard {shard.name!r} of group {number} cannot be read "
                f"({exc.strerror}); copy every .bin file listed in model.json"
            ) from exc
        # A folder's or a device's st_size says nothing about its bytes, and
        # opening a FIFO would block: only regular files are shards.
        if not stat.S_ISREG(info.st_mode):
            raise HostileInputError(
                f"tf.js shard {shard.name!r} of group {number} is not a regular "
                "file; refused"
            )
        shards.append((shard, info.st_size))
    have = sum(size for _, size in shards)
    want = sum(spec.nbytes for spec in specs)
    if have != want:
        raise HostileInputError(
            f"tf.js group {number}: its shards hold {have} bytes but the manifest "
            f"declares {want}; the files disagree, so the model is refused"
        )
    return _Group(tuple(shards), tuple(specs))


# --- tensor sources ---------------------------------------------------------


class ShardSource:
    """A tensor's bytes at ``offset`` in a group's concatenated shards."""

    def __init__(self, group: _Group, offset: int, spec: _Spec, dequantize: bool):
        self.group = group
        self.offset = offset
        self.spec = spec
        self.dequantize = dequantize and spec.quantization is not None

    def read(self) -> np.ndarray:
        data = b"".join(self._byte_pieces(max(self.spec.nbytes, 1)))
        return self._decode(data).reshape(self.spec.shape)

    def iter_chunks(self, max_bytes: int) -> Iterator[np.ndarray]:
        stored = self._stored_itemsize()
        # max_bytes is about the output; dequantising widens each element.
        out_itemsize = 4 if self.dequantize else stored
        elements = max(1, max_bytes // out_itemsize)
        for data in self._byte_pieces(elements * stored):
            yield self._decode(data)

    def _stored_itemsize(self) -> int:
        stored = self.spec.stored
        return QUANTIZED_DTYPES.get(stored) or TFJS_DTYPES[stored]

    def _decode(self, data: bytes) -> np.ndarray:
        stored = self.spec.stored
        array = np.frombuffer(data, dtype=np.dtype(stored).newbyteorder("<"))
        if self.dequantize:
            return dequantize(array, self.spec.dtype, self.spec.quantization or {})
        return array

    def _byte_pieces(self, max_bytes: int) -> Iterator[bytes]:
        """Pieces of whole elements, crossing shard boundaries as needed."""
        itemsize = self._stored_itemsize()
        step = max(itemsize, max_bytes // itemsize * itemsize)
        carry = b""
        for piece in _read_range(self.group, self.offset, self.spec.nbytes, step):
            data = carry + piece if carry else piece
            cut = len(data) - len(data) % itemsize
            if cut:
                yield data[:cut]
            carry = data[cut:]


def _read_range(group: _Group, offset: int, length: int, step: int) -> Iterator[bytes]:
    start = 0
    for path, size in group.shards:
        end = start + size
        if length > 0 and offset < end and offset + length > start:
            yield from _read_file_range(path, offset - start, size, length, step)
            taken = min(end, offset + length) - offset
            offset += taken
            length -= taken
        start = end
    if length:
        raise InputError("tf.js shards end before the manifest's last tensor")


def _read_file_range(
    path: Path, at: int, size: int, length: int, step: int
) -> Iterator[bytes]:
    remaining = min(size - at, length)
    try:
        with open(path, "rb") as handle:
            handle.seek(at)
            while remaining > 0:
                data = handle.read(min(step, remaining))
                if not data:
                    raise InputError(
                        f"tf.js shard {path.name!r} is shorter than when it was "
                        "listed; was it changed while being read?"
                    )
                remaining -= len(data)
                yield data
    except OSError as exc:
        raise InputError(
            f"cannot read tf.js shard {path.name!r}: {exc.strerror}"
        ) from exc


def dequantize(array: np.ndarray, dtype: str, quantization: Mapping[str, Any]) -> Any:
    """Stored values to the real dtype, as tfjs-core's decodeWeights does."""
    if quantization.get("dtype") == "float16":
        return array.astype(np.float32)
    # JavaScript computes q * scale + min in double precision, then stores it
    # in a Float32Array (or rounds half up into an Int32Array).
    values = array.astype(np.float64) * float(quantization["scale"]) + float(
        quantization["min"]
    )
    if dtype == "int32":
        return np.floor(values + 0.5).astype(np.int32)
    return values.astype(np.float32)


# --- names ------------------------------------------------------------------


def canonical_name(name: str) -> str:
    """``layer/weight`` from a tf.js weight name (a Keras 2 HDF5 name sans ``:0``).

    RNN cell segments go (``lstm/lstm_cell/kernel`` -> ``lstm/kernel``), as do
    ``:N`` suffixes that hand-made files may carry.
    """
    name = re.sub(r":\d+$", "", name)
    parts = name.split("/")
    if len(parts) > 2:
        parts = [parts[0], *(p for p in parts[1:-1] if not _CELL.match(p)), parts[-1]]
    return "/".join(parts)


def _names(specs: Sequence[_Spec]) -> list[str]:
    canonical = [canonical_name(spec.name) for spec in specs]
    # Where two weights would share a canonical name, both keep their own.
    counts: dict[str, int] = {}
    for name in canonical:
        counts[name] = counts.get(name, 0) + 1
    return [
        name if counts[name] == 1 else spec.name for name, spec in zip(canonical, specs)
    ]


def _architecture_names(tensors: list[Tensor], architecture: Any) -> list[Tensor]:
    """Canonical names from the architecture where the tf.js names are short.

    Keras 2 HDF5 weight names, and so tf.js names, leave out the enclosing
    model of a nested model's layers (``sub_dense/kernel`` for
    ``sub_model/sub_dense/kernel``). Each tensor takes the architecture name
    that ends with its own, when exactly one does.
    """
    wanted = [n for layer in architecture.layers for n in layer.tensor_names]
    if not wanted or {t.name for t in tensors} <= set(wanted):
        return tensors
    by_tail: dict[str, list[str]] = {}
    for name in wanted:
        parts = name.split("/")
        for cut in range(len(parts) - 1):
            by_tail.setdefault("/".join(parts[cut:]), []).append(name)
    renamed = []
    for tensor in tensors:
        matches = by_tail.get(tensor.name, [])
        renamed.append(tensor.replace(name=matches[0]) if len(matches) == 1 else tensor)
    if len({t.name for t in renamed}) != len(renamed):
        return tensors
    return renamed


# --- reading ----------------------------------------------------------------


def _topology(document: Mapping[str, Any]) -> tuple[Any, dict[str, Any]]:
    """(Keras config or None, metadata) from model.json."""
    topology = document.get("modelTopology")
    fmt = document.get("format")
    if fmt == "graph-model" or (isinstance(topology, dict) and "node" in topology):
        raise UnsupportedError(
            "this is a TensorFlow.js graph model (a TensorFlow GraphDef); "
            "modelconv reads tf.js layers models only"
        )
    metadata: dict[str, Any] = {}
    tfjs_facts = {
        key: document[key]
        for key in ("format", "generatedBy", "convertedBy")
        if key in document
    }
    if tfjs_facts:
        metadata["tfjs"] = tfjs_facts
    user = document.get("userDefinedMetadata")
    if isinstance(user, dict):
        # The user's own metadata (tfjs-converter --metadata) sits beside
        # what the file says about itself.
        metadata.update({k: v for k, v in user.items() if k not in _OWN_KEYS})
    if topology is None:
        return None, metadata
    if not isinstance(topology, dict):
        raise InputError(
            f"tf.js modelTopology is a {type(topology).__name__}; expected an object"
        )
    if "keras_version" in topology:
        metadata["producer"] = {
            "name": "keras",
            "version": str(topology["keras_version"]),
        }
    if "backend" in topology:
        metadata["backend"] = topology["backend"]
    if "training_config" in topology:
        metadata["training_config"] = topology["training_config"]
    config = topology.get("model_config", topology)
    if not isinstance(config, dict) or "class_name" not in config:
        raise InputError(
            "tf.js modelTopology holds no Keras model config (no 'class_name'); "
            "the file is damaged or not a layers model"
        )
    config = {
        k: v
        for k, v in config.items()
        if k not in ("keras_version", "backend", "training_config")
    }
    return config, metadata


def read(path: Path, options: ReadOptions) -> Model:
    model_json = _model_json_path(path)
    folder = model_json.parent
    document = read_document(model_json, "tf.js model.json")
    if not isinstance(document, dict) or not (
        "modelTopology" in document or "weightsManifest" in document
    ):
        raise InputError(
            f"{str(model_json)!r} is JSON but not a TensorFlow.js model (no "
            "'modelTopology' or 'weightsManifest')"
        )
    config, metadata = _topology(document)
    # Every shard path is checked before any shard is opened or even stat'ed.
    unsized = _groups(document.get("weightsManifest", []), folder)
    groups = [_sized(paths, specs, n) for n, (paths, specs) in enumerate(unsized, 1)]
    total = sum(size for group in groups for _, size in group.shards)
    if total > options.max_bytes:
        raise LimitExceededError(
            f"tf.js shards hold {total} bytes (limit {options.max_bytes}); raise "
            "--max-bytes if the model is trusted"
        )
    dequantize_all = bool(options.extra.get("dequantize"))
    tensors, quantised = _tensors(groups, dequantize_all)
    architecture = build_architecture(config) if config is not None else None
    if architecture is not None:
        tensors = _architecture_names(tensors, architecture)
    warnings = list(architecture.warnings) if architecture is not None else []
    if architecture is None and not tensors:
        # Legal (modelconv writes one for an empty model) but never what the
        # converter writes for a real model: say so rather than show nothing.
        warnings.append(
            f"{model_json.name} holds neither a model topology nor any weights; "
            "check that it is the model.json the converter wrote"
        )
    if quantised and not dequantize_all:
        warnings.append(
            f"{quantised} tensors are stored quantised by tf.js and shown as "
            "stored (uint8/uint16/float16, quantisation in their attrs); "
            "modelconv.load(path, extra={'dequantize': True}) gives their float "
            "values"
        )
    elif quantised:
        warnings.append(
            f"{quantised} tensors were dequantised from tf.js quantisation; their "
            "values are approximations of the original weights"
        )
    return Model(
        tensors=tuple(tensors),
        architecture=architecture,
        metadata=metadata,
        format=FORMAT,
        flavour=FLAVOUR,
        warnings=tuple(warnings),
    )


def _tensors(
    groups: Sequence[_Group], dequantize_all: bool
) -> tuple[list[Tensor], int]:
    specs = [spec for group in groups for spec in group.specs]
    names = iter(_names(specs))
    tensors = []
    quantised = 0
    for group in groups:
        offset = 0
        for spec in group.specs:
            source = ShardSource(group, offset, spec, dequantize_all)
            offset += spec.nbytes
            attrs: dict[str, Any] = {}
            dtype = spec.stored
            if spec.quantization is not None:
                quantised += 1
                attrs["tfjs_quantization"] = dict(spec.quantization)
                attrs["tfjs_dtype"] = spec.dtype
                if dequantize_all:
                    dtype = spec.dtype
            tensors.append(
                Tensor(
                    name=next(names),
                    dtype=dtype,
                    shape=spec.shape,
                    role=spec.role,
                    source_names=(spec.name,),
                    source=source,
                    attrs=attrs,
                )
            )
    return tensors, quantised


# --- writing ----------------------------------------------------------------

_NO_WRITER = (
    "writing TensorFlow.js needs the Keras 2 config down-level from the Keras "
    "migration work, which is not available yet; write .keras, .h5 or modelconv "
    "JSON instead"
)


def _writer() -> Any:
    name = f"{__package__}.tfjs_writer"
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as exc:
        if exc.name != name:
            raise
        raise UnsupportedError(_NO_WRITER) from exc


def keeps_stored(tensor: Tensor) -> bool:
    """Whether the writer puts ``tensor`` back in its tf.js quantised form.

    Such a tensor (read without dequantising) is uint8, uint16 or float16,
    which plain tf.js weights cannot be, yet it is written byte for byte.
    """
    quantization = tensor.attrs.get("tfjs_quantization")
    return isinstance(quantization, Mapping) and quantization.get("dtype") == (
        tensor.dtype
    )


def prepare(model: Model, options: WriteOptions) -> Model:
    """The model with its config in the Keras 2 form tfjs-layers reads."""
    prepared: Model = _writer().prepare(model, options)
    return prepared


def losses(model: Model, options: WriteOptions) -> list[Loss]:
    return list(_writer().losses(model, options))


def write(model: Model, path: Path, options: WriteOptions) -> None:
    _writer().write(model, path, options)
