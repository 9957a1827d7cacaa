"""NATS credentials: one nkey user per role and per invoke client, and the
nats-server configuration that admits only them, each with its role's grants
(``thaw_core.permissions``).

A credential is a small JSON file, 0600::

    {"user": "agent", "seed": "SU...", "inbox_prefix": "_INBOX.agent"}

(an invoke client's also says which apps it may call and where its results
land). The server's configuration holds only public keys. The directory::

    <dir>/              0700
      server.conf       0600  authorization block, rendered from the grants
      users/<role>.json 0600  one credential per role, made on first use
      clients/<name>.json     an invoke client's public key and apps (no seed)
      nodes/<token>.json      a node agent's public key (no seed)
      users/node.<token>.json 0600  the credential of this machine's own node
      run/<port>.pid          each nats-server using this configuration (``-P``)

``connect_options`` turns a credential file into nats-py ``connect`` options.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import signal
from pathlib import Path
from typing import Any

import msgspec
import nkeys

from thaw_core import contract
from thaw_core.permissions import (
    AGENT,
    ANY_NODE,
    ROLES,
    Grants,
    client_grants,
    node_grants,
    role_grants,
)
from thaw_core.private_file import private_dir, write_private
from thaw_core.schema import check_name

# A client name is a subject token of its own (its results' prefix), and not a
# role (nor "agent", the nodes' inboxes' prefix).
_CLIENT_NAME = re.compile(r"^[a-z0-9][a-z0-9-]{0,62}$")
_RESERVED_NAMES = frozenset({*ROLES, AGENT})
# A node id: a hostname, or any id the operator gives (THAW_NODE_ID).
_NODE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


class Credential(msgspec.Struct, kw_only=True, omit_defaults=True):
    """One NATS user's credential file."""

    user: str
    seed: str
    inbox_prefix: str
    # Invoke clients only: what they may call and where their results land.
    apps: list[str] = []
    call_id_prefix: str = ""
    results: str = ""


class NodeRecord(msgspec.Struct, kw_only=True):
    """A node's agent as the server's configuration knows it: no seed."""

    node_id: str
    public_key: str


class ClientRecord(msgspec.Struct, kw_only=True):
    """An invoke client as the server's configuration knows it: no seed."""

    name: str
    public_key: str
    apps: list[str]


def new_seed() -> str:
    return nkeys.encode_seed(secrets.token_bytes(32), nkeys.PREFIX_BYTE_USER).decode()


def public_key(seed: str) -> str:
    return nkeys.from_seed(bytearray(seed.encode())).public_key.decode()


def read_credential(path: Path) -> Credential:
    try:
        return msgspec.json.decode(path.read_bytes(), type=Credential)
    except (OSError, msgspec.DecodeError) as e:
        raise ValueError(f"cannot read the NATS credential {path}: {e}") from e


def connect_options(creds: Path) -> dict[str, Any]:
    """nats-py ``connect`` keyword arguments that log in with ``creds``."""
    cred = read_credential(creds)
    return {"nkeys_seed_str": cred.seed, "inbox_prefix": cred.inbox_prefix}


def _permissions(grants: Grants) -> dict[str, Any]:
    perms: dict[str, Any] = {
        "publish": {"allow": list(grants.publish)},
        "subscribe": {"allow": list(grants.subscribe)},
    }
    if grants.publish_deny:
        perms["publish"]["deny"] = list(grants.publish_deny)
    if grants.responds:
        perms["allow_responses"] = True
    return perms


