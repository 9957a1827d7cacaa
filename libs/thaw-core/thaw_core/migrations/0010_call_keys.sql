-- Each call's result key (Invoke.key; thaw_core.result_proof), so that any
-- gateway replica, after a restart too, accepts only results whose proof
-- verifies. A row without one (made before this migration) has no result a
-- reader can trust. Rows are pruned with the call after a few days.
ALTER TABLE calls ADD COLUMN result_key bytea NOT NULL DEFAULT ''::bytea;
