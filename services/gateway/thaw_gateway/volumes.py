"""The volume routes: create, look up, list, delete volumes; list, read,
write (chunks, then a commit), remove and copy their files. The volumes
service owns versions: every change here is one commit sent to it; chunks
go straight to the blob store. A deploy's mounts are checked here too."""

from __future__ import annotations

from aiohttp import web
from thaw_core.contract import volume_chunk_key, volume_pack_key
from thaw_core.schema import VolumeEntry, VolumeInfo
from thaw_core.volumes import VolumeError, VolumePathError, volume_path
from thaw_core.volumes.api import (
    MAX_PACK_BYTES,
    MAX_READ_REFS,
    MAX_VOLUME_BYTES,
    ChunksMissing,
    ChunksRead,
    VolumeCommitBody,
    VolumeCopy,
    VolumeCreate,
    VolumeListing,
    VolumeRemove,
)
from thaw_core.volumes.chunks import read_pieces, stream_chunks
from thaw_core.volumes.refs import ChunkRef, ChunkRefError, parse_ref

from thaw_gateway import volume_tree
from thaw_gateway.bodies import checked_name, path_name, query_flag, read_body
from thaw_gateway.deploy import SHA256_RE, _put_upload, _sha256_param, _store_upload
from thaw_gateway.errors import (
    bad_request,
    conflict,
    invalid_state,
    json_response,
    not_found,
    too_large,
)
from thaw_gateway.state import Gateway, gateway
from thaw_gateway.volume_mounts import api_error
from thaw_gateway.volume_mounts import client as _client


def _path(raw: str) -> str:
    try:
        return volume_path(raw)
    except VolumePathError as e:
        raise bad_request(str(e)) from None


async def _volume(gw: Gateway, request: web.Request) -> VolumeInfo:
    try:
        return await _client(gw).ensure(path_name(request, "volume"))
    except VolumeError as e:
        raise api_error(e) from None


async def _entries(gw: Gateway, info: VolumeInfo, prefix: str = "") -> list[VolumeEntry]:
    try:
        return (await _client(gw).entries(info.volume_id, prefix=prefix))[1]
    except VolumeError as e:
        raise api_error(e) from None


async def _commit(
    gw: Gateway, info: VolumeInfo, changes: list[VolumeEntry], deleted: list[str]
) -> web.Response:
    try:
        done = await _client(gw).commit(info.volume_id, changes, deleted)
    except VolumeError as e:
        raise api_error(e) from None
    return json_response(done)


async def _stream(request: web.Request, size: int, chunks: list[str]) -> web.StreamResponse:
    """Send a file's chunks as they are read, never whole in memory."""
    resp = web.StreamResponse(
        headers={"Content-Type": "application/octet-stream", "Content-Length": str(size)}
    )
    await resp.prepare(request)
    async for piece in stream_chunks(gateway(request).blob, chunks):
        await resp.write(piece)
    await resp.write_eof()
    return resp


# ---------------------------------------------------------------- volumes


async def create_volume(request: web.Request) -> web.Response:
    body = await read_body(request, VolumeCreate)
    name = checked_name("volume", body.name)
    if body.max_bytes is not None and not 0 < body.max_bytes <= MAX_VOLUME_BYTES:
        # Here too: a number past 64 bits cannot even travel to the volumes service.
        raise bad_request(
            f"max_bytes must be positive and at most {MAX_VOLUME_BYTES}, got {body.max_bytes}"
        )
    client = _client(gateway(request))
    try:
        if not body.exist_ok:
            try:
                await client.ensure(name)
                raise conflict(f"volume {name!r} exists")
            except VolumeError as e:
                if e.code != "not_found":
                    raise
        info = await client.ensure(name, create_if_missing=True, max_bytes=body.max_bytes)
    except VolumeError as e:
        raise api_error(e) from None
    return json_response(info, 201)


async def list_volumes(request: web.Request) -> web.Response:
    try:
        return json_response(await _client(gateway(request)).list_all())
    except VolumeError as e:
        raise api_error(e) from None


async def get_volume(request: web.Request) -> web.Response:
    return json_response(await _volume(gateway(request), request))


async def delete_volume(request: web.Request) -> web.Response:
    try:
        return json_response(await _client(gateway(request)).delete(path_name(request, "volume")))
    except VolumeError as e:
        raise api_error(e) from None


# ---------------------------------------------------------------- contents


async def list_entries(request: web.Request) -> web.Response:
    gw = gateway(request)
    info = await _volume(gw, request)
    path = _path(request.query.get("path", ""))
    found = volume_tree.listing(
        await _entries(gw, info, path), path, query_flag(request, "recursive")
    )
    if found is None:
        raise not_found(f"no file or directory {path!r} in volume {info.name!r}")
    return json_response(VolumeListing(version=info.version, entries=found))


async def read_file(request: web.Request) -> web.StreamResponse:
    gw = gateway(request)
    info = await _volume(gw, request)
    path = _path(request.query.get("path", ""))
    entry = volume_tree.find(await _entries(gw, info, path), path)
    if entry is None:
        raise not_found(f"no file {path!r} in volume {info.name!r}")
    if entry.kind != "file":
        raise invalid_state(f"{path or '/'!r} is a directory in volume {info.name!r}")
    return await _stream(request, entry.size, entry.chunks)


