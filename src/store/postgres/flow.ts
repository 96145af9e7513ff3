// Flow control on PostgreSQL: concurrency slots, waiters, the rate log, host pauses and shared
// limits (migrations/016_flow.sql). The decisions are model/flow.ts's (the embedded store makes
// the same ones); here every key a gate touches is locked first (a transaction advisory lock per
// key, taken in sorted order so two gates cannot deadlock), so two processes never both count a
// key's last free slot or its last rate turn.

import type pg from "pg";
import {
  admitRates,
  admitRuns,
  decideFlow,
  keyOf,
  keysToWake,
  waitersToWake,
  type FlowAcquire,
  type FlowDecision,
  type FlowFacts,
  type FlowRateGate,
  type FlowSlotGate,
  type KeyCounts,
} from "../../model/flow.js";
import { TERMINAL_STATUSES } from "../../model/run-status.js";
import type { AuditEntry, FlowKeyStats, FlowWait, FlowWaitInfo, HostPause, NewRun, Run, SharedLimit } from "../../engine/store.js";
import { sqlList } from "../sql.js";
import { audit } from "./audit.js";
import { tx } from "./tx.js";

const TERMINAL = sqlList(TERMINAL_STATUSES);
type Q = Pick<pg.PoolClient, "query">;

/** A slot row still held: its run has not ended, and a step's slot only while the run runs under a live lease and the step's row is not committed. */
const held = (now: string) => `EXISTS (SELECT 1 FROM runs r WHERE r.id = s.run_id AND r.status NOT IN ${TERMINAL}
  AND (s.step_key = '' OR (r.status = 'running' AND r.due_at > to_timestamp(${now} / 1000.0)
       AND NOT EXISTS (SELECT 1 FROM step_runs st WHERE st.run_id = s.run_id AND st.idempotency_key = s.step_key
                       AND st.started_at >= to_timestamp(s.acquired_at / 1000.0)))))`;
const LIVE_WAITER = `EXISTS (SELECT 1 FROM runs r WHERE r.id = w.run_id AND r.status NOT IN ${TERMINAL})`;

/** A key's live waiters, counted up to $4 (oldest first: the FIFO index, stopping at the bound). */
const LIVE_WAITERS_UPTO = `SELECT count(*)::int AS n FROM (SELECT 1 FROM flow_waiters w WHERE workspace_id = $1 AND scope = $2 AND key = $3 AND ${LIVE_WAITER}
  ORDER BY since, run_id LIMIT $4) x`;

/** Lock a gate's keys for the transaction, in one statement, in sorted order (two gates cannot wait for each other). */
async function lockKeys(c: Q, ws: string, keys: readonly string[]): Promise<void> {
  const sorted = [...new Set(keys.map((k) => `flow/${ws}/${k}`))].sort();
  if (sorted.length === 1) await c.query("SELECT pg_advisory_xact_lock(hashtextextended($1, 7461))", sorted);
  else if (sorted.length > 1)
    await c.query("SELECT count(pg_advisory_xact_lock(hashtextextended(k, 7461))) FROM (SELECT k FROM unnest($1::text[]) AS k ORDER BY k) x", [sorted]);
}

/** Most distinct keys one insert admits at creation: runs beyond them are admitted at their claim (a tenant's batch of 1,000 keys takes no 1,000 locks). */
export const MAX_ADMISSION_KEYS = 64;

/** The admission keys of an insert's runs, per workspace, as lockKeys names them; null when there are too many to admit here. */
function admissionKeys(runs: readonly NewRun[]): Map<string, string[]> | null {
  const byWs = new Map<string, Set<string>>();
  let n = 0;
  for (const r of runs) {
    if (r.status !== "pending") continue;
    const set = byWs.get(r.workspace_id) ?? new Set<string>();
    for (const g of r.admit ?? []) set.add(`${g.scope}/${g.key}`);
    if (r.admit_rate) set.add(`rate:${r.admit_rate.scope}/${r.admit_rate.key}`);
    byWs.set(r.workspace_id, set);
  }
  for (const set of byWs.values()) n += set.size;
  if (n > MAX_ADMISSION_KEYS) return null;
  return new Map([...byWs].map(([ws, set]) => [ws, [...set]]));
}

