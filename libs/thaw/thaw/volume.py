"""``thaw.Volume``: a named, versioned directory shared by functions and local code.

From local code (and ``@app.local_entrypoint``) every method goes through the
gateway: ``listdir``, ``read_file``, ``batch_upload``, ``remove_file``,
``copy_files``, ``reload`` and ``Volume.delete``, each with an ``.aio`` form
for event loops (``await vol.listdir.aio("/")``, ``async for piece in
vol.read_file.aio(path)``, ``async with vol.batch_upload() as batch``). A
function mounts a volume
with ``volumes={"/data": vol}``; the deploy makes it first when it was named
with ``create_if_missing=True`` and fails, naming it, when it does not exist.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import os
import posixpath
import uuid
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import IO, Literal, Self

from thaw_core.schema import VolumeEntry, VolumeInfo, VolumeMount, check_name
from thaw_core.volumes import VolumePathError, volume_path

from thaw import _volume_http as http
from thaw._env import is_local
from thaw._sync import aio_function, aio_iterator, aio_method, background_loop
from thaw.exception import InvalidError, NotFoundError


class FileEntryType(enum.IntEnum):
    UNSPECIFIED = 0
    FILE = 1
    DIRECTORY = 2
    SYMLINK = 3


@dataclass(frozen=True)
class FileEntry:
    """One entry of ``listdir``: its path in the volume, type, mtime (seconds) and size."""

    path: str
    type: FileEntryType
    mtime: int
    size: int


def _entry(e: VolumeEntry) -> FileEntry:
    kind = FileEntryType.FILE if e.kind == "file" else FileEntryType.DIRECTORY
    return FileEntry(path=e.path, type=kind, mtime=int(e.mtime), size=e.size)


def _path(path: str | os.PathLike[str]) -> str:
    try:
        return volume_path(os.fspath(path))
    except VolumePathError as e:
        raise InvalidError(str(e)) from None


class Volume:
    def __init__(self, name: str, *, create_if_missing: bool = False) -> None:
        try:
            self.name = check_name("volume", name)
        except ValueError as e:
            raise InvalidError(str(e)) from None
        self.create_if_missing = create_if_missing
        self._info: VolumeInfo | None = None

    @classmethod
    def from_name(
        cls, name: str, *, create_if_missing: bool = False, environment_name: str | None = None
    ) -> Volume:
        if environment_name is not None:
            raise InvalidError(
                "Volume.from_name(environment_name=...): thaw has one environment; leave it out"
            )
        return cls(name, create_if_missing=create_if_missing)

    @classmethod
    def ephemeral(cls) -> _Ephemeral:
        """A volume that lives for one ``with`` (or ``async with``) block,
        deleted at its end."""
        return _Ephemeral(cls(f"ephemeral-{uuid.uuid4().hex[:16]}", create_if_missing=True))

    @aio_function
    async def delete(name: str, *, environment_name: str | None = None) -> None:
        """Delete volume ``name`` and all of its contents (``Volume.delete(name)``,
        or ``await Volume.delete.aio(name)``)."""
        if environment_name is not None:
            raise InvalidError(
                "Volume.delete(environment_name=...): thaw has one environment; leave it out"
            )
        await http.delete(name)

    @aio_method
    async def hydrate(self) -> Volume:
        """Look the volume up (made first with ``create_if_missing``)."""
        if self.create_if_missing:
            self._info = await http.create(self.name, exist_ok=True)
        else:
            self._info = await http.get(self.name)
        return self

    @property
    def version(self) -> int:
        """The volume's version when it was last looked up (``reload``)."""
        return (self._info or self.hydrate()._info).version  # type: ignore[union-attr]

    def mount(self, path: str) -> VolumeMount:
        return VolumeMount(path=path, name=self.name, create_if_missing=self.create_if_missing)

    # ------------------------------------------------------------ mounted

    @aio_method
    async def commit(self) -> None:
        """In a container: make its writes to the mounted volume visible to
        others (the agent commits them; it also does so every few seconds
        and when the container exits). From local code, writes
        (``batch_upload``, ``remove_file``, ``copy_files``) are committed as
        each ends, so there is nothing left to commit: this only checks that
        the volume exists."""
        await self._mounted_or_hydrate("commit")

    @aio_method
    async def reload(self) -> None:
        """In a container: bring in what others committed since (an error
        while a file under the mount is open for writing). From local code:
        look up the volume's current version again (every read is current)."""
        await self._mounted_or_hydrate("reload")

    async def _mounted_or_hydrate(self, op: Literal["commit", "reload"]) -> None:
        if is_local():
            await self.hydrate.aio()
            return
        from thaw.runtime.volume_calls import calls

        # The request waits on a thread for the agent's answer.
        await asyncio.to_thread(calls.request, op, self.name)

    # ------------------------------------------------------------ contents

    async def _hydrated(self) -> str:
        if self._info is None:
            await self.hydrate.aio()
        return self.name

    @aio_method
    async def listdir(self, path: str, *, recursive: bool = False) -> list[FileEntry]:
        listing = await http.entries(await self._hydrated(), _path(path), recursive)
        return [_entry(e) for e in listing.entries]

    @aio_iterator
    async def iterdir(self, path: str, *, recursive: bool = True) -> AsyncIterator[FileEntry]:
        for entry in await self.listdir.aio(path, recursive=recursive):
            yield entry

    @aio_iterator
    async def read_file(self, path: str) -> AsyncIterator[bytes]:
        """The file's content, streamed one chunk at a time."""
        entry = await http.file_entry(await self._hydrated(), _path(path))
        async for piece in http.read_chunks(entry):
            yield piece

    @aio_method
    async def read_file_into_fileobj(self, path: str, fileobj: IO[bytes]) -> int:
        written = 0
        async for piece in self.read_file.aio(path):
            await asyncio.to_thread(fileobj.write, piece)
            written += len(piece)
        return written

    @aio_method
    async def remove_file(self, path: str, *, recursive: bool = False) -> None:
        self._info = await http.remove(await self._hydrated(), _path(path), recursive)

    @aio_method
    async def copy_files(
        self, src_paths: Sequence[str], dst_path: str, recursive: bool = False
    ) -> None:
        if isinstance(src_paths, str):
            raise InvalidError("copy_files takes a list of source paths")
        sources = [_path(p) for p in src_paths]
        self._info = await http.copy(await self._hydrated(), sources, _path(dst_path), recursive)

    def batch_upload(self, force: bool = False) -> VolumeUploadBatch:
        """``with vol.batch_upload() as batch: batch.put_file(...)`` (or
        ``async with``): every
        file is uploaded and committed together when the block ends; a file
        that exists is refused unless ``force``."""
        return VolumeUploadBatch(self, force=force)

    def __repr__(self) -> str:
        return f"Volume.from_name({self.name!r})"


