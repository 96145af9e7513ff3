-- Trigger events (see store/postgres/migrations/002_events.sql).

CREATE TABLE events (
  id               TEXT PRIMARY KEY,
  workspace_id     TEXT NOT NULL,
  source           TEXT NOT NULL,
  idempotency_key  TEXT NOT NULL,
  payload_hash     TEXT NOT NULL,
  type             TEXT NOT NULL,
  name             TEXT,
  subject_id       TEXT,
  body             TEXT NOT NULL,
  shard            INTEGER NOT NULL,
  received_at      INTEGER NOT NULL,
  dispatched_at    INTEGER,
  runs_created     INTEGER NOT NULL DEFAULT 0,
  UNIQUE (workspace_id, source, idempotency_key)
) STRICT;
CREATE INDEX events_undispatched ON events (shard, received_at) WHERE dispatched_at IS NULL;

CREATE TABLE subject_controls (
  workspace_id   TEXT NOT NULL,
  subject_id     TEXT NOT NULL,
  automation_id  TEXT NOT NULL,
  pause_reason   TEXT NOT NULL,
  paused_until   INTEGER,
  created_at     INTEGER NOT NULL,
  PRIMARY KEY (workspace_id, subject_id, automation_id)
) STRICT;

CREATE INDEX runs_subject_finished ON runs (automation_id, subject_id, completed_at) WHERE subject_id IS NOT NULL;

CREATE TABLE schedules (
  automation_id  TEXT NOT NULL REFERENCES automations (id),
  trigger_index  INTEGER NOT NULL,
  workspace_id   TEXT NOT NULL,
  cron           TEXT NOT NULL,
  timezone       TEXT NOT NULL,
  catch_up       TEXT NOT NULL,
  next_fire_at   INTEGER,
  last_fired_at  INTEGER,
  PRIMARY KEY (automation_id, trigger_index)
) STRICT;
CREATE INDEX schedules_due ON schedules (next_fire_at) WHERE next_fire_at IS NOT NULL;

CREATE TABLE hooks (
  id             TEXT PRIMARY KEY,
  workspace_id   TEXT NOT NULL,
  automation_id  TEXT NOT NULL REFERENCES automations (id),
  trigger_index  INTEGER NOT NULL,
  secret         TEXT NOT NULL,
  created_at     INTEGER NOT NULL,
  UNIQUE (automation_id, trigger_index)
) STRICT;
