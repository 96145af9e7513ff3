-- The named events each run's waits took: a later wait of the run never takes one again, however
-- many waits the run makes (a window of recent ids on the cursor was not enough).

CREATE TABLE run_consumed_events (
  run_id    text NOT NULL REFERENCES runs (id),
  event_id  text NOT NULL,
  PRIMARY KEY (run_id, event_id)
);

-- Runs still going keep what their cursors remembered.
INSERT INTO run_consumed_events (run_id, event_id)
  SELECT r.id, c.value FROM runs r, jsonb_array_elements_text(r.cursor -> 'consumed') c
  WHERE r.completed_at IS NULL AND jsonb_typeof(r.cursor -> 'consumed') = 'array'
  ON CONFLICT DO NOTHING;
