// The node library's tables on PostgreSQL: wait look-ups, fan-out items, approvals, run control
// and the audit log. Decisions are compare-and-swap updates, so concurrent callers cannot both win.

import type pg from "pg";
import {
  approvalAudit,
  type Approval,
  type ApprovalStatus,
  type AuditEntry,
  type AuditRow,
  type Page,
  type Run,
  type RunControl,
  type RunItem,
  type StoredEvent,
  type WaitSpec,
} from "../../engine/store.js";
import { tx } from "./tx.js";
import { closeApprovalSet } from "./runs.js";
import { audit } from "./audit.js";
import { toApproval, toAudit, toItem, toRun, ts } from "./rows.js";

export { toApproval, toItem };
import { toEvent } from "./events.js";
import { decodeItemCursor, encodeItemCursor } from "../cursor.js";

import { controlEffect, TERMINAL_STATUSES } from "../../model/run-status.js";
import { skippedByRunEnd } from "../../model/item-outcome.js";

type Queryable = Pick<pg.Pool | pg.PoolClient, "query">;

export function appendAudit(pool: pg.Pool, entries: readonly AuditEntry[]): Promise<void> {
  return audit(pool, entries);
}

export async function listAudit(pool: pg.Pool, workspaceId: string, limit: number, beforeId?: number): Promise<AuditRow[]> {
  const res = await pool.query("SELECT * FROM audit_log WHERE workspace_id = $1 AND ($2::bigint IS NULL OR id < $2) ORDER BY id DESC LIMIT $3", [
    workspaceId,
    beforeId ?? null,
    limit,
  ]);
  return res.rows.map(toAudit);
}

export async function findEvents(pool: pg.Pool, workspaceId: string, w: WaitSpec, limit: number): Promise<StoredEvent[]> {
  const res = await pool.query({
    name: "weft_find_wait_events",
    text: `SELECT * FROM events WHERE workspace_id = $1 AND type = 'event' AND name = $2 AND ($3::text IS NULL OR subject_id = $3)
             AND received_at >= $4 AND NOT (id = ANY ($5::text[]))
             AND NOT EXISTS (SELECT 1 FROM run_consumed_events c WHERE c.run_id = $7 AND c.event_id = events.id)
           ORDER BY received_at, id LIMIT $6`,
    values: [workspaceId, w.name, w.subject_id, ts(w.after), w.exclude, limit, w.run_id ?? null],
  });
  return res.rows.map(toEvent);
}

export async function listItems(pool: pg.Pool, runId: string, nodeKey?: string, visit?: number): Promise<RunItem[]> {
  const res = await pool.query(
    `SELECT * FROM run_items WHERE run_id = $1 AND ($2::text IS NULL OR node_key = $2) AND ($3::int IS NULL OR visit = $3)
     ORDER BY node_key, visit, idx`,
    [runId, nodeKey ?? null, visit ?? null],
  );
  return res.rows.map(toItem);
}

export async function listItemsPage(pool: pg.Pool, runId: string, cursor: string | undefined, limit: number): Promise<Page<RunItem>> {
  const c = cursor === undefined ? null : decodeItemCursor(cursor);
  const res = await pool.query(
    `SELECT * FROM run_items WHERE run_id = $1 AND ($2::text IS NULL OR (node_key, visit, idx) > ($2, $3::int, $4::int))
     ORDER BY node_key, visit, idx LIMIT $5`,
    [runId, c?.node_key ?? null, c?.visit ?? null, c?.idx ?? null, limit + 1],
  );
  const items = res.rows.slice(0, limit).map(toItem);
  const last = items[items.length - 1];
  return { items, next_cursor: res.rows.length > limit && last ? encodeItemCursor(last.node_key, last.visit, last.idx) : null };
}

export async function getItem(pool: pg.Pool, workspaceId: string, itemId: string): Promise<RunItem | null> {
  const res = await pool.query("SELECT * FROM run_items WHERE id = $1 AND workspace_id = $2", [itemId, workspaceId]);
  return res.rows[0] ? toItem(res.rows[0]) : null;
}

export async function beginItemRetry(pool: pg.Pool, workspaceId: string, itemId: string, now: number, leaseUntil: number): Promise<RunItem | null> {
  const res = await pool.query(
    `UPDATE run_items i SET outcome = 'running', attempts = i.attempts + 1, not_before = $5, started_at = $3, updated_at = $3
     FROM runs r WHERE i.id = $1 AND i.workspace_id = $2 AND (i.outcome = 'failed' OR (i.outcome = 'running' AND (i.not_before IS NULL OR i.not_before <= $3)))
       AND r.id = i.run_id AND r.status = ANY ($4::text[])
     RETURNING i.*`,
    [itemId, workspaceId, ts(now), TERMINAL_STATUSES, ts(leaseUntil)],
  );
  return res.rows[0] ? toItem(res.rows[0]) : null;
}

