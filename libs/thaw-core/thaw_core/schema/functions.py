"""Deployed functions as the SDK describes them, and the app lifecycle events."""

from __future__ import annotations

from typing import Any, Literal

import msgspec

from thaw_core.schedules import ScheduleSpec
from thaw_core.schema.base import Message, Spec, now
from thaw_core.schema.images import ImageRef
from thaw_core.schema.secret_grants import SecretRef

# The least an ephemeral_disk may be: mkfs needs a few MiB for its own metadata.
MIN_EPHEMERAL_DISK_MB = 16


class Resources(Spec):
    """What a container asks for: the scheduler places by the requests
    (``cpu``, ``memory_mb``); the limits are hard (CFS quota, memory limit),
    None where the function gave none."""

    cpu: float = 0.125
    memory_mb: int = 128
    cpu_limit: float | None = None
    memory_limit_mb: int | None = None
    # "A10G", "H100:2", "any", ... ; None: no GPU.
    gpu: str | None = None
    # ephemeral_disk=: the writable layer's size limit (thaw_agent.ephemeral_disk).
    ephemeral_disk_mb: int | None = None


class RetryPolicy(Spec):
    """``retries=N`` on a function is ``RetryPolicy(max_retries=N)``."""

    max_retries: int = 0
    backoff_coefficient: float = 2.0
    initial_delay_s: float = 1.0
    max_delay_s: float = 60.0

    def delay_s(self, attempt: int) -> float:
        """Delay before attempt ``attempt + 1`` (attempts count from 1)."""
        return min(self.max_delay_s, self.initial_delay_s * self.backoff_coefficient ** (attempt - 1))


class Autoscale(Spec):
    min_containers: int = 0
    max_containers: int | None = None
    buffer_containers: int = 0
    scaledown_window_s: float = 60.0


class VolumeMount(Spec):
    """A volume mounted read-write at ``path`` in every container of a function."""

    path: str
    name: str
    # The deploy makes the volume when it does not exist yet.
    create_if_missing: bool = False


class BatchSpec(Spec):
    """``@thaw.batched``: the container gathers up to ``max_batch_size``
    inputs into one call of lists, waiting at most ``wait_ms`` after the
    first for the batch to fill."""

    max_batch_size: int
    wait_ms: int


class FunctionSpec(Spec):
    """One deployed function or class, as the SDK describes it at deploy."""

    name: str
    # Where the runtime finds it inside the code bundle.
    module: str
    qualname: str
    kind: Literal["function", "class"] = "function"
    methods: list[str] = []
    is_async: bool = False
    is_generator: bool = False
    resources: Resources = Resources()
    retries: RetryPolicy = RetryPolicy()
    autoscale: Autoscale = Autoscale()
    timeout_s: float = 300.0
    # @thaw.concurrent(max_inputs=...): inputs one container runs at once.
    max_inputs: int = 1
    # @thaw.batched(...): max_inputs is then at least its max_batch_size.
    batch: BatchSpec | None = None
    env: dict[str, str] = {}
    enable_memory_snapshot: bool = False
    experimental_options: dict[str, Any] = {}
    # None, or a bare debian_slim: the node's default rootfs.
    image: ImageRef | None = None
    # When the cron service runs it by itself (thaw.Period / thaw.Cron).
    schedule: ScheduleSpec | None = None
    # Later secrets override earlier ones' keys.
    secrets: list[SecretRef] = []
    volumes: list[VolumeMount] = []
    # A with_options variant (thaw_core.variants): the function it derives from.
    variant_of: str | None = None

    @property
    def wants_gpu_snapshot(self) -> bool:
        """Its memory snapshots are to take the GPU's state too (the agent's
        gpu_snapshot; a CPU-only one where the node cannot)."""
        return bool(
            self.enable_memory_snapshot and self.experimental_options.get("enable_gpu_snapshot")
        )


class AppEvent(Message, tag="app_event"):
    app: str
    version: int
    state: Literal["deployed", "stopped"]
    at: float = msgspec.field(default_factory=now)
