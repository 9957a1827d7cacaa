"""Volumes in Postgres: create, look up, delete, list; pages of entries; and
applying one commit, in one transaction under the volume's row lock (so
commits to one volume apply one at a time, in order, across every replica).

A commit either lands whole or not at all: a failure anywhere rolls the
transaction back and the volume stays at its last good version.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass

import asyncpg
from thaw_core.db import Database
from thaw_core.schema import VolumeEntry, VolumeInfo, check_name
from thaw_core.volumes import CHUNK_SIZE, VolumeError, VolumePathError, ancestors, volume_path
from thaw_core.volumes.api import MAX_VOLUME_BYTES
from thaw_core.volumes.refs import is_packed, ref_pack

# One page of entries stays well inside a NATS message.
PAGE_ROWS = 1000
PAGE_BYTES = 512 * 1024

_INFO = """
SELECT name, id, version, size_bytes, files, max_bytes,
       extract(epoch FROM created_at)::float8 AS created_at,
       extract(epoch FROM updated_at)::float8 AS updated_at
FROM volumes
"""


def _info(row: asyncpg.Record) -> VolumeInfo:
    return VolumeInfo(
        name=row["name"],
        volume_id=row["id"],
        version=row["version"],
        size_bytes=row["size_bytes"],
        files=row["files"],
        max_bytes=row["max_bytes"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
    )


def _entry(row: asyncpg.Record) -> VolumeEntry:
    return VolumeEntry(
        path=row["path"],
        kind=row["kind"],
        size=row["size"],
        mode=row["mode"],
        mtime=row["mtime"],
        chunks=list(row["chunks"]),
        version=row["version"],
        deleted=row["deleted"],
    )


def _entry_bytes(e: VolumeEntry) -> int:
    return len(e.path.encode()) + sum(len(c) + 6 for c in e.chunks) + 120


def _checked_name(name: str) -> str:
    try:
        return check_name("volume", name)
    except ValueError as e:
        raise VolumeError("bad_request", str(e)) from None


@dataclass(frozen=True)
class Commit:
    """A commit's changes, checked: stored paths, one entry per path."""

    changes: list[VolumeEntry]
    deleted: list[str]


