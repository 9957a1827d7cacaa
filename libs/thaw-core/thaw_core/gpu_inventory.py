"""This node's NVIDIA GPUs, read once through NVML (``pynvml``).

The one NVML reader: the agent's heartbeats list the GPUs (``gpu_inventory``)
and node fingerprints record their models, compute capabilities, driver and
CUDA versions (``read_nvml``). Without the library, a driver or a GPU the node
has none; a half-working NVML reports none too (with a warning), rather than
crash the agent.
"""

from __future__ import annotations

import contextlib
import functools
import logging
from dataclasses import dataclass, field
from typing import Any

from thaw_core.schema import GpuInfo

log = logging.getLogger("thaw.gpus")


@dataclass(frozen=True)
class NvidiaGpu:
    index: int
    name: str
    uuid: str
    memory_mb: int
    compute_capability: str  # "8.0"
    minor: int = -1  # /dev/nvidia<minor>; -1 when NVML does not say
    mig: bool = False  # MIG mode enabled


@dataclass(frozen=True)
class Nvml:
    """What NVML says about the node; empty on a node without NVIDIA GPUs."""

    gpus: list[NvidiaGpu] = field(default_factory=list)
    driver: str = ""
    cuda: str = ""  # "12.4"


@functools.cache
def read_nvml() -> Nvml:
    """The node's GPUs, driver and CUDA versions (read once: they do not
    change while a process runs, and NVML's init is slow-ish)."""
    try:
        import pynvml  # type: ignore[import-untyped]
    except ImportError:
        return Nvml()
    try:
        pynvml.nvmlInit()
    except Exception as e:  # noqa: BLE001 - no driver, no GPU: a CPU node
        log.debug("no NVIDIA GPUs: %s", e)
        return Nvml()
    try:
        gpus = []
        for i in range(pynvml.nvmlDeviceGetCount()):
            handle = pynvml.nvmlDeviceGetHandleByIndex(i)
            major, minor = pynvml.nvmlDeviceGetCudaComputeCapability(handle)
            gpus.append(
                NvidiaGpu(
                    index=i,
                    name=_text(pynvml.nvmlDeviceGetName(handle)),
                    uuid=_text(pynvml.nvmlDeviceGetUUID(handle)),
                    memory_mb=int(pynvml.nvmlDeviceGetMemoryInfo(handle).total) // (1024 * 1024),
                    compute_capability=f"{major}.{minor}",
                    minor=_optional(pynvml.nvmlDeviceGetMinorNumber, handle, -1),
                    mig=bool(_optional(pynvml.nvmlDeviceGetMigMode, handle, (0, 0))[0]),
                )
            )
        driver = _text(pynvml.nvmlSystemGetDriverVersion())
        cuda_int = int(pynvml.nvmlSystemGetCudaDriverVersion_v2())
        return Nvml(gpus=gpus, driver=driver, cuda=f"{cuda_int // 1000}.{cuda_int % 1000 // 10}")
    except Exception as e:  # noqa: BLE001 - a half-working NVML: report no GPUs, loudly
        log.warning("reading GPUs through NVML failed: %s", e)
        return Nvml()
    finally:
        with contextlib.suppress(Exception):
            pynvml.nvmlShutdown()


def gpu_inventory() -> list[GpuInfo]:
    """The node's NVIDIA GPUs as its heartbeats list them; [] without any."""
    return [
        GpuInfo(
            index=g.index,
            name=g.name,
            memory_mb=g.memory_mb,
            uuid=g.uuid,
            minor=g.minor,
            mig=g.mig,
        )
        for g in read_nvml().gpus
    ]


def _optional(query: Any, handle: Any, default: Any) -> Any:
    """What ``query(handle)`` says, or ``default`` where the GPU does not
    support it (MIG on a GPU without MIG, ...)."""
    try:
        return query(handle)
    except Exception:  # noqa: BLE001 - pynvml.NVMLError_NotSupported and kin
        return default


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
