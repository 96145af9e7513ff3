// Workspace settings on PostgreSQL: one JSON object per workspace, replaced with its audit entry
// in one transaction.

import type pg from "pg";
import type { AuditEntry } from "../../engine/store.js";
import { audit } from "./audit.js";
import { ts } from "./rows.js";
import { tx } from "./tx.js";

export async function getWorkspaceSettings(pool: pg.Pool, workspaceId: string): Promise<Record<string, unknown> | null> {
  const res = await pool.query({
    name: "weft_workspace_settings",
    text: "SELECT settings FROM workspace_settings WHERE workspace_id = $1",
    values: [workspaceId],
  });
  return res.rows.length === 0 ? null : (res.rows[0].settings as Record<string, unknown>);
}

export function putWorkspaceSettings(pool: pg.Pool, workspaceId: string, settings: Record<string, unknown>, now: number, a: AuditEntry): Promise<void> {
  return tx(pool, async (c) => {
    await c.query(
      `INSERT INTO workspace_settings (workspace_id, settings, updated_at) VALUES ($1, $2, $3)
       ON CONFLICT (workspace_id) DO UPDATE SET settings = EXCLUDED.settings, updated_at = EXCLUDED.updated_at`,
      [workspaceId, JSON.stringify(settings), ts(now)],
    );
    await audit(c, [a]);
  });
}
