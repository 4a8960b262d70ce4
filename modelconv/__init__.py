"""modelconv: open any saved neural-network model, tell the truth about it,
and move it between formats without losing a bit.

The public API is imported lazily so that ``import modelconv`` stays light:
``load``, ``save``, ``convert``, ``diff``, ``verify``, the IR records
(``Model``, ``Layer``, ``Tensor``, ``Architecture``, ``Role``) and the errors.
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"

_LAZY = {
    "load": ("api", "load"),
    "save": ("api", "save"),
    "convert": ("api", "convert"),
    "ConvertReport": ("api", "ConvertReport"),
    "diff": ("diff", "diff_paths"),
    "diff_models": ("diff", "diff_models"),
    "verify": ("verify", "verify_path"),
    "inspect": ("inspect", "inspect_model"),
    "Model": ("model", "Model"),
    "Layer": ("model", "Layer"),
    "Tensor": ("model", "Tensor"),
    "Architecture": ("model", "Architecture"),
    "Role": ("model", "Role"),
    "ArraySource": ("model", "ArraySource"),
    "ModelconvError": ("errors", "ModelconvError"),
    "InputError": ("errors", "InputError"),
    "HostileInputError": ("errors", "HostileInputError"),
    "LossyConversionError": ("errors", "LossyConversionError"),
    "UsageError": ("errors", "UsageError"),
}

__all__ = ["__version__", *_LAZY]


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module 'modelconv' has no attribute {name!r}")
    import importlib

    module_name, attr = _LAZY[name]
    value = getattr(importlib.import_module(f".{module_name}", __name__), attr)
    globals()[name] = value
    return value
