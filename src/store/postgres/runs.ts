// The run hot path on PostgreSQL: insert (idempotent), claim (SKIP LOCKED, round-robin across
// automations), batched checkpoint commit (CAS on rev + lease owner), lease renewal.

import type pg from "pg";
import { tx } from "./tx.js";
import {
  waitKey,
  DUE_MARK_SWEEP_MS,
  type Checkpoint,
  type CommitResult,
  type InsertRunResult,
  type NewRun,
  type Run,
  type FirstPark,
  type RunAudit,
  type RunControl,
  type AuditEntry,
  type NewStepRun,
  type RunItem,
  StaleAutomationError,
} from "../../engine/store.js";
import { toRun, ts } from "./rows.js";
import { admittedRow, finishAdmission, lockAdmission, planAdmission } from "./flow.js";
import { releaseReplaced } from "./singleton.js";
import { sqlList } from "../sql.js";
import { PRIORITY_MIN } from "../../model/priority.js";
import { ENROLLMENT_CHECKS, NOT_ENROLLED, replacesActive, type EnrollmentSkip } from "../../model/enrollment.js";

export const PG_UNIQUE_VIOLATION = "23505";

/**
 * The SET list that closes a pending approval when its run ends, at `at` (an SQL timestamptz): one
 * already past its expiry timed out (nobody decided in time, whether or not the runner had applied
 * the timeout yet), any other is cancelled.
 */
export const closeApprovalSet = (at: string): string =>
  `status = CASE WHEN expires_at IS NOT NULL AND expires_at <= ${at} THEN 'timed_out' ELSE 'cancelled' END,
    decided_by = CASE WHEN expires_at IS NOT NULL AND expires_at <= ${at} THEN 'system' ELSE decided_by END,
    decided_at = ${at}`;

/**
 * The enrollment decision (model/enrollment.ts) as one CASE over an input row `i`, its checks in
 * the model's order. `already_active` has no condition here: the partial unique index on
 * (automation_id, active_subject) decides it atomically at insert, and it is the last check, so
 * a row it refuses has passed the others; insertRuns records that row as skipped.
 */
export const ENROLLMENT_SQL: Record<EnrollmentSkip, string | null> = {
  subject_paused: `EXISTS (SELECT 1 FROM subject_controls c WHERE c.workspace_id = i.workspace_id AND c.subject_id = i.subject_id
                 AND c.automation_id IN (i.automation_id, '') AND (c.paused_until IS NULL OR c.paused_until > $2))`,
  reentry_cooldown: `coalesce(i.cooldown_ms, 0) > 0 AND EXISTS (
      SELECT 1 FROM runs r WHERE r.automation_id = i.automation_id AND r.subject_id = i.subject_id
        AND r.completed_at >= $2 - make_interval(secs => i.cooldown_ms / 1000.0)
        AND (r.exit_reason IS NULL OR r.exit_reason NOT IN ${sqlList(NOT_ENROLLED)}))`,
  already_active: null,
};
const ENROLLMENT_CASE = `CASE
    WHEN i.subject_id IS NULL OR i.status <> 'pending' THEN NULL
${ENROLLMENT_CHECKS.flatMap((c) => (ENROLLMENT_SQL[c] === null ? [] : [`    WHEN ${ENROLLMENT_SQL[c]} THEN '${c}'`])).join("\n")}
    ELSE NULL END`;

/** A step row as the statements take it (JSON, times in ms): the checkpoint's and a new run's first steps. */
const STEP_RECORD = `run_id text, node_key text, node_kind text, visit int, attempt int, entered_via_port_key text,
    exited_via_port_key text, outcome text, duration_ms int, idempotency_key text, input jsonb, output jsonb,
    error jsonb, violations jsonb, logs jsonb, started_at double precision, finished_at double precision, ord bigint`;
/** Step rows written from a recordset `s` of STEP_RECORD (the statement adds its FROM). */
const STEP_INSERT = `INSERT INTO step_runs (run_id, node_key, node_kind, visit, attempt, entered_via_port_key, exited_via_port_key,
    outcome, duration_ms, idempotency_key, input, output, error, violations, logs, started_at, finished_at)
  SELECT s.run_id, s.node_key, s.node_kind, s.visit, s.attempt, s.entered_via_port_key, s.exited_via_port_key,
    s.outcome, s.duration_ms, s.idempotency_key, s.input, s.output, s.error, s.violations, s.logs,
    to_timestamp(s.started_at / 1000.0), to_timestamp(s.finished_at / 1000.0)`;

/** A step row as STEP_RECORD (with the checkpoint's expected rev when committed by one). */
function stepRecord(s: NewStepRun, runId: string, ord: number, expectedRev?: number) {
  return {
    run_id: runId,
    node_key: s.node_key,
    node_kind: s.node_kind,
    visit: s.visit,
    attempt: s.attempt,
    entered_via_port_key: s.entered_via_port_key,
    exited_via_port_key: s.exited_via_port_key,
    outcome: s.outcome,
    duration_ms: s.duration_ms,
    idempotency_key: s.idempotency_key,
    input: s.input,
    output: s.output,
    error: s.error,
    violations: s.violations,
    logs: s.logs,
    started_at: s.started_at,
    finished_at: s.finished_at,
    ord,
    expected_rev: expectedRev ?? null,
  };
}

