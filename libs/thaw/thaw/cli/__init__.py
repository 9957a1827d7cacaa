"""The `thaw` command line.

Each group of commands lives in its own module of this package and lists its
click commands in a module-level ``COMMANDS``; every public module (name not
starting with ``_``) is found and registered here, so adding a command means
adding a module, not editing this file.
"""

from __future__ import annotations

import importlib
import pkgutil
import traceback

import click


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="thaw", prog_name="thaw")
def main() -> None:
    """thaw: serverless Python on your own machines."""


def _broken(module: str, error: str) -> click.Command:
    """Stands in for a command module that fails to import: the failure is
    shown when it is used, and the other commands (`thaw up`...) still work."""

    @click.command(
        name=module,
        help=f"(unavailable: thaw.cli.{module} failed to import)",
        context_settings={"ignore_unknown_options": True, "allow_extra_args": True},
    )
    def broken() -> None:
        raise click.ClickException(f"thaw.cli.{module} failed to import:\n{error}")

    return broken


def _register() -> None:
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        if info.name.startswith("_"):
            continue
        try:
            module = importlib.import_module(f"{__name__}.{info.name}")
        except Exception:  # noqa: BLE001 - reported when the command is used
            main.add_command(_broken(info.name, traceback.format_exc(limit=-3)))
            continue
        for cmd in getattr(module, "COMMANDS", ()):
            main.add_command(cmd)


_register()

__all__ = ["main"]
