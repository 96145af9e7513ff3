-- As store/postgres/migrations/022_events_lease_order.sql: each shard's oldest undispatched
-- events read in (received_at, id) order off the index, not sorted from every undispatched event.
CREATE INDEX events_undispatched_order ON events (shard, received_at, id) WHERE dispatched_at IS NULL;
DROP INDEX events_undispatched;
