// Events, dispatch, subject pauses, schedules, hooks and the overdue view on PostgreSQL.

import { applyFlow } from "./flow-windows.js";
import type pg from "pg";
import type {
  AuditEntry,
  Automation,
  DispatchBatch,
  DispatchPlan,
  HookRow,
  HookSecretUpdate,
  NewEvent,
  OverdueCount,
  PauseKey,
  PauseRow,
  Run,
  ScheduleFiring,
  ScheduleRow,
  StoredEvent,
} from "../../engine/store.js";
import { laterEnd, pauseKey, splitStale, waitKey } from "../../engine/store.js";
import { freshEvent } from "../fresh-event.js";
import { ms, toAutomation, toEvent, ts } from "./rows.js";
import type { Row } from "../rows.js";

export { toEvent };
import { insertRuns } from "./runs.js";
import { audit } from "./audit.js";
import { tx } from "./tx.js";
import { resyncedSchedule } from "../../model/triggers.js";

const toPause = (r: Row): PauseRow => ({
  ...(r as unknown as PauseRow),
  paused_until: ms(r.paused_until as Date | null),
  created_at: (r.created_at as Date).getTime(),
});
const toSchedule = (r: Row): ScheduleRow => ({
  ...(r as unknown as ScheduleRow),
  next_fire_at: ms(r.next_fire_at as Date | null),
  last_fired_at: ms(r.last_fired_at as Date | null),
});
const toHook = (r: Row): HookRow => ({
  ...(r as unknown as HookRow),
  created_at: (r.created_at as Date).getTime(),
  previous_expires_at: ms(r.previous_expires_at as Date | null),
  rotated_at: ms(r.rotated_at as Date | null),
});

type Queryable = Pick<pg.Pool | pg.PoolClient, "query">;

const INSERT_EVENTS_SQL = `INSERT INTO events (id, workspace_id, source, idempotency_key, payload_hash, type, name, subject_id, body, shard, received_at, actor, token_id, actor_role)
  SELECT x.id, x.workspace_id, x.source, x.idempotency_key, x.payload_hash, x.type, x.name, x.subject_id, x.body, x.shard,
         to_timestamp(x.received_at / 1000.0), x.actor, x.token_id, x.actor_role
  FROM jsonb_to_recordset($1::jsonb) AS x(id text, workspace_id text, source text, idempotency_key text, payload_hash text,
       type text, name text, subject_id text, body jsonb, shard int, received_at double precision, actor text, token_id text, actor_role text)
  ON CONFLICT (workspace_id, source, idempotency_key) DO NOTHING RETURNING id`;

/** Many events, one statement and one commit; duplicates (in the table or the batch) read back. */
export async function insertEvents(db: Queryable, es: readonly NewEvent[]): Promise<{ event: StoredEvent; duplicate: boolean }[]> {
  if (es.length === 0) return [];
  const res = await db.query({ name: "weft_insert_events", text: INSERT_EVENTS_SQL, values: [JSON.stringify(es)] });
  // Only ids come back: an inserted row is exactly what was sent.
  const made = new Set<string>(res.rows.map((r) => r.id as string));
  const k = (w: string, s: string, i: string) => `${w}\u0000${s}\u0000${i}`;
  const missing = es.filter((e) => !made.has(e.id));
  const prior = new Map<string, StoredEvent>();
  if (missing.length > 0) {
    const got = await db.query(
      "SELECT * FROM events WHERE (workspace_id, source, idempotency_key) IN (SELECT * FROM unnest($1::text[], $2::text[], $3::text[]))",
      [missing.map((e) => e.workspace_id), missing.map((e) => e.source), missing.map((e) => e.idempotency_key)],
    );
    for (const r of got.rows) prior.set(k(r.workspace_id, r.source, r.idempotency_key), toEvent(r));
  }
  return es.map((e) => {
    if (made.has(e.id)) return { event: freshEvent(e), duplicate: false };
    const first = prior.get(k(e.workspace_id, e.source, e.idempotency_key));
    if (!first) throw new Error(`event ${e.id} was neither inserted nor found`);
    return { event: first, duplicate: true };
  });
}

