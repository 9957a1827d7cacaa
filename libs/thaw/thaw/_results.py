"""A ``CallResult`` turned into what the caller gets: the value, or the error."""

from __future__ import annotations

from typing import Any

from thaw_core.api import CallResult

from thaw._serialization import deserialize_value, rebuild_exception
from thaw.exception import (
    DeserializationError,
    ExecutionError,
    FunctionTimeoutError,
    InputCancellation,
)


def result_error(result: CallResult, label: str) -> BaseException | None:
    """The exception a finished call stands for, or None when it succeeded."""
    match result.status:
        case "success":
            return None
        case "failure":
            return rebuild_exception(result.exc, result.error, result.traceback)
        case "timeout":
            return FunctionTimeoutError(result.error or f"{label} ran past its timeout")
        case "cancelled":
            return InputCancellation(
                result.error or f"call {result.call_id} to {label} was cancelled"
            )
        case "terminated":
            return ExecutionError(
                f"call {result.call_id} to {label} was terminated"
                + (f": {result.error}" if result.error else " (its container stopped)")
            )
    return ExecutionError(
        f"call {result.call_id} to {label} ended with unknown status {result.status!r}"
    )


def result_value(result: CallResult, label: str) -> Any:
    """The call's return value; raises what the call raised."""
    error = result_error(result, label)
    if error is not None:
        raise error
    if result.codec == "json":
        return result.value
    return deserialize_value(result.value_b64, f"result of {label}") if result.value_b64 else None


def result_outcome(result: CallResult, label: str) -> Any:
    """The value, or the exception itself (``return_exceptions=True``)."""
    error = result_error(result, label)
    if error is not None:
        return error
    try:
        return result_value(result, label)
    except DeserializationError as e:
        return e
