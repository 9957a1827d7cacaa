-- Small volume files committed together share pack blobs
-- (volumes/packs/<sha256>): a file's chunk reference names its range
-- (thaw_core.volumes.refs). volume_packs is to packs what volume_chunks is to
-- chunks: known to be stored, marked used by every commit naming them, and
-- collected (thaw_volumes.gc) once no file names them for a grace period;
-- volume_files.packs lists the packs a file's references name, so that
-- collection finds them by index.
CREATE TABLE volume_packs (
    pack        text PRIMARY KEY,
    size        bigint NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    used_at     timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX volume_packs_used_at ON volume_packs (used_at);
ALTER TABLE volume_files ADD COLUMN packs text[] NOT NULL DEFAULT '{}';
CREATE INDEX volume_files_packs ON volume_files USING gin (packs);
