"""Secrets: the gateway's API (create, list, delete; values never answered),
sealed at rest in Postgres, resolved for a function, fetched by an agent
only as far as its container's grant goes, and a key rotation that
re-encrypts every secret."""

from __future__ import annotations

import asyncio
import base64
import os
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec
import pytest
from fixtures.gateway import (
    Gateway,
    gateway,  # noqa: F401 - a fixture
    settings,  # noqa: F401 - a fixture
    unique,
    upload_bundle,
)
from fixtures.nats import node_creds, role_creds
from thaw_agent.secrets import SecretsUnavailable, fetch_secrets
from thaw_core import contract, secrets_grant
from thaw_core.bus import Bus
from thaw_core.config import Settings
from thaw_core.db import Database
from thaw_core.schema import (
    FunctionSpec,
    SecretRef,
    SecretsGrant,
    SecretsReply,
    SecretsRequest,
    decoder,
)
from thaw_gateway.secret_store import NAMED, SecretProblem, SecretStore
from thaw_gateway.secretbox import SecretBox, key_id, new_key

pytestmark = pytest.mark.timeout(120)

_reply = decoder(SecretsReply)


@dataclass(frozen=True)
class Ref:
    name: str
    required_keys: list[str] = field(default_factory=list)
    app_scoped: bool = False


def key() -> bytes:
    return base64.b64decode(new_key())


async def test_create_list_delete_through_the_api(gateway: Gateway) -> None:
    name = unique("api-key")
    planted = "sk-" + uuid.uuid4().hex
    status, body = await gateway.call(
        "POST", "/v1/secrets", json={"name": name, "env": {"API_KEY": planted, "ORG": "o"}}
    )
    assert status == 201, body
    assert body["name"] == name and body["keys"] == ["API_KEY", "ORG"]
    assert planted not in str(body)

    status, body = await gateway.call(
        "POST", "/v1/secrets", json={"name": name, "env": {"API_KEY": "other"}}
    )
    assert status == 409 and "--force" in body["error"]["message"]
    status, body = await gateway.call(
        "POST", "/v1/secrets", json={"name": name, "env": {"API_KEY": "new"}, "force": True}
    )
    assert status == 201 and body["keys"] == ["API_KEY"]

    status, listed = await gateway.call("GET", "/v1/secrets")
    assert status == 200
    mine = [s for s in listed if s["name"] == name]
    assert mine and set(mine[0]) == {"name", "keys", "created_at", "updated_at"}

    row = await gateway.db.fetchrow("SELECT * FROM secrets WHERE name = $1", name)
    assert row is not None and b"new" not in bytes(row["value"])
    assert row["key_id"] == gateway.service.gateway.secrets.box.current

    status, body = await gateway.call("DELETE", f"/v1/secrets/{name}")
    assert status == 200 and body["name"] == name
    status, body = await gateway.call("DELETE", f"/v1/secrets/{name}")
    assert status == 404


async def test_bad_secrets_are_refused_without_echoing_values(gateway: Gateway) -> None:
    for env, says in (
        ({}, "at least one"),
        ({"1BAD": "x"}, "invalid key"),
        ({"K": "a\u0000b"}, "NUL"),
    ):
        status, body = await gateway.call(
            "POST", "/v1/secrets", json={"name": unique("bad"), "env": env}
        )
        assert status == 400 and says in body["error"]["message"], body
        assert "a\u0000b" not in body["error"]["message"]
    status, body = await gateway.call("POST", "/v1/secrets", json={"name": "a.b", "env": {"K": "v"}})
    assert status == 400 and "invalid secret name" in body["error"]["message"]


async def test_app_values_are_kept_apart_from_named_secrets(gateway: Gateway) -> None:
    app, name = unique("app"), unique("local")
    status, body = await gateway.call(
        "PUT", f"/v1/apps/{app}/secrets/{name}", json={"env": {"TOKEN": "t1"}}
    )
    assert status == 200 and body["keys"] == ["TOKEN"]
    _, listed = await gateway.call("GET", "/v1/secrets")
    assert name not in [s["name"] for s in listed]
    store = gateway.service.gateway.secrets
    assert await store.environment(app, [Ref(name, app_scoped=True)]) == {"TOKEN": "t1"}


