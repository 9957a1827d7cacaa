"""The gateway's HTTP API against real NATS, Postgres and S3: the service runs
in-process on a free port and is driven with an aiohttp client, as the SDK or
curl would. The node side (agent and container) is played by a tiny
responder that consumes INVOKE and publishes Results."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import pickle
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import msgspec
import pytest
from fixtures.gateway import (
    Gateway,
    deploy,
    fill_path,
    gateway,  # noqa: F401 - a fixture
    running,
    settings,  # noqa: F401 - a fixture
    spec,
    unique,
    upload_bundle,
)
from thaw_core import api, contract, schema
from thaw_core.bus import Bus, Msg
from thaw_core.config import Settings
from thaw_core.result_proof import result_msg_id, signed
from thaw_gateway.routes import ROUTES

pytestmark = pytest.mark.timeout(120)

_invoke = msgspec.json.Decoder(schema.Invoke)
_call_result = msgspec.json.Decoder(api.CallResult)
_call_accepted = msgspec.json.Decoder(api.CallAccepted)


async def server_has_subscriptions(bus: Bus) -> None:
    """Until the server knows this connection's subscriptions."""
    await bus.subscriptions_live()


def json_args(invoke: schema.Invoke) -> tuple[list[Any], dict[str, Any]]:
    decoded = json.loads(invoke.args)
    return decoded["args"], decoded["kwargs"]


Behaviour = Callable[[schema.Invoke], Awaitable[schema.Result | None]]


async def add(invoke: schema.Invoke) -> schema.Result:
    """A json-codec function: the sum of its args (or kwargs' values)."""
    args, kwargs = json_args(invoke)
    return schema.Result(
        call_id=invoke.call_id,
        status="success",
        codec="json",
        value=json.dumps(sum(args) + sum(kwargs.values())).encode(),
        map_id=invoke.map_id,
        index=invoke.index,
    )


async def echo_pickle(invoke: schema.Invoke) -> schema.Result:
    """A pickle-codec function, played by the test (the SDK side may unpickle)."""
    args, kwargs = pickle.loads(invoke.args)
    return schema.Result(
        call_id=invoke.call_id,
        status="success",
        codec="pickle",
        value=pickle.dumps({"args": args, "kwargs": kwargs}),
        map_id=invoke.map_id,
        index=invoke.index,
    )


@asynccontextmanager
async def responder(bus: Bus, app: str, function: str, behaviour: Behaviour) -> AsyncIterator[list[schema.Invoke]]:
    """Plays agent + container for one function: pull its inputs from its
    durable consumer, store each result signed with the input's key, then ack."""
    seen: list[schema.Invoke] = []

    async def handle(msg: Msg) -> None:
        invoke = _invoke.decode(msg.data)
        seen.append(invoke)
        result = await behaviour(invoke)
        if result is not None:
            await bus.publish(
                contract.result_subject(invoke.call_id),
                signed(invoke.key, result),
                msg_id=result_msg_id(invoke.key, invoke.call_id),
            )

    stop = asyncio.Event()
    task = asyncio.create_task(
        bus.consume(
            "INVOKE",
            contract.invoke_consumer_name(app, function),
            handle,
            stop=stop,
            batch=100,
            max_concurrency=100,
            fetch_timeout_s=0.2,
        )
    )
    try:
        yield seen
    finally:
        stop.set()
        await asyncio.wait_for(task, 10)


async def raw_post(gw: Gateway, path: str, length: int, start: bytes) -> tuple[int, Any]:
    """A POST that announces a ``length``-byte body and sends only its ``start``
    (the gateway must refuse it from the header alone)."""
    host, port = gw.url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    try:
        writer.write(
            f"POST {path} HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {gw.token}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {length}\r\n\r\n".encode()
            + start
        )
        status = int((await reader.readline()).split()[1])
        headers: dict[str, str] = {}
        while (line := await reader.readline()) not in (b"\r\n", b""):
            key, _, value = line.decode().partition(":")
            headers[key.strip().lower()] = value.strip()
        body = await reader.readexactly(int(headers["content-length"]))
        return status, json.loads(body)
    finally:
        writer.close()



# ---------------------------------------------------------------- auth


async def test_every_route_refuses_a_missing_or_wrong_token(gateway: Gateway) -> None:
    http, url = gateway.http, gateway.url
    protected = [r for r in ROUTES if not r.public]
    assert len(protected) >= 17
    bad_headers: list[dict[str, str]] = [
        {},
        {"Authorization": "Bearer not-a-token-we-issued"},
        {"Authorization": f"Basic {gateway.token}"},
        {"Authorization": "Bearer "},
        {"Authorization": "Bearer has spaces in it"},
    ]
    for route in protected:
        for headers in bad_headers:
            async with http.request(route.method, url + fill_path(route.path), headers=headers) as r:
                assert r.status == 401, (route.method, route.path, headers, r.status)
                assert r.headers["WWW-Authenticate"].startswith("Bearer")
                if route.method != "HEAD":
                    body = await r.json()
                    assert body["error"]["code"] == "unauthorized"
                    assert body["error"]["message"]
    # The one public route.
    async with http.get(url + "/healthz") as r:
        assert r.status == 200
        assert (await r.json())["service"] == "gateway"