class NatsAuth:
    """The credentials and server configuration kept in one directory."""

    def __init__(self, root: Path) -> None:
        self.root = root

    @property
    def config_path(self) -> Path:
        return self.root / "server.conf"

    @property
    def users_dir(self) -> Path:
        return self.root / "users"

    @property
    def clients_dir(self) -> Path:
        return self.root / "clients"

    @property
    def nodes_dir(self) -> Path:
        return self.root / "nodes"

    def pid_file(self, port: int) -> Path:
        """Where the nats-server on ``port`` writes its pid (its ``-P``), so that
        ``reload_servers`` finds it."""
        return self.root / "run" / f"{port}.pid"

    def reload_servers(self) -> int:
        """Have every running nats-server of this configuration re-read it
        (SIGHUP): new clients get in, revoked ones are disconnected. Returns
        how many were signalled."""
        signalled = 0
        for pid_file in (self.root / "run").glob("*.pid"):
            try:
                pid = int(pid_file.read_text().strip())
                cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
            except (OSError, ValueError):
                pid_file.unlink(missing_ok=True)  # that server is gone
                continue
            if b"nats-server" not in cmdline:
                pid_file.unlink(missing_ok=True)
                continue
            os.kill(pid, signal.SIGHUP)
            signalled += 1
        return signalled

    def creds(self, role: str) -> Path:
        """The credential file of ``role`` (see ``ensure``)."""
        return self.users_dir / f"{role}.json"

    def ensure(self) -> Path:
        """Make the directory, a credential for every role that has none, and
        the server's configuration; return the configuration's path."""
        for d in (self.root, self.users_dir, self.clients_dir, self.nodes_dir, self.root / "run"):
            private_dir(d)
        for role in ROLES:
            path = self.creds(role)
            if not path.exists():
                cred = Credential(
                    user=role, seed=new_seed(), inbox_prefix=contract.inbox_prefix(role)
                )
                write_private(path, msgspec.json.encode(cred).decode(), replace=False)
        return self.write_config()

    def clients(self) -> list[ClientRecord]:
        return sorted(
            (
                msgspec.json.decode(p.read_bytes(), type=ClientRecord)
                for p in self.clients_dir.glob("*.json")
            ),
            key=lambda r: r.name,
        )

    def nodes(self) -> list[NodeRecord]:
        return sorted(
            (
                msgspec.json.decode(p.read_bytes(), type=NodeRecord)
                for p in self.nodes_dir.glob("*.json")
            ),
            key=lambda r: r.node_id,
        )

    def render(self) -> str:
        users = [
            {
                "nkey": public_key(read_credential(self.creds(role)).seed),
                "permissions": _permissions(role_grants(role)),
            }
            for role in ROLES
        ]
        users += [
            {
                "nkey": client.public_key,
                "permissions": _permissions(client_grants(client.name, tuple(client.apps))),
            }
            for client in self.clients()
        ]
        users += [
            {"nkey": node.public_key, "permissions": _permissions(node_grants(node.node_id))}
            for node in self.nodes()
        ]
        # nats-server's configuration format reads JSON.
        return json.dumps({"authorization": {"users": users}}, indent=2) + "\n"

    def write_config(self) -> Path:
        write_private(self.config_path, self.render())
        return self.config_path

    # ------------------------------------------------------------ invoke clients

    def add_client(self, name: str, apps: list[str]) -> Credential:
        """Register the invoke client ``name`` for ``apps`` and return its
        credential (the only copy of its seed: the caller writes it out).
        Takes effect once the server reloads its configuration."""
        if not _CLIENT_NAME.match(name) or name in _RESERVED_NAMES:
            raise ValueError(
                f"invalid client name {name!r}: lowercase letters, digits and '-',"
                f" and not one of {', '.join(sorted(_RESERVED_NAMES))}"
            )
        if not apps:
            raise ValueError("an invoke client needs at least one app (--app)")
        for app in apps:
            check_name("app", app)
        if (self.clients_dir / f"{name}.json").exists():
            raise ValueError(f"an invoke client named {name!r} exists; revoke it first")
        seed = new_seed()
        record = ClientRecord(name=name, public_key=public_key(seed), apps=sorted(set(apps)))
        write_private(self.clients_dir / f"{name}.json", msgspec.json.encode(record).decode())
        self.write_config()
        return Credential(
            user=name,
            seed=seed,
            inbox_prefix=contract.inbox_prefix(name),
            apps=record.apps,
            call_id_prefix=contract.client_call_id(name, ""),
            results=contract.client_results(name),
        )

    def remove_client(self, name: str) -> bool:
        """Forget the invoke client ``name``; False when there is none."""
        path = self.clients_dir / f"{name}.json"
        if not path.exists():
            return False
        path.unlink()
        self.write_config()
        return True

    # ------------------------------------------------------------ node agents

    def _node_record(self, node_id: str) -> Path:
        if not _NODE_ID.match(node_id) and node_id != ANY_NODE:
            raise ValueError(
                f"invalid node id {node_id!r}: letters, digits, '.', '_' and '-',"
                " at most 128, starting with a letter or digit"
            )
        return self.nodes_dir / f"{contract.node_token(node_id)}.json"

    def add_node(self, node_id: str) -> Credential:
        """Register the agent of ``node_id`` and return its credential (the only
        copy of its seed: the caller writes it out). Takes effect once the
        server reloads its configuration."""
        record_path = self._node_record(node_id)
        if record_path.exists():
            raise ValueError(f"node {node_id!r} has a NATS credential; revoke it first")
        seed = new_seed()
        record = NodeRecord(node_id=node_id, public_key=public_key(seed))
        write_private(record_path, msgspec.json.encode(record).decode())
        self.write_config()
        return Credential(
            user=f"{AGENT}.{contract.node_token(node_id)}",
            seed=seed,
            inbox_prefix=contract.agent_inbox_prefix(node_id),
        )

    def remove_node(self, node_id: str) -> bool:
        """Forget the agent of ``node_id``; False when it has no credential."""
        path = self._node_record(node_id)
        if not path.exists():
            return False
        path.unlink()
        self.write_config()
        return True

    def node_creds(self, node_id: str) -> Path:
        """This machine's credential file for the agent of ``node_id``, made
        (and the configuration rewritten) when it has none; the caller reloads
        the servers when they run already."""
        path = self.users_dir / f"node.{contract.node_token(node_id)}.json"
        record = self._node_record(node_id)
        if path.exists() and record.exists():
            cred = read_credential(path)
            known = msgspec.json.decode(record.read_bytes(), type=NodeRecord)
            if public_key(cred.seed) == known.public_key:
                return path
        # A credential revoked or issued elsewhere: this one replaces it.
        self.remove_node(node_id)
        write_private(path, msgspec.json.encode(self.add_node(node_id)).decode())
        return path

    def ensure_fleet_agent(self) -> Path:
        """``users/agent.json``: the one credential a compose or Kubernetes
        fleet's agents share (``permissions.ANY_NODE``), made when missing.
        The embedded stack and ``thaw node credentials`` issue one per node."""
        path = self.creds(AGENT)
        if not self._node_record(ANY_NODE).exists():
            write_private(path, msgspec.json.encode(self.add_node(ANY_NODE)).decode())
        return path


def main(argv: list[str] | None = None) -> int:
    """``python -m thaw_core.nats_auth DIR``: make (or complete) the
    credentials and server configuration in DIR, e.g. for compose.yaml's
    secrets (the agents' credential among them, shared by the fleet's nodes);
    existing credentials are kept."""
    import sys

    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m thaw_core.nats_auth DIR", file=sys.stderr)
        return 2
    auth = NatsAuth(Path(args[0]))
    auth.ensure()
    auth.ensure_fleet_agent()
    print(auth.config_path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