/**
 * The first thing an insert with admission does, before any row lock (a replaced holder's, a
 * window's): lock every key it will admit to, workspaces in order, so it cannot deadlock with a
 * wake (which holds a key, then updates its waiters' rows). False: too many keys, admit at claim.
 */
export async function lockAdmission(c: Q, runs: readonly NewRun[]): Promise<boolean> {
  const keys = admissionKeys(runs);
  if (keys === null) return false;
  for (const [ws, list] of [...keys].sort(([a], [b]) => (a < b ? -1 : 1))) await lockKeys(c, ws, list);
  return true;
}

async function heldCount(c: Q, ws: string, scope: string, key: string, now: number, runId: string): Promise<number> {
  const r = await c.query(
    `SELECT count(*)::int AS n FROM flow_slots s WHERE workspace_id = $1 AND scope = $2 AND key = $3 AND run_id <> $4 AND ${held("$5::bigint")}`,
    [ws, scope, key, runId, now],
  );
  return r.rows[0].n as number;
}

/** A run that holds every slot of its run-level gate (admitted at creation, or at an earlier claim) passes: only its end releases them. */
async function holdsAll(pool: pg.Pool, req: FlowAcquire): Promise<boolean> {
  if (req.step_key !== "" || req.rate !== null || req.slots.length === 0) return false;
  const r = await pool.query(
    `SELECT count(*)::int AS n FROM flow_slots WHERE run_id = $1 AND step_key = '' AND workspace_id = $2
     AND (scope, key) IN (SELECT * FROM unnest($3::text[], $4::text[]))`,
    [req.run_id, req.workspace_id, req.slots.map((g) => g.scope), req.slots.map((g) => g.key)],
  );
  return r.rows[0].n === req.slots.length;
}

export async function acquireFlow(pool: pg.Pool, req: FlowAcquire, now: number): Promise<FlowDecision> {
  const ws = req.workspace_id;
  if (await holdsAll(pool, req)) return { kind: "pass" };
  return tx(pool, async (c) => {
    await lockKeys(c, ws, [...req.slots.map((g) => `${g.scope}/${g.key}`), ...(req.rate ? [`rate:${req.rate.scope}/${req.rate.key}`] : [])]);
    const facts: FlowFacts = { slots: [], recent: [] };
    for (const g of req.slots) {
      const k = [ws, g.scope, g.key];
      // Rows no longer held go first, so the key's tables stay as small as its traffic.
      await c.query(`DELETE FROM flow_slots s WHERE workspace_id = $1 AND scope = $2 AND key = $3 AND NOT ${held("$4::bigint")}`, [...k, now]);
      const mine = await c.query("SELECT since FROM flow_waiters WHERE workspace_id = $1 AND scope = $2 AND key = $3 AND run_id = $4 AND step_key = $5", [
        ...k,
        req.run_id,
        req.step_key,
      ]);
      // Counts bounded by the limit (all the decision needs): a key's read costs O(limit), not O(waiters).
      const waiting = (await c.query(LIVE_WAITERS_UPTO, [...k, g.limit])).rows[0].n as number;
      const since = mine.rows[0]?.since === undefined ? null : Number(mine.rows[0].since);
      const older =
        since === null
          ? waiting
          : ((
              await c.query(
                `SELECT count(*)::int AS n FROM (SELECT 1 FROM flow_waiters w WHERE workspace_id = $1 AND scope = $2 AND key = $3 AND ${LIVE_WAITER}
                 AND (since < $4 OR (since = $4 AND run_id < $5)) AND run_id <> $5 ORDER BY since, run_id LIMIT $6) x`,
                [...k, since, req.run_id, g.limit],
              )
            ).rows[0].n as number);
      const holdsAlready =
        (
          await c.query("SELECT 1 FROM flow_slots WHERE workspace_id = $1 AND scope = $2 AND key = $3 AND run_id = $4 AND step_key = $5", [
            ...k,
            req.run_id,
            req.step_key,
          ])
        ).rowCount === 1;
      facts.slots.push({ held: await heldCount(c, ws, g.scope, g.key, now, req.run_id), olderWaiters: older, holdsAlready, waiting });
    }
    const r = req.rate;
    if (r !== null) {
      const k = [ws, r.scope, r.key];
      await c.query("DELETE FROM flow_rate_log WHERE workspace_id = $1 AND scope = $2 AND key = $3 AND at <= $4", [...k, now - r.period_ms]);
      const rows = await c.query("SELECT at FROM flow_rate_log WHERE workspace_id = $1 AND scope = $2 AND key = $3 ORDER BY at DESC LIMIT $4", [...k, r.limit]);
      facts.recent = rows.rows.map((x: { at: string }) => Number(x.at));
    }
    const w = decideFlow(req, facts, now);
    if (w.take) {
      for (const g of req.slots) {
        await c.query(
          `INSERT INTO flow_slots (workspace_id, scope, key, run_id, step_key, acquired_at) VALUES ($1, $2, $3, $4, $5, $6)
           ON CONFLICT (workspace_id, scope, key, run_id, step_key) DO UPDATE SET acquired_at = EXCLUDED.acquired_at`,
          [ws, g.scope, g.key, req.run_id, req.step_key, now],
        );
      }
      await c.query("DELETE FROM flow_waiters WHERE run_id = $1 AND step_key = $2", [req.run_id, req.step_key]);
    }
    if (w.waitOn !== null) {
      await c.query(
        `INSERT INTO flow_waiters (workspace_id, scope, key, run_id, step_key, lim, since) VALUES ($1, $2, $3, $4, $5, $6, $7)
         ON CONFLICT (workspace_id, scope, key, run_id, step_key) DO UPDATE SET lim = EXCLUDED.lim`,
        [ws, w.waitOn.scope, w.waitOn.key, req.run_id, req.step_key, w.waitOn.limit, now],
      );
    }
    if (w.admitAt !== null && r !== null) {
      await c.query("INSERT INTO flow_rate_log (workspace_id, scope, key, at, run_id) VALUES ($1, $2, $3, $4, $5)", [
        ws,
        r.scope,
        r.key,
        w.admitAt,
        req.run_id,
      ]);
    }
    return w.decision;
  });
}

