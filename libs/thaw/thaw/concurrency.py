"""``@thaw.concurrent(max_inputs=N)``: one container runs up to N inputs at once."""

from __future__ import annotations

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


def batched(_obj: Any = None, *, max_batch_size: int = 0, wait_ms: int = 0) -> Any:
    """``@thaw.batched``: refused, naming it, so that an app using it fails
    at import with a thaw error rather than an AttributeError."""
    raise InvalidError(
        "@thaw.batched is not supported by this thaw: call the function once per input "
        "(with .map for many), or gather inputs in a @thaw.concurrent function"
    )
