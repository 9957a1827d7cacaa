"""`thaw volume create | list | ls | put | get | rm | cp | delete`."""

from __future__ import annotations

import contextlib
import posixpath
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import click
import msgspec
from rich.table import Table

from thaw.cli._common import ago, console, escape, expected_errors, fail

# Transfers larger than this, or of more files, show a progress bar (on a
# terminal): hashing and committing many small files takes a while too.
PROGRESS_FROM_BYTES = 8 << 20
PROGRESS_FROM_FILES = 100
_UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}


@click.group("volume")
def volume_group() -> None:
    """Volumes: named directories shared by functions and local code."""


def _run(coro: Any) -> Any:
    from thaw._sync import background_loop

    return background_loop().run(coro)


def _size(text: str) -> int:
    raw = text.strip().upper().removesuffix("IB").removesuffix("B")
    unit = raw[-1:] if raw[-1:] in _UNITS else ""
    try:
        return int(float(raw[: len(raw) - len(unit)]) * _UNITS[unit])
    except ValueError:
        fail(f"--max-size {text!r} is not a size (like 500M or 10G)")
        raise


def _human(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024  # type: ignore[assignment]
    return str(n)


class _Shown:
    """What a transfer reports as it goes: bytes moved, and the step under way."""

    def __init__(self, progress: Any = None, task: Any = None, label: str = "") -> None:
        self._progress, self._task, self._label = progress, task, label

    def bytes(self, n: int) -> None:
        if self._progress is not None:
            self._progress.update(self._task, advance=n)

    def phase(self, text: str) -> None:
        if self._progress is not None:
            self._progress.update(self._task, description=f"{self._label}: {text}")


@contextlib.contextmanager
def _bar(label: str, total: int, files: int = 1) -> Iterator[_Shown]:
    """A progress bar for large transfers (or of many files) on a terminal,
    nothing otherwise."""
    big = total >= PROGRESS_FROM_BYTES or files >= PROGRESS_FROM_FILES
    if not big or not sys.stdout.isatty():
        yield _Shown()
        return
    from rich.progress import (
        BarColumn,
        DownloadColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
        TransferSpeedColumn,
    )

    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
        transient=True,
    ) as progress:
        yield _Shown(progress, progress.add_task(label, total=total), label)


@volume_group.command("create")
@click.argument("name")
@click.option("--max-size", help="Size limit, like 500M or 10G (default: the platform's).")
@expected_errors
def create_volume(name: str, max_size: str | None) -> None:
    """Create volume NAME."""
    from thaw import _volume_http as http

    limit = _size(max_size) if max_size else None
    info = _run(http.create(name, exist_ok=False, max_bytes=limit))
    console().print(f"volume [bold]{escape(info.name)}[/bold] created")


@volume_group.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print the volumes as JSON.")
@expected_errors
def list_volumes(as_json: bool) -> None:
    """List volumes: size, files, version."""
    from thaw import _volume_http as http

    found = _run(http.list_all())
    if as_json:
        click.echo(msgspec.json.encode(found).decode())
        return
    if not found:
        console().print("[dim]no volumes (thaw volume create NAME)[/dim]")
        return
    table = Table(box=None, pad_edge=False)
    for column in ("name", "size", "files", "version", "updated"):
        table.add_column(column)
    for v in found:
        table.add_row(
            escape(v.name), _human(v.size_bytes), str(v.files), str(v.version), ago(v.updated_at)
        )
    console().print(table)


@volume_group.command("ls")
@click.argument("name")
@click.argument("path", default="/")
@click.option("-r", "--recursive", is_flag=True, help="Everything under PATH.")
@click.option("--json", "as_json", is_flag=True, help="Print the entries as JSON.")
@expected_errors
def ls(name: str, path: str, recursive: bool, as_json: bool) -> None:
    """List the entries of PATH in volume NAME."""
    import thaw

    entries = thaw.Volume.from_name(name).listdir(path, recursive=recursive)
    if as_json:
        rows = [
            {"path": e.path, "type": e.type.name.lower(), "mtime": e.mtime, "size": e.size}
            for e in entries
        ]
        click.echo(msgspec.json.encode(rows).decode())
        return
    table = Table(box=None, pad_edge=False)
    for column in ("path", "type", "size", "modified"):
        table.add_column(column)
    for e in entries:
        is_dir = e.type.name == "DIRECTORY"
        table.add_row(
            escape(e.path + ("/" if is_dir else "")),
            "dir" if is_dir else "file",
            "" if is_dir else _human(e.size),
            ago(e.mtime),
        )
    console().print(table)


