-- Liveness of the fleet (see store/postgres/migrations/009_processes.sql).

CREATE TABLE processes (
  id          TEXT PRIMARY KEY,
  role        TEXT NOT NULL,
  host        TEXT NOT NULL,
  pid         INTEGER NOT NULL,
  started_at  INTEGER NOT NULL,
  last_seen   INTEGER NOT NULL
);
CREATE INDEX processes_last_seen ON processes (last_seen);

CREATE INDEX runs_by_event ON runs (event_id) WHERE event_id IS NOT NULL;
CREATE INDEX events_list ON events (workspace_id, received_at DESC, id DESC);