/** An audit entry as the statements' recordset: the run it belongs to, its order, the checkpoint's rev. */
function auditRecord(a: AuditEntry, runId: string, ord: number, expectedRev?: number) {
  return {
    workspace_id: a.workspace_id,
    actor: a.actor,
    action: a.action,
    target_type: a.target_type,
    target_id: a.target_id,
    details: a.details,
    at: a.at,
    run_id: runId,
    ord,
    expected_rev: expectedRev ?? null,
  };
}

/** A fan-out item as the commit's items recordset, with the checkpoint's rev. */
function itemRecord(it: RunItem, expectedRev: number) {
  return {
    id: it.id,
    run_id: it.run_id,
    workspace_id: it.workspace_id,
    node_key: it.node_key,
    visit: it.visit,
    idx: it.idx,
    subject_id: it.subject_id,
    action_kind: it.action_kind,
    outcome: it.outcome,
    attempts: it.attempts,
    idempotency_key: it.idempotency_key,
    input: it.input,
    output: it.output,
    error: it.error,
    approval_id: it.approval_id,
    not_before: it.not_before,
    started_at: it.started_at,
    finished_at: it.finished_at,
    updated_at: it.updated_at,
    expected_rev: expectedRev,
  };
}

/**
 * A new run as the insert's input row (INSERT_RUNS_CTES' recordset, field for field): built
 * explicitly, not by copying the run (a rest-and-spread copy of each of 1,000 runs cost more than
 * serializing them), with its admission (flow.ts admittedRow) and first park (NewRun.first_park).
 */
function insertRow(r: NewRun, admitted: ReturnType<typeof admittedRow>, ord: number) {
  const fp: FirstPark | undefined = r.first_park;
  return {
    id: r.id,
    workspace_id: r.workspace_id,
    automation_id: r.automation_id,
    version: r.version,
    event_id: r.event_id,
    dedupe_key: r.dedupe_key,
    trigger_type: r.trigger_type,
    subject_id: r.subject_id,
    active_subject: r.active_subject,
    status: r.status,
    exit_reason: r.exit_reason,
    current_node_key: r.current_node_key,
    event: r.event,
    context: r.context,
    steps: r.steps,
    cursor: admitted.cursor ?? r.cursor,
    run_as: r.run_as,
    trace_id: r.trace_id,
    due_at: r.due_at,
    started_at: r.started_at,
    cooldown_ms: r.cooldown_ms ?? null,
    ord,
    priority: r.priority,
    priority_error: r.priority_error,
    park_for: admitted.park_for ?? null,
    park_until: admitted.park_until ?? null,
    lease_owner: r.lease_owner ?? null,
    fp_waiting_for: fp?.waiting_for ?? null,
    fp_waiting_until: fp?.waiting_until ?? null,
    fp_due_at: fp?.due_at ?? null,
    fp_cursor: fp?.cursor ?? null,
    while_current: r.while_current === true,
  };
}

// The insert's input and decision, as CTEs (insertRunsSql).
const INSERT_RUNS_CTES = `input AS (
  SELECT * FROM jsonb_to_recordset($1::jsonb) AS x(
    id text, workspace_id text, automation_id text, version int, event_id text, dedupe_key text, trigger_type text,
    subject_id text, active_subject text, status text, exit_reason text, current_node_key text, event jsonb, context jsonb,
    steps jsonb, cursor jsonb, run_as jsonb, trace_id text, due_at double precision, started_at double precision,
    cooldown_ms double precision, ord int, priority int, priority_error text, park_for text, park_until double precision, lease_owner text,
    fp_waiting_for text, fp_waiting_until double precision, fp_due_at double precision, fp_cursor jsonb, while_current boolean)
), decided AS MATERIALIZED (
  -- MATERIALIZED: the decision is made once per row; inlined, each of the INSERT's references to
  -- d.skip below ran the CASE's subqueries again (eight index probes per row instead of one).
  SELECT i.*, ${ENROLLMENT_CASE} AS skip,
    -- NewRun.while_current: its automation must still be active with this version current.
    coalesce(i.while_current, false) AND NOT EXISTS (
      SELECT 1 FROM automations a WHERE a.id = i.automation_id AND a.status = 'active' AND a.current_version = i.version) AS stale
  FROM input i
), d AS (
  -- Created where its first step parked it (NewRun.first_park): pending, not skipped, no admission park.
  SELECT x.*, (x.skip IS NULL AND x.status = 'pending' AND x.park_for IS NULL AND x.fp_cursor IS NOT NULL) AS first_parked,
    -- A dedupe key an earlier row of this insert carries: that row decides it (made, or recorded as
    -- skipped), and this one is its replay, whatever became of it (as when the rows come one by one).
    row_number() OVER (PARTITION BY x.automation_id, x.dedupe_key ORDER BY x.ord) > 1 AS repeat
  FROM decided x
)`;

/**
 * The run columns the insert sends back: all but the JSON it writes exactly as given (AS_GIVEN),
 * which the caller already holds (runFromInsert). A 1,000-run batch moves and parses a fifth less.
 */
const AS_GIVEN = ["event", "context", "steps", "run_as"] as const;
const INSERT_RETURNS = `id, workspace_id, automation_id, version, event_id, dedupe_key, trigger_type, subject_id, status, exit_reason,
  current_node_key, waiting_for, waiting_until, cursor, trace_id, items_total, items_failed, interruptions, unsettled_claims, due_at,
  priority, priority_error, control, lease_owner, rev, started_at, completed_at, updated_at`;