/**
 * Whether any key may have a waiter to wake, in two statements instead of a locked transaction:
 * when no gate transaction holds a key's lock at this instant (the shared try-lock succeeds),
 * every waiter parked before now is committed and the next statement's snapshot sees it, and
 * any park after now counts this release's commit (already made) under its own lock.
 */
async function mayHaveWaiters(pool: pg.Pool, ws: string, gates: readonly Pick<FlowSlotGate, "scope" | "key">[]): Promise<boolean> {
  const keys = gates.map((g) => `flow/${ws}/${g.scope}/${g.key}`);
  const free = await pool.query("SELECT bool_and(pg_try_advisory_xact_lock_shared(hashtextextended(k, 7461))) AS free FROM unnest($1::text[]) AS k", [keys]);
  if (free.rows[0].free !== true) return true;
  const r = await pool.query("SELECT 1 FROM flow_waiters WHERE workspace_id = $1 AND (scope, key) IN (SELECT * FROM unnest($2::text[], $3::text[])) LIMIT 1", [
    ws,
    gates.map((g) => g.scope),
    gates.map((g) => g.key),
  ]);
  return r.rowCount === 1;
}

export async function wakeFlowWaiters(
  pool: pg.Pool,
  ws: string,
  gates: readonly Pick<FlowSlotGate, "scope" | "key" | "limit">[],
  now: number,
): Promise<number> {
  if (gates.length === 0) return 0;
  if (!(await mayHaveWaiters(pool, ws, gates))) return 0;
  return tx(pool, async (c) => {
    await lockKeys(
      c,
      ws,
      gates.map((g) => `${g.scope}/${g.key}`),
    );
    return wakeKeys(c, ws, gates, now);
  });
}

