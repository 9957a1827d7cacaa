"""Every accepted invoke gets an answer: raw NATS invokes, as another
language publishes them, for an app or function that is not deployed, with a
``not_before`` far ahead, or for an app stopped under them, each get a clear
Result instead of waiting in INVOKE forever; and they are gone from INVOKE."""

from __future__ import annotations

import asyncio
import base64
import json
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import nats
import pytest
from fixtures.nats import invoke_client, role_creds
from fixtures.platform import Platform
from fixtures.wait import eventually
from nats.aio.client import Client
from thaw_core.nats_auth import connect_options, read_credential
from thaw_core.permissions import ADMIN

pytestmark = pytest.mark.usefixtures("use_platform")

# Far more than the few seconds it takes: a bound, not a measure.
ANSWER_WITHIN_S = 30.0
# A container starting cold on a busy machine.
COLD_START_WITHIN_S = 120.0


def args(*xs: Any) -> str:
    return base64.b64encode(json.dumps({"args": list(xs), "kwargs": {}}).encode()).decode()


@pytest.fixture(scope="module")
def deployed(platform: Platform) -> None:
    platform.deploy("unanswered.py")


# An app nobody deploys, that the invoke client may still publish inputs for.
GHOST = f"ghost-{uuid.uuid4().hex[:8]}"
_PREFIX: dict[int, str] = {}


@pytest.fixture
async def nc(platform: Platform, tmp_path: Path) -> AsyncIterator[Client]:
    """Logged in as another language's service is: an invoke client of the apps."""
    url = platform.base_env["THAW_NATS_URL"]
    creds = await invoke_client(url, ["unanswered", GHOST], tmp_path)
    conn = await nats.connect(url, **connect_options(creds))
    _PREFIX[id(conn)] = read_credential(creds).call_id_prefix
    yield conn
    await conn.close()


async def publish(nc: Client, app: str, function: str, *xs: Any, **extra: Any) -> tuple[str, Any]:
    """Publish one raw Invoke; (its call id, a subscription to its result)."""
    call_id = f"{_PREFIX[id(nc)]}{uuid.uuid4().hex}"
    sub = await nc.subscribe(f"thaw.result.{call_id}")
    event = {
        "type": "invoke", "call_id": call_id, "app": app, "function": function,
        "codec": "json", "args": args(*xs), **extra,
    }  # fmt: skip
    await nc.jetstream().publish(
        f"thaw.invoke.{app}.{function}", json.dumps(event).encode(),
        headers={"Nats-Msg-Id": call_id},
    )  # fmt: skip
    return call_id, sub


async def answer(sub: Any, timeout_s: float = ANSWER_WITHIN_S) -> dict[str, Any]:
    msg = await sub.next_msg(timeout=timeout_s)
    await sub.unsubscribe()
    return json.loads(msg.data)


@pytest.fixture
async def admin(platform: Platform) -> AsyncIterator[Client]:
    """An operator's view of the streams (invoke clients have no JetStream API)."""
    conn = await nats.connect(
        platform.base_env["THAW_NATS_URL"], **connect_options(Path(role_creds(ADMIN)))
    )
    yield conn
    await conn.close()


async def stored_under(admin: Client, subject: str) -> int:
    info = await admin.jetstream().stream_info("INVOKE", subjects_filter=subject)
    return sum((info.state.subjects or {}).values())


async def test_an_invoke_for_what_is_not_deployed_is_answered_and_removed(
    platform: Platform, nc: Client, admin: Client, deployed: None
) -> None:
    ghost_app = GHOST
    started = time.monotonic()
    _, no_app = await publish(nc, ghost_app, "work", 1)
    _, no_function = await publish(nc, "unanswered", "nosuch", 1)

    result = await answer(no_app)
    assert result["status"] == "failure", result
    assert ghost_app in result["error"] and "deployed" in result["error"], result
    result = await answer(no_function)
    assert result["status"] == "failure", result
    assert "has no function 'nosuch'" in result["error"], result
    print(f"\nunknown app and function answered in {time.monotonic() - started:.2f}s")

    async def removed() -> bool:
        return await stored_under(admin, f"thaw.invoke.{ghost_app}.work") == 0

    await eventually(removed, ANSWER_WITHIN_S, "the unanswerable input removed from INVOKE")
    # A deployed function is not touched: its input runs as ever.
    _, good = await publish(nc, "unanswered", "echo", 7)
    result = await answer(good, COLD_START_WITHIN_S)
    assert result["status"] == "success", result


async def test_a_far_future_not_before_is_refused_with_an_error(
    platform: Platform, nc: Client, deployed: None
) -> None:
    _, far = await publish(nc, "unanswered", "echo", 1, not_before=time.time() + 10 * 86400)
    result = await answer(far, COLD_START_WITHIN_S)
    assert result["status"] == "failure", result
    assert "not_before" in result["error"], result


# Last: it stops the module's app.
async def test_a_stopped_apps_pending_inputs_are_answered_as_cancelled(
    platform: Platform, nc: Client, admin: Client, deployed: None
) -> None:
    # One container, one input at a time: the first holds it, the others wait.
    held = [await publish(nc, "unanswered", "hold", 20) for _ in range(3)]

    async def running() -> bool:
        body = await asyncio.to_thread(platform.api, "/v1/containers")
        return any(
            c["app"] == "unanswered" and c["function"] == "hold" and c["inflight"] > 0
            for c in body["containers"]
        )

    await eventually(running, 120, "the first input running", every_s=0.1)
    out = await asyncio.to_thread(platform.cli, "app", "stop", "unanswered", timeout=300)
    assert out.returncode == 0, out.stdout + out.stderr
    _, after = await publish(nc, "unanswered", "echo", 1)

    results = [await answer(sub, COLD_START_WITHIN_S) for _, sub in held]
    statuses = sorted(r["status"] for r in results)
    # The one that ran may have finished or been stopped; the waiting ones never ran.
    assert statuses.count("cancelled") >= 2, results
    for r in results:
        if r["status"] == "cancelled":
            assert "was stopped" in r["error"], r
    result = await answer(after)
    assert result["status"] == "cancelled" and "was stopped" in result["error"], result

    async def removed() -> bool:
        return await stored_under(admin, "thaw.invoke.unanswered.>") == 0

    await eventually(removed, ANSWER_WITHIN_S, "the stopped app's inputs removed from INVOKE")
