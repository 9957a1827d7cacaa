"""Put files the client uploaded into an image root, as a layer.

The files are written into an overlay of the parent layers (no container
runs), so that the upper dir holds exactly them plus the parent directories
they needed: existing ones copied up with their own owner and mode, new ones
made 0755 root. Paths are resolved *inside* the image root: a symlink in the
image (``/bin -> usr/bin``, or an absolute one) is followed as the container
would follow it, never out to the host.
"""

from __future__ import annotations

import os
import posixpath
import stat
from pathlib import Path

from thaw_core import contract
from thaw_core.blob import BlobNotFound, BlobStore
from thaw_core.schema import FileEntry

_MAX_SYMLINKS = 40


class FilesError(Exception):
    pass


async def add_files(root: Path, files: list[FileEntry], blob: BlobStore) -> None:
    """Write each file of ``files`` (blob ``files/<sha256>``, verified) at its
    destination under the mounted image root ``root``."""
    for f in files:
        parent = resolve_in_root(root, posixpath.dirname(f.dest), create=True)
        target = parent / posixpath.basename(f.dest)
        if target.is_symlink():
            target.unlink()  # replace the link itself, never what it points to
        elif target.is_dir():
            raise FilesError(f"{f.dest} is a directory in the image")
        try:
            await blob.get_to_file(contract.file_key(f.sha256), target, sha256=f.sha256)
        except BlobNotFound:
            raise FilesError(
                f"{f.dest}: its content (blob {contract.file_key(f.sha256)}) was not uploaded"
            ) from None
        os.chown(target, 0, 0, follow_symlinks=False)
        os.chmod(target, f.mode)


def resolve_in_root(root: Path, path: str, *, create: bool = False) -> Path:
    """The host path of the image path ``path`` (absolute), with symlinks
    resolved as if ``root`` were ``/``. With ``create``, missing directories
    are made (0755)."""
    parts = [p for p in path.split("/") if p not in ("", ".")]
    resolved: list[str] = []
    links = 0
    while parts:
        name = parts.pop(0)
        if name == "..":
            if resolved:
                resolved.pop()
            continue
        host = root.joinpath(*resolved, name)
        try:
            st = os.lstat(host)
        except FileNotFoundError:
            if not create:
                raise
            os.mkdir(host, 0o755)
            os.chmod(host, 0o755)  # whatever the umask
            resolved.append(name)
            continue
        if stat.S_ISLNK(st.st_mode):
            links += 1
            if links > _MAX_SYMLINKS:
                raise FilesError(f"{path}: too many levels of symbolic links in the image")
            target = os.readlink(host)
            if target.startswith("/"):
                resolved = []
            parts = [p for p in target.split("/") if p not in ("", ".")] + parts
            continue
        if not stat.S_ISDIR(st.st_mode):
            raise FilesError(
                f"{path}: /{'/'.join([*resolved, name])} is not a directory in the image"
            )
        resolved.append(name)
    return root.joinpath(*resolved)
