"""The markers of a thaw class: ``thaw.parameter()`` for its constructor
parameters, ``@thaw.enter``, ``@thaw.exit`` and ``@thaw.method`` for its hooks
and remote methods.

They only set attributes on the user's function and return it unchanged, so
a class stays a plain Python class; ``thaw._cls`` reads them back.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any, TypeVar

from thaw.exception import InvalidError

__all__ = ["MISSING", "Parameter", "enter", "exit", "is_generator_function", "method", "parameter"]

F = TypeVar("F", bound=Callable[..., Any])


class _Missing:
    def __repr__(self) -> str:
        return "<required>"


MISSING: Any = _Missing()


class Parameter:
    """A constructor parameter of a thaw class: ``name: str = thaw.parameter(default="x")``."""

    def __init__(self, *, default: Any = MISSING, init: bool = True) -> None:
        self.default = default
        self.init = init

    @property
    def required(self) -> bool:
        return self.default is MISSING

    def __repr__(self) -> str:
        return f"thaw.parameter(default={self.default!r})"


def parameter(*, default: Any = MISSING, init: bool = True) -> Any:
    # Typed Any so that `x: int = thaw.parameter(default=1)` type-checks.
    return Parameter(default=default, init=init)


def _check_plain_function(decorator: str, f: Any) -> None:
    if not callable(f) or isinstance(f, type) or hasattr(f, "spec"):
        raise InvalidError(
            f"@thaw.{decorator}() decorates a method of a class, got {f!r}"
            + (" (put it below @app.function/@app.cls, not above)" if hasattr(f, "spec") else "")
        )


def enter(_f: F | None = None, *, snap: bool = False) -> Any:
    """Run once when a container starts; ``snap=True``: before the memory snapshot."""

    def mark(f: F) -> F:
        _check_plain_function("enter", f)
        f.__thaw_enter__ = {"snap": bool(snap)}  # type: ignore[attr-defined]
        return f

    return mark(_f) if _f is not None else mark


def exit(_f: F | None = None) -> Any:
    """Run when a container shuts down."""

    def mark(f: F) -> F:
        _check_plain_function("exit", f)
        f.__thaw_exit__ = True  # type: ignore[attr-defined]
        return f

    return mark(_f) if _f is not None else mark


def method(_f: F | None = None, *, is_generator: bool | None = None) -> Any:
    """A method callable remotely: ``Cls().name.remote(...)``."""

    def mark(f: F) -> F:
        _check_plain_function("method", f)
        f.__thaw_method__ = True  # type: ignore[attr-defined]
        f.__thaw_is_generator__ = (  # type: ignore[attr-defined]
            is_generator if is_generator is not None else is_generator_function(f)
        )
        return f

    return mark(_f) if _f is not None else mark


def is_generator_function(f: Callable[..., Any]) -> bool:
    return inspect.isgeneratorfunction(f) or inspect.isasyncgenfunction(f)
