// Workspace settings on SQLite (see store/postgres/settings.ts).

import type Database from "better-sqlite3";
import type { AuditEntry } from "../../engine/store.js";

export function getWorkspaceSettings(db: Database.Database, workspaceId: string): Record<string, unknown> | null {
  const raw = db.prepare("SELECT settings FROM workspace_settings WHERE workspace_id = ?").pluck().get(workspaceId) as string | undefined;
  return raw === undefined ? null : (JSON.parse(raw) as Record<string, unknown>);
}

/** Replace the settings and write the audit entry, in one transaction. */
export function putWorkspaceSettings(db: Database.Database, workspaceId: string, settings: Record<string, unknown>, now: number, a: AuditEntry): void {
  db.transaction(() => {
    db.prepare(
      `INSERT INTO workspace_settings (workspace_id, settings, updated_at) VALUES (?, ?, ?)
       ON CONFLICT (workspace_id) DO UPDATE SET settings = excluded.settings, updated_at = excluded.updated_at`,
    ).run(workspaceId, JSON.stringify(settings), now);
    db.prepare("INSERT INTO audit_log (workspace_id, actor, action, target_type, target_id, details, at) VALUES (?, ?, ?, ?, ?, ?, ?)").run(
      a.workspace_id,
      a.actor,
      a.action,
      a.target_type,
      a.target_id,
      JSON.stringify(a.details),
      a.at,
    );
  }).immediate();
}
