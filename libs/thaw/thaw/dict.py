"""``thaw.Dict``: a named key-value store that functions and local code share.

Each Dict is a JetStream key-value bucket (``contract.dict_bucket``); every
operation goes through the gateway (from a container, relayed by its
agent). Keys and values are encoded as ``thaw._stores`` says: JSON where
both are plain JSON types, so other languages can read them; cloudpickle
otherwise. A value over ``contract.STORE_MAX_VALUE_BYTES`` once serialized
is kept in the blob store and referred to (``thaw._stores.kept``), up to
``contract.STORE_BLOB_MAX_BYTES``; larger ones are refused with
``RequestSizeError``.

Every method has an ``.aio`` form for event loops (``await d.get.aio(k)``).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator, Mapping
from typing import Any

from thaw_core.schema.stores import (
    DictClear,
    DictDelete,
    DictEnsure,
    DictGet,
    DictLen,
    DictList,
    DictPop,
    DictPut,
    DictScan,
    DictUpdate,
    StoreInfo,
)

from thaw import _stores
from thaw._stores import decode_key, encode_key, encode_value, kept, load
from thaw._sync import aio_iterator, aio_method, background_loop

_MISSING = object()


class Dict(_stores.NamedStore):
    KIND = "dict"
    ENSURE = DictEnsure
    DELETE = DictDelete

    # ------------------------------------------------------------ one key

    @aio_method
    async def get(self, key: Any, default: Any = None) -> Any:
        reply = await _stores.call(DictGet(name=await self._ready(), key=encode_key(key)))
        return await load(reply.value) if reply.found else default

    @aio_method
    async def contains(self, key: Any) -> bool:
        reply = await _stores.call(DictGet(name=await self._ready(), key=encode_key(key)))
        return reply.found

    @aio_method
    async def put(self, key: Any, value: Any, *, skip_if_exists: bool = False) -> bool:
        """Set ``key``; False (and nothing changed) when ``skip_if_exists`` and it is set."""
        op = DictPut(
            name=await self._ready(),
            key=encode_key(key),
            value=await kept(encode_value(value, key)),
            skip_if_exists=skip_if_exists,
        )
        return not (await _stores.call(op)).found

    @aio_method
    async def pop(self, key: Any, default: Any = _MISSING) -> Any:
        """Remove ``key`` and return its value (KeyError when missing, unless ``default``)."""
        reply = await _stores.call(DictPop(name=await self._ready(), key=encode_key(key)))
        if reply.found:
            return await load(reply.value)
        if default is _MISSING:
            raise KeyError(key)
        return default

    @aio_method
    async def update(self, other: Mapping[Any, Any] | None = None, /, **kwargs: Any) -> None:
        pairs = {**(dict(other) if other is not None else {}), **kwargs}
        name = await self._ready()
        items = [(encode_key(k), await kept(encode_value(v, k))) for k, v in pairs.items()]
        for batch in _stores.batches(items, lambda kv: len(kv[0]) + len(kv[1])):
            await _stores.call(DictUpdate(name=name, items=batch))

    # ------------------------------------------------------------ the whole dict

    @aio_method
    async def len(self) -> int:
        return (await _stores.call(DictLen(name=await self._ready()))).count

    @aio_method
    async def clear(self) -> None:
        await _stores.call(DictClear(name=await self._ready()))

    async def _scan(self, values: bool) -> AsyncIterator[tuple[Any, Any]]:
        cursor = 0
        while True:
            op = DictScan(name=await self._ready(), cursor=cursor, values=values)
            reply = await _stores.call(op)
            for i, token in enumerate(reply.keys):
                yield decode_key(token), (await load(reply.values[i]) if values else None)
            cursor = reply.cursor
            if not cursor:
                return

    @aio_iterator
    async def keys(self) -> AsyncIterator[Any]:
        async for k, _ in self._scan(values=False):
            yield k

    @aio_iterator
    async def values(self) -> AsyncIterator[Any]:
        async for _, v in self._scan(values=True):
            yield v

    @aio_iterator
    async def items(self) -> AsyncIterator[tuple[Any, Any]]:
        async for kv in self._scan(values=True):
            yield kv

    # ------------------------------------------------------------ mapping syntax

    def __getitem__(self, key: Any) -> Any:
        value = self.get(key, _MISSING)
        if value is _MISSING:
            raise KeyError(key)
        return value

    def __setitem__(self, key: Any, value: Any) -> None:
        self.put(key, value)

    def __delitem__(self, key: Any) -> None:
        self.pop(key)

    def __contains__(self, key: Any) -> bool:
        return bool(self.contains(key))

    def __iter__(self) -> Iterator[Any]:
        return iter(self.keys())


def list_dicts() -> list[StoreInfo]:
    """Every dict: its name, entries and bytes stored."""
    return background_loop().run(_stores.call(DictList())).infos
