"""Chunk references: how a volume file's entry names each piece of its content.

A reference is either a chunk's sha256 (the blob at
``contract.volume_chunk_key``), or, for a small file committed with many
others, ``<sha256>@<pack>:<offset>:<length>``: the piece is ``length`` bytes
of the pack blob ``<pack>`` (``contract.volume_pack_key``) from ``offset``.
Packing makes a commit of 10,000 small files a handful of blob writes
instead of 10,000. Either way the piece's sha256 leads the reference: a
reader checks what it read against it, and a node's chunk cache keeps
pieces by it, so identical content is fetched once per node wherever it is
stored.
"""

from __future__ import annotations

import hashlib
import re
from typing import NamedTuple

from thaw_core.blob import BlobIntegrityError
from thaw_core.contract import volume_chunk_key, volume_pack_key

REF_PATTERN = r"^([0-9a-f]{64})(?:@([0-9a-f]{64}):([0-9]{1,15}):([0-9]{1,15}))?$"
_REF = re.compile(REF_PATTERN)


class ChunkRefError(ValueError):
    pass


class ChunkRef(NamedTuple):
    """A reference, parsed (a tuple: a commit of 10,000 files parses as many)."""

    digest: str  # sha256 of the piece
    pack: str = ""  # sha256 of the pack holding it; "" for a chunk blob of its own
    offset: int = 0
    length: int = 0

    @property
    def key(self) -> str:
        """The blob the piece is read from."""
        return volume_pack_key(self.pack) if self.pack else volume_chunk_key(self.digest)

    def __str__(self) -> str:
        if not self.pack:
            return self.digest
        return f"{self.digest}@{self.pack}:{self.offset}:{self.length}"


def parse_ref(ref: str) -> ChunkRef:
    m = _REF.match(ref)
    if m is None:
        raise ChunkRefError(
            f"{ref[:200]!r} is not a chunk reference (a sha256, or sha256@pack:offset:length)"
        )
    digest, pack, offset, length = m.groups()
    if pack is None:
        return ChunkRef(digest)
    return ChunkRef(digest, pack, int(offset), int(length))


def ref_digest(ref: str) -> str:
    """The sha256 of the piece a (well-formed) reference names."""
    return ref[:64]


def is_packed(ref: str) -> bool:
    return len(ref) > 64


def ref_pack(ref: str) -> str:
    """The pack a (well-formed) reference names; "" for a chunk blob."""
    return ref[65:129]


def read_checked(ref: ChunkRef, data: bytes) -> bytes:
    """``data`` read for ``ref``, refused unless it is the piece named."""
    if ref.pack and len(data) != ref.length:
        raise BlobIntegrityError(f"pack {ref.pack} ends before {ref}")
    if (actual := hashlib.sha256(data).hexdigest()) != ref.digest:
        raise BlobIntegrityError(f"the bytes stored for {ref} do not hash to {ref.digest}", actual)
    return data