/** A run as the insert made it: its returned row, with the JSON it wrote as given taken from the input. */
function runFromInsert(row: Record<string, unknown>, given: NewRun): Run {
  for (const k of AS_GIVEN) row[k] = given[k] ?? null;
  return toRun(row);
}

/**
 * The runs' INSERT from the decided rows `d` (INSERT_RUNS_CTES). `blocked`: from the rows the
 * first INSERT of the statement did not make (insertRunsSql), each recorded as skipped
 * (`already_active`): its decision is replaced, the same expressions write it.
 */
const runsInsert = (blocked: boolean) => {
  const sql = `INSERT INTO runs (id, workspace_id, automation_id, version, event_id, dedupe_key, trigger_type, subject_id, active_subject,
  status, exit_reason, current_node_key, waiting_for, waiting_until, event, context, steps, cursor, run_as, trace_id, due_at,
  lease_owner, unsettled_claims, started_at, completed_at, updated_at, priority, priority_error)
SELECT d.id, d.workspace_id, d.automation_id, d.version, d.event_id, d.dedupe_key, d.trigger_type, d.subject_id,
  CASE WHEN d.skip IS NULL THEN d.active_subject END,
  CASE WHEN d.skip IS NOT NULL THEN 'exited' WHEN d.status = 'pending' AND d.park_for IS NOT NULL THEN 'waiting'
       WHEN d.first_parked THEN 'waiting'
       WHEN d.status = 'pending' AND d.lease_owner IS NOT NULL THEN 'running' ELSE d.status END,
  coalesce(d.skip, d.exit_reason),
  CASE WHEN d.skip IS NULL AND d.status = 'pending' THEN d.current_node_key END,
  CASE WHEN d.skip IS NULL AND d.status = 'pending' THEN CASE WHEN d.first_parked THEN d.fp_waiting_for ELSE d.park_for END END,
  CASE WHEN d.skip IS NULL AND d.status = 'pending' THEN to_timestamp(CASE WHEN d.first_parked THEN d.fp_waiting_until ELSE d.park_until END / 1000.0) END,
  d.event, d.context, d.steps, CASE WHEN d.first_parked THEN d.fp_cursor ELSE d.cursor END, d.run_as, d.trace_id,
  -- A run parked for a slot has no due time (its key's releases wake it); one parked for a rate turn is due at it.
  CASE WHEN d.skip IS NOT NULL OR d.status <> 'pending' THEN NULL WHEN d.park_for = 'concurrency' THEN NULL
       WHEN d.park_for = 'rate_limit' THEN to_timestamp(d.park_until / 1000.0)
       WHEN d.first_parked THEN to_timestamp(d.fp_due_at / 1000.0) ELSE to_timestamp(d.due_at / 1000.0) END,
  -- Held at its creation (lease-at-insert) only when it is created pending, due, not parked.
  CASE WHEN d.skip IS NULL AND d.status = 'pending' AND d.park_for IS NULL AND NOT d.first_parked THEN d.lease_owner END,
  CASE WHEN d.skip IS NULL AND d.status = 'pending' AND d.park_for IS NULL AND NOT d.first_parked AND d.lease_owner IS NOT NULL THEN 1 ELSE 0 END,
  to_timestamp(d.started_at / 1000.0),
  CASE WHEN d.skip IS NOT NULL OR d.status = 'exited' THEN $2 END,
  to_timestamp(d.started_at / 1000.0), coalesce(d.priority, 0), d.priority_error
FROM ${blocked ? "blocked" : "d"} d WHERE NOT d.repeat AND NOT EXISTS (SELECT 1 FROM decided x WHERE x.stale) ORDER BY d.ord
ON CONFLICT DO NOTHING
RETURNING ${INSERT_RETURNS}`;
  return blocked ? sql.replaceAll("d.skip", "'already_active'::text").replaceAll("d.first_parked", "false") : sql;
};

/**
 * The insert as one statement: the runs, the first step rows of those created parked
 * (NewRun.first_park; none for a run an enrollment rule skipped), and with `audited` each created
 * run's audit entry (RunAudit: planned before the insert, given the run's status as created). One
 * round trip and one commit for a run and all it starts with, with no transaction around them.
 */
const insertRunsSql = (audited: boolean) => `WITH ${INSERT_RUNS_CTES},
made AS (${runsInsert(false)}),
-- Rows the INSERT did not make: a conflict on the subject's active slot (recorded here, as skipped
-- already_active, in the same statement) or on the dedupe key (a replay: not written, the caller
-- reads the existing run). A dedupe key committed meanwhile by another statement conflicts again
-- below and is likewise left to the caller's read.
-- NOT IN, not NOT EXISTS: a hashed subplan, one probe per row whatever the planner guesses of
-- \`made\` (its NOT EXISTS form was planned as a nested loop over it at times: quadratic in the batch).
blocked AS (
  SELECT d.* FROM d
  WHERE d.id NOT IN (SELECT m.id FROM made m)
    AND NOT EXISTS (SELECT 1 FROM runs r WHERE r.automation_id = d.automation_id AND r.dedupe_key = d.dedupe_key)
),
skipped_made AS (${runsInsert(true)}),
created AS (SELECT * FROM made UNION ALL SELECT * FROM skipped_made),
first_steps AS (
  ${STEP_INSERT}
  FROM jsonb_to_recordset($3::jsonb) AS s(${STEP_RECORD})
  JOIN made m ON m.id = s.run_id AND m.status <> 'exited'
  ORDER BY s.ord
)${
  audited
    ? `,
