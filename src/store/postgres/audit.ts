// Appending to the audit log inside whatever transaction made the change.

import type pg from "pg";
import type { AuditEntry } from "../../engine/store.js";

type Queryable = Pick<pg.Pool | pg.PoolClient, "query">;

export async function audit(db: Queryable, entries: readonly AuditEntry[]): Promise<void> {
  if (entries.length === 0) return;
  await db.query(
    `INSERT INTO audit_log (workspace_id, actor, action, target_type, target_id, details, at)
     SELECT l.workspace_id, l.actor, l.action, l.target_type, l.target_id, l.details, to_timestamp(l.at / 1000.0)
     FROM jsonb_to_recordset($1::jsonb) AS l(workspace_id text, actor text, action text, target_type text,
       target_id text, details jsonb, at double precision, ord int) ORDER BY l.ord`,
    [JSON.stringify(entries.map((e, ord) => ({ ...e, ord })))],
  );
}