class VolumeUploadBatch:
    def __init__(
        self,
        volume: Volume,
        *,
        force: bool,
        on_bytes: http.Progress | None = None,
        on_phase: http.Phase | None = None,
    ) -> None:
        self.volume = volume
        self.force = force
        # For a progress display: bytes stored (or found stored), and the step under way.
        self.on_bytes = on_bytes
        self.on_phase = on_phase
        self._files: dict[str, http.Upload] = {}

    @property
    def total_bytes(self) -> int:
        """What the files put so far hold (for a progress bar)."""
        return sum(f.local.stat().st_size for f in self._files.values())

    @property
    def file_count(self) -> int:
        return len(self._files)

    def put_file(
        self,
        local_file: str | os.PathLike[str] | IO[bytes],
        remote_path: str,
        mode: int | None = None,
    ) -> None:
        if not isinstance(local_file, (str, os.PathLike)):
            raise InvalidError("put_file takes a local path (str or os.PathLike)")
        local = Path(local_file)
        if not local.is_file():
            raise InvalidError(f"put_file: {local} is not a file")
        remote = _path(remote_path)
        if not remote:
            raise InvalidError(f"put_file: {remote_path!r} names the volume's root, not a file")
        self._files[remote] = http.Upload(local, remote, mode)

    def put_directory(
        self, local_path: str | os.PathLike[str], remote_path: str, recursive: bool = True
    ) -> None:
        local = Path(local_path)
        if not local.is_dir():
            raise InvalidError(f"put_directory: {local} is not a directory")
        base = _path(remote_path)
        found = local.rglob("*") if recursive else local.glob("*")
        for f in sorted(found):
            if f.is_file():
                rel = PurePosixPath(*f.relative_to(local).parts).as_posix()
                remote = posixpath.join(base, rel)
                self._files[remote] = http.Upload(f, remote)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, exc_type: object, *exc: object) -> None:
        if exc_type is None:
            background_loop().run(self._upload())

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, exc_type: object, *exc: object) -> None:
        if exc_type is None:
            await background_loop().run_async(self._upload())

    async def _upload(self) -> None:
        if self._files:
            self.volume._info = await http.upload(
                await self.volume._hydrated(),
                list(self._files.values()),
                force=self.force,
                on_bytes=self.on_bytes or http.nothing,
                on_phase=self.on_phase or http.quiet,
            )


class _Ephemeral:
    """``with Volume.ephemeral() as vol`` and ``async with Volume.ephemeral() as vol``."""

    def __init__(self, volume: Volume) -> None:
        self.volume = volume

    def __enter__(self) -> Volume:
        return self.volume.hydrate()  # type: ignore[no-any-return]

    def __exit__(self, *exc: object) -> None:
        with contextlib.suppress(NotFoundError):
            Volume.delete(self.volume.name)

    async def __aenter__(self) -> Volume:
        return await self.volume.hydrate.aio()  # type: ignore[no-any-return]

    async def __aexit__(self, *exc: object) -> None:
        with contextlib.suppress(NotFoundError):
            await Volume.delete.aio(self.volume.name)


def volume_mounts(volumes: dict[str, Volume]) -> list[VolumeMount]:
    """``{"/data": Volume}`` -> the spec's mounts, with the paths checked."""
    mounts: list[VolumeMount] = []
    for path, volume in volumes.items():
        path = str(path)
        if not path.startswith("/") or path == "/":
            raise InvalidError(f"volume mount path must be absolute and not '/', got {path!r}")
        if ".." in path.split("/"):
            raise InvalidError(f"volume mount path {path!r} must not contain '..'")
        if not isinstance(volume, Volume):
            raise InvalidError(f"volumes maps paths to thaw.Volume, got {volume!r} at {path!r}")
        mounts.append(volume.mount(posixpath.normpath(path)))
    return mounts
