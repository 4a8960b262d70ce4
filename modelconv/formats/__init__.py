"""The format registry: one row per format, and content-based detection.

Adding a format means adding a module with ``sniff``, ``read``, ``write`` and
``losses`` (see ``base.py``) and one row in ``FORMATS``. Modules are imported
only when used, so ``modelconv --help`` stays fast.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import cast

from .. import dtypes
from ..errors import InputError, UnknownFormatError, UnsupportedError, UsageError
from .base import HEAD_BYTES, Capabilities, FormatModule, Probe

ALL_DTYPES = frozenset(dtypes.DTYPE_NAMES)
TFJS_DTYPES = frozenset({"float32", "int32", "bool", "complex64"})


@dataclass(frozen=True)
class FormatInfo:
    name: str
    aliases: tuple[str, ...]
    module: str
    description: str
    extensions: tuple[str, ...]
    flavours_read: tuple[str, ...]
    flavours_write: tuple[str, ...]
    capabilities: Capabilities
    writes_folder: bool = False

    @property
    def writable(self) -> bool:
        return bool(self.flavours_write)

    def load(self) -> FormatModule:
        module: ModuleType = importlib.import_module(f"{__name__}.{self.module}")
        return cast(FormatModule, module)


FORMATS: tuple[FormatInfo, ...] = (
    FormatInfo(
        "hdf5",
        ("h5",),
        "hdf5",
        "HDF5: Keras legacy full models and weights, Keras 3 .weights.h5, "
        "generic trees of datasets",
        (".h5", ".hdf5", ".keras.h5", ".weights.h5", ".he5"),
        ("keras-model", "keras-weights", "keras3-weights", "tree"),
        ("keras-model", "keras-weights", "keras3-weights", "tree"),
        Capabilities(True, True, True, ALL_DTYPES, True, True, True, True),
    ),
    FormatInfo(
        "keras",
        (),
        "keras_zip",
        "Keras v3 zip archive (.keras): config.json, metadata.json, model.weights.h5",
        (".keras",),
        ("keras3", "tf-keras"),
        ("keras3",),
        Capabilities(True, True, True, ALL_DTYPES, True, True, True, True),
    ),
    FormatInfo(
        "npz",
        (),
        "npz",
        "NumPy zip archive of named arrays; modelconv NPZ adds a header member",
        (".npz",),
        ("arrays", "modelconv"),
        ("modelconv",),
        Capabilities(True, True, True, ALL_DTYPES, True, True, True, True),
    ),
    FormatInfo(
        "json",
        (),
        "jsonfmt",
        "modelconv JSON: architecture, metadata and base64 weights, lossless",
        (".json",),
        ("modelconv",),
        ("modelconv",),
        Capabilities(True, True, True, ALL_DTYPES, True, True, True, True),
    ),
    FormatInfo(
        "keras-json",
        (),
        "keras_json",
        "Keras model.to_json() output: architecture only (Keras 1, 2, 3 forms)",
        (".json",),
        ("keras1", "keras2", "keras3"),
        ("keras",),
        Capabilities(
            True, False, False, frozenset(), False, False, True, True, state=False
        ),
    ),
    FormatInfo(
        "tfjs",
        (),
        "tfjs",
        "TensorFlow.js layers model: model.json plus .bin weight shards",
        (".json",),
        ("layers-model",),
        ("layers-model",),
        # Metadata: model.json's userDefinedMetadata holds the model's own.
        Capabilities(
            True, True, False, TFJS_DTYPES, True, True, True, True, state=False
        ),
        writes_folder=True,
    ),
    FormatInfo(
        "pickle",
        ("pkl",),
        "pickles",
        "Python pickle: dicts of arrays, Keras and scikit-learn model objects "
        "(read without executing anything)",
        (".pkl", ".pickle", ".p"),
        ("arrays", "keras-model", "sklearn-mlp", "modelconv"),
        ("modelconv", "keras"),
        Capabilities(True, True, True, ALL_DTYPES, True, True, True, True),
    ),
    FormatInfo(
        "joblib",
        (),
        "joblibfmt",
        "joblib dumps, plain or compressed (zlib, gzip, bz2, lzma, xz, lz4)",
        (".joblib", ".jbl", ".z", ".gz", ".bz2", ".xz", ".lzma", ".lz4"),
        ("arrays", "keras-model", "sklearn-mlp", "modelconv"),
        ("modelconv", "keras"),
        Capabilities(True, True, True, ALL_DTYPES, True, True, True, True),
    ),
)

_BY_NAME = {alias: info for info in FORMATS for alias in (info.name, *info.aliases)}


def format_names() -> list[str]:
    return [info.name for info in FORMATS]


def get_format(name: str) -> FormatInfo:
    """The format called ``name`` (or one of its aliases)."""
    info = _BY_NAME.get(name.lower().strip())
    if info is None:
        raise UsageError(
            f"unknown format {name!r}; choose one of {', '.join(format_names())} "
            "(see `modelconv formats`)"
        )
    return info


def make_probe(path: Path) -> Probe:
    if not path.exists():
        raise InputError(f"no such file or folder: {str(path)!r}; check the path")
    if path.is_dir():
        return Probe(path, b"", True, 0)
    try:
        with path.open("rb") as handle:
            head = handle.read(HEAD_BYTES)
        size = path.stat().st_size
    except OSError as exc:
        raise InputError(
            f"cannot read {str(path)!r}: {exc.strerror}; check its permissions"
        ) from exc
    return Probe(path, head, False, size)


def detect(path: Path) -> FormatInfo:
    """The format of the file or folder at ``path``, sniffed from its content.

    Magic bytes decide; the extension only breaks ties. Artifacts modelconv
    knows but does not read yet are named in the error.
    """
    probe = make_probe(path)
    if not probe.is_dir and probe.size == 0:
        raise InputError(f"{str(path)!r} is empty (0 bytes); nothing to read")
    scores: list[tuple[int, int, FormatInfo]] = []
    for order, info in enumerate(FORMATS):
        try:
            score = info.load().sniff(probe)
        except ModuleNotFoundError as exc:
            if exc.name and exc.name.startswith("modelconv"):
                continue
            raise
        if score > 0:
            if probe.suffix in info.extensions:
                score += 5
            scores.append((score, -order, info))
    if scores:
        return max(scores, key=lambda item: (item[0], item[1]))[2]
    _refuse_known_unsupported(probe)
    raise UnknownFormatError(
        f"{str(path)!r} is not a format modelconv reads (first bytes "
        f"{probe.head[:8].hex(' ') or 'none'}); run `modelconv formats` to see "
        "the formats it reads, or name one with --from"
    )


def _refuse_known_unsupported(probe: Probe) -> None:
    """Raise UnsupportedError naming a recognised artifact modelconv cannot read."""
    name = identify_unsupported(probe)
    if name is not None:
        raise UnsupportedError(
            f"{str(probe.path)!r} is {name}, which modelconv does not read yet; "
            "see docs/limitations.md for what is supported"
        )


def identify_unsupported(probe: Probe) -> str | None:
    """Name an artifact modelconv recognises but does not read, or None."""
    path, head = probe.path, probe.head
    if probe.is_dir:
        if (path / "saved_model.pb").exists() or (path / "saved_model.pbtxt").exists():
            return "a TensorFlow SavedModel folder"
        if (path / "checkpoint").exists() or any(path.glob("*.index")):
            return "a TensorFlow checkpoint folder"
        if any(path.glob("*.weights.json")):
            return "a Keras 3 sharded weights folder"
        return None
    if probe.name.endswith(".weights.json"):
        return "a Keras 3 sharded weights index (*.weights.json with .h5 shards)"
    if head.startswith(b"GGUF"):
        return "a GGUF file (llama.cpp)"
    if len(head) >= 8 and head[4:8] == b"TFL3":
        return "a TensorFlow Lite flatbuffer (.tflite)"
    if probe.suffix == ".pb" or probe.name == "saved_model.pb":
        return "a TensorFlow protobuf graph (SavedModel or frozen graph)"
    if probe.suffix == ".onnx":
        return "an ONNX model"
    if (
        probe.suffix == ".index"
        or ".data-0" in probe.name
        or probe.name == "checkpoint"
    ):
        return "a TensorFlow checkpoint (save_weights in TF format)"
    if head.startswith(b"PK\x03\x04") and (
        b"data.pkl" in head or b"/data/" in head or b"version" in head[:200]
    ):
        return "a PyTorch zip checkpoint (.pt/.pth)"
    if head[:2] == b"\x80\x02" and b"\x8a\x0al\xfc\x9cF\xf9 j\xa8P\x19" in head[:32]:
        return "a legacy PyTorch checkpoint (.pt/.pth)"
    if len(head) > 10 and head[8:10] == b'{"':
        return "a safetensors file"
    if probe.suffix in (".pt", ".pth", ".ckpt") or (
        probe.suffix == ".bin" and head[:1] in (b"\x80", b"P")
    ):
        return "a PyTorch checkpoint"
    return None
