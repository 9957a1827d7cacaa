-- Volumes: named, versioned directories (thaw_volumes). A volume's current
-- version is its manifest: its rows in volume_files that are not deleted.
-- Each row remembers the version that last wrote or deleted its path, so the
-- changes since a version are the rows with a greater one (deletions kept as
-- rows, so a reload removes what was deleted). A deleted volume's rows go with
-- it; a volume made again under the same name has a new id.
CREATE TABLE volumes (
    id          text PRIMARY KEY,
    name        text NOT NULL UNIQUE,
    version     bigint NOT NULL DEFAULT 0,
    size_bytes  bigint NOT NULL DEFAULT 0,
    files       bigint NOT NULL DEFAULT 0,
    max_bytes   bigint NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now()
);

-- One row per applied commit; commit_id makes a retried commit land once.
CREATE TABLE volume_versions (
    volume_id     text NOT NULL REFERENCES volumes (id) ON DELETE CASCADE,
    version       bigint NOT NULL,
    commit_id     text NOT NULL,
    changed       integer NOT NULL,
    deleted       integer NOT NULL,
    committed_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (volume_id, version),
    UNIQUE (volume_id, commit_id)
);

-- Paths in byte order ("C"), so that everything under "a/" is the range
-- ("a/", "a0"): '0' follows '/'.
CREATE TABLE volume_files (
    volume_id  text NOT NULL REFERENCES volumes (id) ON DELETE CASCADE,
    path       text COLLATE "C" NOT NULL,
    kind       text NOT NULL,
    size       bigint NOT NULL DEFAULT 0,
    mode       integer NOT NULL DEFAULT 420,
    mtime      float8 NOT NULL DEFAULT 0,
    chunks     text[] NOT NULL DEFAULT '{}',
    version    bigint NOT NULL,
    deleted    boolean NOT NULL DEFAULT false,
    PRIMARY KEY (volume_id, path)
);
CREATE INDEX volume_files_since ON volume_files (volume_id, version);

-- Chunks known to be in the blob store (volumes/chunks/<digest>): a commit
-- naming one that is neither here nor stored is refused.
CREATE TABLE volume_chunks (
    digest      text PRIMARY KEY,
    size        bigint NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now()
);
