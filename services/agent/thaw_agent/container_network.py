"""A container's outbound network, for as long as it runs.

A sandbox (unless ``block_network``) and a function's container (unless the
function has ``enable_memory_snapshot``) get a namespace of
``thaw_core.outbound_netns`` of their own, owned by a user namespace with the
container's id mapping (runc joins both by path), from which the node's own
addresses and the platform's servers (``deny``: NATS, the blob store, as the
agent's settings name them) are refused.

Containers of a function with memory snapshots keep runc's empty namespace
(only ``lo``), all of them, also those that start cold (so that its code
sees the same network in each): CRIU restores a container's user namespace
afresh, and a task in it cannot join a network namespace that another user
namespace owns, so a restored container could not be given one; and one
that is checkpointed with an outbound namespace would carry slirp's
addresses and any open TCP connection into every restore.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence
from pathlib import Path

from thaw_core.outbound_netns import outbound_netns, resolv_conf

from thaw_agent import oci
from thaw_agent.userns import IdRange


class ContainerNetwork:
    def __init__(self, deny: Sequence[str]) -> None:
        self.deny = deny
        self._stack = contextlib.AsyncExitStack()

    async def open(self, container_dir: Path, ids: IdRange) -> oci.Network:
        """Make the namespace; what ``oci.build_config(network=)`` takes."""
        ns = await self._stack.enter_async_context(outbound_netns(self.deny, (ids.base, ids.count)))
        resolv = container_dir / "resolv.conf"
        await asyncio.to_thread(resolv.write_text, resolv_conf())
        return oci.Network(ns.net, ns.user, resolv)

    async def close(self) -> None:
        """End it (slirp4netns and the namespace's holder); once the
        container is gone. Closing again does nothing."""
        await self._stack.aclose()
