-- Debounce and batch windows (engine/flow-intake.ts decides every rule; both stores store it alike).
-- One open window per (automation, key): the partial unique index makes two dispatchers in two
-- processes agree on it. A window stops taking events when its deadline passes, a batch fills or a
-- newer window replaces it (status due), and a dispatcher turns it into its run (status closed).
-- Times are epoch milliseconds of the engine's clock.
CREATE TABLE flow_windows (
  id TEXT PRIMARY KEY,
  workspace_id TEXT NOT NULL,
  automation_id TEXT NOT NULL,
  kind TEXT NOT NULL,
  mode TEXT NOT NULL,
  key TEXT NOT NULL,
  status TEXT NOT NULL,
  count INTEGER NOT NULL,
  first_at bigint NOT NULL,
  last_at bigint NOT NULL,
  due_at bigint NOT NULL,
  last_event_id TEXT NOT NULL,
  last_received_at bigint NOT NULL,
  run_id TEXT NOT NULL,
  run jsonb NOT NULL,
  closed_at bigint
);
CREATE UNIQUE INDEX flow_windows_open ON flow_windows (automation_id, key) WHERE status = 'open';
CREATE INDEX flow_windows_due ON flow_windows (due_at) WHERE status <> 'closed';
CREATE INDEX flow_windows_automation ON flow_windows (workspace_id, automation_id, status);