/** Wake (due now) the oldest waiters of each key, one per free slot; the caller holds the keys' locks. */
async function wakeKeys(c: Q, ws: string, gates: readonly Pick<FlowSlotGate, "scope" | "key" | "limit">[], now: number): Promise<number> {
  let woken = 0;
  for (const g of gates) {
    const n = waitersToWake(await heldCount(c, ws, g.scope, g.key, now, ""), g.limit);
    if (n === 0) continue;
    const res = await c.query(
      `UPDATE runs SET due_at = to_timestamp($4::bigint / 1000.0)
       WHERE status = 'waiting' AND waiting_for = 'concurrency' AND (due_at IS NULL OR due_at > to_timestamp($4::bigint / 1000.0)) AND id IN (
         SELECT w.run_id FROM flow_waiters w WHERE workspace_id = $1 AND scope = $2 AND key = $3 AND ${LIVE_WAITER}
         ORDER BY since, run_id LIMIT $5)`,
      [ws, g.scope, g.key, now, n],
    );
    woken += res.rowCount ?? 0;
  }
  return woken;
}

/** How the runs of one insert enter their automation's gates, decided before the insert (planAdmission). */
export interface AdmissionPlan {
  slots: Map<string, { ws: string; gates: FlowSlotGate[]; take: boolean; waitOn: FlowSlotGate | null }>;
  turns: Map<string, { ws: string; rate: FlowRateGate; at: number }>;
  /** Keys found with a free slot and waiters (keysToWake), per workspace: their oldest waiters are woken after the insert. */
  wake: Map<string, FlowSlotGate[]>;
}

/** What a planned run is inserted as: parked for a slot (no due time) or until its rate turn, with its turn on its cursor. */
export function admittedRow(plan: AdmissionPlan | null, r: NewRun, now: number): { park_for?: string; park_until?: number; cursor?: NewRun["cursor"] } {
  const slot = plan?.slots.get(r.id);
  if (slot !== undefined) return slot.take ? {} : { park_for: "concurrency" };
  const turn = plan?.turns.get(r.id);
  if (turn === undefined) return {};
  const cursor = { ...r.cursor, flow_turn: turn.at };
  return turn.at > now ? { park_for: "rate_limit", park_until: turn.at, cursor } : { cursor };
}

/**
 * Admission at creation, decided inside the insert's transaction before its INSERT, so a run is
 * written once, in the state it enters (no second version of the row, no dead index entries for
 * a parked backlog). Slot gates (model/flow.ts admitRuns): each key locked, its rows no longer
 * held deleted, its held slots and live waiters (up to the limit) counted once for the whole
 * insert. Queued rate limits (admitRates): each key locked, its log pruned and read once. The
 * decision counts every planned run as created; finishAdmission corrects for the ones that were
 * not (a replay, an enrollment rule).
 */
