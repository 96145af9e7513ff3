-- Dispatch outside the transaction, quarantine and event provenance.
-- (The embedded twin of store/postgres/migrations/011_dispatch_quarantine.sql.)
-- Events: a dispatcher leases a batch (dispatch_until) and counts the attempt before it plans
-- it; an event whose dispatch did not complete WEFT_QUARANTINE_AFTER times is undeliverable
-- (skipped by dispatch) until a member replays or drops it. actor, token_id and actor_role say who
-- posted an API or library event (the role decides which run-as users it may start runs as).
ALTER TABLE events ADD COLUMN dispatch_attempts INTEGER NOT NULL DEFAULT 0;
ALTER TABLE events ADD COLUMN dispatch_until INTEGER;
ALTER TABLE events ADD COLUMN dispatch_error TEXT;
ALTER TABLE events ADD COLUMN undeliverable_at INTEGER;
ALTER TABLE events ADD COLUMN undeliverable_reason TEXT;
ALTER TABLE events ADD COLUMN dropped_at INTEGER;
ALTER TABLE events ADD COLUMN actor TEXT;
ALTER TABLE events ADD COLUMN token_id TEXT;
ALTER TABLE events ADD COLUMN actor_role TEXT;
-- Events that were leased before and not dispatched (retried one at a time) and the
-- undeliverable ones of a workspace (ops).
CREATE INDEX events_dispatch_retry ON events (received_at, id) WHERE dispatched_at IS NULL AND dispatch_attempts > 0 AND undeliverable_at IS NULL;
CREATE INDEX events_undeliverable ON events (workspace_id, undeliverable_at DESC) WHERE undeliverable_at IS NOT NULL;

-- Runs: claims since the last checkpoint commit (the current one included). A claim that finds
-- more than WEFT_QUARANTINE_AFTER lost before it ends the run failed (engine.quarantined).
ALTER TABLE runs ADD COLUMN unsettled_claims INTEGER NOT NULL DEFAULT 0;
