"""Hard resource limits on real runc containers: the cgroup holds what the
function asked for, an out-of-memory kill fails the input saying so, and a
fork bomb stops at the pids limit."""

from __future__ import annotations

import errno
import os
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest
from fixtures.agent import (
    Agent,
    blob,  # noqa: F401 - a fixture
    call,
    make_agent,  # noqa: F401 - a fixture
    put_bundle,
    result_of,
    spec,
    value,
)
from fixtures.host import needs_containers
from thaw_agent import reservations, resources
from thaw_core.blob import BlobStore
from thaw_core.bus import Bus
from thaw_core.schema import Resources

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
def burn(seconds):
    # CPU time over wall time while spinning: the share of a core it got.
    wall, cpu = time.monotonic(), time.process_time()
    while time.monotonic() - wall < seconds:
        pass
    return (time.process_time() - cpu) / (time.monotonic() - wall)


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


@app.function()
def fill(most_mb):
    # Writes to the writable layer (not /tmp, a tmpfs) until refused.
    written = 0
    try:
        with open("/var/tmp/fill", "wb") as f:
            for _ in range(most_mb):
                f.write(b"x" * (1024 * 1024))
                f.flush()
                os.fsync(f.fileno())
                written += 1
    except OSError as e:
        return [e.errno, written]
    return [0, written]
"""

PIDS_LIMIT = 40
_MIB = 1024 * 1024


def cgroup_file(controller: str, agent: Agent, cid: str, name: str) -> str:
    relative = agent.svc.layout.cgroup(cid).lstrip("/")
    unified = Path("/sys/fs/cgroup/cgroup.controllers").exists()
    base = Path("/sys/fs/cgroup") if unified else Path("/sys/fs/cgroup") / controller
    return (base / relative / name).read_text().strip()


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
    cid = await agent.start(bus, app, sha, spec("hog", resources=r))
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


UNIFIED = Path("/sys/fs/cgroup/cgroup.controllers").exists()
CPU_HIERARCHY = Path("/sys/fs/cgroup") if UNIFIED else Path("/sys/fs/cgroup/cpu")


def cpu_cgroup_of(pid: int) -> str:
    """The cpu cgroup of a process, as ``/proc/<pid>/cgroup`` names it."""
    for line in Path(f"/proc/{pid}/cgroup").read_text().splitlines():
        _, controllers, path = line.split(":", 2)
        if (controllers == "" and UNIFIED) or "cpu" in controllers.split(","):
            return path
    raise AssertionError(f"no cpu cgroup for pid {pid}")


@pytest.mark.skipif(
    not os.access(CPU_HIERARCHY, os.W_OK), reason=f"{CPU_HIERARCHY} is not writable"
)
async def test_the_nodes_containers_together_weigh_as_its_cores_against_the_host(
    make_agent: Callable[..., Awaitable[Agent]], bus: Bus, blob: BlobStore
) -> None:
    agent = await make_agent()
    app = f"lim-{uuid.uuid4().hex[:10]}"
    sha = await put_bundle(blob, APP_SOURCE)
    cid = await agent.start(bus, app, sha, spec("burn", resources=Resources(cpu=0.25)))
    container = await agent.wait_state(cid, "ready")

    # Each cgroup above the container (its node's, then /thaw) weighs as the
    # cores the agent advertises, not as one process (the default).
    cores = agent.svc.heartbeat().cores
    name, expected = (
        ("cpu.weight", min(10_000, cores * 100)) if UNIFIED else ("cpu.shares", cores * 1024)
    )
    here = CPU_HIERARCHY / cpu_cgroup_of(container.pid).lstrip("/")
    assert here.name == cid
    for parent in (here.parent, here.parent.parent):
        assert int((parent / name).read_text()) == expected, parent
    assert here.parent.parent == CPU_HIERARCHY / "thaw"


async def test_an_out_of_memory_kill_fails_the_input_naming_the_limit(
    make_agent: Callable[..., Awaitable[Agent]], bus: Bus, blob: BlobStore
) -> None:
    agent = await make_agent()
    app = f"lim-{uuid.uuid4().hex[:10]}"
    sha = await put_bundle(blob, APP_SOURCE)
    r = Resources(memory_mb=256, memory_limit_mb=256)
    cid = await agent.start(bus, app, sha, spec("hog", resources=r))
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
    cid = await agent.start(bus, app, sha, spec("forks", resources=Resources()))
    await agent.wait_state(cid, "ready")

    forked = value(await result_of(bus, await call(bus, app, "forks", 10_000), timeout_s=60))

    # The runtime's own threads count too: fewer children than the limit.
    assert 0 < forked < PIDS_LIMIT
    # The container lives on and takes the next input.
    assert value(await result_of(bus, await call(bus, app, "forks", 1), timeout_s=60)) == 1


async def test_half_a_core_measures_at_most_about_half_a_core(
    make_agent: Callable[..., Awaitable[Agent]], bus: Bus, blob: BlobStore
) -> None:
    agent = await make_agent()
    app = f"lim-{uuid.uuid4().hex[:10]}"
    sha = await put_bundle(blob, APP_SOURCE)
    cid = await agent.start(
        bus, app, sha, spec("burn", resources=Resources(cpu=0.5, cpu_limit=0.5))
    )
    await agent.wait_state(cid, "ready")

    share = value(await result_of(bus, await call(bus, app, "burn", 2.0), timeout_s=60))

    print(f"cpu=0.5: the spinning function got {share:.2f} of a core")
    # Loose: a busy machine may give it less, the quota never much more.
    assert 0 < share < 0.75
    # And the kernel held it back whenever it reached the quota (cpu.stat
    # counts throttled periods on cgroup v1 and v2 alike); on a machine too
    # busy to give it even half a core it never reached it, and was not.
    stat = dict(line.split() for line in cgroup_file("cpu", agent, cid, "cpu.stat").splitlines())
    assert int(stat["nr_throttled"]) > 0 or share < 0.45, (share, stat)


async def test_writing_past_the_ephemeral_disk_is_enospc_in_the_function(
    make_agent: Callable[..., Awaitable[Agent]], bus: Bus, blob: BlobStore
) -> None:
    agent = await make_agent()
    app = f"lim-{uuid.uuid4().hex[:10]}"
    sha = await put_bundle(blob, APP_SOURCE)
    cid = await agent.start(bus, app, sha, spec("fill", resources=Resources(ephemeral_disk_mb=64)))
    await agent.wait_state(cid, "ready")
    # Its heartbeat holds the disk not yet written as taken: less is free than
    # the file system has (only what mkfs wrote of the sparse image is used).
    beat = agent.svc.heartbeat()
    _, fs_free_mb = reservations.disk_mb(agent.svc.layout.containers)
    assert 0 < beat.free_disk_mb <= fs_free_mb - 32 and beat.disk_mb >= fs_free_mb

    err, written_mb = value(await result_of(bus, await call(bus, app, "fill", 200), timeout_s=120))

    assert err == errno.ENOSPC
    assert 32 <= written_mb <= 64
    # The container lives on (refused a write, not killed), and the space its
    # file took is free again once the file is truncated.
    again = await result_of(bus, await call(bus, app, "fill", 1), timeout_s=60)
    assert value(again) == [0, 1]
