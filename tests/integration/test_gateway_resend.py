"""Calls named by the caller's request key (``CallRequest.request_key``), and
a request sent again (``resend``) after its answer was lost: the same call
ids, no second input, however long after the first, and the first call's
answer. The gateway runs in-process on real NATS, Postgres and S3, as in
test_gateway.py, whose responder plays the node side."""

from __future__ import annotations

import asyncio
import base64
import os
from typing import Any

import msgspec
import pytest
import thaw_gateway.calls
from fixtures.gateway import (
    Gateway,
    deploy,
    gateway,  # noqa: F401 - a fixture
    settings,  # noqa: F401 - a fixture
    spec,
    unique,
)
from test_gateway import add, responder
from thaw_core import api
from thaw_core.bus import Bus
from thaw_core.result_proof import derive_call_id

pytestmark = pytest.mark.timeout(120)


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


class PublishCounter:
    """Counts the inputs the gateway publishes (its batch path)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.published: list[str] = []
        real = thaw_gateway.calls.publish_inputs

        async def counted(bus: Bus, subject: str, inputs: list[tuple[str, bytes]]) -> None:
            self.published += [cid for cid, _ in inputs]
            await real(bus, subject, inputs)

        monkeypatch.setattr(thaw_gateway.calls, "publish_inputs", counted)


async def stream(gw: Gateway, call_ids: list[str]) -> list[api.CallResult]:
    async with gw.http.post(
        gw.url + "/v1/calls:stream", json={"call_ids": call_ids}, headers=gw.headers()
    ) as r:
        assert r.status == 200
        return [msgspec.json.decode(line, type=api.CallResult) async for line in r.content]


async def call_log_has(gw: Gateway, call_ids: list[str]) -> None:
    for _ in range(400):
        n = await gw.db.fetchval("SELECT count(*) FROM calls WHERE call_id = ANY($1)", call_ids)
        if n == len(call_ids):
            return
        await asyncio.sleep(0.05)
    pytest.fail("the call ids never reached the calls table")


async def test_a_batch_sent_again_makes_no_second_input(
    gateway: Gateway, bus: Bus, monkeypatch: pytest.MonkeyPatch
) -> None:
    app = unique("resend")
    await deploy(gateway, app, spec("add"))
    seed, key = os.urandom(32), os.urandom(16)
    n = 50
    body: dict[str, Any] = {
        "items": [{"args": [i, 1]} for i in range(n)],
        "key_seed": b64(seed),
        "request_key": b64(key),
    }
    counter = PublishCounter(monkeypatch)
    path = f"/v1/functions/{app}/add/calls:batch"
    status, first = await gateway.call("POST", path, json=body)
    assert status == 200, first
    # The caller knew the ids before the answer.
    assert first["call_ids"] == [derive_call_id(seed, key, i) for i in range(n)]

    async with responder(bus, app, "add", add) as seen:
        results = await stream(gateway, first["call_ids"])
        await call_log_has(gateway, first["call_ids"])
        # The answer was lost: sent again, as the SDK does after a reconnect.
        status, again = await gateway.call("POST", path, json={**body, "resend": True})
        assert status == 200, again
        assert again == first  # the same calls, the same map
        assert len(await stream(gateway, again["call_ids"])) == n
    assert sorted(r.value for r in results) == [i + 1 for i in range(n)]
    assert len(seen) == n, "an input sent again ran twice"
    # Not even published again: the call log said they were made (the bus's
    # msg-id window alone would not hold past two minutes).
    assert counter.published == first["call_ids"]


async def test_a_call_sent_again_gets_the_first_ones_answer(gateway: Gateway, bus: Bus) -> None:
    app = unique("resend1")
    await deploy(gateway, app, spec("add"))
    seed, key = os.urandom(32), os.urandom(16)
    body = {"args": [40, 2], "key_seed": b64(seed), "request_key": b64(key)}
    path = f"/v1/functions/{app}/add/calls"
    status, accepted = await gateway.call("POST", path, json=body)
    assert status == 202
    call_id = derive_call_id(seed, key)
    assert accepted["call_id"] == call_id
    async with responder(bus, app, "add", add) as seen:
        status, done = await gateway.call("GET", f"/v1/calls/{call_id}?wait=30")
        assert status == 200 and done["value"] == 42
        await call_log_has(gateway, [call_id])
        status, again = await gateway.call(
            "POST", path + "?wait=30", json={**body, "resend": True}
        )
    assert (status, again) == (200, done)
    assert len(seen) == 1


async def test_request_keys_are_checked(gateway: Gateway) -> None:
    app = unique("keys")
    await deploy(gateway, app, spec("add"), spec("other"))
    seed, key = b64(os.urandom(32)), b64(os.urandom(16))
    path = f"/v1/functions/{app}/add/calls"
    for body, says in [
        ({"request_key": key}, "send both"),
        ({"key_seed": seed, "resend": True}, "resend needs the request_key"),
        ({"key_seed": seed, "request_key": b64(b"short")}, "request_key is 5 bytes"),
    ]:
        status, answer = await gateway.call("POST", path, json=body)
        assert status == 400 and says in answer["error"]["message"], answer

    batch = {"items": [{"args": [1]}], "key_seed": seed, "request_key": key}
    status, made = await gateway.call("POST", path + ":batch", json=batch)
    assert status == 200
    await call_log_has(gateway, made["call_ids"])
    # The same key sent to another function names calls it did not make.
    status, answer = await gateway.call(
        "POST", f"/v1/functions/{app}/other/calls:batch", json={**batch, "resend": True}
    )
    assert status == 409 and "was made for" in answer["error"]["message"], answer