export async function planAdmission(c: Q, runs: readonly NewRun[], now: number): Promise<AdmissionPlan> {
  const plan: AdmissionPlan = { slots: new Map(), turns: new Map(), wake: new Map() };
  const byWs = new Map<string, NewRun[]>();
  for (const r of runs)
    if (r.status === "pending" && (r.admit !== undefined || r.admit_rate !== undefined)) byWs.set(r.workspace_id, [...(byWs.get(r.workspace_id) ?? []), r]);
  for (const [ws, list] of [...byWs].sort(([a], [b]) => (a < b ? -1 : 1))) {
    const gates = new Map<string, FlowSlotGate>();
    const rates = new Map<string, FlowRateGate>();
    for (const r of list) {
      for (const g of r.admit ?? []) gates.set(keyOf(g), g);
      if (r.admit_rate) rates.set(keyOf(r.admit_rate), r.admit_rate);
    }
    // Shared limits as they stand now (the caller read them earlier, a window when it opened): a
    // run whose limit was deleted meanwhile is admitted at its claim; a changed limit counts as is.
    const admit = new Map<string, FlowSlotGate[]>(list.flatMap((r) => (r.admit ? [[r.id, r.admit] as const] : [])));
    const names = [...new Set([...gates.values()].filter((g) => g.scope.startsWith("l:")).map((g) => g.scope.slice(2)))];
    if (names.length > 0) {
      const current = new Map<string, number>(
        (await c.query('SELECT name, "limit" FROM flow_limits WHERE workspace_id = $1 AND name = ANY($2::text[]) FOR SHARE', [ws, names])).rows.map(
          (r: { name: string; limit: number }) => [r.name, r.limit],
        ),
      );
      const shared = (g: FlowSlotGate) => g.scope.startsWith("l:");
      for (const [id, gs] of admit) {
        if (gs.some((g) => shared(g) && !current.has(g.scope.slice(2)))) admit.delete(id);
        else
          admit.set(
            id,
            gs.map((g) => (shared(g) ? { ...g, limit: current.get(g.scope.slice(2))! } : g)),
          );
      }
      gates.clear();
      for (const gs of admit.values()) for (const g of gs) gates.set(keyOf(g), g);
    }
    const keys = [...gates.values()];
    await lockKeys(c, ws, [...keys.map((g) => `${g.scope}/${g.key}`), ...[...rates.values()].map((r) => `rate:${r.scope}/${r.key}`)]);
    if (keys.length > 0) {
      const cols = [keys.map((g) => g.scope), keys.map((g) => g.key)];
      // Rows no longer held go first (as the gate's acquire does), so a key's reads stay as small as its traffic.
      await c.query(
        `DELETE FROM flow_slots s WHERE workspace_id = $1 AND (scope, key) IN (SELECT * FROM unnest($2::text[], $3::text[])) AND NOT ${held("$4::bigint")}`,
        [ws, ...cols, now],
      );
      const read = await c.query(
        `SELECT k.scope, k.key,
           (SELECT count(*)::int FROM flow_slots s WHERE s.workspace_id = $1 AND s.scope = k.scope AND s.key = k.key AND ${held("$5::bigint")}) AS held,
           (SELECT count(*)::int FROM (SELECT 1 FROM flow_waiters w WHERE w.workspace_id = $1 AND w.scope = k.scope AND w.key = k.key AND ${LIVE_WAITER}
              ORDER BY since, run_id LIMIT k.lim) x) AS waiting
         FROM unnest($2::text[], $3::text[], $4::int[]) AS k(scope, key, lim)`,
        [ws, ...cols, keys.map((g) => g.limit), now],
      );
      const counts = new Map<string, KeyCounts>(read.rows.map((r: { scope: string; key: string; held: number; waiting: number }) => [keyOf(r), r]));
      const stale = keysToWake(keys, counts);
      if (stale.length > 0) plan.wake.set(ws, stale);
      const gated = list.filter((r) => admit.has(r.id));
      admitRuns(
        gated.map((r) => ({ run_id: r.id, slots: admit.get(r.id)! })),
        counts,
        now,
      ).forEach((d, i) => plan.slots.set(d.run_id, { ws, gates: admit.get(gated[i]!.id)!, take: d.take, waitOn: d.waitOn }));
    }
    for (const rate of rates.values()) {
      const k = [ws, rate.scope, rate.key];
      await c.query("DELETE FROM flow_rate_log WHERE workspace_id = $1 AND scope = $2 AND key = $3 AND at <= $4", [...k, now - rate.period_ms]);
      const recent = await c.query("SELECT at FROM flow_rate_log WHERE workspace_id = $1 AND scope = $2 AND key = $3 ORDER BY at DESC LIMIT $4", [
        ...k,
        rate.limit,
      ]);
      const mine = list.filter((r) => r.admit_rate !== undefined && r.admit === undefined && keyOf(r.admit_rate) === keyOf(rate));
      const turns = admitRates(
        mine.length,
        recent.rows.map((x: { at: string }) => Number(x.at)),
        now,
        rate.limit,
        rate.period_ms,
      );
      mine.forEach((r, i) => plan.turns.set(r.id, { ws, rate, at: turns[i]! }));
    }
  }
  return plan;
}

/**
 * After the insert: the planned runs that were created take their slots, join their key's queue
 * or keep their rate turn; a slot planned for a run that was not created (a replay, an exited
 * enrollment) is free after all, so that key's oldest waiters are woken in this transaction, as
 * are those of a key the plan found with a free slot and waiters (keysToWake).
 */