def check_commit(changes: list[VolumeEntry], deleted: list[str]) -> Commit:
    """Refuse paths that are not stored paths (climbing out, the root) and a
    commit that writes a file both as a file and as a directory above another."""
    by_path: dict[str, VolumeEntry] = {}
    try:
        for e in changes:
            path = volume_path(e.path)
            if not path or path != e.path:
                raise VolumePathError(f"entry path {e.path!r} is not a volume path")
            if e.kind == "file" and len(e.chunks) != -(-e.size // CHUNK_SIZE):
                raise VolumePathError(f"{path}: {len(e.chunks)} chunks do not make {e.size} bytes")
            if e.kind == "dir" and (e.chunks or e.size):
                raise VolumePathError(f"{path}: a directory has no content")
            by_path[path] = e
        gone = [volume_path(p) for p in deleted]
    except VolumePathError as e:
        raise VolumeError("bad_request", str(e)) from None
    for path in by_path:
        for above in ancestors(path):
            if (parent := by_path.get(above)) is not None and parent.kind == "file":
                raise VolumeError(
                    "bad_request", f"{above!r} is written as a file and as a directory of {path!r}"
                )
    return Commit(changes=list(by_path.values()), deleted=gone)


class VolumeStore:
    def __init__(self, db: Database, default_max_bytes: int) -> None:
        self.db = db
        self.default_max_bytes = default_max_bytes

    async def ensure(self, name: str, create: bool, max_bytes: int | None) -> VolumeInfo:
        name = _checked_name(name)
        if max_bytes is not None and not 0 < max_bytes <= MAX_VOLUME_BYTES:
            raise VolumeError(
                "bad_request",
                f"max_bytes must be positive and at most {MAX_VOLUME_BYTES}, got {max_bytes}",
            )
        if create:
            await self.db.execute(
                "INSERT INTO volumes (id, name, max_bytes) VALUES ($1, $2, $3)"
                " ON CONFLICT (name) DO NOTHING",
                "vo-" + uuid.uuid4().hex,
                name,
                max_bytes or self.default_max_bytes,
            )
        row = await self.db.fetchrow(_INFO + " WHERE name = $1", name)
        if row is None:
            raise VolumeError(
                "not_found",
                f"no volume named {name!r} (Volume.from_name({name!r}, create_if_missing=True)"
                f" or `thaw volume create {name}` makes it)",
            )
        return _info(row)

    async def delete(self, name: str) -> VolumeInfo:
        name = _checked_name(name)
        async with self.db.transaction() as con:
            row = await con.fetchrow(_INFO + " WHERE name = $1 FOR UPDATE", name)
            if row is None:
                raise VolumeError("not_found", f"no volume named {name!r}")
            await con.execute("DELETE FROM volumes WHERE id = $1", row["id"])
        return _info(row)

    async def list_all(self) -> list[VolumeInfo]:
        return [_info(r) for r in await self.db.fetch(_INFO + " ORDER BY name")]

    async def entries(
        self, volume_id: str, since: int, after: str, prefix: str, deletions: bool
    ) -> tuple[int, list[VolumeEntry], bool]:
        try:
            prefix = volume_path(prefix)
        except VolumePathError as e:
            raise VolumeError("bad_request", str(e)) from None
        version = await self.db.fetchval("SELECT version FROM volumes WHERE id = $1", volume_id)
        if version is None:
            raise VolumeError("not_found", "the volume was deleted")
        rows = await self.db.fetch(
            "SELECT path, kind, size, mode, mtime, chunks, version, deleted FROM volume_files"
            " WHERE volume_id = $1 AND version > $2 AND path > $3 AND ($6 OR NOT deleted)"
            " AND ($4 = '' OR path = $4 OR (path > $4 || '/' AND path < $4 || '0'))"
            " ORDER BY path LIMIT $5",
            volume_id,
            since,
            after,
            prefix,
            PAGE_ROWS,
            deletions,
        )
        page: list[VolumeEntry] = []
        budget = PAGE_BYTES
        for row in rows:
            e = _entry(row)
            budget -= _entry_bytes(e)
            if budget < 0 and page:
                return version, page, True
            page.append(e)
        return version, page, len(rows) == PAGE_ROWS

    async def touch_chunks(self, sizes: dict[str, int]) -> dict[str, tuple[int, bool]]:
        """Mark the chunks a commit names as used now (so collection leaves
        them for its grace period), recording those not recorded yet with
        the size the commit expects; for each, its recorded size and whether
        it was recorded just now (unchecked: the caller looks in the store).
        A row that collection holds is waited for: gone, it is made anew."""
        rows = await self.db.fetch(
            "INSERT INTO volume_chunks (digest, size)"
            " SELECT * FROM unnest($1::text[], $2::bigint[]) ORDER BY 1"
            " ON CONFLICT (digest) DO UPDATE SET used_at = now()"
            " RETURNING digest, size, (xmax = 0) AS inserted",
            list(sizes),
            list(sizes.values()),
        )
        return {r["digest"]: (r["size"], r["inserted"]) for r in rows}

    async def touch_packs(self, packs: list[str]) -> dict[str, int]:
        """Mark the recorded ones of these packs used now; answer their
        recorded sizes. A row that collection holds is waited for: gone, the
        pack is looked for again (``record_packs``)."""
        rows = await self.db.fetch(
            "UPDATE volume_packs SET used_at = now() WHERE pack IN"
            " (SELECT pack FROM volume_packs WHERE pack = ANY($1::text[]) ORDER BY pack FOR UPDATE)"
            " RETURNING pack, size",
            packs,
        )
        return {r["pack"]: r["size"] for r in rows}

    async def record_packs(self, sizes: dict[str, int]) -> dict[str, int]:
        """Record packs found in the store, used now; answer their sizes."""
        rows = await self.db.fetch(
            "INSERT INTO volume_packs (pack, size)"
            " SELECT * FROM unnest($1::text[], $2::bigint[]) ORDER BY 1"
            " ON CONFLICT (pack) DO UPDATE SET used_at = now() RETURNING pack, size",
            list(sizes),
            list(sizes.values()),
        )
        return {r["pack"]: r["size"] for r in rows}

    async def forget_chunks(self, digests: list[str]) -> None:
        """Drop rows ``touch_chunks`` just made for chunks that are not stored."""
        await self.db.execute(
            "DELETE FROM volume_chunks WHERE digest = ANY($1::text[])"
            " AND NOT EXISTS (SELECT 1 FROM volume_files WHERE chunks @> ARRAY[digest])",
            digests,
        )

    async def apply(self, volume_id: str, commit_id: str, commit: Commit) -> VolumeInfo:
        async with self.db.transaction() as con:
            row = await con.fetchrow(_INFO + " WHERE id = $1 FOR UPDATE", volume_id)
            if row is None:
                raise VolumeError("conflict", "the volume was deleted; nothing was committed")
            done = await con.fetchval(
                "SELECT version FROM volume_versions WHERE volume_id = $1 AND commit_id = $2",
                volume_id,
                commit_id,
            )
            if done is not None:
                return _info(row)
            await _hold_chunks(con, commit)
            version = row["version"] + 1
            gone_bytes, gone_files = await _delete(con, volume_id, version, commit)
            new_bytes = sum(e.size for e in commit.changes if e.kind == "file")
            new_files = sum(1 for e in commit.changes if e.kind == "file")
            await _upsert(con, volume_id, version, commit.changes)
            size = row["size_bytes"] - gone_bytes + new_bytes
            if size > row["max_bytes"]:
                raise VolumeError(
                    "too_large",
                    f"volume {row['name']!r} would hold {size} bytes after this commit, over its"
                    f" limit of {row['max_bytes']}; nothing was committed",
                )
            await con.execute(
                "INSERT INTO volume_versions (volume_id, version, commit_id, changed, deleted)"
                " VALUES ($1, $2, $3, $4, $5)",
                volume_id,
                version,
                commit_id,
                len(commit.changes),
                len(commit.deleted),
            )
            updated = await con.fetchrow(
                "UPDATE volumes SET version = $2, size_bytes = $3, files = $4, updated_at = now()"
                " WHERE id = $1 RETURNING name, id, version, size_bytes, files, max_bytes,"
                " extract(epoch FROM created_at)::float8 AS created_at,"
                " extract(epoch FROM updated_at)::float8 AS updated_at",
                volume_id,
                version,
                size,
                row["files"] - gone_files + new_files,
            )
            assert updated is not None
            return _info(updated)


# The rows a commit replaces or removes: paths deleted ($3) with everything
# under them; whatever a written entry replaces: a file where a written path
# needs a directory ($4, files only), anything under a written file ($5), and
# the written paths themselves ($6), which _upsert then writes again.
# What lies under any of the paths in an array: one range scan of the
# primary key per path (a test of every row against every path was
# quadratic: 10,000 files written again over 10,000 took minutes).
_UNDER = """
path IN (SELECT f.path FROM unnest({}::text[]) d(p) JOIN volume_files f
         ON f.volume_id = $1 AND f.path > d.p || '/' AND f.path < d.p || '0')
"""
_TARGETS = f"""
volume_id = $1 AND NOT deleted AND version < $2 AND (
    path = ANY($3::text[])
    OR {_UNDER.format("$3")}
    OR (kind = 'file' AND path = ANY($4::text[]))
    OR {_UNDER.format("$5")}
    OR path = ANY($6::text[])
)
"""
_ALL = "volume_id = $1 AND NOT deleted AND version < $2"

# packs: the packs the chunk references name (sha256@pack:offset:length).
_UPSERT = """
INSERT INTO volume_files
    (volume_id, path, kind, size, mode, mtime, chunks, packs, version, deleted)
SELECT $1, e.path, e.kind, e.size, e.mode, e.mtime,
       ARRAY(SELECT jsonb_array_elements_text(e.chunks)),
       ARRAY(SELECT DISTINCT split_part(split_part(c, '@', 2), ':', 1)
             FROM jsonb_array_elements_text(e.chunks) AS c WHERE strpos(c, '@') > 0),
       $2, false
FROM jsonb_to_recordset($3::jsonb)
     AS e(path text, kind text, size bigint, mode integer, mtime float8, chunks jsonb)
ON CONFLICT (volume_id, path) DO UPDATE SET
    kind = EXCLUDED.kind, size = EXCLUDED.size, mode = EXCLUDED.mode, mtime = EXCLUDED.mtime,
    chunks = EXCLUDED.chunks, packs = EXCLUDED.packs, version = EXCLUDED.version, deleted = false
"""


async def _delete(
    con: asyncpg.Connection, volume_id: str, version: int, commit: Commit
) -> tuple[int, int]:
    """Mark what the commit removes or replaces deleted at ``version``;
    answer the bytes and files the volume held there."""
    written = [e.path for e in commit.changes]
    if "" in commit.deleted:  # the root: everything
        where, args = _ALL, ()
    else:
        above = sorted({a for p in written for a in ancestors(p)})
        files = [e.path for e in commit.changes if e.kind == "file"]
        where, args = _TARGETS, (commit.deleted, above, files, written)
    # The volume's row lock keeps other commits off these rows meanwhile.
    row = await con.fetchrow(
        "SELECT coalesce(sum(size), 0)::bigint AS bytes,"
        f" count(*) FILTER (WHERE kind = 'file') AS files FROM volume_files WHERE {where}",
        volume_id,
        version,
        *args,
    )
    await con.execute(
        "UPDATE volume_files SET deleted = true, version = $2, size = 0, chunks = '{}', packs = '{}'"
        f" WHERE {where}",
        volume_id,
        version,
        *args,
    )
    assert row is not None
    return row["bytes"], row["files"]


async def _hold_chunks(con: asyncpg.Connection, commit: Commit) -> None:
    """Hold the rows of the chunks and packs the commit names until it is
    applied; one collected since it was checked is refused (collection
    removes the blob before the row)."""
    # The references were checked (thaw_volumes.chunks) before this.
    refs = {r for e in commit.changes for r in e.chunks}
    for what, table, column, names in (
        ("chunk", "volume_chunks", "digest", sorted(r for r in refs if not is_packed(r))),
        ("pack", "volume_packs", "pack", sorted({ref_pack(r) for r in refs if is_packed(r)})),
    ):
        if not names:
            continue
        held = await con.fetchval(
            f"SELECT count(*) FROM (SELECT 1 FROM {table} WHERE {column} = ANY($1::text[])"
            f" ORDER BY {column} FOR SHARE) AS held",
            names,
        )
        if held != len(names):
            raise VolumeError(
                "bad_request",
                f"{len(names) - held} {what}(s) of this commit were collected as unused while"
                " it was checked; store them again and commit again; nothing was committed",
            )


async def _upsert(
    con: asyncpg.Connection, volume_id: str, version: int, changes: list[VolumeEntry]
) -> None:
    if changes:
        await con.execute(_UPSERT, volume_id, version, changes)
