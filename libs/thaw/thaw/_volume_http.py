"""The volume routes of the gateway from the SDK's side (``thaw_core.volumes.api``),
and moving files: uploads as chunks (hashed here, only those the store lacks
are sent, a few at a time), then one commit; reads chunk by chunk. Nothing
holds a whole file in memory: at most ``UPLOADS_IN_FLIGHT`` chunks.

Small files (under ``PACK_BELOW``) travel many to a request: packed into one
blob on the way in, read in batches (``/v1/volume-chunks:read``) on the way
out. One request each made a put of 10,000 files of a few bytes take 80 s."""

from __future__ import annotations

import asyncio
import collections
import itertools
import os
import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import quote, urlencode

import msgspec
from thaw_core.schema import VolumeEntry, VolumeInfo
from thaw_core.volumes import CHUNK_SIZE, chunk_digests
from thaw_core.volumes.api import (
    MAX_PACK_BYTES,
    MAX_READ_REFS,
    ChunksMissing,
    ChunksRead,
    VolumeCommitBody,
    VolumeCopy,
    VolumeCreate,
    VolumeListing,
    VolumeRemove,
)
from thaw_core.volumes.chunks import PACK_BELOW, pack_pieces, read_small
from thaw_core.volumes.refs import parse_ref

from thaw import exception
from thaw._reconnect import reconnecting
from thaw.client import current, gateway_error
from thaw.transport import JSON

T = TypeVar("T")
UPLOADS_IN_FLIGHT = 8
# Chunks of one file fetched ahead of the one being written (each CHUNK_SIZE of memory).
READ_AHEAD = 4
# Digests asked about in one request.
MISSING_BATCH = 5000
# Small files read into one pack: half the largest pack by their sizes, so a
# file that grows while it is read cannot push the pack past it.
PACK_FILES = 2000
PACK_BYTES = MAX_PACK_BYTES // 2
OCTETS = "application/octet-stream"
# Answers that say the gateway is busy or restarting, not that the request
# is wrong: a request safe to send twice is sent again (within the
# reconnect window, thaw._reconnect).
BUSY_STATUSES = frozenset({502, 503, 504})

Progress = Callable[[int], None]
# What a transfer is doing now, for a progress display ("hashing 10/300 files").
Phase = Callable[[str], None]


def nothing(n: int) -> None:
    pass


def quiet(text: str) -> None:
    pass


async def _again(
    what: str, method: str, path: str, body: bytes | None = None, content_type: str = JSON
) -> tuple[int, bytes]:
    """An idempotent request (a content-addressed chunk, a lookup), sent
    again while the gateway cannot be reached or answers that it is busy: one
    lost chunk of thousands must not fail a whole upload."""

    async def attempt(resend: bool) -> tuple[int, bytes]:
        status, raw = await current().transport.request(
            method, path, body, content_type=content_type
        )
        if status in BUSY_STATUSES:
            raise exception.ConnectionError(f"HTTP {status}: {gateway_error(status, raw)}")
        return status, raw

    return await reconnecting(what, attempt)


async def _call(
    method: str,
    path: str,
    answer: type[T] | None,
    body: Any = None,
    ok: tuple[int, ...] = (200, 201),
) -> T:
    data = None if body is None else msgspec.json.encode(body)
    status, raw = await current().transport.request(method, path, data)
    return _answer(status, raw, path, answer, ok)


def _answer(
    status: int, raw: bytes, path: str, answer: type[T] | None, ok: tuple[int, ...] = (200, 201)
) -> T:
    if status not in ok:
        raise gateway_error(status, raw)
    if answer is None:
        return None  # type: ignore[return-value]
    try:
        return msgspec.json.decode(raw, type=answer)
    except msgspec.DecodeError as e:
        raise exception.ServiceError(f"the gateway answered {path} unreadably: {e}") from None


def _v(name: str, tail: str = "") -> str:
    return f"/v1/volumes/{quote(name, safe='')}{tail}"


