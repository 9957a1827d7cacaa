"""Bodies of the gateway's volume routes (``/v1/volumes``), shared by the
gateway and the SDK. Volumes are answered as ``schema.VolumeInfo``, their
contents as ``schema.VolumeEntry``.

- ``POST   /v1/volumes``                          ``VolumeCreate`` -> ``VolumeInfo``
- ``GET    /v1/volumes``                          -> ``list[VolumeInfo]``
- ``GET    /v1/volumes/{volume}``                 -> ``VolumeInfo``
- ``DELETE /v1/volumes/{volume}``                 -> ``VolumeInfo``
- ``GET    /v1/volumes/{volume}/entries?path=&recursive=``  -> ``VolumeListing``
- ``GET    /v1/volumes/{volume}/file?path=``      -> the file's bytes, streamed
- ``POST   /v1/volumes/{volume}/commit``          ``VolumeCommitBody`` -> ``VolumeInfo``
- ``POST   /v1/volumes/{volume}/remove``          ``VolumeRemove`` -> ``VolumeInfo``
- ``POST   /v1/volumes/{volume}/copy``            ``VolumeCopy`` -> ``VolumeInfo``
- ``POST   /v1/volume-chunks:missing``            ``ChunksMissing`` -> ``ChunksMissing``
- ``HEAD/PUT/GET /v1/volume-chunks/{chunk}``      one chunk (``CHUNK_SIZE`` bytes at most), by sha256; GET also by packed reference
- ``POST   /v1/volume-chunks:read``               ``ChunksRead`` -> the pieces' bytes, one after another
- ``PUT    /v1/volume-packs/{sha256}``            many small files' content in one blob (``MAX_PACK_BYTES``)

Small files travel many to a request: a put packs them (``thaw_core.volumes.chunks.pack_pieces``)
and a get reads them with ``:read``; 10,000 of them were 10,000 requests, and as many fsyncs.
"""

from __future__ import annotations

import msgspec

from thaw_core.schema import VolumeEntry

# The largest max_bytes a volume can have (Postgres bigint).
MAX_VOLUME_BYTES = 2**63 - 1


class VolumeCreate(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    name: str
    # True: answer the volume that exists (Volume.from_name(create_if_missing=True)).
    exist_ok: bool = False
    # None: the platform's default (THAW_VOLUME_MAX_BYTES).
    max_bytes: int | None = None


class VolumeListing(msgspec.Struct, kw_only=True):
    """``version``: the volume's version these entries are at least as new as."""

    version: int
    entries: list[VolumeEntry]


class VolumeCommitBody(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """Written entries (their chunks stored first) and deleted paths. With
    ``force`` false, a written file that exists already is refused."""

    changes: list[VolumeEntry] = []
    deleted: list[str] = []
    force: bool = True


class VolumeRemove(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    path: str
    recursive: bool = False


class VolumeCopy(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """Copy files (by reference to their chunks: no content moves) to ``dst``:
    into it when it is a directory or several sources are given, else as it."""

    src_paths: list[str]
    dst: str
    recursive: bool = False


# The largest pack the gateway stores, and the most bytes one ``:read`` answers.
MAX_PACK_BYTES = 16 << 20
# The most pieces one ``:read`` names.
MAX_READ_REFS = 5000


class ChunksRead(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """Pieces to read, by the references files' entries name (a sha256, or a
    packed ``sha256@pack:offset:length``): answered one after another, in
    this order, each as long as the reference (or its chunk blob) says."""

    refs: list[str]


class ChunksMissing(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    digests: list[str]
