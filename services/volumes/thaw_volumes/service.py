"""The volumes service's lifecycle: it owns volume versions.

It answers, as a queue group (any replica takes each request), the
``contract.VOLUMES_*`` requests: look up or create, delete, list, a page of
entries, and commits. A commit names chunks its sender stored in the blob
store beforehand; they are checked (stored, and adding up to each file's
size) before the commit is applied. Commits to one volume are applied one at
a time, in the order they arrive at this process (a lock per volume) and
across replicas (the volume's row lock in Postgres); each makes a version.
Every ``volume_gc_interval_s`` it removes chunks no volume names
(``thaw_volumes.gc``).
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import weakref
from collections.abc import Awaitable, Callable
from typing import Any

import msgspec
from thaw_core import contract
from thaw_core.bus import Msg, Subscription
from thaw_core.schema import (
    Message,
    VolumeChanges,
    VolumeCommit,
    VolumeDelete,
    VolumeEnsure,
    VolumeEntries,
    VolumeEntriesReply,
    VolumeListAll,
    VolumeListReply,
    VolumeReply,
    decoder,
    encode,
)
from thaw_core.service import Service
from thaw_core.tasks import Background
from thaw_core.volumes import VolumeError

from thaw_volumes.chunks import check_chunks
from thaw_volumes.gc import ChunkCollector
from thaw_volumes.store import VolumeStore, check_commit

_COMMIT_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
_changes = decoder(VolumeChanges)


class VolumesService(Service):
    name = "volumes"
    uses_db = True
    uses_blob = True

    _store: VolumeStore
    _tasks: Background
    _subs: list[Subscription]

    async def setup(self) -> None:
        assert self.db is not None
        self._store = VolumeStore(self.db, self.settings.volume_max_bytes)
        self._tasks = Background(self.log)
        self._locks: weakref.WeakValueDictionary[str, asyncio.Lock] = weakref.WeakValueDictionary()
        ops: list[tuple[str, type[Message], type[Message], Callable[[Any], Awaitable[Message]]]] = [
            (contract.VOLUMES_ENSURE, VolumeEnsure, VolumeReply, self._ensure),
            (contract.VOLUMES_DELETE, VolumeDelete, VolumeReply, self._delete),
            (contract.VOLUMES_LIST, VolumeListAll, VolumeListReply, self._list),
            (contract.VOLUMES_ENTRIES, VolumeEntries, VolumeEntriesReply, self._entries),
            (contract.VOLUMES_COMMIT, VolumeCommit, VolumeReply, self._commit),
        ]
        self._subs = []
        for subject, request, reply, answer in ops:
            handler = self._handler(request, reply, answer)
            self._subs.append(await self.bus.serve(subject, handler, queue=subject))
        assert self.blob is not None
        self.collector = ChunkCollector(self.db, self.blob, self.settings.volume_chunk_grace_s)
        self._collecting = asyncio.Event()
        if self.settings.volume_gc_interval_s > 0:
            self._tasks.spawn(self._collect_every(self.settings.volume_gc_interval_s), "volumes:gc")

    async def _collect_every(self, interval_s: float) -> None:
        """Collect unnamed chunks now and then (until shutdown); a failed pass
        is logged and the next one tries again."""
        while not self._collecting.is_set():
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._collecting.wait(), interval_s)
            if self._collecting.is_set():
                return
            try:
                await self.collector.run_once()
            except Exception as e:  # noqa: BLE001 - the next pass tries again
                self.log.warning("volume chunk collection failed", extra={"error": repr(e)})

    async def teardown(self) -> None:
        self._collecting.set()
        for sub in self._subs:
            await sub.unsubscribe()
        # A commit under way finishes (or rolls back) before the pool closes.
        await self._tasks.close(timeout_s=8.0, cancel_wait_s=1.0)

    def _handler(
        self,
        request: type[Message],
        reply: type[Message],
        answer: Callable[[Any], Awaitable[Message]],
    ) -> Callable[[Msg], Awaitable[None]]:
        dec = decoder(request)

        async def run(msg: Msg) -> None:
            try:
                req = dec.decode(msg.data)
            except msgspec.DecodeError as e:
                await self.reject(msg.subject, msg.data, "malformed", str(e))
                out: Message = reply(
                    error=f"not a valid {request.__name__}: {e}", code="bad_request"
                )  # type: ignore[call-arg]
            else:
                try:
                    out = await answer(req)
                except VolumeError as e:
                    out = reply(error=e.message, code=e.code)  # type: ignore[call-arg]
                except Exception as e:
                    # Unanswered, the sender would wait out its whole timeout
                    # (minutes for a large commit) to learn nothing.
                    self.log.exception(
                        "volumes request failed", extra={"request": request.__name__}
                    )
                    out = reply(
                        error=f"the volumes service failed: {type(e).__name__}: {e}",
                        code="internal",
                    )  # type: ignore[call-arg]
            if msg.reply:
                await msg.respond(encode(out))

        async def spawn(msg: Msg) -> None:
            # Off the subscription's one-at-a-time callback: a long commit to
            # one volume does not hold up requests about others.
            self._tasks.spawn(run(msg), name=f"volumes:{request.__name__}")

        return spawn

    async def _ensure(self, req: VolumeEnsure) -> VolumeReply:
        info = await self._store.ensure(req.name, req.create_if_missing, req.max_bytes)
        return VolumeReply(volume=info)

    async def _delete(self, req: VolumeDelete) -> VolumeReply:
        info = await self._store.delete(req.name)
        # A commit waiting for this volume finds it gone under the row lock.
        self.log.info("volume deleted", extra={"volume": info.name, "volume_id": info.volume_id})
        return VolumeReply(volume=info)

    async def _list(self, req: VolumeListAll) -> VolumeListReply:
        return VolumeListReply(volumes=await self._store.list_all())

    async def _entries(self, req: VolumeEntries) -> VolumeEntriesReply:
        version, entries, more = await self._store.entries(
            req.volume_id, req.since_version, req.after, req.prefix, req.deletions
        )
        return VolumeEntriesReply(version=version, entries=entries, more=more)

    async def _commit(self, req: VolumeCommit) -> VolumeReply:
        if not _COMMIT_ID.match(req.commit_id):
            raise VolumeError("bad_request", f"invalid commit id {req.commit_id!r}")
        assert self.blob is not None
        staged = contract.volume_commit_key(req.commit_id)
        try:
            changes, deleted = req.changes, req.deleted
            if req.staged:
                body = _changes.decode(await self.blob.get(staged))
                changes, deleted = body.changes, body.deleted
            commit = check_commit(changes, deleted)
            await check_chunks(self._store, self.blob, commit.changes)
            lock = self._locks.get(req.volume_id)
            if lock is None:
                lock = self._locks[req.volume_id] = asyncio.Lock()
            async with lock:
                info = await self._store.apply(req.volume_id, req.commit_id, commit)
        finally:
            if req.staged:
                await self.blob.delete(staged)
        self.log.info(
            "volume committed",
            extra={
                "volume": info.name,
                "version": info.version,
                "changed": len(commit.changes),
                "deleted": len(commit.deleted),
            },
        )
        return VolumeReply(volume=info)
