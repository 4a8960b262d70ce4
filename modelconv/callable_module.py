"""Let a submodule named like a public function stay callable.

``modelconv.diff``, ``modelconv.verify`` and ``modelconv.inspect`` are public
functions, but importing the submodules of the same names makes Python bind
the package attributes to the modules themselves. Making each such module
callable keeps ``modelconv.diff(a, b)`` working whichever happened first.
"""

from __future__ import annotations

import sys
import types
from collections.abc import Callable
from typing import Any


def make_callable(module_name: str, function: Callable[..., Any]) -> None:
    """Calling module ``module_name`` calls ``function``."""

    class _CallableModule(types.ModuleType):
        def __call__(self, *args: Any, **kwargs: Any) -> Any:
            return function(*args, **kwargs)

    _CallableModule.__doc__ = function.__doc__
    sys.modules[module_name].__class__ = _CallableModule