logged AS (
  INSERT INTO audit_log (workspace_id, actor, action, target_type, target_id, details, at)
  SELECT l.workspace_id, l.actor, l.action, l.target_type, l.target_id, l.details || jsonb_build_object('status', m.status), to_timestamp(l.at / 1000.0)
  FROM jsonb_to_recordset($4::jsonb) AS l(workspace_id text, actor text, action text, target_type text, target_id text, details jsonb,
    at double precision, run_id text, ord int)
  JOIN created m ON m.id = l.run_id
  ORDER BY l.ord
)`
    : ""
}
-- One row even when nothing was made: how many runs were refused as stale (then none was made).
SELECT m.*, s.stale_rows FROM (SELECT count(*) FILTER (WHERE x.stale) AS stale_rows FROM decided x) s LEFT JOIN created m ON true`;
const INSERT_RUNS_SQL = insertRunsSql(false);
const INSERT_RUNS_AUDITED_SQL = insertRunsSql(true);

/** One statement of the insert: with `entry`, the created runs' audit entries written by it too. */
function insertStatement(rows: readonly object[], at: Date | null, entry: RunAudit | undefined, planned: readonly NewRun[]): pg.QueryConfig {
  const firstSteps: object[] = [];
  for (const r of planned) for (const st of r.first_park?.steps ?? []) firstSteps.push(stepRecord(st, r.id, firstSteps.length));
  const values = [JSON.stringify(rows), at, JSON.stringify(firstSteps)];
  if (!entry) return { name: "weft_insert_runs", text: INSERT_RUNS_SQL, values };
  const entries = planned.map((r, ord) => auditRecord(entry(r), r.id, ord));
  return { name: "weft_insert_runs_audited", text: INSERT_RUNS_AUDITED_SQL, values: [...values, JSON.stringify(entries)] };
}

type Queryable = Pick<pg.Pool | pg.PoolClient, "query">;

/**
 * Insert runs set-wise, applying the enrollment rules in SQL (pause, cooldown, one active run per
 * subject via the partial unique index). A row that conflicts on the active-subject index is
 * recorded as an exited `already_active` run; a row whose dedupe key exists is a replay.
 */
export async function insertRuns(db: Queryable, runs: readonly NewRun[], now: number, entry?: RunAudit): Promise<InsertRunResult[]> {
  if (runs.length === 0) return [];
  // reentry cancel_previous (store/postgres/singleton.ts): one run at a time, in input order, so a
  // later run of a slot replaces an earlier one of the same call (as the embedded store does).
  if (runs.length > 1 && runs.some(replacesActive)) {
    const out: InsertRunResult[] = [];
    for (const r of runs) out.push(...(await insertRuns(db, [r], now, entry)));
    return out;
  }
  // Flow control's admission: its keys locked before any row lock, its decision made before the
  // INSERT, so each run is written once, as it enters (flow.ts).
  const admits = runs.some((r) => r.admit !== undefined || r.admit_rate !== undefined) && (await lockAdmission(db, runs));
  await releaseReplaced(db, runs, now, ENROLLMENT_SQL, closeApprovalSet);
  const at = ts(now);
  const plan = admits ? await planAdmission(db, runs, now) : null;
  const rows = runs.map((r, ord) => insertRow(r, admittedRow(plan, r, now), ord));
  const first = await db.query(insertStatement(rows, at, entry, runs));
  if (Number(first.rows[0]?.stale_rows ?? 0) > 0) throw new StaleAutomationError(runs.find((r) => r.while_current)?.automation_id ?? "");
  const given = new Map<string, NewRun>(runs.map((r) => [r.id, r]));
  const byId = new Map<string, Run>(first.rows.filter((r) => r.id !== null).map((r) => [r.id as string, runFromInsert(r, given.get(r.id)!)]));
  const missing = runs.filter((r) => !byId.has(r.id));
  const existing = new Map<string, Run>();
  if (missing.length > 0) {
    const dups = await db.query("SELECT * FROM runs WHERE (automation_id, dedupe_key) IN (SELECT * FROM unnest($1::text[], $2::text[]))", [
      missing.map((r) => r.automation_id),
      missing.map((r) => r.dedupe_key),
    ]);
    for (const r of dups.rows) existing.set(`${r.automation_id}\u0000${r.dedupe_key}`, toRun(r));
  }
  if (plan !== null) await finishAdmission(db, plan, byId, now);
  return runs.map((r) => {
    const made = byId.get(r.id);
    if (made) return { created: true, run: made };
    const prior = existing.get(`${r.automation_id}\u0000${r.dedupe_key}`);
    if (!prior) throw new Error(`run ${r.id} was neither inserted nor found`);
    return { created: false, run: prior };
  });
}

/** One run; with `audit`, its audit entry commits with it (RunAudit). */
export async function insertRun(pool: pg.Pool, run: NewRun, now: number, entry?: RunAudit): Promise<InsertRunResult> {
  const [res] = await insertRunsAudited(pool, [run], now, entry);
  if (!res) throw new Error(`run ${run.id} was not inserted`);
  return res;
}

