"""``outbound_netns`` leaves the host's mounts alone: slirp4netns's sandbox
once took every shared mount under /run/netns with it (each node's
namespace of the fleet tests, or any host's), as its pivot_root's lazy
unmount of the old root propagated back."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import uuid

import pytest
from thaw_core.outbound_netns import outbound_netns


def _run(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, check=False)


def _mounted(path: str) -> bool:
    with open("/proc/self/mountinfo") as f:
        return any(line.split()[4] == path for line in f)


@pytest.mark.skipif(shutil.which("slirp4netns") is None, reason="slirp4netns is not installed")
async def test_a_namespace_leaves_a_shared_host_mount_mounted() -> None:
    name = f"thaw-probe-{uuid.uuid4().hex[:6]}"
    made = await asyncio.to_thread(_run, "ip", "netns", "add", name)
    if made.returncode != 0:
        pytest.skip(f"no network namespaces here: {made.stderr.strip()}")
    try:
        assert _mounted(f"/run/netns/{name}")  # a shared mount, as ip netns makes it
        async with outbound_netns() as ns:
            out = await asyncio.to_thread(
                _run, "nsenter", f"--net={ns.net}", "ip", "-4", "-o", "addr", "show", "tap0"
            )
            assert "10.0.2." in out.stdout, out.stderr
            assert _mounted(f"/run/netns/{name}")
        assert _mounted(f"/run/netns/{name}")
    finally:
        await asyncio.to_thread(_run, "ip", "netns", "del", name)
