"""An input queue at its limits, over HTTP: the bus refuses the input, and
the gateway answers 503 with the bus's reason (not 504, which says the bus
did not answer), for a call and for a batch. The gateway runs in-process;
its publishes go to a small stream that is full, so the refusal is the
server's own."""

from __future__ import annotations

import dataclasses
import uuid
from typing import Any

import pytest
from fixtures.gateway import (
    Gateway,
    deploy,
    gateway,  # noqa: F401 - a fixture
    settings,  # noqa: F401 - a fixture
    spec,
    unique,
)
from thaw_core import contract
from thaw_core.bus import Bus

pytestmark = pytest.mark.timeout(120)


async def test_a_full_input_queue_is_a_503_naming_the_bus_reason(
    gateway: Gateway, bus: Bus, monkeypatch: pytest.MonkeyPatch
) -> None:
    name = f"FULL{uuid.uuid4().hex[:12]}"
    full = dataclasses.replace(
        contract.INVOKE_STREAM, name=name, subjects=(f"{name}.>",), max_msgs=1, max_bytes=None
    )
    await bus.provision((full,))
    subject = f"{name}.fn"
    await bus.publish(subject, b"the one input it holds")

    async def publish(_: str, data: bytes, **kw: Any) -> Any:
        return await bus.publish(subject, data, **kw)

    async def publish_batch(_: str, items: Any, **kw: Any) -> None:
        await bus.publish_batch(subject, items, **kw)

    app = unique("full")
    await deploy(gateway, app, spec("add"))
    gw_bus = gateway.service.bus
    monkeypatch.setattr(gw_bus, "publish", publish)
    monkeypatch.setattr(gw_bus, "publish_batch", publish_batch)
    try:
        status, body = await gateway.call(
            "POST", f"/v1/functions/{app}/add/calls", json={"args": [1]}
        )
        assert status == 503, body
        assert body["error"]["code"] == "unavailable"
        assert "maximum messages exceeded" in body["error"]["message"]
        status, body = await gateway.call(
            "POST", f"/v1/functions/{app}/add/calls:batch", json={"items": [{"args": [1]}] * 3}
        )
        assert status == 503, body
        assert "maximum messages exceeded" in body["error"]["message"]
        assert "0 of 3 inputs were taken" in body["error"]["message"]
    finally:
        await bus.js.delete_stream(name)
