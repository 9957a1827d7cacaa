"""`thaw token create | list | revoke`: scoped API tokens."""

from __future__ import annotations

import re
import time

import click
from thaw_core.api import SCOPES, TokenInfo

from thaw.cli._common import ago, console, escape, expected_errors, fail
from thaw.cli._listing import Column, json_option, print_list

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*$")
_UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def parse_duration(text: str) -> float:
    """``7d``, ``12h``, ``30m``, ``90s``, ``2w``: seconds."""
    m = _DURATION.match(text)
    if m is None:
        fail(f"--expires takes a number and a unit (s, m, h, d, w), e.g. 7d; got {text!r}")
        raise AssertionError  # unreachable: fail() exits
    return float(m.group(1)) * _UNIT_S[m.group(2)]


@click.group("token")
def token_group() -> None:
    """API tokens, each of one scope: admin (everything, tokens too), deploy
    (deploy and stop apps, volumes, secrets), invoke (call functions), read
    (lists and logs)."""


@token_group.command("create")
@click.argument("name")
@click.option(
    "--scope",
    type=click.Choice(SCOPES),
    required=True,
    help="What the token may do: admin, deploy, invoke or read.",
)
@click.option(
    "--app",
    "apps",
    multiple=True,
    help="An invoke token for this app only (repeat for several).",
)
@click.option("--expires", help="Refuse the token after this long: 30m, 12h, 7d, 2w...")
@expected_errors
def create_token(name: str, scope: str, apps: tuple[str, ...], expires: str | None) -> None:
    """Create an API token named NAME; it is shown only this once."""
    from thaw._sync import background_loop
    from thaw.client import current

    if apps and scope != "invoke":
        fail(f"--app limits an invoke token to some apps; a {scope} token covers every app")
    expires_in_s = parse_duration(expires) if expires else None
    token = background_loop().run(
        current().create_token(
            name, scope, apps=list(apps) if apps else None, expires_in_s=expires_in_s
        )
    )
    out = console()
    detail = f"scope {token.scope}" + (f", apps {', '.join(token.apps)}" if token.apps else "")
    if token.expires_at:
        detail += ", expires " + time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(token.expires_at))
    out.print(
        f"token [bold]{escape(token.name)}[/bold] ({escape(token.id)}; {escape(detail)}) "
        "created; it is shown only this once:"
    )
    out.print(token.token, soft_wrap=True, markup=False)
    out.print(f"[dim]export THAW_TOKEN={escape(token.token)}[/dim]", soft_wrap=True)


def _until(t: TokenInfo) -> str:
    if t.expires_at is None:
        return "never"
    return time.strftime("%Y-%m-%d %H:%M", time.gmtime(t.expires_at))


TOKEN_COLUMNS: list[Column[TokenInfo]] = [
    Column("id", lambda t: t.id, whole=True),
    Column("name", lambda t: t.name, whole=True),
    Column("scope", lambda t: t.scope),
    Column("apps", lambda t: ",".join(t.apps) if t.apps else "*"),
    Column("state", lambda t: t.state),
    Column("created", lambda t: ago(t.created_at)),
    Column("expires (UTC)", _until),
]


@token_group.command("list")
@json_option
@expected_errors
def list_tokens(as_json: bool) -> None:
    """List API tokens: ids, names, scopes, expiry; never their values."""
    from thaw._sync import background_loop
    from thaw.client import current

    found = background_loop().run(current().list_tokens())
    print_list(found, TOKEN_COLUMNS, as_json=as_json, empty="no tokens")


@token_group.command("revoke")
@click.argument("token_id")
@expected_errors
def revoke_token(token_id: str) -> None:
    """Revoke the token TOKEN_ID (from `thaw token list`): refused from now on."""
    from thaw._sync import background_loop
    from thaw.client import current

    info = background_loop().run(current().revoke_token(token_id))
    console().print(f"token [bold]{escape(info.name)}[/bold] ({escape(info.id)}) revoked")


COMMANDS = [token_group]
