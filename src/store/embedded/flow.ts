// Flow control on SQLite (see store/postgres/flow.ts; the decisions are model/flow.ts's).
// better-sqlite3 transactions are serial, so the gate's reads and writes need no further lock.

import type Database from "better-sqlite3";
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
} from "../../model/flow.js";
import { TERMINAL_STATUSES } from "../../model/run-status.js";
import type { AuditEntry, FlowKeyStats, FlowWaitInfo, HostPause, Run, SharedLimit } from "../../engine/store.js";
import { sqlList } from "../sql.js";

const TERMINAL = sqlList(TERMINAL_STATUSES);

/** A slot row still held (the same rule as the PostgreSQL store's HELD). */
const HELD = `EXISTS (SELECT 1 FROM runs r WHERE r.id = s.run_id AND r.status NOT IN ${TERMINAL}
  AND (s.step_key = '' OR (r.status = 'running' AND r.due_at > @now
       AND NOT EXISTS (SELECT 1 FROM step_runs st WHERE st.run_id = s.run_id AND st.idempotency_key = s.step_key AND st.started_at >= s.acquired_at))))`;
/** A waiter row whose run has not ended. */
const LIVE_WAITER = `EXISTS (SELECT 1 FROM runs r WHERE r.id = w.run_id AND r.status NOT IN ${TERMINAL})`;

type K = { ws: string; scope: string; key: string; now: number };

function held(db: Database.Database, k: K, runId: string | null): number {
  return db
    .prepare(`SELECT count(*) FROM flow_slots s WHERE workspace_id = @ws AND scope = @scope AND key = @key AND run_id <> @run AND ${HELD}`)
    .pluck()
    .get({ ...k, run: runId ?? "" }) as number;
}

/** A key's live waiters, counted up to `upto` (oldest first: the FIFO index, stopping at the bound). */
function liveWaiters(db: Database.Database, k: K, upto: number): number {
  return db
    .prepare(
      `SELECT count(*) FROM (SELECT 1 FROM flow_waiters w WHERE workspace_id = @ws AND scope = @scope AND key = @key AND ${LIVE_WAITER}
       ORDER BY since, run_id LIMIT @upto)`,
    )
    .pluck()
    .get({ ...k, upto }) as number;
}

/**
 * Admission at creation (model/flow.ts admitRuns), inside the insert's transaction: the run just
 * inserted takes its slots, or is parked as a waiter (status waiting, no due time); a key found
 * with a free slot and older waiters has them woken (keysToWake). Returns the run as it now stands.
 */
export function admitCreated(db: Database.Database, run: Run, planned: readonly FlowSlotGate[], now: number): Run {
  // Shared limits as they stand now (the caller read them earlier, a window when it opened): a run
  // whose limit was deleted meanwhile is admitted at its claim; a changed limit counts as is.
  const shared = (g: FlowSlotGate) => g.scope.startsWith("l:");
  // Read only when the run counts against a shared limit (a run with per-automation limits alone pays nothing for it).
  const current = new Map(
    planned.some(shared)
      ? (db.prepare('SELECT name, "limit" FROM flow_limits WHERE workspace_id = ?').all(run.workspace_id) as { name: string; limit: number }[]).map((l) => [
          l.name,
          l.limit,
        ])
      : [],
  );
  if (planned.some((g) => shared(g) && !current.has(g.scope.slice(2)))) return run;
  const gates = planned.map((g) => (shared(g) ? { ...g, limit: current.get(g.scope.slice(2))! } : g));
  const counts = new Map(
    gates.map((g) => {
      const k = { ws: run.workspace_id, scope: g.scope, key: g.key, now };
      // Rows no longer held go first (as the gate's acquire does), so a key's reads stay as small as its traffic.
      db.prepare(`DELETE FROM flow_slots AS s WHERE workspace_id = @ws AND scope = @scope AND key = @key AND NOT ${HELD}`).run(k);
      return [keyOf(g), { held: held(db, k, null), waiting: liveWaiters(db, k, g.limit) }];
    }),
  );
  // Free slots with waiters nobody may have woken (keysToWake): woken once this run is decided
  // (holding its slots, or queued behind them), one waiter per slot still free, as the PostgreSQL
  // insert's finishAdmission does.
  const stale = keysToWake(gates, counts);
  const [d] = admitRuns([{ run_id: run.id, slots: [...gates] }], counts, now);
  const w = d!.take ? null : d!.waitOn!;
  if (w === null) {
    for (const g of gates) {
      db.prepare("INSERT INTO flow_slots (workspace_id, scope, key, run_id, step_key, acquired_at) VALUES (?, ?, ?, ?, '', ?) ON CONFLICT DO NOTHING").run(
        run.workspace_id,
        g.scope,
        g.key,
        run.id,
        now,
      );
    }
  } else {
    db.prepare("UPDATE runs SET status = 'waiting', waiting_for = 'concurrency', waiting_until = NULL, due_at = NULL WHERE id = ?").run(run.id);
    db.prepare("INSERT INTO flow_waiters (workspace_id, scope, key, run_id, step_key, lim, since) VALUES (?, ?, ?, ?, '', ?, ?) ON CONFLICT DO NOTHING").run(
      run.workspace_id,
      w.scope,
      w.key,
      run.id,
      w.limit,
      now,
    );
  }
  if (stale.length > 0) wakeKeys(db, run.workspace_id, stale, now);
  // Queued, it is answered as parked (a wake-up that reached it too made it due: the claim reads
  // that from the row, as on PostgreSQL).
  return w === null ? run : { ...run, status: "waiting", waiting_for: "concurrency", waiting_until: null, due_at: null };
}

