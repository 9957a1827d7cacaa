"""Hard resource limits on real runc containers: the cgroup holds what the
function asked for, an out-of-memory kill fails the input saying so, and a
fork bomb stops at the pids limit."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import cloudpickle
import pytest
from fixtures.agent import (
    Agent,
    blob,  # noqa: F401 - a fixture
    make_agent,  # noqa: F401 - a fixture
    put_bundle,
    result_of,
    value,
)
from fixtures.host import needs_containers
from thaw_agent import resources
from thaw_core.blob import BlobStore
from thaw_core.bus import Bus
from thaw_core.contract import invoke_subject
from thaw_core.schema import FunctionSpec, Invoke, Resources

pytestmark = [pytest.mark.slow, needs_containers]

APP_SOURCE = """
import os
import time

import thaw

app = thaw.App("limits-test")


@app.function()
def hog(mb):
    chunks = [b"x" * (1024 * 1024) for _ in range(mb)]
    return len(chunks)


@app.function()
def forks(most):
    children = []
    try:
        for _ in range(most):
            pid = os.fork()
            if pid == 0:
                time.sleep(60)
                os._exit(0)
            children.append(pid)
    except OSError:
        pass
    for pid in children:
        os.kill(pid, 9)
        os.waitpid(pid, 0)
    return len(children)
"""

PIDS_LIMIT = 40
_MIB = 1024 * 1024


def spec(name: str, r: Resources) -> FunctionSpec:
    return FunctionSpec(name=name, module="app", qualname=name, resources=r)


def cgroup_file(controller: str, agent: Agent, cid: str, name: str) -> str:
    relative = agent.svc.layout.cgroup(cid).lstrip("/")
    unified = Path("/sys/fs/cgroup/cgroup.controllers").exists()
    base = Path("/sys/fs/cgroup") if unified else Path("/sys/fs/cgroup") / controller
    return (base / relative / name).read_text().strip()


async def call(bus: Bus, app: str, fn: str, *args: Any) -> str:
    call_id = f"fc-{uuid.uuid4().hex}"
    invoke = Invoke(call_id=call_id, app=app, function=fn, args=cloudpickle.dumps((args, {})))
    await bus.publish(invoke_subject(app, fn), invoke)
    return call_id


@pytest.fixture
def small_pids_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("THAW_CONTAINER_PIDS_LIMIT", str(PIDS_LIMIT))


async def test_the_cgroup_holds_the_functions_limits(
    make_agent: Callable[..., Awaitable[Agent]], bus: Bus, blob: BlobStore, small_pids_limit: None
) -> None:
    agent = await make_agent()
    app = f"lim-{uuid.uuid4().hex[:10]}"
    sha = await put_bundle(blob, APP_SOURCE)
    r = Resources(cpu=0.25, cpu_limit=0.5, memory_mb=128, memory_limit_mb=256)
    cid = await agent.start(bus, app, sha, spec("hog", r))
    await agent.wait_state(cid, "ready")

    if Path("/sys/fs/cgroup/cgroup.controllers").exists():
        assert cgroup_file("cpu", agent, cid, "cpu.max") == f"50000 {resources.CPU_PERIOD_US}"
        assert int(cgroup_file("memory", agent, cid, "memory.max")) == 256 * _MIB
    else:
        assert int(cgroup_file("cpu", agent, cid, "cpu.cfs_quota_us")) == 50000
        assert int(cgroup_file("cpu", agent, cid, "cpu.cfs_period_us")) == resources.CPU_PERIOD_US
        assert int(cgroup_file("cpu", agent, cid, "cpu.shares")) == 256
        assert int(cgroup_file("memory", agent, cid, "memory.limit_in_bytes")) == 256 * _MIB
    assert int(cgroup_file("pids", agent, cid, "pids.max")) == PIDS_LIMIT
    # Within its limit, it runs.
    assert value(await result_of(bus, await call(bus, app, "hog", 50), timeout_s=60)) == 50


async def test_an_out_of_memory_kill_fails_the_input_naming_the_limit(
    make_agent: Callable[..., Awaitable[Agent]], bus: Bus, blob: BlobStore
) -> None:
    agent = await make_agent()
    app = f"lim-{uuid.uuid4().hex[:10]}"
    sha = await put_bundle(blob, APP_SOURCE)
    r = Resources(memory_mb=256, memory_limit_mb=256)
    cid = await agent.start(bus, app, sha, spec("hog", r))
    await agent.wait_state(cid, "ready")

    result = await result_of(bus, await call(bus, app, "hog", 600), timeout_s=60)

    assert result.status == "failure"
    assert "out of memory (limit 256 MiB)" in result.error
    assert result.attempts == 1
    assert "out of memory (limit 256 MiB)" in agent.container(cid).error


async def test_a_fork_bomb_stops_at_the_pids_limit(
    make_agent: Callable[..., Awaitable[Agent]], bus: Bus, blob: BlobStore, small_pids_limit: None
) -> None:
    agent = await make_agent()
    app = f"lim-{uuid.uuid4().hex[:10]}"
    sha = await put_bundle(blob, APP_SOURCE)
    cid = await agent.start(bus, app, sha, spec("forks", Resources()))
    await agent.wait_state(cid, "ready")

    forked = value(await result_of(bus, await call(bus, app, "forks", 10_000), timeout_s=60))

    # The runtime's own threads count too: fewer children than the limit.
    assert 0 < forked < PIDS_LIMIT
    # The container lives on and takes the next input.
    assert value(await result_of(bus, await call(bus, app, "forks", 1), timeout_s=60)) == 1
