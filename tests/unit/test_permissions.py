"""The NATS grants as the nats-server gets them: one user per role and per
invoke client, results publishable by the platform's agents (and the gateway,
for a call cancelled before it ran) alone, the streams' configuration in the
hands of the provisioners alone."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from thaw_core import contract, permissions
from thaw_core.nats_auth import NatsAuth, main, public_key, read_credential
from thaw_core.permissions import JS_API, Grants, client_grants, node_grants, role_grants

# Every user of a stack: its roles, and one node's agent ("agent").
USERS: dict[str, Grants] = {
    **{r: role_grants(r) for r in permissions.ROLES},
    permissions.AGENT: node_grants("node-a"),
}


def _matches(pattern: str, subject: str) -> bool:
    want, got = pattern.split("."), subject.split(".")
    for i, token in enumerate(want):
        if token == ">":
            return len(got) > i
        if i >= len(got) or token not in ("*", got[i]):
            return False
    return len(want) == len(got)


def _may_publish(role: str, subject: str) -> bool:
    return any(_matches(p, subject) for p in USERS[role].publish)


def test_only_agents_gateway_scheduler_and_admin_publish_results() -> None:
    # The scheduler answers inputs that no deployed function consumes.
    subject = contract.result_subject("fc-1")
    allowed = {r for r in USERS if _may_publish(r, subject)}
    assert allowed == {
        permissions.AGENT,
        permissions.GATEWAY,
        permissions.SCHEDULER,
        permissions.ADMIN,
    }


def _may_subscribe(role: str, subject: str) -> bool:
    return any(_matches(p, subject) for p in USERS[role].subscribe)


def test_only_the_gateway_reaches_containers_processes_and_only_agents_serve_them() -> None:
    # A sandbox's I/O and `thaw container exec`: the gateway checks the token first.
    subject = contract.container_exec_subject("node-a", "sb-0123")
    askers = {r for r in USERS if _may_publish(r, subject)}
    assert askers == {permissions.GATEWAY, permissions.ADMIN}
    servers = {r for r in USERS if _may_subscribe(r, subject)}
    assert servers == {permissions.AGENT, permissions.GATEWAY, permissions.ADMIN}
    # Only the agent of the node that runs it: USERS' agent is node-a's.
    elsewhere = contract.container_exec_subject("node.b", "sb-0123")
    assert not _may_subscribe(permissions.AGENT, elsewhere)
    assert any(_matches(p, elsewhere) for p in node_grants("node.b").subscribe)
    assert not any(_matches(p, subject) for p in client_grants("go-svc", ("hello",)).publish)
    # Sandboxes are placed by the scheduler at the gateway's request.
    placers = {r for r in USERS if _may_subscribe(r, contract.SANDBOX_PLACE)}
    assert permissions.SCHEDULER in placers
    assert {r for r in USERS if _may_publish(r, contract.SANDBOX_PLACE)} == {
        permissions.GATEWAY,
        permissions.ADMIN,
    }


def test_only_provisioners_may_change_streams() -> None:
    for stream in contract.STREAMS:
        for op in ("CREATE", "UPDATE", "DELETE", "PURGE"):
            subject = f"{JS_API}.STREAM.{op}.{stream.name}"
            allowed = {r for r in USERS if _may_publish(r, subject)}
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
    # A node's agent: a user of its own, revoked alone.
    node = read_credential(auth.node_creds("host-1.example"))
    assert node.inbox_prefix == contract.agent_inbox_prefix("host-1.example")
    assert public_key(node.seed) in auth.config_path.read_text()
    assert (
        auth.node_creds("host-1.example")
        and read_credential(auth.node_creds("host-1.example")) == node
    ), "the same credential on each start"
    assert [n.node_id for n in auth.nodes()] == ["host-1.example"]
    assert auth.remove_node("host-1.example")
    assert public_key(node.seed) not in auth.config_path.read_text()


def test_a_node_gets_its_own_inbox_commands_and_heartbeats_only() -> None:
    a, b = node_grants("node-a"), node_grants("node.b")

    def subscribes(g: Grants, subject: str) -> bool:
        return any(_matches(p, subject) for p in g.subscribe)

    for own, other, other_id in ((a, b, "node.b"), (b, a, "node-a")):
        inbox = contract.agent_inbox_prefix(other_id) + ".x"
        assert not subscribes(own, inbox) and subscribes(other, inbox)
        assert not subscribes(own, contract.agent_command_subject(other_id))
        assert not any(
            _matches(p, contract.node_event_subject(contract.node_token(other_id)))
            for p in own.publish
        )
    # A dotted hostname takes commands on its raw id and on its token.
    assert subscribes(b, "thaw.agent.node.b") and subscribes(b, "thaw.agent.node_b")
    # The services answering agents reach every node's inbox.
    assert any(
        _matches(p, contract.agent_inbox_prefix("node-a") + ".x")
        for p in role_grants(permissions.GATEWAY).publish
    )


def test_no_client_may_take_the_agents_inboxes(tmp_path: Path) -> None:
    auth = NatsAuth(tmp_path / "auth")
    auth.ensure()
    with pytest.raises(ValueError, match="invalid client name"):
        auth.add_client(permissions.AGENT, ["hello"])


def test_a_fleets_agents_share_one_credential_for_any_node(tmp_path: Path) -> None:
    # compose and Kubernetes name their nodes only when they start.
    root = tmp_path / "fleet"
    assert main([str(root)]) == 0
    auth = NatsAuth(root)
    shared = read_credential(auth.creds(permissions.AGENT))
    assert public_key(shared.seed) in auth.config_path.read_text()
    assert main([str(root)]) == 0
    assert read_credential(auth.creds(permissions.AGENT)) == shared, "kept on a second run"
    g = node_grants(permissions.ANY_NODE)
    assert any(_matches(p, contract.agent_command_subject("k8s-node-7")) for p in g.subscribe)
    exec_7 = contract.container_exec_subject("k8s-node-7", "ct-1")
    assert any(_matches(p, exec_7) for p in g.subscribe)
    # An embedded stack's own directory has no such credential.
    embedded = NatsAuth(tmp_path / "embedded")
    embedded.ensure()
    assert not embedded.creds(permissions.AGENT).exists()
