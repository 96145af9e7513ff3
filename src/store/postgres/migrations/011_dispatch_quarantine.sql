-- Dispatch outside the transaction, quarantine and event provenance.
-- Events: a dispatcher leases a batch (dispatch_until) and counts the attempt before it plans
-- it; an event whose dispatch did not complete WEFT_QUARANTINE_AFTER times is undeliverable
-- (skipped by dispatch) until a member replays or drops it. actor, token_id and actor_role say who
-- posted an API or library event (the role decides which run-as users it may start runs as).
ALTER TABLE events ADD COLUMN dispatch_attempts integer NOT NULL DEFAULT 0;
ALTER TABLE events ADD COLUMN dispatch_until timestamptz;
ALTER TABLE events ADD COLUMN dispatch_error text;
ALTER TABLE events ADD COLUMN undeliverable_at timestamptz;
ALTER TABLE events ADD COLUMN undeliverable_reason text;
ALTER TABLE events ADD COLUMN dropped_at timestamptz;
ALTER TABLE events ADD COLUMN actor text;
ALTER TABLE events ADD COLUMN token_id text;
ALTER TABLE events ADD COLUMN actor_role text;
-- Events that were leased before and not dispatched (retried one at a time) and the
-- undeliverable ones of a workspace (ops).
CREATE INDEX events_dispatch_retry ON events (received_at, id) WHERE dispatched_at IS NULL AND dispatch_attempts > 0 AND undeliverable_at IS NULL;
CREATE INDEX events_undeliverable ON events (workspace_id, undeliverable_at DESC) WHERE undeliverable_at IS NOT NULL;

-- Runs: claims since the last checkpoint commit (the current one included). A claim that finds
-- more than WEFT_QUARANTINE_AFTER lost before it ends the run failed (engine.quarantined).
ALTER TABLE runs ADD COLUMN unsettled_claims integer NOT NULL DEFAULT 0;
