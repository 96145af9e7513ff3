// Redrive on SQLite (see store/postgres/redrive.ts): the engine's decision written with a
// compare-and-swap on the run's rev and status, and its audit entry, in one transaction.

import type Database from "better-sqlite3";
import type { AuditEntry, Redrive, RedriveResult, Run } from "../../engine/store.js";

export function redriveRun(db: Database.Database, r: Redrive, audit: (entries: AuditEntry[]) => void, toRun: (row: unknown) => Run): RedriveResult {
  try {
    return db
      .transaction((): RedriveResult => {
        const row = db
          .prepare(`UPDATE runs SET status = 'pending', exit_reason = NULL, completed_at = NULL, version = ?, cursor = ?, current_node_key = ?,
            active_subject = ?, control = NULL, wait_key = NULL, waiting_for = NULL, waiting_until = NULL, lease_owner = NULL,
            due_at = ?, updated_at = ?, unsettled_claims = 0, rev = rev + 1
          WHERE id = ? AND workspace_id = ? AND rev = ? AND status = ? RETURNING *`)
          .get(r.version, JSON.stringify(r.cursor), r.cursor.node, r.active_subject, r.now, r.now, r.run_id, r.workspace_id, r.expected_rev, r.expected_status);
        if (row === undefined) return { outcome: "stale" };
        // Its flow-control rows from before it ended would count as held again now that it is live: it meets its gates afresh.
        db.prepare("DELETE FROM flow_slots WHERE run_id = ?").run(r.run_id);
        db.prepare("DELETE FROM flow_waiters WHERE run_id = ?").run(r.run_id);
        audit([r.audit]);
        return { outcome: "applied", run: toRun(row) };
      })
      .immediate();
  } catch (err) {
    // The runs_active_subject index: the subject holds another active run of this automation.
    if ((err as { code?: string }).code === "SQLITE_CONSTRAINT_UNIQUE") return { outcome: "slot_taken" };
    throw err;
  }
}
