"""The `thaw` command line. Each group of commands lives in its own module of
this package and is added to ``main`` here."""

from __future__ import annotations

import click


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="thaw", prog_name="thaw")
def main() -> None:
    """thaw: serverless Python on your own machines."""


def _register() -> None:
    from thaw.cli import stack

    for cmd in stack.COMMANDS:
        main.add_command(cmd)


_register()

__all__ = ["main"]
