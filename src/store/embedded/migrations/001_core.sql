-- Weft core schema for the embedded store (SQLite). Times are epoch milliseconds from the
-- engine's clock; JSON is stored as text. Mirrors store/postgres/migrations/001_core.sql.

CREATE TABLE workspaces (
  id          TEXT PRIMARY KEY,
  name        TEXT NOT NULL,
  created_at  INTEGER NOT NULL
) STRICT;

CREATE TABLE automations (
  id               TEXT PRIMARY KEY,
  workspace_id     TEXT NOT NULL REFERENCES workspaces (id),
  key              TEXT NOT NULL,
  name             TEXT NOT NULL,
  status           TEXT NOT NULL CHECK (status IN ('active', 'paused')),
  current_version  INTEGER NOT NULL,
  created_at       INTEGER NOT NULL,
  updated_at       INTEGER NOT NULL,
  UNIQUE (workspace_id, key)
) STRICT;

CREATE TABLE automation_versions (
  automation_id  TEXT NOT NULL REFERENCES automations (id),
  version        INTEGER NOT NULL,
  definition     TEXT NOT NULL,
  created_at     INTEGER NOT NULL,
  PRIMARY KEY (automation_id, version)
) STRICT;

CREATE TABLE runs (
  id               TEXT PRIMARY KEY,
  workspace_id     TEXT NOT NULL,
  automation_id    TEXT NOT NULL REFERENCES automations (id),
  version          INTEGER NOT NULL,
  event_id         TEXT,
  dedupe_key       TEXT NOT NULL,
  trigger_type     TEXT NOT NULL,
  subject_id       TEXT,
  active_subject   TEXT,
  status           TEXT NOT NULL,
  exit_reason      TEXT,
  current_node_key TEXT,
  waiting_for      TEXT,
  waiting_until    INTEGER,
  event            TEXT NOT NULL,
  context          TEXT NOT NULL,
  steps            TEXT NOT NULL,
  cursor           TEXT NOT NULL,
  run_as           TEXT NOT NULL,
  trace_id         TEXT NOT NULL,
  items_total      INTEGER NOT NULL DEFAULT 0,
  items_failed     INTEGER NOT NULL DEFAULT 0,
  interruptions    INTEGER NOT NULL DEFAULT 0,
  due_at           INTEGER,
  lease_owner      TEXT,
  rev              INTEGER NOT NULL DEFAULT 0,
  started_at       INTEGER NOT NULL,
  completed_at     INTEGER,
  updated_at       INTEGER NOT NULL,
  FOREIGN KEY (automation_id, version) REFERENCES automation_versions (automation_id, version)
) STRICT;

CREATE UNIQUE INDEX runs_dedupe ON runs (automation_id, dedupe_key);
CREATE UNIQUE INDEX runs_active_subject ON runs (automation_id, active_subject) WHERE active_subject IS NOT NULL;
CREATE INDEX runs_due_by_automation ON runs (automation_id, due_at) WHERE due_at IS NOT NULL;
CREATE INDEX runs_due ON runs (due_at) WHERE due_at IS NOT NULL;
CREATE INDEX runs_list ON runs (workspace_id, started_at DESC, id DESC);
CREATE INDEX runs_list_by_automation ON runs (automation_id, started_at DESC, id DESC);

CREATE TABLE step_runs (
  id                    INTEGER PRIMARY KEY AUTOINCREMENT,
  run_id                TEXT NOT NULL REFERENCES runs (id),
  node_key              TEXT NOT NULL,
  node_kind             TEXT NOT NULL,
  visit                 INTEGER NOT NULL,
  attempt               INTEGER NOT NULL,
  entered_via_port_key  TEXT,
  exited_via_port_key   TEXT,
  outcome               TEXT NOT NULL,
  duration_ms           INTEGER NOT NULL,
  idempotency_key       TEXT NOT NULL,
  input                 TEXT,
  output                TEXT,
  error                 TEXT,
  started_at            INTEGER NOT NULL,
  finished_at           INTEGER NOT NULL
) STRICT;
CREATE INDEX step_runs_run ON step_runs (run_id, id);
