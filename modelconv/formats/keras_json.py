"""Keras ``model.to_json()`` files: architecture only, in Keras 1, 2 and 3 forms.

What ``to_json()`` writes (confirmed against files written by tf_keras 2.x
and Keras 3):

- Keras 1 and 2: ``{"class_name", "config", "keras_version", "backend"}``;
  Keras 1 Sequential configs are a bare list of layers, Keras 2.2+ ones are
  ``{"name", "layers"}``.
- Keras 3: ``serialize_keras_object(model)``, i.e. ``{"module", "class_name",
  "config", "registered_name", "build_config"?, "compile_config"?}``, with no
  version and no backend.

``keras_version`` and ``backend`` are facts about the file, so they move to
the metadata; the rest is the architecture config, kept verbatim.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ..errors import InputError, LimitExceededError, UnsupportedError
from ..jsonsafe import loads_bounded
from ..keras_config import build_architecture
from ..limits import MAX_JSON_DOCUMENT_BYTES
from ..model import Model
from .base import Loss, Probe, ReadOptions, WriteOptions

FORMAT = "keras-json"
_FILE_KEYS = ("keras_version", "backend")

_CLASS_NAME = re.compile(rb'"class_name"\s*:')
_CONFIG = re.compile(rb'"config"\s*:')


def sniff(probe: Probe) -> int:
    if probe.is_dir:
        return 0
    head = probe.head.removeprefix(b"\xef\xbb\xbf").lstrip()
    if not head.startswith(b"{"):
        return 0
    if b'"modelTopology"' in head or b'"weightsManifest"' in head:
        return 0
    if re.match(rb'\{\s*"modelconv"\s*:', head):
        return 0
    if _CLASS_NAME.search(head) and _CONFIG.search(head):
        return 90
    return 0


def read_document(path: Path, what: str) -> Any:
    """The parsed JSON at ``path``, read with the bounded parser."""
    try:
        size = path.stat().st_size
        if size > MAX_JSON_DOCUMENT_BYTES:
            raise LimitExceededError(
                f"{what} {str(path)!r} is {size} bytes (limit "
                f"{MAX_JSON_DOCUMENT_BYTES}); no architecture is that large"
            )
        data = path.read_bytes()
    except OSError as exc:
        raise InputError(
            f"cannot read {str(path)!r}: {exc.strerror}; check the path"
        ) from exc
    return loads_bounded(data, what=f"{what} {path.name!r}")


def flavour_of(document: Mapping[str, Any]) -> str:
    """keras1, keras2 or keras3, from the serialisation form."""
    if "module" in document or "registered_name" in document:
        return "keras3"
    version = str(document.get("keras_version") or "")
    if version.startswith("1"):
        return "keras1"
    # Keras 2.0 and 2.1 still wrote a Sequential as a bare list; the version,
    # when the file has one, says which Keras wrote it.
    if not version and isinstance(document.get("config"), list):
        return "keras1"
    return "keras2"


def check_keras_document(document: Any, path: Path, what: str) -> None:
    """Refuse JSON that is not a Keras model config, naming what was found."""
    if not isinstance(document, dict):
        raise InputError(
            f"{str(path)!r} is JSON but not a Keras {what} (top level is a "
            f"{type(document).__name__}, expected an object with 'class_name' "
            "and 'config')"
        )
    if "class_name" not in document or "config" not in document:
        keys = ", ".join(sorted(map(str, document))[:8]) or "none"
        raise InputError(
            f"{str(path)!r} is JSON but not a Keras {what}: it has no "
            f"'class_name' and 'config' (keys found: {keys})"
        )
    cls, config = document["class_name"], document["config"]
    if not isinstance(cls, str) or not isinstance(config, (dict, list)):
        # Both keys are there; say which value is wrong rather than "no key".
        raise InputError(
            f"{str(path)!r} is JSON but not a Keras {what}: 'class_name' must be "
            f"a string and 'config' an object or list (found {cls!r:.40} and "
            f"a {type(config).__name__} 'config')"
        )


def metadata_for(document: Mapping[str, Any]) -> dict[str, Any]:
    metadata: dict[str, Any] = {}
    version = document.get("keras_version")
    if version is not None:
        metadata["producer"] = {"name": "keras", "version": str(version)}
    if document.get("backend") is not None:
        metadata["backend"] = document["backend"]
    return metadata


def read(path: Path, options: ReadOptions) -> Model:
    document = read_document(path, "Keras architecture JSON")
    check_keras_document(document, path, "model.to_json() file")
    config = {k: v for k, v in document.items() if k not in _FILE_KEYS}
    architecture = build_architecture(config)
    return Model(
        tensors=(),
        architecture=architecture,
        metadata=metadata_for(document),
        format=FORMAT,
        flavour=flavour_of(document),
        warnings=tuple(architecture.warnings),
    )


def _document_for(model: Model) -> dict[str, Any]:
    architecture = model.architecture
    if architecture is None or architecture.framework != "keras":
        have = (
            "has no architecture"
            if architecture is None
            else f"has a {architecture.framework} architecture"
        )
        raise UnsupportedError(
            f"keras-json holds a Keras architecture and this model {have}; "
            "choose a format that holds weights alone (npz, hdf5)"
        )
    document = dict(architecture.config)
    if "module" not in document:
        # Keras 1 and 2 to_json() add the writer's version and backend.
        producer = model.producer
        if "keras_version" not in document and producer.get("version"):
            document["keras_version"] = str(producer["version"])
        if "backend" not in document and model.metadata.get("backend"):
            document["backend"] = model.metadata["backend"]
    return document


def losses(model: Model, options: WriteOptions) -> list[Loss]:
    _document_for(model)
    found: list[Loss] = []
    counts: dict[str, int] = {}
    for tensor in model.tensors:
        counts[tensor.role.value] = counts.get(tensor.role.value, 0) + 1
    for role, count in counts.items():
        found.append(
            Loss(
                "weights" if role == "weight" else role,
                f"keras-json holds the architecture only; {count} {role} tensors "
                "are not written",
            )
        )
    return found


def write(model: Model, path: Path, options: WriteOptions) -> None:
    document = _document_for(model)
    try:
        # Keras writes NaN and Infinity in configs bare, and reads them back.
        text = json.dumps(document, allow_nan=True)
    except (TypeError, ValueError) as exc:
        raise UnsupportedError(
            f"the architecture config holds a value JSON cannot spell ({exc}); "
            "write modelconv JSON instead (--to json)"
        ) from exc
    path.write_text(text, encoding="utf-8")
