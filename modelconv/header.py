"""The header shared by modelconv's own NPZ, JSON, pickle and joblib files.

``{"modelconv": 1, "architecture": ..., "metadata": ..., "tensors": [...]}``
where ``architecture`` is ``{"framework", "config"}`` or null and each tensor
entry is ``{name, role, dtype, shape, source_names}`` plus ``key`` when the
container stores it under an escaped name.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from typing import Any

from . import dtypes
from .errors import InputError
from .model import Architecture, Model, Role, Tensor, TensorSource

HEADER_VERSION = 1
HEADER_KEY = "modelconv"


def architecture_to_header(arch: Architecture | None) -> dict[str, Any] | None:
    if arch is None:
        return None
    return {"framework": arch.framework, "config": arch.config}


def architecture_from_header(obj: Any) -> Architecture | None:
    """Rebuild an Architecture (layers derived again) from its header entry."""
    if obj is None:
        return None
    if not isinstance(obj, Mapping) or not isinstance(obj.get("config"), Mapping):
        raise InputError(
            "modelconv header: 'architecture' must be null or an object with "
            "'framework' and 'config'; the file is damaged"
        )
    framework = obj.get("framework")
    config = obj["config"]
    if framework == "keras":
        from .keras_config import build_architecture

        return build_architecture(config)
    if framework == "sklearn":
        from .sklearn_mlp import build_architecture as build_sklearn

        return build_sklearn(config)
    raise InputError(
        f"modelconv header: unknown architecture framework {framework!r}; "
        "expected 'keras' or 'sklearn'"
    )


def model_header(model: Model, keys: Mapping[str, str] | None = None) -> dict[str, Any]:
    """The header for ``model``; ``keys`` maps tensor names to container keys."""
    metadata = dict(model.metadata)
    metadata.setdefault("source", {"format": model.format, "flavour": model.flavour})
    entries = []
    for tensor in model.tensors:
        entry: dict[str, Any] = {
            "name": tensor.name,
            "role": tensor.role.value,
            "dtype": tensor.dtype,
            "shape": list(tensor.shape),
            "source_names": list(tensor.source_names),
        }
        if keys is not None and keys.get(tensor.name, tensor.name) != tensor.name:
            entry["key"] = keys[tensor.name]
        entries.append(entry)
    return {
        HEADER_KEY: HEADER_VERSION,
        "architecture": architecture_to_header(model.architecture),
        "metadata": metadata,
        "tensors": entries,
    }


def header_bytes(header: Mapping[str, Any]) -> bytes:
    """UTF-8 JSON text of a header (NaN and Infinity in configs are kept).

    A lone surrogate (a pickle's str may hold one) has no UTF-8 form; such a
    header is written with every non-ASCII character as a JSON escape, which
    reads back to the same string.
    """
    try:
        return json.dumps(header, ensure_ascii=False, allow_nan=True).encode("utf-8")
    except UnicodeEncodeError:
        return json.dumps(header, ensure_ascii=True, allow_nan=True).encode("ascii")


def parse_header_bytes(data: bytes) -> dict[str, Any]:
    from .jsonsafe import loads_bounded

    obj = loads_bounded(data, what="modelconv header")
    return check_header(obj)


def check_header(obj: Any) -> dict[str, Any]:
    """Validate a header's shape and types; raise InputError on damage."""
    if not isinstance(obj, dict) or obj.get(HEADER_KEY) != HEADER_VERSION:
        version = obj.get(HEADER_KEY) if isinstance(obj, dict) else None
        raise InputError(
            f"modelconv header version {version!r} is not supported (expected "
            f"{HEADER_VERSION}); upgrade modelconv or re-export the file"
        )
    tensors = obj.get("tensors")
    if not isinstance(tensors, list):
        raise InputError("modelconv header: 'tensors' must be a list")
    for entry in tensors:
        _check_entry(entry)
    if not isinstance(obj.get("metadata", {}), dict):
        raise InputError("modelconv header: 'metadata' must be an object")
    return obj


def _check_entry(entry: Any) -> None:
    if not isinstance(entry, dict) or not isinstance(entry.get("name"), str):
        raise InputError("modelconv header: each tensor needs a string 'name'")
    name = entry["name"]
    dtypes.check_name(str(entry.get("dtype")))
    shape = entry.get("shape")
    if not isinstance(shape, list) or not all(
        isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape
    ):
        raise InputError(
            f"modelconv header: tensor {name!r} has shape {shape!r}; expected a "
            "list of non-negative integers"
        )
    if entry.get("role", "weight") not in {r.value for r in Role}:
        raise InputError(
            f"modelconv header: tensor {name!r} has role {entry.get('role')!r}; "
            "expected weight, optimizer or state"
        )
    names = entry.get("source_names", [])
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        raise InputError(
            f"modelconv header: tensor {name!r} has bad 'source_names'; expected "
            "a list of strings"
        )


def declared_nbytes(entry: Mapping[str, Any]) -> int:
    return math.prod(entry["shape"]) * dtypes.itemsize(entry["dtype"])


def tensor_from_entry(entry: Mapping[str, Any], source: TensorSource) -> Tensor:
    return Tensor(
        name=entry["name"],
        dtype=entry["dtype"],
        shape=tuple(entry["shape"]),
        role=Role(entry.get("role", "weight")),
        source_names=tuple(entry.get("source_names", ())),
        source=source,
    )


def model_from_header(
    header: Mapping[str, Any],
    sources: Sequence[TensorSource],
    *,
    format: str,
    flavour: str = "modelconv",
    **fields: Any,
) -> Model:
    """A Model from a checked header and one source per tensor entry."""
    entries = header["tensors"]
    if len(sources) != len(entries):
        raise InputError(
            f"modelconv header lists {len(entries)} tensors but the file holds "
            f"{len(sources)}; the file is damaged"
        )
    tensors = [tensor_from_entry(e, s) for e, s in zip(entries, sources)]
    metadata = dict(header.get("metadata") or {})
    return Model(
        tensors=tuple(tensors),
        architecture=architecture_from_header(header.get("architecture")),
        metadata=metadata,
        format=format,
        flavour=flavour,
        **fields,
    )
