-- Whether a snapshot is worth restoring (services/snapshots, catalog.py): the
-- cold start that made it against its restores. A snapshot whose restores
-- keep being no faster than that cold start turns 'unhelpful': lookups no
-- longer hand it out (its function starts cold) and nobody makes another for
-- its class; `thaw snapshot list` shows both figures. ``error`` keeps why a
-- creation failed, for `thaw deploy`'s progress and the listing.
ALTER TABLE snapshots
    ADD COLUMN cold_start_s  double precision NOT NULL DEFAULT 0,  -- 0: not measured
    ADD COLUMN restore_s     double precision NOT NULL DEFAULT 0,  -- the last good restore's
    ADD COLUMN slow_streak   integer NOT NULL DEFAULT 0,           -- restores in a row no faster than cold
    ADD COLUMN error         text NOT NULL DEFAULT '';
ALTER TABLE snapshots DROP CONSTRAINT snapshots_state_check;
ALTER TABLE snapshots ADD CONSTRAINT snapshots_state_check
    CHECK (state IN ('creating', 'ready', 'suspect', 'obsolete', 'unhelpful'));
