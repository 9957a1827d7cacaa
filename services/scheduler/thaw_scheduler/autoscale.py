"""How many containers a function needs, and which ones may go.

Pure functions of what the scheduler observes, so the policy is tested
without servers. The observed load comes from the function's durable
consumer on INVOKE: ``pending`` inputs not yet handed to any agent and
``running`` inputs handed out and not yet acked.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

from thaw_core.schema import Autoscale, ContainerInfo

# States of a container that serves, or soon will, this function's inputs.
LIVE_STATES = frozenset({"starting", "ready"})


@dataclass(frozen=True)
class Load:
    pending: int
    running: int

    @property
    def demand(self) -> int:
        return self.pending + self.running


@dataclass(frozen=True)
class Plan:
    start: int = 0
    stop: list[str] = field(default_factory=list)

    @property
    def is_empty(self) -> bool:
        return self.start == 0 and not self.stop


def target(policy: Autoscale, load: Load, max_inputs: int) -> int:
    """Containers wanted now: enough slots for every input in flight or
    waiting, plus the buffer while the function is active, within
    ``[min_containers, max_containers]``."""
    wanted = math.ceil(load.demand / max(1, max_inputs))
    if wanted:
        wanted += policy.buffer_containers
    wanted = max(wanted, policy.min_containers)
    if policy.max_containers is not None:
        wanted = min(wanted, policy.max_containers)
    return wanted


def plan(
    policy: Autoscale,
    load: Load,
    max_inputs: int,
    containers: Sequence[ContainerInfo],
    now: float,
) -> Plan:
    """Start what is missing at once; stop only containers that have been
    idle for the whole ``scaledown_window`` (longest idle first), so a burst
    that pauses for a moment finds its containers still warm."""
    live = [c for c in containers if c.state in LIVE_STATES]
    wanted = target(policy, load, max_inputs)
    if wanted > len(live):
        return Plan(start=wanted - len(live))
    surplus = len(live) - wanted
    if surplus == 0:
        return Plan()
    idle = sorted(
        (
            c
            for c in live
            if c.state == "ready"
            and c.inflight == 0
            and c.idle_since > 0
            and now - c.idle_since >= policy.scaledown_window_s
        ),
        key=lambda c: c.idle_since,
    )
    return Plan(stop=[c.container_id for c in idle[:surplus]])
