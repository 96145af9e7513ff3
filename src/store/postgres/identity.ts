// Identities, secrets and reports on PostgreSQL. Every mutation writes its audit entry in the same
// transaction, so the trail cannot miss a change that happened.

import type pg from "pg";
import type { AuditEntry, OpsCounts, OutcomeRow, Role, SecretRow, TokenRow, User, Workspace } from "../../engine/store.js";
import { isEnabledAdmin } from "../../engine/store.js";
import { tx } from "./tx.js";
import { ms, ts, toToken, toUser } from "./rows.js";
import { outcomeRows } from "../reports.js";

type Db = Pick<pg.PoolClient, "query">;

async function audit(c: Db, a: AuditEntry): Promise<void> {
  await c.query("INSERT INTO audit_log (workspace_id, actor, action, target_type, target_id, details, at) VALUES ($1, $2, $3, $4, $5, $6, $7)", [
    a.workspace_id,
    a.actor,
    a.action,
    a.target_type,
    a.target_id,
    JSON.stringify(a.details),
    ts(a.at),
  ]);
}

async function insertUserRow(c: Db, u: User): Promise<void> {
  await c.query("INSERT INTO users (id, workspace_id, name, role, instance_admin, created_at) VALUES ($1, $2, $3, $4, $5, $6)", [
    u.id,
    u.workspace_id,
    u.name,
    u.role,
    u.instance_admin,
    ts(u.created_at),
  ]);
}

async function insertTokenRow(c: Db, t: TokenRow & { hash: string }): Promise<void> {
  await c.query("INSERT INTO tokens (id, workspace_id, user_id, hash, created_at) VALUES ($1, $2, $3, $4, $5)", [
    t.id,
    t.workspace_id,
    t.user_id,
    t.hash,
    ts(t.created_at),
  ]);
}

export function createWorkspace(pool: pg.Pool, w: Workspace, admin: User, token: TokenRow & { hash: string }, a: AuditEntry): Promise<void> {
  return tx(pool, async (c) => {
    await c.query("INSERT INTO workspaces (id, name, created_at) VALUES ($1, $2, $3)", [w.id, w.name, ts(w.created_at)]);
    await insertUserRow(c, admin);
    await insertTokenRow(c, token);
    await audit(c, a);
  });
}

export async function getWorkspace(pool: pg.Pool, id: string): Promise<Workspace | null> {
  const r = (await pool.query("SELECT * FROM workspaces WHERE id = $1", [id])).rows[0];
  return r ? { id: r.id, name: r.name, created_at: r.created_at.getTime() } : null;
}

export function insertUser(pool: pg.Pool, u: User, a: AuditEntry): Promise<void> {
  return tx(pool, async (c) => {
    await insertUserRow(c, u);
    await audit(c, a);
  });
}

export async function getUser(pool: pg.Pool, workspaceId: string, id: string): Promise<User | null> {
  const r = (await pool.query("SELECT * FROM users WHERE id = $1 AND workspace_id = $2", [id, workspaceId])).rows[0];
  return r ? toUser(r) : null;
}

export async function listUsers(pool: pg.Pool, workspaceId: string): Promise<User[]> {
  return (await pool.query("SELECT * FROM users WHERE workspace_id = $1 ORDER BY created_at, id", [workspaceId])).rows.map(toUser);
}

export function updateUser(
  pool: pg.Pool,
  workspaceId: string,
  id: string,
  patch: { role?: Role; disabled_at?: number | null },
  a: AuditEntry,
): Promise<User | "last_admin" | null> {
  return tx(pool, async (c) => {
    // Lock the workspace's admins (and the user) so two admins cannot demote each other at once.
    const admins = (
      await c.query("SELECT * FROM users WHERE workspace_id = $1 AND (id = $2 OR role = 'admin') ORDER BY id FOR UPDATE", [workspaceId, id])
    ).rows.map(toUser);
    const before = admins.find((u) => u.id === id);
    if (!before) return null;
    const after: User = {
      ...before,
      ...(patch.role !== undefined ? { role: patch.role } : {}),
      ...(patch.disabled_at !== undefined ? { disabled_at: patch.disabled_at } : {}),
    };
    if (isEnabledAdmin(before) && !isEnabledAdmin(after) && !admins.some((u) => u.id !== id && isEnabledAdmin(u))) return "last_admin";
    await c.query("UPDATE users SET role = $3, disabled_at = $4 WHERE id = $1 AND workspace_id = $2", [
      id,
      workspaceId,
      after.role,
      after.disabled_at == null ? null : ts(after.disabled_at),
    ]);
    await audit(c, a);
    return after;
  });
}

export function insertToken(pool: pg.Pool, t: TokenRow & { hash: string }, a: AuditEntry): Promise<void> {
  return tx(pool, async (c) => {
    await insertTokenRow(c, t);
    await audit(c, a);
  });
}

export async function tokenByHash(pool: pg.Pool, hash: string): Promise<{ token: TokenRow; user: User } | null> {
  const res = await pool.query({
    name: "weft_token_by_hash",
    text: `SELECT t.id AS t_id, t.workspace_id AS t_ws, t.user_id AS t_user, t.created_at AS t_created, t.revoked_at AS t_revoked, u.*
           FROM tokens t JOIN users u ON u.id = t.user_id WHERE t.hash = $1 AND t.revoked_at IS NULL`,
    values: [hash],
  });
  const r = res.rows[0];
  if (!r) return null;
  return {
    token: { id: r.t_id, workspace_id: r.t_ws, user_id: r.t_user, created_at: r.t_created.getTime(), revoked_at: null },
    user: toUser(r),
  };
}

