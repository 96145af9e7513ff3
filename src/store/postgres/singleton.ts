// reentry.policy cancel_previous on PostgreSQL: before runs are inserted, the run holding each
// replacing run's active slot is cancelled by the operator's cancel rule (controlEffect: ended at
// once when no worker holds it, flagged for the worker's next checkpoint when one does) and its
// slot freed, in the inserting transaction. Only for a replacing run the enrollment would start:
// not a replay of a stored dedupe key, not a paused subject, not within a cooldown (the insert's
// own SQL checks, passed in by runs.ts). The rules are model/enrollment.ts's.

import type pg from "pg";
import { replacedAudit, replacesActive } from "../../model/enrollment.js";
import { skippedByRunEnd } from "../../model/item-outcome.js";
import { controlEffect } from "../../model/run-status.js";
import type { NewRun } from "../../engine/store.js";
import { audit } from "./audit.js";
import { toRun, ts } from "./rows.js";

type Queryable = Pick<pg.Pool | pg.PoolClient, "query">;

export interface EnrollmentSql {
  subject_paused: string | null;
  reentry_cooldown: string | null;
}

export async function releaseReplaced(
  db: Queryable,
  runs: readonly NewRun[],
  now: number,
  sql: EnrollmentSql,
  closeApprovals: (at: string) => string,
): Promise<void> {
  const replacing = runs.filter(replacesActive);
  if (replacing.length === 0) return;
  const starts = await db.query(
    `SELECT i.id FROM jsonb_to_recordset($1::jsonb) AS i(id text, workspace_id text, automation_id text, subject_id text, dedupe_key text, cooldown_ms double precision)
     WHERE NOT EXISTS (SELECT 1 FROM runs r WHERE r.automation_id = i.automation_id AND r.dedupe_key = i.dedupe_key)
       AND (i.subject_id IS NULL OR NOT ((${sql.subject_paused ?? "false"}) OR (${sql.reentry_cooldown ?? "false"})))`,
    [JSON.stringify(replacing), ts(now)],
  );
  const ok = new Set(starts.rows.map((r) => r.id as string));
  for (const run of replacing) {
    if (!ok.has(run.id)) continue;
    const cur = await db.query("SELECT * FROM runs WHERE automation_id = $1 AND active_subject = $2 FOR UPDATE", [run.automation_id, run.active_subject]);
    const holder = cur.rows[0] ? toRun(cur.rows[0]) : null;
    if (holder === null || holder.id === run.id) continue;
    await audit(db as pg.PoolClient, [replacedAudit({ ...holder, active_subject: run.active_subject }, run, now)]);
    const effect = controlEffect(holder, "cancel", now);
    if (effect.kind === "flag") {
      // A worker in some process is mid-step on it: it ends the run at its next checkpoint; the slot is the new run's now.
      await db.query("UPDATE runs SET control = 'cancel', active_subject = NULL WHERE id = $1", [holder.id]);
      continue;
    }
    if (effect.kind === "none") continue;
    await db.query(
      `UPDATE runs SET status = $2, exit_reason = $3, control = NULL, wait_key = NULL, due_at = NULL, lease_owner = NULL,
         active_subject = NULL, waiting_for = NULL, waiting_until = NULL, current_node_key = NULL, completed_at = $4, updated_at = $4, rev = rev + 1
       WHERE id = $1`,
      [holder.id, effect.status, effect.exit_reason, ts(now)],
    );
    await db.query(
      `UPDATE run_items SET outcome = 'skipped', error = $2, finished_at = $3, updated_at = $3 WHERE run_id = $1 AND outcome IN ('pending', 'awaiting_approval')`,
      [holder.id, JSON.stringify(skippedByRunEnd("cancel")), ts(now)],
    );
    await db.query(`UPDATE approvals SET ${closeApprovals("$2::timestamptz")} WHERE run_id = $1 AND status = 'pending'`, [holder.id, ts(now)]);
  }
}
