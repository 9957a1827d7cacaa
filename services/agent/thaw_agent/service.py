"""The node agent's lifecycle: inventory, heartbeats and the node's containers.

Every ``HEARTBEAT_INTERVAL_S`` it publishes a ``NodeHeartbeat`` (cores, memory,
GPUs via NVML when there are any, the containers it runs and the capacity
their reservations leave) on ``thaw.event.node.<node_id>`` into the EVENTS
stream. Containers, commands and input dispatch live in ``node.ContainerNode``
(see ``manager``, ``dispatch``, ``commands``). Agents never touch Postgres:
they talk only over NATS, and fetch code bundles from the blob store.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Sequence

import psutil
from thaw_core import hosttools
from thaw_core.schema import GpuInfo, NodeHeartbeat
from thaw_core.service import Service

from thaw_agent.layout import node_token as node_subject_token
from thaw_agent.node import ContainerNode

HEARTBEAT_INTERVAL_S = 2.0

__all__ = ["HEARTBEAT_INTERVAL_S", "AgentService", "gpu_inventory", "node_subject_token"]


def gpu_inventory() -> list[GpuInfo]:
    """The node's NVIDIA GPUs through NVML; [] without the library, driver or a GPU."""
    try:
        import pynvml
    except ImportError:
        return []
    try:
        pynvml.nvmlInit()
    except Exception:  # noqa: BLE001 - no driver / no GPU
        return []
    try:
        gpus = []
        for i in range(pynvml.nvmlDeviceGetCount()):
            h = pynvml.nvmlDeviceGetHandleByIndex(i)
            name = pynvml.nvmlDeviceGetName(h)
            uuid = pynvml.nvmlDeviceGetUUID(h)
            mem = pynvml.nvmlDeviceGetMemoryInfo(h)
            gpus.append(
                GpuInfo(
                    index=i,
                    name=name.decode() if isinstance(name, bytes) else str(name),
                    memory_mb=int(mem.total) // (1024 * 1024),
                    uuid=uuid.decode() if isinstance(uuid, bytes) else str(uuid),
                )
            )
        return gpus
    except Exception:  # noqa: BLE001 - a broken NVML reports no GPU rather than crash
        return []
    finally:
        with contextlib.suppress(Exception):
            pynvml.nvmlShutdown()


class AgentService(Service):
    name = "agent"
    uses_db = False  # agents talk only over NATS
    uses_blob = True  # code bundles

    heartbeat_interval_s: float = HEARTBEAT_INTERVAL_S

    async def setup(self) -> None:
        self.node_id = self.settings.node_id
        self.subject = f"thaw.event.node.{node_subject_token(self.node_id)}"
        # The GPU set does not change while the agent runs; NVML init is slow-ish.
        self.gpus = await asyncio.to_thread(gpu_inventory)
        self.log.info(
            "node inventory",
            extra={"node_id": self.node_id, "cores": psutil.cpu_count(), "gpus": len(self.gpus)},
        )
        assert self.blob is not None
        self.node = ContainerNode(
            node_id=self.node_id,
            state_dir=self.settings.state_dir,
            bus=self.bus,
            blob=self.blob,
            reject=self.reject,
        )
        await self.node.start()
        # Read once (CPU flags, tool versions; NVML): it does not change while we run.
        self.fingerprint = await self.node.snapshots.fingerprint()

    async def teardown(self) -> None:
        await self.node.close()

    def loops(self) -> Sequence[Callable[[], Awaitable[None]]]:
        return [self.heartbeat_loop, self.log_loop]

    async def log_loop(self) -> None:
        await self.node.ship_logs(self.stopping)

    async def checks(self) -> dict[str, str]:
        if not hosttools.rootfs_ready():
            return {"containers": f"no container rootfs at {hosttools.default_rootfs()}"}
        if not hosttools.runc_path().exists():
            return {"containers": f"runc not found at {hosttools.runc_path()}"}
        return {"containers": "ok"}

    def heartbeat(self) -> NodeHeartbeat:
        cores = psutil.cpu_count(logical=True) or 1
        memory_mb = int(psutil.virtual_memory().total) // (1024 * 1024)
        reserved_cores, reserved_mb = self.node.reserved()
        # Free means not reserved by our containers, as with Kubernetes
        # requests: the CPU load of the moment swings too fast to place on
        # (a busy 2-core node would look full between two heartbeats), and
        # an idle container keeps its reservation.
        return NodeHeartbeat(
            node_id=self.node_id,
            cores=cores,
            memory_mb=memory_mb,
            gpus=list(self.gpus),
            free_cores=round(max(0.0, cores - reserved_cores), 3),
            free_memory_mb=max(0, memory_mb - reserved_mb),
            containers=self.node.containers(),
            fingerprint=self.fingerprint,
            cached_snapshots=self.node.cached_snapshots(),
        )

    async def heartbeat_loop(self) -> None:
        failures = 0
        while not self.stopping.is_set():
            try:
                await asyncio.wait_for(
                    self.bus.publish(self.subject, self.heartbeat()),
                    timeout=max(1.0, self.heartbeat_interval_s),
                )
                if failures:
                    self.log.info("heartbeats flowing again", extra={"missed": failures})
                failures = 0
            except Exception as exc:  # noqa: BLE001 - NATS restarting: keep trying, say so once
                failures += 1
                if failures == 1:
                    self.log.warning("heartbeat not published", extra={"error": repr(exc)})
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self.stopping.wait(), self.heartbeat_interval_s)
