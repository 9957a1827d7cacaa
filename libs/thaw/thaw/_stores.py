"""What ``thaw.Dict`` and ``thaw.Queue`` share: how an operation reaches the
gateway (HTTP from local code; the agent socket from a container) and how
keys and values are encoded.

Values are JSON text when the key and the value are plain JSON types (str,
int, finite float, bool, None, and lists and str-keyed dicts of them), so
other languages read them; cloudpickle otherwise (its bytes start with
0x80, which JSON text never does). A key becomes a key of the key-value
store's alphabet: ``s.<key>`` for a str of letters, digits, ``_``, ``=`` and
``-``; ``j.<base64url of its JSON>`` for another plain JSON key;
``p.<base64url of its cloudpickle>`` for anything else.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import math
import pickle
import re
import uuid
from collections.abc import Callable, Iterable, Iterator
from typing import Any, Generic, Self, TypeVar

import msgspec
from thaw_core.contract import STORE_BLOB_MAX_BYTES, STORE_BLOB_REF, STORE_MAX_VALUE_BYTES
from thaw_core.schema import check_name
from thaw_core.schema.stores import StoreOp, StoreReply

from thaw import exception
from thaw._env import is_local
from thaw._sync import aio_method, background_loop
from thaw.client import current, gateway_error

T = TypeVar("T")
_json = msgspec.json.Encoder()
_json_reply = msgspec.json.Decoder(StoreReply)
_msgpack_reply = msgspec.msgpack.Decoder(StoreReply)
_PLAIN_KEY = re.compile(r"^[A-Za-z0-9_=-]{1,512}$")
_SCALARS = (str, int, bool, type(None))


async def call(op: StoreOp, *, timeout_s: float = 0.0) -> StoreReply:
    """Carry ``op`` out; the gateway's errors raise as thaw exceptions."""
    if is_local():
        status, raw = await current().transport.request("POST", "/v1/stores", _json.encode(op))
        if status != 200:
            raise gateway_error(status, raw)
        return _json_reply.decode(raw)
    from thaw.runtime.store_calls import calls

    reply = _msgpack_reply.decode(await calls.call(op, timeout_s))
    if reply.error:
        raise exception.from_gateway(500, reply.code or "internal", reply.error)
    return reply


# One request carries at most this many bytes of values and this many items,
# so that it fits one NATS message on its way from a container.
BATCH_BYTES = 640 * 1024
BATCH_ITEMS = 1000


def batches(items: Iterable[T], size: Callable[[T], int]) -> Iterator[list[T]]:
    """``items`` in lists of at most ``BATCH_ITEMS`` and ``BATCH_BYTES``."""
    batch: list[T] = []
    total = 0
    for item in items:
        n = size(item)
        if batch and (total + n > BATCH_BYTES or len(batch) >= BATCH_ITEMS):
            yield batch
            batch, total = [], 0
        batch.append(item)
        total += n
    if batch:
        yield batch


# ---------------------------------------------------------------- encoding


def _plain(v: Any, depth: int = 0) -> bool:
    if depth > 32:
        return False
    t = type(v)
    if t in _SCALARS:
        return True
    if t is float:
        return math.isfinite(v)
    if t is list:
        return all(_plain(x, depth + 1) for x in v)
    if t is dict:
        return all(type(k) is str and _plain(x, depth + 1) for k, x in v.items())
    return False


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def encode_key(key: Any) -> str:
    if type(key) is str and _PLAIN_KEY.match(key):
        return "s." + key
    if _plain(key) and type(key) not in (list, dict):
        return "j." + _b64(json.dumps(key).encode())
    import cloudpickle

    return "p." + _b64(cloudpickle.dumps(key))


def decode_key(token: str) -> Any:
    kind, _, body = token.partition(".")
    if kind == "s":
        return body
    if kind == "j":
        return json.loads(_unb64(body))
    if kind == "p":
        return pickle.loads(_unb64(body))
    raise exception.DeserializationError(f"{token[:80]!r} is not a key thaw encoded")


def encode_value(value: Any, key: Any = "") -> bytes:
    if _plain(key) and _plain(value):
        return json.dumps(value, separators=(",", ":")).encode()
    import cloudpickle

    try:
        return cloudpickle.dumps(value)
    except Exception as e:
        raise exception.InvalidError(f"cannot serialize {type(value).__name__}: {e}") from e


