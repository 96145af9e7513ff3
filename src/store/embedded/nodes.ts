// The node library's tables on SQLite (see store/postgres/nodes.ts): wait look-ups, fan-out items,
// approvals, run control and the audit log. One process writes, each call in one transaction.

import type Database from "better-sqlite3";
import {
  approvalAudit,
  type Approval,
  type ApprovalStatus,
  type AuditEntry,
  type AuditRow,
  type Checkpoint,
  type RunControl,
  type RunItem,
  type StoredEvent,
  type WaitSpec,
} from "../../engine/store.js";

import { controlEffect, TERMINAL_STATUSES, type RunStatus } from "../../model/run-status.js";
import { skippedByRunEnd } from "../../model/item-outcome.js";
import { sqlList } from "../sql.js";
import { mappers, sqliteCodec, type Row } from "../rows.js";

const j = (v: unknown): string | null => (v === undefined || v === null ? null : JSON.stringify(v));
const { item: toItem, approval: toApproval, audit: toAudit } = mappers(sqliteCodec);
export { toApproval, toItem };

const TERMINAL = sqlList(TERMINAL_STATUSES);
/**
 * A run that ends closes its pending approvals: one already past its expiry timed out (nobody
 * decided in time, whether or not the runner had applied the timeout yet), any other is cancelled.
 */
const CLOSE_APPROVALS = `UPDATE approvals SET
    status = CASE WHEN expires_at IS NOT NULL AND expires_at <= @at THEN 'timed_out' ELSE 'cancelled' END,
    decided_by = CASE WHEN expires_at IS NOT NULL AND expires_at <= @at THEN 'system' ELSE decided_by END,
    decided_at = @at
  WHERE run_id = @run AND status = 'pending'`;

export class EmbeddedNodes {
  private prepared: ReturnType<EmbeddedNodes["prepare"]> | undefined;
  constructor(private readonly db: Database.Database) {}
  private get s() {
    return (this.prepared ??= this.prepare());
  }

  private prepare() {
    const d = this.db;
    return {
      upsertItem: d.prepare(`INSERT INTO run_items (id, run_id, workspace_id, node_key, visit, idx, subject_id, action_kind, outcome, attempts,
          idempotency_key, input, output, error, approval_id, not_before, started_at, finished_at, updated_at)
        VALUES (@id, @run_id, @workspace_id, @node_key, @visit, @idx, @subject_id, @action_kind, @outcome, @attempts,
          @idempotency_key, @input, @output, @error, @approval_id, @not_before, @started_at, @finished_at, @updated_at)
        ON CONFLICT (id) DO UPDATE SET outcome = excluded.outcome, attempts = excluded.attempts, input = excluded.input,
          output = excluded.output, error = excluded.error, approval_id = excluded.approval_id, not_before = excluded.not_before,
          started_at = excluded.started_at, finished_at = excluded.finished_at, updated_at = excluded.updated_at`),
      updateItem: d.prepare(`UPDATE run_items SET outcome = @outcome, attempts = @attempts, output = @output, error = @error,
          approval_id = @approval_id, not_before = @not_before, started_at = @started_at, finished_at = @finished_at, updated_at = @updated_at
        WHERE id = @id AND run_id = @run_id`),
      insertApproval: d.prepare(`INSERT INTO approvals (id, workspace_id, run_id, automation_id, node_key, visit, item_id, title, approvers,
          status, created_at, expires_at)
        VALUES (@id, @workspace_id, @run_id, @automation_id, @node_key, @visit, @item_id, @title, @approvers, 'pending', @created_at, @expires_at)
        ON CONFLICT (id) DO NOTHING`),
      insertAudit: d.prepare(`INSERT INTO audit_log (workspace_id, actor, action, target_type, target_id, details, at)
        VALUES (@workspace_id, @actor, @action, @target_type, @target_id, @details, @at)`),
      waitHit: d
        .prepare(`SELECT 1 FROM events WHERE workspace_id = ? AND type = 'event' AND name = ? AND (? IS NULL OR subject_id = ?)
          AND received_at >= ? AND id NOT IN (SELECT value FROM json_each(?))
          AND id NOT IN (SELECT event_id FROM run_consumed_events WHERE run_id = ?) LIMIT 1`)
        .pluck(),
      findEvents: d.prepare(`SELECT * FROM events WHERE workspace_id = ? AND type = 'event' AND name = ? AND (? IS NULL OR subject_id = ?)
          AND received_at >= ? AND id NOT IN (SELECT value FROM json_each(?))
          AND id NOT IN (SELECT event_id FROM run_consumed_events WHERE run_id = ?) ORDER BY received_at, id LIMIT ?`),
      consume: d.prepare("INSERT OR IGNORE INTO run_consumed_events (run_id, event_id) VALUES (?, ?)"),
      wake: d.prepare(`UPDATE runs SET due_at = ? WHERE workspace_id = ? AND wait_key = ? AND status = 'waiting' AND (due_at IS NULL OR due_at > ?)`),
      getApproval: d.prepare("SELECT * FROM approvals WHERE id = ? AND workspace_id = ?"),
    };
  }