/** Runs set-wise (insertRuns); with `audit`, each created run's entry commits in the same transaction. */
export async function insertRunsAudited(pool: pg.Pool, runs: readonly NewRun[], now: number, entry?: RunAudit): Promise<InsertRunResult[]> {
  // Runs that replace nobody and pass no gate are written by one statement with their entries,
  // the ones blocked by an active run recorded as skipped in it too (its own transaction): no
  // BEGIN and COMMIT round trips, and a batch is still written whole or not at all (a replay's
  // existing run is only read). Admission's reads and writes and a replaced run's release are
  // statements of their own: those inserts share a transaction.
  const gated = runs.some((r) => r.admit !== undefined || r.admit_rate !== undefined || replacesActive(r));
  if (!gated) return insertRuns(pool, runs, now, entry);
  return tx(pool, (c) => insertRuns(c, runs, now, entry));
}

/**
 * The claim in `claimOrder` (engine/store.ts), by the function weft_claim (migration 014): it
 * visits only the automations with a due mark (a lower bound of their earliest due run, kept by
 * triggers), takes each one's first due runs by (claim key, id), claims by (rank, key, id) with
 * SKIP LOCKED, then raises the marks of the automations left with nothing due. One round trip;
 * its cost follows the automations with due work and the limit, not the automations or parked runs.
 */
const CLAIM_SQL = "SELECT * FROM weft_claim($1, $2, $3, $4)";

/**
 * The safety net: a due run whose automation has no mark at or before it gets one. It only ever
 * lowers marks (no lock needed) and reads only due runs (the runs_due index).
 */
const SWEEP_SQL = `
INSERT INTO due_marks (automation_id, due_at)
SELECT r.automation_id, min(r.due_at) FROM runs r WHERE r.due_at <= $1 GROUP BY r.automation_id
HAVING NOT EXISTS (SELECT 1 FROM due_marks m WHERE m.automation_id = r.automation_id AND m.due_at <= min(r.due_at))`;

/** When each pool (one per store) last swept, on the engine's clock. */
const lastSweep = new WeakMap<pg.Pool, number>();

// In the claim's order within the due runs (priority included), so the unclaimed pass never starts a
// lower-priority run before a higher one. Two ranges (migration 021), each read off the front of an
// index in that order: priority 0 and above on runs_claim_key up to now (such a run's key is at
// most its due time, so runs parked on later timers are never read), below 0 on its partial index
// up to weft_claim_at(now, PRIORITY_MIN), the largest key a due run can have.
const DUE_RUNS_SQL = `SELECT * FROM (
  (SELECT * FROM runs WHERE due_at IS NOT NULL AND weft_claim_at(due_at, priority) <= $1 AND priority >= 0 AND due_at <= $1
   ORDER BY weft_claim_at(due_at, priority), id LIMIT $2)
  UNION ALL
  (SELECT * FROM runs WHERE due_at IS NOT NULL AND priority < 0
     AND weft_claim_at(due_at, priority) <= weft_claim_at($1, ${PRIORITY_MIN}) AND due_at <= $1
   ORDER BY weft_claim_at(due_at, priority), id LIMIT $2)
) u ORDER BY weft_claim_at(due_at, priority), id LIMIT $2`;

/** Store.dueRuns: a plain read (the commit that claims one re-checks it). */
export async function dueRuns(pool: pg.Pool, now: number, limit: number): Promise<Run[]> {
  const res = await pool.query({ name: "weft_due_runs", text: DUE_RUNS_SQL, values: [ts(now), limit] });
  return res.rows.map(toRun);
}

export async function claimRuns(pool: pg.Pool, owner: string, now: number, leaseMs: number, limit: number): Promise<Run[]> {
  const swept = lastSweep.get(pool);
  if (swept === undefined || now - swept >= DUE_MARK_SWEEP_MS || now < swept) {
    lastSweep.set(pool, now);
    await pool.query({ name: "weft_sweep_due_marks", text: SWEEP_SQL, values: [ts(now)] });
  }
  const res = await pool.query({ name: "weft_claim_runs", text: CLAIM_SQL, values: [ts(now), ts(now + leaseMs), limit, owner] });
  return res.rows.map(toRun);
}

/**
 * The checkpoint statement; `lazy`: its commit does not wait for the WAL flush (see
 * commitCheckpoints). `lean`: for a batch with no item, item update, approval or consumed event
 * to write and no run's open items to close (most steps): the statement without those parts and
 * their parameters ($5 to $8; a statement may not leave a parameter unused). Three round trips of
 * a three-step run's four are commits like this; the parts left out cost their executor set-up
 * on every commit.
 */