async def commit(request: web.Request) -> web.Response:
    gw = gateway(request)
    info = await _volume(gw, request)
    body = await read_body(request, VolumeCommitBody)
    if not body.force and body.changes:
        entries = await _entries(gw, info)
        present = {e.path for e in entries if not e.deleted and e.kind == "file"}
        clash = sorted({_path(e.path) for e in body.changes} & present)
        if clash:
            raise conflict(
                f"{len(clash)} file(s) exist in volume {info.name!r} (first: {clash[0]!r});"
                " force=True replaces them"
            )
    return await _commit(gw, info, body.changes, body.deleted)


async def remove(request: web.Request) -> web.Response:
    gw = gateway(request)
    info = await _volume(gw, request)
    body = await read_body(request, VolumeRemove)
    path = _path(body.path)
    here = volume_tree.find(await _entries(gw, info, path), path)
    if here is None:
        raise not_found(f"no file or directory {path!r} in volume {info.name!r}")
    if here.kind == "dir" and not body.recursive:
        raise invalid_state(
            f"{path or '/'!r} is a directory; recursive=True removes it with everything under it"
        )
    return await _commit(gw, info, [], [path])


async def copy(request: web.Request) -> web.Response:
    gw = gateway(request)
    info = await _volume(gw, request)
    body = await read_body(request, VolumeCopy)
    if not body.src_paths:
        raise bad_request("src_paths is empty")
    sources = [_path(p) for p in body.src_paths]
    made = volume_tree.copies(await _entries(gw, info), sources, _path(body.dst), body.recursive)
    if isinstance(made, str):
        # The volume's contents refuse it (a missing source too: a 404 would
        # say the volume is not there).
        raise invalid_state(made)
    return await _commit(gw, info, made, [])


# ---------------------------------------------------------------- chunks


async def missing_chunks(request: web.Request) -> web.Response:
    body = await read_body(request, ChunksMissing)
    bad = [d for d in body.digests if not SHA256_RE.fullmatch(d)]
    if bad:
        raise bad_request(f"{bad[0]!r} is not a sha256: expected 64 lowercase hex digits")
    # A few lookups at once: one after another, a put of 10,000 small files
    # waited on 10,000 round trips to an object store here.
    asked = list(dict.fromkeys(body.digests))
    found = await gateway(request).blob.stat_many([volume_chunk_key(d) for d in asked])
    missing = [d for d, info in zip(asked, found, strict=True) if info is None]
    return json_response(ChunksMissing(digests=missing))


# One path template for GET, HEAD and PUT (``{chunk}``: a resource is one set
# of methods); PUT takes only a plain sha256 there.
async def head_chunk(request: web.Request) -> web.Response:
    await _stored_chunk(request)
    return web.Response(status=200)


async def put_chunk(request: web.Request) -> web.Response:
    return await _put_upload(request, volume_chunk_key, "volume chunk", "chunk")


async def get_chunk(request: web.Request) -> web.StreamResponse:
    """A chunk by its sha256, or a small file's piece by its packed reference
    (as a file's entry names it: ``sha256@pack:offset:length``)."""
    raw, size = await _stored_chunk(request)
    return await _stream(request, size, [raw])


async def _stored_chunk(request: web.Request) -> tuple[str, int]:
    """The path's chunk reference and its size; 404 when it is not stored
    (or, packed, its piece lies past the pack's end)."""
    raw = request.match_info["chunk"]
    try:
        ref = parse_ref(raw)
    except ChunkRefError as e:
        raise bad_request(str(e)) from None
    (size,) = await _stored_lengths(gateway(request), [raw], [ref])
    return raw, size


async def read_chunks(request: web.Request) -> web.StreamResponse:
    """Many small files' pieces in one answer, in the order asked: a get of
    10,000 small files is a few requests, not 10,000."""
    body = await read_body(request, ChunksRead)
    if len(body.refs) > MAX_READ_REFS:
        raise bad_request(f"{len(body.refs)} pieces asked for; at most {MAX_READ_REFS} at once")
    try:
        refs = [parse_ref(r) for r in body.refs]
    except ChunkRefError as e:
        raise bad_request(str(e)) from None
    lengths = await _stored_lengths(gateway(request), body.refs, refs)
    if sum(lengths) > MAX_PACK_BYTES:
        raise too_large(
            f"the pieces asked for hold {sum(lengths)} bytes; at most {MAX_PACK_BYTES} at once"
        )
    resp = web.StreamResponse(
        headers={"Content-Type": "application/octet-stream", "Content-Length": str(sum(lengths))}
    )
    await resp.prepare(request)
    async for piece in read_pieces(gateway(request).blob, refs, MAX_PACK_BYTES):
        await resp.write(piece)
    await resp.write_eof()
    return resp


async def _stored_lengths(gw: Gateway, raws: list[str], refs: list[ChunkRef]) -> list[int]:
    """Each piece's length; 404 for one not stored (or past its pack's end).
    One look-up for every blob named, not one per piece."""
    keys = sorted({r.key for r in refs})
    stored = dict(zip(keys, await gw.blob.stat_many(keys), strict=True))
    lengths = []
    for raw, ref in zip(raws, refs, strict=True):
        info = stored[ref.key]
        if info is None or ref.offset + ref.length > info.size:
            raise not_found(f"no volume chunk {raw}")
        lengths.append(ref.length if ref.pack else info.size)
    return lengths


async def put_pack(request: web.Request) -> web.Response:
    """Store many small files' content as one blob; their entries then name
    their pieces in it (``sha256@pack:offset:length``)."""
    sha = _sha256_param(request)
    stored = await _store_upload(
        request, volume_pack_key(sha), sha, "volume pack", limit=MAX_PACK_BYTES
    )
    return json_response(stored, 201)
