-- Flow control (engine/flow-gates.ts): concurrency slots, their waiters, rate-limit admissions,
-- host pauses and shared limits. Times are epoch milliseconds (the engine's clock).
--
-- A slot row counts as held while its run has not ended; a step's slot (step_key <> '') only
-- while its run is running under a live lease and the step's row is not yet committed. So the
-- commit that ends a run or step releases its slots, and a dead worker's step slot lapses with
-- its lease. Rows no longer held are deleted lazily, by the next acquire of their key.

CREATE TABLE flow_slots (
  workspace_id  text NOT NULL,
  scope         text NOT NULL,
  key           text NOT NULL,
  run_id        text NOT NULL,
  step_key      text NOT NULL,
  acquired_at   bigint NOT NULL,
  PRIMARY KEY (workspace_id, scope, key, run_id, step_key)
);
CREATE INDEX flow_slots_run ON flow_slots (run_id);

-- Runs parked for a slot, per key, oldest first (FIFO); a row whose run ended is ignored.
CREATE TABLE flow_waiters (
  workspace_id  text NOT NULL,
  scope         text NOT NULL,
  key           text NOT NULL,
  run_id        text NOT NULL,
  step_key      text NOT NULL,
  lim           integer NOT NULL,
  since         bigint NOT NULL,
  PRIMARY KEY (workspace_id, scope, key, run_id, step_key)
);
CREATE INDEX flow_waiters_fifo ON flow_waiters (workspace_id, scope, key, since, run_id);
CREATE INDEX flow_waiters_run ON flow_waiters (run_id);

-- Rate-limit admissions (a sliding log): one row per admitted or reserved turn, pruned once older than its period.
CREATE TABLE flow_rate_log (
  workspace_id  text NOT NULL,
  scope         text NOT NULL,
  key           text NOT NULL,
  at            bigint NOT NULL,
  run_id        text NOT NULL
);
CREATE INDEX flow_rate_log_key ON flow_rate_log (workspace_id, scope, key, at DESC);

-- A destination that answered 429 (or 503 with Retry-After): nobody in the workspace calls it before `until`.
CREATE TABLE flow_host_pauses (
  workspace_id  text NOT NULL,
  host          text NOT NULL,
  until         bigint NOT NULL,
  status        integer NOT NULL,
  since         bigint NOT NULL,
  PRIMARY KEY (workspace_id, host)
);

CREATE TABLE flow_limits (
  workspace_id  text NOT NULL,
  name          text NOT NULL,
  key           text NOT NULL,
  "limit"       integer NOT NULL,
  created_at    bigint NOT NULL,
  updated_at    bigint NOT NULL,
  PRIMARY KEY (workspace_id, name)
);