export async function getEvent(pool: pg.Pool, workspaceId: string, id: string): Promise<StoredEvent | null> {
  const res = await pool.query("SELECT * FROM events WHERE id = $1 AND workspace_id = $2", [id, workspaceId]);
  return res.rows[0] ? toEvent(res.rows[0]) : null;
}

/**
 * An event dispatch may lease at $2: not dispatched, not undeliverable, no live lease. Repeated in
 * weft_dispatch_probe (migrations 026 and 027; a function, for its planner setting), with
 * LEASE_RETRY_SQL's lapsed-lease test: a change to either belongs in a new migration too
 * (events.lease-cost tests both).
 */
const LEASABLE = "dispatched_at IS NULL AND undeliverable_at IS NULL AND (dispatch_until IS NULL OR dispatch_until <= $2)";

/**
 * Lease undispatched events round-robin over shards (oldest first within each shard), so a flood
 * on one stream takes one slot per round. No id watermark: rows are found by `dispatched_at IS
 * NULL`, so an event whose transaction committed after later ids is still seen.
 */
const LEASE_EVENTS_SQL = `
WITH RECURSIVE shards AS (
  -- The shards with undispatched events, one index probe each (a loose index scan), not a pass
  -- over every undispatched event.
  (SELECT shard FROM events WHERE dispatched_at IS NULL ORDER BY shard LIMIT 1)
  UNION ALL
  SELECT (SELECT e.shard FROM events e WHERE e.dispatched_at IS NULL AND e.shard > s.shard ORDER BY e.shard LIMIT 1)
  FROM shards s WHERE s.shard IS NOT NULL
),
cand AS MATERIALIZED (
  SELECT c.id FROM shards s
  CROSS JOIN LATERAL (
    SELECT e.id, e.received_at, row_number() OVER (ORDER BY e.received_at, e.id) AS rn
    FROM (SELECT id, received_at FROM events WHERE shard = s.shard AND ${LEASABLE} ORDER BY received_at, id LIMIT $1) e
  ) c
  WHERE s.shard IS NOT NULL
  ORDER BY c.rn, c.received_at
  LIMIT $1
), locked AS MATERIALIZED (
  -- Each candidate locked by its primary key. Written as one scan of events filtered by the
  -- candidates, the planner (its statistics stale during a flood) read every undispatched event.
  SELECT l.id FROM cand c CROSS JOIN LATERAL (
    SELECT id FROM events WHERE id = c.id AND ${LEASABLE} FOR UPDATE SKIP LOCKED
  ) l
)
UPDATE events e SET dispatch_attempts = e.dispatch_attempts + 1, dispatch_until = $3
WHERE e.id = ANY (ARRAY(SELECT id FROM locked)) RETURNING e.*`;

/** The oldest event leased before and not dispatched (its dispatcher died, or planning threw): retried alone. */
const LEASE_RETRY_SQL = `
WITH locked AS MATERIALIZED (
  SELECT id FROM events WHERE dispatched_at IS NULL AND dispatch_attempts > 0 AND undeliverable_at IS NULL
    AND (dispatch_until IS NULL OR dispatch_until <= $1)
  ORDER BY received_at, id LIMIT 1 FOR UPDATE SKIP LOCKED
)
UPDATE events e SET dispatch_attempts = e.dispatch_attempts + 1, dispatch_until = $2
FROM locked WHERE e.id = locked.id RETURNING e.*`;

