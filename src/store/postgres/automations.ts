// Workspaces, automations and their immutable versions on PostgreSQL.

import type pg from "pg";
import { WeftError } from "../../model/errors.js";
import type { AuditEntry, Automation, AutomationStatus, AutomationVersion } from "../../engine/store.js";
import { audit } from "./audit.js";
import { toAutomation, toVersion, ts } from "./rows.js";
import { PG_UNIQUE_VIOLATION } from "./runs.js";
import { tx } from "./tx.js";

export async function ensureWorkspace(pool: pg.Pool, id: string, name: string, now: number): Promise<void> {
  await pool.query("INSERT INTO workspaces (id, name, created_at) VALUES ($1, $2, $3) ON CONFLICT (id) DO NOTHING", [id, name, ts(now)]);
}

export async function insertAutomation(pool: pg.Pool, a: Automation, v: AutomationVersion, entry?: AuditEntry): Promise<void> {
  try {
    await tx(pool, async (c) => {
      await c.query(
        `INSERT INTO automations (id, workspace_id, key, name, status, current_version, created_at, updated_at)
         VALUES ($1,$2,$3,$4,$5,$6,$7,$8)`,
        [a.id, a.workspace_id, a.key, a.name, a.status, a.current_version, ts(a.created_at), ts(a.updated_at)],
      );
      await c.query("INSERT INTO automation_versions (automation_id, version, definition, created_at) VALUES ($1,$2,$3,$4)", [
        v.automation_id,
        v.version,
        v.definition,
        ts(v.created_at),
      ]);
      if (entry) await audit(c, [entry]);
    });
  } catch (err) {
    if ((err as { code?: string }).code === PG_UNIQUE_VIOLATION) {
      throw new WeftError("automation.key_taken", `an automation with key "${a.key}" already exists`, { field: "key" });
    }
    throw err;
  }
}

/** False when another version landed first; nothing was written then, so committing the empty transaction is harmless. */
export function insertVersion(pool: pg.Pool, workspaceId: string, v: AutomationVersion, now: number, entry?: AuditEntry): Promise<boolean> {
  return tx(pool, async (c) => {
    const upd = await c.query(
      `UPDATE automations SET current_version = $3, name = $4, updated_at = $5
       WHERE id = $1 AND workspace_id = $2 AND current_version = $3 - 1`,
      [v.automation_id, workspaceId, v.version, v.definition.name, ts(now)],
    );
    if (upd.rowCount !== 1) return false;
    await c.query("INSERT INTO automation_versions (automation_id, version, definition, created_at) VALUES ($1,$2,$3,$4)", [
      v.automation_id,
      v.version,
      v.definition,
      ts(v.created_at),
    ]);
    if (entry) await audit(c, [entry]);
    return true;
  });
}

export function setAutomationStatus(
  pool: pg.Pool,
  workspaceId: string,
  id: string,
  status: AutomationStatus,
  now: number,
  entry?: AuditEntry,
): Promise<boolean> {
  return tx(pool, async (c) => {
    const res = await c.query("UPDATE automations SET status = $3, updated_at = $4 WHERE id = $1 AND workspace_id = $2", [id, workspaceId, status, ts(now)]);
    if (res.rowCount !== 1) return false;
    if (entry) await audit(c, [entry]);
    return true;
  });
}

export async function getAutomation(pool: pg.Pool, workspaceId: string, id: string): Promise<Automation | null> {
  const res = await pool.query("SELECT * FROM automations WHERE id = $1 AND workspace_id = $2", [id, workspaceId]);
  return res.rows[0] ? toAutomation(res.rows[0]) : null;
}

export async function listAutomations(pool: pg.Pool, workspaceId: string): Promise<Automation[]> {
  const res = await pool.query("SELECT * FROM automations WHERE workspace_id = $1 ORDER BY created_at, id", [workspaceId]);
  return res.rows.map(toAutomation);
}

export async function getVersion(pool: pg.Pool, automationId: string, version: number): Promise<AutomationVersion | null> {
  const res = await pool.query({
    name: "weft_get_version",
    text: "SELECT * FROM automation_versions WHERE automation_id = $1 AND version = $2",
    values: [automationId, version],
  });
  return res.rows[0] ? toVersion(res.rows[0]) : null;
}
