"""What the volumes service, the gateway and the agent share about volumes:
path rules, chunking file content into the blob store, and the client of the
volumes service's requests over NATS."""

from thaw_core.volumes.chunks import CHUNK_SIZE, ChunkUploader, chunk_digests, write_chunks
from thaw_core.volumes.client import VolumeError, VolumesClient
from thaw_core.volumes.paths import VolumePathError, ancestors, is_under, volume_path

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
