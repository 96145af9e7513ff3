-- The node library: waits on named events, fan-out items, approvals, run control, the audit log.

-- A stop or cancel requested while a worker holds the run (applied by that worker at its next checkpoint).
ALTER TABLE runs ADD COLUMN control text;
-- An approval decided while a worker held the run: the park that follows makes the run due at once.
ALTER TABLE runs ADD COLUMN wake boolean NOT NULL DEFAULT false;
-- Runs parked on wait_for_event / input: "<event name>\u0001<subject or empty>"; the dispatcher wakes them.
ALTER TABLE runs ADD COLUMN wait_key text;
CREATE INDEX runs_wait_key ON runs (workspace_id, wait_key) WHERE wait_key IS NOT NULL;

-- A wait looks back for matching named events received since its run's trigger.
CREATE INDEX events_by_name ON events (workspace_id, name, subject_id, received_at) WHERE type = 'event';

-- One row per (fan-out node visit, list position): the item's action on its subject and its outcome.
CREATE TABLE run_items (
  id               text PRIMARY KEY,
  run_id           text NOT NULL REFERENCES runs (id),
  workspace_id     text NOT NULL,
  node_key         text NOT NULL,
  visit            integer NOT NULL,
  idx              integer NOT NULL,
  subject_id       text,
  action_kind      text NOT NULL,
  outcome          text NOT NULL,
  attempts         integer NOT NULL,
  idempotency_key  text NOT NULL,
  input            jsonb,
  output           jsonb,
  error            jsonb,
  approval_id      text,
  not_before       timestamptz,
  started_at       timestamptz,
  finished_at      timestamptz,
  updated_at       timestamptz NOT NULL,
  UNIQUE (run_id, node_key, visit, idx)
);

CREATE TABLE approvals (
  id             text PRIMARY KEY,
  workspace_id   text NOT NULL,
  run_id         text NOT NULL REFERENCES runs (id),
  automation_id  text NOT NULL,
  node_key       text NOT NULL,
  visit          integer NOT NULL,
  item_id        text,
  title          text NOT NULL,
  approvers      jsonb NOT NULL,
  status         text NOT NULL CHECK (status IN ('pending', 'approved', 'rejected', 'timed_out', 'cancelled')),
  decided_by     text,
  decided_at     timestamptz,
  comment        text,
  created_at     timestamptz NOT NULL,
  expires_at     timestamptz
);
CREATE INDEX approvals_by_status ON approvals (workspace_id, status, created_at DESC);
CREATE INDEX approvals_by_run ON approvals (run_id);

-- Append-only: who did what to which target, when.
CREATE TABLE audit_log (
  id           bigserial PRIMARY KEY,
  workspace_id text NOT NULL,
  actor        text NOT NULL,
  action       text NOT NULL,
  target_type  text NOT NULL,
  target_id    text NOT NULL,
  details      jsonb NOT NULL,
  at           timestamptz NOT NULL
);
CREATE INDEX audit_log_by_workspace ON audit_log (workspace_id, id DESC);

-- What a step tried outside its permission set, and what a custom action logged.
ALTER TABLE step_runs ADD COLUMN violations jsonb;
ALTER TABLE step_runs ADD COLUMN logs jsonb;
