"""The agent's container side, assembled: what ``AgentService`` wires in.

``ContainerNode`` owns the node's state dir layout, the log shipper, the
container manager, the dispatcher and the command handler, and the NATS
subscriptions that feed them (``thaw.agent.<node>`` and ``thaw.cancel.*``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from pathlib import Path
from typing import Any

from thaw_core.blob import BlobStore
from thaw_core.bus import Bus
from thaw_core.schema import ContainerInfo

from thaw_agent.commands import CommandHandler, command_subject
from thaw_agent.dispatch import Dispatcher, Reject
from thaw_agent.layout import NodeLayout
from thaw_agent.logship import LogShipper
from thaw_agent.manager import ContainerManager
from thaw_agent.snapshots import Snapshots

log = logging.getLogger("thaw.agent.node")

CANCEL_SUBJECT = "thaw.cancel.*"
# On agent shutdown: how long running inputs get to finish before their
# containers are stopped and the inputs released for redelivery.
SHUTDOWN_GRACE_S = 3.0
_SUBJECT_SAFE = re.compile(r"^[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*$")


class ContainerNode:
    def __init__(
        self,
        *,
        node_id: str,
        state_dir: Path,
        bus: Bus,
        blob: BlobStore,
        reject: Reject,
        base_rootfs: Path | None = None,
    ) -> None:
        self.layout = NodeLayout(state_dir, node_id)
        self.bus = bus
        self.shipper = LogShipper(bus)
        self.snapshots = Snapshots(bus, blob, self.layout.snapshots, node_id)
        self.manager = ContainerManager(
            self.layout,
            blob,
            self.shipper,
            base_rootfs=base_rootfs,
            bus=bus,
            snapshots=self.snapshots,
        )
        self.dispatcher = Dispatcher(bus, self.manager, reject)
        self.commands = CommandHandler(self.manager, reject)
        self._subs: list[Any] = []

    @property
    def command_subjects(self) -> list[str]:
        """Where commands are served: the node's subject token, and the raw node
        id too when it differs but is a valid subject (a dotted hostname)."""
        subjects = [command_subject(self.layout.token)]
        raw = command_subject(self.layout.node_id)
        if raw not in subjects and _SUBJECT_SAFE.match(self.layout.node_id):
            subjects.append(raw)
        return subjects

    async def start(self) -> None:
        """Clean up after a previous life of this node, then take commands."""
        await self.manager.recover()
        await asyncio.to_thread(self.snapshots.cache.sweep)
        self._subs.append(await self.bus.serve(CANCEL_SUBJECT, self.dispatcher.on_cancel))
        for subject in self.command_subjects:
            self._subs.append(await self.bus.serve(subject, self.commands.on_command))
        log.info(
            "containers ready to start",
            extra={"node_dir": str(self.layout.root), "subjects": self.command_subjects},
        )

    async def ship_logs(self, stop: asyncio.Event) -> None:
        await self.shipper.run(stop)

    def containers(self) -> list[ContainerInfo]:
        return self.manager.infos()

    def reserved(self) -> tuple[float, int]:
        return self.manager.reserved()

    def cached_snapshots(self) -> list[str]:
        return self.snapshots.cache.ids()

    async def close(self, grace_s: float = SHUTDOWN_GRACE_S) -> None:
        """Stop taking work, let running inputs finish for ``grace_s``, stop every
        container (what is still running is released for redelivery)."""
        for sub in self._subs:
            with contextlib.suppress(Exception):
                await sub.unsubscribe()
        self._subs.clear()
        await self.dispatcher.close()
        await self.commands.close(timeout_s=grace_s)
        await self.manager.stop_all(grace_s)
        await self.snapshots.close(timeout_s=30.0)
        await self.dispatcher.drain(timeout_s=5.0)
        await self.shipper.flush()