/** Rate turn at creation (see store/postgres/flow.ts planAdmission), for the run just inserted. */
export function admitRateCreated(db: Database.Database, run: Run, r: FlowRateGate, now: number): Run {
  const k = { ws: run.workspace_id, scope: r.scope, key: r.key };
  db.prepare("DELETE FROM flow_rate_log WHERE workspace_id = @ws AND scope = @scope AND key = @key AND at <= @floor").run({ ...k, floor: now - r.period_ms });
  const recent = db
    .prepare("SELECT at FROM flow_rate_log WHERE workspace_id = @ws AND scope = @scope AND key = @key ORDER BY at DESC LIMIT @limit")
    .pluck()
    .all({ ...k, limit: r.limit }) as number[];
  const [t] = admitRates(1, recent, now, r.limit, r.period_ms) as [number];
  db.prepare("INSERT INTO flow_rate_log (workspace_id, scope, key, at, run_id) VALUES (?, ?, ?, ?, ?)").run(run.workspace_id, r.scope, r.key, t, run.id);
  const cursor = { ...run.cursor, flow_turn: t };
  if (t <= now) {
    db.prepare("UPDATE runs SET cursor = ? WHERE id = ?").run(JSON.stringify(cursor), run.id);
    return { ...run, cursor };
  }
  db.prepare("UPDATE runs SET cursor = ?, status = 'waiting', waiting_for = 'rate_limit', waiting_until = ?, due_at = ? WHERE id = ?").run(
    JSON.stringify(cursor),
    t,
    t,
    run.id,
  );
  return { ...run, cursor, status: "waiting", waiting_for: "rate_limit", waiting_until: t, due_at: t };
}

