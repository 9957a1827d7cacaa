"""Memory snapshots, the node's side: ask, cache, pack, report.

For a ``StartContainer`` whose function has ``enable_memory_snapshot``, the
agent asks the snapshots service (``contract.SNAPSHOT_LOOKUP``) what to do:

- a ``snapshot`` compatible with this node: restore it (``Restore``);
- a ``claim``: start cold, let the runtime pause after its ``snap=True``
  hooks, checkpoint it and store the snapshot (``Checkpoint``);
- neither, or no answer in time: a plain cold start. A snapshot is an
  optimisation: nothing here may fail a start.

A snapshot is a zstd tar of the CRIU images and the container's overlay
upper (``snapshot_archive``), stored at ``snapshots/<snapshot_id>.tar.zst``
in the blob store, and unpacked as it is downloaded.

The node keeps snapshots unpacked under ``<node dir>/snapshots/<id>/``
(``images/``, ``upper/``, their ``digest``, ``info.json`` written last), up
to a size limit, least recently used out first; the digest is checked before
every restore (``snapshot_digest``). The CRIU images are shared by every restore;
each restored container gets its own copy of ``upper/``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import msgspec
from thaw_core import contract, metrics
from thaw_core.blob import BlobStore
from thaw_core.bus import Bus
from thaw_core.fingerprint import incompatibility, local_fingerprint
from thaw_core.schema import (
    Fingerprint,
    SnapshotCreated,
    SnapshotCreateFailed,
    SnapshotEvent,
    SnapshotInfo,
    SnapshotLookup,
    SnapshotLookupReply,
    StartContainer,
    decoder,
)
from thaw_core.tasks import Background

from thaw_agent.snapshot_archive import SnapshotCorrupted, fetch_unpacked, pack
from thaw_agent.snapshot_digest import digest_problem, write_digest
from thaw_agent.start_phases import StartPhases

log = logging.getLogger("thaw.agent.snapshots")

# The start waits for this answer: short, and no answer means a cold start.
LOOKUP_TIMEOUT_S = 2.0
DEFAULT_CACHE_LIMIT_BYTES = 20 * 1024**3
CACHE_LIMIT_ENV = "THAW_SNAPSHOT_CACHE_BYTES"
INFO_FILE = "info.json"

_reply_decoder = decoder(SnapshotLookupReply)
_info_decoder = msgspec.json.Decoder(SnapshotInfo)


class CacheCorrupted(SnapshotCorrupted):
    """This node's cached copy changed since it was verified; the snapshot in
    the blob store may well be fine (the copy is fetched again)."""


@dataclass(frozen=True)
class Restore:
    snapshot: SnapshotInfo


@dataclass(frozen=True)
class Checkpoint:
    claim: SnapshotInfo


Plan = Restore | Checkpoint | None


def _tree_size(path: Path) -> int:
    total = 0
    for root, _, files in os.walk(path):
        for name in files:
            with contextlib.suppress(OSError):
                total += os.lstat(os.path.join(root, name)).st_size
    return total


class SnapshotCache:
    """Unpacked snapshots on this node, LRU within ``limit_bytes``."""

    def __init__(self, blob: BlobStore, root: Path, limit_bytes: int | None = None) -> None:
        self.blob = blob
        self.root = root
        env_limit = os.environ.get(CACHE_LIMIT_ENV, "")
        self.limit_bytes = limit_bytes or (
            int(env_limit) if env_limit else DEFAULT_CACHE_LIMIT_BYTES
        )
        self._locks: dict[str, asyncio.Lock] = {}

    def path(self, snapshot_id: str) -> Path:
        return self.root / snapshot_id

    def staging(self, snapshot_id: str) -> Path:
        """A fresh dir for a snapshot being made here (``add`` moves it in)."""
        return self.root / f".new-{snapshot_id}-{uuid.uuid4().hex[:8]}"

    def ids(self) -> list[str]:
        """Snapshot ids held complete here (the heartbeat's ``cached_snapshots``)."""
        if not self.root.is_dir():
            return []
        return sorted(d.name for d in self.root.iterdir() if (d / INFO_FILE).is_file())

    def sweep(self) -> None:
        """Remove what an interrupted fetch or a crash left (no info.json)."""
        if not self.root.is_dir():
            return
        for d in self.root.iterdir():
            if not (d / INFO_FILE).is_file():
                shutil.rmtree(d, ignore_errors=True)

    async def ensure(self, info: SnapshotInfo, phases: StartPhases | None = None) -> Path:
        """The unpacked snapshot, fetched and verified first when not here
        (timed into ``phases``). ``SnapshotCorrupted`` when its bytes are not
        the cataloged ones."""
        phases = phases or StartPhases()
        lock = self._locks.setdefault(info.snapshot_id, asyncio.Lock())
        async with lock:
            final = self.path(info.snapshot_id)
            hit = (final / INFO_FILE).is_file()
            metrics.cache_lookup("snapshot", hit)
            if hit:
                os.utime(final / INFO_FILE)  # most recently used
                return final
            await asyncio.to_thread(self.root.mkdir, parents=True, exist_ok=True)
            staging = self.root / f".fetch-{info.snapshot_id}-{uuid.uuid4().hex[:8]}"
            try:
                staging.mkdir()
                with phases.timed("fetch"):
                    await fetch_unpacked(
                        self.blob,
                        info.blob_key or contract.snapshot_key(info.snapshot_id),
                        info.sha256 or None,  # none cataloged: the store's own
                        staging,
                    )
                with phases.timed("digest"):
                    await self._adopt(staging, info)
            finally:
                await asyncio.to_thread(shutil.rmtree, staging, True)
            return final

    async def add(self, unpacked: Path, info: SnapshotInfo) -> None:
        """Keep a snapshot this node made (``unpacked`` is moved in)."""
        lock = self._locks.setdefault(info.snapshot_id, asyncio.Lock())
        async with lock:
            await asyncio.to_thread(self.root.mkdir, parents=True, exist_ok=True)
            await self._adopt(unpacked, info)

    async def _adopt(self, unpacked: Path, info: SnapshotInfo) -> None:
        final = self.path(info.snapshot_id)
        encoded = msgspec.json.encode(info)
        await asyncio.to_thread(write_digest, unpacked, encoded)
        await asyncio.to_thread(shutil.rmtree, final, True)
        await asyncio.to_thread(os.rename, unpacked, final)
        (final / INFO_FILE).write_bytes(encoded)  # last: complete now
        await asyncio.to_thread(self.evict, info.snapshot_id)

    async def verify(self, snapshot_id: str) -> float:
        """Check the cached copy against the digest it entered the cache with
        (``snapshot_digest``); ``CacheCorrupted`` when it differs. Returns the
        seconds it took."""
        started = time.perf_counter()
        problem = await asyncio.to_thread(digest_problem, self.path(snapshot_id), INFO_FILE)
        if problem is not None:
            raise CacheCorrupted(f"the cached copy of {snapshot_id} fails verification: {problem}")
        return time.perf_counter() - started

    def drop(self, snapshot_id: str) -> None:
        shutil.rmtree(self.path(snapshot_id), ignore_errors=True)

    def evict(self, keep: str = "") -> None:
        """Least recently used snapshots out until the cache fits its limit."""
        entries = []
        for snapshot_id in self.ids():
            d = self.path(snapshot_id)
            with contextlib.suppress(OSError):
                entries.append(((d / INFO_FILE).stat().st_mtime, snapshot_id, _tree_size(d)))
        total = sum(size for _, _, size in entries)
        for _, snapshot_id, size in sorted(entries):
            if total <= self.limit_bytes:
                break
            if snapshot_id == keep:
                continue
            log.info("snapshot evicted from the local cache", extra={"snapshot_id": snapshot_id})
            self.drop(snapshot_id)
            total -= size


class Snapshots:
    """What the container manager asks of the snapshot machinery."""

    def __init__(self, bus: Bus, blob: BlobStore, cache_root: Path, node_id: str) -> None:
        self.bus = bus
        self.blob = blob
        self.node_id = node_id
        self.cache = SnapshotCache(blob, cache_root)
        self._fingerprint: Fingerprint | None = None
        # Snapshots being packed and uploaded: they outlive their container.
        self._storing = Background(log)

    async def fingerprint(self) -> Fingerprint:
        if self._fingerprint is None:
            self._fingerprint = await asyncio.to_thread(local_fingerprint)
        return self._fingerprint

    async def plan(self, command: StartContainer) -> Plan:
        """What to do for this start; None (cold) whenever anything is amiss."""
        if not command.spec.enable_memory_snapshot:
            return None
        try:
            fp = await self.fingerprint()
            ask = SnapshotLookup(
                app=command.app,
                function=command.spec.name,
                version=command.version,
                node_id=self.node_id,
                fingerprint=fp,
            )
            msg = await self.bus.request(contract.SNAPSHOT_LOOKUP, ask, timeout_s=LOOKUP_TIMEOUT_S)
            reply = _reply_decoder.decode(msg.data)
        except Exception as e:  # noqa: BLE001 - no snapshots service, a bad reply: start cold
            log.warning(
                "no snapshot lookup answer: starting cold",
                extra={"container_id": command.container_id, "error": f"{type(e).__name__}: {e}"},
            )
            return None
        if reply.snapshot is not None:
            why = incompatibility(reply.snapshot.fingerprint, fp)
            if why is None:
                return Restore(reply.snapshot)
            log.warning(
                "offered an incompatible snapshot: starting cold",
                extra={"snapshot_id": reply.snapshot.snapshot_id, "why": why},
            )
            return None
        if reply.claim is not None:
            return Checkpoint(reply.claim)
        return None

    async def publish(self, app: str, event: SnapshotEvent) -> None:
        """Best effort: a lost event must not cost the container."""
        try:
            await self.bus.publish(contract.snapshot_event_subject(app), event)
        except Exception as e:  # noqa: BLE001
            log.warning("snapshot event not published", extra={"error": repr(e)})

    def replace_later(self, info: SnapshotInfo) -> None:
        """Drop the cached copy of ``info`` and fetch it again, in the background."""
        self._storing.spawn(self._refetch(info), f"snapshot-refetch:{info.snapshot_id}")

    async def _refetch(self, info: SnapshotInfo) -> None:
        try:
            await asyncio.to_thread(self.cache.drop, info.snapshot_id)
            await self.cache.ensure(info)
        except Exception as e:  # noqa: BLE001 - the next restore fetches it, or falls back
            log.warning(
                "could not fetch a snapshot again",
                extra={"snapshot_id": info.snapshot_id, "error": repr(e)},
            )

    def store_later(
        self,
        claim: SnapshotInfo,
        unpacked: Path,
        app: str,
        cold_start_s: Callable[[], Awaitable[float]] | None = None,
    ) -> None:
        """``store`` in the background: the container serves meanwhile."""
        self._storing.spawn(
            self.store(claim, unpacked, app, cold_start_s), f"snapshot:{claim.snapshot_id}"
        )

    async def close(self, timeout_s: float) -> None:
        """Let snapshots being stored finish (up to ``timeout_s``), then drop them."""
        await self._storing.close(timeout_s)

    async def store(
        self,
        claim: SnapshotInfo,
        unpacked: Path,
        app: str,
        cold_start_s: Callable[[], Awaitable[float]] | None = None,
    ) -> None:
        """Pack ``unpacked`` (images + upper), upload it, say SnapshotCreated
        (with its maker's cold start, ``cold_start_s``, for the catalog to
        weigh its restores against) and keep it in the local cache;
        SnapshotCreateFailed on any failure."""
        archive = unpacked.with_name(unpacked.name + ".tar.zst")
        started = time.monotonic()
        try:
            await asyncio.to_thread(pack, unpacked, archive)
            key = claim.blob_key or contract.snapshot_key(claim.snapshot_id)  # where the claim says
            stored = await self.blob.put(key, archive)
            info = msgspec.structs.replace(
                claim,
                blob_key=key,
                size=stored.size,
                sha256=stored.sha256,
                fingerprint=await self.fingerprint(),
                created_at=time.time(),
                state="ready",
                cold_start_s=await cold_start_s() if cold_start_s is not None else 0.0,
            )
            await self.cache.add(unpacked, info)
        except Exception as e:  # reported; the container serves on
            log.exception("snapshot not stored", extra={"snapshot_id": claim.snapshot_id})
            await self.publish(
                app, SnapshotCreateFailed(snapshot_id=claim.snapshot_id, error=f"store: {e}")
            )
            await asyncio.to_thread(shutil.rmtree, unpacked, True)
            return
        finally:
            archive.unlink(missing_ok=True)
        log.info(
            "snapshot stored",
            extra={
                "snapshot_id": info.snapshot_id,
                "size": info.size,
                "seconds": round(time.monotonic() - started, 3),
            },
        )
        await self.publish(app, SnapshotCreated(snapshot=info))