const commitSql = (lazy: boolean, lean: boolean) => `
WITH input AS (
  SELECT * FROM jsonb_to_recordset($2::jsonb) AS x(
    run_id text, expected_rev int, status text, exit_reason text, current_node_key text, waiting_for text,
    waiting_until double precision, context jsonb, steps jsonb, cursor jsonb, items_total int, items_failed int,
    interruptions int, due_at double precision, keep_lease boolean, completed_at double precision,
    updated_at double precision, terminal boolean, wait_key text, wait_name text, wait_subject text,
    wait_after double precision, wait_exclude text[], close_open boolean, claim_at double precision, lease_until double precision,
    state_unchanged boolean)${lazy ? "\n  WHERE set_config('synchronous_commit', 'off', true) IS NOT NULL" : ""}
), upd AS (
  UPDATE runs r SET
    status = i.status, exit_reason = i.exit_reason, current_node_key = i.current_node_key,
    waiting_for = i.waiting_for, waiting_until = to_timestamp(i.waiting_until / 1000.0),
    -- Left as they are when the previous commit wrote them (Checkpoint.state_unchanged): a large
    -- context is neither sent nor rewritten (its TOASTed value is kept).
    context = CASE WHEN i.state_unchanged THEN r.context ELSE i.context END,
    steps = CASE WHEN i.state_unchanged THEN r.steps ELSE i.steps END,
    cursor = CASE WHEN i.state_unchanged THEN r.cursor ELSE i.cursor END, items_total = i.items_total,
    items_failed = i.items_failed, interruptions = i.interruptions,
    due_at = CASE
      -- A run claimed by this commit (Checkpoint.claim) takes its lease here.
      WHEN i.keep_lease THEN coalesce(to_timestamp(i.lease_until / 1000.0), r.due_at)
      -- A stop or cancel came while the worker held the run: released but not ended, it is due
      -- now, so the next claim applies the request (see RunState.due_at).
      WHEN r.control IS NOT NULL AND NOT i.terminal THEN to_timestamp(i.updated_at / 1000.0)
      -- Parking on named events: due at once if one is already stored (it may have arrived while
      -- the run decided to wait; the dispatcher's wake saw the run still running).
      WHEN i.wait_key IS NOT NULL AND EXISTS (
        SELECT 1 FROM events e WHERE e.workspace_id = r.workspace_id AND e.type = 'event' AND e.name = i.wait_name
          AND (i.wait_subject IS NULL OR e.subject_id = i.wait_subject)
          AND e.received_at >= to_timestamp(i.wait_after / 1000.0) AND NOT (e.id = ANY (i.wait_exclude))
          AND NOT EXISTS (SELECT 1 FROM run_consumed_events c WHERE c.run_id = r.id AND c.event_id = e.id)
      ) THEN to_timestamp(i.updated_at / 1000.0)
      -- An approval was decided (or the subject resumed) while this worker held the run: the park
      -- must not sleep through it.
      WHEN r.wake AND i.status = 'waiting' THEN to_timestamp(i.updated_at / 1000.0)
      ELSE to_timestamp(i.due_at / 1000.0) END,
    wake = CASE WHEN i.keep_lease THEN r.wake ELSE false END,
    lease_owner = CASE WHEN i.keep_lease THEN $1 ELSE NULL END,
    active_subject = CASE WHEN i.terminal THEN NULL ELSE r.active_subject END,
    control = CASE WHEN i.terminal THEN NULL ELSE r.control END,
    wait_key = i.wait_key,
    completed_at = to_timestamp(i.completed_at / 1000.0), updated_at = to_timestamp(i.updated_at / 1000.0),
    unsettled_claims = 0,
    rev = r.rev + 1
  FROM input i
  WHERE r.id = i.run_id AND r.rev = i.expected_rev AND CASE
    WHEN i.claim_at IS NULL THEN r.lease_owner = $1
    ELSE r.lease_owner IS NULL AND r.control IS NULL AND r.due_at <= to_timestamp(i.claim_at / 1000.0) END
  RETURNING r.id, r.rev - 1 AS expected_rev, r.control
), ins AS (
  ${STEP_INSERT}
  FROM jsonb_to_recordset($3::jsonb) AS s(${STEP_RECORD}, expected_rev int)
  WHERE (s.run_id, s.expected_rev) IN (SELECT id, expected_rev FROM upd)
  ORDER BY s.ord
${
  lean
    ? ""
    : `), items AS (
  INSERT INTO run_items (id, run_id, workspace_id, node_key, visit, idx, subject_id, action_kind, outcome, attempts,
    idempotency_key, input, output, error, approval_id, not_before, started_at, finished_at, updated_at)
  SELECT t.id, t.run_id, t.workspace_id, t.node_key, t.visit, t.idx, t.subject_id, t.action_kind, t.outcome, t.attempts,
    t.idempotency_key, t.input, t.output, t.error, t.approval_id, to_timestamp(t.not_before / 1000.0),
    to_timestamp(t.started_at / 1000.0), to_timestamp(t.finished_at / 1000.0), to_timestamp(t.updated_at / 1000.0)
  FROM jsonb_to_recordset($5::jsonb) AS t(
    id text, run_id text, workspace_id text, node_key text, visit int, idx int, subject_id text, action_kind text,
    outcome text, attempts int, idempotency_key text, input jsonb, output jsonb, error jsonb, approval_id text,
    not_before double precision, started_at double precision, finished_at double precision, updated_at double precision, expected_rev int)
  WHERE (t.run_id, t.expected_rev) IN (SELECT id, expected_rev FROM upd)
  ON CONFLICT (id) DO UPDATE SET outcome = EXCLUDED.outcome, attempts = EXCLUDED.attempts, input = EXCLUDED.input,
    output = EXCLUDED.output, error = EXCLUDED.error, approval_id = EXCLUDED.approval_id, not_before = EXCLUDED.not_before,
    started_at = EXCLUDED.started_at, finished_at = EXCLUDED.finished_at, updated_at = EXCLUDED.updated_at
), item_updates AS (
  -- Items on record whose attempt changed them (Checkpoint.item_updates): only those fields are sent.
  UPDATE run_items t SET outcome = u.outcome, attempts = u.attempts, output = u.output, error = u.error,
    approval_id = u.approval_id, not_before = to_timestamp(u.not_before / 1000.0), started_at = to_timestamp(u.started_at / 1000.0),
    finished_at = to_timestamp(u.finished_at / 1000.0), updated_at = to_timestamp(u.updated_at / 1000.0)
  FROM jsonb_to_recordset($8::jsonb) AS u(
    id text, run_id text, outcome text, attempts int, output jsonb, error jsonb, approval_id text,
    not_before double precision, started_at double precision, finished_at double precision, updated_at double precision, expected_rev int)
  WHERE t.id = u.id AND t.run_id = u.run_id AND (u.run_id, u.expected_rev) IN (SELECT id, expected_rev FROM upd)
), appr AS (
  INSERT INTO approvals (id, workspace_id, run_id, automation_id, node_key, visit, item_id, title, approvers, status, created_at, expires_at)
  SELECT a.id, a.workspace_id, a.run_id, a.automation_id, a.node_key, a.visit, a.item_id, a.title, a.approvers, 'pending',
    to_timestamp(a.created_at / 1000.0), to_timestamp(a.expires_at / 1000.0)
  FROM jsonb_to_recordset($6::jsonb) AS a(
    id text, workspace_id text, run_id text, automation_id text, node_key text, visit int, item_id text, title text,
    approvers jsonb, created_at double precision, expires_at double precision, expected_rev int)
  WHERE (a.run_id, a.expected_rev) IN (SELECT id, expected_rev FROM upd)
  ON CONFLICT (id) DO NOTHING
`
}), aud AS (
  INSERT INTO audit_log (workspace_id, actor, action, target_type, target_id, details, at)
  SELECT l.workspace_id, l.actor, l.action, l.target_type, l.target_id, l.details, to_timestamp(l.at / 1000.0)
  FROM jsonb_to_recordset($4::jsonb) AS l(
    workspace_id text, actor text, action text, target_type text, target_id text, details jsonb, at double precision,
    run_id text, expected_rev int, ord int)
  WHERE (l.run_id, l.expected_rev) IN (SELECT id, expected_rev FROM upd)
  ORDER BY l.ord
${
  lean
    ? ")"
    : `), consumed AS (
  INSERT INTO run_consumed_events (run_id, event_id)
  SELECT k.run_id, k.event_id FROM jsonb_to_recordset($7::jsonb) AS k(run_id text, event_id text, expected_rev int)
  WHERE (k.run_id, k.expected_rev) IN (SELECT id, expected_rev FROM upd)
  ON CONFLICT DO NOTHING
), closed_items AS (
  -- A run that ended leaves no open item (items written by this same checkpoint are left to it).
  UPDATE run_items t SET outcome = 'skipped', finished_at = to_timestamp(i.updated_at / 1000.0), updated_at = to_timestamp(i.updated_at / 1000.0),
    error = jsonb_build_object('code', 'run.ended', 'message', 'the run ended (' || i.status || ') before this item started', 'retryable', false)
  FROM input i
  WHERE i.close_open AND t.run_id = i.run_id AND t.outcome IN ('pending', 'awaiting_approval')
    AND (i.run_id, i.expected_rev) IN (SELECT id, expected_rev FROM upd)
    AND t.id NOT IN (SELECT x.id FROM jsonb_to_recordset($5::jsonb) AS x(id text))
    AND t.id NOT IN (SELECT x.id FROM jsonb_to_recordset($8::jsonb) AS x(id text))
), closed_approvals AS (
  UPDATE approvals p SET ${closeApprovalSet("to_timestamp(i.updated_at / 1000.0)")}
  FROM input i
  WHERE i.close_open AND p.run_id = i.run_id AND p.status = 'pending' AND (i.run_id, i.expected_rev) IN (SELECT id, expected_rev FROM upd)
)`
}
SELECT id, expected_rev, control FROM upd`;
/** The checkpoint statement's three forms, each a prepared statement of its own (a lease-only commit is lean). */
const COMMIT = { name: "weft_commit", text: commitSql(false, false) };
const STEPS_COMMIT = { name: "weft_commit_steps", text: commitSql(false, true) };
const LEASE_COMMIT = { name: "weft_commit_lease", text: commitSql(true, true) };

