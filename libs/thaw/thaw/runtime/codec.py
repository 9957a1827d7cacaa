"""Arguments, constructor parameters and return values, by the input's codec.

``pickle``: ``cloudpickle`` of ``(args, kwargs)`` (the Python SDK).
``json``: ``{"args": [...], "kwargs": {...}}`` (curl and other languages).
Decoders and encoders are built once, at import.
"""

from __future__ import annotations

import pickle
from typing import Any

import cloudpickle
import msgspec
from thaw_core.schema import Codec

from thaw.exception import DeserializationError, ExecutionError


class InputDecodeError(DeserializationError):
    """An input's arguments or parameters could not be decoded in the container."""


class ResultEncodeError(ExecutionError):
    """A return value could not be encoded by the caller's codec."""


class _JsonCall(msgspec.Struct, forbid_unknown_fields=True):
    args: list[Any] = []
    kwargs: dict[str, Any] = {}


_json_call = msgspec.json.Decoder(_JsonCall)
_json_params = msgspec.json.Decoder(dict[str, Any])
_json_encoder = msgspec.json.Encoder()
_JSON_SHAPE = '{"args": [...], "kwargs": {...}}'


def _unpickle(data: bytes, what: str) -> Any:
    try:
        return pickle.loads(data)
    except Exception as e:
        hint = (
            " (the container's image must have every module the values come from)"
            if isinstance(e, ImportError | AttributeError)
            else ""
        )
        raise InputDecodeError(
            f"could not unpickle the {what}: {type(e).__name__}: {e}{hint}"
        ) from e


def decode_args(codec: Codec, data: bytes) -> tuple[tuple[Any, ...] | list[Any], dict[str, Any]]:
    if not data:
        return (), {}
    if codec == "json":
        try:
            call = _json_call.decode(data)
        except msgspec.DecodeError as e:
            raise InputDecodeError(f"bad JSON arguments ({e}); expected {_JSON_SHAPE}") from e
        return call.args, call.kwargs
    decoded = _unpickle(data, "arguments")
    match decoded:
        case (tuple() | list() as args, dict() as kwargs) if all(
            isinstance(k, str) for k in kwargs
        ):
            return args, kwargs
    raise InputDecodeError(
        f"pickled arguments must be (args: tuple, kwargs: dict[str, Any]), got {type(decoded).__name__}"
    )


def decode_params(codec: Codec, data: bytes) -> dict[str, Any]:
    """A class's constructor parameters; empty bytes mean none."""
    if not data:
        return {}
    if codec == "json":
        try:
            return _json_params.decode(data)
        except msgspec.DecodeError as e:
            raise InputDecodeError(f"bad JSON parameters ({e}); expected an object") from e
    params = _unpickle(data, "parameters")
    if not isinstance(params, dict) or not all(isinstance(k, str) for k in params):
        raise InputDecodeError(
            f"pickled parameters must be a dict[str, Any], got {type(params).__name__}"
        )
    return params


def encode_value(codec: Codec, value: Any, producer: str) -> bytes:
    """``producer`` names the function, for the error a caller sees."""
    if codec == "json":
        try:
            return _json_encoder.encode(value)
        except (TypeError, ValueError, OverflowError) as e:
            raise ResultEncodeError(
                f"the return value of {producer} ({type(value).__name__}) is not "
                f"JSON-serialisable: {e}; return plain JSON values or call with the pickle codec"
            ) from e
    try:
        return cloudpickle.dumps(value)
    except Exception as e:
        raise ResultEncodeError(
            f"the return value of {producer} ({type(value).__name__}) could not be pickled: "
            f"{type(e).__name__}: {e}"
        ) from e
