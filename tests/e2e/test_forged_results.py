"""Results the caller can trust, on the real stack: a process that can
publish on the result subjects learns call ids from the inputs it sees and
publishes a forged ``Result`` for each before the real one exists (the agent
is paused meanwhile, so the forgery is surely first). The gateway refuses the
forgeries and keeps waiting; the SDK caller and the HTTP caller both get the
real result; the forged pickle, which would create a file when unpickled,
never runs."""

from __future__ import annotations

import asyncio
import json
import os
import pickle
import signal
import urllib.request
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import msgspec
import pytest
import thaw as modal
from fixtures.platform import Platform
from fixtures.wait import eventually
from thaw_core.bus import Bus
from thaw_core.contract import invoke_subject, result_subject
from thaw_core.schema import Invoke, Result

pytestmark = pytest.mark.usefixtures("use_platform")

APP = "forged-results"


class _CreatesFile:
    """Unpickling this creates ``path``: what a forged result would run."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self) -> tuple[Any, ...]:
        return (open, (str(self.path), "w"))


@pytest.fixture(scope="module")
def deployed(platform: Platform) -> None:
    platform.deploy("forged_results.py")
    _, warm = _http(platform, "POST", f"/v1/functions/{APP}/square/calls?wait=120", {"args": [3]})
    assert warm["value"] == 9, warm  # a container is up


class Forger:
    """A bus client that sees every input of the app (so every call id, but
    it uses nothing else of the input) and answers each with a forged result."""

    def __init__(self, bus: Bus, bomb: Path) -> None:
        self.bus = bus
        self.bomb = bomb
        self.forged: dict[str, Invoke] = {}

    async def on_invoke(self, msg: Any) -> None:
        invoke = msgspec.json.decode(msg.data, type=Invoke)
        value = pickle.dumps(_CreatesFile(self.bomb)) if invoke.codec == "pickle" else b"666"
        forged = Result(
            call_id=invoke.call_id,
            status="success",
            codec=invoke.codec,
            value=value,
            proof=os.urandom(32),
        )
        subject = result_subject(invoke.call_id)
        # Under the msg-id results used to share, and under no msg-id at all.
        await self.bus.publish(subject, forged, msg_id=invoke.call_id)
        await self.bus.publish(subject, msgspec.structs.replace(forged, proof=b""))
        self.forged[invoke.call_id] = invoke


@pytest.fixture
async def forger(platform: Platform, tmp_path: Path) -> AsyncIterator[Forger]:
    bus = await Bus.connect(platform.base_env["THAW_NATS_URL"], name="forger")
    f = Forger(bus, tmp_path / "forged-pickle-ran")
    sub = await bus.subscribe(invoke_subject(APP, "*"), f.on_invoke)
    try:
        yield f
    finally:
        await sub.unsubscribe()
        await bus.close()


@pytest.fixture
def agent_paused(platform: Platform) -> Iterator[None]:
    """The agent stopped (SIGSTOP) until the test lets it go on: inputs wait."""
    proc = platform.agent("agent-a").proc
    assert proc is not None
    os.kill(proc.pid, signal.SIGSTOP)
    try:
        yield
    finally:
        os.kill(proc.pid, signal.SIGCONT)


def _http(platform: Platform, method: str, path: str, body: Any = None) -> tuple[int, Any]:
    req = urllib.request.Request(
        platform.gateway_url + path,
        method=method,
        data=None if body is None else json.dumps(body).encode(),
        headers={"Authorization": f"Bearer {platform.token}", "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(req, timeout=120) as r:
        return r.status, json.loads(r.read())


async def test_forged_results_are_refused_and_callers_get_the_real_ones(
    platform: Platform, deployed: None, forger: Forger, agent_paused: None
) -> None:
    square = modal.Function.from_name(APP, "square")
    sdk_call = await asyncio.to_thread(square.spawn, 7)
    status, accepted = await asyncio.to_thread(
        _http, platform, "POST", f"/v1/functions/{APP}/square/calls", {"args": [8]}
    )
    assert status == 202
    http_id = accepted["call_id"]
    calls = {sdk_call.object_id, http_id}
    await eventually(lambda: calls <= forger.forged.keys(), 30, "both calls forged")

    # The forgeries are stored, yet the gateway takes neither for a result.
    for cid in calls:
        assert await forger.bus.stored_count(result_subject(cid)) == 2
        status, body = await asyncio.to_thread(_http, platform, "GET", f"/v1/calls/{cid}")
        assert (status, body["status"]) == (202, "pending"), body

    os.kill(platform.agent("agent-a").proc.pid, signal.SIGCONT)  # type: ignore[union-attr]
    assert await asyncio.to_thread(sdk_call.get, 120) == 49
    status, body = await asyncio.to_thread(_http, platform, "GET", f"/v1/calls/{http_id}?wait=120")
    assert (status, body["status"], body["value"]) == (200, "success", 64), body
    assert not forger.bomb.exists(), "a forged pickled result was unpickled"

    # The real results were stored beside the forgeries (not dropped as
    # duplicates), and a fresh look-up (a poll, the call history) finds them.
    for cid in calls:
        assert await forger.bus.stored_count(result_subject(cid)) == 3
    status, body = await asyncio.to_thread(
        _http, platform, "GET", f"/v1/calls/{sdk_call.object_id}"
    )
    assert (status, body["status"]) == (200, "success")
    assert modal.FunctionCall.from_id(sdk_call.object_id).get(timeout=30) == 49
    history = await asyncio.to_thread(_http, platform, "GET", f"/v1/calls?app={APP}")
    statuses = {c["call_id"]: c["status"] for c in history[1]["calls"]}
    assert statuses[http_id] == statuses[sdk_call.object_id] == "success"
    assert not forger.bomb.exists()

    # Each forgery was refused once, as an error, and counted.
    metrics = await asyncio.to_thread(_metrics, platform)
    assert _counter(metrics, "thaw_results_refused_total") >= 4, metrics


def _metrics(platform: Platform) -> str:
    req = urllib.request.Request(
        platform.gateway_url + "/metrics", headers={"Authorization": f"Bearer {platform.token}"}
    )
    with urllib.request.urlopen(req, timeout=30) as r:
        return r.read().decode()


def _counter(text: str, name: str) -> float:
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith((name + "{", name + " "))
    )
