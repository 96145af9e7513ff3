// Identities, secrets and reports on SQLite (see store/postgres/identity.ts). Every mutation
// writes its audit entry in the same transaction.

import type Database from "better-sqlite3";
import type { AuditEntry, OpsCounts, OutcomeRow, Role, SecretRow, TokenRow, User, Workspace } from "../../engine/store.js";
import { isEnabledAdmin } from "../../engine/store.js";
import { outcomeRows } from "../reports.js";
import { mappers, sqliteCodec } from "../rows.js";

const { user: toUser, token: toToken } = mappers(sqliteCodec);

export class EmbeddedIdentity {
  constructor(private readonly db: Database.Database) {}

  private audit(a: AuditEntry): void {
    this.db
      .prepare("INSERT INTO audit_log (workspace_id, actor, action, target_type, target_id, details, at) VALUES (?, ?, ?, ?, ?, ?, ?)")
      .run(a.workspace_id, a.actor, a.action, a.target_type, a.target_id, JSON.stringify(a.details), a.at);
  }
  private userRow(u: User): void {
    this.db
      .prepare("INSERT INTO users (id, workspace_id, name, role, instance_admin, created_at) VALUES (?, ?, ?, ?, ?, ?)")
      .run(u.id, u.workspace_id, u.name, u.role, u.instance_admin ? 1 : 0, u.created_at);
  }
  private tokenRow(t: TokenRow & { hash: string }): void {
    this.db
      .prepare("INSERT INTO tokens (id, workspace_id, user_id, hash, created_at) VALUES (?, ?, ?, ?, ?)")
      .run(t.id, t.workspace_id, t.user_id, t.hash, t.created_at);
  }

