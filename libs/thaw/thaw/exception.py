"""Errors the SDK raises, named as in Modal so that ``except modal.exception.X`` ports.

Gateway error bodies (``{"error": {"code", "message"}}``, thaw_core.api) map to
these through :func:`from_gateway`; the gateway's message is kept verbatim.
"""

from __future__ import annotations

import builtins


class Error(Exception):
    """Base of every error thaw raises itself (not the user's own exceptions)."""


class AuthError(Error):
    """The gateway refused the token (missing, unknown or revoked)."""


class ConnectionError(Error, builtins.ConnectionError):
    """The gateway cannot be reached."""


class InvalidError(Error, ValueError):
    """Bad options, names or arguments, found before anything is sent."""


class NotFoundError(Error):
    """No such app, function, call, container or bundle."""


class AlreadyExistsError(Error):
    """The gateway answered 409 conflict."""


class ResourceExhaustedError(Error):
    """No node has room for what was asked now; asking again later may work."""


class RequestSizeError(Error):
    """An input or a deploy body is over the gateway's size limit."""


class ServiceError(Error):
    """The gateway failed on its side (500)."""


class ExecutionError(Error):
    """A call could not run to completion for a reason other than the user's code
    (its container was terminated, its result cannot be read)."""


class DeserializationError(ExecutionError):
    """A result or an exception came back but cannot be unpickled here."""


class RemoteError(Error):
    """The user's code raised an exception that cannot be rebuilt in the caller;
    the message holds its text and remote traceback."""


class TimeoutError(Error, builtins.TimeoutError):
    """Waiting for a result took longer than the caller allowed."""


class FunctionTimeoutError(TimeoutError):
    """The function ran past its own ``timeout=``."""


class SandboxTimeoutError(TimeoutError):
    """A sandbox ran past its ``timeout=`` (or its ``idle_timeout=``)."""


class SandboxTerminatedError(Error):
    """A sandbox was terminated (``terminate()``, ``thaw container stop``)."""


class InputCancellation(Error):
    """The call was cancelled before it produced a result."""


_BY_CODE: dict[str, type[Error]] = {
    "bad_request": InvalidError,
    "unauthorized": AuthError,
    "forbidden": AuthError,
    "not_found": NotFoundError,
    "conflict": AlreadyExistsError,
    # A valid request that what it names refuses as it is (a directory read as a file).
    "invalid_state": InvalidError,
    "payload_too_large": RequestSizeError,
    "resource_exhausted": ResourceExhaustedError,
    "timeout": TimeoutError,
    "internal": ServiceError,
}

_BY_STATUS: dict[int, str] = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    409: "conflict",
    413: "payload_too_large",
    429: "resource_exhausted",
    504: "timeout",
}


def from_gateway(status: int, code: str | None, message: str) -> Error:
    """The exception for one gateway error answer. ``code`` wins over the HTTP
    status, which only matters when the body was not the API's error shape."""
    if code not in _BY_CODE:
        code = _BY_STATUS.get(status, "internal")
    return _BY_CODE[code](message)