  /** Inside the commit transaction, once the checkpoint's state applied. */
  writeCheckpointExtras(c: Checkpoint): void {
    for (const id of c.consumed ?? []) this.s.consume.run(c.run_id, id);
    for (const it of c.items ?? []) {
      this.s.upsertItem.run({ ...it, input: j(it.input), output: j(it.output), error: j(it.error) });
    }
    for (const it of c.item_updates ?? []) {
      this.s.updateItem.run({
        id: it.id,
        run_id: c.run_id,
        outcome: it.outcome,
        attempts: it.attempts,
        output: j(it.output),
        error: j(it.error),
        approval_id: it.approval_id,
        not_before: it.not_before,
        started_at: it.started_at,
        finished_at: it.finished_at,
        updated_at: it.updated_at,
      });
    }
    if (c.state.close_open) {
      // A run that ended leaves no open item and no pending approval.
      const at = c.state.updated_at;
      this.db
        .prepare(
          "UPDATE run_items SET outcome = 'skipped', error = ?, finished_at = ?, updated_at = ? WHERE run_id = ? AND outcome IN ('pending', 'awaiting_approval')",
        )
        .run(j({ code: "run.ended", message: `the run ended (${c.state.status}) before this item started`, retryable: false }), at, at, c.run_id);
      this.db.prepare(CLOSE_APPROVALS).run({ at, run: c.run_id });
    }
    for (const a of c.approvals ?? []) this.s.insertApproval.run({ ...a, approvers: j(a.approvers) });
    this.audit(c.audit ?? []);
  }

  /** Is a named event matching this wait already stored? (the park commit makes the run due at once). */
  waitSatisfied(workspaceId: string, runId: string, w: WaitSpec): boolean {
    return this.s.waitHit.get(workspaceId, w.name, w.subject_id, w.subject_id, w.after, JSON.stringify(w.exclude), runId) !== undefined;
  }

  findEvents(workspaceId: string, w: WaitSpec, limit: number, toEvent: (r: unknown) => StoredEvent): StoredEvent[] {
    return this.s.findEvents.all(workspaceId, w.name, w.subject_id, w.subject_id, w.after, JSON.stringify(w.exclude), w.run_id ?? null, limit).map(toEvent);
  }

  /** Inside the dispatch transaction: named events wake the runs parked on them. */
  wake(workspaceId: string, key: string, now: number): number {
    return this.s.wake.run(now, workspaceId, key, now).changes;
  }

  audit(entries: readonly AuditEntry[]): void {
    for (const a of entries) this.s.insertAudit.run({ ...a, details: j(a.details) });
  }

  listAudit(workspaceId: string, limit: number, beforeId?: number): AuditRow[] {
    return this.db
      .prepare("SELECT * FROM audit_log WHERE workspace_id = ? AND (? IS NULL OR id < ?) ORDER BY id DESC LIMIT ?")
      .all(workspaceId, beforeId ?? null, beforeId ?? null, limit)
      .map((r) => toAudit(r as Row));
  }

  listItems(runId: string, nodeKey?: string, visit?: number): RunItem[] {
    return this.db
      .prepare("SELECT * FROM run_items WHERE run_id = ? AND (? IS NULL OR node_key = ?) AND (? IS NULL OR visit = ?) ORDER BY node_key, visit, idx")
      .all(runId, nodeKey ?? null, nodeKey ?? null, visit ?? null, visit ?? null)
      .map(toItem);
  }

  getItem(workspaceId: string, itemId: string): RunItem | null {
    const r = this.db.prepare("SELECT * FROM run_items WHERE id = ? AND workspace_id = ?").get(itemId, workspaceId);
    return r ? toItem(r) : null;
  }

  beginItemRetry(workspaceId: string, itemId: string, now: number, leaseUntil: number): RunItem | null {
    const r = this.db
      .prepare(`UPDATE run_items SET outcome = 'running', attempts = attempts + 1, not_before = ?, started_at = ?, updated_at = ?
        WHERE id = ? AND workspace_id = ? AND (outcome = 'failed' OR (outcome = 'running' AND (not_before IS NULL OR not_before <= ?)))
          AND (SELECT status FROM runs WHERE runs.id = run_items.run_id) IN ${TERMINAL}
        RETURNING *`)
      .get(leaseUntil, now, now, itemId, workspaceId, now);
    return r ? toItem(r) : null;
  }