async def kept(data: bytes) -> bytes:
    """``data`` as stored: itself, or when over ``STORE_MAX_VALUE_BYTES`` a
    reference (0x00, then JSON ``{"blob": sha256, "size": n}``) to a copy in
    the blob store."""
    if len(data) <= STORE_MAX_VALUE_BYTES:
        return data
    if len(data) > STORE_BLOB_MAX_BYTES:
        raise exception.RequestSizeError(
            f"a value is at most {STORE_BLOB_MAX_BYTES} bytes"
            f" ({STORE_BLOB_MAX_BYTES >> 20} MiB) once serialized; got {len(data)}:"
            " keep large data in a Volume and store its path"
        )
    sha = hashlib.sha256(data).hexdigest()
    if is_local():
        status, raw = await current().transport.request(
            "PUT", f"/v1/store-values/{sha}", data, content_type="application/octet-stream"
        )
        if status not in (200, 201):
            raise gateway_error(status, raw)
    else:
        from thaw.runtime.store_calls import calls

        await calls.blob(sha, data)
    return STORE_BLOB_REF + json.dumps({"blob": sha, "size": len(data)}).encode()


async def load(data: bytes) -> Any:
    """The value ``data`` stands for (fetched first when it is a reference)."""
    if data[:1] == STORE_BLOB_REF:
        sha = json.loads(data[1:])["blob"]
        if is_local():
            status, data = await current().transport.request("GET", f"/v1/store-values/{sha}")
            if status != 200:
                raise gateway_error(status, data)
        else:
            from thaw.runtime.store_calls import calls

            data = await calls.blob(sha)
    return decode_value(data)


def decode_value(data: bytes) -> Any:
    if data[:1] == b"\x80":
        try:
            return pickle.loads(data)
        except Exception as e:
            raise exception.DeserializationError(f"cannot unpickle a stored value: {e}") from e
    return json.loads(data)


# ---------------------------------------------------------------- the named object


class NamedStore:
    """What a Dict and a Queue share: a checked name, ``from_name``,
    ``ephemeral()``, ``delete(name)`` and the look-up (made first with
    ``create_if_missing``) before the first operation."""

    KIND = ""
    ENSURE: Any = None  # the Struct that looks one up: DictEnsure, QueueEnsure
    DELETE: Any = None

    def __init__(self, name: str, *, create_if_missing: bool = False) -> None:
        self.name = checked(self.KIND, name)
        self.create_if_missing = create_if_missing
        self._ensured = False

    @classmethod
    def from_name(
        cls, name: str, *, create_if_missing: bool = False, environment_name: str | None = None
    ) -> Self:
        if environment_name is not None:
            raise exception.InvalidError(
                f"{cls.__name__}.from_name(environment_name=...): thaw has one environment;"
                " leave it out"
            )
        return cls(name, create_if_missing=create_if_missing)

    @classmethod
    def ephemeral(cls) -> _Ephemeral[Self]:
        """One that lives for a ``with`` (or ``async with``) block, deleted at its end."""
        return _Ephemeral(cls(f"ephemeral-{uuid.uuid4().hex[:16]}", create_if_missing=True))

    @classmethod
    def delete(cls, name: str, *, environment_name: str | None = None) -> None:
        """Delete ``name`` and everything in it."""
        background_loop().run(call(cls.DELETE(name=checked(cls.KIND, name))))

    async def _ready(self) -> str:
        if self.create_if_missing and not self._ensured:
            await call(self.ENSURE(name=self.name, create_if_missing=True))
            self._ensured = True
        return self.name

    @aio_method
    async def hydrate(self) -> Self:
        """Look it up (made first with ``create_if_missing``): NotFoundError when missing."""
        await call(self.ENSURE(name=self.name, create_if_missing=self.create_if_missing))
        self._ensured = True
        return self

    def __len__(self) -> int:
        return int(self.len())  # type: ignore[attr-defined]

    def __repr__(self) -> str:
        return f"{type(self).__name__}.from_name({self.name!r})"


S = TypeVar("S", bound=NamedStore)


class _Ephemeral(Generic[S]):
    """``with X.ephemeral() as x`` and ``async with X.ephemeral() as x``."""

    def __init__(self, made: S) -> None:
        self.made = made

    def __enter__(self) -> S:
        return self.made.hydrate()  # type: ignore[no-any-return]

    def __exit__(self, *exc: object) -> None:
        with contextlib.suppress(exception.NotFoundError):
            type(self.made).delete(self.made.name)

    async def __aenter__(self) -> S:
        return await self.made.hydrate.aio()  # type: ignore[no-any-return]

    async def __aexit__(self, *exc: object) -> None:
        drop = type(self.made).DELETE(name=self.made.name)
        with contextlib.suppress(exception.NotFoundError):
            await background_loop().run_async(call(drop))


def checked(kind: str, name: str) -> str:
    try:
        return check_name(kind, name)
    except ValueError as e:
        raise exception.InvalidError(str(e)) from None
