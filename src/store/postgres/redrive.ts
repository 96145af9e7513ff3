// Redrive on PostgreSQL: the engine's decision (cursor, version, active slot) written with a
// compare-and-swap on the run's rev and status, and its audit entry, in one transaction.

import type pg from "pg";
import type { Redrive, RedriveResult } from "../../engine/store.js";
import { audit } from "./audit.js";
import { toRun, ts } from "./rows.js";
import { PG_UNIQUE_VIOLATION } from "./runs.js";
import { tx } from "./tx.js";

export async function redriveRun(pool: pg.Pool, r: Redrive): Promise<RedriveResult> {
  try {
    return await tx(pool, async (c): Promise<RedriveResult> => {
      const res = await c.query(
        `UPDATE runs SET status = 'pending', exit_reason = NULL, completed_at = NULL, version = $5, cursor = $6::jsonb, current_node_key = $7,
           active_subject = $8, control = NULL, wait_key = NULL, waiting_for = NULL, waiting_until = NULL, lease_owner = NULL,
           due_at = $9, updated_at = $9, unsettled_claims = 0, rev = rev + 1
         WHERE id = $1 AND workspace_id = $2 AND rev = $3 AND status = $4 RETURNING *`,
        [r.run_id, r.workspace_id, r.expected_rev, r.expected_status, r.version, JSON.stringify(r.cursor), r.cursor.node, r.active_subject, ts(r.now)],
      );
      if (res.rows.length === 0) return { outcome: "stale" };
      // Its flow-control rows from before it ended would count as held again now that it is live: it meets its gates afresh.
      await c.query("DELETE FROM flow_slots WHERE run_id = $1", [r.run_id]);
      await c.query("DELETE FROM flow_waiters WHERE run_id = $1", [r.run_id]);
      await audit(c, [r.audit]);
      return { outcome: "applied", run: toRun(res.rows[0]) };
    });
  } catch (err) {
    // The runs_active_subject index: the subject holds another active run of this automation.
    if ((err as { code?: string }).code === PG_UNIQUE_VIOLATION) return { outcome: "slot_taken" };
    throw err;
  }
}
