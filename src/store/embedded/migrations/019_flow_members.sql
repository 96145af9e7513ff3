-- The events debounce and batch windows took, in the order they joined (a batch run carries them
-- in this order; explain names the window and run of each). An event whose key did not render has
-- a row with no window and the error: it started a run of its own.
CREATE TABLE flow_members (
  automation_id TEXT NOT NULL,
  event_id TEXT NOT NULL,
  workspace_id TEXT NOT NULL,
  window_id TEXT,
  seq INTEGER NOT NULL,
  key TEXT,
  run_id TEXT,
  error_code TEXT,
  error_message TEXT,
  at INTEGER NOT NULL,
  PRIMARY KEY (automation_id, event_id)
);
CREATE INDEX flow_members_window ON flow_members (window_id, seq);
CREATE INDEX flow_members_event ON flow_members (event_id);