export function acquireFlow(db: Database.Database, req: FlowAcquire, now: number): FlowDecision {
  // A run that holds every slot of its run-level gate (admitted at creation, or at an earlier claim) passes: only its end releases them.
  if (req.step_key === "" && req.rate === null && req.slots.length > 0) {
    const mine = db.prepare("SELECT scope, key FROM flow_slots WHERE run_id = ? AND step_key = '' AND workspace_id = ?").all(req.run_id, req.workspace_id) as {
      scope: string;
      key: string;
    }[];
    const have = new Set(mine.map(keyOf));
    if (req.slots.every((g) => have.has(keyOf(g)))) return { kind: "pass" };
  }
  return db
    .transaction((): FlowDecision => {
      const ws = req.workspace_id;
      const facts: FlowFacts = { slots: [], recent: [] };
      for (const g of req.slots) {
        const k = { ws, scope: g.scope, key: g.key, now };
        // Rows no longer held go first, so the key's tables stay as small as its traffic.
        db.prepare(`DELETE FROM flow_slots AS s WHERE workspace_id = @ws AND scope = @scope AND key = @key AND NOT ${HELD}`).run(k);
        const mine = db
          .prepare("SELECT since FROM flow_waiters WHERE workspace_id = @ws AND scope = @scope AND key = @key AND run_id = @run AND step_key = @step")
          .pluck()
          .get({ ...k, run: req.run_id, step: req.step_key }) as number | undefined;
        // Counts bounded by the limit (all the decision needs): a key's read costs O(limit), not O(waiters).
        const waiting = liveWaiters(db, k, g.limit);
        const older =
          mine === undefined
            ? waiting
            : (db
                .prepare(
                  `SELECT count(*) FROM (SELECT 1 FROM flow_waiters w WHERE workspace_id = @ws AND scope = @scope AND key = @key AND ${LIVE_WAITER}
                   AND (since < @since OR (since = @since AND run_id < @run)) AND run_id <> @run ORDER BY since, run_id LIMIT @lim)`,
                )
                .pluck()
                .get({ ...k, since: mine, run: req.run_id, lim: g.limit }) as number);
        const holdsAlready =
          db
            .prepare("SELECT 1 FROM flow_slots WHERE workspace_id = @ws AND scope = @scope AND key = @key AND run_id = @run AND step_key = @step")
            .get({ ...k, run: req.run_id, step: req.step_key }) !== undefined;
        facts.slots.push({ held: held(db, k, req.run_id), olderWaiters: older, holdsAlready, waiting });
      }
      const r = req.rate;
      if (r !== null) {
        const k = { ws, scope: r.scope, key: r.key };
        db.prepare("DELETE FROM flow_rate_log WHERE workspace_id = @ws AND scope = @scope AND key = @key AND at <= @floor").run({
          ...k,
          floor: now - r.period_ms,
        });
        facts.recent = db
          .prepare("SELECT at FROM flow_rate_log WHERE workspace_id = @ws AND scope = @scope AND key = @key ORDER BY at DESC LIMIT @limit")
          .pluck()
          .all({ ...k, limit: r.limit }) as number[];
      }
      const w = decideFlow(req, facts, now);
      if (w.take) {
        for (const g of req.slots) {
          db.prepare(
            `INSERT INTO flow_slots (workspace_id, scope, key, run_id, step_key, acquired_at) VALUES (?, ?, ?, ?, ?, ?)
             ON CONFLICT DO UPDATE SET acquired_at = excluded.acquired_at`,
          ).run(ws, g.scope, g.key, req.run_id, req.step_key, now);
        }
        db.prepare("DELETE FROM flow_waiters WHERE run_id = ? AND step_key = ?").run(req.run_id, req.step_key);
      }
      if (w.waitOn !== null) {
        db.prepare(
          `INSERT INTO flow_waiters (workspace_id, scope, key, run_id, step_key, lim, since) VALUES (?, ?, ?, ?, ?, ?, ?)
           ON CONFLICT DO UPDATE SET lim = excluded.lim`,
        ).run(ws, w.waitOn.scope, w.waitOn.key, req.run_id, req.step_key, w.waitOn.limit, now);
      }
      if (w.admitAt !== null && r !== null) {
        db.prepare("INSERT INTO flow_rate_log (workspace_id, scope, key, at, run_id) VALUES (?, ?, ?, ?, ?)").run(ws, r.scope, r.key, w.admitAt, req.run_id);
      }
      return w.decision;
    })
    .immediate();
}

export function wakeFlowWaiters(db: Database.Database, ws: string, gates: readonly Pick<FlowSlotGate, "scope" | "key" | "limit">[], now: number): number {
  // No waiter of any key: nothing to wake, and no write transaction for it (transactions are serial here, so no park is in flight).
  const anyWaiter = db.prepare("SELECT 1 FROM flow_waiters WHERE workspace_id = ? AND scope = ? AND key = ? LIMIT 1");
  if (!gates.some((g) => anyWaiter.get(ws, g.scope, g.key) !== undefined)) return 0;
  return db.transaction(() => wakeKeys(db, ws, gates, now)).immediate();
}

/** Each key's oldest waiters, one per free slot, due now (inside the caller's transaction). */
function wakeKeys(db: Database.Database, ws: string, gates: readonly Pick<FlowSlotGate, "scope" | "key" | "limit">[], now: number): number {
  let woken = 0;
  for (const g of gates) {
    const k = { ws, scope: g.scope, key: g.key, now };
    const n = waitersToWake(held(db, k, null), g.limit);
    if (n === 0) continue;
    woken += db
      .prepare(
        `UPDATE runs SET due_at = @now WHERE status = 'waiting' AND waiting_for = 'concurrency' AND (due_at IS NULL OR due_at > @now) AND id IN (
           SELECT w.run_id FROM flow_waiters w WHERE workspace_id = @ws AND scope = @scope AND key = @key AND ${LIVE_WAITER}
           ORDER BY since, run_id LIMIT @n)`,
      )
      .run({ ...k, n }).changes;
  }
  return woken;
}

