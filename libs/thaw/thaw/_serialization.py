"""What crosses the wire from the caller's side: cloudpickled arguments and
results, and a failed call's exception rebuilt from ``Result.exc``/``error``/
``traceback`` (which the runtime fills, thaw.runtime.failure)."""

from __future__ import annotations

import pickle
from typing import Any

from thaw.exception import DeserializationError, RemoteError


def dumps(obj: Any) -> bytes:
    import cloudpickle  # imported on first use: containers that never call out don't pay for it

    return cloudpickle.dumps(obj)


def loads(data: bytes) -> Any:
    return pickle.loads(data)


def serialize_args(args: tuple[Any, ...], kwargs: dict[str, Any]) -> bytes:
    return dumps((args, kwargs))


def deserialize_value(data: bytes, what: str = "result") -> Any:
    try:
        return loads(data)
    except Exception as e:
        raise DeserializationError(
            f"the {what} came back but cannot be unpickled here ({type(e).__name__}: {e}); "
            "is the module that defines its type importable in this process?"
        ) from e


class RemoteTraceback(Exception):
    """The traceback of an exception raised in a container; set as the rebuilt
    exception's ``__cause__`` so that it prints above the local one."""

    def __init__(self, tb: str) -> None:
        super().__init__(tb)
        self.tb = tb

    def __str__(self) -> str:
        return f'\n"""\n{self.tb.rstrip()}\n"""'


def rebuild_exception(exc: bytes, error: str, traceback: str) -> BaseException:
    """The user's exception with the remote traceback as its cause, or a
    ``RemoteError`` carrying the text when it cannot be unpickled here."""
    if exc:
        try:
            rebuilt = loads(exc)
        except Exception:  # noqa: BLE001 - any failure of user code's unpickling means "send the text"
            rebuilt = None
        if isinstance(rebuilt, BaseException):
            if traceback:
                rebuilt.__cause__ = RemoteTraceback(traceback)
            return rebuilt
    message = error or "the remote function failed"
    if traceback:
        message += f"\n\nRemote traceback:\n{traceback.rstrip()}"
    return RemoteError(message)
