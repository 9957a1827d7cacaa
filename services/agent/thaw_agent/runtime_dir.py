"""The runtime's third-party packages for the agent's own Python, and nothing else.

A container whose image runs on the agent's Python (the default rootfs, a
``debian_slim()`` on it, a registry image with ``add_python``) needs the
runtime's distributions (``thaw_core.runtime_dists``) built for that Python.
Mounting the agent's whole environment would hand every container whatever
else the host has installed (flask, requests, pytest, ...): code that imports
one of those works on thaw and breaks on any other node, and an image's own
``pip_install`` would not be what it sees. So the agent lays out, once per
node and per set of versions, a directory holding exactly those
distributions' files (their ``RECORD``: modules, compiled extensions and
``.dist-info``, which ``importlib.metadata`` entry points need), hard-linked
from its environment where it can (no copy: the same filesystem), and
byte-compiled, since containers mount it read-only and would otherwise
compile every module at each cold start.

Its name is a digest of the Python version and the distributions' versions:
an upgrade lays out a new one, and a snapshot restores against the same
files it was taken with.
"""

from __future__ import annotations

import compileall
import contextlib
import errno
import hashlib
import importlib.metadata
import os
import shutil
import sys
import uuid
from pathlib import Path

from thaw_core.runtime_dists import RUNTIME_DISTRIBUTIONS

__all__ = ["own_runtime_dir"]


def _distributions() -> list[importlib.metadata.Distribution]:
    found: list[importlib.metadata.Distribution] = []
    for name in RUNTIME_DISTRIBUTIONS:
        try:
            found.append(importlib.metadata.distribution(name))
        except importlib.metadata.PackageNotFoundError:
            continue  # not needed by this thaw (tests/unit/test_runtime_layer.py says what is)
    return found


def _key(dists: list[importlib.metadata.Distribution]) -> str:
    names = sorted(f"{d.metadata['Name']}=={d.version}" for d in dists)
    digest = hashlib.sha256("\n".join([sys.version, *names]).encode()).hexdigest()
    return f"python{sys.version_info.major}.{sys.version_info.minor}-{digest[:16]}"


def _link(source: Path, dest: Path) -> None:
    dest.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(source, dest)
    except OSError as e:
        if e.errno not in (errno.EXDEV, errno.EPERM, errno.EMLINK):
            raise
        shutil.copy2(source, dest)  # keeps the mtime a .pyc is checked against


def _lay_out(dists: list[importlib.metadata.Distribution], target: Path) -> None:
    cache_tag = sys.implementation.cache_tag
    for dist in dists:
        for file in dist.files or ():
            if file.parts[0] == ".." or "__pycache__" in file.parts:
                continue  # console scripts in bin/; byte code is taken below
            source = Path(str(dist.locate_file(file)))
            if not source.is_file():
                continue
            _link(source, target / file)
            if source.suffix == ".py":
                # What the host already compiled, valid as is (same source, mtime).
                pyc = source.parent / "__pycache__" / f"{source.stem}.{cache_tag}.pyc"
                if pyc.is_file():
                    _link(pyc, target / file.parent / "__pycache__" / pyc.name)
    # The rest (compileall skips what is up to date); a module that does not
    # compile is one the runtime never imports (a py2 leftover, say).
    compileall.compile_dir(target, quiet=2, workers=1)


def own_runtime_dir(root: Path) -> Path:
    """``root/<python and versions>``: the runtime's distributions for this
    Python, laid out on first use. Safe against another agent laying out the
    same one at once (each builds aside, the first rename wins)."""
    dists = _distributions()
    target = root / _key(dists)
    if target.is_dir():
        return target
    root.mkdir(parents=True, exist_ok=True)
    aside = root / f".new-{uuid.uuid4().hex[:8]}"
    try:
        _lay_out(dists, aside)
        aside.chmod(0o755)
        with contextlib.suppress(FileExistsError, OSError):
            aside.rename(target)
    finally:
        if aside.exists():
            shutil.rmtree(aside, ignore_errors=True)
    if not target.is_dir():
        raise RuntimeError(f"cannot lay out the runtime's packages at {target}")
    return target