export async function finishAdmission(c: Q, plan: AdmissionPlan, created: ReadonlyMap<string, Run>, now: number): Promise<void> {
  const live = (id: string) => {
    const r = created.get(id);
    return r !== undefined && r.status !== "exited";
  };
  const take = new Map<string, [string, string, string][]>();
  const wait = new Map<string, [string, string, string, number][]>();
  const lost = new Map<string, Map<string, FlowSlotGate>>();
  const push = <T>(m: Map<string, T[]>, ws: string, x: T) => m.set(ws, [...(m.get(ws) ?? []), x]);
  for (const [id, p] of plan.slots) {
    if (live(id)) {
      if (p.take) for (const g of p.gates) push(take, p.ws, [g.scope, g.key, id] as [string, string, string]);
      else if (p.waitOn) push(wait, p.ws, [p.waitOn.scope, p.waitOn.key, id, p.waitOn.limit] as [string, string, string, number]);
    } else if (p.take) {
      const m = lost.get(p.ws) ?? new Map<string, FlowSlotGate>();
      for (const g of p.gates) m.set(keyOf(g), g);
      lost.set(p.ws, m);
    }
  }
  const col = <T>(rows: T[][], i: number) => rows.map((r) => r[i]);
  for (const [ws, rows] of take) {
    await c.query(
      `INSERT INTO flow_slots (workspace_id, scope, key, run_id, step_key, acquired_at)
       SELECT $1, scope, key, run_id, '', $5 FROM unnest($2::text[], $3::text[], $4::text[]) AS x(scope, key, run_id) ON CONFLICT DO NOTHING`,
      [ws, col(rows, 0), col(rows, 1), col(rows, 2), now],
    );
  }
  for (const [ws, rows] of wait) {
    await c.query(
      `INSERT INTO flow_waiters (workspace_id, scope, key, run_id, step_key, lim, since)
       SELECT $1, scope, key, run_id, '', lim, $6 FROM unnest($2::text[], $3::text[], $4::text[], $5::int[]) AS x(scope, key, run_id, lim)
       ON CONFLICT DO NOTHING`,
      [ws, col(rows, 0), col(rows, 1), col(rows, 2), col(rows, 3), now],
    );
  }
  for (const [ws, gates] of plan.wake) {
    const m = lost.get(ws) ?? new Map<string, FlowSlotGate>();
    for (const g of gates) m.set(keyOf(g), g);
    lost.set(ws, m);
  }
  for (const [ws, gates] of lost) await wakeKeys(c, ws, [...gates.values()], now);
  const turns = [...plan.turns].filter(([id]) => live(id));
  if (turns.length > 0) {
    await c.query(
      `INSERT INTO flow_rate_log (workspace_id, scope, key, at, run_id)
       SELECT ws, scope, key, at, run_id FROM unnest($1::text[], $2::text[], $3::text[], $4::bigint[], $5::text[]) AS x(ws, scope, key, at, run_id)`,
      [turns.map(([, t]) => t.ws), turns.map(([, t]) => t.rate.scope), turns.map(([, t]) => t.rate.key), turns.map(([, t]) => t.at), turns.map(([id]) => id)],
    );
  }
}

/** Wake the waiters of every key the run holds a slot of (its limit as its waiters recorded it). */
export async function wakeFlowOfRun(pool: pg.Pool, ws: string, runId: string, now: number): Promise<number> {
  const r = await pool.query(
    `SELECT s.scope, s.key, max(w.lim)::int AS lim FROM flow_slots s
     JOIN flow_waiters w ON w.workspace_id = s.workspace_id AND w.scope = s.scope AND w.key = s.key
     WHERE s.workspace_id = $1 AND s.run_id = $2 GROUP BY s.scope, s.key`,
    [ws, runId],
  );
  return wakeFlowWaiters(
    pool,
    ws,
    r.rows.map((x: { scope: string; key: string; lim: number }) => ({ scope: x.scope, key: x.key, limit: x.lim })),
    now,
  );
}

