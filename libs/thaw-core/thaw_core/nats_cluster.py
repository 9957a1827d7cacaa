"""Each nats-server's own configuration: the users of ``thaw_core.nats_auth``
included, its name, and for a member of a cluster on one machine (``thaw up
--nats-cluster N``, the tests' ``NatsCluster``) the cluster block.

The name is in the file, not given with ``-n``: nats-server refuses to reload
a configuration whose server name differs from the flag's ("config reload not
supported for ServerName"), so a flag would stop every reload, and with it
``thaw nats-client create``'s.

Routes between the members log in too, with a password of their own made once
into ``<auth dir>/route-password`` (0600): an unauthenticated route port would
let anyone on the machine join the cluster and read every message. Each
server's file is ``<auth dir>/server-<client port>.conf`` (0600)::

    include "server.conf"
    server_name: "thaw-node-1"
    cluster: {"name": "thaw", "listen": ..., "authorization": ..., "routes": [...]}

so a reload (``NatsAuth.reload_servers``) re-reads the users as a single
server's does.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Sequence
from pathlib import Path
from typing import NamedTuple

from thaw_core.nats_auth import NatsAuth
from thaw_core.private_file import read_or_create, write_private

ROUTE_USER = "route"
CLUSTER_NAME = "thaw"


class Member(NamedTuple):
    """One server of the cluster: its name and ports on ``host``."""

    name: str
    client_port: int
    route_port: int


def members(name_prefix: str, client_port: int, route_port: int, size: int) -> list[Member]:
    """``size`` members on consecutive ports from ``client_port`` and ``route_port``."""
    return [
        Member(f"{name_prefix}-{i + 1}", client_port + i, route_port + i) for i in range(size)
    ]


def route_password(auth: NatsAuth) -> str:
    return read_or_create(auth.root / "route-password", lambda: secrets.token_urlsafe(32))


def server_config(
    auth: NatsAuth,
    server_name: str,
    client_port: int,
    cluster: Sequence[Member] = (),
    *,
    host: str = "127.0.0.1",
) -> Path:
    """Write the configuration of the server on ``client_port`` (with the
    cluster block when it is one of ``cluster``'s members) and return its path.
    Makes the users' configuration first when it is missing."""
    if not auth.config_path.exists():
        auth.ensure()
    lines = [f"include {json.dumps(auth.config_path.name)}", f"server_name: {json.dumps(server_name)}"]
    me = next((m for m in cluster if m.client_port == client_port), None)
    if me is not None:
        password = route_password(auth)
        block = {
            "name": CLUSTER_NAME,
            "listen": f"{host}:{me.route_port}",
            "authorization": {"user": ROUTE_USER, "password": password},
            "routes": [
                f"nats-route://{ROUTE_USER}:{password}@{host}:{m.route_port}"
                for m in cluster
                if m != me
            ],
        }
        lines.append(f"cluster: {json.dumps(block, indent=2)}")
    path = auth.root / f"server-{client_port}.conf"
    write_private(path, "\n".join(lines) + "\n")
    return path


def member_config(auth: NatsAuth, me: Member, cluster: Sequence[Member]) -> Path:
    """The configuration of the cluster member ``me``."""
    return server_config(auth, me.name, me.client_port, cluster)
