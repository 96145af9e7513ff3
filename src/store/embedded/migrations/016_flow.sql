-- Flow control (see store/postgres/migrations/016_flow.sql, which explains the tables).

CREATE TABLE flow_slots (
  workspace_id  TEXT NOT NULL,
  scope         TEXT NOT NULL,
  key           TEXT NOT NULL,
  run_id        TEXT NOT NULL,
  step_key      TEXT NOT NULL,
  acquired_at   INTEGER NOT NULL,
  PRIMARY KEY (workspace_id, scope, key, run_id, step_key)
);
CREATE INDEX flow_slots_run ON flow_slots (run_id);

-- Runs parked for a slot, per key, oldest first (FIFO); a row whose run ended is ignored.
CREATE TABLE flow_waiters (
  workspace_id  TEXT NOT NULL,
  scope         TEXT NOT NULL,
  key           TEXT NOT NULL,
  run_id        TEXT NOT NULL,
  step_key      TEXT NOT NULL,
  lim           INTEGER NOT NULL,
  since         INTEGER NOT NULL,
  PRIMARY KEY (workspace_id, scope, key, run_id, step_key)
);
CREATE INDEX flow_waiters_fifo ON flow_waiters (workspace_id, scope, key, since, run_id);
CREATE INDEX flow_waiters_run ON flow_waiters (run_id);

-- Rate-limit admissions (a sliding log): one row per admitted or reserved turn, pruned once older than its period.
CREATE TABLE flow_rate_log (
  workspace_id  TEXT NOT NULL,
  scope         TEXT NOT NULL,
  key           TEXT NOT NULL,
  at            INTEGER NOT NULL,
  run_id        TEXT NOT NULL
);
CREATE INDEX flow_rate_log_key ON flow_rate_log (workspace_id, scope, key, at DESC);

-- A destination that answered 429 (or 503 with Retry-After): nobody in the workspace calls it before `until`.
CREATE TABLE flow_host_pauses (
  workspace_id  TEXT NOT NULL,
  host          TEXT NOT NULL,
  until         INTEGER NOT NULL,
  status        INTEGER NOT NULL,
  since         INTEGER NOT NULL,
  PRIMARY KEY (workspace_id, host)
);

CREATE TABLE flow_limits (
  workspace_id  TEXT NOT NULL,
  name          TEXT NOT NULL,
  key           TEXT NOT NULL,
  "limit"       INTEGER NOT NULL,
  created_at    INTEGER NOT NULL,
  updated_at    INTEGER NOT NULL,
  PRIMARY KEY (workspace_id, name)
);
