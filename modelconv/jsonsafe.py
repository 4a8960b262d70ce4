"""Bounded JSON parsing for configs, headers and manifests.

Python's json module recurses per nesting level and accepts duplicate keys,
huge integers and any size; files are untrusted, so each of those is bounded
here before or while parsing.
"""

from __future__ import annotations

import json
from typing import Any

from .errors import HostileInputError, InputError, LimitExceededError
from .limits import MAX_JSON_DEPTH, MAX_JSON_DOCUMENT_BYTES, MAX_JSON_INT_DIGITS


def _check_depth(text: str, what: str) -> None:
    """Refuse nesting deeper than MAX_JSON_DEPTH with one linear scan."""
    depth = 0
    in_string = False
    escaped = False
    for char in text:
        if in_string:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == '"':
                in_string = False
        elif char == '"':
            in_string = True
        elif char in "[{":
            depth += 1
            if depth > MAX_JSON_DEPTH:
                raise LimitExceededError(
                    f"{what}: JSON nesting deeper than {MAX_JSON_DEPTH} levels; "
                    "no model config nests this deep, so the file is refused"
                )
        elif char in "]}":
            depth -= 1


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise HostileInputError(
                f"duplicate JSON key {key!r}; readers disagree on which value "
                "wins, so the file is refused"
            )
        result[key] = value
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
