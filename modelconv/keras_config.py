"""Keras model configs of every version: layers, edges, parameter counts.

Placeholder until the keras_config work lands: it keeps the config verbatim
and derives nothing.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .model import Architecture


def build_architecture(config: Mapping[str, Any]) -> Architecture:
    """An Architecture from a Keras model config of any version."""
    return Architecture(framework="keras", config=config)
