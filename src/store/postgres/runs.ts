// The run hot path on PostgreSQL: insert (idempotent), claim (SKIP LOCKED, round-robin across
// automations), batched checkpoint commit (CAS on rev + lease owner), lease renewal.

import type pg from "pg";
import type { Checkpoint, InsertRunResult, NewRun, Run } from "../../engine/store.js";
import { toRun, ts } from "./rows.js";

export const PG_UNIQUE_VIOLATION = "23505";

export async function insertRun(pool: pg.Pool, run: NewRun): Promise<InsertRunResult> {
  try {
    const res = await pool.query({
      name: "weft_insert_run",
      text: `INSERT INTO runs (id, workspace_id, automation_id, version, event_id, dedupe_key, trigger_type, subject_id,
               active_subject, status, exit_reason, current_node_key, waiting_for, waiting_until, context, steps, cursor,
               run_as, trace_id, due_at, lease_owner, started_at, completed_at, updated_at, event)
             VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11,$12,$13,$14,$15,$16,$17,$18,$19,$20,NULL,$21,$22,$21,$23)
             ON CONFLICT (automation_id, dedupe_key) DO NOTHING
             RETURNING *`,
      values: [
        run.id, run.workspace_id, run.automation_id, run.version, run.event_id, run.dedupe_key, run.trigger_type,
        run.subject_id, run.active_subject, run.status, run.exit_reason, run.current_node_key, run.waiting_for,
        ts(run.waiting_until), run.context, run.steps, run.cursor, run.run_as, run.trace_id, ts(run.due_at),
        ts(run.started_at), ts(run.completed_at ?? null), run.event,
      ],
    });
    if (res.rows[0]) return { created: true, run: toRun(res.rows[0]) };
  } catch (err) {
    if ((err as { code?: string; constraint?: string }).code === PG_UNIQUE_VIOLATION &&
        (err as { constraint?: string }).constraint === "runs_active_subject") {
      const active = await pool.query("SELECT * FROM runs WHERE automation_id = $1 AND active_subject = $2", [run.automation_id, run.active_subject]);
      return { created: false, reason: "already_active", run: active.rows[0] ? toRun(active.rows[0]) : null };
    }
    throw err;
  }
  const existing = await pool.query("SELECT * FROM runs WHERE automation_id = $1 AND dedupe_key = $2", [run.automation_id, run.dedupe_key]);
  return { created: false, reason: "duplicate", run: toRun(existing.rows[0]) };
}

/**
 * Round-robin claim: take each automation's oldest due runs, rank them within their automation,
 * and claim by (rank, due_at), so one automation with 20,000 due runs gets one slot per round
 * like everyone else. Candidates are re-checked and locked with SKIP LOCKED in a MATERIALIZED
 * CTE (an IN-subquery may be re-run by the planner and claim more than LIMIT rows).
 */
const CLAIM_SQL = `
WITH cand AS MATERIALIZED (
  SELECT c.id FROM automations a
  CROSS JOIN LATERAL (
    SELECT s.id, s.due_at, row_number() OVER (ORDER BY s.due_at) AS rn
    FROM (SELECT id, due_at FROM runs WHERE automation_id = a.id AND due_at <= $1 ORDER BY due_at LIMIT $3) s
  ) c
  ORDER BY c.rn, c.due_at
  LIMIT $3
), locked AS MATERIALIZED (
  SELECT id, status AS prev_status FROM runs
  WHERE id IN (SELECT id FROM cand) AND due_at <= $1
  FOR UPDATE SKIP LOCKED
)
UPDATE runs r SET
  due_at = $2,
  lease_owner = $4,
  status = 'running',
  interruptions = r.interruptions + CASE WHEN locked.prev_status = 'running' THEN 1 ELSE 0 END,
  rev = r.rev + 1
FROM locked WHERE r.id = locked.id
RETURNING r.*`;

export async function claimRuns(pool: pg.Pool, owner: string, now: number, leaseMs: number, limit: number): Promise<Run[]> {
  const res = await pool.query({ name: "weft_claim_runs", text: CLAIM_SQL, values: [ts(now), ts(now + leaseMs), limit, owner] });
  return res.rows.map(toRun);
}