/**
 * A checkpoint that only takes the lease of a run claimed by its commit (Checkpoint.claim, before
 * a node that reaches outside this process; no step, item, approval or audit row): it records no
 * result, so it need not wait for the WAL flush. Its row is visible to every other claimer as
 * soon as it commits, so no two workers hold the run; only a crash of PostgreSQL itself within a
 * moment of it can lose it, and then the run is back as it was before the claim (rev included),
 * so this worker's next checkpoint is refused and the run resumes from its last checkpoint, as
 * after a lost lease. A later flushed commit (the step's checkpoint) makes it durable with it.
 */
const leaseOnly = (c: Checkpoint): boolean =>
  c.claim !== undefined &&
  c.state.keep_lease &&
  c.steps.length === 0 &&
  !c.items?.length &&
  !c.item_updates?.length &&
  !c.approvals?.length &&
  !c.audit?.length &&
  !c.consumed?.length &&
  !c.state.close_open;

/** One statement, one round trip and one commit for many runs' checkpoints (group commit). */
export async function commitCheckpoints(pool: pg.Pool, owner: string, cps: readonly Checkpoint[], isTerminal: (s: string) => boolean): Promise<CommitResult[]> {
  if (cps.length === 0) return [];
  // Each input row is built field by field for its recordset (commitSql): a spread of the
  // checkpoint's objects with fields added cost microseconds per row, and a fan-out commits
  // thousands of items at once.
  const states = cps.map((c) => {
    const st = c.state;
    const wait = st.wait;
    const same = c.state_unchanged === true;
    return {
      run_id: c.run_id,
      expected_rev: c.expected_rev,
      status: st.status,
      exit_reason: st.exit_reason,
      current_node_key: st.current_node_key,
      waiting_for: st.waiting_for,
      waiting_until: st.waiting_until,
      context: same ? null : st.context,
      steps: same ? null : st.steps,
      cursor: same ? null : st.cursor,
      items_total: st.items_total,
      items_failed: st.items_failed,
      interruptions: st.interruptions,
      due_at: st.due_at,
      keep_lease: st.keep_lease,
      completed_at: st.completed_at,
      updated_at: st.updated_at,
      terminal: isTerminal(st.status),
      wait_key: wait ? waitKey(wait.name, wait.subject_id) : null,
      wait_name: wait?.name ?? null,
      wait_subject: wait?.subject_id ?? null,
      wait_after: wait?.after ?? null,
      wait_exclude: wait?.exclude ?? [],
      close_open: st.close_open ?? null,
      claim_at: c.claim?.at ?? null,
      lease_until: c.claim?.lease_until ?? null,
      state_unchanged: same || null,
    };
  });
  const steps: object[] = [];
  for (const c of cps) for (const st of c.steps) steps.push(stepRecord(st, c.run_id, steps.length, c.expected_rev));
  const items = cps.flatMap((c) => (c.items ?? []).map((it) => itemRecord(it, c.expected_rev)));
  const itemUpdates = cps.flatMap((c) =>
    (c.item_updates ?? []).map((it) => ({
      id: it.id,
      run_id: c.run_id,
      expected_rev: c.expected_rev,
      outcome: it.outcome,
      attempts: it.attempts,
      output: it.output,
      error: it.error,
      approval_id: it.approval_id,
      not_before: it.not_before,
      started_at: it.started_at,
      finished_at: it.finished_at,
      updated_at: it.updated_at,
    })),
  );
  const approvals = cps.flatMap((c) => (c.approvals ?? []).map((a) => ({ ...a, run_id: c.run_id, expected_rev: c.expected_rev })));
  const audit: object[] = [];
  for (const c of cps) for (const a of c.audit ?? []) audit.push(auditRecord(a, c.run_id, audit.length, c.expected_rev));
  const consumed = cps.flatMap((c) => (c.consumed ?? []).map((event_id) => ({ run_id: c.run_id, event_id, expected_rev: c.expected_rev })));
  const lean = items.length === 0 && itemUpdates.length === 0 && approvals.length === 0 && consumed.length === 0 && cps.every((c) => !c.state.close_open);
  const values = [owner, JSON.stringify(states), JSON.stringify(steps), JSON.stringify(audit)];
  if (!lean) values.push(JSON.stringify(items), JSON.stringify(approvals), JSON.stringify(consumed), JSON.stringify(itemUpdates));
  const res = await pool.query({ ...(!lean ? COMMIT : cps.every(leaseOnly) ? LEASE_COMMIT : STEPS_COMMIT), values });
  // Applied per checkpoint (run and the rev it expected), not per run id.
  const applied = new Map(res.rows.map((r: { id: string; expected_rev: number; control: RunControl | null }) => [`${r.id}@${r.expected_rev}`, r.control]));
  return cps.map((c) => {
    const k = `${c.run_id}@${c.expected_rev}`;
    return { applied: applied.has(k), control: applied.get(k) ?? null };
  });
}

