"""`thaw deploy app.py`: deploy the apps a file defines."""

from __future__ import annotations

import click
from rich.table import Table
from thaw_core.api import DeployResponse
from thaw_core.schedules import describe
from thaw_core.schema import FunctionSpec

from thaw.cli._common import console, escape, expected_errors, fail
from thaw.snapshot_progress import DEFAULT_TIMEOUT_S


def _resources(spec: FunctionSpec) -> str:
    r = spec.resources
    parts = [f"{r.cpu:g} cpu", f"{r.memory_mb} MiB"]
    if r.gpu:
        parts.append(f"gpu {r.gpu}")
    return ", ".join(parts)


def _scaling(spec: FunctionSpec) -> str:
    a = spec.autoscale
    top = "∞" if a.max_containers is None else str(a.max_containers)
    text = f"{a.min_containers}..{top}"
    if spec.max_inputs > 1:
        text += f" ×{spec.max_inputs} inputs"
    return text


def _extras(spec: FunctionSpec, url: str | None) -> str:
    notes = []
    if spec.kind == "class":
        notes.append("methods: " + ", ".join(spec.methods))
    if spec.enable_memory_snapshot:
        notes.append("snapshot")
    if spec.schedule:
        notes.append(describe(spec.schedule))
    if url:
        notes.append(url)
    return "; ".join(notes)


def print_deployed(
    response: DeployResponse, specs: list[FunctionSpec], *, files: int, sha256: str
) -> None:
    out = console()
    out.print(
        f"[bold green]✓[/bold green] deployed [bold]{escape(response.app)}[/bold] "
        f"version {response.version}  [dim](bundle {sha256[:12]}, {files} files)[/dim]"
    )
    table = Table(box=None, pad_edge=False, show_edge=False)
    for column in ("function", "kind", "resources", "containers", ""):
        table.add_column(column, style="dim" if column == "" else None)
    for spec in specs:
        table.add_row(
            spec.name,
            spec.kind,
            _resources(spec),
            _scaling(spec),
            _extras(spec, response.web_urls.get(spec.name)),
        )
    out.print(table)
    for name, url in sorted(response.web_urls.items()):
        out.print(f"[bold]web[/bold] {escape(name)}: {escape(url)}")


@click.command()
@click.argument("app_ref", metavar="APP")
@click.option("--name", help="Deploy under this name instead of the App's own.")
@click.option(
    "--snapshot-timeout",
    type=click.FloatRange(min=0),
    default=DEFAULT_TIMEOUT_S,
    show_default=True,
    help="Seconds to show the memory snapshots the deploy makes being taken (0: don't wait).",
)
@expected_errors
def deploy(app_ref: str, name: str | None, snapshot_timeout: float) -> None:
    """Deploy the apps APP defines.

    APP is a file (app.py, or app.py::VAR for one of its apps) or a module (pkg.app)."""
    from thaw._sync import background_loop
    from thaw.app import find_apps
    from thaw.client import current
    from thaw.deploy import app_bundle, deploy_bundle, import_source
    from thaw.snapshot_progress import follow

    source, _, var = app_ref.partition("::")
    apps = find_apps(import_source(source))
    if var:
        if var not in apps:
            fail(f"{source} has no thaw.App named {var!r}; it has: {', '.join(apps) or 'none'}")
        apps = {var: apps[var]}
    if not apps:
        fail(f"{source} defines no thaw.App")
    if name and len(apps) > 1:
        fail(f"--name needs one app, and {source} has {len(apps)}: pick one with {source}::VAR")
    for app in apps.values():
        target = name or app.name
        if target is None:
            fail(f"{source}: the App has no name; give it one (thaw.App('name')) or pass --name")
        bundle = app_bundle(app)
        response = background_loop().run(deploy_bundle(target, app, bundle, ephemeral=False))
        print_deployed(response, app.specs(), files=len(bundle.files), sha256=bundle.sha256)
        snapshotted = [s.name for s in app.specs() if s.enable_memory_snapshot]
        if snapshotted and snapshot_timeout > 0:
            background_loop().run(
                follow(current(), response.app, response.version, snapshotted,
                       timeout_s=snapshot_timeout)
            )  # fmt: skip


COMMANDS = [deploy]