/** Wake the waiters of every key the run holds a slot of (its limit as its waiters recorded it). */
export function wakeFlowOfRun(db: Database.Database, ws: string, runId: string, now: number): number {
  const keys = db
    .prepare(
      `SELECT s.scope, s.key, max(w.lim) AS "limit" FROM flow_slots s
       JOIN flow_waiters w ON w.workspace_id = s.workspace_id AND w.scope = s.scope AND w.key = s.key
       WHERE s.workspace_id = ? AND s.run_id = ? GROUP BY s.scope, s.key`,
    )
    .all(ws, runId) as { scope: string; key: string; limit: number }[];
  return wakeFlowWaiters(db, ws, keys, now);
}

/** The lost-wake safety net (Store.sweepFlowWaiters): drop ended runs' waiter rows, then wake each waited-on key's free slots. */
export function sweepFlowWaiters(db: Database.Database, now: number, maxKeys: number): number {
  db.prepare(`DELETE FROM flow_waiters AS w WHERE NOT ${LIVE_WAITER}`).run();
  // Slot rows no longer held (a run that passes on the slots it holds never runs the gate's own clean-up).
  db.prepare(`DELETE FROM flow_slots AS s WHERE NOT ${HELD}`).run({ now });
  const keys = db
    // Only keys with a free slot: keys full of holders (a week-long approval each) never crowd out the rest.
    .prepare(
      `SELECT w.workspace_id, w.scope, w.key, max(w.lim) AS "limit" FROM flow_waiters w GROUP BY w.workspace_id, w.scope, w.key
       HAVING (SELECT count(*) FROM flow_slots s WHERE s.workspace_id = w.workspace_id AND s.scope = w.scope AND s.key = w.key AND ${HELD}) < max(w.lim)
       ORDER BY min(w.since) LIMIT @max`,
    )
    .all({ max: maxKeys, now }) as { workspace_id: string; scope: string; key: string; limit: number }[];
  let woken = 0;
  for (const k of keys) woken += wakeFlowWaiters(db, k.workspace_id, [k], now);
  return woken;
}

export function pauseHost(db: Database.Database, ws: string, host: string, until: number, status: number, now: number): void {
  db.prepare(
    `INSERT INTO flow_host_pauses (workspace_id, host, until, status, since) VALUES (?, ?, ?, ?, ?)
     ON CONFLICT (workspace_id, host) DO UPDATE SET
       since = CASE WHEN flow_host_pauses.until <= excluded.since THEN excluded.since ELSE flow_host_pauses.since END,
       status = CASE WHEN excluded.until > flow_host_pauses.until THEN excluded.status ELSE flow_host_pauses.status END,
       until = max(flow_host_pauses.until, excluded.until)`,
  ).run(ws, host, until, status, now);
}

export function hostPausedUntil(db: Database.Database, ws: string, host: string, now: number): HostPause | null {
  const r = db.prepare("SELECT host, until, status, since FROM flow_host_pauses WHERE workspace_id = ? AND host = ? AND until > ?").get(ws, host, now) as
    | HostPause
    | undefined;
  return r ?? null;
}

function writeAudit(db: Database.Database, a: AuditEntry): void {
  db.prepare("INSERT INTO audit_log (workspace_id, actor, action, target_type, target_id, details, at) VALUES (?, ?, ?, ?, ?, ?, ?)").run(
    a.workspace_id,
    a.actor,
    a.action,
    a.target_type,
    a.target_id,
    JSON.stringify(a.details),
    a.at,
  );
}

/** Create (false when the name exists) or update (false when it does not). */
/**
 * A changed shared limit: its waiters count against the new limit (the sweep reads it from their
 * rows); a changed key releases them to their claim, where they meet the limit by the new key.
 */
function updateLimit(db: Database.Database, l: SharedLimit): number {
  const before = db.prepare("SELECT key FROM flow_limits WHERE workspace_id = ? AND name = ?").pluck().get(l.workspace_id, l.name) as string | undefined;
  if (before === undefined) return 0;
  db.prepare('UPDATE flow_limits SET key = ?, "limit" = ?, updated_at = ? WHERE workspace_id = ? AND name = ?').run(
    l.key,
    l.limit,
    l.updated_at,
    l.workspace_id,
    l.name,
  );
  db.prepare("UPDATE flow_waiters SET lim = ? WHERE workspace_id = ? AND scope = ?").run(l.limit, l.workspace_id, `l:${l.name}`);
  if (before !== l.key) releaseWaiters(db, l.workspace_id, `l:${l.name}`, l.updated_at);
  return 1;
}

