"""The thaw object a FunctionSpec names, found in its imported module: how the
in-container runtime (and a deploy's fake gateway in tests) gets from a spec
to the user's function or class."""

from __future__ import annotations

from types import ModuleType
from typing import Any

from thaw.cls import Cls
from thaw.functions import Function


def resolve(module: ModuleType, qualname: str) -> Function | Cls:
    """The thaw object at ``module.<qualname>``: what a FunctionSpec points at."""
    obj: Any = module
    for part in qualname.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise AttributeError(
                f"module {module.__name__!r} has no {qualname!r} (is it defined at module level?)"
            ) from None
    if not isinstance(obj, (Function, Cls)):
        raise TypeError(
            f"{module.__name__}.{qualname} is {type(obj).__name__}, not a function or class "
            "decorated with @app.function / @app.cls"
        )
    return obj
