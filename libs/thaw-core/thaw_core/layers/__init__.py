"""Image layers: ids, OCI-style layer tars, a local cache of unpacked layers,
and the overlay mount that stacks them into a container's root.

An image is a chain of build steps. Each step has a **layer id**::

    layer_id(parent, step) = sha256(parent + "\\n" + canonical JSON of the step)

where the step's JSON carries the content sha256 of any local files it adds,
so changing one step (or one file it adds) changes its id and every later
one, never an earlier one. The first step is the **base**: the node's default
rootfs (deploy/make-rootfs.sh), ``base_layer_id(rootfs)``. The image id is
the id of its last step.

A step that changes files is stored as a **layer tar**: the overlay upper
dir it produced, packed as a tar with OCI whiteouts (an overlay whiteout, a
0/0 character device, becomes an empty ``.wh.<name>``; an opaque directory
gets a ``.wh..wh..opq`` entry), zstd-compressed, in the blob store under
``layers/<digest>`` (digest: sha256 of the compressed bytes). Steps that only
set metadata (env, workdir) have an id but no tar. The base is stored the
same way, so that a node whose rootfs differs can still pull it; a node whose
own rootfs *is* the base (same id) uses it in place (``local_base``).

Unpacking turns the OCI whiteouts back into overlay whiteouts, so that the
unpacked layers of an image stack directly as overlay lowerdirs (as Docker's
overlay2 driver does): ``overlay_mount(lowerdirs, target, upper, work)``.
``LayerCache`` keeps unpacked layers on a node, keyed by digest: pulls are
digest-verified, atomic (unpacked aside, then renamed) and shared between
processes (one file lock per digest), and ``evict`` trims it to a size,
least recently used first, never removing a layer that a mounted overlay uses.

Everything here that touches the file system runs blocking; async callers
use ``asyncio.to_thread`` (``LayerCache.pull`` does).
"""

from thaw_core.layers.cache import LayerCache, lowerdirs
from thaw_core.layers.ids import (
    BASE_DEBIAN_SLIM,
    EMPTY_DIGEST,
    LayerError,
    base_layer_id,
    blob_key,
    canonical_json,
    layer_id,
    local_base,
    python_bases,
    rootfs_python_path,
    rootfs_python_version,
)
from thaw_core.layers.mounts import mounts_under, overlay_mount, remove_tree, unmount
from thaw_core.layers.tar import (
    OPAQUE_MARKER,
    OPAQUE_XATTR,
    WHITEOUT_PREFIX,
    PackedLayer,
    pack_layer,
    unpack_layer,
)
from thaw_core.schema import ImageManifest, LayerRef

__all__ = [
    "BASE_DEBIAN_SLIM",
    "EMPTY_DIGEST",
    "OPAQUE_MARKER",
    "OPAQUE_XATTR",
    "WHITEOUT_PREFIX",
    "ImageManifest",
    "LayerCache",
    "LayerError",
    "LayerRef",
    "PackedLayer",
    "base_layer_id",
    "blob_key",
    "canonical_json",
    "layer_id",
    "local_base",
    "lowerdirs",
    "mounts_under",
    "overlay_mount",
    "pack_layer",
    "python_bases",
    "remove_tree",
    "rootfs_python_path",
    "rootfs_python_version",
    "unmount",
    "unpack_layer",
]
