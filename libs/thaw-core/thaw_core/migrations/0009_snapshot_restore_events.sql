-- SnapshotRestored events already counted (services/snapshots), by the id
-- the agent gives each restore: a redelivered event is counted once. Rows
-- outlive the EVENTS stream's hour, after which nothing is redelivered, and
-- the snapshot service's GC then deletes them.
CREATE TABLE snapshot_restore_events (
    event_id  text PRIMARY KEY,
    seen_at   timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX snapshot_restore_events_by_age ON snapshot_restore_events (seen_at);
