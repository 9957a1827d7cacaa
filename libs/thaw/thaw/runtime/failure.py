"""What a caller learns about an exception raised in the container."""

from __future__ import annotations

import os
import pickle
import traceback
from types import TracebackType
from typing import NamedTuple

import cloudpickle

import thaw

# The frames that lead to the user's code (this runtime, the SDK's wrappers,
# asyncio, the thread pool, importlib) say nothing to the user: a traceback
# starts at their first frame.
_THAW_DIR = os.path.dirname(os.path.abspath(thaw.__file__)) + os.sep
_STDLIB_DIR = os.path.dirname(os.path.abspath(os.__file__)) + os.sep
_INSTALLED = (os.sep + "site-packages" + os.sep, os.sep + "dist-packages" + os.sep)


class Failure(NamedTuple):
    error: str  # "TypeName: message"
    traceback: str
    exc: bytes  # cloudpickle of the exception, b"" when it does not round-trip


def _is_plumbing(filename: str) -> bool:
    if filename.startswith((_THAW_DIR, "<frozen ")):
        return True
    # The image's own packages may live under the standard library's directory
    # (/usr/local/lib/python3.11/site-packages): those are user code.
    return filename.startswith(_STDLIB_DIR) and not any(d in filename for d in _INSTALLED)


def _user_frames(tb: TracebackType | None) -> TracebackType | None:
    while tb is not None and _is_plumbing(tb.tb_frame.f_code.co_filename):
        tb = tb.tb_next
    return tb


def _message(exc: BaseException) -> str:
    try:
        text = str(exc)
    except Exception:  # noqa: BLE001 - any user __str__ may raise; the name still helps
        text = "<exception str() failed>"
    name = type(exc).__name__
    return f"{name}: {text}" if text else name


def _pickled(exc: BaseException) -> bytes:
    # An exception whose __init__ takes other arguments than it passes to
    # BaseException pickles fine but cannot be unpickled: check the round
    # trip here, where a failure costs nothing, rather than in the caller.
    try:
        data = cloudpickle.dumps(exc)
        pickle.loads(data)
    except Exception:  # noqa: BLE001 - whatever the reason, the caller gets the text only
        return b""
    return data


def describe(exc: BaseException) -> Failure:
    tb = _user_frames(exc.__traceback__)
    text = "".join(traceback.format_exception(type(exc), exc, tb))
    return Failure(error=_message(exc), traceback=text, exc=_pickled(exc))
