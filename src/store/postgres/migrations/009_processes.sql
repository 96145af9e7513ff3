-- Liveness of the fleet: every process upserts its row every few seconds, so an operator (and the
-- API) can tell whether a role that waiting work needs is running at all. Rows of processes gone
-- for long are deleted by the next heartbeat.

CREATE TABLE processes (
  id          text PRIMARY KEY,
  role        text NOT NULL,
  host        text NOT NULL,
  pid         integer NOT NULL,
  started_at  timestamptz NOT NULL,
  last_seen   timestamptz NOT NULL
);
CREATE INDEX processes_last_seen ON processes (last_seen);

-- The runs an event started (its explanation) and the event list, newest first.
CREATE INDEX runs_by_event ON runs (event_id) WHERE event_id IS NOT NULL;
CREATE INDEX events_list ON events (workspace_id, received_at DESC, id DESC);
