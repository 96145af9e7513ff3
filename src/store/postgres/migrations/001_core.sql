-- Weft core schema: workspaces, automations and their immutable versions, runs, step runs.
-- Times are timestamptz written from the engine's clock (never now()), so tests control time.

CREATE TABLE workspaces (
  id          text PRIMARY KEY,
  name        text NOT NULL,
  created_at  timestamptz NOT NULL
);

CREATE TABLE automations (
  id               text PRIMARY KEY,
  workspace_id     text NOT NULL REFERENCES workspaces (id),
  key              text NOT NULL,
  name             text NOT NULL,
  status           text NOT NULL CHECK (status IN ('active', 'paused')),
  current_version  integer NOT NULL,
  created_at       timestamptz NOT NULL,
  updated_at       timestamptz NOT NULL,
  UNIQUE (workspace_id, key)
);

-- Versions are immutable: rows are only ever inserted.
CREATE TABLE automation_versions (
  automation_id  text NOT NULL REFERENCES automations (id),
  version        integer NOT NULL,
  definition     jsonb NOT NULL,
  created_at     timestamptz NOT NULL,
  PRIMARY KEY (automation_id, version)
);

CREATE TABLE runs (
  id               text PRIMARY KEY,
  workspace_id     text NOT NULL,
  automation_id    text NOT NULL REFERENCES automations (id),
  version          integer NOT NULL,
  event_id         text,
  dedupe_key       text NOT NULL,
  trigger_type     text NOT NULL,
  subject_id       text,
  active_subject   text,
  status           text NOT NULL,
  exit_reason      text,
  current_node_key text,
  waiting_for      text,
  waiting_until    timestamptz,
  event            jsonb NOT NULL,
  context          jsonb NOT NULL,
  steps            jsonb NOT NULL,
  cursor           jsonb NOT NULL,
  run_as           jsonb NOT NULL,
  trace_id         text NOT NULL,
  items_total      integer NOT NULL DEFAULT 0,
  items_failed     integer NOT NULL DEFAULT 0,
  interruptions    integer NOT NULL DEFAULT 0,
  due_at           timestamptz,
  lease_owner      text,
  rev              integer NOT NULL DEFAULT 0,
  started_at       timestamptz NOT NULL,
  completed_at     timestamptz,
  updated_at       timestamptz NOT NULL,
  FOREIGN KEY (automation_id, version) REFERENCES automation_versions (automation_id, version)
) WITH (fillfactor = 70);  -- room on each page for HOT updates: a checkpoint rewrites the row, rarely its indexed columns

-- One run per (automation, trigger event or enrollment key): replays create nothing.
CREATE UNIQUE INDEX runs_dedupe ON runs (automation_id, dedupe_key);
-- At most one active run per (automation, subject), enforced here, not by read-then-write.
CREATE UNIQUE INDEX runs_active_subject ON runs (automation_id, active_subject) WHERE active_subject IS NOT NULL;
-- The claim: due runs per automation, oldest first (round-robin across automations).
CREATE INDEX runs_due_by_automation ON runs (automation_id, due_at) WHERE due_at IS NOT NULL;
CREATE INDEX runs_due ON runs (due_at) WHERE due_at IS NOT NULL;
CREATE INDEX runs_list ON runs (workspace_id, started_at DESC, id DESC);
CREATE INDEX runs_list_by_automation ON runs (automation_id, started_at DESC, id DESC);

-- Append-only: one row per attempt of a node visit.
CREATE TABLE step_runs (
  id                    bigserial PRIMARY KEY,
  run_id                text NOT NULL REFERENCES runs (id),
  node_key              text NOT NULL,
  node_kind             text NOT NULL,
  visit                 integer NOT NULL,
  attempt               integer NOT NULL,
  entered_via_port_key  text,
  exited_via_port_key   text,
  outcome               text NOT NULL,
  duration_ms           integer NOT NULL,
  idempotency_key       text NOT NULL,
  input                 jsonb,
  output                jsonb,
  error                 jsonb,
  started_at            timestamptz NOT NULL,
  finished_at           timestamptz NOT NULL
);
CREATE INDEX step_runs_run ON step_runs (run_id, id);