async def test_created_tokens_work_and_are_stored_hashed(gateway: Gateway) -> None:
    status, body = await gateway.call("POST", "/v1/tokens", json={"name": "ci-bot", "scope": "read"})
    assert status == 201, body
    token = body["token"]
    assert body["name"] == "ci-bot"
    status, _ = await gateway.call("GET", "/v1/apps", token=token)
    assert status == 200

    rows = await gateway.db.fetch("SELECT name, hash FROM tokens")
    stored = {r["hash"]: r["name"] for r in rows}
    assert stored[hashlib.sha256(token.encode()).hexdigest()] == "ci-bot"
    assert not any(token in h for h in stored), "the secret itself must not be stored"

    # A token revoked before its first use is refused.
    status, body = await gateway.call("POST", "/v1/tokens", json={"name": "leaked", "scope": "read"})
    leaked = body["token"]
    await gateway.db.execute(
        "UPDATE tokens SET revoked_at = now() WHERE hash = $1",
        hashlib.sha256(leaked.encode()).hexdigest(),
    )
    status, body = await gateway.call("GET", "/v1/apps", token=leaked)
    assert status == 401 and body["error"]["code"] == "unauthorized"

    status, body = await gateway.call("POST", "/v1/tokens", json={"name": "bad name!", "scope": "read"})
    assert status == 400 and "token name" in body["error"]["message"]


# ---------------------------------------------------------------- OpenAPI


async def test_openapi_lists_every_route(gateway: Gateway) -> None:
    status, doc = await gateway.call("GET", "/v1/openapi.json")
    assert status == 200
    assert doc["openapi"].startswith("3.")
    for route in ROUTES:
        op = doc["paths"][route.path][route.method.lower()]
        assert op["responses"], route.path
        assert ("401" in op["responses"]) is not route.public
    # Every route the server actually has is documented (not only the table's).
    app = gateway.service.app
    assert app is not None
    served = {
        (info.get("formatter") or info.get("path"), r.method)
        for r in app.router.routes()
        for info in [r.resource.get_info()] if r.method != "*"
    }
    for path, method in served:
        if method == "HEAD" and path not in doc["paths"]:
            continue
        assert method.lower() in doc["paths"][path], (method, path)
    schemas = doc["components"]["schemas"]
    for name in ("CallRequest", "CallResult", "DeployRequest", "FunctionSpec", "ErrorBody"):
        assert name in schemas


# ---------------------------------------------------------------- bad input


async def test_bad_input_gets_the_right_4xx_and_code(gateway: Gateway, bus: Bus) -> None:
    app = unique("bad")
    await deploy(gateway, app, spec("add"))

    async def expect(status: int, code: str, method: str, path: str, **kw: Any) -> str:
        got, body = await gateway.call(method, path, **kw)
        assert got == status, (method, path, got, body)
        assert body["error"]["code"] == code
        return body["error"]["message"]

    sha = await upload_bundle(gateway)
    deploy_path = f"/v1/apps/{app}/deploy"
    msg = await expect(400, "bad_request", "POST", deploy_path, data=b'{"bundle_sha256": ')
    assert "not valid JSON" in msg
    msg = await expect(
        400, "bad_request", "POST", deploy_path,
        json={"bundle_sha256": sha, "functions": [spec("f")], "functionz": []},
    )  # fmt: skip
    assert "functionz" in msg
    msg = await expect(
        400, "bad_request", "POST", deploy_path,
        json={"bundle_sha256": sha, "functions": [{"name": 5, "module": "m", "qualname": "q"}]},
    )  # fmt: skip
    assert "$.functions[0].name" in msg
    msg = await expect(
        400, "bad_request", "POST", deploy_path,
        json={"bundle_sha256": "f" * 64, "functions": [spec("f")]},
    )  # fmt: skip
    assert "not uploaded" in msg
    msg = await expect(
        400, "bad_request", "POST", deploy_path,
        json={"bundle_sha256": sha, "functions": [spec("has.dot")]},
    )  # fmt: skip
    assert "function name" in msg
    await expect(400, "bad_request", "POST", "/v1/apps/bad.name/deploy", json={})
    await expect(400, "bad_request", "POST", deploy_path, data=b"")

    # Unknown app, function, call.
    await expect(404, "not_found", "POST", f"/v1/functions/{unique('nope')}/add/calls", json={})
    msg = await expect(404, "not_found", "POST", f"/v1/functions/{app}/nope/calls", json={})
    assert "add" in msg  # names what the app does have
    await expect(404, "not_found", "GET", f"/v1/functions/{app}/nope")
    await expect(404, "not_found", "GET", "/v1/calls/fc-" + "0" * 32)
    await expect(404, "not_found", "POST", "/v1/calls/fc-" + "0" * 32 + "/cancel")
    await expect(404, "not_found", "POST", f"/v1/apps/{unique('nope')}/stop")
    await expect(404, "not_found", "GET", f"/v1/apps/{unique('nope')}/logs")
    await expect(404, "not_found", "POST", "/v1/containers/nope/stop")
    await expect(404, "not_found", "GET", "/v1/no/such/route")

    # Wrong fields in a call, wrong query values, wrong method.
    call_path = f"/v1/functions/{app}/add/calls"
    msg = await expect(400, "bad_request", "POST", call_path, json={"argz": [1]})
    assert "argz" in msg
    await expect(400, "bad_request", "POST", call_path, json={"args": 5})
    await expect(400, "bad_request", "POST", call_path, json={"codec": "pickle", "args": [1]})
    await expect(400, "bad_request", "POST", call_path, json={"codec": "pickle"})
    await expect(400, "bad_request", "POST", call_path, json={"method": "run"})
    await expect(400, "bad_request", "POST", call_path + "?wait=soon", json={})
    await expect(400, "bad_request", "POST", call_path + "?wait=-1", json={})
    msg = await expect(405, "bad_request", "GET", call_path)
    assert "POST" in msg
    await expect(
        400, "bad_request", "POST", f"/v1/functions/{app}/add/calls:batch",
        json={"items": [{"args": [1]}, {"args": 2}]},
    )  # fmt: skip
    await expect(
        413, "payload_too_large", "POST", f"/v1/functions/{app}/add/calls:batch",
        json={"items": [{}] * 10_001},
    )  # fmt: skip

    # An input over the bus's message limit is kept in the blob store, not
    # refused (a container runs it: test_large_payloads); a body over the
    # gateway's JSON limit is refused.
    big = "x" * (bus.nc.max_payload + 1)
    got, body = await gateway.call("POST", call_path, json={"args": [big]})
    assert got == 202, body
    status, body = await raw_post(gateway, deploy_path, api.MAX_PAYLOAD_BYTES + 1, b"{")
    assert status == 413 and body["error"]["code"] == "payload_too_large"
    assert str(api.MAX_PAYLOAD_BYTES) in body["error"]["message"]

    # A bundle whose content does not match its sha256 is refused and not stored.
    other = hashlib.sha256(b"something else").hexdigest()
    msg = await expect(400, "bad_request", "PUT", f"/v1/bundles/{other}", data=b"the real content")
    assert hashlib.sha256(b"the real content").hexdigest() in msg
    async with gateway.http.head(
        gateway.url + f"/v1/bundles/{other}", headers=gateway.headers()
    ) as r:
        assert r.status == 404
    await expect(400, "bad_request", "PUT", "/v1/bundles/NOT-A-SHA", data=b"x")