const QUARANTINE_EVENTS_SQL = `
UPDATE events SET undeliverable_at = $1,
  undeliverable_reason = 'its dispatch did not complete ' || dispatch_attempts || ' times (' ||
    coalesce('last error: ' || dispatch_error, 'the dispatching process died or stalled while planning it') || ')'
WHERE id IN (
  SELECT id FROM events WHERE dispatched_at IS NULL AND dispatch_attempts > 0 AND dispatch_attempts >= $2 AND undeliverable_at IS NULL
    AND (dispatch_until IS NULL OR dispatch_until <= $1)
  FOR UPDATE SKIP LOCKED)
RETURNING *`;

/**
 * What a dispatch round may find (weft_dispatch_probe, migrations 026 and 027), in one round trip:
 * a lapsed lease to quarantine or retry, an event free to lease, and with neither, when the first
 * live lease lapses. A round with neither (most fallback polls of an idle worker) ends here; one
 * with no lapsed lease skips the quarantine and retry statements. A change after this read is seen
 * by the next round, as any change after a poll is (its commit wakes one).
 */
const DISPATCH_PROBE_SQL = "SELECT * FROM weft_dispatch_probe($1)";

export async function leaseEvents(pool: pg.Pool, now: number, leaseMs: number, limit: number, maxAttempts: number): Promise<DispatchBatch> {
  const probe = (
    await pool.query<{ lapsed: boolean; leasable: boolean; next_lapse: Date | null }>({
      name: "weft_dispatch_probe",
      text: DISPATCH_PROBE_SQL,
      values: [ts(now)],
    })
  ).rows[0];
  if (!probe?.lapsed && !probe?.leasable) return { events: [], active: [], undeliverable: [], next_lapse: probe?.next_lapse?.getTime() ?? null };
  const undeliverable = probe.lapsed
    ? (await pool.query({ name: "weft_quarantine_events", text: QUARANTINE_EVENTS_SQL, values: [ts(now), maxAttempts] })).rows.map(toEvent)
    : [];
  let rows = probe.lapsed ? (await pool.query({ name: "weft_lease_retry", text: LEASE_RETRY_SQL, values: [ts(now), ts(now + leaseMs)] })).rows : [];
  if (rows.length === 0) rows = (await pool.query({ name: "weft_lease_events", text: LEASE_EVENTS_SQL, values: [limit, ts(now), ts(now + leaseMs)] })).rows;
  const events = rows.map(toEvent).sort((a, b) => a.received_at - b.received_at || (a.id < b.id ? -1 : 1));
  if (events.length === 0) return { events, active: [], undeliverable };
  return { events, active: await activeOf(pool, events), undeliverable };
}

async function activeOf(db: Queryable, events: readonly StoredEvent[]): Promise<Automation[]> {
  const res = await db.query({
    name: "weft_active_automations_of",
    text: "SELECT * FROM automations WHERE status = 'active' AND workspace_id = ANY($1::text[]) ORDER BY created_at, id",
    values: [[...new Set(events.map((e) => e.workspace_id))]],
  });
  return res.rows.map(toAutomation);
}

