"""What the volumes service, the gateway and the agent share about volumes:
path rules, chunking file content into the blob store, and the client of the
volumes service's requests over NATS."""

from typing import TYPE_CHECKING, Any

from thaw_core.volumes.chunks import CHUNK_SIZE, ChunkUploader, chunk_digests, write_chunks
from thaw_core.volumes.paths import VolumePathError, ancestors, is_under, volume_path

if TYPE_CHECKING:
    from thaw_core.volumes.client import VolumeError, VolumesClient


def __getattr__(name: str) -> Any:
    # The client speaks NATS: importing it loads nats and aiohttp, which the
    # SDK's volume paths (imported by every container's runtime) never need.
    if name in ("VolumeError", "VolumesClient"):
        from thaw_core.volumes import client

        return getattr(client, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "CHUNK_SIZE",
    "ChunkUploader",
    "VolumeError",
    "VolumePathError",
    "VolumesClient",
    "ancestors",
    "chunk_digests",
    "is_under",
    "volume_path",
    "write_chunks",
]
