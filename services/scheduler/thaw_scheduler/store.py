"""The scheduler's reads and writes in Postgres: what is deployed (and which
of it has ready memory snapshots) in, nodes and their containers as the
latest heartbeats describe them out."""

from __future__ import annotations

import msgspec
from thaw_core.db import Database
from thaw_core.schema import Fingerprint, FunctionSpec, NodeHeartbeat

from thaw_scheduler.reconcile import DeployedFunction
from thaw_scheduler.snapshot_affinity import ReadySnapshot
from thaw_scheduler.unanswered import Deployed

# ``inventory`` is the latest heartbeat as JSON; an older heartbeat delivered
# late (redelivery) never overwrites a newer one.
UPSERT_NODE = """
INSERT INTO nodes (id, inventory, last_seen)
VALUES ($1, $2, to_timestamp($3))
ON CONFLICT (id) DO UPDATE SET
    inventory = EXCLUDED.inventory,
    last_seen = EXCLUDED.last_seen
WHERE nodes.last_seen <= EXCLUDED.last_seen
"""

# A node's containers as its latest heartbeat lists them; rows of containers
# the node no longer reports are removed in the same transaction.
UPSERT_CONTAINER = """
INSERT INTO containers (container_id, app, function, version, node_id, state, inflight,
                        max_inputs, restored, started_at, idle_since, updated_at, error)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, to_timestamp($10),
        CASE WHEN $11 > 0 THEN to_timestamp($11) END, now(), $12)
ON CONFLICT (container_id) DO UPDATE SET
    state = EXCLUDED.state, inflight = EXCLUDED.inflight, idle_since = EXCLUDED.idle_since,
    restored = EXCLUDED.restored, updated_at = now(), error = EXCLUDED.error, node_id = EXCLUDED.node_id
"""
FORGET_CONTAINERS = (
    "DELETE FROM containers WHERE node_id = $1 AND NOT (container_id = ANY($2::text[]))"
)
FORGET_NODES_CONTAINERS = "DELETE FROM containers WHERE node_id = ANY($1::text[])"
MARK_DEAD = (
    "UPDATE nodes SET state = 'dead' WHERE id = ANY($1::text[]) AND state IS DISTINCT FROM 'dead'"
)
MARK_UP = "UPDATE nodes SET state = 'ready' WHERE id = $1 AND state IS DISTINCT FROM 'ready'"
DEPLOYED = """
SELECT d.app, d.function, d.version, d.bundle_sha256, d.spec::text, a.ephemeral
FROM deployed_functions d JOIN apps a ON a.name = d.app
"""
DEPLOYED_KEYS = "SELECT app, function FROM deployed_functions"
STOPPED_APPS = "SELECT name FROM apps WHERE state = 'stopped'"
READY_SNAPSHOTS = """
SELECT s.snapshot_id, s.app, s.function, s.version, s.fingerprint::text, s.state
FROM snapshots s
JOIN deployed_functions d ON d.app = s.app AND d.function = s.function AND d.version = s.version
WHERE s.state IN ('ready', 'unhelpful')
"""

_spec_decoder = msgspec.json.Decoder(FunctionSpec)
_fingerprint_decoder = msgspec.json.Decoder(Fingerprint)


async def deployed_functions(db: Database) -> list[DeployedFunction]:
    rows = await db.fetch(DEPLOYED)
    return [
        DeployedFunction(
            r["app"],
            r["version"],
            r["bundle_sha256"],
            _spec_decoder.decode(r["spec"]),
            ephemeral=r["ephemeral"],
        )
        for r in rows
    ]


async def deployed_now(db: Database) -> Deployed:
    """The functions deployed now, and the apps that were stopped (for ``unanswered``)."""
    functions = frozenset((r["app"], r["function"]) for r in await db.fetch(DEPLOYED_KEYS))
    stopped = frozenset(r["name"] for r in await db.fetch(STOPPED_APPS))
    return Deployed(functions, stopped)


async def ready_snapshots(db: Database) -> dict[tuple[str, str, int], list[ReadySnapshot]]:
    """Ready snapshots of deployed versions, per (app, function, version);
    unhelpful ones too (they serve their class: none is made for it) but
    marked so, for placement to leave them out."""
    out: dict[tuple[str, str, int], list[ReadySnapshot]] = {}
    for r in await db.fetch(READY_SNAPSHOTS):
        fp = _fingerprint_decoder.decode(r["fingerprint"])
        out.setdefault((r["app"], r["function"], r["version"]), []).append(
            ReadySnapshot(r["snapshot_id"], fp, helps=r["state"] == "ready")
        )
    return out


async def mark_dead(db: Database, node_ids: list[str]) -> None:
    """Nodes gone silent: marked dead, their containers forgotten."""
    await db.execute(MARK_DEAD, node_ids)
    await db.execute(FORGET_NODES_CONTAINERS, node_ids)


async def record_heartbeat(db: Database, hb: NodeHeartbeat) -> None:
    """The node (up, with its inventory) and exactly the containers it reports."""
    await db.execute(UPSERT_NODE, hb.node_id, hb, hb.at)
    await db.execute(MARK_UP, hb.node_id)
    async with db.pool.acquire() as conn, conn.transaction():
        for c in hb.containers:
            await conn.execute(
                UPSERT_CONTAINER, c.container_id, c.app, c.function, c.version, hb.node_id,
                c.state, c.inflight, c.max_inputs, c.restored, c.started_at, c.idle_since, c.error,
            )  # fmt: skip
        await conn.execute(FORGET_CONTAINERS, hb.node_id, [c.container_id for c in hb.containers])
