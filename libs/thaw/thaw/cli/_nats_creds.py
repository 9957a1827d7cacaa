"""What `thaw nats-client` and `thaw node credentials` share: the local NATS
auth directory, issuing a credential into a 0600 file, and the reload note."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import click
import msgspec
from thaw_core.config import Settings
from thaw_core.nats_auth import NatsAuth
from thaw_core.private_file import write_private

C = TypeVar("C", bound=msgspec.Struct)


def local_auth() -> NatsAuth:
    auth = NatsAuth(Settings.from_env().nats_auth_dir)
    if not auth.config_path.exists():
        raise click.ClickException(
            f"no NATS credentials in {auth.root}: start the stack once (`thaw up`)"
            " or point THAW_NATS_AUTH_DIR at them"
        )
    return auth


def reloaded(auth: NatsAuth) -> str:
    n = auth.reload_servers()
    return (
        f"nats-server reloaded ({n})"
        if n
        else "no nats-server of this configuration is running; it applies at the next start"
    )


def output_option(default_hint: str) -> Callable[[Callable[..., None]], Callable[..., None]]:
    """`-o/--output`: where a credential is written."""
    return click.option(
        "-o",
        "--output",
        type=click.Path(dir_okay=False, path_type=Path),
        help=f"Where to write the credential (default ./{default_hint}.nats.json).",
    )


def issue_credential(
    name: str, output: Path | None, issue: Callable[[NatsAuth], C]
) -> tuple[NatsAuth, Path, C]:
    """Issues a credential with `issue` and writes it 0600 to `output` (default
    ./NAME.nats.json). An existing file is refused before anything is issued:
    overwriting it would lose a credential that may still be in use."""
    auth = local_auth()
    path = output or Path(f"{name}.nats.json")
    if path.exists():
        raise click.ClickException(f"{path} exists; not overwriting a credential")
    try:
        cred = issue(auth)
    except ValueError as e:
        raise click.ClickException(str(e)) from e
    write_private(path, msgspec.json.encode(cred).decode())
    return auth, path, cred
