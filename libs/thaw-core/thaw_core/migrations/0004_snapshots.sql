-- The memory snapshot catalog (services/snapshots): one row per snapshot
-- of a function version, per fingerprint class (thaw_core.fingerprint).
--
-- state: creating -> ready -> suspect (restores kept failing) -> obsolete
-- (a newer deploy, a stop, `thaw snapshot rm`, a creation that failed or a
-- claim whose lease ran out); the snapshot service's GC deletes the blob of
-- an obsolete row, then the row.
CREATE TABLE snapshots (
    snapshot_id     text PRIMARY KEY,
    app             text NOT NULL,
    function        text NOT NULL,
    version         integer NOT NULL,
    fingerprint     jsonb NOT NULL,            -- thaw_core.schema.Fingerprint
    fingerprint_id  text NOT NULL,
    blob_key        text NOT NULL DEFAULT '',
    size            bigint NOT NULL DEFAULT 0,
    sha256          text NOT NULL DEFAULT '',
    created_at      timestamptz NOT NULL DEFAULT now(),  -- when it became ready (or was claimed)
    restores        integer NOT NULL DEFAULT 0,
    failures        integer NOT NULL DEFAULT 0,
    failure_streak  integer NOT NULL DEFAULT 0,          -- failed restores since the last good one
    state           text NOT NULL DEFAULT 'creating'
                    CHECK (state IN ('creating', 'ready', 'suspect', 'obsolete')),
    claimed_by      text NOT NULL DEFAULT '',            -- the node making it
    claimed_at      timestamptz,
    updated_at      timestamptz NOT NULL DEFAULT now()   -- last state change
);

-- At most one node makes a snapshot per (function version, fingerprint class):
-- a second concurrent claim hits this index and gets no claim.
CREATE UNIQUE INDEX snapshots_one_claim
    ON snapshots (app, function, version, fingerprint_id) WHERE state = 'creating';
-- Lookups: the ready snapshots of one function version.
CREATE INDEX snapshots_ready
    ON snapshots (app, function, version, created_at DESC) WHERE state = 'ready';
-- GC and listings.
CREATE INDEX snapshots_by_state ON snapshots (state, updated_at);
CREATE INDEX snapshots_by_app ON snapshots (app, version);