  finishItemRetry(item: RunItem, entry: AuditEntry): boolean {
    return this.db
      .transaction(() => {
        const n = this.db
          .prepare(`UPDATE run_items SET outcome = ?, output = ?, error = ?, not_before = NULL, finished_at = ?, updated_at = ?
          WHERE id = ? AND outcome = 'running' AND attempts = ?`)
          .run(item.outcome, j(item.output), j(item.error), item.finished_at ?? item.updated_at, item.updated_at, item.id, item.attempts).changes;
        if (n !== 1) return false;
        this.db
          .prepare("UPDATE runs SET items_failed = (SELECT count(*) FROM run_items WHERE run_id = ? AND outcome = 'failed'), updated_at = ? WHERE id = ?")
          .run(item.run_id, item.updated_at, item.run_id);
        this.audit([entry]);
        return true;
      })
      .immediate();
  }

  getApproval(workspaceId: string, id: string): Approval | null {
    const r = this.s.getApproval.get(id, workspaceId);
    return r ? toApproval(r) : null;
  }

  listApprovals(workspaceId: string, status: ApprovalStatus | undefined, limit: number): Approval[] {
    return this.db
      .prepare("SELECT * FROM approvals WHERE workspace_id = ? AND (? IS NULL OR status = ?) ORDER BY created_at DESC, id DESC LIMIT ?")
      .all(workspaceId, status ?? null, status ?? null, limit)
      .map(toApproval);
  }

  listRunApprovals(runId: string): Approval[] {
    return this.db.prepare("SELECT * FROM approvals WHERE run_id = ? ORDER BY created_at, id").all(runId).map(toApproval);
  }

  decideApproval(
    workspaceId: string,
    id: string,
    status: "approved" | "rejected" | "timed_out",
    actor: string,
    comment: string | null,
    now: number,
  ): { applied: boolean; approval: Approval | null } {
    return this.db
      .transaction(() => {
        // A decision that comes after the deadline is refused, and the timeout is recorded then.
        const cur = this.getApproval(workspaceId, id);
        const expired = status !== "timed_out" && cur?.status === "pending" && cur.expires_at !== null && cur.expires_at <= now;
        const r = this.db
          .prepare(
            "UPDATE approvals SET status = ?, decided_by = ?, decided_at = ?, comment = ? WHERE id = ? AND workspace_id = ? AND status = 'pending' RETURNING *",
          )
          .get(expired ? "timed_out" : status, expired ? "system" : actor, now, expired ? null : comment, id, workspaceId);
        if (!r) return { applied: false, approval: cur };
        const a = toApproval(r);
        // Wake the parked run; a run being driven gets `wake`, which its next park turns into "due now".
        this.db
          .prepare(
            "UPDATE runs SET due_at = CASE WHEN status = 'waiting' THEN ? ELSE due_at END, wake = (status <> 'waiting') WHERE id = ? AND completed_at IS NULL",
          )
          .run(now, a.run_id);
        this.audit([approvalAudit(workspaceId, a, now)]);
        return { applied: !expired, approval: a };
      })
      .immediate();
  }

  /** Returns the run row after the request (raw), or undefined when it does not exist. */
  controlRun(workspaceId: string, runId: string, control: RunControl, entry: AuditEntry, now: number): unknown {
    return this.db
      .transaction(() => {
        const run = this.db.prepare("SELECT * FROM runs WHERE id = ? AND workspace_id = ?").get(runId, workspaceId) as
          | { status: RunStatus; due_at: number | null }
          | undefined;
        if (!run) return undefined;
        const effect = controlEffect(run, control, now);
        if (effect.kind === "none") return run;
        this.audit([entry]);
        if (effect.kind === "flag") return this.db.prepare("UPDATE runs SET control = ? WHERE id = ? RETURNING *").get(control, runId);
        const { status, exit_reason: reason } = effect;
        const out = this.db
          .prepare(`UPDATE runs SET status = ?, exit_reason = ?, control = NULL, wait_key = NULL, due_at = NULL, lease_owner = NULL,
            active_subject = NULL, waiting_for = NULL, waiting_until = NULL, current_node_key = NULL, completed_at = ?, updated_at = ?, rev = rev + 1
          WHERE id = ? RETURNING *`)
          .get(status, reason, now, now, runId);
        this.db
          .prepare(
            "UPDATE run_items SET outcome = 'skipped', error = ?, finished_at = ?, updated_at = ? WHERE run_id = ? AND outcome IN ('pending', 'awaiting_approval')",
          )
          .run(j(skippedByRunEnd(control)), now, now, runId);
        this.db.prepare(CLOSE_APPROVALS).run({ at: now, run: runId });
        return out;
      })
      .immediate();
  }
}
