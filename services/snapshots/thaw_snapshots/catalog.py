"""The snapshot catalog in Postgres (migration 0004_snapshots): which
snapshot a node restores, who makes a missing one, and the state changes that
the agents' lifecycle events and the gateway's app events cause.

Every write is one idempotent-enough statement: events arrive at least once,
and ``Database`` may retry a statement whose connection died. Counters
(restores, failures) are kept exact by remembering each ``SnapshotRestored``'s
event id in the statement that counts it. A claim
insert retried after a lost connection may have committed the first time:
the asker then gets neither, and the orphan claim ends with its lease.
"""

from __future__ import annotations

import logging
import re
import uuid
from dataclasses import dataclass
from typing import Any

import msgspec
from thaw_core.blob import check_key
from thaw_core.contract import snapshot_key
from thaw_core.db import Database
from thaw_core.fingerprint import compatible, fingerprint_id
from thaw_core.schema import (
    AppEvent,
    Fingerprint,
    SnapshotInfo,
    SnapshotLookup,
    SnapshotLookupReply,
    SnapshotRestored,
    check_name,
)

log = logging.getLogger("thaw.snapshots")

SNAPSHOT_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,127}$")
_SHA256_RE = re.compile(r"^[0-9a-f]{64}$")


@dataclass(frozen=True)
class Policy:
    # A "creating" claim older than this is presumed dead (its node crashed
    # or gave up without saying so): the next lookup may claim anew.
    claim_lease_s: float = 600.0
    # Failed restores in a row that make a ready snapshot suspect.
    suspect_after: int = 2
    # How long a suspect snapshot's row is kept for `thaw snapshot list`.
    keep_suspect_s: float = 24 * 3600.0
    # A class whose snapshot failed to be made this often within
    # creation_backoff_s gets no claim until the window has passed: a function
    # that cannot be checkpointed (it holds a TCP connection, say) must not
    # pay for a checkpoint attempt on every cold start.
    max_failed_creations: int = 3
    # Restore events remembered (to count a redelivered one once): beyond the
    # EVENTS stream's max age nothing is redelivered.
    keep_restore_events_s: float = 2 * 3600.0
    creation_backoff_s: float = 600.0
    # Good restores in a row no faster than the cold start that made the
    # snapshot (times ``slow_ratio``) that make it "unhelpful": one slow
    # restore on a busy node, or the first one's download, proves nothing,
    # and one faster restore starts the count again. Once unhelpful it is
    # never handed out, so the verdict cannot flap; a redeploy starts over.
    unhelpful_after: int = 3
    slow_ratio: float = 1.0


# Columns of a SnapshotInfo, in the shape msgspec.convert takes.
_INFO_COLUMNS = """snapshot_id, app, function, version, fingerprint, fingerprint_id, blob_key,
    size, sha256, extract(epoch FROM created_at)::float8 AS created_at, restores, failures, state,
    cold_start_s, restore_s, error"""

# Unhelpful ones too: one that serves a node's class means "start cold", not
# "make one".
_READY = f"""
SELECT {_INFO_COLUMNS} FROM snapshots
WHERE app = $1 AND function = $2 AND version = $3 AND state IN ('ready', 'unhelpful')
ORDER BY created_at DESC
"""

_EXPIRE_CLAIM = """
UPDATE snapshots SET state = 'obsolete', updated_at = now()
WHERE app = $1 AND function = $2 AND version = $3 AND fingerprint_id = $4
  AND state = 'creating' AND claimed_at < now() - make_interval(secs => $5)
"""

_CLAIM = f"""
INSERT INTO snapshots (snapshot_id, app, function, version, fingerprint, fingerprint_id,
                       blob_key, state, claimed_by, claimed_at)
VALUES ($1, $2, $3, $4, $5, $6, $7, 'creating', $8, now())
ON CONFLICT (app, function, version, fingerprint_id) WHERE state = 'creating' DO NOTHING
RETURNING {_INFO_COLUMNS}
"""

# ``thaw run``'s apps live for one run: a snapshot would never be restored
# (upstream makes snapshots for deployed apps only).
_EPHEMERAL = "SELECT ephemeral FROM apps WHERE name = $1"

_WITHDRAW_CLAIM = "DELETE FROM snapshots WHERE snapshot_id = $1 AND state = 'creating'"

# Ready with its blob; an obsolete claim (redeployed meanwhile) only records
# the blob, so that GC deletes it.
_CREATED = """
UPDATE snapshots SET
    blob_key = $2, size = $3, sha256 = $4, cold_start_s = $5,
    created_at = CASE WHEN state = 'creating' THEN now() ELSE created_at END,
    state = CASE WHEN state = 'creating' THEN 'ready' ELSE state END,
    updated_at = now()
WHERE snapshot_id = $1
RETURNING state
"""

