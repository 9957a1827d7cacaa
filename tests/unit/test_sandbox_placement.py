"""Where the scheduler puts a sandbox: a node with room (less what sandboxes
placed since its last heartbeat hold), told with StartSandbox; no room is an
answer naming what was asked; sandboxes are never stopped by the reconciler."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Any

import msgspec
import pytest
from thaw_core import contract, secrets_grant
from thaw_core.schema import (
    CommandReply,
    ContainerInfo,
    NodeHeartbeat,
    Resources,
    SecretRef,
    SecretsRequest,
    encode,
)
from thaw_core.schema.sandboxes import PlaceSandbox, SandboxSpec, StartSandbox
from thaw_scheduler import sandbox_placement
from thaw_scheduler.reconcile import Reconciler
from thaw_scheduler.sandbox_placement import SandboxPlacer


@dataclass
class Reply:
    data: bytes


@dataclass
class FakeBus:
    asked: list[tuple[str, Any]] = field(default_factory=list)

    async def request(self, subject: str, msg: Any, *, timeout_s: float = 5) -> Reply:
        self.asked.append((subject, msg))
        return Reply(encode(CommandReply(ok=True)))


def node(node_id: str, cores: float, containers: list[ContainerInfo] | None = None) -> NodeHeartbeat:
    return NodeHeartbeat(
        node_id=node_id, cores=2, memory_mb=4096, free_cores=cores, free_memory_mb=4096,
        containers=containers or [], at=time.time(),
    )  # fmt: skip


def spec(sid: str, cpu: float = 1.0) -> SandboxSpec:
    return SandboxSpec(app="a", sandbox_id=sid, resources=Resources(cpu=cpu, memory_mb=256))


async def test_placed_on_a_node_with_room_and_counted_until_its_heartbeat_shows_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(sandbox_placement, "FRESH_VIEW_WAIT_S", 0.2)  # no heartbeat comes
    bus = FakeBus()
    rec = Reconciler(bus)  # type: ignore[arg-type]
    rec.observe(node("n1", 1.5))
    placer = SandboxPlacer(bus, rec)  # type: ignore[arg-type]
    assert (await placer.place(PlaceSandbox(spec=spec("sb-1")))).node_id == "n1"
    subject, sent = bus.asked[0]
    assert subject == contract.agent_command_subject("n1") and isinstance(sent, StartSandbox)
    # sb-1 holds 1 of n1's 1.5 free cores until a heartbeat shows it.
    refused = await placer.place(PlaceSandbox(spec=spec("sb-2")))
    assert "no node has room" in refused.error and "cpu=1" in refused.error
    assert len(bus.asked) == 1


async def test_no_room_is_judged_on_a_heartbeat_taken_after_the_request() -> None:
    """A node full as its last heartbeat said (taken before a container there
    went idle or stopped): the answer waits for the next one, which has room."""
    bus = FakeBus()
    rec = Reconciler(bus)  # type: ignore[arg-type]
    stale = node("n1", 0.5)
    rec.observe(msgspec.structs.replace(stale, at=stale.at - 1.0))
    placing = asyncio.ensure_future(SandboxPlacer(bus, rec).place(PlaceSandbox(spec=spec("sb-7"))))  # type: ignore[arg-type]
    await asyncio.sleep(0.3)
    assert not placing.done() and not bus.asked
    rec.observe(node("n1", 1.5))  # the container's stop, as the agent now says
    assert (await asyncio.wait_for(placing, 10)).node_id == "n1"


async def test_no_node_up_is_said_after_a_short_wait(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sandbox_placement, "NO_NODE_WAIT_S", 0.2)
    placer = SandboxPlacer(FakeBus(), Reconciler(FakeBus()))  # type: ignore[arg-type]
    assert "no node is up" in (await placer.place(PlaceSandbox(spec=spec("sb-3")))).error


def test_the_reconciler_leaves_sandboxes_alone() -> None:
    rec = Reconciler(FakeBus())  # type: ignore[arg-type]
    sandbox = ContainerInfo(
        container_id="sb-4", app="a", function=contract.SANDBOX_FUNCTION, version=0, state="ready"
    )
    rec.observe(node("n1", 1.0, [sandbox]))
    assert rec.containers() == {}


async def test_a_sandbox_with_secrets_is_granted_them_on_its_node_only() -> None:
    """StartSandbox carries the scheduler's signed leave to fetch the sandbox's
    secrets, for the node chosen: the gateway answers that node and no other."""
    bus = FakeBus()
    key = b"k" * secrets_grant.KEY_BYTES
    rec = Reconciler(bus, grant_key=key)  # type: ignore[arg-type]
    rec.observe(node("n1", 1.5))
    refs = [SecretRef(name="creds")]
    with_secrets = msgspec.structs.replace(spec("sb-5", cpu=0.25), secrets=refs)
    assert (await SandboxPlacer(bus, rec).place(PlaceSandbox(spec=with_secrets))).node_id == "n1"  # type: ignore[arg-type]
    _, sent = bus.asked[0]
    grant = sent.secrets_grant
    assert grant is not None and (grant.node_id, grant.container_id) == ("n1", "sb-5")
    ask = SecretsRequest(app="a", function=contract.SANDBOX_SPEC_NAME, secrets=refs, grant=grant)
    n1, n2 = (contract.agent_inbox_prefix(n) + ".r1" for n in ("n1", "n2"))
    assert secrets_grant.refusal(key, ask, n1) == ""
    assert "not" in secrets_grant.refusal(key, ask, n2)
    # Without secrets, no grant.
    assert (await SandboxPlacer(bus, rec).place(PlaceSandbox(spec=spec("sb-6", cpu=0.25)))).node_id  # type: ignore[arg-type]
    assert bus.asked[1][1].secrets_grant is None