/** The lost-wake safety net (Store.sweepFlowWaiters): drop ended runs' waiter rows, then wake each waited-on key's free slots. */
export async function sweepFlowWaiters(pool: pg.Pool, now: number, maxKeys: number): Promise<number> {
  await pool.query(`DELETE FROM flow_waiters w WHERE NOT ${LIVE_WAITER}`);
  // Slot rows no longer held (a run that passes on the slots it holds never runs the gate's own clean-up).
  await pool.query(`DELETE FROM flow_slots s WHERE NOT ${held("$1::bigint")}`, [now]);
  // Only keys with a free slot: keys full of holders (a week-long approval each) never crowd out the rest.
  const keys = await pool.query(
    `SELECT w.workspace_id, w.scope, w.key, max(w.lim)::int AS lim FROM flow_waiters w GROUP BY w.workspace_id, w.scope, w.key
     HAVING (SELECT count(*) FROM flow_slots s WHERE s.workspace_id = w.workspace_id AND s.scope = w.scope AND s.key = w.key AND ${held("$2::bigint")}) < max(w.lim)
     ORDER BY min(w.since) LIMIT $1`,
    [maxKeys, now],
  );
  let woken = 0;
  for (const k of keys.rows as { workspace_id: string; scope: string; key: string; lim: number }[]) {
    woken += await wakeFlowWaiters(pool, k.workspace_id, [{ scope: k.scope, key: k.key, limit: k.lim }], now);
  }
  return woken;
}

export async function pauseHost(pool: pg.Pool, ws: string, host: string, until: number, status: number, now: number): Promise<void> {
  await pool.query(
    `INSERT INTO flow_host_pauses (workspace_id, host, until, status, since) VALUES ($1, $2, $3, $4, $5)
     ON CONFLICT (workspace_id, host) DO UPDATE SET
       since = CASE WHEN flow_host_pauses.until <= EXCLUDED.since THEN EXCLUDED.since ELSE flow_host_pauses.since END,
       status = CASE WHEN EXCLUDED.until > flow_host_pauses.until THEN EXCLUDED.status ELSE flow_host_pauses.status END,
       until = greatest(flow_host_pauses.until, EXCLUDED.until)`,
    [ws, host, until, status, now],
  );
}

export async function hostPausedUntil(pool: pg.Pool, ws: string, host: string, now: number): Promise<HostPause | null> {
  const r = await pool.query({
    // Named (prepared once per connection): read before every outbound call.
    name: "weft_host_paused_until",
    text: "SELECT host, until, status, since FROM flow_host_pauses WHERE workspace_id = $1 AND host = $2 AND until > $3",
    values: [ws, host, now],
  });
  const row = r.rows[0];
  return row ? { host: row.host, until: Number(row.until), status: row.status, since: Number(row.since) } : null;
}

const toLimit = (r: Record<string, unknown>): SharedLimit => ({
  workspace_id: r.workspace_id as string,
  name: r.name as string,
  key: r.key as string,
  limit: r.limit as number,
  created_at: Number(r.created_at),
  updated_at: Number(r.updated_at),
});

/**
 * A changed shared limit: its waiters count against the new limit (the sweep reads it from their
 * rows); a changed key releases them to their claim, where they meet the limit by the new key.
 */
async function updateLimit(c: Q, l: SharedLimit): Promise<{ rowCount: number | null }> {
  const before = await c.query("SELECT key FROM flow_limits WHERE workspace_id = $1 AND name = $2 FOR UPDATE", [l.workspace_id, l.name]);
  if (before.rowCount !== 1) return { rowCount: 0 };
  await c.query('UPDATE flow_limits SET key = $3, "limit" = $4, updated_at = $5 WHERE workspace_id = $1 AND name = $2', [
    l.workspace_id,
    l.name,
    l.key,
    l.limit,
    l.updated_at,
  ]);
  await c.query("UPDATE flow_waiters SET lim = $3 WHERE workspace_id = $1 AND scope = $2", [l.workspace_id, `l:${l.name}`, l.limit]);
  if (before.rows[0].key !== l.key) await releaseWaiters(c, l.workspace_id, `l:${l.name}`, l.updated_at);
  return { rowCount: 1 };
}

/** Every waiter of a rule, due now and no longer queued: each meets its gates afresh at its claim. */
async function releaseWaiters(c: Q, ws: string, scope: string, now: number): Promise<void> {
  await c.query(
    `WITH w AS (DELETE FROM flow_waiters WHERE workspace_id = $1 AND scope = $2 RETURNING run_id)
     UPDATE runs SET due_at = to_timestamp($3::bigint / 1000.0) WHERE status = 'waiting' AND waiting_for = 'concurrency' AND id IN (SELECT run_id FROM w)`,
    [ws, scope, now],
  );
}

