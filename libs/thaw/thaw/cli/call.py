"""`thaw call list | show | cancel`: recent calls, and one call by its id."""

from __future__ import annotations

import click
from thaw_core.api import CallResult

from thaw.cli._call_columns import CALL_COLUMNS
from thaw.cli._common import console, escape, expected_errors
from thaw.cli._listing import json_option, print_json, print_list


@click.group("call")
def call_group() -> None:
    """Calls of functions, by id (fc-...)."""


@call_group.command("list")
@click.option("--app", "-a", "app", default=None, help="Only this app's calls (name or id).")
@click.option("--function", "-f", "function", default=None, help="Only this function's calls.")
@click.option("--limit", "-n", type=click.IntRange(1, 500), default=50, show_default=True)
@json_option
@expected_errors
def list_calls(app: str | None, function: str | None, limit: int, as_json: bool) -> None:
    """Recent calls, newest first: status, duration, container, error."""
    from thaw._sync import background_loop
    from thaw.client import current

    calls = background_loop().run(current().recent_calls(app, function, limit)).calls
    print_list(calls, CALL_COLUMNS, as_json=as_json, empty="no calls")


@call_group.command("show")
@click.argument("call_id")
@json_option
@expected_errors
def show_call(call_id: str, as_json: bool) -> None:
    """A call's status; when it failed, its error and traceback."""
    from thaw._sync import background_loop
    from thaw.client import current

    answer = background_loop().run(current().call_status(call_id, wait_s=0))
    if as_json:
        print_json(answer)
        return
    if not isinstance(answer, CallResult):
        console().print(f"{escape(answer.call_id)} {answer.status}")
        return
    console().print(
        f"{escape(answer.call_id)} {answer.status}, attempts {answer.attempts}"
        + (f", map {escape(answer.map_id)} item {answer.index}" if answer.map_id else "")
    )
    if answer.error:
        console().print(f"[red]{escape(answer.error)}[/red]", soft_wrap=True)
    if answer.traceback:
        console().print(escape(answer.traceback.rstrip()), soft_wrap=True)


@call_group.command("cancel")
@click.argument("call_id")
@click.option("--terminate", is_flag=True, help="Also stop the container running it.")
@expected_errors
def cancel_call(call_id: str, terminate: bool) -> None:
    """Cancel a call that has not finished."""
    from thaw._sync import background_loop
    from thaw.client import current

    answer = background_loop().run(current().cancel(call_id, terminate=terminate))
    console().print(f"{escape(answer.call_id)} {answer.status}")


COMMANDS = [call_group]