async def test_two_functions_never_share_an_input_queue(gateway: Gateway) -> None:
    # contract.invoke_consumer_name joins app and function with "_", which names may
    # contain: app "<u>_x" function "y" and app "<u>" function "x_y" collide.
    base = unique("q").replace("-", "")
    await deploy(gateway, f"{base}_x", spec("y"))
    sha = await upload_bundle(gateway)
    status, body = await gateway.call(
        "POST", f"/v1/apps/{base}/deploy", json={"bundle_sha256": sha, "functions": [spec("x_y")]}
    )
    assert status == 409 and "rename" in body["error"]["message"]
    status, _ = await gateway.call("GET", f"/v1/functions/{base}/x_y")
    assert status == 404  # nothing of the refused deploy was recorded


async def test_a_malformed_or_unsigned_stored_result_is_not_taken_for_one(
    gateway: Gateway, bus: Bus
) -> None:
    app = unique("broken")
    await deploy(gateway, app, spec("f"))
    status, body = await gateway.call("POST", f"/v1/functions/{app}/f/calls", json={})
    assert status == 202
    call_id = body["call_id"]
    subject = contract.result_subject(call_id)
    await bus.publish(subject, b'{"type": "result", "oops": 1}')
    await bus.publish(subject, schema.Result(call_id=call_id, status="success", value=b"1"))
    status, body = await gateway.call("GET", f"/v1/calls/{call_id}")
    assert (status, body["status"]) == (202, "pending")
    # The real one, stored after them, is the one every reader takes.
    invoke = _invoke.decode(await bus.last(contract.invoke_subject(app, "f")))
    real = schema.Result(call_id=call_id, status="success", codec="json", value=b"2")
    await bus.publish(subject, signed(invoke.key, real), msg_id=result_msg_id(invoke.key, call_id))
    await bus.publish(subject, b"not even json")
    status, body = await gateway.call("GET", f"/v1/calls/{call_id}")
    assert (status, body["status"], body["value"]) == (200, "success", 2)
    assert "key" not in body and invoke.key.hex() not in json.dumps(body)