export function commitDispatch(
  pool: pg.Pool,
  now: number,
  plan: DispatchPlan,
  inside?: () => void,
): Promise<{ events: StoredEvent[]; runs: Run[]; stale: string[]; flow_due?: number | null }> {
  if (plan.event_ids.length === 0) return Promise.resolve({ events: [], runs: [], stale: [] });
  return tx(pool, async (client) => {
    const claimed = await client.query({
      name: "weft_claim_planned_events",
      text: "SELECT * FROM events WHERE id = ANY($1::text[]) AND dispatched_at IS NULL AND undeliverable_at IS NULL ORDER BY received_at, id FOR UPDATE SKIP LOCKED",
      values: [plan.event_ids],
    });
    const locked = claimed.rows.map(toEvent);
    if (locked.length === 0) return { events: [], runs: [], stale: [] };
    const { fresh, stale } = splitStale(locked, await activeOf(client, locked), plan);
    if (stale.length > 0) {
      await client.query("UPDATE events SET dispatch_until = NULL, dispatch_attempts = greatest(dispatch_attempts - 1, 0) WHERE id = ANY($1::text[])", [stale]);
    }
    const ids = new Set(fresh.map((e) => e.id));
    const results = await insertRuns(
      client,
      plan.runs.filter((r) => r.event_id !== null && ids.has(r.event_id)),
      now,
    );
    const runs = results.filter((r) => r.created).map((r) => r.run);
    // Debounce and batch: the fresh events' entries join or open their windows (store/postgres/flow.ts).
    const flow = await applyFlow(
      client,
      (plan.flow ?? []).filter((f) => ids.has(f.event_id)),
      now,
    );
    runs.push(...flow.runs);
    const made = new Map<string, number>();
    for (const r of runs) if (r.event_id) made.set(r.event_id, (made.get(r.event_id) ?? 0) + 1);
    await client.query({
      name: "weft_mark_dispatched",
      text: `UPDATE events e SET dispatched_at = $1, dispatch_until = NULL, runs_created = x.n FROM unnest($2::text[], $3::int[]) AS x(id, n) WHERE e.id = x.id`,
      values: [ts(now), fresh.map((e) => e.id), fresh.map((e) => made.get(e.id) ?? 0)],
    });
    const woken = await wakeWaiters(client, fresh, now);
    inside?.();
    return { events: fresh, runs, stale, flow_due: flow.due, woken };
  });
}

export async function failDispatch(pool: pg.Pool, ids: readonly string[], error: string, now: number, maxAttempts: number): Promise<StoredEvent[]> {
  if (ids.length === 0) return [];
  const res = await pool.query(
    `UPDATE events SET dispatch_until = NULL, dispatch_error = $2,
       undeliverable_at = CASE WHEN dispatch_attempts >= $4 THEN $3::timestamptz END,
       undeliverable_reason = CASE WHEN dispatch_attempts >= $4 THEN 'its dispatch failed ' || dispatch_attempts || ' times (last error: ' || $2::text || ')' END
     WHERE id = ANY($1::text[]) AND dispatched_at IS NULL AND undeliverable_at IS NULL RETURNING *`,
    [ids, error, ts(now), maxAttempts],
  );
  return res.rows.map(toEvent).filter((e) => e.undeliverable_at !== null);
}

export async function renewDispatch(pool: pg.Pool, ids: readonly string[], until: number): Promise<void> {
  if (ids.length === 0) return;
  await pool.query({
    name: "weft_renew_dispatch",
    text: "UPDATE events SET dispatch_until = $2 WHERE id = ANY($1::text[]) AND dispatched_at IS NULL AND dispatch_until IS NOT NULL AND dispatch_until < $2",
    values: [ids, ts(until)],
  });
}

export function replayEvent(pool: pg.Pool, workspaceId: string, id: string, now: number, entry: AuditEntry): Promise<StoredEvent | null> {
  return tx(pool, async (c) => {
    const res = await c.query(
      `UPDATE events SET undeliverable_at = NULL, undeliverable_reason = NULL, dispatch_attempts = 0, dispatch_error = NULL, dispatch_until = NULL
       WHERE id = $1 AND workspace_id = $2 AND undeliverable_at IS NOT NULL AND dropped_at IS NULL AND dispatched_at IS NULL RETURNING *`,
      [id, workspaceId],
    );
    if (res.rowCount !== 1) return null;
    await audit(c, [entry]);
    return toEvent(res.rows[0]);
  });
}

export function dropEvent(pool: pg.Pool, workspaceId: string, id: string, now: number, entry: AuditEntry): Promise<StoredEvent | null> {
  return tx(pool, async (c) => {
    const res = await c.query(
      "UPDATE events SET dropped_at = $3 WHERE id = $1 AND workspace_id = $2 AND undeliverable_at IS NOT NULL AND dropped_at IS NULL RETURNING *",
      [id, workspaceId, ts(now)],
    );
    if (res.rowCount !== 1) return null;
    await audit(c, [entry]);
    return toEvent(res.rows[0]);
  });
}

