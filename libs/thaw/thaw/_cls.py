"""Class machinery shared by the SDK and the in-container runtime.

The markers (``@thaw.enter``, ``@thaw.exit``, ``@thaw.method``) only set
attributes on the user's function and return it unchanged, so a class stays a
plain Python class. The runtime calls exactly three things from here:

- :func:`resolve`: the ``thaw.Function`` / ``thaw.Cls`` a spec names;
- :func:`instantiate`: an instance with its ``thaw.parameter()`` values set;
- :func:`hooks`: its enter/exit hooks and methods, as plain functions that
  take the instance as their first argument.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from types import ModuleType
from typing import TYPE_CHECKING, Any, NamedTuple, TypeVar

from thaw.exception import InvalidError

if TYPE_CHECKING:
    from thaw.cls import Cls
    from thaw.functions import Function

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


# ---------------------------------------------------------------- markers


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


# ---------------------------------------------------------------- introspection


def members(user_cls: type) -> dict[str, Any]:
    """Attributes in definition order, a subclass's overriding its bases'."""
    members: dict[str, Any] = {}
    for klass in reversed(user_cls.__mro__):
        if klass is object:
            continue
        for name, value in vars(klass).items():
            members.pop(name, None)  # an override takes the subclass's place in the order
            members[name] = value
    return members


def parameters(user_cls: type) -> dict[str, Parameter]:
    return {
        name: value
        for name, value in members(user_cls).items()
        if isinstance(value, Parameter) and value.init
    }


class Hooks(NamedTuple):
    enter_snap: list[Callable[[Any], Any]]
    enter_nosnap: list[Callable[[Any], Any]]
    exit: list[Callable[[Any], Any]]
    methods: dict[str, Callable[..., Any]]


def hooks(user_cls: type) -> Hooks:
    """The marked functions of ``user_cls``, unbound, in definition order."""
    found = Hooks([], [], [], {})
    for name, value in members(user_cls).items():
        if not callable(value) or isinstance(value, type):
            continue
        if (marker := getattr(value, "__thaw_enter__", None)) is not None:
            (found.enter_snap if marker.get("snap") else found.enter_nosnap).append(value)
        if getattr(value, "__thaw_exit__", False):
            found.exit.append(value)
        if getattr(value, "__thaw_method__", False):
            found.methods[name] = value
    return found


def check_params(user_cls: type, params: dict[str, Any]) -> dict[str, Any]:
    """``params`` with defaults applied; TypeError naming what is wrong."""
    declared = parameters(user_cls)
    unknown = sorted(set(params) - set(declared))
    if unknown:
        hint = (
            f"its parameters are: {', '.join(declared)}"
            if declared
            else "it declares no thaw.parameter()"
        )
        raise TypeError(
            f"{user_cls.__name__}() got unexpected parameter(s) {', '.join(map(repr, unknown))}; {hint}"
        )
    missing = [name for name, p in declared.items() if p.required and name not in params]
    if missing:
        raise TypeError(
            f"{user_cls.__name__}() missing required parameter(s): {', '.join(map(repr, missing))} "
            "(pass them as keyword arguments, or give thaw.parameter() a default)"
        )
    return {name: params.get(name, p.default) for name, p in declared.items()}


def instantiate(user_cls: type, params: dict[str, Any]) -> object:
    """An instance of the user's class with its parameters set as attributes.

    ``__init__`` runs after them when the class defines one (without arguments)."""
    values = check_params(user_cls, params)
    obj = user_cls.__new__(user_cls)
    for name, value in values.items():
        setattr(obj, name, value)
    if user_cls.__init__ is not object.__init__:
        obj.__init__()
    return obj


def resolve(module: ModuleType, qualname: str) -> Function | Cls:
    """The thaw object at ``module.<qualname>``: what a FunctionSpec points at."""
    from thaw.cls import Cls
    from thaw.functions import Function

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
