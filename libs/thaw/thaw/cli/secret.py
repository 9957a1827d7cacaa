"""`thaw secret create | list | delete`."""

from __future__ import annotations

from pathlib import Path

import click
from thaw_core.api import SecretInfo

from thaw.cli._common import ago, console, escape, expected_errors, fail
from thaw.cli._listing import Column, json_option, print_list


@click.group("secret")
def secret_group() -> None:
    """Named secrets: environment variables for functions (Secret.from_name)."""


def _pairs(pairs: tuple[str, ...]) -> dict[str, str]:
    values: dict[str, str] = {}
    for number, pair in enumerate(pairs, 1):
        key, sep, value = pair.partition("=")
        if not sep or not key:
            # The argument is not shown: it may be a value typed without its key.
            missing = "KEY" if sep else "'='"
            fail(f"KEY=VALUE argument {number} has no {missing}")
        values[key] = value
    return values


@secret_group.command("create")
@click.argument("name")
@click.argument("pairs", nargs=-1, metavar="KEY=VALUE...")
@click.option(
    "--from-dotenv",
    "dotenv",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Also take the variables of this .env file (KEY=VALUE arguments win).",
)
@click.option("--force", is_flag=True, help="Replace the secret if it exists.")
@expected_errors
def create_secret(name: str, pairs: tuple[str, ...], dotenv: Path | None, force: bool) -> None:
    """Create secret NAME with the given keys and values."""
    from thaw import secret
    from thaw._sync import background_loop

    values: dict[str, str] = {}
    if dotenv is not None:
        values.update(secret.parse_dotenv(_read(dotenv), str(dotenv)))
    values.update(_pairs(pairs))
    if not values:
        fail("give at least one KEY=VALUE (or --from-dotenv PATH)")
    info = background_loop().run(secret.create(name, values, force=force))
    console().print(
        f"secret [bold]{escape(info.name)}[/bold] stored with keys {escape(', '.join(info.keys))}"
    )


def _read(path: Path) -> str:
    try:
        return path.read_text()
    except OSError as e:
        fail(f"cannot read {path}: {e.strerror}")
        raise  # unreachable: fail() exits


SECRET_COLUMNS: list[Column[SecretInfo]] = [
    Column("name", lambda s: s.name, whole=True),
    Column("keys", lambda s: ",".join(s.keys)),
    Column("created", lambda s: ago(s.created_at)),
    Column("updated", lambda s: ago(s.updated_at)),
]


@secret_group.command("list")
@json_option
@expected_errors
def list_secrets(as_json: bool) -> None:
    """List named secrets: their keys and dates, never their values."""
    from thaw import secret
    from thaw._sync import background_loop

    found = background_loop().run(secret.list_all())
    print_list(
        found,
        SECRET_COLUMNS,
        as_json=as_json,
        empty="no secrets (thaw secret create NAME KEY=VALUE)",
    )


@secret_group.command("delete")
@click.argument("name")
@expected_errors
def delete_secret(name: str) -> None:
    """Delete secret NAME; functions that use it fail to deploy or start after."""
    from thaw import secret
    from thaw._sync import background_loop

    info = background_loop().run(secret.delete(name))
    console().print(f"secret [bold]{escape(info.name)}[/bold] deleted")


COMMANDS = [secret_group]
