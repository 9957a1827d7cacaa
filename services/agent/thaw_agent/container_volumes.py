"""A container's volumes: mounted at its start, committed in the
background, on request, and when it ends.

Each mount is a directory of the container's own (``<container dir>/volumes/N``,
outside the root overlay's upper layer, so a memory snapshot never holds a
volume's files), loaded with the volume's current version before config.json
is written (an overlay of the node's cached files, its layers beside it in
``N.layers/``: ``volume_mount``) and bind-mounted read-write at the mount's
path. Removing the container's directory (``thaw_core.layers.remove_tree``)
unmounts it. A container
restored from a snapshot gets fresh directories loaded at that moment: it
sees the volume's latest committed state, not the one at snapshot time.

Commits: what the runtime asks for (``VolumeRequest``), every
``interval_s`` when something changed, and a last one when the container
ends, after its processes are gone and before its directory is removed. A
container killed without warning (its node lost) loses at most the last
interval's writes. An agent that dies leaves its containers' mounts and
their state files; its next life commits what they hold
(``commit_left_over``) before it removes them, so a container whose agent
died loses nothing its processes wrote. Commits and reloads of one mount
run one at a time.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TypeVar

from thaw_core.container_protocol import VolumeAnswer, VolumeRequest
from thaw_core.image_users import ROOT, ImageUser
from thaw_core.schema import VolumeInfo, VolumeMount
from thaw_core.tasks import Background
from thaw_core.volumes import VolumeError, VolumesClient

from thaw_agent.volume_cache import ChunkCache
from thaw_agent.volume_mount import MountedVolume

log = logging.getLogger("thaw.agent.volumes")
T = TypeVar("T")


class NodeVolumes:
    """What every container's volumes on this node share: the volumes
    service, the chunk cache, the background commit interval."""

    def __init__(self, client: VolumesClient, cache: ChunkCache, interval_s: float) -> None:
        self.client = client
        self.cache = cache
        self.interval_s = interval_s


class _Mount:
    def __init__(self, mount: VolumeMount, volume: MountedVolume) -> None:
        self.mount = mount
        self.volume = volume
        self.lock = asyncio.Lock()
        # Set once the volume is found deleted (or made again under its name:
        # another volume): nothing more is committed to it or reloaded.
        self.deleted = False

    def deleted_error(self) -> VolumeError:
        return VolumeError(
            "not_found",
            f"volume {self.mount.name!r} (mounted at {self.mount.path}) was deleted while"
            " mounted; its files here are this container's only, and nothing more is committed",
        )


class ContainerVolumes:
    def __init__(
        self, node: NodeVolumes | None, mounts: list[VolumeMount], root: Path, container_id: str
    ) -> None:
        self.node = node
        self.wanted = mounts
        self.root = root
        self.container_id = container_id
        self._mounts: dict[str, _Mount] = {}
        self._tasks = Background(log)
        self._background: asyncio.Task[None] | None = None
        self._closing = asyncio.Event()

    async def load(self, owner: ImageUser = ROOT) -> list[tuple[Path, str]]:
        """Mount every volume's current version, its files ``owner``'s
        (the container's process user); (host dir, path in the container)
        for each, to bind-mount."""
        if not self.wanted:
            return []
        if self.node is None:
            raise RuntimeError("this agent has no volumes service to mount volumes from")
        binds: list[tuple[Path, str]] = []
        for i, m in enumerate(self.wanted):
            try:
                info = await self.node.client.ensure(m.name)
            except VolumeError as e:
                raise RuntimeError(f"volume {m.name!r} at {m.path}: {e.message}") from e
            mounted = MountedVolume(
                self.node.client, self.node.cache, info, self.root / str(i), owner
            )
            await mounted.load()
            self._mounts[m.name] = _Mount(m, mounted)
            binds.append((mounted.root, m.path))
        return binds

    def start_background_commits(self) -> None:
        if self._mounts and self.node is not None and self._background is None:
            self._background = asyncio.create_task(
                self._commit_every(self.node.interval_s), name=f"volumes:{self.container_id}"
            )

    async def _commit_every(self, interval_s: float) -> None:
        while True:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._closing.wait(), interval_s)
            if self._closing.is_set():
                return
            await self.commit_all("background")

    async def commit(self, name: str) -> int:
        m = self._mounts[name]
        async with m.lock:
            info = await self._unless_deleted(m, m.volume.commit)
        return info.version if info is not None else m.volume.version

    async def reload(self, name: str) -> int:
        m = self._mounts[name]
        async with m.lock:
            await self._unless_deleted(m, m.volume.reload)
        return m.volume.version

    async def _unless_deleted(self, m: _Mount, op: Callable[[], Awaitable[T]]) -> T:
        """``op``, unless the mount's volume was deleted: refused then, and
        once found out (the service refuses a commit to, or a listing of, a
        deleted volume), refused from then on, said once in the log."""
        if m.deleted:
            raise m.deleted_error()
        try:
            return await op()
        except VolumeError as e:
            if e.code not in ("conflict", "not_found") or not await self._is_deleted(m):
                raise
            m.deleted = True
            log.warning(
                "a mounted volume was deleted: its uncommitted changes stay in this container only",
                extra={"container_id": self.container_id, "volume": m.mount.name},
            )
            raise m.deleted_error() from e

    async def _is_deleted(self, m: _Mount) -> bool:
        assert self.node is not None
        try:
            now = await self.node.client.ensure(m.mount.name)
        except VolumeError as e:
            if e.code == "not_found":
                return True
            raise
        return now.volume_id != m.volume.volume.volume_id

    async def commit_all(self, why: str) -> None:
        """Commit every mount's changes; a failure is logged (the next try
        carries the same changes). A deleted volume is left alone."""
        for name, m in self._mounts.items():
            if m.deleted:
                continue
            try:
                await self.commit(name)
            except Exception as e:  # noqa: BLE001 - kept on disk; the next commit retries
                log.warning(
                    "volume commit failed",
                    extra={"container_id": self.container_id, "volume": name, "why": why,
                           "error": f"{type(e).__name__}: {e}"},
                )  # fmt: skip

    def serve(
        self, request: VolumeRequest, answer: Callable[[VolumeAnswer], Awaitable[None]]
    ) -> None:
        """Do what the runtime asked, in the background (other frames go on),
        and answer it."""
        self._tasks.spawn(self._serve(request, answer), f"volumes:{request.op}")

    async def _serve(
        self, request: VolumeRequest, answer: Callable[[VolumeAnswer], Awaitable[None]]
    ) -> None:
        reply = VolumeAnswer(request_id=request.request_id)
        try:
            if request.volume not in self._mounts:
                raise LookupError(f"volume {request.volume!r} is not mounted in this container")
            run = self.commit if request.op == "commit" else self.reload
            reply = VolumeAnswer(request_id=request.request_id, version=await run(request.volume))
        except VolumeError as e:
            reply = VolumeAnswer(request_id=request.request_id, error=e.message)
        except Exception as e:  # noqa: BLE001 - the caller in the container learns why
            reply = VolumeAnswer(request_id=request.request_id, error=f"{type(e).__name__}: {e}")
        with contextlib.suppress(Exception):  # the container may be gone: nobody to tell
            await answer(reply)

    async def close(self) -> None:
        """The container's processes are gone: stop the background commits
        and commit what is left (once; failures are logged, not raised)."""
        if self._closing.is_set():
            return
        self._closing.set()
        if self._background is not None:
            await asyncio.wait([self._background])  # a commit under way ends first
        await self._tasks.close(0.0)  # requests from a container that is gone
        await self.commit_all("container ended")


async def commit_left_over(node: NodeVolumes | None, containers_dir: Path) -> None:
    """Commit what the mounts a previous life of this agent left under
    ``containers_dir`` hold (their containers are gone); a failure is
    logged: the directory is removed after."""
    states = sorted(containers_dir.glob("*/volumes/*.state")) if containers_dir.is_dir() else []
    if states and node is None:
        log.warning("left-over volume mounts, and no volumes service to commit them to")
        return
    for state_file in states:
        assert node is not None
        container_id = state_file.parents[1].name
        try:
            mounted = await asyncio.to_thread(
                MountedVolume.resume, node.client, node.cache, state_file
            )
            info = await _commit_when_answered(mounted)
        except Exception as e:  # noqa: BLE001 - one mount's failure leaves the others
            log.warning(
                "a left-over volume mount could not be committed",
                extra={"container_id": container_id, "mount": str(state_file.with_suffix("")),
                       "error": f"{type(e).__name__}: {e}"},
            )  # fmt: skip
            continue
        log.info(
            "committed a left-over volume mount",
            extra={"container_id": container_id, "volume": mounted.volume.name,
                   "version": info.version if info is not None else mounted.version},
        )  # fmt: skip


# A node starting again may start its agent before the volumes service
# answers: a left-over commit waits this long for it, trying again.
LEFT_OVER_TRIES_S = (1.0, 2.0, 4.0, 8.0, 15.0)


async def _commit_when_answered(mounted: MountedVolume) -> VolumeInfo | None:
    for wait_s in LEFT_OVER_TRIES_S:
        try:
            return await mounted.commit()
        except VolumeError as e:
            if e.code != "internal":  # refused: trying again changes nothing
                raise
            log.info("the volumes service did not answer; trying again", extra={"in_s": wait_s})
            await asyncio.sleep(wait_s)
    return await mounted.commit()
