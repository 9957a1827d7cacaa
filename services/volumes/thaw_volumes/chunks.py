"""A commit's chunks are in the blob store, and add up to its files: chunk
blobs by digest, packed pieces by their pack and range
(``thaw_core.volumes.refs``)."""

from __future__ import annotations

from thaw_core.blob import BlobStore
from thaw_core.contract import volume_chunk_key, volume_pack_key
from thaw_core.schema import VolumeEntry
from thaw_core.volumes import CHUNK_SIZE, VolumeError
from thaw_core.volumes.refs import ChunkRef, ChunkRefError, parse_ref

from thaw_volumes.store import VolumeStore


def expected_sizes(changes: list[VolumeEntry]) -> tuple[dict[str, int], list[tuple[str, ChunkRef]]]:
    """Each chunk blob's size as the commit's files say: CHUNK_SIZE but the
    last of a file, which holds the rest; and the packed pieces, with the
    path naming each, their lengths checked against the same rule. One
    digest named with two sizes is refused, and so is a malformed reference."""
    sizes: dict[str, int] = {}
    packed: list[tuple[str, ChunkRef]] = []
    for e in changes:
        if e.kind != "file":
            continue
        for i, r in enumerate(e.chunks):
            size = CHUNK_SIZE if i < len(e.chunks) - 1 else e.size - CHUNK_SIZE * i
            try:
                ref = parse_ref(r)
            except ChunkRefError as err:
                raise VolumeError("bad_request", f"{e.path!r}: {err}; nothing was committed") from None
            if ref.pack:
                if ref.length != size:
                    raise VolumeError(
                        "bad_request",
                        f"{e.path!r}: its piece {r} holds {ref.length} bytes, not {size} as its"
                        " size says; nothing was committed",
                    )
                packed.append((e.path, ref))
            elif sizes.setdefault(r, size) != size:
                raise VolumeError(
                    "bad_request",
                    f"{e.path!r}: chunk {r} named with two sizes; nothing was committed",
                )
    return sizes, packed


async def check_chunks(store: VolumeStore, blob: BlobStore, changes: list[VolumeEntry]) -> None:
    """Refuse a commit naming a chunk or pack that is not stored, or whose
    chunks do not make its file: every chunk but the last is CHUNK_SIZE
    bytes, and together they are the file's size; a packed piece lies within
    its pack. Every chunk and pack named is marked used now, before it is
    looked for, so collection (``thaw_volumes.gc``) leaves it while the
    commit is applied."""
    expected, packed = expected_sizes(changes)
    if expected:
        await _check_blobs(store, blob, changes, expected)
    if packed:
        await _check_packs(store, blob, packed)


async def _check_blobs(
    store: VolumeStore, blob: BlobStore, changes: list[VolumeEntry], expected: dict[str, int]
) -> None:
    recorded = await store.touch_chunks(expected)
    fresh = [d for d, (_, inserted) in recorded.items() if inserted]
    found = await blob.stat_many([volume_chunk_key(d) for d in fresh])
    stored = {d: None if info is None else info.size for d, info in zip(fresh, found, strict=True)}
    wrong = sorted(d for d, size in stored.items() if size != expected[d])
    if wrong:
        await store.forget_chunks(wrong)  # their rows say the size the commit expected
    absent = [d for d in wrong if stored[d] is None]
    if absent:
        where = next(e.path for e in changes if absent[0] in e.chunks)
        raise VolumeError(
            "bad_request",
            f"{len(absent)} chunk(s) are not stored (first: {absent[0]} of {where!r});"
            " store chunks before committing; nothing was committed",
        )
    sizes = {d: size for d, (size, _) in recorded.items()} | stored
    for d, size in sizes.items():
        if size != expected[d]:
            where = next(e.path for e in changes if d in e.chunks)
            raise VolumeError(
                "bad_request",
                f"{where!r}: its chunk {d} holds {size} bytes, not {expected[d]} as its size"
                " says; nothing was committed",
            )


async def _check_packs(
    store: VolumeStore, blob: BlobStore, packed: list[tuple[str, ChunkRef]]
) -> None:
    """The packs named are stored, each piece within its pack. A pack not
    recorded yet is looked for in the store (one look-up per pack, not per
    file) and recorded with its stored size."""
    names = sorted({ref.pack for _, ref in packed})
    sizes = await store.touch_packs(names)
    fresh = [p for p in names if p not in sizes]
    if fresh:
        found = await blob.stat_many([volume_pack_key(p) for p in fresh])
        absent = [p for p, info in zip(fresh, found, strict=True) if info is None]
        if absent:
            where = next(path for path, ref in packed if ref.pack == absent[0])
            raise VolumeError(
                "bad_request",
                f"{len(absent)} pack(s) are not stored (first: {absent[0]} of {where!r});"
                " store packs before committing; nothing was committed",
            )
        stored = {p: info.size for p, info in zip(fresh, found, strict=True) if info is not None}
        sizes |= await store.record_packs(stored)
    for path, ref in packed:
        if ref.offset + ref.length > sizes[ref.pack]:
            raise VolumeError(
                "bad_request",
                f"{path!r}: its piece {ref} lies past the end of its pack ({sizes[ref.pack]}"
                " bytes); nothing was committed",
            )
