"""A thaw class read back from its markers (``thaw.markers``), for the SDK and
the in-container runtime:

- :func:`instantiate`: an instance with its ``thaw.parameter()`` values set;
- :func:`hooks`: its enter/exit hooks and methods, as plain functions that
  take the instance as their first argument;
- :func:`parameters`, :func:`check_params`, :func:`members`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

from thaw.markers import Parameter


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
