"""Nowhere to run: on a fleet without GPUs (and with less than 64 TiB of
memory), a function asking for an H100 or 64 TiB deploys with a warning
naming the request and what the nodes offer; a call of it says what it waits
for while it waits (the HTTP status body, FunctionCall.get's TimeoutError),
then fails after the pending limit saying why. A function the fleet can run
is not warned about and runs."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import textwrap
import urllib.request
from collections.abc import Callable
from typing import Any

import pytest
from fixtures.platform import E2E_APPS, Platform
from thaw_core.fleet_fit import PENDING_LIMIT_ENV

pytestmark = pytest.mark.slow

PENDING_LIMIT_S = 8


@pytest.fixture(scope="module")
async def fleet(platform_factory: Callable[..., Any]) -> Platform:
    return await platform_factory(("nowhere-a",), env={PENDING_LIMIT_ENV: str(PENDING_LIMIT_S)})


SCRIPT = textwrap.dedent(
    """
    import sys
    import thaw

    call = thaw.Function.from_name("nowhere", sys.argv[1]).spawn()
    print("call", call.object_id, flush=True)
    try:
        call.get(timeout=1)
    except TimeoutError as e:
        print("timeout:", e, flush=True)
    try:
        print("result:", call.get(timeout=120))
    except Exception as e:
        print("failed:", type(e).__name__, e, flush=True)
    """
)


def run_sdk(p: Platform, function: str) -> str:
    """SCRIPT as a user's program runs it, pointed at this platform."""
    out = subprocess.run(
        [sys.executable, "-c", SCRIPT, function],
        env={**os.environ, "THAW_GATEWAY_URL": p.gateway_url, "THAW_TOKEN": p.token},
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    return out.stdout + out.stderr


def post_call(p: Platform, function: str) -> str:
    req = urllib.request.Request(
        f"{p.gateway_url}/v1/functions/nowhere/{function}/calls",
        data=b"{}",
        method="POST",
        headers={"Authorization": f"Bearer {p.token}", "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(req, timeout=30) as r:
        assert r.status == 202
        return json.loads(r.read())["call_id"]


async def test_a_request_no_node_can_serve_is_warned_then_fails_saying_why(fleet: Platform) -> None:
    deployed = await asyncio.to_thread(fleet.cli, "deploy", str(E2E_APPS / "nowhere.py"))
    assert deployed.returncode == 0, deployed.stdout + deployed.stderr
    warnings = [line for line in deployed.stderr.splitlines() if line.startswith("warning: ")]
    assert len(warnings) == 2, deployed.stderr
    gpu = next(w for w in warnings if "on_h100" in w)
    assert "no node can run cpu=" in gpu and "gpu=H100" in gpu
    assert "nowhere-a: " in gpu and "no GPU" in gpu  # what the node offers
    assert f"up to {PENDING_LIMIT_S}s, then fail" in gpu
    assert any("huge" in w and "memory=67108864 MiB" in w for w in warnings)

    out = await asyncio.to_thread(run_sdk, fleet, "on_h100")
    assert "timeout: " in out and "it waits for a node that can run it: no node can run" in out, out
    assert "failed: " in out, out
    failed = out[out.index("failed: ") :]
    assert f"waited {PENDING_LIMIT_S}s ({PENDING_LIMIT_ENV})" in failed and "gpu=H100" in failed

    # The one the fleet can run is not held up.
    assert "result: ran" in await asyncio.to_thread(run_sdk, fleet, "fine")


async def test_a_waiting_calls_http_status_says_what_it_waits_for(fleet: Platform) -> None:
    deployed = await asyncio.to_thread(fleet.cli, "deploy", str(E2E_APPS / "nowhere.py"))
    assert deployed.returncode == 0, deployed.stderr
    call_id = await asyncio.to_thread(post_call, fleet, "huge")
    status, body = fleet.request(f"/v1/calls/{call_id}")
    assert status == 202 and body["status"] == "pending"
    assert body["waiting_for"].startswith("a node that can run it: no node can run")
    assert "memory=67108864 MiB" in body["waiting_for"]
