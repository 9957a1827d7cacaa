"""Large Dict values and Queue items no key or item refers to any more are
deleted from the blob store.

A value over ``STORE_MAX_VALUE_BYTES`` is kept as a blob
(``contract.store_value_key``) and the key or item holds a reference to it
(``STORE_BLOB_REF``). Overwriting or popping the key, taking the item, or
deleting the Dict or Queue leaves the blob behind; this sweep removes it.

A blob is deleted only when two sweeps in a row (an interval apart) found
nothing referring to it, so a value uploaded just before its key is written
is never taken for garbage; the blob store keeps no dates to judge by. Every
Dict's entries and every Queue's stored items are read to know what is
referred to: the cost grows with what the stores hold, once an interval.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging

from thaw_core import contract
from thaw_core.blob import BlobStore
from thaw_core.bus.stores import StoreMissing, Stores

log = logging.getLogger("thaw.gateway.stores")

SWEEP_EVERY_S = 3600.0
_SCAN_BYTES = 4 * 1024 * 1024
_PEEK_ITEMS = 1000


def referred_blob(value: bytes) -> str | None:
    """The sha256 of the blob ``value`` refers to; None for a value kept inline."""
    if value[:1] != contract.STORE_BLOB_REF:
        return None
    try:
        sha = json.loads(value[1:])["blob"]
    except (ValueError, KeyError, TypeError):
        return None  # not one of ours: nothing to keep for it
    return sha if isinstance(sha, str) else None


class StoreValueSweeper:
    def __init__(self, blob: BlobStore, stores: Stores, every_s: float = SWEEP_EVERY_S) -> None:
        self._blob = blob
        self._stores = stores
        self._every_s = every_s
        # Blobs the last sweep found nothing referring to.
        self._unreferred: set[str] = set()

    async def referred(self) -> set[str]:
        """Every blob a Dict entry or a stored Queue item refers to now."""
        found: set[str] = set()
        dicts = await self._stores.streams_named(contract.kv_stream(contract.DICT_BUCKET_PREFIX))
        for stream in dicts:
            bucket = stream.name.removeprefix(contract.kv_stream(""))
            cursor = 1
            with contextlib.suppress(StoreMissing):  # deleted meanwhile
                while cursor:
                    entries, cursor = await self._stores.kv_scan(bucket, cursor, _SCAN_BYTES)
                    found.update(sha for _, v in entries if (sha := referred_blob(v)))
        for stream in await self._stores.streams_named(contract.QUEUE_STREAM_PREFIX):
            queue = stream.name.removeprefix(contract.QUEUE_STREAM_PREFIX)
            subject = contract.QUEUE_ITEM.format(queue=queue, partition="*")
            cursor = 1
            with contextlib.suppress(StoreMissing):
                while cursor:
                    items, cursor = await self._stores.stream_peek(
                        stream.name, subject, cursor, _PEEK_ITEMS
                    )
                    found.update(sha for v in items if (sha := referred_blob(v)))
        return found

    async def sweep(self) -> int:
        """Delete the blobs found unreferred by this sweep and the last; how many."""
        stored = {
            key.removeprefix(contract.STORE_VALUES_PREFIX)
            for key in await self._blob.list(contract.STORE_VALUES_PREFIX)
        }
        unreferred = stored - await self.referred()
        doomed = unreferred & self._unreferred
        for sha in doomed:
            with contextlib.suppress(KeyError, FileNotFoundError):
                await self._blob.delete(contract.store_value_key(sha))
        # The others are suspects until the next sweep.
        self._unreferred = unreferred - doomed
        return len(doomed)

    async def run(self, stopping: asyncio.Event) -> None:
        while not stopping.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stopping.wait(), self._every_s)
            if stopping.is_set():
                return
            try:
                if n := await self.sweep():
                    log.info("deleted %d large Dict values and Queue items no longer referred to", n)
            except Exception:
                log.exception("could not sweep large Dict values and Queue items")