export function putSharedLimit(pool: pg.Pool, l: SharedLimit, a: AuditEntry, create: boolean): Promise<boolean> {
  return tx(pool, async (c) => {
    const res = create
      ? await c.query(
          'INSERT INTO flow_limits (workspace_id, name, key, "limit", created_at, updated_at) VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT DO NOTHING',
          [l.workspace_id, l.name, l.key, l.limit, l.created_at, l.updated_at],
        )
      : await updateLimit(c, l);
    if (res.rowCount === 1) await audit(c, [a]);
    return res.rowCount === 1;
  });
}

export async function getSharedLimits(pool: pg.Pool, ws: string, names?: readonly string[]): Promise<SharedLimit[]> {
  const r =
    names === undefined
      ? await pool.query("SELECT * FROM flow_limits WHERE workspace_id = $1 ORDER BY name", [ws])
      : await pool.query("SELECT * FROM flow_limits WHERE workspace_id = $1 AND name = ANY($2::text[]) ORDER BY name", [ws, names]);
  return r.rows.map(toLimit);
}

export function deleteSharedLimit(pool: pg.Pool, ws: string, name: string, a: AuditEntry): Promise<boolean> {
  return tx(pool, async (c) => {
    const ok = (await c.query("DELETE FROM flow_limits WHERE workspace_id = $1 AND name = $2", [ws, name])).rowCount === 1;
    // It holds nobody back any more: its waiters go to their claim (which no longer meets it).
    if (ok) await releaseWaiters(c, ws, `l:${name}`, a.at);
    if (ok) await audit(c, [a]);
    return ok;
  });
}

export async function flowStats(pool: pg.Pool, ws: string | null, now: number, limit: number): Promise<FlowKeyStats[]> {
  const r = await pool.query(
    `WITH h AS (SELECT workspace_id, scope, key, count(*)::int AS n FROM flow_slots s WHERE ($1::text IS NULL OR workspace_id = $1) AND ${held("$2::bigint")} GROUP BY 1, 2, 3),
          w AS (SELECT workspace_id, scope, key, count(*)::int AS n FROM flow_waiters w WHERE ($1::text IS NULL OR workspace_id = $1) AND ${LIVE_WAITER} GROUP BY 1, 2, 3),
          k AS (SELECT workspace_id, scope, key FROM h UNION SELECT workspace_id, scope, key FROM w)
     SELECT k.workspace_id, k.scope, k.key, coalesce(h.n, 0) AS held, coalesce(w.n, 0) AS waiting FROM k
     LEFT JOIN h USING (workspace_id, scope, key) LEFT JOIN w USING (workspace_id, scope, key)
     ORDER BY coalesce(h.n, 0) + coalesce(w.n, 0) DESC, k.scope, k.key LIMIT $3`,
    [ws, now, limit],
  );
  return r.rows as FlowKeyStats[];
}

export async function flowWaitOf(pool: pg.Pool, ws: string, runId: string, now: number): Promise<FlowWaitInfo> {
  const waits = await pool.query("SELECT scope, key, lim, since FROM flow_waiters WHERE workspace_id = $1 AND run_id = $2 ORDER BY since", [ws, runId]);
  const out: FlowWait[] = [];
  for (const w of waits.rows as { scope: string; key: string; lim: number; since: string }[]) {
    const holders = await pool.query(
      `SELECT run_id, acquired_at AS since FROM flow_slots s WHERE workspace_id = $1 AND scope = $2 AND key = $3 AND ${held("$4::bigint")}
       ORDER BY acquired_at, run_id LIMIT 10`,
      [ws, w.scope, w.key, now],
    );
    out.push({
      scope: w.scope,
      key: w.key,
      limit: w.lim,
      since: Number(w.since),
      holders: holders.rows.map((h: { run_id: string; since: string }) => ({ run_id: h.run_id, since: Number(h.since) })),
      held: await heldCount(pool as unknown as Q, ws, w.scope, w.key, now, ""),
    });
  }
  const t = await pool.query("SELECT scope, key, at FROM flow_rate_log WHERE workspace_id = $1 AND run_id = $2 ORDER BY at DESC LIMIT 1", [ws, runId]);
  const turn = t.rows[0] ? { scope: t.rows[0].scope as string, key: t.rows[0].key as string, at: Number(t.rows[0].at) } : null;
  return { slots: out, turn };
}
