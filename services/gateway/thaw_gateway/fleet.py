"""What the fleet can run, as the gateway tells users (``thaw_core.fleet_fit``):
a deploy's warnings for functions no node could ever run, and what a waiting
call waits for."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import msgspec
from thaw_core.fleet_fit import NodeOffer, pending_limit_s, why_nowhere
from thaw_core.schema import FunctionSpec, GpuInfo

from thaw_gateway.errors import ApiError
from thaw_gateway.state import Gateway

# Nodes the scheduler has not declared dead (it marks a silent one 'dead').
_LIVE_NODES_SQL = "SELECT id, inventory FROM nodes WHERE state = 'ready' ORDER BY id"


async def _live_inventories(gw: Gateway) -> dict[str, dict[str, Any]]:
    """Each live node's latest heartbeat, as JSON."""
    return {
        row["id"]: row["inventory"] if isinstance(row["inventory"], dict) else {}
        for row in await gw.db.fetch(_LIVE_NODES_SQL)
    }


async def live_offers(gw: Gateway) -> list[NodeOffer]:
    return _offers(await _live_inventories(gw))


def _offers(inventories: dict[str, dict[str, Any]]) -> list[NodeOffer]:
    offers = []
    for node, inventory in inventories.items():
        try:
            gpus = msgspec.convert(inventory.get("gpus") or [], list[GpuInfo])
        except msgspec.ValidationError:
            gpus = []
        cores = float(inventory.get("cores") or 0)
        memory_mb = int(inventory.get("memory_mb") or 0)
        disk_mb = int(inventory.get("disk_mb") or 0)
        offers.append(NodeOffer.of(node, cores, memory_mb, gpus, disk_mb))
    return offers


def _no_gpu_snapshots(inventories: dict[str, dict[str, Any]]) -> str | None:
    """Why no live node can take GPU memory snapshots; None when one can."""
    why = {n: str(inv.get("no_gpu_snapshots") or "") for n, inv in inventories.items()}
    if not why:
        return "no node is up"
    if any(not reason for reason in why.values()):
        return None
    return "; ".join(f"{node}: {reason}" for node, reason in why.items())


async def deploy_warnings(gw: Gateway, functions: Sequence[FunctionSpec]) -> list[str]:
    """One line per function no live node could ever run (what it asks, what
    nodes offer), and per function asking for GPU snapshots no node can take."""
    inventories = await _live_inventories(gw)
    offers = _offers(inventories)
    warnings = []
    no_gpu_snapshots = _no_gpu_snapshots(inventories)
    for spec in functions:
        if spec.wants_gpu_snapshot and no_gpu_snapshots is not None:
            warnings.append(
                f"{spec.name}: enable_gpu_snapshot: no node can take GPU memory snapshots"
                f" ({no_gpu_snapshots}); its memory snapshots are CPU-only: load to the CPU"
                " in enter(snap=True) and move to the GPU in enter(snap=False)"
            )
        why = why_nowhere(spec.resources, offers)
        if why is not None:
            warnings.append(
                f"{spec.name}: {why}; its calls wait for such a node up to"
                f" {pending_limit_s():g}s, then fail"
            )
    return warnings


async def waiting_for(gw: Gateway, app: str, function: str) -> str:
    """What a call of ``app.function`` that has not started waits for ('' when
    nothing is known to be wrong: a container is on its way)."""
    try:
        spec = (await gw.catalog.get_app(app)).functions.get(function)
    except ApiError:  # stopped or unknown app: the call's result will say so
        return ""
    if spec is None:
        return ""
    why = why_nowhere(spec.resources, await live_offers(gw))
    return f"a node that can run it: {why}" if why else ""