const COMMIT_SQL = `
WITH input AS (
  SELECT * FROM jsonb_to_recordset($2::jsonb) AS x(
    run_id text, expected_rev int, status text, exit_reason text, current_node_key text, waiting_for text,
    waiting_until double precision, context jsonb, steps jsonb, cursor jsonb, items_total int, items_failed int,
    interruptions int, due_at double precision, keep_lease boolean, completed_at double precision,
    updated_at double precision, terminal boolean)
), upd AS (
  UPDATE runs r SET
    status = i.status, exit_reason = i.exit_reason, current_node_key = i.current_node_key,
    waiting_for = i.waiting_for, waiting_until = to_timestamp(i.waiting_until / 1000.0),
    context = i.context, steps = i.steps, cursor = i.cursor, items_total = i.items_total,
    items_failed = i.items_failed, interruptions = i.interruptions,
    due_at = CASE WHEN i.keep_lease THEN r.due_at ELSE to_timestamp(i.due_at / 1000.0) END,
    lease_owner = CASE WHEN i.keep_lease THEN r.lease_owner ELSE NULL END,
    active_subject = CASE WHEN i.terminal THEN NULL ELSE r.active_subject END,
    completed_at = to_timestamp(i.completed_at / 1000.0), updated_at = to_timestamp(i.updated_at / 1000.0),
    rev = r.rev + 1
  FROM input i
  WHERE r.id = i.run_id AND r.rev = i.expected_rev AND r.lease_owner = $1
  RETURNING r.id
), ins AS (
  INSERT INTO step_runs (run_id, node_key, node_kind, visit, attempt, entered_via_port_key, exited_via_port_key,
    outcome, duration_ms, idempotency_key, input, output, error, started_at, finished_at)
  SELECT s.run_id, s.node_key, s.node_kind, s.visit, s.attempt, s.entered_via_port_key, s.exited_via_port_key,
    s.outcome, s.duration_ms, s.idempotency_key, s.input, s.output, s.error,
    to_timestamp(s.started_at / 1000.0), to_timestamp(s.finished_at / 1000.0)
  FROM jsonb_to_recordset($3::jsonb) AS s(
    run_id text, node_key text, node_kind text, visit int, attempt int, entered_via_port_key text,
    exited_via_port_key text, outcome text, duration_ms int, idempotency_key text, input jsonb, output jsonb,
    error jsonb, started_at double precision, finished_at double precision, ord bigint)
  WHERE s.run_id IN (SELECT id FROM upd)
  ORDER BY s.ord
)
SELECT id FROM upd`;

/** One statement, one round trip and one commit for many runs' checkpoints (group commit). */
export async function commitCheckpoints(pool: pg.Pool, owner: string, cps: readonly Checkpoint[], isTerminal: (s: string) => boolean): Promise<boolean[]> {
  if (cps.length === 0) return [];
  const states = cps.map((c) => ({
    run_id: c.run_id, expected_rev: c.expected_rev, ...c.state, terminal: isTerminal(c.state.status),
  }));
  const steps = cps.flatMap((c) => c.steps).map((s, ord) => ({ ...s, ord }));
  const res = await pool.query({ name: "weft_commit", text: COMMIT_SQL, values: [owner, JSON.stringify(states), JSON.stringify(steps)] });
  const applied = new Set(res.rows.map((r: { id: string }) => r.id));
  return cps.map((c) => applied.has(c.run_id));
}

export async function renewLeases(pool: pg.Pool, owner: string, ids: readonly string[], until: number): Promise<string[]> {
  if (ids.length === 0) return [];
  const res = await pool.query({
    name: "weft_renew_leases",
    text: "UPDATE runs SET due_at = $3 WHERE id = ANY($2::text[]) AND lease_owner = $1 AND status = 'running' RETURNING id",
    values: [owner, ids, ts(until)],
  });
  return res.rows.map((r: { id: string }) => r.id);
}