export async function listTokens(pool: pg.Pool, workspaceId: string): Promise<TokenRow[]> {
  return (await pool.query("SELECT * FROM tokens WHERE workspace_id = $1 ORDER BY created_at, id", [workspaceId])).rows.map(toToken);
}

export function revokeToken(pool: pg.Pool, workspaceId: string, id: string, now: number, a: AuditEntry): Promise<boolean> {
  return tx(pool, async (c) => {
    const res = await c.query("UPDATE tokens SET revoked_at = $3 WHERE id = $1 AND workspace_id = $2 AND revoked_at IS NULL", [id, workspaceId, ts(now)]);
    if (res.rowCount !== 1) return false;
    await audit(c, a);
    return true;
  });
}

export function putSecret(pool: pg.Pool, workspaceId: string, name: string, ciphertext: string, now: number, a: AuditEntry): Promise<boolean> {
  return tx(pool, async (c) => {
    const res = await c.query(
      `INSERT INTO secrets (workspace_id, name, ciphertext, created_at, updated_at) VALUES ($1, $2, $3, $4, $4)
       ON CONFLICT (workspace_id, name) DO UPDATE SET ciphertext = EXCLUDED.ciphertext, updated_at = EXCLUDED.updated_at
       RETURNING (xmax = 0) AS created`,
      [workspaceId, name, ciphertext, ts(now)],
    );
    const created = res.rows[0].created as boolean;
    await audit(c, { ...a, details: { ...a.details, created } });
    return created;
  });
}

export async function listSecrets(pool: pg.Pool, workspaceId: string): Promise<SecretRow[]> {
  const res = await pool.query({ name: "weft_list_secrets", text: "SELECT * FROM secrets WHERE workspace_id = $1 ORDER BY name", values: [workspaceId] });
  return res.rows.map((r) => ({ name: r.name, ciphertext: r.ciphertext, created_at: r.created_at.getTime(), updated_at: r.updated_at.getTime() }));
}

export function deleteSecret(pool: pg.Pool, workspaceId: string, name: string, a: AuditEntry): Promise<boolean> {
  return tx(pool, async (c) => {
    const res = await c.query("DELETE FROM secrets WHERE workspace_id = $1 AND name = $2", [workspaceId, name]);
    if (res.rowCount !== 1) return false;
    await audit(c, a);
    return true;
  });
}

export async function reportOutcomes(pool: pg.Pool, workspaceId: string, from: number, to: number): Promise<OutcomeRow[]> {
  const runs = await pool.query(
    `SELECT automation_id, status, count(*)::int AS n FROM runs WHERE workspace_id = $1 AND started_at >= $2 AND started_at < $3
     GROUP BY automation_id, status`,
    [workspaceId, ts(from), ts(to)],
  );
  const items = await pool.query(
    `SELECT r.automation_id, i.outcome, count(*)::int AS n FROM run_items i JOIN runs r ON r.id = i.run_id
     WHERE r.workspace_id = $1 AND r.started_at >= $2 AND r.started_at < $3 GROUP BY r.automation_id, i.outcome`,
    [workspaceId, ts(from), ts(to)],
  );
  return outcomeRows(runs.rows, items.rows);
}

export async function opsCounts(pool: pg.Pool, workspaceId: string, now: number, windowMs: number): Promise<OpsCounts> {
  const due = await pool.query(
    `SELECT count(*)::int AS n, min(due_at) AS oldest,
       (SELECT id FROM runs WHERE workspace_id = $1 AND due_at <= $2 ORDER BY due_at LIMIT 1) AS oldest_id
     FROM runs WHERE workspace_id = $1 AND due_at <= $2`,
    [workspaceId, ts(now)],
  );
  const ev = await pool.query("SELECT count(*)::int AS n FROM events WHERE workspace_id = $1 AND dispatched_at IS NULL AND undeliverable_at IS NULL", [
    workspaceId,
  ]);
  const failed = await pool.query(
    `SELECT automation_id, count(*)::int AS w, count(*) FILTER (WHERE completed_at >= $4)::int AS h FROM runs
     WHERE workspace_id = $1 AND completed_at >= $2 AND completed_at <= $3 AND status = 'failed' GROUP BY automation_id ORDER BY automation_id`,
    [workspaceId, ts(now - windowMs), ts(now), ts(now - 3_600_000)],
  );
  const d = due.rows[0];
  return {
    due_runs: d.n,
    undispatched_events: ev.rows[0].n,
    oldest_due_at: ms(d.oldest),
    oldest_due_run_id: d.oldest_id ?? null,
    failed: failed.rows.map((r) => ({ automation_id: r.automation_id, window: r.w, last_hour: r.h })),
  };
}

export async function queueDepth(
  pool: pg.Pool,
  now: number,
  graceMs: number,
): Promise<{ due_runs: number; overdue_runs: number; undispatched_events: number }> {
  const r = (
    await pool.query({
      name: "weft_queue_depth",
      text: `SELECT (SELECT count(*)::int FROM runs WHERE due_at <= $1) AS due,
                  (SELECT count(*)::int FROM runs WHERE due_at < $2 AND status <> 'running') AS overdue,
                  (SELECT count(*)::int FROM events WHERE dispatched_at IS NULL AND undeliverable_at IS NULL) AS undispatched`,
      values: [ts(now), ts(now - graceMs)],
    })
  ).rows[0];
  return { due_runs: r.due, overdue_runs: r.overdue, undispatched_events: r.undispatched };
}