@volume_group.command("put")
@click.argument("name")
@click.argument("local", type=click.Path(exists=True, path_type=Path))
@click.argument("remote", default="/")
@click.option("--force", is_flag=True, help="Replace files that exist in the volume.")
@expected_errors
def put(name: str, local: Path, remote: str, force: bool) -> None:
    """Upload LOCAL (a file or a directory) to REMOTE in volume NAME.

    A file goes into REMOTE when REMOTE ends with '/', else becomes REMOTE."""
    import thaw
    from thaw.volume import VolumeUploadBatch

    vol = thaw.Volume.from_name(name)
    batch = VolumeUploadBatch(vol, force=force)
    if local.is_dir():
        batch.put_directory(local, remote)
    else:
        target = posixpath.join(remote, local.name) if remote.endswith("/") else remote
        batch.put_file(local, target)
    total, files = batch.total_bytes, batch.file_count
    with _bar(f"put {local.name}", total, files) as shown, batch:
        batch.on_bytes, batch.on_phase = shown.bytes, shown.phase
    console().print(
        f"uploaded {_human(total)} ({files:,} file(s)) to volume [bold]{escape(name)}[/bold]"
    )


@volume_group.command("get")
@click.argument("name")
@click.argument("remote")
@click.argument("local", default=".", type=click.Path(path_type=Path))
@click.option("--force", is_flag=True, help="Overwrite local files that exist.")
@expected_errors
def get(name: str, remote: str, local: Path, force: bool) -> None:
    """Download REMOTE (a file or a directory) from volume NAME to LOCAL ('-': stdout)."""
    import thaw
    from thaw import _volume_http as http

    vol = thaw.Volume.from_name(name)
    entries = [e for e in _run(http.entries(name, remote, True)).entries if e.kind == "file"]
    if str(local) == "-":
        for piece in vol.read_file(remote):
            sys.stdout.buffer.write(piece)
        return
    base = remote.strip("/")
    one_file = len(entries) == 1 and entries[0].path == base
    plan: list[tuple[Any, Path]] = []
    for e in entries:
        if one_file:
            dest = local / posixpath.basename(e.path) if local.is_dir() else local
        else:
            dest = local / (e.path[len(base) + 1 :] if base else e.path)
        if dest.exists() and not force:
            fail(f"{dest} exists; --force overwrites it")
        plan.append((e, dest))
    total = sum(e.size for e, _ in plan)
    with _bar(f"get {posixpath.basename(base) or name}", total, len(plan)) as shown:
        _run(http.download_many(plan, shown.bytes, shown.phase))
    console().print(f"downloaded {_human(total)} ({len(plan)} file(s)) to {escape(str(local))}")


@volume_group.command("rm")
@click.argument("name")
@click.argument("path")
@click.option("-r", "--recursive", is_flag=True, help="Remove a directory with everything in it.")
@expected_errors
def rm(name: str, path: str, recursive: bool) -> None:
    """Remove PATH from volume NAME."""
    import thaw

    thaw.Volume.from_name(name).remove_file(path, recursive=recursive)
    console().print(f"removed {escape(path)} from volume [bold]{escape(name)}[/bold]")


@volume_group.command("cp")
@click.argument("name")
@click.argument("paths", nargs=-1, required=True, metavar="SRC... DST")
@click.option("-r", "--recursive", is_flag=True, help="Copy directories with what is in them.")
@expected_errors
def cp(name: str, paths: tuple[str, ...], recursive: bool) -> None:
    """Copy SRC... to DST within volume NAME (the copies share content)."""
    import thaw

    if len(paths) < 2:
        fail("give at least one SRC and a DST")
    thaw.Volume.from_name(name).copy_files(list(paths[:-1]), paths[-1], recursive=recursive)
    console().print(f"copied to {escape(paths[-1])} in volume [bold]{escape(name)}[/bold]")


@volume_group.command("delete")
@click.argument("name")
@click.option("-y", "--yes", is_flag=True, help="Do not ask for confirmation.")
@expected_errors
def delete_volume(name: str, yes: bool) -> None:
    """Delete volume NAME and everything in it."""
    import thaw

    if not yes and not click.confirm(f"delete volume {name!r} and everything in it?"):
        fail("not deleted")
    thaw.Volume.delete(name)
    console().print(f"volume [bold]{escape(name)}[/bold] deleted")


COMMANDS = [volume_group]
