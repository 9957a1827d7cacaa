"""The volumes service's requests, from the gateway's and the agent's side.

Each request is core NATS request/reply to the service's queue group. A
commit too large for one message is stored in the blob store first and the
message only says so; a listing comes in pages, read here until the last."""

from __future__ import annotations

import uuid
from typing import Any

import msgspec
import nats.errors

from thaw_core import contract
from thaw_core.blob import BlobStore
from thaw_core.bus import Bus
from thaw_core.schema import (
    Message,
    VolumeChanges,
    VolumeCommit,
    VolumeDelete,
    VolumeEnsure,
    VolumeEntries,
    VolumeEntriesReply,
    VolumeEntry,
    VolumeInfo,
    VolumeListAll,
    VolumeListReply,
    VolumeReply,
    decoder,
)

# Over this, a commit's changes travel through the blob store (nats-server's
# default max_payload is 1 MiB).
INLINE_COMMIT_BYTES = 512 * 1024
REQUEST_TIMEOUT_S = 10.0
# A commit of many files makes many rows in one transaction, and the service
# looks up each chunk it names in the blob store first (a few at a time): its
# wait grows with them, so that a commit of 10,000 small files on a slow
# machine is waited for rather than reported failed while it is applied.
COMMIT_TIMEOUT_S = 120.0
COMMIT_TIMEOUT_S_PER_ENTRY = 0.02

_reply = decoder(VolumeReply)
_list_reply = decoder(VolumeListReply)
_entries_reply = decoder(VolumeEntriesReply)
_encoder = msgspec.json.Encoder()


class VolumeError(Exception):
    """The volumes service refused a request; ``code`` says how
    (``schema.volumes.VolumeErrorCode``), the message what to fix."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code or "internal"
        self.message = message


class VolumesClient:
    def __init__(self, bus: Bus, blob: BlobStore) -> None:
        self.bus = bus
        self.blob = blob

    async def _ask(
        self,
        subject: str,
        msg: Message,
        dec: msgspec.json.Decoder[Any],
        timeout_s: float,
        late: str = "",
    ) -> Any:
        try:
            raw = await self.bus.request(subject, msg, timeout_s=timeout_s)
        except nats.errors.NoRespondersError:
            raise VolumeError("internal", "the volumes service is not running") from None
        except nats.errors.TimeoutError:
            raise VolumeError(
                "internal", f"the volumes service did not answer within {timeout_s:g}s{late}"
            ) from None
        reply = dec.decode(raw.data)
        if reply.error:
            raise VolumeError(reply.code, reply.error)
        return reply

    async def _info(
        self, subject: str, msg: Message, timeout_s: float, late: str = ""
    ) -> VolumeInfo:
        reply: VolumeReply = await self._ask(subject, msg, _reply, timeout_s, late)
        assert reply.volume is not None
        return reply.volume

    async def ensure(
        self, name: str, *, create_if_missing: bool = False, max_bytes: int | None = None
    ) -> VolumeInfo:
        req = VolumeEnsure(name=name, create_if_missing=create_if_missing, max_bytes=max_bytes)
        return await self._info(contract.VOLUMES_ENSURE, req, REQUEST_TIMEOUT_S)

    async def delete(self, name: str) -> VolumeInfo:
        return await self._info(contract.VOLUMES_DELETE, VolumeDelete(name=name), REQUEST_TIMEOUT_S)

    async def list_all(self) -> list[VolumeInfo]:
        reply: VolumeListReply = await self._ask(
            contract.VOLUMES_LIST, VolumeListAll(), _list_reply, REQUEST_TIMEOUT_S
        )
        return reply.volumes

    async def entries(
        self, volume_id: str, *, since_version: int | None = None, prefix: str = ""
    ) -> tuple[int, list[VolumeEntry]]:
        """The entries under ``prefix``: all, or (a reload) those changed since
        ``since_version``, deletions included; and the version they are at
        least as new as."""
        out: list[VolumeEntry] = []
        version: int | None = None
        after = ""
        while True:
            req = VolumeEntries(
                volume_id=volume_id,
                since_version=since_version or 0,
                after=after,
                prefix=prefix,
                deletions=since_version is not None,
            )
            page: VolumeEntriesReply = await self._ask(
                contract.VOLUMES_ENTRIES, req, _entries_reply, REQUEST_TIMEOUT_S
            )
            # Pages read later may carry newer files; the first page's version
            # is one every entry is at least as new as.
            version = page.version if version is None else version
            out.extend(page.entries)
            if not page.more or not page.entries:
                return version, out
            after = page.entries[-1].path

    async def commit(
        self,
        volume_id: str,
        changes: list[VolumeEntry],
        deleted: list[str],
        *,
        base_version: int = 0,
        commit_id: str | None = None,
    ) -> VolumeInfo:
        """Apply written entries (their chunks already stored) and deleted paths."""
        commit_id = commit_id or uuid.uuid4().hex
        body = VolumeChanges(changes=changes, deleted=deleted)
        encoded = _encoder.encode(body)
        named = len(changes) + sum(len(e.chunks) for e in changes)
        timeout_s = COMMIT_TIMEOUT_S + COMMIT_TIMEOUT_S_PER_ENTRY * named
        # Past the wait the commit may yet land: whoever reports it must not
        # say it failed.
        late = (
            f" to a commit of {len(changes)} change(s); it may still be applied"
            " (list the volume to see) or not at all"
        )
        if len(encoded) <= INLINE_COMMIT_BYTES:
            req = VolumeCommit(
                volume_id=volume_id,
                commit_id=commit_id,
                base_version=base_version,
                changes=changes,
                deleted=deleted,
            )
            return await self._info(contract.VOLUMES_COMMIT, req, timeout_s, late)
        key = contract.volume_commit_key(commit_id)
        await self.blob.put(key, encoded)
        req = VolumeCommit(
            volume_id=volume_id, commit_id=commit_id, base_version=base_version, staged=True
        )
        return await self._info(contract.VOLUMES_COMMIT, req, timeout_s, late)
