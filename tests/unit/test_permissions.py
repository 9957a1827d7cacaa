"""The NATS grants as the nats-server gets them: one user per role and per
invoke client, results publishable by the platform's agents (and the gateway,
for a call cancelled before it ran) alone, the streams' configuration in the
hands of the provisioners alone."""

from __future__ import annotations

import json
from pathlib import Path

from thaw_core import contract, permissions
from thaw_core.nats_auth import NatsAuth, public_key, read_credential
from thaw_core.permissions import JS_API, client_grants, role_grants


def _matches(pattern: str, subject: str) -> bool:
    want, got = pattern.split("."), subject.split(".")
    for i, token in enumerate(want):
        if token == ">":
            return len(got) > i
        if i >= len(got) or token not in ("*", got[i]):
            return False
    return len(want) == len(got)


def _may_publish(role: str, subject: str) -> bool:
    return any(_matches(p, subject) for p in role_grants(role).publish)


def test_only_agents_gateway_scheduler_and_admin_publish_results() -> None:
    # The scheduler answers inputs that no deployed function consumes.
    subject = contract.result_subject("fc-1")
    allowed = {r for r in permissions.ROLES if _may_publish(r, subject)}
    assert allowed == {
        permissions.AGENT, permissions.GATEWAY, permissions.SCHEDULER, permissions.ADMIN
    }


def test_only_provisioners_may_change_streams() -> None:
    for stream in contract.STREAMS:
        for op in ("CREATE", "UPDATE", "DELETE", "PURGE"):
            subject = f"{JS_API}.STREAM.{op}.{stream.name}"
            allowed = {r for r in permissions.ROLES if _may_publish(r, subject)}
            assert allowed == set(permissions.PROVISIONERS), (subject, allowed)


def test_an_invoke_client_gets_its_apps_its_results_and_nothing_else() -> None:
    g = client_grants("go-svc", ("hello", "embedder"))
    assert set(g.publish) == {"thaw.invoke.hello.*", "thaw.invoke.embedder.*"}
    assert set(g.subscribe) == {"_INBOX.go-svc.>", "thaw.result.go-svc.>"}
    assert not g.responds
    assert contract.client_call_id("go-svc", "abc") == "go-svc.abc"


def test_every_role_and_client_is_a_user_of_the_rendered_config(tmp_path: Path) -> None:
    auth = NatsAuth(tmp_path / "auth")
    auth.ensure()
    cred = auth.add_client("node", ["hello"])
    users = json.loads(auth.config_path.read_text())["authorization"]["users"]
    keys = {u["nkey"] for u in users}
    for role in permissions.ROLES:
        role_cred = read_credential(auth.creds(role))
        assert public_key(role_cred.seed) in keys
        assert role_cred.inbox_prefix == contract.inbox_prefix(role)
        assert auth.creds(role).stat().st_mode & 0o077 == 0
    assert public_key(cred.seed) in keys
    # The server's configuration holds no seed, only public keys.
    assert cred.seed not in auth.config_path.read_text()
    assert auth.config_path.stat().st_mode & 0o077 == 0
    assert auth.remove_client("node")
    assert public_key(cred.seed) not in auth.config_path.read_text()