async def test_resolving_merges_in_order_and_names_what_is_missing(db: Database) -> None:
    store = SecretStore(db, SecretBox([key()]))
    a, b = unique("a"), unique("b")
    await store.put(NAMED, a, {"X": "1", "Y": "1"}, replace=False)
    await store.put(NAMED, b, {"Y": "2"}, replace=False)
    assert await store.environment("app", [Ref(a), Ref(b)]) == {"X": "1", "Y": "2"}
    assert await store.environment("app", [Ref(b), Ref(a)]) == {"X": "1", "Y": "1"}

    missing = unique("missing")
    problems = await store.problems("app", [Ref(missing), Ref(a, ["X", "Z"])])
    assert len(problems) == 2
    assert missing in problems[0] and "does not exist" in problems[0]
    assert a in problems[1] and "Z" in problems[1] and "lacks" in problems[1]
    with pytest.raises(SecretProblem, match=missing):
        await store.environment("app", [Ref(missing)])


async def test_rotation_reencrypts_every_secret_under_the_new_key(db: Database) -> None:
    old, new = key(), key()
    before = SecretStore(db, SecretBox([old]))
    names = [unique("rot") for _ in range(3)]
    for i, name in enumerate(names):
        await before.put(NAMED, name, {"V": str(i)}, replace=False)
    await before.put("some-app", names[0], {"V": "app"}, replace=False)

    during = SecretStore(db, SecretBox([new, old]))
    assert await during.reencrypt() >= 4
    assert await during.reencrypt() == 0
    rows = await db.fetch("SELECT key_id FROM secrets WHERE name = ANY($1)", names)
    assert {r["key_id"] for r in rows} == {key_id(new)}

    after = SecretStore(db, SecretBox([new]))  # the old key is gone for good
    for i, name in enumerate(names):
        assert await after.environment("x", [Ref(name)]) == {"V": str(i)}
    assert await after.environment("some-app", [Ref(names[0], app_scoped=True)]) == {"V": "app"}


async def test_a_deploy_naming_a_missing_secret_or_key_fails_naming_it(gateway: Gateway) -> None:
    app, name = unique("app"), unique("creds")
    sha = await upload_bundle(gateway)

    async def deploy(*refs: dict[str, object]) -> tuple[int, dict[str, object]]:
        fn = {"name": "f", "module": "app", "qualname": "f", "secrets": list(refs)}
        return await gateway.call(
            "POST", f"/v1/apps/{app}/deploy", json={"bundle_sha256": sha, "functions": [fn]}
        )

    status, body = await deploy({"name": name})
    assert status == 400 and name in body["error"]["message"]
    assert "does not exist" in body["error"]["message"]
    await gateway.call("POST", "/v1/secrets", json={"name": name, "env": {"USER": "u"}})
    status, body = await deploy({"name": name, "required_keys": ["USER", "PASSWORD"]})
    assert status == 400 and "PASSWORD" in body["error"]["message"]
    status, body = await deploy({"name": name, "required_keys": ["USER"]})
    assert status == 200, body


@dataclass
class Node:
    """An agent's connection as its node's own NATS user (its inbox its own)."""

    node_id: str
    bus: Bus


async def _node(nats_url: str) -> Node:
    node_id = f"node-{uuid.uuid4().hex[:8]}"
    creds = Path(await asyncio.to_thread(node_creds, node_id, nats_url))
    return Node(node_id, await Bus.connect(nats_url, name="agent", creds=creds))


@pytest.fixture
async def node(nats_url: str) -> AsyncIterator[Node]:
    n = await _node(nats_url)
    yield n
    await n.bus.close()


def _grant_key(settings: Settings) -> bytes:
    """The key the scheduler signs with: the gateway's (its state dir's file)."""
    return secrets_grant.load_key(settings.state_dir)


def _spec(*refs: SecretRef) -> FunctionSpec:
    return FunctionSpec(name="f", module="app", qualname="f", secrets=list(refs))


def _grant(key: bytes, node_id: str, app: str, *refs: SecretRef, **kw: Any) -> SecretsGrant:
    grant = secrets_grant.issue(
        key, node_id=node_id, app=app, function="f", container_id="ct-" + uuid.uuid4().hex[:12],
        secrets=refs, version=1, **kw,
    )  # fmt: skip
    assert grant is not None
    return grant


