"""The node agent's lifecycle: for now it reports the node's inventory.

Every ``HEARTBEAT_INTERVAL_S`` it publishes a ``NodeHeartbeat`` (cores, memory,
GPUs via NVML when there are any) on ``thaw.event.node.<node_id>`` into the
EVENTS stream. Agents never touch Postgres: they talk only over NATS (a later
issue adds containers, runc and CRIU in other modules of this package).
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import Awaitable, Callable, Sequence

import psutil
from thaw_core.schema import GpuInfo, NodeHeartbeat
from thaw_core.service import Service

HEARTBEAT_INTERVAL_S = 2.0

_SUBJECT_UNSAFE = re.compile(r"[^A-Za-z0-9_-]")


def node_subject_token(node_id: str) -> str:
    """``node_id`` made safe as one NATS subject token (a hostname may hold dots)."""
    return _SUBJECT_UNSAFE.sub("_", node_id) or "unknown"


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

    heartbeat_interval_s: float = HEARTBEAT_INTERVAL_S

    async def setup(self) -> None:
        self.node_id = self.settings.node_id
        self.subject = f"thaw.event.node.{node_subject_token(self.node_id)}"
        # The GPU set does not change while the agent runs; NVML init is slow-ish.
        self.gpus = await asyncio.to_thread(gpu_inventory)
        psutil.cpu_percent(interval=None)  # prime the CPU-usage counter
        self.log.info(
            "node inventory",
            extra={"node_id": self.node_id, "cores": psutil.cpu_count(), "gpus": len(self.gpus)},
        )

    def loops(self) -> Sequence[Callable[[], Awaitable[None]]]:
        return [self.heartbeat_loop]

    def heartbeat(self) -> NodeHeartbeat:
        cores = psutil.cpu_count(logical=True) or 1
        vm = psutil.virtual_memory()
        busy = psutil.cpu_percent(interval=None) / 100.0
        return NodeHeartbeat(
            node_id=self.node_id,
            cores=cores,
            memory_mb=int(vm.total) // (1024 * 1024),
            gpus=list(self.gpus),
            free_cores=round(cores * max(0.0, 1.0 - busy), 3),
            free_memory_mb=int(vm.available) // (1024 * 1024),
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
