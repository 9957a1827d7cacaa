"""Code bundles: the Python sources of an app, zipped so that the same sources
always give the same bytes (and so the same sha256, which names the bundle and
lets a deploy skip the upload).

What goes in, from the bundle's root (the directory the app's module is
imported from): every ``*.py`` there, and every package below it (a directory
with ``__init__.py``, recursively), skipping hidden directories, virtual
environments and ``__pycache__``. The container puts the root on ``sys.path``
and imports the module by the same dotted name.
"""

from __future__ import annotations

import hashlib
import io
import os
from dataclasses import dataclass
from pathlib import Path

_SKIP_DIRS = frozenset({"__pycache__", ".venv", "venv", "node_modules", "site-packages"})
# 1980-01-01 is the earliest time a zip can hold: no clock or mtime leaks in.
_EPOCH = (1980, 1, 1, 0, 0, 0)
_UNIX = 3


@dataclass(frozen=True)
class Bundle:
    root: Path
    files: tuple[str, ...]
    data: bytes
    sha256: str


def import_root(path: Path) -> tuple[Path, str]:
    """``(root, dotted module name)`` of a source file: the first directory
    above it that is not a package, and the name relative to it."""
    path = path.resolve()
    parts = [] if path.name == "__init__.py" else [path.stem]
    directory = path.parent
    while (directory / "__init__.py").is_file():
        parts.insert(0, directory.name)
        directory = directory.parent
    return directory, ".".join(parts)


def _skipped(entry: os.DirEntry[str]) -> bool:
    return entry.name.startswith(".") or entry.name in _SKIP_DIRS or entry.is_symlink()


def _package_sources(directory: Path, prefix: str) -> list[str]:
    found: list[str] = []
    with os.scandir(directory) as entries:
        for entry in entries:
            if entry.is_file() and entry.name.endswith(".py"):
                found.append(prefix + entry.name)
            elif (
                entry.is_dir()
                and not _skipped(entry)
                and os.path.isfile(os.path.join(entry.path, "__init__.py"))
            ):
                found.extend(_package_sources(Path(entry.path), f"{prefix}{entry.name}/"))
    return found


def source_files(root: Path) -> list[str]:
    """The bundle's files, as sorted POSIX paths relative to ``root``."""
    return sorted(_package_sources(root, ""))


def build_bundle(root: Path) -> Bundle:
    import zipfile

    root = root.resolve()
    files = source_files(root)
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf:
        for name in files:
            info = zipfile.ZipInfo(name, date_time=_EPOCH)
            info.create_system = _UNIX
            info.external_attr = 0o644 << 16
            info.compress_type = zipfile.ZIP_DEFLATED
            zf.writestr(info, (root / name).read_bytes(), compresslevel=6)
    data = buffer.getvalue()
    return Bundle(root=root, files=tuple(files), data=data, sha256=hashlib.sha256(data).hexdigest())
