"""Bounded JSON parsing for configs, headers and manifests.

Python's json module recurses per nesting level and accepts duplicate keys,
huge integers and any size; files are untrusted, so each of those is bounded
here before or while parsing.
"""

from __future__ import annotations

import json
import re
from typing import Any

import numpy as np

from .errors import HostileInputError, InputError, LimitExceededError
from .limits import MAX_JSON_DEPTH, MAX_JSON_DOCUMENT_BYTES, MAX_JSON_INT_DIGITS

# A JSON string (escapes included); unrolled so that matching stays linear.
_STRING = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"', re.S)
_NOT_BRACKET = re.compile(r"[^\[\]{}]+")
# Brackets are counted in blocks so that the running depth never needs more
# than a few MiB, whatever the document's size.
_DEPTH_BLOCK = 1 << 20


def _check_depth(text: str, what: str) -> None:
    """Refuse nesting deeper than MAX_JSON_DEPTH before the recursive parser runs.

    Strings are cut out first (brackets inside them do not nest), then the
    running depth over the remaining brackets is computed with numpy: a
    200 000-deep document is refused in milliseconds.
    """
    brackets = _NOT_BRACKET.sub("", _STRING.sub("", text)).encode("ascii")
    depth = 0
    for start in range(0, len(brackets), _DEPTH_BLOCK):
        block = np.frombuffer(brackets[start : start + _DEPTH_BLOCK], np.uint8)
        # "[" 0x5b and "{" 0x7b open; "]" 0x5d and "}" 0x7d close.
        steps = np.where((block == 0x5B) | (block == 0x7B), 1, -1).astype(np.int64)
        running = np.cumsum(steps) + depth
        if running.size and int(running.max()) > MAX_JSON_DEPTH:
            raise LimitExceededError(
                f"{what}: JSON nesting deeper than {MAX_JSON_DEPTH} levels; "
                "no model config nests this deep, so the file is refused"
            )
        depth = int(running[-1]) if running.size else depth


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result = dict(pairs)  # built in C; a shorter dict means a repeated key
    if len(result) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise HostileInputError(
                    f"duplicate JSON key {key!r}; readers disagree on which value "
                    "wins, so the file is refused"
                )
            seen.add(key)
    return result


def _parse_int(text: str) -> int:
    if len(text.lstrip("-")) > MAX_JSON_INT_DIGITS:
        raise LimitExceededError(
            f"JSON integer with {len(text)} digits (limit {MAX_JSON_INT_DIGITS}); "
            "no model config needs such a number, so the file is refused"
        )
    return int(text)


def loads_bounded(
    data: bytes | str,
    *,
    what: str = "JSON document",
    max_bytes: int = MAX_JSON_DOCUMENT_BYTES,
) -> Any:
    """Parse JSON with limits on size, depth, duplicate keys and integer length.

    NaN and Infinity are accepted, as Keras writes them in configs.
    """
    if len(data) > max_bytes:
        raise LimitExceededError(
            f"{what} is {len(data)} bytes (limit {max_bytes}); refused"
        )
    if isinstance(data, bytes):
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise InputError(f"{what} is not UTF-8 text ({exc.reason})") from exc
    else:
        text = data
    _check_depth(text, what)
    try:
        return json.loads(text, object_pairs_hook=_no_duplicates, parse_int=_parse_int)
    except json.JSONDecodeError as exc:
        raise InputError(
            f"{what} is not valid JSON: {exc.msg} at line {exc.lineno} column "
            f"{exc.colno}"
        ) from exc
    except RecursionError as exc:  # belt and braces; the depth scan runs first
        raise LimitExceededError(f"{what}: JSON nesting too deep") from exc