# A Created whose claim row is gone (GC took it, or it never had one): kept
# as ready; GC's sweep obsoletes it if its version is no longer deployed.
_CREATED_UNCLAIMED = """
INSERT INTO snapshots (snapshot_id, app, function, version, fingerprint, fingerprint_id,
                       blob_key, size, sha256, cold_start_s, state)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, 'ready')
ON CONFLICT (snapshot_id) DO NOTHING
"""

# A failed creation is kept (obsolete, size 0, failures 1) for the backoff
# window: the rows within it are the class's recent failed creations.
_DROP_CLAIM = """
UPDATE snapshots SET state = 'obsolete', failures = failures + 1, error = $2, updated_at = now()
WHERE snapshot_id = $1 AND state = 'creating'
RETURNING snapshot_id
"""

_FAILED_CREATIONS = """
SELECT count(*) FROM snapshots
WHERE app = $1 AND function = $2 AND version = $3 AND fingerprint_id = $4
  AND state = 'obsolete' AND size = 0 AND failures > 0
  AND updated_at > now() - make_interval(secs => $5)
"""

# Each statement counts the event only if its id is new (``fresh``), so that
# a redelivered SnapshotRestored is counted once; $2 is its event id.
_FRESH_EVENT = """
WITH fresh AS (
    INSERT INTO snapshot_restore_events (event_id) VALUES ($2)
    ON CONFLICT DO NOTHING RETURNING event_id
)
"""

# $3: the restore's seconds, $4: unhelpful_after, $5: slow_ratio (cast: a
# bare "$3 > 0" would make them integers). A restore
# is slow when it took no less than the cold start (measured, and times the
# ratio); a snapshot without a measured cold start, or a restore without
# seconds, is never judged. SET expressions see the row as it was.
_SLOW = "(cold_start_s > 0 AND $3::float8 > 0 AND $3::float8 >= cold_start_s * $5::float8)"
_RESTORED_OK = _FRESH_EVENT + f"""
UPDATE snapshots SET
    restores = restores + 1, failure_streak = 0,
    restore_s = CASE WHEN $3::float8 > 0 THEN $3::float8 ELSE restore_s END,
    slow_streak = CASE WHEN {_SLOW} THEN slow_streak + 1 ELSE 0 END,
    state = CASE WHEN state = 'ready' AND {_SLOW} AND slow_streak + 1 >= $4 THEN 'unhelpful'
                 ELSE state END,
    updated_at = CASE WHEN state = 'ready' AND {_SLOW} AND slow_streak + 1 >= $4 THEN now()
                      ELSE updated_at END
WHERE snapshot_id = $1 AND EXISTS (SELECT 1 FROM fresh)
RETURNING state
"""

# SET expressions all see the row as it was, so failure_streak + 1 is the new streak.
_RESTORE_FAILED = _FRESH_EVENT + """
UPDATE snapshots SET
    failures = failures + 1,
    failure_streak = failure_streak + 1,
    state = CASE WHEN state = 'ready' AND failure_streak + 1 >= $3 THEN 'suspect' ELSE state END,
    updated_at = CASE WHEN state = 'ready' AND failure_streak + 1 >= $3 THEN now()
                      ELSE updated_at END
WHERE snapshot_id = $1 AND EXISTS (SELECT 1 FROM fresh)
RETURNING state
"""

# A node's cached copy that changed is the node's trouble, not the snapshot's:
# counted as a failure, never toward suspect.
_CACHE_FAILED = _FRESH_EVENT + """
UPDATE snapshots SET failures = failures + 1
WHERE snapshot_id = $1 AND EXISTS (SELECT 1 FROM fresh)
RETURNING state
"""

_STATE = "SELECT state FROM snapshots WHERE snapshot_id = $1"

_SWEEP_OLD_EVENTS = """
DELETE FROM snapshot_restore_events WHERE seen_at < now() - make_interval(secs => $1)
"""

_OBSOLETE_OLDER = """
UPDATE snapshots SET state = 'obsolete', updated_at = now()
WHERE app = $1 AND version < $2 AND state <> 'obsolete'
"""

_OBSOLETE_APP = """
UPDATE snapshots SET state = 'obsolete', updated_at = now()
WHERE app = $1 AND state <> 'obsolete'
"""

# GC's sweeps: what the events said, re-derived from the gateway's apps table
# (an AppEvent older than the EVENTS stream's hour is gone for a service that
# was down), plus dead claims and suspects kept long enough.
_SWEEP_UNDEPLOYED = """
UPDATE snapshots s SET state = 'obsolete', updated_at = now()
FROM apps a
WHERE a.name = s.app AND s.state <> 'obsolete' AND (a.state = 'stopped' OR s.version < a.version)
"""

