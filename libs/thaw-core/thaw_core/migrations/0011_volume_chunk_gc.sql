-- Garbage collection of volume chunks (thaw_volumes.gc): a chunk no file of
-- any volume names, and that no commit named or stored for a grace period
-- (used_at), is removed from the blob store and from here. A commit marks the
-- rows of the chunks it names used (used_at = now()) before it is applied;
-- volume_files_chunks finds the files that name a chunk.
ALTER TABLE volume_chunks ADD COLUMN used_at timestamptz NOT NULL DEFAULT now();
CREATE INDEX volume_chunks_used_at ON volume_chunks (used_at);
CREATE INDEX volume_files_chunks ON volume_files USING gin (chunks);