export function finishItemRetry(pool: pg.Pool, item: RunItem, entry: AuditEntry): Promise<boolean> {
  return tx(pool, async (c) => {
    const upd = await c.query(
      `UPDATE run_items SET outcome = $2, output = $3, error = $4, not_before = NULL, finished_at = $5, updated_at = $5
       WHERE id = $1 AND outcome = 'running' AND attempts = $6`,
      [
        item.id,
        item.outcome,
        JSON.stringify(item.output),
        item.error === null ? null : JSON.stringify(item.error),
        ts(item.finished_at ?? item.updated_at),
        item.attempts,
      ],
    );
    if (upd.rowCount !== 1) return false;
    await c.query(`UPDATE runs SET items_failed = (SELECT count(*) FROM run_items WHERE run_id = $1 AND outcome = 'failed'), updated_at = $2 WHERE id = $1`, [
      item.run_id,
      ts(item.updated_at),
    ]);
    await audit(c, [entry]);
    return true;
  });
}

export async function getApproval(pool: Queryable, workspaceId: string, id: string): Promise<Approval | null> {
  const res = await pool.query("SELECT * FROM approvals WHERE id = $1 AND workspace_id = $2", [id, workspaceId]);
  return res.rows[0] ? toApproval(res.rows[0]) : null;
}

export async function listApprovals(pool: pg.Pool, workspaceId: string, status: ApprovalStatus | undefined, limit: number): Promise<Approval[]> {
  const res = await pool.query(
    "SELECT * FROM approvals WHERE workspace_id = $1 AND ($2::text IS NULL OR status = $2) ORDER BY created_at DESC, id DESC LIMIT $3",
    [workspaceId, status ?? null, limit],
  );
  return res.rows.map(toApproval);
}

export async function listRunApprovals(pool: pg.Pool, runId: string): Promise<Approval[]> {
  const res = await pool.query("SELECT * FROM approvals WHERE run_id = $1 ORDER BY created_at, id", [runId]);
  return res.rows.map(toApproval);
}

export function decideApproval(
  pool: pg.Pool,
  workspaceId: string,
  id: string,
  status: "approved" | "rejected" | "timed_out",
  actor: string,
  comment: string | null,
  now: number,
): Promise<{ applied: boolean; approval: Approval | null }> {
  return tx(pool, async (c) => {
    // A decision that comes after the deadline is refused, and the timeout is recorded then.
    const expired =
      status !== "timed_out" &&
      (
        await c.query("SELECT 1 FROM approvals WHERE id = $1 AND workspace_id = $2 AND status = 'pending' AND expires_at <= $3 FOR UPDATE", [
          id,
          workspaceId,
          ts(now),
        ])
      ).rows.length > 0;
    const [st, by, note] = expired ? ["timed_out", "system", null] : [status, actor, comment];
    const res = await c.query(
      `UPDATE approvals SET status = $3, decided_by = $4, decided_at = $5, comment = $6
       WHERE id = $1 AND workspace_id = $2 AND status = 'pending' RETURNING *`,
      [id, workspaceId, st, by, ts(now), note],
    );
    if (res.rows.length === 0) return { applied: false, approval: await getApproval(c, workspaceId, id) };
    const a = toApproval(res.rows[0]);
    // Wake the run parked on it; a run being driven (or about to be) gets `wake`, which its next
    // park turns into "due now". Both write the run row, so the row lock orders them: no gap.
    await c.query(
      `UPDATE runs SET due_at = CASE WHEN status = 'waiting' THEN $2 ELSE due_at END, wake = (status <> 'waiting')
       WHERE id = $1 AND completed_at IS NULL`,
      [a.run_id, ts(now)],
    );
    await audit(c, [approvalAudit(workspaceId, a, now)]);
    return { applied: !expired, approval: a };
  });
}

export function controlRun(pool: pg.Pool, workspaceId: string, runId: string, control: RunControl, entry: AuditEntry, now: number): Promise<Run | null> {
  return tx(pool, async (c) => {
    const cur = await c.query("SELECT * FROM runs WHERE id = $1 AND workspace_id = $2 FOR UPDATE", [runId, workspaceId]);
    if (cur.rows.length === 0) return null;
    const run = toRun(cur.rows[0]);
    const effect = controlEffect(run, control, now);
    if (effect.kind === "none") return run;
    await audit(c, [entry]);
    if (effect.kind === "flag") {
      // A worker holds it: it applies the request at its next checkpoint.
      const res = await c.query("UPDATE runs SET control = $2 WHERE id = $1 RETURNING *", [runId, control]);
      return toRun(res.rows[0]);
    }
    const { status, exit_reason: reason } = effect;
    const res = await c.query(
      `UPDATE runs SET status = $2, exit_reason = $3, control = NULL, wait_key = NULL, due_at = NULL, lease_owner = NULL,
         active_subject = NULL, waiting_for = NULL, waiting_until = NULL, current_node_key = NULL, completed_at = $4, updated_at = $4, rev = rev + 1
       WHERE id = $1 RETURNING *`,
      [runId, status, reason, ts(now)],
    );
    await c.query(
      `UPDATE run_items SET outcome = 'skipped', error = $2, finished_at = $3, updated_at = $3
       WHERE run_id = $1 AND outcome IN ('pending', 'awaiting_approval')`,
      [runId, JSON.stringify(skippedByRunEnd(control)), ts(now)],
    );
    await c.query(`UPDATE approvals SET ${closeApprovalSet("$2::timestamptz")} WHERE run_id = $1 AND status = 'pending'`, [runId, ts(now)]);
    return toRun(res.rows[0]);
  });
}