export async function undeliverableEvents(pool: pg.Pool, workspaceId: string, limit: number): Promise<{ total: number; events: StoredEvent[] }> {
  const where = "workspace_id = $1 AND undeliverable_at IS NOT NULL AND dropped_at IS NULL";
  const [n, rows] = await Promise.all([
    pool.query(`SELECT count(*)::int AS n FROM events WHERE ${where}`, [workspaceId]),
    pool.query(`SELECT * FROM events WHERE ${where} ORDER BY undeliverable_at DESC, id DESC LIMIT $2`, [workspaceId, limit]),
  ]);
  return { total: n.rows[0].n as number, events: rows.rows.map(toEvent) };
}

export async function activePauses(pool: pg.Pool, keys: readonly PauseKey[], now: number): Promise<Map<string, number | null>> {
  const out = new Map<string, number | null>();
  if (keys.length === 0) return out;
  const res = await pool.query({
    name: "weft_active_pauses",
    text: `SELECT k.w, k.s, k.a, c.paused_until FROM unnest($1::text[], $2::text[], $3::text[]) AS k(w, s, a)
           JOIN subject_controls c ON c.workspace_id = k.w AND c.subject_id = k.s AND c.automation_id IN (k.a, '')
           WHERE c.paused_until IS NULL OR c.paused_until > $4`,
    values: [keys.map((k) => k.workspace_id), keys.map((k) => k.subject_id), keys.map((k) => k.automation_id), ts(now)],
  });
  for (const r of res.rows) {
    const key = pauseKey({ workspace_id: r.w, subject_id: r.s, automation_id: r.a });
    out.set(key, laterEnd(out.get(key), ms(r.paused_until)));
  }
  return out;
}

export async function listActivePauses(pool: pg.Pool, now: number, limit: number): Promise<PauseRow[]> {
  const res = await pool.query({
    name: "weft_list_active_pauses",
    text: "SELECT * FROM subject_controls WHERE paused_until IS NULL OR paused_until > $1 LIMIT $2",
    values: [ts(now), limit],
  });
  return res.rows.map(toPause);
}

export function putPause(pool: pg.Pool, p: PauseRow, entry?: AuditEntry): Promise<void> {
  return tx(pool, async (c) => {
    await c.query(
      `INSERT INTO subject_controls (workspace_id, subject_id, automation_id, pause_reason, paused_until, created_at) VALUES ($1,$2,$3,$4,$5,$6)
       ON CONFLICT (workspace_id, subject_id, automation_id) DO UPDATE SET pause_reason = EXCLUDED.pause_reason, paused_until = EXCLUDED.paused_until, created_at = EXCLUDED.created_at`,
      [p.workspace_id, p.subject_id, p.automation_id, p.pause_reason, ts(p.paused_until), ts(p.created_at)],
    );
    if (entry) await audit(c, [entry]);
  });
}

export function deletePause(pool: pg.Pool, workspaceId: string, subjectId: string, automationId: string, now: number, entry?: AuditEntry): Promise<boolean> {
  return tx(pool, async (c) => {
    const del = await c.query("DELETE FROM subject_controls WHERE workspace_id = $1 AND subject_id = $2 AND automation_id = $3", [
      workspaceId,
      subjectId,
      automationId,
    ]);
    await c.query(
      // Parked runs are due at once; a run a worker holds gets `wake`, so a park it commits after
      // this (its pause check having read the pause) is due at once too (see the commit).
      `UPDATE runs SET
         due_at = CASE WHEN status = 'waiting' THEN $4 ELSE due_at END,
         wake = CASE WHEN status = 'running' THEN true ELSE wake END
       WHERE workspace_id = $1 AND subject_id = $2 AND ($3 = '' OR automation_id = $3)
         AND (status = 'running' OR (status = 'waiting' AND waiting_for = 'subject_resume'))`,
      [workspaceId, subjectId, automationId, ts(now)],
    );
    if (del.rowCount === 1 && entry) await audit(c, [entry]);
    return del.rowCount === 1;
  });
}

