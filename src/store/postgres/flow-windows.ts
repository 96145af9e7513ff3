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

type Member = { e: FlowEntry; w: FlowWindow | null; seq: number };
type Cur = { slot: string; w: FlowWindow | null; dirty: boolean };

/** Every member row of one commit in one statement. */
async function insertMembers(c: Queryable, ms: readonly Member[], now: number): Promise<void> {
  if (ms.length === 0) return;
  const col = <T>(f: (m: Member) => T) => ms.map(f);
  await c.query(
    `INSERT INTO flow_members (automation_id, event_id, workspace_id, window_id, seq, key, run_id, error_code, error_message, at)
     SELECT *, $10::bigint FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::int[], $6::text[], $7::text[], $8::text[], $9::text[])
     ON CONFLICT DO NOTHING`,
    [
      col((m) => m.e.automation_id),
      col((m) => m.e.event_id),
      col((m) => m.e.workspace_id),
      col((m) => m.w?.id ?? null),
      col((m) => m.seq),
      col((m) => (m.w ? m.e.key : null)),
      col((m) => (m.w ? m.w.run_id : m.e.run.id)),
      col((m) => m.e.key_error?.code ?? null),
      col((m) => m.e.key_error?.message ?? null),
      now,
    ],
  );
}

async function writeWindow(c: Queryable, w: FlowWindow): Promise<void> {
  await c.query(
    "UPDATE flow_windows SET count = $2, last_at = $3, due_at = $4, status = $5, last_event_id = $6, run = $7, last_received_at = $8 WHERE id = $1",
    [w.id, w.count, w.last_at, w.due_at, w.status, w.last_event_id, JSON.stringify(w.run), w.last_received_at],
  );
}

/**
 * Inside the dispatch transaction: each entry joins its key's open window or opens one (a leading
 * window starts its run now). Returns the runs started and the earliest deadline touched. A window
 * is locked once per commit and written once (the entries of one key are consecutive in lock
 * order); the member rows go in one statement.
 */
export async function applyFlow(c: Queryable, entries: readonly FlowEntry[], now: number): Promise<{ runs: Run[]; due: number | null }> {
  const runs: Run[] = [];
  const leading: NewRun[] = [];
  const members: Member[] = [];
  let due: number | null = null;
  /** The window of the current (automation, key), locked by this commit, with writes not yet made. */
  let cur = null as Cur | null;
  const flush = async () => {
    if (cur?.w && cur.dirty) await writeWindow(c, cur.w);
    cur = null;
  };
  for (const e of lockOrder(entries)) {
    if (e.key_error !== null) {
      members.push({ e, w: null, seq: 1 });
      continue;
    }
    const slot = `${e.automation_id}\u0000${e.key}`;
    if (cur?.slot !== slot) {
      await flush();
      cur = { slot, w: await lockOpen(c, e.automation_id, e.key), dirty: false };
    }
    const at = eventTime(e, now);
    for (let attempt = 0; ; attempt++) {
      const w: FlowWindow | null = cur.w;
      if (w && joins(w, at)) {
        const next: FlowWindow = foldInto(w, e, at);
        cur = { slot, w: next, dirty: true };
        members.push({ e, w: next, seq: next.count });
        due = Math.min(due ?? next.due_at, next.due_at);
        break;
      }
      // Past its deadline (or full) but not yet closed: it takes no more; the closer starts its run.
      if (w) await writeWindow(c, w.status === "open" ? { ...w, status: "due" } : w);
      const fresh = openWindow(e, at);
      const ins = await c.query(
        `INSERT INTO flow_windows (${W_COLS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16)
         ON CONFLICT (automation_id, key) WHERE status = 'open' DO NOTHING RETURNING id`,
        wValues(fresh),
      );
      if (ins.rowCount === 0) {
        // Another commit opened it meanwhile (and has committed): join that one.
        if (attempt > 5) throw new Error(`flow window for ${e.automation_id} ${e.key} kept changing`);
        cur = { slot, w: await lockOpen(c, e.automation_id, e.key), dirty: false };
        continue;
      }
      cur = { slot, w: fresh, dirty: false };
      members.push({ e, w: fresh, seq: 1 });
      if (startsAtOpen(fresh)) leading.push(fresh.run);
      due = Math.min(due ?? fresh.due_at, fresh.due_at);
      break;
    }
  }
  await flush();
  await insertMembers(c, members, now);
  // Leading runs are inserted once every window of the commit is locked: a run insert that waits
  // on another transaction's uncommitted run never happens while this one still waits for a window.
  runs.push(...(await insertRuns(c, leading, now)).filter((x) => x.created).map((x) => x.run));
  return { runs, due };
}

/** Close up to `limit` due windows (any process; SKIP LOCKED): each starts its run, in one transaction. */
export async function closeFlowWindows(pool: pg.Pool, now: number, limit: number): Promise<Run[]> {
  const any = await pool.query({
    name: "weft_any_due_window",
    text: "SELECT 1 FROM flow_windows WHERE status <> 'closed' AND due_at <= $1 LIMIT 1",
    values: [now],
  });
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
