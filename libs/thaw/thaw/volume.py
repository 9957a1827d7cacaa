"""``thaw.Volume``: a named, versioned directory shared by functions and local code.

From local code (and ``@app.local_entrypoint``) every method goes through the
gateway: ``listdir``, ``read_file``, ``batch_upload``, ``remove_file``,
``copy_files``, ``reload`` and ``Volume.delete``. A function mounts a volume
with ``volumes={"/data": vol}``; the deploy makes it first when it was named
with ``create_if_missing=True`` and fails, naming it, when it does not exist.
"""

from __future__ import annotations

import contextlib
import enum
import os
import posixpath
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import IO, Any, Self

from thaw_core.schema import VolumeEntry, VolumeInfo, VolumeMount, check_name
from thaw_core.volumes import VolumePathError, volume_path

from thaw import _volume_http as http
from thaw._env import is_local
from thaw._sync import background_loop
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


def _run(coro: Any) -> Any:
    return background_loop().run(coro)


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
    @contextlib.contextmanager
    def ephemeral(cls) -> Iterator[Volume]:
        """A volume that lives for one ``with`` block, deleted at its end."""
        vol = cls(f"ephemeral-{uuid.uuid4().hex[:16]}", create_if_missing=True)
        vol.hydrate()
        try:
            yield vol
        finally:
            with contextlib.suppress(NotFoundError):
                cls.delete(vol.name)

    @staticmethod
    def delete(name: str, *, environment_name: str | None = None) -> None:
        """Delete volume ``name`` and all of its contents."""
        _run(http.delete(name))

    def hydrate(self) -> Volume:
        """Look the volume up (made first with ``create_if_missing``)."""
        if self.create_if_missing:
            self._info = _run(http.create(self.name, exist_ok=True))
        else:
            self._info = _run(http.get(self.name))
        return self

    @property
    def version(self) -> int:
        """The volume's version when it was last looked up (``reload``)."""
        return (self._info or self.hydrate()._info).version  # type: ignore[union-attr]

    def mount(self, path: str) -> VolumeMount:
        return VolumeMount(path=path, name=self.name, create_if_missing=self.create_if_missing)

    # ------------------------------------------------------------ mounted

    def commit(self) -> None:
        """In a container: make its writes to the mounted volume visible to
        others (the agent commits them; it also does so every few seconds
        and when the container exits). From local code, writes
        (``batch_upload``, ``remove_file``, ``copy_files``) are committed as
        each ends, so there is nothing left to commit: this only checks that
        the volume exists."""
        if not is_local():
            from thaw.runtime.volume_calls import calls

            calls.request("commit", self.name)
            return
        self.hydrate()

    def reload(self) -> None:
        """In a container: bring in what others committed since (an error
        while a file under the mount is open for writing). From local code:
        look up the volume's current version again (every read is current)."""
        if not is_local():
            from thaw.runtime.volume_calls import calls

            calls.request("reload", self.name)
            return
        self.hydrate()

    # ------------------------------------------------------------ contents

    def _hydrated(self) -> str:
        if self._info is None:
            self.hydrate()
        return self.name

    def listdir(self, path: str, *, recursive: bool = False) -> list[FileEntry]:
        listing = _run(http.entries(self._hydrated(), _path(path), recursive))
        return [_entry(e) for e in listing.entries]

    def iterdir(self, path: str, *, recursive: bool = True) -> Iterator[FileEntry]:
        yield from self.listdir(path, recursive=recursive)

    def read_file(self, path: str) -> Iterator[bytes]:
        """The file's content, streamed one chunk at a time."""
        entry = _run(http.file_entry(self._hydrated(), _path(path)))
        return background_loop().iterate(http.read_chunks(entry))

    def read_file_into_fileobj(self, path: str, fileobj: IO[bytes]) -> int:
        written = 0
        for piece in self.read_file(path):
            fileobj.write(piece)
            written += len(piece)
        return written

    def remove_file(self, path: str, *, recursive: bool = False) -> None:
        self._info = _run(http.remove(self._hydrated(), _path(path), recursive))

    def copy_files(self, src_paths: Sequence[str], dst_path: str, recursive: bool = False) -> None:
        if isinstance(src_paths, str):
            raise InvalidError("copy_files takes a list of source paths")
        sources = [_path(p) for p in src_paths]
        self._info = _run(http.copy(self._hydrated(), sources, _path(dst_path), recursive))

    def batch_upload(self, force: bool = False) -> VolumeUploadBatch:
        """``with vol.batch_upload() as batch: batch.put_file(...)``: every
        file is uploaded and committed together when the block ends; a file
        that exists is refused unless ``force``."""
        return VolumeUploadBatch(self, force=force)

    def __repr__(self) -> str:
        return f"Volume.from_name({self.name!r})"


class VolumeUploadBatch:
    def __init__(
        self, volume: Volume, *, force: bool, on_bytes: http.Progress | None = None
    ) -> None:
        self.volume = volume
        self.force = force
        self.on_bytes = on_bytes
        self._files: dict[str, http.Upload] = {}

    @property
    def total_bytes(self) -> int:
        """What the files put so far hold (for a progress bar)."""
        return sum(f.local.stat().st_size for f in self._files.values())

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
        if exc_type is None and self._files:
            self.volume._info = _run(
                http.upload(
                    self.volume._hydrated(),
                    list(self._files.values()),
                    force=self.force,
                    on_bytes=self.on_bytes or http.nothing,
                )
            )


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