/**
 * Extend this owner's leases. Rows locked right now (by this owner's own checkpoint in flight)
 * are skipped, not waited for: waiting could deadlock against that checkpoint's row locks, and a
 * skipped lease is extended at the next renewal (a third of a lease later). They still count as
 * held when this owner holds them.
 */
export async function renewLeases(pool: pg.Pool, owner: string, ids: readonly string[], until: number): Promise<string[]> {
  if (ids.length === 0) return [];
  const res = await pool.query({
    name: "weft_renew_leases",
    text: `WITH locked AS (
             SELECT id FROM runs WHERE id = ANY($2::text[]) AND lease_owner = $1 AND status = 'running' FOR UPDATE SKIP LOCKED
           ), renewed AS (
             UPDATE runs r SET due_at = $3 FROM locked WHERE r.id = locked.id
           )
           SELECT id FROM runs WHERE id = ANY($2::text[]) AND lease_owner = $1 AND status = 'running'`,
    values: [owner, ids, ts(until)],
  });
  return res.rows.map((r: { id: string }) => r.id);
}

export async function quarantinedRuns(pool: pg.Pool, workspaceId: string, limit: number): Promise<{ total: number; runs: Run[] }> {
  const where = "workspace_id = $1 AND status = 'failed' AND exit_reason = 'quarantined'";
  const [n, rows] = await Promise.all([
    pool.query(`SELECT count(*)::int AS n FROM runs WHERE ${where}`, [workspaceId]),
    pool.query(`SELECT * FROM runs WHERE ${where} ORDER BY completed_at DESC, id DESC LIMIT $2`, [workspaceId, limit]),
  ]);
  return { total: n.rows[0].n as number, runs: rows.rows.map(toRun) };
}
