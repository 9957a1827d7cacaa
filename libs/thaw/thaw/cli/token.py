"""`thaw token create NAME`."""

from __future__ import annotations

import click

from thaw.cli._common import console, escape, expected_errors


@click.group("token")
def token_group() -> None:
    """API tokens."""


@token_group.command("create")
@click.argument("name")
@expected_errors
def create_token(name: str) -> None:
    """Create an API token named NAME; it is shown once."""
    from thaw._sync import background_loop
    from thaw.client import current

    token = background_loop().run(current().create_token(name))
    out = console()
    out.print(f"token [bold]{escape(token.name)}[/bold] created; it is shown only this once:")
    out.print(token.token, soft_wrap=True, markup=False)
    out.print(f"[dim]export THAW_TOKEN={escape(token.token)}[/dim]", soft_wrap=True)


COMMANDS = [token_group]