async def create(name: str, *, exist_ok: bool, max_bytes: int | None = None) -> VolumeInfo:
    body = VolumeCreate(name=name, exist_ok=exist_ok, max_bytes=max_bytes)
    return await _call("POST", "/v1/volumes", VolumeInfo, body)


async def get(name: str) -> VolumeInfo:
    return await _call("GET", _v(name), VolumeInfo)


async def list_all() -> list[VolumeInfo]:
    return await _call("GET", "/v1/volumes", list[VolumeInfo])


async def delete(name: str) -> VolumeInfo:
    return await _call("DELETE", _v(name), VolumeInfo)


async def entries(name: str, path: str, recursive: bool) -> VolumeListing:
    query = urlencode({"path": path, "recursive": "1" if recursive else "0"})
    return await _call("GET", _v(name, f"/entries?{query}"), VolumeListing)


async def remove(name: str, path: str, recursive: bool) -> VolumeInfo:
    return await _call(
        "POST", _v(name, "/remove"), VolumeInfo, VolumeRemove(path=path, recursive=recursive)
    )


async def copy(name: str, sources: Sequence[str], dst: str, recursive: bool) -> VolumeInfo:
    body = VolumeCopy(src_paths=list(sources), dst=dst, recursive=recursive)
    return await _call("POST", _v(name, "/copy"), VolumeInfo, body)


async def file_entry(name: str, path: str) -> VolumeEntry:
    listing = await entries(name, path, False)
    if len(listing.entries) != 1 or listing.entries[0].kind != "file":
        raise exception.InvalidError(f"{path!r} is a directory in volume {name!r}, not a file")
    return listing.entries[0]


async def read_chunks(entry: VolumeEntry) -> AsyncIterator[bytes]:
    """A file's content, one chunk at a time, in order, with the next
    ``READ_AHEAD`` chunks fetched meanwhile: one after another, a 1 GiB file
    waited on 256 round trips (7.8 s on this machine)."""

    async def get(d: str) -> bytes:
        status, raw = await _again(f"reading {entry.path}", "GET", f"/v1/volume-chunks/{d}")
        if status != 200:
            raise gateway_error(status, raw)
        return raw

    ahead: collections.deque[asyncio.Task[bytes]] = collections.deque()
    left = iter(entry.chunks)
    try:
        for d in itertools.islice(left, READ_AHEAD):
            ahead.append(asyncio.ensure_future(get(d)))
        while ahead:
            piece = await ahead.popleft()
            if (d := next(left, None)) is not None:
                ahead.append(asyncio.ensure_future(get(d)))
            yield piece
    finally:
        for task in ahead:
            task.cancel()
        await asyncio.gather(*ahead, return_exceptions=True)


def _part_name(dest: Path) -> Path:
    """Where a file is written before it is renamed over ``dest``."""
    return dest.with_name(f".{dest.name}.{uuid.uuid4().hex[:8]}.part")


