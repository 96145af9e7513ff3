-- The dispatcher leases each shard's oldest undispatched events in (received_at, id) order. The
-- index had no id: every round read all of a flooded shard's events to sort them, and a flood of
-- 20,000 events made each lease round read them all. With id in the index the read stops at the
-- batch.
CREATE INDEX events_undispatched_order ON events (shard, received_at, id) WHERE dispatched_at IS NULL;
DROP INDEX events_undispatched;
