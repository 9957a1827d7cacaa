"""``thaw.Dict`` and ``thaw.Queue`` on the wire: one tagged Struct per
operation, answered by ``StoreReply``.

The gateway carries every operation out, whether it came over HTTP
(``POST /v1/stores``, JSON, from local code and other languages) or from a
container through its agent (``contract.STORE_REQUEST``, msgpack). Keys and
values are opaque bytes here: the SDK encodes them (JSON where key and value
are plain JSON types, cloudpickle otherwise; a key becomes a key-value key
of its own alphabet, see ``thaw.dict``), so the gateway never unpickles.
"""

from __future__ import annotations

from typing import Literal

from thaw_core.schema.base import Message, Spec

StoreErrorCode = Literal["", "bad_request", "not_found", "conflict", "payload_too_large"]


class DictEnsure(Message, tag="dict_ensure"):
    """Look a dict up; make it first with ``create_if_missing``. With
    ``exclusive`` an existing one is a conflict."""

    name: str
    create_if_missing: bool = False
    exclusive: bool = False


class DictDelete(Message, tag="dict_delete"):
    name: str


class DictList(Message, tag="dict_list"):
    pass


class DictGet(Message, tag="dict_get"):
    name: str
    key: str


class DictPut(Message, tag="dict_put"):
    """Set ``key``; with ``skip_if_exists`` only when it is not set (``found``
    in the reply says it was, and nothing changed)."""

    name: str
    key: str
    value: bytes
    skip_if_exists: bool = False


class DictUpdate(Message, tag="dict_update"):
    name: str
    items: list[tuple[str, bytes]]


class DictPop(Message, tag="dict_pop"):
    name: str
    key: str


class DictLen(Message, tag="dict_len"):
    name: str


class DictClear(Message, tag="dict_clear"):
    name: str


class DictScan(Message, tag="dict_scan"):
    """A page of entries from stream position ``cursor`` (0: the start);
    the reply's ``cursor`` is where the next page starts, 0 after the last."""

    name: str
    cursor: int = 0
    values: bool = True


class QueueEnsure(Message, tag="queue_ensure"):
    name: str
    create_if_missing: bool = False
    exclusive: bool = False


class QueueDelete(Message, tag="queue_delete"):
    name: str


class QueueList(Message, tag="queue_list"):
    pass


class QueuePut(Message, tag="queue_put"):
    name: str
    values: list[bytes]
    partition: str | None = None


class QueueGet(Message, tag="queue_get"):
    """Take up to ``n`` items, waiting up to ``timeout_s`` for the first.
    ``lease``: the items stay the getter's until it acks them (``QueueAck``)
    and go to another getter if it never does; without, they are acked here.
    ``ack``: tokens of items taken before, acked first."""

    name: str
    n: int = 1
    timeout_s: float = 0.0
    partition: str | None = None
    lease: bool = False
    ack: list[str] = []


class QueueAck(Message, tag="queue_ack"):
    """Items taken with ``lease``: done with (``ok``), or to go to another getter."""

    tokens: list[str]
    ok: bool = True


class QueueLen(Message, tag="queue_len"):
    name: str
    partition: str | None = None
    total: bool = False


class QueueClear(Message, tag="queue_clear"):
    name: str
    partition: str | None = None
    all: bool = False


class QueuePeek(Message, tag="queue_peek"):
    """Items without taking them, from stream position ``cursor``."""

    name: str
    partition: str | None = None
    cursor: int = 0
    limit: int = 100


STORE_OPS: tuple[type[Message], ...] = (
    DictEnsure, DictDelete, DictList, DictGet, DictPut, DictUpdate, DictPop, DictLen,
    DictClear, DictScan, QueueEnsure, QueueDelete, QueueList, QueuePut, QueueGet,
    QueueAck, QueueLen, QueueClear, QueuePeek,
)  # fmt: skip
StoreOp = (
    DictEnsure | DictDelete | DictList | DictGet | DictPut | DictUpdate | DictPop | DictLen
    | DictClear | DictScan | QueueEnsure | QueueDelete | QueueList | QueuePut | QueueGet
    | QueueAck | QueueLen | QueueClear | QueuePeek
)  # fmt: skip


class StoreInfo(Spec):
    """A dict or a queue: its name and how many entries (items) it holds."""

    name: str
    count: int = 0
    bytes: int = 0


class StoreReply(Message, tag="store_reply"):
    """What any operation answers; the fields it does not set keep their defaults.

    ``found``: the key was there (get, pop, put with skip_if_exists).
    ``value``/``values``: what get/pop, get from a queue and peek read.
    ``keys``: the keys of a scan page (``values`` beside them when asked).
    ``tokens``: one per value a leased queue get took, to ack it with.
    ``count``: len; items put; entries cleared. ``cursor``: the next page.
    ``error``/``code``: why it failed (over NATS; HTTP says it with a status).
    """

    found: bool = False
    value: bytes = b""
    values: list[bytes] = []
    keys: list[str] = []
    tokens: list[str] = []
    count: int = 0
    cursor: int = 0
    infos: list[StoreInfo] = []
    error: str = ""
    code: StoreErrorCode = ""
