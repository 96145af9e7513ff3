-- The node library (see store/postgres/migrations/003_nodes.sql).

ALTER TABLE runs ADD COLUMN control TEXT;
ALTER TABLE runs ADD COLUMN wake INTEGER NOT NULL DEFAULT 0;
ALTER TABLE runs ADD COLUMN wait_key TEXT;
CREATE INDEX runs_wait_key ON runs (workspace_id, wait_key) WHERE wait_key IS NOT NULL;

CREATE INDEX events_by_name ON events (workspace_id, name, subject_id, received_at) WHERE type = 'event';

CREATE TABLE run_items (
  id               TEXT PRIMARY KEY,
  run_id           TEXT NOT NULL REFERENCES runs (id),
  workspace_id     TEXT NOT NULL,
  node_key         TEXT NOT NULL,
  visit            INTEGER NOT NULL,
  idx              INTEGER NOT NULL,
  subject_id       TEXT,
  action_kind      TEXT NOT NULL,
  outcome          TEXT NOT NULL,
  attempts         INTEGER NOT NULL,
  idempotency_key  TEXT NOT NULL,
  input            TEXT,
  output           TEXT,
  error            TEXT,
  approval_id      TEXT,
  not_before       INTEGER,
  started_at       INTEGER,
  finished_at      INTEGER,
  updated_at       INTEGER NOT NULL,
  UNIQUE (run_id, node_key, visit, idx)
) STRICT;

CREATE TABLE approvals (
  id             TEXT PRIMARY KEY,
  workspace_id   TEXT NOT NULL,
  run_id         TEXT NOT NULL REFERENCES runs (id),
  automation_id  TEXT NOT NULL,
  node_key       TEXT NOT NULL,
  visit          INTEGER NOT NULL,
  item_id        TEXT,
  title          TEXT NOT NULL,
  approvers      TEXT NOT NULL,
  status         TEXT NOT NULL CHECK (status IN ('pending', 'approved', 'rejected', 'timed_out', 'cancelled')),
  decided_by     TEXT,
  decided_at     INTEGER,
  comment        TEXT,
  created_at     INTEGER NOT NULL,
  expires_at     INTEGER
) STRICT;
CREATE INDEX approvals_by_status ON approvals (workspace_id, status, created_at DESC);
CREATE INDEX approvals_by_run ON approvals (run_id);

CREATE TABLE audit_log (
  id           INTEGER PRIMARY KEY AUTOINCREMENT,
  workspace_id TEXT NOT NULL,
  actor        TEXT NOT NULL,
  action       TEXT NOT NULL,
  target_type  TEXT NOT NULL,
  target_id    TEXT NOT NULL,
  details      TEXT NOT NULL,
  at           INTEGER NOT NULL
) STRICT;
CREATE INDEX audit_log_by_workspace ON audit_log (workspace_id, id DESC);

ALTER TABLE step_runs ADD COLUMN violations TEXT;
ALTER TABLE step_runs ADD COLUMN logs TEXT;
