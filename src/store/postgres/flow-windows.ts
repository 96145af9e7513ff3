// Debounce and batch windows on PostgreSQL: the rules are engine/flow-intake.ts's; this file only
// locks, reads and writes the rows. Windows are locked in lockOrder() so concurrent dispatch
// commits never deadlock on them; the partial unique index on open windows makes two commits that
// both found no window agree on one (the loser's insert does nothing and it locks the winner's).

import type pg from "pg";
import { closingRun, eventTime, foldInto, joins, lockOrder, openWindow, startsAtOpen } from "../../model/flow-windows.js";
import type { FlowEntry, FlowMembership, FlowWindow, NewRun, Run } from "../../engine/store.js";
import { tx } from "./tx.js";
import { membership, toWindow, W_COLS } from "../flow-rows.js";
import { insertRuns } from "./runs.js";

type Queryable = Pick<pg.Pool | pg.PoolClient, "query">;

const wValues = (w: FlowWindow) => [
  w.id,
  w.workspace_id,
  w.automation_id,
  w.kind,
  w.mode,
  w.key,
  w.status,
  w.count,
  w.first_at,
  w.last_at,
  w.due_at,
  w.last_event_id,
  w.last_received_at,
  w.run_id,
  JSON.stringify(w.run),
  w.closed_at,
];

async function lockOpen(c: Queryable, automationId: string, key: string): Promise<FlowWindow | null> {
  const r = await c.query("SELECT * FROM flow_windows WHERE automation_id = $1 AND key = $2 AND status = 'open' FOR UPDATE", [automationId, key]);
  return r.rows[0] ? toWindow(r.rows[0]) : null;
}

async function member(c: Queryable, e: FlowEntry, w: FlowWindow | null, seq: number, now: number): Promise<void> {
  await c.query(
    `INSERT INTO flow_members (automation_id, event_id, workspace_id, window_id, seq, key, run_id, error_code, error_message, at)
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) ON CONFLICT DO NOTHING`,
    [
      e.automation_id,
      e.event_id,
      e.workspace_id,
      w?.id ?? null,
      seq,
      w ? e.key : null,
      w ? w.run_id : e.run.id,
      e.key_error?.code ?? null,
      e.key_error?.message ?? null,
      now,
    ],
  );
}

/**
 * Inside the dispatch transaction: each entry joins its key's open window or opens one (a leading
 * window starts its run now). Returns the runs started and the earliest deadline touched.
 */
export async function applyFlow(c: Queryable, entries: readonly FlowEntry[], now: number): Promise<{ runs: Run[]; due: number | null }> {
  const runs: Run[] = [];
  const leading: NewRun[] = [];
  let due: number | null = null;
  for (const e of lockOrder(entries)) {
    if (e.key_error !== null) {
      await member(c, e, null, 1, now);
      continue;
    }
    for (let attempt = 0; ; attempt++) {
      const w = await lockOpen(c, e.automation_id, e.key);
      if (w && joins(w, eventTime(e, now))) {
        const next = foldInto(w, e, eventTime(e, now));
        await c.query(
          "UPDATE flow_windows SET count = $2, last_at = $3, due_at = $4, status = $5, last_event_id = $6, run = $7, last_received_at = $8 WHERE id = $1",
          [w.id, next.count, next.last_at, next.due_at, next.status, next.last_event_id, JSON.stringify(next.run), next.last_received_at],
        );
        await member(c, e, next, next.count, now);
        due = Math.min(due ?? next.due_at, next.due_at);
        break;
      }
      // Past its deadline but not yet closed: it takes no more; the closer starts its run.
      if (w) await c.query("UPDATE flow_windows SET status = 'due' WHERE id = $1", [w.id]);
      const fresh = openWindow(e, eventTime(e, now));
      const ins = await c.query(
        `INSERT INTO flow_windows (${W_COLS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16)
         ON CONFLICT (automation_id, key) WHERE status = 'open' DO NOTHING RETURNING id`,
        wValues(fresh),
      );
      if (ins.rowCount === 0) {
        // Another commit opened it meanwhile (and has committed): join that one.
        if (attempt > 5) throw new Error(`flow window for ${e.automation_id} ${e.key} kept changing`);
        continue;
      }
      await member(c, e, fresh, 1, now);
      if (startsAtOpen(fresh)) leading.push(fresh.run);
      due = Math.min(due ?? fresh.due_at, fresh.due_at);
      break;
    }
  }
  // Leading runs are inserted once every window of the commit is locked: a run insert that waits
  // on another transaction's uncommitted run never happens while this one still waits for a window.
  runs.push(...(await insertRuns(c, leading, now)).filter((x) => x.created).map((x) => x.run));
  return { runs, due };
}

/** Close up to `limit` due windows (any process; SKIP LOCKED): each starts its run, in one transaction. */
export async function closeFlowWindows(pool: pg.Pool, now: number, limit: number): Promise<Run[]> {
  const any = await pool.query("SELECT 1 FROM flow_windows WHERE status <> 'closed' AND due_at <= $1 LIMIT 1", [now]);
  if (any.rowCount === 0) return [];
  return tx(pool, async (c) => {
    const due = await c.query("SELECT * FROM flow_windows WHERE status <> 'closed' AND due_at <= $1 ORDER BY due_at, id LIMIT $2 FOR UPDATE SKIP LOCKED", [
      now,
      limit,
    ]);
    const windows = due.rows.map(toWindow);
    const starts: NewRun[] = [];
    for (const w of windows) {
      const bodies =
        w.kind === "batch"
          ? (
              await c.query("SELECT e.body FROM flow_members m JOIN events e ON e.id = m.event_id WHERE m.window_id = $1 ORDER BY e.received_at, e.id", [w.id])
            ).rows.map((r) => r.body as unknown)
          : [];
      const run = closingRun(w, bodies, now);
      if (run) starts.push(run);
    }
    const made = await insertRuns(c, starts, now);
    await c.query("UPDATE flow_windows SET status = 'closed', closed_at = $2 WHERE id = ANY($1::text[])", [windows.map((w) => w.id), now]);
    return made.filter((x) => x.created).map((x) => x.run);
  });
}

export async function eventFlow(pool: pg.Pool, workspaceId: string, eventId: string): Promise<FlowMembership[]> {
  const r = await pool.query(
    `SELECT m.*, w.id AS w_id, ${W_COLS.split(", ")
      .map((c) => `w.${c} AS w_${c}`)
      .join(", ")}
     FROM flow_members m LEFT JOIN flow_windows w ON w.id = m.window_id WHERE m.event_id = $1 AND m.workspace_id = $2 ORDER BY m.automation_id`,
    [eventId, workspaceId],
  );
  return r.rows.map((row) => membership(row));
}

export async function openFlowWindows(
  pool: pg.Pool,
  workspaceId: string,
  f: { automation_id?: string; run_id?: string },
  limit: number,
): Promise<FlowWindow[]> {
  const r = await pool.query(
    `SELECT * FROM flow_windows WHERE workspace_id = $1 AND ($2::text IS NULL OR automation_id = $2) AND ($3::text IS NULL OR run_id = $3)
       AND status <> 'closed' ORDER BY due_at, id LIMIT $4`,
    [workspaceId, f.automation_id ?? null, f.run_id ?? null, limit],
  );
  return r.rows.map(toWindow);
}
