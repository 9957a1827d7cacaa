"""Layer ids: what names a build step's layer, and the base it starts from.

``layer_id(parent, step)`` is sha256(parent + "\\n" + canonical JSON of the
step); the base's id (``base_layer_id``) hashes the op, the Python version and
the rootfs's marker file. ``local_base`` says whether this node's own rootfs
is a given base layer, so that it is used in place instead of pulled.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import msgspec

from thaw_core import contract, hosttools
from thaw_core.schema import LayerRef

BASE_DEBIAN_SLIM = "debian_slim"
# The digest of a step that changed no file: nothing to store or mount.
EMPTY_DIGEST = ""


class LayerError(Exception):
    """A layer that cannot be packed, unpacked or mounted, with the reason."""


def canonical_json(value: Any) -> bytes:
    """Sorted keys, no whitespace: equal values give equal bytes, whether they
    are dicts or msgspec Structs (omitted defaults stay omitted)."""
    return msgspec.json.encode(value, order="sorted")


def layer_id(parent: str, step: Any) -> str:
    """The id of ``step`` on top of the layer ``parent``. ``step`` must carry
    the content sha256 of every local file it adds (and no machine-specific
    path), so that the id says exactly what the layer contains."""
    h = hashlib.sha256()
    h.update(parent.encode())
    h.update(b"\n")
    h.update(canonical_json(step))
    return h.hexdigest()


def rootfs_python_version(rootfs: Path | None = None) -> str:
    """``major.minor`` of the rootfs's python3, from the marker make-rootfs.sh writes."""
    value = _marker_value(rootfs, "python")
    if value:
        return ".".join(value.split(".")[:2])
    raise LayerError(f"the rootfs marker of {rootfs or hosttools.default_rootfs()} names no python")


def rootfs_python_path(rootfs: Path | None = None) -> str:
    """The rootfs's python3 when it is not /usr/bin/python3 ("" when it is):
    a rootfs made with another python3.X of its suite (make-rootfs.sh)."""
    path = _marker_value(rootfs, "python_path")
    return "" if path in ("", "/usr/bin/python3") else path


def _marker_value(rootfs: Path | None, wanted: str) -> str:
    for line in _marker(rootfs).decode(errors="replace").splitlines():
        key, _, value = line.partition("=")
        if key.strip() == wanted:
            return value.strip()
    return ""


def base_layer_id(rootfs: Path | None = None, python_version: str | None = None) -> str:
    """The id of the ``debian_slim`` base: sha256 of the op, the Python version
    and the rootfs's marker file (which records how and when it was built, so
    two independently built rootfs never share an id)."""
    version = python_version or rootfs_python_version(rootfs)
    return hashlib.sha256(
        BASE_DEBIAN_SLIM.encode() + version.encode() + _marker(rootfs)
    ).hexdigest()


def python_bases(rootfs: Path | None = None) -> dict[str, Path]:
    """The rootfs ``debian_slim`` can start from, by ``major.minor`` of their
    python3: ``rootfs`` (the default) and every finished rootfs beside it
    (deploy/make-rootfs.sh builds one per Debian suite, side by side). The
    default wins a version two of them have."""
    default = rootfs or hosttools.default_rootfs()
    found: dict[str, Path] = {}
    siblings = sorted(default.parent.iterdir()) if default.parent.is_dir() else []
    for root in [default, *siblings]:
        if not root.is_dir() or not hosttools.rootfs_ready(root):
            continue
        try:
            found.setdefault(rootfs_python_version(root), root)
        except LayerError:
            continue
    return found


def _marker(rootfs: Path | None) -> bytes:
    root = rootfs or hosttools.default_rootfs()
    try:
        return (root / hosttools.ROOTFS_MARKER).read_bytes()
    except FileNotFoundError:
        raise LayerError(f"no finished rootfs at {root}: run `make setup`") from None


def blob_key(digest: str) -> str:
    """Where a layer tar is stored in the blob store."""
    return contract.layer_key(digest)


def local_base(ref: LayerRef, rootfs: Path | None = None) -> Path | None:
    """This node's rootfs (the default ``rootfs`` or one beside it, see
    ``python_bases``) that *is* the base layer ``ref``, else None."""
    if ref.base != BASE_DEBIAN_SLIM:
        return None
    for version, root in python_bases(rootfs).items():
        try:
            if base_layer_id(root, version) == ref.layer_id:
                return root
        except LayerError:
            continue
    return None
