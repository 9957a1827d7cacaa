-- Scheduled fires (the cron service). A fire is claimed by inserting its row:
-- the primary key makes the claim unique per schedule (app, function,
-- version) and fire time, so two cron replicas, or one restarted mid-fire,
-- never publish a fire twice. published_at stays NULL between the claim and
-- the bus's ack; such rows are published again (under the same msg-id).
-- Numbered 0006: 0005 is the secrets migration.
CREATE TABLE schedule_fires (
    app           text NOT NULL,
    function      text NOT NULL,
    version       integer NOT NULL,
    fire_ms       bigint NOT NULL,              -- when it was due, ms since the epoch
    call_id       text NOT NULL UNIQUE,         -- its input's call id (calls table)
    claimed_by    text NOT NULL,                -- the cron service instance
    claimed_at    timestamptz NOT NULL DEFAULT now(),
    published_at  timestamptz,
    PRIMARY KEY (app, function, version, fire_ms)
);
CREATE INDEX schedule_fires_unpublished ON schedule_fires (claimed_at) WHERE published_at IS NULL;
CREATE INDEX schedule_fires_latest ON schedule_fires (app, function, fire_ms DESC);
