-- Deployed code, running containers and issued calls.
-- Written by the gateway (apps, app_versions, functions, calls) and the
-- scheduler (containers); read by both.

-- An app's current version; each deploy makes a new one.
ALTER TABLE apps
    ADD COLUMN version     integer NOT NULL DEFAULT 0,
    ADD COLUMN ephemeral   boolean NOT NULL DEFAULT false,  -- `thaw run`: stopped after the run
    ADD COLUMN updated_at  timestamptz NOT NULL DEFAULT now();

CREATE TABLE app_versions (
    app            text NOT NULL REFERENCES apps (name) ON DELETE CASCADE,
    version        integer NOT NULL,
    bundle_sha256  text NOT NULL,            -- blob key bundles/<sha256>.zip
    created_at     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (app, version)
);

-- One row per function (or class) of each app version.
CREATE TABLE functions (
    app      text NOT NULL,
    name     text NOT NULL,
    version  integer NOT NULL,
    spec     jsonb NOT NULL,                 -- thaw_core.schema.FunctionSpec
    PRIMARY KEY (app, name, version),
    FOREIGN KEY (app, version) REFERENCES app_versions (app, version) ON DELETE CASCADE
);

-- What should be running now: the current version's functions of every
-- deployed (not stopped) app, with the bundle their containers start from.
CREATE VIEW deployed_functions AS
SELECT f.app, f.name AS function, f.version, v.bundle_sha256, f.spec
FROM apps a
JOIN functions f ON f.app = a.name AND f.version = a.version
JOIN app_versions v ON v.app = f.app AND v.version = f.version
WHERE a.state = 'deployed';

-- Containers as the scheduler last saw them (from node heartbeats and its own
-- starts); the gateway lists them. No foreign keys: a container of an app that
-- was redeployed or stopped still runs until it is stopped.
CREATE TABLE containers (
    container_id  text PRIMARY KEY,
    app           text NOT NULL,
    function      text NOT NULL,
    version       integer NOT NULL,
    node_id       text NOT NULL,
    state         text NOT NULL,             -- thaw_core.schema.ContainerState
    inflight      integer NOT NULL DEFAULT 0,
    max_inputs    integer NOT NULL DEFAULT 1,
    restored      boolean NOT NULL DEFAULT false,  -- started from a memory snapshot
    started_at    timestamptz,
    idle_since    timestamptz,
    updated_at    timestamptz NOT NULL DEFAULT now(),
    error         text NOT NULL DEFAULT ''
);
CREATE INDEX containers_by_app ON containers (app, function);
CREATE INDEX containers_by_node ON containers (node_id);

-- Every call the gateway issued, so that a call id can be told "pending" from
-- "never made" (INVOKE is a work queue and RESULTS only has finished calls).
-- Written in batches after the call is published; pruned after a few days.
CREATE TABLE calls (
    call_id     text PRIMARY KEY,
    app         text NOT NULL,
    function    text NOT NULL,
    codec       text NOT NULL,
    map_id      text NOT NULL DEFAULT '',
    idx         integer NOT NULL DEFAULT 0,
    created_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX calls_by_created_at ON calls (created_at);
CREATE INDEX calls_by_map ON calls (map_id) WHERE map_id <> '';