export async function listPauses(pool: pg.Pool, workspaceId: string, subjectId: string): Promise<PauseRow[]> {
  const res = await pool.query("SELECT * FROM subject_controls WHERE workspace_id = $1 AND subject_id = $2 ORDER BY automation_id", [workspaceId, subjectId]);
  return res.rows.map(toPause);
}

export async function syncSchedules(pool: pg.Pool, automationId: string, rows: readonly ScheduleRow[]): Promise<void> {
  await tx(pool, async (client) => {
    const old = await client.query("DELETE FROM schedules WHERE automation_id = $1 RETURNING *", [automationId]);
    const prior = new Map(old.rows.map((r) => [r.trigger_index as number, toSchedule(r)]));
    for (const fresh of rows) {
      const r = resyncedSchedule(prior.get(fresh.trigger_index), fresh);
      await client.query(
        `INSERT INTO schedules (automation_id, trigger_index, workspace_id, cron, timezone, catch_up, next_fire_at, last_fired_at) VALUES ($1,$2,$3,$4,$5,$6,$7,$8)`,
        [r.automation_id, r.trigger_index, r.workspace_id, r.cron, r.timezone, r.catch_up, ts(r.next_fire_at), ts(r.last_fired_at)],
      );
    }
  });
}

export async function dueSchedules(pool: pg.Pool, now: number, limit: number): Promise<ScheduleRow[]> {
  const res = await pool.query({
    name: "weft_due_schedules",
    text: "SELECT * FROM schedules WHERE next_fire_at <= $1 ORDER BY next_fire_at LIMIT $2",
    values: [ts(now), limit],
  });
  return res.rows.map(toSchedule);
}

/**
 * Compare-and-set on each row: a row another transaction holds (SKIP LOCKED: it is firing or
 * re-syncing it) or whose next_fire_at moved on is left alone, so nothing waits on a lock and
 * each tick is stored once.
 */
const ADVANCE_SCHEDULE_SQL = `UPDATE schedules SET next_fire_at = $4, last_fired_at = $5
  WHERE (automation_id, trigger_index) IN (
    SELECT automation_id, trigger_index FROM schedules WHERE automation_id = $1 AND trigger_index = $2 AND next_fire_at = $3 FOR UPDATE SKIP LOCKED)`;

export async function fireSchedules(pool: pg.Pool, now: number, firings: readonly ScheduleFiring[], inside?: () => void): Promise<number> {
  return tx(pool, async (client) => {
    let stored = 0;
    for (const f of firings) {
      const res = await client.query({
        name: "weft_advance_schedule",
        text: ADVANCE_SCHEDULE_SQL,
        values: [f.automation_id, f.trigger_index, ts(f.expected_next_fire_at), ts(f.next_fire_at), ts(now)],
      });
      if (res.rowCount !== 1) continue;
      await insertEvents(client, f.events);
      stored += f.events.length;
    }
    inside?.();
    return stored;
  });
}

export async function listSchedules(pool: pg.Pool, automationId: string): Promise<ScheduleRow[]> {
  const res = await pool.query("SELECT * FROM schedules WHERE automation_id = $1 ORDER BY trigger_index", [automationId]);
  return res.rows.map(toSchedule);
}

export async function ensureHooks(
  pool: pg.Pool,
  workspaceId: string,
  automationId: string,
  indexes: readonly number[],
  make: (i: number) => HookRow,
): Promise<HookRow[]> {
  for (const i of indexes) {
    const h = make(i);
    await pool.query(
      `INSERT INTO hooks (id, workspace_id, automation_id, trigger_index, secret, created_at) VALUES ($1,$2,$3,$4,$5,$6)
       ON CONFLICT (automation_id, trigger_index) DO NOTHING`,
      [h.id, workspaceId, automationId, i, h.secret, ts(h.created_at)],
    );
  }
  return listHooks(pool, automationId);
}

