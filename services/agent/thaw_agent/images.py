"""A container's root file system: the node's default rootfs, or the layers
of the image its function was built on.

The gateway stores a built image's id in the function's spec
(``spec.image.image_id``). For such a function the agent asks the builder
for the image's manifest (``thaw.builder.lookup``; kept in memory, a
manifest never changes), pulls its layers into this node's ``LayerCache``
(digest-verified, shared by every container), and mounts them under the
container's own upper dir. The cache is kept under ``THAW_AGENT_LAYER_CACHE_GB``
(default 20). The manifest's env and workdir apply, the
function's own ``env`` winning over the image's, and its user (a
Dockerfile's last ``USER``, a registry image's ``User``) is who the
function's process runs as, looked up in the image's own ``/etc/passwd``
and ``/etc/group`` once its layers are mounted.

A function without an image id runs on the default rootfs exactly as before
images existed (one lower dir, no lookup): the fast path.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec
import nats.errors
from thaw_core import contract, layers
from thaw_core.blob import BlobStore
from thaw_core.bus import Bus
from thaw_core.image_users import ROOT, ImageUser, UserError, image_user
from thaw_core.layers import ImageManifest, LayerCache
from thaw_core.schema import (
    FunctionSpec,
    ImageLookup,
    ImageLookupReply,
)

from thaw_agent.layout import ContainerPaths
from thaw_agent.userns import IdRange, idmapped_bind

LOOKUP_TIMEOUT_S = 10.0
# Unpacked layers kept on a node (least recently used go first; mounted ones stay).
CACHE_GB_ENV = "THAW_AGENT_LAYER_CACHE_GB"
DEFAULT_CACHE_GB = 20.0

_reply = msgspec.json.Decoder(ImageLookupReply)


class ImageError(Exception):
    """The function's image cannot be had on this node; the message says why."""


@dataclass(frozen=True)
class ContainerRoot:
    """What a container's ``/`` is made of: lower dirs (base first), and the
    env and working directory its image sets."""

    lowerdirs: list[Path]
    env: dict[str, str] = field(default_factory=dict)
    workdir: str = "/"
    image_id: str = ""
    # The image's python3, when not /usr/bin/python3 (a registry image's).
    python: str = ""
    # The image's USER ("": root).
    user: str = ""
    # Its Python's "major.minor" ("": the default rootfs's, the agent's own).
    python_version: str = ""

    def mount(self, paths: ContainerPaths, ids: IdRange) -> None:
        """Mount the overlay at ``paths.rootfs``, changes going to ``paths.upper``;
        its lower dirs idmapped into ``ids``, the container's user namespace."""
        lowers = []
        for i, lower in enumerate(self.lowerdirs):
            target = paths.lower / str(i)
            target.mkdir()
            idmapped_bind(lower, target, ids)
            lowers.append(target)
        # The overlay's / takes its owner from the upper dir: the container's root.
        root = ids.host_user(ROOT)
        os.chown(paths.upper, root.uid, root.gid)
        layers.overlay_mount(lowers, paths.rootfs, upper=paths.upper, work=paths.work)

    def process_user(self, paths: ContainerPaths) -> ImageUser:
        """The ids the image's USER has in the mounted image (root without one)."""
        if not self.user:
            return ROOT
        try:
            return image_user(self.user, paths.rootfs)
        except UserError as e:
            raise ImageError(f"image {self.image_id[:12]}: USER {self.user}: {e}") from None

    def spec_for(self, spec: FunctionSpec) -> FunctionSpec:
        """``spec`` with the image's env under the function's own."""
        if not self.env:
            return spec
        return msgspec.structs.replace(spec, env={**self.env, **spec.env})

    def apply(self, config: dict[str, Any]) -> dict[str, Any]:
        """The OCI config with the image's working directory."""
        config["process"]["cwd"] = self.workdir
        if self.python:
            config["process"]["args"][0] = self.python
        return config


class NodeImages:
    """This node's image manifests and layer cache."""

    def __init__(
        self, bus: Bus | None, blob: BlobStore, cache_dir: Path, base_rootfs: Path
    ) -> None:
        self.bus = bus
        self.blob = blob
        self.cache_dir = cache_dir
        self.base_rootfs = base_rootfs
        self.cache_bytes = int(float(os.environ.get(CACHE_GB_ENV) or DEFAULT_CACHE_GB) * (1 << 30))
        self._cache: LayerCache | None = None
        self._manifests: dict[str, ImageManifest] = {}

    @property
    def cache(self) -> LayerCache:
        # Made on first use: a node that runs no image never creates the dir.
        if self._cache is None:
            self._cache = LayerCache(self.cache_dir)
        return self._cache

    async def root(self, spec: FunctionSpec) -> ContainerRoot:
        image_id = spec.image.image_id if spec.image is not None else ""
        if not image_id:
            return ContainerRoot(lowerdirs=[self.base_rootfs])
        manifest = await self.manifest(image_id)
        # Trimmed before this image's layers are pulled, never after: they
        # are not mounted yet, so nothing would protect them from eviction.
        with contextlib.suppress(Exception):
            await self.cache.evict(self.cache_bytes)
        try:
            lowers = await layers.lowerdirs(
                manifest.layers, self.cache, self.blob, rootfs=self.base_rootfs
            )
        except Exception as e:
            raise ImageError(f"cannot fetch the layers of image {image_id[:12]}: {e}") from e
        if not lowers:
            raise ImageError(f"image {image_id[:12]} has no layers")
        return ContainerRoot(
            lowerdirs=lowers,
            env=dict(manifest.env),
            workdir=manifest.workdir,
            image_id=image_id,
            python=manifest.python,
            user=manifest.user,
            python_version=manifest.python_version,
        )

    async def manifest(self, image_id: str) -> ImageManifest:
        known = self._manifests.get(image_id)
        if known is not None:
            return known
        if self.bus is None:
            raise ImageError(f"image {image_id[:12]}: this node cannot look images up (no bus)")
        try:
            msg = await self.bus.request(
                contract.IMAGE_LOOKUP, ImageLookup(image_id=image_id), timeout_s=LOOKUP_TIMEOUT_S
            )
        except nats.errors.NoRespondersError:
            raise ImageError(
                f"image {image_id[:12]}: no image builder is running to say what it holds"
            ) from None
        except (TimeoutError, nats.errors.TimeoutError):
            raise ImageError(
                f"image {image_id[:12]}: the image builder did not answer within "
                f"{LOOKUP_TIMEOUT_S:g}s"
            ) from None
        reply = _reply.decode(msg.data)
        if reply.error or not reply.built or reply.manifest is None:
            raise ImageError(
                f"image {image_id[:12]} is not built" + (f": {reply.error}" if reply.error else "")
            )
        self._manifests[image_id] = reply.manifest
        return reply.manifest
