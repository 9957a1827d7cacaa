-- The control-plane tables known at the start. Later features add their own
-- NNNN_name.sql files; never edit a migration once it has been merged.

-- One row per node agent, upserted from its heartbeats.
CREATE TABLE nodes (
    id         text PRIMARY KEY,            -- THAW_NODE_ID (hostname by default)
    inventory  jsonb NOT NULL DEFAULT '{}', -- cores, memory, GPUs, fingerprint
    last_seen  timestamptz NOT NULL DEFAULT now(),
    state      text NOT NULL DEFAULT 'ready'
);

-- API tokens. Only a hash of the secret is stored: a leaked database does not
-- leak usable tokens. A revoked token keeps its row so that audits can name it.
CREATE TABLE tokens (
    id          text PRIMARY KEY,
    name        text NOT NULL,
    hash        text NOT NULL UNIQUE,
    created_at  timestamptz NOT NULL DEFAULT now(),
    revoked_at  timestamptz
);

CREATE TABLE apps (
    id          text PRIMARY KEY,
    name        text NOT NULL UNIQUE,
    state       text NOT NULL DEFAULT 'deployed',
    created_at  timestamptz NOT NULL DEFAULT now()
);

-- Secret values are encrypted by the service before they reach the database.
CREATE TABLE secrets (
    name        text PRIMARY KEY,
    ciphertext  bytea NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now()
);
