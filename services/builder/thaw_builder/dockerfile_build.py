"""A Dockerfile's ``COPY``/``ADD`` and ``WORKDIR`` done in the mounted image
root of their layer (no container runs), as Docker does them.

Context files come from the blob store (the client uploaded them, as for
``add_local_file``); ``COPY --from`` reads an earlier stage's root, mounted
beside. Paths are resolved inside each root (``files.resolve_in_root``).
Copied files are owned by root unless ``--chown`` names a user of the image;
``--chmod`` sets their mode. ``ADD`` of a local tar archive unpacks it.
``WORKDIR`` makes its directory, owned by the ``USER`` in effect.
"""

from __future__ import annotations

import os
import posixpath
import shutil
import stat
import tarfile
from pathlib import Path

import msgspec
from thaw_core.blob import BlobStore
from thaw_core.image_users import ROOT, ImageUser, UserError, image_user
from thaw_core.schema import FileEntry

from thaw_builder.dockerfile_plan import DockerOp
from thaw_builder.files import FilesError, add_files, resolve_in_root

_ARCHIVES = (".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tbz2", ".tar.xz", ".txz")


async def apply(
    op: DockerOp, root: Path, blob: BlobStore, source: Path | None, scratch: Path
) -> list[str]:
    """Do ``op`` in ``root``; ``source``: the ``COPY --from`` stage's root.
    Returns what it did, one line each. Raises FilesError."""
    try:
        owner = image_user(op.chown, root) if op.chown else ROOT
        if op.inst.keyword == "WORKDIR":
            made = resolve_in_root(root, op.path, create=True)
            if op.user:
                user = image_user(op.user, root)
                os.chown(made, user.uid, user.gid, follow_symlinks=False)
            return [f"WORKDIR {op.path}"]
    except UserError as e:
        raise FilesError(str(e)) from None
    if source is not None:
        return _copy_from(op, source, root, owner)
    return await _copy_context(op, root, blob, owner, scratch)


def _target(dest: str, rel: str, name: str, root: Path) -> str:
    """Where a file lands: under ``dest`` when it is a directory (by its
    trailing ``/``, the file's path in a copied directory, or the image)."""
    if rel:
        return posixpath.join(dest, rel)
    if dest.endswith("/"):
        return dest + name
    try:
        if resolve_in_root(root, dest).is_dir():
            return posixpath.join(dest, name)
    except (FileNotFoundError, FilesError):
        pass
    return dest


async def _copy_context(
    op: DockerOp, root: Path, blob: BlobStore, owner: ImageUser, scratch: Path
) -> list[str]:
    placed: list[FileEntry] = []
    archives: list[FileEntry] = []
    for rel, f in op.files:
        name = posixpath.basename(f.dest)
        if op.inst.keyword == "ADD" and not rel and name.endswith(_ARCHIVES):
            archives.append(f)
            continue
        dest = posixpath.normpath(_target(op.dest, rel, name, root))
        mode = op.chmod if op.chmod is not None else f.mode
        placed.append(msgspec.structs.replace(f, dest=dest, mode=mode))
    await add_files(root, placed, blob)
    for f in placed:
        _own(resolve_in_root(root, posixpath.dirname(f.dest)) / posixpath.basename(f.dest), owner)
    lines = [f"{op.inst.keyword} {f.dest}" for f in placed]
    for f in archives:
        tmp = scratch / f"archive-{f.sha256[:16]}"
        await add_files(scratch, [msgspec.structs.replace(f, dest=f"/{tmp.name}")], blob)
        into = resolve_in_root(root, op.dest, create=True)
        with tarfile.open(tmp) as tar:
            tar.extractall(into, filter="data")
        tmp.unlink()
        lines.append(f"ADD {f.dest} unpacked into {op.dest}")
    return lines


def _copy_from(op: DockerOp, source: Path, root: Path, owner: ImageUser) -> list[str]:
    lines: list[str] = []
    for src in op.sources:
        path = posixpath.normpath(posixpath.join("/", src))
        try:
            host = resolve_in_root(source, posixpath.dirname(path)) / posixpath.basename(path)
            st = os.lstat(host) if path != "/" else os.lstat(source)
        except (FileNotFoundError, FilesError):
            raise FilesError(f"COPY --from: {path} is not in the stage") from None
        if path == "/":
            host = source
        if stat.S_ISDIR(st.st_mode):
            dest = op.dest.rstrip("/") or "/"
            _copy_tree(host, dest, root, owner, op.chmod)
        else:
            dest = posixpath.normpath(_target(op.dest, "", posixpath.basename(path), root))
            _copy_one(host, dest, root, owner, op.chmod)
        lines.append(f"COPY {path} -> {dest}")
    return lines


def _copy_tree(src: Path, dest: str, root: Path, owner: ImageUser, chmod: int | None) -> None:
    made = resolve_in_root(root, dest, create=True)
    _own(made, owner)
    for dirpath, dirnames, filenames in os.walk(src):
        rel = os.path.relpath(dirpath, src)
        base = dest if rel == "." else posixpath.join(dest, rel.replace(os.sep, "/"))
        for d in list(dirnames):
            here = Path(dirpath) / d
            if here.is_symlink():
                dirnames.remove(d)  # a link is copied as a link, not walked
                filenames.append(d)
                continue
            target = resolve_in_root(root, posixpath.join(base, d), create=True)
            os.chmod(target, stat.S_IMODE(os.lstat(here).st_mode))
            _own(target, owner)
        for name in filenames:
            _copy_one(Path(dirpath) / name, posixpath.join(base, name), root, owner, chmod)


def _copy_one(src: Path, dest: str, root: Path, owner: ImageUser, chmod: int | None) -> None:
    target = resolve_in_root(root, posixpath.dirname(dest), create=True) / posixpath.basename(dest)
    if target.is_symlink():
        target.unlink()
    elif target.is_dir():
        raise FilesError(f"{dest} is a directory in the image")
    st = os.lstat(src)
    if stat.S_ISLNK(st.st_mode):
        if target.exists():
            target.unlink()
        os.symlink(os.readlink(src), target)
    else:
        shutil.copyfile(src, target, follow_symlinks=False)
        os.chmod(target, chmod if chmod is not None else stat.S_IMODE(st.st_mode))
    _own(target, owner)


def _own(path: Path, owner: ImageUser) -> None:
    os.chown(path, owner.uid, owner.gid, follow_symlinks=False)
