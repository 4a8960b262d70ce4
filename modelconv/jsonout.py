"""JSON documents for --json: schema 1, non-finite floats as strings."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from enum import Enum
from typing import Any

import numpy as np


def jsonable(value: Any) -> Any:
    """``value`` with NaN/Inf as "nan"/"inf"/"-inf" and numpy scalars unwrapped."""
    if isinstance(value, float | np.floating):
        number = float(value)
        if math.isnan(number):
            return "nan"
        if math.isinf(number):
            return "inf" if number > 0 else "-inf"
        return number
    if isinstance(value, bool | np.bool_):
        return bool(value)
    if isinstance(value, int | np.integer):
        return int(value)
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, Mapping):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [jsonable(v) for v in value]
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if value is None or isinstance(value, str):
        return value
    return str(value)


def dumps(document: Mapping[str, Any]) -> str:
    """The document as JSON text, with ``"schema": 1`` first."""
    body = {"schema": 1, **{k: v for k, v in document.items() if k != "schema"}}
    return json.dumps(jsonable(body), indent=2, ensure_ascii=False, allow_nan=False)


def error_document(kind: str, message: str) -> str:
    return dumps({"error": {"kind": kind, "message": message}})