async def test_an_unexpected_error_is_a_500_with_a_request_id_and_no_traceback(
    gateway: Gateway, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def broken() -> None:
        raise RuntimeError("secret internals")

    monkeypatch.setattr(gateway.service.gateway.catalog, "load_all", broken)
    async with gateway.http.get(gateway.url + "/v1/apps", headers=gateway.headers()) as r:
        assert r.status == 500
        body = await r.json()
        request_id = r.headers["X-Request-Id"]
    assert body["error"]["code"] == "internal"
    assert request_id in body["error"]["message"]
    assert "secret internals" not in json.dumps(body) and "Traceback" not in json.dumps(body)


# ---------------------------------------------------------------- deploy and call


async def test_deploy_then_call_with_wait(gateway: Gateway, bus: Bus) -> None:
    app = unique("calc")
    events = await bus.nc.subscribe(f"thaw.event.app.{app}")
    await server_has_subscriptions(bus)
    sha = await upload_bundle(gateway, b"PK-bundle-" + secrets.token_bytes(16))
    async with gateway.http.head(gateway.url + f"/v1/bundles/{sha}", headers=gateway.headers()) as r:
        assert r.status == 200

    status, body = await gateway.call(
        "POST",
        f"/v1/apps/{app}/deploy",
        json={"bundle_sha256": sha, "functions": [spec("add"), spec("mul", timeout_s=5)]},
    )
    assert status == 200, body
    assert body["app_id"].startswith("ap-")
    assert body == {
        "app": app,
        "app_id": body["app_id"],
        "version": 1,
        "functions": ["add", "mul"],
        "web_urls": {},
    }
    event = msgspec.json.decode((await events.next_msg(timeout=5)).data, type=schema.AppEvent)
    await events.unsubscribe()
    assert (event.app, event.version, event.state) == (app, 1, "deployed")
    info = await bus.js.consumer_info("INVOKE", contract.invoke_consumer_name(app, "add"))
    assert info.config.filter_subject == contract.invoke_subject(app, "add")
    assert info.config.ack_wait == contract.INVOKE_ACK_WAIT_S

    async with responder(bus, app, "add", add) as seen:
        status, body = await gateway.call(
            "POST", f"/v1/functions/{app}/add/calls?wait=10",
            json={"args": [1, 2], "kwargs": {"c": 3}},
        )  # fmt: skip
    assert status == 200, body
    result = msgspec.convert(body, api.CallResult)
    assert (result.status, result.codec, result.value) == ("success", "json", 6)
    assert result.call_id.startswith("fc-") and result.call_id == seen[0].call_id

    # The function's spec, as Function.from_name reads it.
    status, body = await gateway.call("GET", f"/v1/functions/{app}/mul")
    assert status == 200
    fn = msgspec.convert(body, api.FunctionInfo)
    assert (fn.app, fn.version, fn.spec.name, fn.spec.timeout_s) == (app, 1, "mul", 5)

    # A redeploy is a new version; a function it drops is gone.
    status, body = await gateway.call(
        "POST", f"/v1/apps/{app}/deploy", json={"bundle_sha256": sha, "functions": [spec("add")]}
    )
    assert (status, body["version"]) == (200, 2)
    status, _ = await gateway.call("GET", f"/v1/functions/{app}/mul")
    assert status == 404
    status, apps = await gateway.call("GET", "/v1/apps")
    mine = [a for a in apps if a["name"] == app]
    assert mine and mine[0]["version"] == 2 and mine[0]["functions"] == ["add"]
    assert mine[0]["state"] == "deployed"


async def test_pickle_payload_passes_through_untouched(gateway: Gateway, bus: Bus) -> None:
    app = unique("pkl")
    await deploy(gateway, app, spec("echo"))
    payload = pickle.dumps(((1, "two"), {"three": 3.0}))
    async with responder(bus, app, "echo", echo_pickle) as seen:
        status, body = await gateway.call(
            "POST", f"/v1/functions/{app}/echo/calls?wait=10",
            json={"codec": "pickle", "payload": base64.b64encode(payload).decode()},
        )  # fmt: skip
    assert status == 200, body
    assert seen[0].args == payload and seen[0].codec == "pickle"
    assert body["codec"] == "pickle" and body["value"] is None
    assert pickle.loads(base64.b64decode(body["value_b64"])) == {
        "args": (1, "two"),
        "kwargs": {"three": 3.0},
    }


async def test_plain_json_call_as_curl_sends_it(gateway: Gateway, bus: Bus) -> None:
    app = unique("curl")
    await deploy(gateway, app, spec("add"))
    url = gateway.url + f"/v1/functions/{app}/add/calls?wait=10"
    async with responder(bus, app, "add", add):
        # Exactly the bytes `curl -d '{"args": [40, 2]}'` sends, content type and all.
        async with gateway.http.post(
            url,
            data=b'{"args": [40, 2]}',
            headers={**gateway.headers(), "Content-Type": "application/x-www-form-urlencoded"},
        ) as r:
            assert r.status == 200
            assert r.content_type == "application/json"
            body = await r.json()
        # `curl -X POST` with no body at all: no arguments.
        async with gateway.http.post(url, headers=gateway.headers()) as r:
            empty = await r.json()
    assert body["value"] == 42 and body["status"] == "success"
    assert empty["value"] == 0


async def test_async_call_then_get(gateway: Gateway, bus: Bus) -> None:
    app = unique("later")
    await deploy(gateway, app, spec("add"))
    status, body = await gateway.call("POST", f"/v1/functions/{app}/add/calls", json={"args": [5]})
    assert status == 202, body
    call_id = msgspec.convert(body, api.CallAccepted).call_id

    # Nobody runs it yet: pending, not unknown.
    status, body = await gateway.call("GET", f"/v1/calls/{call_id}?wait=0.2")
    assert (status, body) == (202, {"call_id": call_id, "status": "pending"})

    async with responder(bus, app, "add", add):
        status, body = await gateway.call("GET", f"/v1/calls/{call_id}?wait=10")
    assert status == 200, body
    assert body["value"] == 5
    # Read back later, when nobody waits for it any more: from the RESULTS stream.
    status, again = await gateway.call("GET", f"/v1/calls/{call_id}")
    assert (status, again) == (200, body)

    # The call ids are written to Postgres, so another replica (or this one
    # after a restart) tells pending from unknown too.
    for _ in range(100):
        if await gateway.db.fetchval("SELECT count(*) FROM calls WHERE call_id = $1", call_id):
            break
        await asyncio.sleep(0.05)
    else:
        pytest.fail("call id never reached the calls table")


async def test_calls_survive_a_gateway_restart(
    gateway: Gateway, bus: Bus, settings: Settings
) -> None:
    app = unique("restart")
    await deploy(gateway, app, spec("add"), spec("never"))
    async with responder(bus, app, "add", add):
        status, done = await gateway.call("POST", f"/v1/functions/{app}/add/calls?wait=10")
    assert status == 200
    _, pending = await gateway.call("POST", f"/v1/functions/{app}/never/calls")
    status, created = await gateway.call("POST", "/v1/tokens", json={"name": "survivor", "scope": "read"})

    await gateway.service.shutdown()
    async with running(settings):
        status, body = await gateway.call("GET", f"/v1/calls/{done['call_id']}")
        assert (status, body) == (200, done)  # read back from RESULTS
        status, body = await gateway.call("GET", f"/v1/calls/{pending['call_id']}?wait=0.1")
        assert status == 202  # known from the calls table, not unknown
        status, _ = await gateway.call("GET", "/v1/calls/fc-" + "2" * 32)
        assert status == 404
        status, _ = await gateway.call("GET", "/v1/apps", token=created["token"])
        assert status == 200
        status, body = await gateway.call("GET", f"/v1/functions/{app}/never")
        assert status == 200  # the catalog is loaded from Postgres at start


async def test_failure_result_is_reported(gateway: Gateway, bus: Bus) -> None:
    app = unique("fail")
    await deploy(gateway, app, spec("boom"))

    async def boom(invoke: schema.Invoke) -> schema.Result:
        return schema.Result(
            call_id=invoke.call_id,
            status="failure",
            codec="json",
            error="ZeroDivisionError: division by zero",
            traceback="Traceback ...",
        )

    async with responder(bus, app, "boom", boom):
        status, body = await gateway.call("POST", f"/v1/functions/{app}/boom/calls?wait=10")
    assert status == 200
    assert body["status"] == "failure" and "ZeroDivisionError" in body["error"]
    assert body["value"] is None


async def test_batch_then_stream_returns_every_result(gateway: Gateway, bus: Bus) -> None:
    app = unique("map")
    await deploy(gateway, app, spec("add"))
    n = 300
    status, body = await gateway.call(
        "POST",
        f"/v1/functions/{app}/add/calls:batch",
        json={"items": [{"args": [i, i]} for i in range(n)]},
    )
    assert status == 200, body
    batch = msgspec.convert(body, api.BatchAccepted)
    assert len(set(batch.call_ids)) == n and batch.map_id

    async def stream(call_ids: list[str]) -> list[api.CallResult]:
        results = []
        async with gateway.http.post(
            gateway.url + "/v1/calls:stream",
            json={"call_ids": call_ids, "timeout_s": 30},
            headers=gateway.headers(),
        ) as r:
            assert r.status == 200
            assert r.content_type == "application/x-ndjson"
            async for line in r.content:
                results.append(_call_result.decode(line))
        return results

    # Half are done before the stream starts, half while it runs.
    half = batch.call_ids[: n // 2]
    async with responder(bus, app, "add", add):
        for _ in range(200):
            done = await asyncio.gather(*(gateway.call("GET", f"/v1/calls/{c}") for c in half[-5:]))
            if all(s == 200 for s, _ in done):
                break
            await asyncio.sleep(0.05)
        results = await stream(batch.call_ids)
    assert sorted(r.call_id for r in results) == sorted(batch.call_ids)
    by_index = {r.index: r for r in results}
    assert all(by_index[i].value == 2 * i for i in range(n))
    assert {r.map_id for r in results} == {batch.map_id}

    # Everything stored now: a second stream answers at once, in full.
    assert len(await stream(batch.call_ids)) == n

    status, body = await gateway.call(
        "POST", "/v1/calls:stream", json={"call_ids": [batch.call_ids[0], "fc-" + "1" * 32]}
    )
    assert status == 404 and "never made" in body["error"]["message"]


async def test_stream_ends_at_its_timeout(gateway: Gateway) -> None:
    app = unique("slow")
    await deploy(gateway, app, spec("never"))
    _, body = await gateway.call("POST", f"/v1/functions/{app}/never/calls")
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    async with gateway.http.post(
        gateway.url + "/v1/calls:stream",
        json={"call_ids": [body["call_id"]], "timeout_s": 0.5},
        headers=gateway.headers(),
    ) as r:
        assert r.status == 200
        assert await r.read() == b""
    assert 0.4 < loop.time() - t0 < 5


async def test_cancel(gateway: Gateway, bus: Bus) -> None:
    app = unique("cancel")
    await deploy(gateway, app, spec("slow"), spec("add"))
    status, body = await gateway.call("POST", f"/v1/functions/{app}/slow/calls")
    call_id = body["call_id"]
    cancels = await bus.nc.subscribe(f"thaw.cancel.{call_id}")
    await server_has_subscriptions(bus)

    status, body = await gateway.call("POST", f"/v1/calls/{call_id}/cancel")
    assert (status, body) == (202, {"call_id": call_id, "status": "cancelling"})
    cancel = msgspec.json.decode((await cancels.next_msg(timeout=5)).data, type=schema.CancelCall)
    await cancels.unsubscribe()
    assert cancel.call_id == call_id
    status, body = await gateway.call("GET", f"/v1/calls/{call_id}")
    assert status == 200 and body["status"] == "cancelled"
    # Cancelling twice is fine; the real result arriving later is dropped.
    status, _ = await gateway.call("POST", f"/v1/calls/{call_id}/cancel")
    assert status == 202
    # (as an agent that ran it would: signed with the input's key)
    invoke = _invoke.decode(await bus.last(contract.invoke_subject(app, "slow")))
    late = schema.Result(call_id=call_id, status="success", codec="json", value=b"1")
    ack = await bus.publish(
        contract.result_subject(call_id),
        signed(invoke.key, late),
        msg_id=result_msg_id(invoke.key, call_id),
    )
    assert ack.duplicate
    status, body = await gateway.call("GET", f"/v1/calls/{call_id}")
    assert body["status"] == "cancelled"

    # A call that already finished cannot be cancelled.
    async with responder(bus, app, "add", add):
        status, body = await gateway.call("POST", f"/v1/functions/{app}/add/calls?wait=10")
    assert status == 200
    status, body = await gateway.call("POST", f"/v1/calls/{body['call_id']}/cancel")
    assert status == 409 and "too late" in body["error"]["message"]


async def test_stop_app(gateway: Gateway, bus: Bus) -> None:
    app = unique("stop")
    await deploy(gateway, app, spec("add"))
    events = await bus.nc.subscribe(f"thaw.event.app.{app}")
    await server_has_subscriptions(bus)
    status, body = await gateway.call("POST", f"/v1/apps/{app}/stop")
    assert status == 200, body
    assert (body["name"], body["state"], body["version"]) == (app, "stopped", 1)
    event = msgspec.json.decode((await events.next_msg(timeout=5)).data, type=schema.AppEvent)
    await events.unsubscribe()
    assert event.state == "stopped"

    status, body = await gateway.call("POST", f"/v1/functions/{app}/add/calls", json={})
    assert status == 409 and body["error"]["code"] == "conflict"
    assert "stopped" in body["error"]["message"]
    status, apps = await gateway.call("GET", "/v1/apps")
    assert [a["state"] for a in apps if a["name"] == app] == ["stopped"]
    # Deploying again brings it back.
    body = await deploy(gateway, app, spec("add"))
    assert body["version"] == 2
    status, _ = await gateway.call("POST", f"/v1/functions/{app}/add/calls", json={})
    assert status == 202


async def test_an_app_has_a_stable_id_that_paths_take(gateway: Gateway) -> None:
    app = unique("ids")
    first = await deploy(gateway, app, spec("add"))
    assert first["app_id"].startswith("ap-")
    again = await deploy(gateway, app, spec("add"))
    assert again["app_id"] == first["app_id"] and again["version"] == 2
    status, apps = await gateway.call("GET", "/v1/apps")
    assert [a["app_id"] for a in apps if a["name"] == app] == [first["app_id"]]
    status, shown = await gateway.call("GET", f"/v1/apps/{first['app_id']}")
    assert status == 200 and shown["app"]["name"] == app
    status, _logs = await gateway.call("GET", f"/v1/apps/{first['app_id']}/logs")
    assert status == 200
    status, stopped = await gateway.call("POST", f"/v1/apps/{first['app_id']}/stop")
    assert status == 200 and (stopped["name"], stopped["state"]) == (app, "stopped")
    assert stopped["app_id"] == first["app_id"]


async def test_a_deploy_through_another_replica_is_callable(gateway: Gateway, bus: Bus) -> None:
    """The catalog follows AppEvents: write a deploy straight into Postgres (as
    another gateway would) and announce it; this gateway serves it."""
    app = unique("other")
    sha = await upload_bundle(gateway)
    await gateway.db.execute(
        "INSERT INTO apps (id, name, version) VALUES ($1, $2, 1)", "ap-x" + app, app
    )
    await gateway.db.execute(
        "INSERT INTO app_versions (app, version, bundle_sha256) VALUES ($1, 1, $2)", app, sha
    )
    await gateway.db.execute(
        "INSERT INTO functions (app, name, version, spec) VALUES ($1, 'add', 1, $2)",
        app,
        spec("add"),
    )
    await bus.ensure_consumer(
        "INVOKE",
        contract.invoke_consumer_name(app, "add"),
        filter_subject=contract.invoke_subject(app, "add"),
    )
    await bus.publish(f"thaw.event.app.{app}", schema.AppEvent(app=app, version=1, state="deployed"))
    async with responder(bus, app, "add", add):
        status, body = await gateway.call(
            "POST", f"/v1/functions/{app}/add/calls?wait=10", json={"args": [2]}
        )
    assert (status, body["value"]) == (200, 2)


# ---------------------------------------------------------------- fleet and logs


async def test_containers_nodes_and_stopping_a_container(gateway: Gateway, bus: Bus) -> None:
    node = unique("node")
    await gateway.db.execute(
        "INSERT INTO nodes (id, inventory) VALUES ($1, $2)",
        node,
        {"cores": 8, "memory_mb": 16000, "gpus": [{"index": 0, "name": "L4", "memory_mb": 24000}]},
    )
    cid = unique("ct")
    await gateway.db.execute(
        "INSERT INTO containers (container_id, app, function, version, node_id, state, inflight,"
        " started_at) VALUES ($1, 'some-app', 'f', 3, $2, 'ready', 2, now())",
        cid,
        node,
    )
    status, body = await gateway.call("GET", "/v1/nodes")
    assert status == 200
    mine = [n for n in body if n["node_id"] == node]
    assert mine[0]["cores"] == 8 and mine[0]["gpus"][0]["name"] == "L4"
    status, body = await gateway.call("GET", "/v1/containers")
    c = next(c for c in body["containers"] if c["container_id"] == cid)
    assert (c["app"], c["version"], c["state"], c["inflight"]) == ("some-app", 3, "ready", 2)
    assert c["node_id"] == node
    assert c["started_at"] > 0

    # No agent on that node: a clear timeout, not a hang.
    status, body = await gateway.call("POST", f"/v1/containers/{cid}/stop")
    assert status == 504 and node in body["error"]["message"]

    commands: list[schema.StopContainer] = []

    async def agent(msg: Msg) -> None:
        commands.append(msgspec.json.decode(msg.data, type=schema.StopContainer))
        await msg.respond(schema.encode(schema.CommandReply(ok=True)))

    sub = await bus.serve(f"thaw.agent.{node}", agent)
    await server_has_subscriptions(bus)
    try:
        status, body = await gateway.call("POST", f"/v1/containers/{cid}/stop")
    finally:
        await sub.unsubscribe()
    assert status == 200 and body["ok"] is True
    assert commands[0].container_id == cid


async def test_app_logs(gateway: Gateway, bus: Bus) -> None:
    app = unique("logs")
    await deploy(gateway, app, spec("f"))

    def line(text: str) -> schema.LogLine:
        return schema.LogLine(app=app, function="f", container_id="ct-1", stream="stdout", line=text)

    logs_path = gateway.url + f"/v1/apps/{app}/logs"
    async with gateway.http.get(logs_path, headers=gateway.headers()) as r:
        assert r.status == 200 and await r.read() == b""  # none yet, and it ends

    for i in range(3):
        await bus.publish(f"thaw.logs.{app}.f", line(f"hello {i}"))
    async with gateway.http.get(logs_path, headers=gateway.headers()) as r:
        lines = [json.loads(x) for x in (await r.read()).splitlines()]
    assert [x["line"] for x in lines] == ["hello 0", "hello 1", "hello 2"]

    async with gateway.http.get(logs_path + "?follow=1", headers=gateway.headers()) as r:
        got = [json.loads(await r.content.readline())["line"] for _ in range(3)]
        await bus.publish(f"thaw.logs.{app}.f", line("live"))
        got.append(json.loads(await asyncio.wait_for(r.content.readline(), 10))["line"])
    assert got == ["hello 0", "hello 1", "hello 2", "live"]


async def test_an_ephemeral_run_never_replaces_a_deployed_app(gateway: Gateway) -> None:
    app = unique("prod")
    await deploy(gateway, app, spec("f"))
    sha = await upload_bundle(gateway)
    status, body = await gateway.call(
        "POST", f"/v1/apps/{app}/deploy",
        json={"bundle_sha256": sha, "functions": [spec("f")], "ephemeral": True},
    )  # fmt: skip
    assert status == 409, body
    assert body["error"]["code"] == "conflict" and "thaw app stop" in body["error"]["message"]
    status, apps = await gateway.call("GET", "/v1/apps")
    assert next(a for a in apps if a["name"] == app)["version"] == 1
    # Once stopped, the name is free for a run.
    status, _ = await gateway.call("POST", f"/v1/apps/{app}/stop")
    assert status == 200
    status, body = await gateway.call(
        "POST", f"/v1/apps/{app}/deploy",
        json={"bundle_sha256": sha, "functions": [spec("f")], "ephemeral": True},
    )  # fmt: skip
    assert status == 200, body


# ---------------------------------------------------------------- schedules


async def test_a_schedule_that_cannot_fire_fails_the_deploy_naming_it(gateway: Gateway) -> None:
    app = unique("sched")
    sha = await upload_bundle(gateway)
    for schedule, named in [
        ({"kind": "cron", "cron": "61 * * * *"}, "invalid cron expression '61 * * * *'"),
        ({"kind": "cron", "cron": "0 9 * * *", "timezone": "Mars/Olympus"}, "'Mars/Olympus'"),
        ({"kind": "period", "seconds": 0.5}, "at least one second"),
        ({"kind": "hourly"}, "hourly"),
    ]:
        status, body = await gateway.call(
            "POST", f"/v1/apps/{app}/deploy",
            json={"bundle_sha256": sha, "functions": [spec("tick", schedule=schedule)]},
        )  # fmt: skip
        assert status == 400, body
        assert named in body["error"]["message"]
    status, body = await gateway.call(
        "POST", f"/v1/apps/{app}/deploy",
        json={"bundle_sha256": sha, "functions": [
            spec("C", kind="class", methods=["m"], schedule={"kind": "period", "seconds": 60})
        ]},
    )  # fmt: skip
    assert status == 400 and "class" in body["error"]["message"], body
    assert (await gateway.call("GET", f"/v1/apps/{app}"))[0] == 404  # nothing recorded


async def test_app_show_lists_schedules_with_next_and_last_fire(gateway: Gateway) -> None:
    app = unique("sched")
    cron = {"kind": "cron", "cron": "0 9 * * *", "timezone": "Europe/Paris"}
    await deploy(
        gateway, app, spec("tick", schedule={"kind": "period", "seconds": 3600}),
        spec("daily", schedule=cron), spec("plain"),
    )  # fmt: skip
    status, body = await gateway.call("GET", f"/v1/apps/{app}")
    assert status == 200, body
    assert body["app"]["name"] == app and body["app"]["state"] == "deployed"
    shown = {s["function"]: s for s in body["schedules"]}
    assert set(shown) == {"tick", "daily"}
    assert shown["tick"]["schedule"] == "every 3600s"
    assert shown["daily"]["schedule"] == "cron 0 9 * * * (Europe/Paris)"
    assert 3500 < shown["tick"]["next_fire_at"] - time.time() <= 3600
    assert shown["tick"]["last_fire_at"] is None and shown["tick"]["last_status"] == ""
    # A fire the cron service claimed and published, whose run has no result yet.
    await gateway.db.execute(
        "INSERT INTO schedule_fires (app, function, version, fire_ms, call_id, claimed_by,"
        " published_at) VALUES ($1, 'tick', 1, 1000, 'fs-x', 'test', now())", app,
    )  # fmt: skip
    shown_again = (await gateway.call("GET", f"/v1/apps/{app}"))[1]["schedules"]
    shown = {s["function"]: s for s in shown_again}
    assert (shown["tick"]["last_fire_at"], shown["tick"]["last_call_id"]) == (1.0, "fs-x")
    assert shown["tick"]["last_status"] == "pending"
    await gateway.call("POST", f"/v1/apps/{app}/stop")
    stopped = (await gateway.call("GET", f"/v1/apps/{app}"))[1]
    assert [s["next_fire_at"] for s in stopped["schedules"]] == [None, None]


async def test_deploy_refuses_what_is_not_served(gateway: Gateway) -> None:
    """An unknown experimental option would deploy and then not do what it
    says: the deploy is refused, naming it, and nothing is deployed. A web
    endpoint is served."""
    app = unique("unserved")
    sha = await upload_bundle(gateway)
    web = spec("hook", experimental_options={"web": {"kind": "endpoint", "method": "POST"}})
    odd = spec("odd", experimental_options={"turbo": True})
    status, body = await gateway.call(
        "POST", f"/v1/apps/{app}/deploy", json={"bundle_sha256": sha, "functions": [web, odd]}
    )
    assert status == 400, body
    message = body["error"]["message"]
    assert "hook" not in message
    assert "odd: experimental_options 'turbo'" in message
    status, _ = await gateway.call("GET", f"/v1/apps/{app}")
    assert status == 404


async def test_a_request_no_node_can_run_deploys_with_a_warning_and_its_calls_say_so(
    gateway: Gateway,
) -> None:
    """GPUs are served now: a GPU no node has deploys, warned about, naming
    the request and what the nodes offer; a call of it says what it waits for."""
    node = unique("cpu-node")
    await gateway.db.execute(
        "INSERT INTO nodes (id, inventory) VALUES ($1, $2)",
        node,
        {"cores": 4, "memory_mb": 8000, "gpus": []},
    )
    app = unique("nowhere")
    body = await deploy(gateway, app, spec("on_b200", resources={"gpu": "B200:8"}), spec("plain"))
    (warning,) = body["warnings"]
    assert warning.startswith("on_b200: no node can run cpu=0.125, memory=128 MiB, gpu=B200:8")
    assert f"{node}: 4 CPUs, 8000 MiB, no GPU" in warning
    status, accepted = await gateway.call("POST", f"/v1/functions/{app}/on_b200/calls", json={})
    assert status == 202
    status, waiting = await gateway.call("GET", f"/v1/calls/{accepted['call_id']}")
    assert status == 202 and waiting["status"] == "pending"
    assert waiting["waiting_for"].startswith("a node that can run it: no node can run")


async def test_recent_calls_are_listed_with_their_outcome(gateway: Gateway, bus: Bus) -> None:
    app = unique("hist")
    await deploy(gateway, app, spec("add"), spec("boom"))

    async def boom(invoke: schema.Invoke) -> schema.Result:
        return schema.Result(
            call_id=invoke.call_id, status="failure", codec="json", started_at=time.time() - 0.5,
            error="ZeroDivisionError: division by zero", traceback="Traceback (most recent...)",
        )  # fmt: skip

    async with responder(bus, app, "add", add), responder(bus, app, "boom", boom):
        ok = (await gateway.call("POST", f"/v1/functions/{app}/add/calls?wait=10",
                                 json={"args": [1, 2]}))[1]  # fmt: skip
        failed = (await gateway.call("POST", f"/v1/functions/{app}/boom/calls?wait=10"))[1]
    pending = (await gateway.call("POST", f"/v1/functions/{app}/add/calls"))[1]

    status, body = await gateway.call("GET", f"/v1/calls?app={app}")
    assert status == 200, body
    listed = {c["call_id"]: c for c in body["calls"]}
    assert list(listed) == [pending["call_id"], failed["call_id"], ok["call_id"]]  # newest first
    assert listed[ok["call_id"]]["status"] == "success"
    assert listed[pending["call_id"]]["status"] == "pending"
    boomed = listed[failed["call_id"]]
    assert boomed["function"] == "boom" and boomed["status"] == "failure"
    assert "ZeroDivisionError" in boomed["error"] and boomed["traceback"].startswith("Traceback")
    assert boomed["duration_s"] > 0.4

    only = (await gateway.call("GET", f"/v1/calls?app={app}&function=boom&limit=5"))[1]
    assert [c["call_id"] for c in only["calls"]] == [failed["call_id"]]
    assert (await gateway.call("GET", f"/v1/calls?app={app}&limit=1"))[1]["calls"][0][
        "call_id"
    ] == pending["call_id"]
    status, body = await gateway.call("GET", "/v1/calls?limit=0")
    assert status == 400 and "limit" in body["error"]["message"]
    status, _ = await gateway.call("GET", "/v1/calls?app=no-such-app")
    assert status == 404


async def test_the_dashboard_is_served_without_a_token(gateway: Gateway) -> None:
    async with gateway.http.get(gateway.url + "/") as r:
        assert r.status == 200 and r.content_type == "text/html"
        page = await r.text()
    assert '<script type="module" src="/ui/main.js">' in page
    async with gateway.http.get(gateway.url + "/ui/main.js") as r:
        assert r.status == 200 and r.content_type == "text/javascript"
    for missing in ("/ui/nope.js", "/ui/..%2Froutes.py", "/ui/routes.py"):
        async with gateway.http.get(gateway.url + missing) as r:
            assert r.status == 404, missing
    # The API the page calls still wants one.
    async with gateway.http.get(gateway.url + "/v1/apps") as r:
        assert r.status == 401
