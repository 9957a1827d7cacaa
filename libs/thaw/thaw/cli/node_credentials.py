"""`thaw node credentials create|list|revoke`: the NATS user of a node's agent,
one per node, so a node reads only its own replies and commands and sends only
its own heartbeats (``thaw_core.permissions.node_grants``). The embedded
stack issues its own node's; a remote node joins with one of these."""

from __future__ import annotations

from pathlib import Path

import click

from thaw.cli._common import console, escape, expected_errors
from thaw.cli._nats_creds import issue_credential, local_auth, output_option, reloaded


@click.group("credentials")
def credentials_group() -> None:
    """NATS credentials of node agents (one per node)."""


@credentials_group.command("create")
@click.argument("node_id")
@output_option("NODE_ID")
@expected_errors
def create(node_id: str, output: Path | None) -> None:
    """Issue the credential of the agent of NODE_ID (its THAW_NODE_ID)."""
    auth, path, _ = issue_credential(node_id, output, lambda a: a.add_node(node_id))
    out = console()
    out.print(f"node [bold]{escape(node_id)}[/bold]: {path} (0600)")
    out.print(reloaded(auth))
    out.print(
        "Copy it to the node and start its agent with THAW_NODE_ID="
        f"{escape(node_id)} and THAW_NATS_CREDS=<the file>.",
        soft_wrap=True,
    )


@credentials_group.command("list")
@expected_errors
def list_nodes() -> None:
    """The nodes that have a NATS credential."""
    out = console()
    nodes = local_auth().nodes()
    if not nodes:
        out.print("no node credentials")
    for n in nodes:
        out.print(escape(n.node_id), soft_wrap=True)


@credentials_group.command("revoke")
@click.argument("node_id")
@expected_errors
def revoke(node_id: str) -> None:
    """Revoke the credential of NODE_ID: its agent is disconnected."""
    auth = local_auth()
    try:
        removed = auth.remove_node(node_id)
    except ValueError as e:
        raise click.ClickException(str(e)) from e
    if not removed:
        raise click.ClickException(f"node {node_id!r} has no NATS credential")
    console().print(f"node {escape(node_id)}'s credential revoked; {reloaded(auth)}")
