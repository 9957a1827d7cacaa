"""A container's volumes: materialised at its start, committed in the
background, on request, and when it ends.

Each mount is a directory of the container's own (``<container dir>/volumes/N``,
outside the overlay's upper layer, so a memory snapshot never holds a
volume's files), loaded with the volume's current version before config.json
is written and bind-mounted read-write at the mount's path. A container
restored from a snapshot gets fresh directories loaded at that moment: it
sees the volume's latest committed state, not the one at snapshot time.

Commits: what the runtime asks for (``VolumeRequest``), every
``interval_s`` when something changed, and a last one when the container
ends, after its processes are gone and before its directory is removed. A
container killed without warning (its node lost) loses at most the last
interval's writes. Commits and reloads of one mount run one at a time.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from pathlib import Path

from thaw_core.container_protocol import VolumeAnswer, VolumeRequest
from thaw_core.image_users import ROOT, ImageUser
from thaw_core.schema import VolumeMount
from thaw_core.tasks import Background
from thaw_core.volumes import VolumeError, VolumesClient

from thaw_agent.volume_cache import ChunkCache
from thaw_agent.volume_mount import MountedVolume

log = logging.getLogger("thaw.agent.volumes")


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
        """Materialise every mount's current version, its files ``owner``'s
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
            info = await m.volume.commit()
        return info.version if info is not None else m.volume.version

    async def reload(self, name: str) -> int:
        m = self._mounts[name]
        async with m.lock:
            await m.volume.reload()
        return m.volume.version

    async def commit_all(self, why: str) -> None:
        """Commit every mount's changes; a failure is logged (the next try
        carries the same changes)."""
        for name in self._mounts:
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
