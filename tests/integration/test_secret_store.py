"""Secrets: the gateway's API (create, list, delete; values never answered),
sealed at rest in Postgres, resolved for a function, and a key rotation that
re-encrypts every secret."""

from __future__ import annotations

import base64
import uuid
from dataclasses import dataclass, field

import pytest
from fixtures.gateway import (
    Gateway,
    gateway,  # noqa: F401 - a fixture
    settings,  # noqa: F401 - a fixture
    unique,
    upload_bundle,
)
from thaw_agent.secrets import SecretsUnavailable, fetch_secrets
from thaw_core import contract
from thaw_core.bus import Bus
from thaw_core.db import Database
from thaw_core.schema import FunctionSpec, SecretRef, SecretsReply, decoder
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


async def test_agents_fetch_the_values_over_the_bus(gateway: Gateway, bus: Bus) -> None:
    app, name = unique("app"), unique("creds")
    await gateway.call("POST", "/v1/secrets", json={"name": name, "env": {"A": "1", "B": "1"}})
    await gateway.call("PUT", f"/v1/apps/{app}/secrets/f-0", json={"env": {"B": "2"}})

    def spec(*refs: SecretRef) -> FunctionSpec:
        return FunctionSpec(name="f", module="app", qualname="f", secrets=list(refs))

    both = spec(SecretRef(name=name), SecretRef(name="f-0", app_scoped=True))
    assert await fetch_secrets(bus, app, both) == {"A": "1", "B": "2"}
    assert await fetch_secrets(bus, app, spec()) == {}
    with pytest.raises(SecretsUnavailable, match=f"{name}-gone"):
        await fetch_secrets(bus, app, spec(SecretRef(name=name + "-gone")))
    reply = _reply.decode((await bus.request(contract.SECRETS_FETCH, b"{}")).data)
    assert reply.env == {} and "not a valid SecretsRequest" in reply.error
