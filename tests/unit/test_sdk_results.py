"""What a caller gets from a finished call: the value, or the remote error
rebuilt (original type, remote traceback as its cause), and gateway error
answers as thaw.exception types carrying the gateway's message."""

from __future__ import annotations

import traceback

import cloudpickle
import msgspec
import pytest
from thaw import exception
from thaw._results import result_outcome, result_value
from thaw.client import gateway_error
from thaw_core.api import CallResult


def raise_value_error() -> None:
    raise ValueError("bad input: -1")


def recorded_failure() -> bytes:
    """A CallResult as the gateway answers it for a call that raised (JSON text)."""
    try:
        raise_value_error()
    except ValueError as e:
        result = CallResult(
            call_id="fc-1",
            status="failure",
            codec="pickle",
            exc=cloudpickle.dumps(e),
            error="ValueError: bad input: -1",
            traceback="".join(traceback.format_exception(e)),
        )
    return msgspec.json.encode(result)


def decode(data: bytes) -> CallResult:
    return msgspec.json.decode(data, type=CallResult)


def test_success_value_is_unpickled() -> None:
    result = CallResult(
        call_id="fc-1", status="success", codec="pickle", value_b64=cloudpickle.dumps({"a": [1, 2]})
    )
    assert result_value(decode(msgspec.json.encode(result)), "app/f") == {"a": [1, 2]}


def test_json_codec_value_is_taken_as_is() -> None:
    assert result_value(
        CallResult(call_id="fc-1", status="success", codec="json", value=[1, "x"]), "app/f"
    ) == [1, "x"]


def test_failure_reraises_the_original_type_with_the_remote_traceback() -> None:
    with pytest.raises(ValueError, match="bad input: -1") as info:
        result_value(decode(recorded_failure()), "app/f")
    cause = info.value.__cause__
    assert cause is not None
    assert "raise_value_error" in str(cause) and 'raise ValueError("bad input: -1")' in str(cause)
    # Printed, the remote traceback comes first, then the caller's.
    printed = "".join(traceback.format_exception(info.value))
    assert printed.index("raise_value_error") < printed.index(
        "The above exception was the direct cause"
    )


def test_unpicklable_exception_becomes_remote_error_with_text_and_traceback() -> None:
    result = CallResult(
        call_id="fc-1",
        status="failure",
        codec="pickle",
        exc=b"\x80\x04not a pickle",
        error="CustomError: it broke",
        traceback='Traceback (most recent call last):\n  File "app.py", line 3\n',
    )
    with pytest.raises(exception.RemoteError, match="CustomError: it broke") as info:
        result_value(result, "app/f")
    assert 'File "app.py", line 3' in str(info.value)


@pytest.mark.parametrize(
    ("status", "error_type", "message"),
    [
        ("timeout", exception.FunctionTimeoutError, "ran past its timeout"),
        ("cancelled", exception.InputCancellation, "was cancelled"),
        ("terminated", exception.ExecutionError, "was terminated"),
    ],
)
def test_other_statuses(status: str, error_type: type[Exception], message: str) -> None:
    result = CallResult(call_id="fc-9", status=status, codec="pickle")  # type: ignore[arg-type]
    with pytest.raises(error_type, match=message):
        result_value(result, "app/f")
    assert isinstance(result_outcome(result, "app/f"), error_type)


def test_function_timeout_is_also_a_builtin_timeout_error() -> None:
    assert issubclass(exception.FunctionTimeoutError, TimeoutError)


def test_value_that_cannot_be_unpickled_here_says_so() -> None:
    result = CallResult(
        call_id="fc-1", status="success", codec="pickle", value_b64=b"\x80\x04\x95garbage"
    )
    with pytest.raises(exception.DeserializationError, match="cannot be unpickled here"):
        result_value(result, "app/f")


@pytest.mark.parametrize(
    ("status", "code", "error_type"),
    [
        (400, "bad_request", exception.InvalidError),
        (401, "unauthorized", exception.AuthError),
        (403, "forbidden", exception.AuthError),
        (404, "not_found", exception.NotFoundError),
        (409, "conflict", exception.AlreadyExistsError),
        (413, "payload_too_large", exception.RequestSizeError),
        (504, "timeout", exception.TimeoutError),
        (500, "internal", exception.ServiceError),
    ],
)
def test_gateway_error_bodies_map_to_exceptions_with_the_message(
    status: int, code: str, error_type: type
) -> None:
    body = msgspec.json.encode({"error": {"code": code, "message": f"the gateway says {code}"}})
    error = gateway_error(status, body, token="t")
    assert type(error) is error_type
    assert str(error) == f"the gateway says {code}"


def test_non_api_error_bodies_still_give_a_message() -> None:
    error = gateway_error(502, b"Bad Gateway from the proxy", token="t")
    assert isinstance(error, exception.ServiceError) and "Bad Gateway from the proxy" in str(error)


def test_auth_error_without_a_token_says_how_to_get_one() -> None:
    body = msgspec.json.encode(
        {"error": {"code": "unauthorized", "message": "missing bearer token"}}
    )
    error = gateway_error(401, body, token=None)
    assert isinstance(error, exception.AuthError)
    assert "missing bearer token" in str(error) and "THAW_TOKEN" in str(error)