export async function listHooks(pool: pg.Pool, automationId: string): Promise<HookRow[]> {
  const res = await pool.query("SELECT * FROM hooks WHERE automation_id = $1 ORDER BY trigger_index", [automationId]);
  return res.rows.map(toHook);
}

export async function getHook(pool: pg.Pool, id: string): Promise<HookRow | null> {
  const res = await pool.query("SELECT * FROM hooks WHERE id = $1", [id]);
  return res.rows[0] ? toHook(res.rows[0]) : null;
}

export function updateHookSecret(pool: pg.Pool, id: string, expectedSecret: string, next: HookSecretUpdate, entry?: AuditEntry): Promise<boolean> {
  return tx(pool, async (client) => {
    const res = await client.query(
      "UPDATE hooks SET secret = $1, previous_secret = $2, previous_expires_at = $3, rotated_at = $4 WHERE id = $5 AND secret = $6",
      [next.secret, next.previous_secret, ts(next.previous_expires_at), ts(next.rotated_at), id, expectedSecret],
    );
    if (res.rowCount === 1 && entry) await audit(client, [entry]);
    return res.rowCount === 1;
  });
}

export async function listUnsealedHooks(pool: pg.Pool, sealedPrefix: string): Promise<HookRow[]> {
  // left(), not LIKE: the prefix is compared as written ("." and "_" are not patterns here).
  const res = await pool.query("SELECT * FROM hooks WHERE left(secret, length($1)) <> $1", [sealedPrefix]);
  return res.rows.map(toHook);
}

export async function overdue(pool: pg.Pool, workspaceId: string, now: number, graceMs: number): Promise<OverdueCount[]> {
  const cutoff = ts(now - graceMs);
  const res = await pool.query(
    `SELECT automation_id, sum(runs)::int AS runs, sum(schedules)::int AS schedules, min(oldest) AS oldest FROM (
       SELECT automation_id, count(*) AS runs, 0 AS schedules, min(due_at) AS oldest FROM runs
         WHERE workspace_id = $1 AND due_at < $2 AND status IN ('pending', 'waiting', 'retrying', 'interrupted', 'running')
         GROUP BY automation_id
       UNION ALL
       SELECT automation_id, 0, count(*), min(next_fire_at) FROM schedules WHERE workspace_id = $1 AND next_fire_at < $2 GROUP BY automation_id
     ) x GROUP BY automation_id ORDER BY automation_id`,
    [workspaceId, cutoff],
  );
  return res.rows.map((r) => ({ automation_id: r.automation_id, runs: r.runs, schedules: r.schedules, oldest_due_at: r.oldest.getTime() }));
}

/**
 * Named events wake the runs parked on them (wait_for_event, input) in the dispatch transaction.
 * A run still deciding to wait is covered by the check its park commit makes (runs.ts).
 */
async function wakeWaiters(client: pg.PoolClient, events: readonly StoredEvent[], now: number): Promise<number> {
  const named = events.filter((e) => e.type === "event" && e.name !== null);
  if (named.length === 0) return 0;
  const ws: string[] = [];
  const keys: string[] = [];
  for (const e of named) {
    ws.push(e.workspace_id, e.workspace_id);
    keys.push(waitKey(e.name!, e.subject_id), waitKey(e.name!, null));
  }
  const res = await client.query({
    name: "weft_wake_waiters",
    text: `UPDATE runs r SET due_at = $1 FROM (SELECT DISTINCT * FROM unnest($2::text[], $3::text[])) AS k(w, key)
           WHERE r.workspace_id = k.w AND r.wait_key = k.key AND r.status = 'waiting' AND (r.due_at IS NULL OR r.due_at > $1)`,
    values: [ts(now), ws, keys],
  });
  return res.rowCount ?? 0;
}
