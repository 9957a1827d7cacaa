"""``@thaw.concurrent(max_inputs=N)``: one container runs up to N inputs at once."""

from __future__ import annotations

import inspect
from typing import Any, TypeVar

from thaw.exception import InvalidError

T = TypeVar("T")


def concurrent(_obj: Any = None, *, max_inputs: int, target_inputs: int | None = None) -> Any:
    if _obj is not None:
        raise InvalidError("use @thaw.concurrent(max_inputs=N), with its argument")
    if not isinstance(max_inputs, int) or isinstance(max_inputs, bool) or max_inputs < 1:
        raise InvalidError(f"max_inputs must be a positive integer, got {max_inputs!r}")
    if target_inputs is not None and not 1 <= target_inputs <= max_inputs:
        raise InvalidError(
            f"target_inputs must be from 1 to max_inputs ({max_inputs}), got {target_inputs!r}"
        )

    def mark(obj: T) -> T:
        if hasattr(obj, "spec"):
            raise InvalidError(
                "@thaw.concurrent(...) goes below @app.function / @app.cls, next to the function or class"
            )
        obj.__thaw_concurrent__ = {  # type: ignore[attr-defined]
            "max_inputs": max_inputs,
            "target_inputs": target_inputs or max_inputs,
        }
        return obj

    return mark


# As the hosted platform bounds them.
MAX_BATCH_SIZE = 1000
MAX_WAIT_MS = 10 * 60 * 1000


def batched(_obj: Any = None, *, max_batch_size: int, wait_ms: int) -> Any:
    """``@thaw.batched``: the function takes a list per parameter and returns
    a list as long; callers pass single values, the container gathers them."""
    if _obj is not None:
        raise InvalidError("use @thaw.batched(max_batch_size=N, wait_ms=MS), with its arguments")
    for option, value, top in (
        ("max_batch_size", max_batch_size, MAX_BATCH_SIZE),
        ("wait_ms", wait_ms, MAX_WAIT_MS),
    ):
        low = 1 if option == "max_batch_size" else 0
        if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= top:
            raise InvalidError(f"{option} must be an integer from {low} to {top}, got {value!r}")

    def mark(obj: T) -> T:
        if hasattr(obj, "spec") or isinstance(obj, type):
            raise InvalidError(
                "@thaw.batched(...) goes below @app.function, next to the function itself"
            )
        check_batchable(obj)
        obj.__thaw_batched__ = {  # type: ignore[attr-defined]
            "max_batch_size": max_batch_size,
            "wait_ms": wait_ms,
        }
        return obj

    return mark


def check_batchable(fn: Any) -> None:
    """Every parameter gathers one value per input into a list: a generator
    has no one result per input, ``*args``/``**kwargs`` no list to gather into."""
    name = getattr(fn, "__qualname__", repr(fn))
    if inspect.isgeneratorfunction(fn) or inspect.isasyncgenfunction(fn):
        raise InvalidError(f"@thaw.batched function {name} cannot be a generator")
    params = inspect.signature(fn).parameters.values()
    if not params:
        raise InvalidError(f"@thaw.batched function {name} needs at least one parameter")
    variadic = [p.name for p in params if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]
    if variadic:
        raise InvalidError(
            f"@thaw.batched function {name} cannot take *args or **kwargs ({', '.join(variadic)})"
        )