async def download(entry: VolumeEntry, dest: Path, on_bytes: Progress = nothing) -> None:
    """Write ``entry`` to ``dest`` (a temporary name beside it, then renamed)."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = _part_name(dest)
    try:
        with tmp.open("wb") as out:
            async for piece in read_chunks(entry):
                await asyncio.to_thread(out.write, piece)
                on_bytes(len(piece))
        os.chmod(tmp, entry.mode & 0o777)
        os.replace(tmp, dest)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _write_small(plan: Sequence[tuple[VolumeEntry, Path]], data: bytes) -> None:
    """Write small files from ``data``, their contents one after another."""
    held = sum(e.size for e, _ in plan)
    if len(data) != held:
        raise exception.ServiceError(
            f"the gateway answered {len(data)} bytes for {len(plan)} files holding {held}"
        )
    at = 0
    for entry, dest in plan:
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = _part_name(dest)
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
            with open(fd, "wb") as out:
                out.write(data[at : at + entry.size])
            os.chmod(tmp, entry.mode & 0o777)
            os.replace(tmp, dest)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        at += entry.size


def _read_batches(
    plan: Sequence[tuple[VolumeEntry, Path]],
) -> list[list[tuple[VolumeEntry, Path]]]:
    """Small files in batches that one ``:read`` answers, in the order of
    their pieces in their packs (so that the gateway reads a run at once)."""
    ordered = sorted(plan, key=lambda p: parse_ref(p[0].chunks[0])[1:3] if p[0].chunks else ("", 0))
    batches: list[list[tuple[VolumeEntry, Path]]] = [[]]
    held = 0
    for entry, dest in ordered:
        if len(batches[-1]) >= MAX_READ_REFS or held + entry.size > MAX_PACK_BYTES:
            batches.append([])
            held = 0
        batches[-1].append((entry, dest))
        held += entry.size
    return [b for b in batches if b]


async def download_many(
    plan: Sequence[tuple[VolumeEntry, Path]],
    on_bytes: Progress = nothing,
    on_phase: Phase = quiet,
) -> None:
    """``download`` each (entry, destination): small files a batch to a
    request, the others ``UPLOADS_IN_FLIGHT`` at a time."""
    gate = asyncio.Semaphore(UPLOADS_IN_FLIGHT)
    done = 0

    def finished(files: int) -> None:
        nonlocal done
        done += files
        on_phase(f"{done:,}/{len(plan):,} files")

    small = [(e, dest) for e, dest in plan if len(e.chunks) <= 1 and e.size < PACK_BELOW]
    for batch in _read_batches(small):
        refs = [e.chunks[0] for e, _ in batch if e.chunks]
        status, raw = await _again(
            f"reading {len(batch):,} files", "POST", "/v1/volume-chunks:read",
            msgspec.json.encode(ChunksRead(refs=refs)),
        )  # fmt: skip
        if status != 200:
            raise gateway_error(status, raw)
        await asyncio.to_thread(_write_small, batch, raw)
        on_bytes(len(raw))
        finished(len(batch))

    async def one(entry: VolumeEntry, dest: Path) -> None:
        async with gate:
            await download(entry, dest, on_bytes)
        finished(1)

    taken = {id(e) for e, _ in small}
    await asyncio.gather(*(one(e, dest) for e, dest in plan if id(e) not in taken))


@dataclass(frozen=True)
class Upload:
    local: Path
    remote: str
    mode: int | None = None


async def upload(
    name: str,
    files: Sequence[Upload],
    *,
    force: bool,
    on_bytes: Progress = nothing,
    on_phase: Phase = quiet,
) -> VolumeInfo:
    """Store the files' chunks that the store lacks, then commit them as one
    version. ``on_bytes`` counts the bytes stored or found stored;
    ``on_phase`` says which step it is at (hashing, sending, committing)."""
    count = len(files)
    stats = await asyncio.to_thread(lambda: [f.local.stat() for f in files])
    entries: list[VolumeEntry | None] = [None] * count
    small = [i for i, st in enumerate(stats) if st.st_size < PACK_BELOW]
    grown = await _upload_small(files, stats, small, entries, on_bytes, on_phase)
    where: dict[str, tuple[Path, int]] = {}
    large = [i for i, st in enumerate(stats) if st.st_size >= PACK_BELOW] + grown
    for n, i in enumerate(large, 1):
        on_phase(f"hashing {n:,}/{len(large):,} large files")
        st, size, digests = await asyncio.to_thread(_describe, files[i].local)
        for k, d in enumerate(digests):
            where.setdefault(d, (files[i].local, k))
        entries[i] = _entry(files[i], st, size, digests)
    described = [e for e in entries if e is not None]
    assert len(described) == count
    on_phase(f"looking up {len(where):,} chunks")
    missing: list[str] = []
    unique = list(where)
    for i in range(0, len(unique), MISSING_BATCH):
        batch = ChunksMissing(digests=unique[i : i + MISSING_BATCH])
        status, raw = await _again(
            "looking up chunks", "POST", "/v1/volume-chunks:missing", msgspec.json.encode(batch)
        )
        missing += _answer(status, raw, "/v1/volume-chunks:missing", ChunksMissing).digests
    lacking = set(missing)
    for d in unique:
        if d not in lacking:
            on_bytes(_chunk_size(*where[d]))
    gate = asyncio.Semaphore(UPLOADS_IN_FLIGHT)
    sent = 0

    async def send(d: str) -> None:
        nonlocal sent
        async with gate:
            local, index = where[d]
            piece = await asyncio.to_thread(_read_piece, local, index)
            status, raw = await _again(
                f"sending {local}", "PUT", f"/v1/volume-chunks/{d}", piece, OCTETS
            )
            if status not in (200, 201):
                raise gateway_error(status, raw)
            sent += 1
            on_phase(f"sending {sent:,}/{len(missing):,} chunks")
            on_bytes(len(piece))

    await asyncio.gather(*(send(d) for d in missing))
    on_phase(f"committing {count:,} files")
    body = VolumeCommitBody(changes=described, force=force)
    try:
        return await _call("POST", _v(name, "/commit"), VolumeInfo, body)
    except exception.Error as e:
        # The chunks are stored; which step failed, on which volume, says
        # what to do (send it again, or see whether the commit landed).
        raise type(e)(f"committing {count:,} file(s) to volume {name!r}: {e}") from None


def _entry(f: Upload, st: os.stat_result, size: int, chunks: list[str]) -> VolumeEntry:
    mode = f.mode if f.mode is not None else st.st_mode & 0o777
    return VolumeEntry(path=f.remote, size=size, chunks=chunks, mode=mode, mtime=st.st_mtime)


async def _upload_small(
    files: Sequence[Upload],
    stats: Sequence[os.stat_result],
    small: list[int],
    entries: list[VolumeEntry | None],
    on_bytes: Progress,
    on_phase: Phase,
) -> list[int]:
    """Store the small files (``small``: their indexes) in packs, a few
    thousand to a pack, and fill in their entries; the indexes of those that
    grew to a whole chunk since their stat, to be sent as large files."""
    grown: list[int] = []
    packed = 0
    for batch in _pack_batches(small, stats):
        read = await asyncio.to_thread(read_small, [files[i].local for i in batch])
        pieces = {got[1]: got[0] for got in read if got is not None and got[0]}
        refs: dict[str, str] = {}
        if pieces:
            data, pack, refs = await asyncio.to_thread(pack_pieces, pieces)
            status, raw = await _again(
                f"sending {len(batch):,} small files", "PUT", f"/v1/volume-packs/{pack}", data,
                OCTETS,
            )  # fmt: skip
            if status not in (200, 201):
                raise gateway_error(status, raw)
        for i, got in zip(batch, read, strict=True):
            if got is None:
                grown.append(i)
                continue
            piece, d = got
            entries[i] = _entry(files[i], stats[i], len(piece), [refs[d]] if piece else [])
            on_bytes(len(piece))
        packed += len(batch)
        on_phase(f"sending {packed:,}/{len(small):,} small files")
    return grown


def _pack_batches(small: list[int], stats: Sequence[os.stat_result]) -> list[list[int]]:
    batches: list[list[int]] = [[]]
    held = 0
    for i in small:
        size = stats[i].st_size
        if len(batches[-1]) >= PACK_FILES or (batches[-1] and held + size > PACK_BYTES):
            batches.append([])
            held = 0
        batches[-1].append(i)
        held += size
    return [b for b in batches if b]


def _describe(path: Path) -> tuple[os.stat_result, int, list[str]]:
    """A file's stat, size and chunk digests: one trip to a thread per file."""
    st = path.stat()
    size, digests = chunk_digests(path)
    return st, size, digests


def _read_piece(path: Path, index: int) -> bytes:
    with path.open("rb") as f:
        f.seek(index * CHUNK_SIZE)
        return f.read(CHUNK_SIZE)


def _chunk_size(path: Path, index: int) -> int:
    return max(0, min(CHUNK_SIZE, path.stat().st_size - index * CHUNK_SIZE))
