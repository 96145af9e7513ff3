-- Trigger events: stored before they are acknowledged; one row per (workspace, source, key).
-- Dispatch claims undispatched rows with SKIP LOCKED, never by an id watermark, so an event whose
-- transaction commits late (transactional outbox) is still dispatched.

CREATE TABLE events (
  id               text PRIMARY KEY,
  workspace_id     text NOT NULL,
  source           text NOT NULL,
  idempotency_key  text NOT NULL,
  payload_hash     text NOT NULL,
  type             text NOT NULL,
  name             text,
  subject_id       text,
  body             jsonb NOT NULL,
  shard            integer NOT NULL,
  received_at      timestamptz NOT NULL,
  dispatched_at    timestamptz,
  runs_created     integer NOT NULL DEFAULT 0,
  UNIQUE (workspace_id, source, idempotency_key)
);
CREATE INDEX events_undispatched ON events (shard, received_at) WHERE dispatched_at IS NULL;

-- Subject pause rows: automation_id '' is a global pause (all automations of the workspace).
CREATE TABLE subject_controls (
  workspace_id   text NOT NULL,
  subject_id     text NOT NULL,
  automation_id  text NOT NULL,
  pause_reason   text NOT NULL,
  paused_until   timestamptz,
  created_at     timestamptz NOT NULL,
  PRIMARY KEY (workspace_id, subject_id, automation_id)
);

-- For the re-entry cooldown: a subject's latest finished run of an automation.
CREATE INDEX runs_subject_finished ON runs (automation_id, subject_id, completed_at) WHERE subject_id IS NOT NULL;

-- Schedule triggers: one row per (automation, trigger index); next_fire_at advances in the same
-- transaction that stores the tick's event, so each tick fires once across any number of processes.
CREATE TABLE schedules (
  automation_id  text NOT NULL REFERENCES automations (id),
  trigger_index  integer NOT NULL,
  workspace_id   text NOT NULL,
  cron           text NOT NULL,
  timezone       text NOT NULL,
  catch_up       text NOT NULL,
  next_fire_at   timestamptz,
  last_fired_at  timestamptz,
  PRIMARY KEY (automation_id, trigger_index)
);
CREATE INDEX schedules_due ON schedules (next_fire_at) WHERE next_fire_at IS NOT NULL;

-- Webhook ingress points: a stable id and signing secret per (automation, trigger index).
CREATE TABLE hooks (
  id             text PRIMARY KEY,
  workspace_id   text NOT NULL,
  automation_id  text NOT NULL REFERENCES automations (id),
  trigger_index  integer NOT NULL,
  secret         text NOT NULL,
  created_at     timestamptz NOT NULL,
  UNIQUE (automation_id, trigger_index)
);
