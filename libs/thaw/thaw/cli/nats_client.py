"""`thaw nats-client create|list|revoke`: NATS credentials for invoke clients
in other languages, which may publish invokes for the apps they were granted
and read the results of their own calls, nothing else
(``thaw_core.permissions.client_grants``)."""

from __future__ import annotations

from pathlib import Path

import click

from thaw.cli._common import console, escape, expected_errors
from thaw.cli._nats_creds import issue_credential, local_auth, output_option, reloaded


@click.group("nats-client")
def nats_client_group() -> None:
    """NATS credentials for invoke clients in other languages."""


@nats_client_group.command("create")
@click.argument("name")
@click.option("--app", "apps", multiple=True, required=True, help="An app it may call (repeat).")
@output_option("NAME")
@expected_errors
def create(name: str, apps: tuple[str, ...], output: Path | None) -> None:
    """Issue the credential of the invoke client NAME for the apps given."""
    auth, path, cred = issue_credential(name, output, lambda a: a.add_client(name, list(apps)))
    out = console()
    out.print(f"NATS client [bold]{escape(name)}[/bold] for {', '.join(cred.apps)}: {path} (0600)")
    out.print(reloaded(auth))
    out.print(
        "Log in with its nkey seed and inbox prefix; publish invokes on"
        " thaw.invoke.<app>.<function> with call ids that start with"
        f" {cred.call_id_prefix!r}; read results on {cred.results}"
        " (subscribe before publishing). See examples/node/invoke_nats.mjs.",
        soft_wrap=True,
    )


@nats_client_group.command("list")
@expected_errors
def list_clients() -> None:
    """The invoke clients and the apps each may call."""
    out = console()
    clients = local_auth().clients()
    if not clients:
        out.print("no NATS clients")
    for c in clients:
        out.print(f"{escape(c.name)}\t{', '.join(c.apps)}", soft_wrap=True)


@nats_client_group.command("revoke")
@click.argument("name")
@expected_errors
def revoke(name: str) -> None:
    """Revoke the invoke client NAME: its connections are closed."""
    auth = local_auth()
    if not auth.remove_client(name):
        raise click.ClickException(f"no NATS client named {name!r}")
    console().print(f"NATS client {escape(name)} revoked; {reloaded(auth)}")


COMMANDS = [nats_client_group]