_SWEEP_DEAD_CLAIMS = """
UPDATE snapshots SET state = 'obsolete', updated_at = now()
WHERE state = 'creating' AND claimed_at < now() - make_interval(secs => $1)
"""

_SWEEP_OLD_SUSPECTS = """
UPDATE snapshots SET state = 'obsolete', updated_at = now()
WHERE state = 'suspect' AND updated_at < now() - make_interval(secs => $1)
"""

_OBSOLETE_ROWS = """
SELECT snapshot_id, blob_key FROM snapshots
WHERE state = 'obsolete'
  AND NOT (size = 0 AND failures > 0 AND updated_at > now() - make_interval(secs => $2))
ORDER BY updated_at LIMIT $1
"""

# Only if nothing changed since it was read: a late Created may have recorded
# a blob meanwhile, which the next round deletes.
_DELETE_ROW = """
DELETE FROM snapshots WHERE snapshot_id = $1 AND state = 'obsolete' AND blob_key = $2
"""


def snapshot_info(row: Any) -> SnapshotInfo:
    return msgspec.convert(dict(row), SnapshotInfo)


def blob_key_for(snapshot_id: str) -> str:
    """Where a claim's maker stores the snapshot (a zstd tar; it reports the
    key it used). Set on the claim row too, so that GC of a claim whose maker
    uploaded and then died deletes the orphan blob."""
    return snapshot_key(snapshot_id)


def new_snapshot_id() -> str:
    return f"sn-{uuid.uuid4().hex}"


def lookup_problem(req: SnapshotLookup) -> str | None:
    """What is wrong with a lookup beyond its schema; None when nothing is."""
    try:
        check_name("app", req.app)
        check_name("function", req.function)
    except ValueError as e:
        return str(e)
    if req.version < 0:
        return f"version {req.version} is negative"
    return None


def created_problem(info: SnapshotInfo) -> str | None:
    """What is wrong with a SnapshotCreated's snapshot; None when nothing is."""
    try:
        check_name("app", info.app)
        check_name("function", info.function)
        check_key(info.blob_key)
    except ValueError as e:
        return str(e)
    if not SNAPSHOT_ID_RE.match(info.snapshot_id):
        return f"invalid snapshot_id {info.snapshot_id!r}"
    if not _SHA256_RE.match(info.sha256):
        return f"sha256 {info.sha256!r} is not 64 lowercase hex digits"
    if info.size <= 0:
        return f"size {info.size} is not positive"
    return None


def _reply(best: SnapshotInfo) -> SnapshotLookupReply:
    """Restore ``best``; an unhelpful one means a cold start, and no claim:
    another snapshot for the class would not help either."""
    return SnapshotLookupReply() if best.state == "unhelpful" else SnapshotLookupReply(snapshot=best)


def best_for(candidates: list[SnapshotInfo], node: Fingerprint, node_class: str) -> SnapshotInfo | None:
    """The snapshot a node restores: its own class first, then the newest compatible one."""
    ordered = sorted(candidates, key=lambda s: (s.fingerprint_id != node_class, -s.created_at))
    return next((s for s in ordered if compatible(s.fingerprint, node)), None)