  createWorkspace(w: Workspace, admin: User, token: TokenRow & { hash: string }, a: AuditEntry): void {
    this.db
      .transaction(() => {
        this.db.prepare("INSERT INTO workspaces (id, name, created_at) VALUES (?, ?, ?)").run(w.id, w.name, w.created_at);
        this.userRow(admin);
        this.tokenRow(token);
        this.audit(a);
      })
      .immediate();
  }
  getWorkspace(id: string): Workspace | null {
    const r = this.db.prepare("SELECT * FROM workspaces WHERE id = ?").get(id) as Workspace | undefined;
    return r ? { id: r.id, name: r.name, created_at: r.created_at } : null;
  }
  insertUser(u: User, a: AuditEntry): void {
    this.db
      .transaction(() => {
        this.userRow(u);
        this.audit(a);
      })
      .immediate();
  }
  getUser(workspaceId: string, id: string): User | null {
    const r = this.db.prepare("SELECT * FROM users WHERE id = ? AND workspace_id = ?").get(id, workspaceId);
    return r ? toUser(r) : null;
  }
  listUsers(workspaceId: string): User[] {
    return this.db.prepare("SELECT * FROM users WHERE workspace_id = ? ORDER BY created_at, id").all(workspaceId).map(toUser);
  }
  updateUser(workspaceId: string, id: string, patch: { role?: Role; disabled_at?: number | null }, a: AuditEntry): User | "last_admin" | null {
    return this.db
      .transaction(() => {
        const before = this.getUser(workspaceId, id);
        if (!before) return null;
        const after: User = {
          ...before,
          ...(patch.role !== undefined ? { role: patch.role } : {}),
          ...(patch.disabled_at !== undefined ? { disabled_at: patch.disabled_at } : {}),
        };
        // The write lock of this immediate transaction keeps two admins from demoting each other at once.
        if (isEnabledAdmin(before) && !isEnabledAdmin(after)) {
          const others = this.db
            .prepare("SELECT count(*) FROM users WHERE workspace_id = ? AND id <> ? AND role = 'admin' AND disabled_at IS NULL")
            .pluck()
            .get(workspaceId, id) as number;
          if (others === 0) return "last_admin";
        }
        this.db
          .prepare("UPDATE users SET role = ?, disabled_at = ? WHERE id = ? AND workspace_id = ?")
          .run(after.role, after.disabled_at ?? null, id, workspaceId);
        this.audit(a);
        return after;
      })
      .immediate();
  }
  insertToken(t: TokenRow & { hash: string }, a: AuditEntry): void {
    this.db
      .transaction(() => {
        this.tokenRow(t);
        this.audit(a);
      })
      .immediate();
  }
  tokenByHash(hash: string): { token: TokenRow; user: User } | null {
    const t = this.db.prepare("SELECT * FROM tokens WHERE hash = ? AND revoked_at IS NULL").get(hash) as { user_id: string } | undefined;
    if (!t) return null;
    const u = this.db.prepare("SELECT * FROM users WHERE id = ?").get(t.user_id);
    return u ? { token: toToken(t), user: toUser(u) } : null;
  }
  listTokens(workspaceId: string): TokenRow[] {
    return this.db.prepare("SELECT * FROM tokens WHERE workspace_id = ? ORDER BY created_at, id").all(workspaceId).map(toToken);
  }
  revokeToken(workspaceId: string, id: string, now: number, a: AuditEntry): boolean {
    return this.db
      .transaction(() => {
        const res = this.db.prepare("UPDATE tokens SET revoked_at = ? WHERE id = ? AND workspace_id = ? AND revoked_at IS NULL").run(now, id, workspaceId);
        if (res.changes !== 1) return false;
        this.audit(a);
        return true;
      })
      .immediate();
  }
  putSecret(workspaceId: string, name: string, ciphertext: string, now: number, a: AuditEntry): boolean {
    return this.db
      .transaction(() => {
        const existed = this.db.prepare("SELECT 1 FROM secrets WHERE workspace_id = ? AND name = ?").get(workspaceId, name) !== undefined;
        this.db
          .prepare(`INSERT INTO secrets (workspace_id, name, ciphertext, created_at, updated_at) VALUES (?, ?, ?, ?, ?)
          ON CONFLICT (workspace_id, name) DO UPDATE SET ciphertext = excluded.ciphertext, updated_at = excluded.updated_at`)
          .run(workspaceId, name, ciphertext, now, now);
        this.audit({ ...a, details: { ...a.details, created: !existed } });
        return !existed;
      })
      .immediate();
  }
  listSecrets(workspaceId: string): SecretRow[] {
    return this.db.prepare("SELECT name, ciphertext, created_at, updated_at FROM secrets WHERE workspace_id = ? ORDER BY name").all(workspaceId) as SecretRow[];
  }
  deleteSecret(workspaceId: string, name: string, a: AuditEntry): boolean {
    return this.db
      .transaction(() => {
        if (this.db.prepare("DELETE FROM secrets WHERE workspace_id = ? AND name = ?").run(workspaceId, name).changes !== 1) return false;
        this.audit(a);
        return true;
      })
      .immediate();
  }
  reportOutcomes(workspaceId: string, from: number, to: number): OutcomeRow[] {
    const runs = this.db
      .prepare(
        "SELECT automation_id, status, count(*) AS n FROM runs WHERE workspace_id = ? AND started_at >= ? AND started_at < ? GROUP BY automation_id, status",
      )
      .all(workspaceId, from, to) as { automation_id: string; status: string; n: number }[];
    const items = this.db
      .prepare(`SELECT r.automation_id, i.outcome, count(*) AS n FROM run_items i JOIN runs r ON r.id = i.run_id
        WHERE r.workspace_id = ? AND r.started_at >= ? AND r.started_at < ? GROUP BY r.automation_id, i.outcome`)
      .all(workspaceId, from, to) as { automation_id: string; outcome: string; n: number }[];
    return outcomeRows(runs, items);
  }
  opsCounts(workspaceId: string, now: number, windowMs: number): OpsCounts {
    const d = this.db.prepare("SELECT count(*) AS n, min(due_at) AS oldest FROM runs WHERE workspace_id = ? AND due_at <= ?").get(workspaceId, now) as {
      n: number;
      oldest: number | null;
    };
    const oldestId = this.db.prepare("SELECT id FROM runs WHERE workspace_id = ? AND due_at <= ? ORDER BY due_at LIMIT 1").pluck().get(workspaceId, now) as
      | string
      | undefined;
    const ev = this.db
      .prepare("SELECT count(*) FROM events WHERE workspace_id = ? AND dispatched_at IS NULL AND undeliverable_at IS NULL")
      .pluck()
      .get(workspaceId) as number;
    const failed = this.db
      .prepare(`SELECT automation_id, count(*) AS w, sum(completed_at >= ?) AS h FROM runs
        WHERE workspace_id = ? AND completed_at >= ? AND completed_at <= ? AND status = 'failed' GROUP BY automation_id ORDER BY automation_id`)
      .all(now - 3_600_000, workspaceId, now - windowMs, now) as { automation_id: string; w: number; h: number | null }[];
    return {
      due_runs: d.n,
      undispatched_events: ev,
      oldest_due_at: d.oldest ?? null,
      oldest_due_run_id: oldestId ?? null,
      failed: failed.map((r) => ({ automation_id: r.automation_id, window: r.w, last_hour: r.h ?? 0 })),
    };
  }
  queueDepth(now: number, graceMs: number): { due_runs: number; overdue_runs: number; undispatched_events: number } {
    return {
      due_runs: this.db.prepare("SELECT count(*) FROM runs WHERE due_at <= ?").pluck().get(now) as number,
      overdue_runs: this.db
        .prepare("SELECT count(*) FROM runs WHERE due_at < ? AND status <> 'running'")
        .pluck()
        .get(now - graceMs) as number,
      undispatched_events: this.db.prepare("SELECT count(*) FROM events WHERE dispatched_at IS NULL AND undeliverable_at IS NULL").pluck().get() as number,
    };
  }
}
