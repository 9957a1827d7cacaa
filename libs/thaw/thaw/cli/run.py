"""`thaw run app.py[::entry] [--arg value ...]`: deploy the app for one run,
call its entrypoint here (or one function remotely), stop the app after it,
Ctrl-C and failures included."""

from __future__ import annotations

import contextlib
import inspect
import signal
import threading
import typing
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import click

from thaw.app import App, LocalEntrypoint
from thaw.cli._common import console, expected_errors, fail
from thaw.cls import Cls
from thaw.exception import InvalidError
from thaw.functions import Function

_TYPES: dict[Any, click.ParamType] = {int: click.INT, float: click.FLOAT, str: click.STRING}


@dataclass
class Target:
    app: App
    name: str
    # What runs, given the parsed flags.
    call: Callable[..., Any]
    # Whose signature gives the flags.
    signature_of: Callable[..., Any]
    remote: bool


def _options(fn: Callable[..., Any]) -> list[click.Option]:
    """One ``--name value`` flag per parameter (``--flag/--no-flag`` for a bool)."""
    try:
        hints = typing.get_type_hints(fn)
    except (
        NameError,
        TypeError,
        AttributeError,
    ):  # an annotation that does not resolve: flags are strings
        hints = {}
    options = []
    for p in inspect.signature(fn).parameters.values():
        if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
            raise InvalidError(
                f"{fn.__name__}: *args/**kwargs cannot be given from the command line"
            )
        required = p.default is p.empty
        kind = hints.get(p.name, type(p.default) if not required else str)
        flags = list(dict.fromkeys([f"--{p.name.replace('_', '-')}", f"--{p.name}"]))
        if kind is bool:
            negations = [f.replace("--", "--no-", 1) for f in flags]
            decls = [f"{f}/{n}" for f, n in zip(flags, negations)]
            options.append(
                click.Option(
                    decls + [p.name], default=False if required else p.default, show_default=True
                )
            )
        else:
            options.append(
                click.Option(
                    flags + [p.name],
                    type=_TYPES.get(kind, click.STRING),
                    required=required,
                    default=None if required else p.default,
                    show_default=not required,
                )
            )
    return options


def parse_flags(target: Target, args: list[str]) -> dict[str, Any] | None:
    """The flags as keyword arguments; None when only --help was asked."""
    command = click.Command(
        target.name, params=_options(target.signature_of), callback=lambda **kw: kw
    )
    parsed = command.main(args, prog_name=f"thaw run ...::{target.name}", standalone_mode=False)
    return parsed if isinstance(parsed, dict) else None


def _print_result(value: Any) -> None:
    if value is not None:
        console().print(value)


def _remote(function: Function) -> Callable[..., None]:
    def call(**kwargs: Any) -> None:
        if function.spec.is_generator:
            for item in function.remote_gen(**kwargs):
                _print_result(item)
        else:
            _print_result(function.remote(**kwargs))

    return call


def _method(cls: Cls, method: str) -> Target:
    if cls.user_cls is None or cls.app is None or method not in cls.spec.methods:
        raise InvalidError(
            f"{cls.spec.name} has no @thaw.method() {method!r}; its methods: {', '.join(cls.spec.methods)}"
        )

    def call(**kwargs: Any) -> None:
        _print_result(getattr(cls(), method).remote(**kwargs))

    return Target(
        cls.app,
        f"{cls.spec.name}.{method}",
        call,
        _without_self(getattr(cls.user_cls, method)),
        True,
    )


def _without_self(f: Callable[..., Any]) -> Callable[..., Any]:
    """A stand-in whose signature is ``f``'s without its first parameter."""
    signature = inspect.signature(f)
    params = list(signature.parameters.values())[1:]

    def stand_in(*args: Any, **kwargs: Any) -> None:
        pass

    stand_in.__signature__ = signature.replace(parameters=params)  # type: ignore[attr-defined]
    stand_in.__name__ = f.__name__
    stand_in.__annotations__ = {k: v for k, v in typing.get_type_hints(f).items() if k != "self"}
    return stand_in


def find_target(apps: dict[str, App], name: str | None, source: str) -> Target:
    entrypoints = {n: e for app in apps.values() for n, e in app.registered_entrypoints.items()}
    functions = {n: f for app in apps.values() for n, f in app.registered_functions.items()}
    classes = {n: c for app in apps.values() for n, c in app.registered_classes.items()}

    def entry(e: LocalEntrypoint) -> Target:
        return Target(e.app, e.name, e.raw_f, e.raw_f, remote=False)

    def function(f: Function) -> Target:
        assert f.app is not None and f.raw_f is not None
        return Target(f.app, f.spec.name, _remote(f), f.raw_f, remote=True)

    if name is not None:
        if name in entrypoints:
            return entry(entrypoints[name])
        if name in functions:
            return function(functions[name])
        cls_name, _, method = name.partition(".")
        if method and cls_name in classes:
            return _method(classes[cls_name], method)
        known = [
            *entrypoints,
            *functions,
            *(f"{c}.{m}" for c, cls in classes.items() for m in cls.spec.methods),
        ]
        raise InvalidError(
            f"{source} has no entrypoint or function {name!r}; it has: {', '.join(known) or 'none'}"
        )
    if len(entrypoints) == 1:
        return entry(next(iter(entrypoints.values())))
    if len(entrypoints) > 1:
        raise InvalidError(
            f"{source} has several local entrypoints; pick one: {source}::{' | '.join(entrypoints)}"
        )
    if len(functions) == 1 and not classes:
        return function(next(iter(functions.values())))
    known = [*functions, *classes]
    raise InvalidError(
        f"{source} has no @app.local_entrypoint(); name what to run: {source}::NAME "
        f"(one of: {', '.join(known) or 'none'})"
    )


@click.command(context_settings={"ignore_unknown_options": True, "allow_interspersed_args": False})
@click.argument("ref", metavar="APP[::ENTRY]")
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
@click.option("--detach", is_flag=True, help="Leave the app running after the entrypoint returns.")
@click.option("-q", "--quiet", is_flag=True, help="Do not print the containers' logs.")
@expected_errors
def run(ref: str, args: tuple[str, ...], detach: bool, quiet: bool) -> None:
    """Run an app's entrypoint against a deploy of it made for this run.

    ENTRY is a local entrypoint, a function or Class.method (default: the one
    local entrypoint). Flags after APP are its arguments: --name value."""
    from thaw.app import find_apps
    from thaw.deploy import import_source

    source, _, name = ref.partition("::")
    apps = find_apps(import_source(source))
    if not apps:
        fail(f"{source} defines no thaw.App")
    target = find_target(apps, name or None, source)
    kwargs = parse_flags(target, list(args))
    if kwargs is None:
        return
    with _sigterm_exits(), target.app.run(detach=detach, show_logs=not quiet):
        console().print(
            f"[dim]running {target.name} in ephemeral app {target.app.running_name}[/dim]"
        )
        _finish(target.call(**kwargs))


def _finish(returned: Any) -> None:
    """An ``async def`` entrypoint gives a coroutine: run it to its end here."""
    if inspect.isawaitable(returned):
        import asyncio

        async def wait() -> Any:
            return await returned

        asyncio.run(wait())


@contextlib.contextmanager
def _sigterm_exits() -> Iterator[None]:
    """SIGTERM (a supervisor, `timeout`) unwinds like Ctrl-C does, so the app is still stopped."""

    def exit_now(signum: int, frame: object) -> None:
        raise SystemExit(128 + signum)

    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, exit_now)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


COMMANDS = [run]