class Catalog:
    def __init__(self, db: Database, policy: Policy) -> None:
        self.db = db
        self.policy = policy

    # ------------------------------------------------------------ lookups

    async def lookup(self, req: SnapshotLookup) -> SnapshotLookupReply:
        node_class = fingerprint_id(req.fingerprint)
        best = await self.best(req, node_class)
        if best is not None:
            return _reply(best)
        claim = await self.claim(req, node_class)
        if claim is not None:
            # The claim we raced may have become ready between our first look
            # and our insert (its row left the unique index): then restore it
            # rather than make a second one.
            best = await self.best(req, node_class)
            if best is not None:
                await self.db.execute(_WITHDRAW_CLAIM, claim.snapshot_id)
                return _reply(best)
        return SnapshotLookupReply(claim=claim)

    async def best(self, req: SnapshotLookup, node_class: str) -> SnapshotInfo | None:
        rows = await self.db.fetch(_READY, req.app, req.function, req.version)
        return best_for([snapshot_info(r) for r in rows], req.fingerprint, node_class)

    async def claim(self, req: SnapshotLookup, node_class: str) -> SnapshotInfo | None:
        """A new "creating" row for the node's class, unless a live one exists,
        its creation keeps failing or the app is ephemeral. The unique partial index decides
        between concurrent claimers."""
        key = (req.app, req.function, req.version, node_class)
        if await self.db.fetchval(_EPHEMERAL, req.app):
            return None
        failed = await self.db.fetchval(_FAILED_CREATIONS, *key, self.policy.creation_backoff_s)
        if failed >= self.policy.max_failed_creations:
            log.info("no claim: snapshot creation keeps failing for this class",
                     extra={"app": req.app, "function": req.function, "version": req.version,
                            "fingerprint_id": node_class, "failed": failed})  # fmt: skip
            return None
        await self.db.execute(_EXPIRE_CLAIM, *key, self.policy.claim_lease_s)
        sid = new_snapshot_id()
        row = await self.db.fetchrow(
            _CLAIM, sid, req.app, req.function, req.version, req.fingerprint, node_class,
            blob_key_for(sid), req.node_id,
        )  # fmt: skip
        if row is None:
            return None
        log.info(
            "snapshot claimed",
            extra={"snapshot_id": sid, "app": req.app, "function": req.function,
                   "version": req.version, "node_id": req.node_id, "fingerprint_id": node_class},
        )  # fmt: skip
        return snapshot_info(row)

    # ------------------------------------------------------------ lifecycle events

    async def created(self, info: SnapshotInfo) -> str:
        """Record a made snapshot; returns its state now."""
        state = await self.db.fetchval(
            _CREATED, info.snapshot_id, info.blob_key, info.size, info.sha256, info.cold_start_s
        )
        if state is None:
            await self.db.execute(
                _CREATED_UNCLAIMED, info.snapshot_id, info.app, info.function, info.version,
                info.fingerprint, fingerprint_id(info.fingerprint), info.blob_key, info.size,
                info.sha256, info.cold_start_s,
            )  # fmt: skip
            state = "ready"
        log.info("snapshot created", extra={"snapshot_id": info.snapshot_id, "state": state,
                                            "size": info.size,
                                            "cold_start_s": info.cold_start_s})  # fmt: skip
        return state

    async def drop_claim(self, snapshot_id: str, error: str) -> bool:
        dropped = await self.db.fetchval(_DROP_CLAIM, snapshot_id, error) is not None
        log.warning("snapshot creation failed", extra={"snapshot_id": snapshot_id, "error": error})
        return dropped

    async def restored(self, event: SnapshotRestored) -> str | None:
        """Count a restore once (by its event id); returns the snapshot's state
        now (None: unknown id). A blob that fails its sha256 makes a ready
        snapshot suspect at once; a node's changed cached copy never does."""
        sid = event.snapshot_id
        # An event without an id (an older agent) is counted as it comes.
        event_id = event.event_id or f"anonymous-{uuid.uuid4().hex}"
        if event.ok:
            p = self.policy
            state = await self.db.fetchval(
                _RESTORED_OK, sid, event_id, event.seconds, p.unhelpful_after, p.slow_ratio
            )
            if state == "unhelpful":
                log.info("snapshot not faster than a cold start: its function starts cold",
                         extra={"snapshot_id": sid, "seconds": event.seconds})  # fmt: skip
        elif event.cause == "cache_corrupted":
            state = await self.db.fetchval(_CACHE_FAILED, sid, event_id)
        else:
            suspect_after = 1 if event.cause == "blob_corrupted" else self.policy.suspect_after
            state = await self.db.fetchval(_RESTORE_FAILED, sid, event_id, suspect_after)
        if state is None:  # counted before (a redelivery), or an unknown snapshot
            state = await self.db.fetchval(_STATE, sid)
        if not event.ok:
            log.warning(
                "snapshot restore failed",
                extra={
                    "snapshot_id": sid, "node_id": event.node_id, "error": event.error,
                    "cause": event.cause, "state": state,
                },
            )  # fmt: skip
        return state

    async def app_changed(self, event: AppEvent) -> None:
        match event.state:
            case "deployed":
                done = await self.db.execute(_OBSOLETE_OLDER, event.app, event.version)
            case "stopped":
                done = await self.db.execute(_OBSOLETE_APP, event.app)
        log.info("app %s: %s snapshots made obsolete", event.state, done.split()[-1],
                 extra={"app": event.app, "version": event.version})  # fmt: skip

    # ------------------------------------------------------------ GC

    async def sweep(self) -> None:
        """Obsolete what no longer restores anywhere (see the SQL above)."""
        await self.db.execute(_SWEEP_UNDEPLOYED)
        await self.db.execute(_SWEEP_DEAD_CLAIMS, self.policy.claim_lease_s)
        await self.db.execute(_SWEEP_OLD_SUSPECTS, self.policy.keep_suspect_s)
        await self.db.execute(_SWEEP_OLD_EVENTS, self.policy.keep_restore_events_s)

    async def obsolete_rows(self, limit: int) -> list[tuple[str, str]]:
        rows = await self.db.fetch(_OBSOLETE_ROWS, limit, self.policy.creation_backoff_s)
        return [(r["snapshot_id"], r["blob_key"]) for r in rows]

    async def forget(self, snapshot_id: str, blob_key: str) -> bool:
        return await self.db.execute(_DELETE_ROW, snapshot_id, blob_key) == "DELETE 1"
