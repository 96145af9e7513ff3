// Debounce and batch windows on the embedded store: the rules are engine/flow-intake.ts's; this
// file only reads and writes the rows, inside the caller's write transaction (SQLite has one
// writer at a time, so the window a commit reads is the one it updates).

import type Database from "better-sqlite3";
import { closingRun, eventTime, foldInto, joins, lockOrder, openWindow, startsAtOpen } from "../../model/flow-windows.js";
import type { FlowEntry, FlowMembership, FlowWindow, InsertRunResult, NewRun, Run } from "../../engine/store.js";
import { membership, toWindow, W_COLS } from "../flow-rows.js";

export class EmbeddedFlow {
  constructor(
    private readonly db: Database.Database,
    /** The store's insert with the enrollment rules, inside the current transaction. */
    private readonly insertRun: (run: NewRun, now: number) => InsertRunResult,
  ) {}

  private member(e: FlowEntry, w: FlowWindow | null, seq: number, now: number): void {
    this.db
      .prepare(
        `INSERT OR IGNORE INTO flow_members (automation_id, event_id, workspace_id, window_id, seq, key, run_id, error_code, error_message, at)
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
      )
      .run(
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
      );
  }

  /** Inside the dispatch transaction: see store/postgres/flow.ts applyFlow. */
  apply(entries: readonly FlowEntry[], now: number): { runs: Run[]; due: number | null } {
    const runs: Run[] = [];
    const leading: NewRun[] = [];
    let due: number | null = null;
    for (const e of lockOrder(entries)) {
      if (e.key_error !== null) {
        this.member(e, null, 1, now);
        continue;
      }
      const row = this.db.prepare("SELECT * FROM flow_windows WHERE automation_id = ? AND key = ? AND status = 'open'").get(e.automation_id, e.key) as
        | Record<string, unknown>
        | undefined;
      const w = row ? toWindow(row) : null;
      if (w && joins(w, eventTime(e, now))) {
        const next = foldInto(w, e, eventTime(e, now));
        this.db
          .prepare("UPDATE flow_windows SET count = ?, last_at = ?, due_at = ?, status = ?, last_event_id = ?, run = ?, last_received_at = ? WHERE id = ?")
          .run(next.count, next.last_at, next.due_at, next.status, next.last_event_id, JSON.stringify(next.run), next.last_received_at, w.id);
        this.member(e, next, next.count, now);
        due = Math.min(due ?? next.due_at, next.due_at);
        continue;
      }
      if (w) this.db.prepare("UPDATE flow_windows SET status = 'due' WHERE id = ?").run(w.id);
      const fresh = openWindow(e, eventTime(e, now));
      this.db
        .prepare(`INSERT INTO flow_windows (${W_COLS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`)
        .run(
          fresh.id,
          fresh.workspace_id,
          fresh.automation_id,
          fresh.kind,
          fresh.mode,
          fresh.key,
          fresh.status,
          fresh.count,
          fresh.first_at,
          fresh.last_at,
          fresh.due_at,
          fresh.last_event_id,
          fresh.last_received_at,
          fresh.run_id,
          JSON.stringify(fresh.run),
          fresh.closed_at,
        );
      this.member(e, fresh, 1, now);
      if (startsAtOpen(fresh)) leading.push(fresh.run);
      due = Math.min(due ?? fresh.due_at, fresh.due_at);
    }
    // As on PostgreSQL: leading runs are inserted after every window of the commit is written.
    for (const run of leading) {
      const res = this.insertRun(run, now);
      if (res.created) runs.push(res.run);
    }
    return { runs, due };
  }

  /** Close up to `limit` due windows, each starting its run, in one write transaction. */
  close(now: number, limit: number): Run[] {
    const any = this.db.prepare("SELECT 1 FROM flow_windows WHERE status <> 'closed' AND due_at <= ? LIMIT 1").get(now);
    if (!any) return [];
    return this.db
      .transaction(() => {
        const windows = (
          this.db.prepare("SELECT * FROM flow_windows WHERE status <> 'closed' AND due_at <= ? ORDER BY due_at, id LIMIT ?").all(now, limit) as Record<
            string,
            unknown
          >[]
        ).map(toWindow);
        const out: Run[] = [];
        const bodiesOf = this.db.prepare(
          "SELECT e.body FROM flow_members m JOIN events e ON e.id = m.event_id WHERE m.window_id = ? ORDER BY e.received_at, e.id",
        );
        const closeOne = this.db.prepare("UPDATE flow_windows SET status = 'closed', closed_at = ? WHERE id = ?");
        for (const w of windows) {
          const bodies = w.kind === "batch" ? (bodiesOf.all(w.id) as { body: string }[]).map((r) => JSON.parse(r.body) as unknown) : [];
          const run = closingRun(w, bodies, now);
          if (run) {
            const res = this.insertRun(run, now);
            if (res.created) out.push(res.run);
          }
          closeOne.run(now, w.id);
        }
        return out;
      })
      .immediate();
  }

  eventFlow(workspaceId: string, eventId: string): FlowMembership[] {
    const cols = W_COLS.split(", ")
      .map((c) => `w.${c} AS w_${c}`)
      .join(", ");
    const rows = this.db
      .prepare(
        `SELECT m.*, w.id AS w_id, ${cols} FROM flow_members m LEFT JOIN flow_windows w ON w.id = m.window_id WHERE m.event_id = ? AND m.workspace_id = ? ORDER BY m.automation_id`,
      )
      .all(eventId, workspaceId) as Record<string, unknown>[];
    return rows.map(membership);
  }

  openWindows(workspaceId: string, f: { automation_id?: string; run_id?: string }, limit: number): FlowWindow[] {
    const a = f.automation_id ?? null;
    const r = f.run_id ?? null;
    const rows = this.db
      .prepare(
        "SELECT * FROM flow_windows WHERE workspace_id = ? AND (? IS NULL OR automation_id = ?) AND (? IS NULL OR run_id = ?) AND status <> 'closed' ORDER BY due_at, id LIMIT ?",
      )
      .all(workspaceId, a, a, r, r, limit) as Record<string, unknown>[];
    return rows.map(toWindow);
  }
}