/** Every waiter of a rule, due now and no longer queued: each meets its gates afresh at its claim. */
function releaseWaiters(db: Database.Database, ws: string, scope: string, now: number): void {
  db.prepare(
    `UPDATE runs SET due_at = ? WHERE status = 'waiting' AND waiting_for = 'concurrency'
     AND id IN (SELECT run_id FROM flow_waiters WHERE workspace_id = ? AND scope = ?)`,
  ).run(now, ws, scope);
  db.prepare("DELETE FROM flow_waiters WHERE workspace_id = ? AND scope = ?").run(ws, scope);
}

export function putSharedLimit(db: Database.Database, l: SharedLimit, a: AuditEntry, create: boolean): boolean {
  return db
    .transaction(() => {
      const changes = create
        ? db
            .prepare('INSERT INTO flow_limits (workspace_id, name, key, "limit", created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING')
            .run(l.workspace_id, l.name, l.key, l.limit, l.created_at, l.updated_at).changes
        : updateLimit(db, l);
      if (changes === 1) writeAudit(db, a);
      return changes === 1;
    })
    .immediate();
}

export function getSharedLimits(db: Database.Database, ws: string, names?: readonly string[]): SharedLimit[] {
  const rows = db.prepare("SELECT * FROM flow_limits WHERE workspace_id = ? ORDER BY name").all(ws) as SharedLimit[];
  return names === undefined ? rows : rows.filter((r) => names.includes(r.name));
}

export function deleteSharedLimit(db: Database.Database, ws: string, name: string, a: AuditEntry): boolean {
  return db
    .transaction(() => {
      const ok = db.prepare("DELETE FROM flow_limits WHERE workspace_id = ? AND name = ?").run(ws, name).changes === 1;
      // It holds nobody back any more: its waiters go to their claim (which no longer meets it).
      if (ok) releaseWaiters(db, ws, `l:${name}`, a.at);
      if (ok) writeAudit(db, a);
      return ok;
    })
    .immediate();
}

export function flowStats(db: Database.Database, ws: string | null, now: number, limit: number): FlowKeyStats[] {
  const rows = db
    .prepare(
      `WITH h AS (SELECT workspace_id, scope, key, count(*) AS n FROM flow_slots s WHERE (@ws IS NULL OR workspace_id = @ws) AND ${HELD} GROUP BY 1, 2, 3),
            w AS (SELECT workspace_id, scope, key, count(*) AS n FROM flow_waiters w WHERE (@ws IS NULL OR workspace_id = @ws) AND ${LIVE_WAITER} GROUP BY 1, 2, 3),
            k AS (SELECT workspace_id, scope, key FROM h UNION SELECT workspace_id, scope, key FROM w)
       SELECT k.workspace_id, k.scope, k.key, coalesce(h.n, 0) AS held, coalesce(w.n, 0) AS waiting FROM k
       LEFT JOIN h USING (workspace_id, scope, key) LEFT JOIN w USING (workspace_id, scope, key)
       ORDER BY held + waiting DESC, k.scope, k.key LIMIT @limit`,
    )
    .all({ ws, now, limit }) as FlowKeyStats[];
  return rows;
}

export function flowWaitOf(db: Database.Database, ws: string, runId: string, now: number): FlowWaitInfo {
  const waits = db
    .prepare(`SELECT scope, key, lim AS "limit", since FROM flow_waiters WHERE workspace_id = ? AND run_id = ? ORDER BY since`)
    .all(ws, runId) as {
    scope: string;
    key: string;
    limit: number;
    since: number;
  }[];
  const turn = db.prepare("SELECT scope, key, at FROM flow_rate_log WHERE workspace_id = ? AND run_id = ? ORDER BY at DESC LIMIT 1").get(ws, runId) as
    | FlowWaitInfo["turn"]
    | undefined;
  const slots = waits.map((w) => {
    const holders = db
      .prepare(
        `SELECT run_id, acquired_at AS since FROM flow_slots s WHERE workspace_id = @ws AND scope = @scope AND key = @key AND ${HELD} ORDER BY acquired_at, run_id LIMIT 10`,
      )
      .all({ ws, scope: w.scope, key: w.key, now }) as { run_id: string; since: number }[];
    return { ...w, holders, held: held(db, { ws, scope: w.scope, key: w.key, now }, null) };
  });
  return { slots, turn: turn ?? null };
}