async def test_agents_fetch_the_values_their_grant_names(
    gateway: Gateway, settings: Settings, node: Node
) -> None:
    app, name = unique("app"), unique("creds")
    await gateway.call("POST", "/v1/secrets", json={"name": name, "env": {"A": "1", "B": "1"}})
    await gateway.call("PUT", f"/v1/apps/{app}/secrets/f-0", json={"env": {"B": "2"}})
    key = _grant_key(settings)
    refs = (SecretRef(name=name), SecretRef(name="f-0", app_scoped=True))
    grant = _grant(key, node.node_id, app, *refs)
    assert await fetch_secrets(node.bus, app, _spec(*refs), grant) == {"A": "1", "B": "2"}
    assert await fetch_secrets(node.bus, app, _spec(), None) == {}
    gone = SecretRef(name=name + "-gone")
    with pytest.raises(SecretsUnavailable, match=f"{name}-gone"):
        await fetch_secrets(node.bus, app, _spec(gone), _grant(key, node.node_id, app, gone))
    reply = _reply.decode((await node.bus.request(contract.SECRETS_FETCH, b"{}")).data)
    assert reply.env == {} and "not a valid SecretsRequest" in reply.error


async def test_a_fetch_beyond_its_grant_is_refused_saying_why(
    gateway: Gateway, settings: Settings, nats_url: str, node: Node
) -> None:
    """An agent's (or the builder's) credential alone fetches nothing: without
    the grant the scheduler signed for a container on that very node, listing
    the secrets asked for, the gateway refuses and says why."""
    app, mine, theirs = unique("app"), unique("mine"), unique("theirs")
    planted = "sk-" + uuid.uuid4().hex
    await gateway.call("POST", "/v1/secrets", json={"name": mine, "env": {"MINE": "m"}})
    await gateway.call("POST", "/v1/secrets", json={"name": theirs, "env": {"KEY": planted}})
    key = _grant_key(settings)
    other = await _node(nats_url)
    mine_ref, theirs_ref = SecretRef(name=mine), SecretRef(name=theirs)
    granted = _grant(key, node.node_id, app, mine_ref)

    async def refusal(bus: Bus, refs: list[SecretRef], grant: SecretsGrant | None) -> str:
        req = SecretsRequest(app=app, function="f", secrets=refs, grant=grant)
        reply = _reply.decode((await bus.request(contract.SECRETS_FETCH, req)).data)
        assert reply.env == {} and planted not in reply.error
        return reply.error

    builder = await Bus.connect(nats_url, name="builder", creds=Path(role_creds("builder")))
    try:
        # No grant at all, from a node and from the builder.
        assert "carries no grant" in await refusal(node.bus, [theirs_ref], None)
        assert "carries no grant" in await refusal(builder, [theirs_ref], None)
        # A grant altered to name another secret, or signed with another key.
        altered = msgspec.structs.replace(granted, secrets=[mine_ref, theirs_ref])
        assert "does not verify" in await refusal(node.bus, [theirs_ref], altered)
        forged = _grant(os.urandom(secrets_grant.KEY_BYTES), node.node_id, app, theirs_ref)
        assert "does not verify" in await refusal(node.bus, [theirs_ref], forged)
        # Another node's grant (it cannot read this node's commands, but a
        # leaked grant still only answers to its own node).
        why = await refusal(other.bus, [mine_ref], granted)
        assert f"node {node.node_id!r}'s" in why and "the asker is not" in why
        # A secret its grant does not list.
        why = await refusal(node.bus, [mine_ref, theirs_ref], granted)
        assert f"not in its grant: {theirs}" in why
        # Another app's or function's, or an expired one.
        elsewhere = SecretsRequest(app=app, function="g", secrets=[mine_ref], grant=granted)
        reply = _reply.decode((await node.bus.request(contract.SECRETS_FETCH, elsewhere)).data)
        assert f"its grant is for {app}/f" in reply.error
        old = _grant(key, node.node_id, app, mine_ref, now=time.time() - 2 * secrets_grant.TTL_S)
        assert "expired" in await refusal(node.bus, [mine_ref], old)
        # A builder's grant (node "") answers the builder alone.
        build = secrets_grant.issue(
            key, node_id="", app=app, function="f", container_id="b-1", secrets=[mine_ref]
        )
        assert "the builder's" in await refusal(node.bus, [mine_ref], build)
    finally:
        await builder.close()
        await other.bus.close()
    # The grant itself still works from its node.
    assert await fetch_secrets(node.bus, app, _spec(mine_ref), granted) == {"MINE": "m"}
