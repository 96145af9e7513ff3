-- The named events each run's waits took (see store/postgres/migrations/005_wait_consumed.sql).

CREATE TABLE run_consumed_events (
  run_id    TEXT NOT NULL REFERENCES runs (id),
  event_id  TEXT NOT NULL,
  PRIMARY KEY (run_id, event_id)
) STRICT, WITHOUT ROWID;

INSERT OR IGNORE INTO run_consumed_events (run_id, event_id)
  SELECT r.id, c.value FROM runs r, json_each(r.cursor, '$.consumed') c
  WHERE r.completed_at IS NULL AND json_type(r.cursor, '$.consumed') = 'array';
