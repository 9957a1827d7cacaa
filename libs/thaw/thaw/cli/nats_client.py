"""`thaw nats-client create|list|revoke`: NATS credentials for invoke clients
in other languages, which may publish invokes for the apps they were granted
and read the results of their own calls, nothing else
(``thaw_core.permissions.client_grants``)."""

from __future__ import annotations

from pathlib import Path

import click
import msgspec
from thaw_core.config import Settings
from thaw_core.nats_auth import NatsAuth
from thaw_core.private_file import write_private

from thaw.cli._common import console, escape, expected_errors


def _auth() -> NatsAuth:
    auth = NatsAuth(Settings.from_env().nats_auth_dir)
    if not auth.config_path.exists():
        raise click.ClickException(
            f"no NATS credentials in {auth.root}: start the stack once (`thaw up`)"
            " or point THAW_NATS_AUTH_DIR at them"
        )
    return auth


def _reloaded(auth: NatsAuth) -> str:
    n = auth.reload_servers()
    return (
        f"nats-server reloaded ({n})"
        if n
        else "no nats-server of this configuration is running; it applies at the next start"
    )


@click.group("nats-client")
def nats_client_group() -> None:
    """NATS credentials for invoke clients in other languages."""


@nats_client_group.command("create")
@click.argument("name")
@click.option("--app", "apps", multiple=True, required=True, help="An app it may call (repeat).")
@click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Where to write the credential (default ./NAME.nats.json).",
)
@expected_errors
def create(name: str, apps: tuple[str, ...], output: Path | None) -> None:
    """Issue the credential of the invoke client NAME for the apps given."""
    auth = _auth()
    path = output or Path(f"{name}.nats.json")
    if path.exists():
        raise click.ClickException(f"{path} exists; not overwriting a credential")
    try:
        cred = auth.add_client(name, list(apps))
    except ValueError as e:
        raise click.ClickException(str(e)) from e
    write_private(path, msgspec.json.encode(cred).decode())
    out = console()
    out.print(f"NATS client [bold]{escape(name)}[/bold] for {', '.join(cred.apps)}: {path} (0600)")
    out.print(_reloaded(auth))
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
    clients = _auth().clients()
    if not clients:
        out.print("no NATS clients")
    for c in clients:
        out.print(f"{escape(c.name)}\t{', '.join(c.apps)}", soft_wrap=True)


@nats_client_group.command("revoke")
@click.argument("name")
@expected_errors
def revoke(name: str) -> None:
    """Revoke the invoke client NAME: its connections are closed."""
    auth = _auth()
    if not auth.remove_client(name):
        raise click.ClickException(f"no NATS client named {name!r}")
    console().print(f"NATS client {escape(name)} revoked; {_reloaded(auth)}")


COMMANDS = [nats_client_group]
