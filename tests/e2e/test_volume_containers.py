"""Volumes in real containers, as the guide uses them: a ``.map()`` batch
whose writes land without a commit call once its containers scale down, two
containers committing at once, a checkpoint that survives a kill -9 of its
container for the retried input, a reload refused while a file is open for
writing, and a container restored from a memory snapshot that reads what was
committed after the snapshot.

Gateway, scheduler, builder, snapshots and volumes services and an agent run
as real processes on a platform of this module's own.
"""

from __future__ import annotations

import asyncio
import io
import json
import os
import signal
import tempfile
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import asyncpg
import pytest
import thaw as modal
from fixtures.platform import Platform
from fixtures.wait import wait_for

APPS = Path(__file__).parent / "apps"
APP = "volumes-e2e"
NODE = "vol-a"

pytestmark = pytest.mark.slow


def api(p: Platform, path: str, method: str = "GET") -> Any:
    req = urllib.request.Request(
        p.gateway_url + path, method=method, headers={"Authorization": f"Bearer {p.token}"}
    )
    with urllib.request.urlopen(req, timeout=30) as r:
        body = r.read()
    return json.loads(body) if body else None


def containers(
    p: Platform, function: str, states: tuple[str, ...] = ("starting", "ready")
) -> list[dict[str, Any]]:
    return p.live_containers(APP, function, states)


def listed_ready(p: Platform, function: str, container_id: str) -> dict[str, Any] | None:
    """``container_id`` once listed ready: the list follows heartbeats, and one
    sent while the container was being restored lists it starting, not yet
    ``restored`` (a restore that fails starts it cold under the same id)."""
    return next(
        (c for c in containers(p, function, ("ready",)) if c["container_id"] == container_id),
        None,
    )


def gone(p: Platform, function: str) -> bool:
    """No container of ``function`` is listed, draining ones included (their
    last commit runs while they drain)."""
    return not containers(p, function, ("starting", "ready", "draining"))


def ready_snapshots(p: Platform) -> list[dict[str, Any]]:
    async def rows() -> list[dict[str, Any]]:
        conn = await asyncpg.connect(p.base_env["THAW_DATABASE_URL"])
        try:
            found = await conn.fetch(
                "SELECT snapshot_id FROM snapshots WHERE app = $1 AND state = 'ready'", APP
            )
        finally:
            await conn.close()
        return [dict(r) for r in found]

    return asyncio.run(rows())


def put(vol: modal.Volume, files: dict[str, bytes]) -> None:
    with tempfile.TemporaryDirectory() as tmp, vol.batch_upload(force=True) as batch:
        for name, data in files.items():
            local = Path(tmp) / name
            local.write_bytes(data)
            batch.put_file(local, name)


def read(vol: modal.Volume, path: str) -> bytes:
    out = io.BytesIO()
    vol.read_file_into_fileobj(path, out)
    return out.getvalue()


@pytest.fixture(scope="module")
async def vol_platform(platform_factory: Callable[..., Any]) -> Platform:
    p: Platform = await platform_factory((NODE,))
    for service in ("volumes", "snapshots"):
        p.ensure_service(service)
    await asyncio.to_thread(p.deploy, "vol_patterns.py", timeout=300)
    return p


@pytest.fixture
def use(vol_platform: Platform, monkeypatch: pytest.MonkeyPatch) -> Platform:
    monkeypatch.setenv("THAW_GATEWAY_URL", vol_platform.gateway_url)
    monkeypatch.setenv("THAW_TOKEN", vol_platform.token)
    return vol_platform


def fn(name: str) -> Any:
    return modal.Function.from_name(APP, name)


# 200 inputs through cold containers, their scale-down and last commits: on a
# loaded 2-core machine this alone has passed pytest's default 300 s.
@pytest.mark.timeout(900)
def test_a_batch_written_without_commits_lands_when_its_containers_scale_down(
    use: Platform,
) -> None:
    p = use
    assert sorted(fn("write_result").map(range(200))) == list(range(200))
    wait_for(lambda: gone(p, "write_result"), 120, "write_result's containers to scale down", p)
    want = {f"result_{i}.txt": f"result {i}" for i in range(200)}
    vol = modal.Volume.from_name("e2e-results")
    listed = {e.path: e for e in vol.listdir("/")}
    assert set(listed) == set(want)
    assert all(listed[n].size == len(v) for n, v in want.items())
    assert read(vol, "result_17.txt") == b"result 17"
    assert fn("read_results").remote() == want


def test_two_containers_committing_at_once_both_land(use: Platform) -> None:
    a = fn("commit_together").spawn("a", ["b"])
    b = fn("commit_together").spawn("b", ["a"])
    seen_a, seen_b = a.get(timeout=180), b.get(timeout=180)
    assert {"a.txt", "here_a", "here_b"} <= set(seen_a)
    assert {"b.txt", "here_a", "here_b"} <= set(seen_b)
    vol = modal.Volume.from_name("e2e-shared")
    assert read(vol, "a.txt") == b"a" * 1000 and read(vol, "b.txt") == b"b" * 1000


def test_a_checkpoint_committed_before_a_kill_9_is_found_by_the_retry(use: Platform) -> None:
    p = use
    vol = modal.Volume.from_name("e2e-checkpoints")
    call = fn("resumable").spawn("job1")
    wait_for(lambda: "job1.step" in {e.path for e in vol.listdir("/")}, 120, "the checkpoint", p)
    (victim,) = wait_for(lambda: containers(p, "resumable"), 30, "resumable's container", p)
    pid_file = (
        p.root / f"agent-{NODE}" / "agent" / NODE / "containers" / victim["container_id"] / "pid"
    )
    os.kill(int(pid_file.read_text()), signal.SIGKILL)
    assert call.get(timeout=180) == "resumed from step 1"


def test_reload_with_a_file_open_for_writing_is_a_clear_error(use: Platform) -> None:
    got = fn("open_for_writing_blocks_reload").remote("job2")
    assert got.startswith("InvalidError") and "/ckpt/job2.open" in got and "open for writing" in got


def test_a_restored_container_reads_what_was_committed_after_its_snapshot(use: Platform) -> None:
    p = use
    vol = modal.Volume.from_name("e2e-snapshot")
    put(vol, {"state.txt": b"before the snapshot"})
    snapped = modal.Cls.from_name(APP, "Snapped")()
    # Made at deploy, before any call; the first call restores it too.
    wait_for(lambda: ready_snapshots(p), 180, "a ready snapshot", p)
    first = snapped.read.remote("state.txt")
    assert first["content"] == "before the snapshot"
    restored = wait_for(
        lambda: listed_ready(p, "Snapped", first["container"]), 30, "the first container ready", p
    )
    assert restored["restored"], restored
    p.stop_containers(APP, "Snapped")

    put(vol, {"state.txt": b"after the snapshot", "new.txt": b"new"})
    second = snapped.read.remote("state.txt")
    assert second["container"] != first["container"]
    running = wait_for(
        lambda: listed_ready(p, "Snapped", second["container"]), 30, "the second container ready", p
    )
    # Restored from the very process the snapshot caught, as the first was.
    assert running["restored"] and second["snap_draw"] == first["snap_draw"], (running, second)
    assert second["content"] == "after the snapshot"
    assert snapped.read.remote("new.txt")["content"] == "new"
