"""`thaw serve app.py`: the app's web endpoints live while the command runs.

Each deploy is ephemeral and made by a fresh child process (``--once``), so
that an edited module is imported anew rather than reloaded in place. The
parent watches the app's directory (watchfiles) and deploys again whenever a
Python file under it changes, printing the URLs each time; Ctrl-C (or
SIGTERM, or SIGHUP) stops the app.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import click

from thaw.cli._common import console, expected_errors, fail

# The child's line naming the app it deployed, for the parent to stop.
_SERVING = "serving app "


# How often the watcher wakes with nothing changed (the first wake starts the first deploy).
WATCH_TICK_MS = 100


def _deploy_once(app_ref: str) -> None:
    from thaw._sync import background_loop
    from thaw.app import find_apps
    from thaw.cli.deploy import print_deployed
    from thaw.deploy import app_bundle, deploy_bundle, import_source, run_name
    from thaw.exception import AlreadyExistsError

    source, _, var = app_ref.partition("::")
    apps = find_apps(import_source(source))
    if var:
        apps = {var: apps[var]} if var in apps else {}
    if len(apps) != 1:
        fail(f"{source} must define one thaw.App (or name one with {source}::VAR)")
    (app,) = apps.values()
    name = run_name(app)
    bundle = app_bundle(app)
    try:
        response = background_loop().run(deploy_bundle(name, app, bundle, ephemeral=True))
    except AlreadyExistsError:
        # A deployed app holds the name: serve under one of our own, leaving it alone.
        name = f"{name[:50]}-serve-{secrets.token_hex(3)}"
        response = background_loop().run(deploy_bundle(name, app, bundle, ephemeral=True))
    print_deployed(response, app.specs(), files=len(bundle.files), sha256=bundle.sha256)
    print(_SERVING + response.app, flush=True)


def _deploy(app_ref: str) -> str | None:
    """Deploy in a child; the app's name, or None when the deploy failed."""
    child = subprocess.run(
        [sys.executable, "-m", "thaw.cli", "serve", "--once", app_ref],
        check=False,
        stdout=subprocess.PIPE,
        text=True,
    )
    name = None
    for line in child.stdout.splitlines():
        if line.startswith(_SERVING):
            name = line[len(_SERVING) :]
        else:
            print(line, flush=True)
    return name if child.returncode == 0 else None


def _stop(name: str) -> None:
    from thaw._sync import background_loop
    from thaw.client import current

    background_loop().run(current().stop_app(name))
    console().print(f"stopped {name}")


@click.command()
@click.argument("app_ref", metavar="APP")
@click.option("--once", is_flag=True, hidden=True, help="Deploy once and exit (used by serve).")
@expected_errors
def serve(app_ref: str, once: bool) -> None:
    """Serve APP's web endpoints while this runs, deploying again on every edit.

    APP is a file (app.py, or app.py::VAR). Ctrl-C stops the app."""
    if once:
        _deploy_once(app_ref)
        return
    path = Path(app_ref.partition("::")[0]).expanduser()
    if not path.is_file():
        fail(f"no such file: {path}")
    watched = path.resolve().parent
    names: set[str] = set()
    try:
        with _interrupted_by_signals():
            _deploy_on_every_edit(app_ref, watched, names)
    except KeyboardInterrupt:
        pass
    finally:
        for name in names:
            _stop(name)


def _deploy_on_every_edit(app_ref: str, watched: Path, names: set[str]) -> None:
    """Deploy, then again on each change under ``watched``, until interrupted."""
    import watchfiles

    deployed = False
    # The first deploy waits for the watcher's first tick: watching by then,
    # it keeps what is saved during that deploy for the next turn (a watcher
    # started after it missed an edit made meanwhile).
    for changes in watchfiles.watch(
        watched,
        watch_filter=watchfiles.PythonFilter(),
        raise_interrupt=True,
        rust_timeout=WATCH_TICK_MS,
        yield_on_timeout=True,
    ):
        if deployed and not changes:
            continue
        if deployed:
            changed = ", ".join(sorted({os.path.basename(p) for _, p in changes}))
            console().print(f"[dim]changed: {changed}[/dim]")
        if (name := _deploy(app_ref)) is not None:
            names.add(name)
        if not deployed:
            deployed = True
            console().print(f"[dim]watching {watched} for changes; Ctrl-C stops[/dim]")


# Each ends serve as Ctrl-C does, the app stopped: SIGTERM from a supervisor,
# SIGHUP from a closed terminal. SIGINT too, which a shell's background job
# inherits ignored (Python then installs no handler for it).
_STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


@contextlib.contextmanager
def _interrupted_by_signals() -> Iterator[None]:
    def interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt(signal.Signals(signum).name)

    if threading.current_thread() is not threading.main_thread():
        yield  # signals reach the main thread only
        return
    before = {sig: signal.signal(sig, interrupt) for sig in _STOP_SIGNALS}
    try:
        yield
    finally:
        for sig, handler in before.items():
            signal.signal(sig, handler)


COMMANDS = [serve]
