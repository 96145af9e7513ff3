// Workspaces, users, tokens, secrets and reports: the administrative side of the engine. Every
// mutation is written with its audit entry in one transaction (the store does both).

import { WeftError } from "../model/errors.js";
import type { Clock } from "./clock.js";
import { callerOf, hashToken, newToken, requireRole, type Caller } from "./identity.js";
import { newId } from "./ids.js";
import { MIN_SECRET_LENGTH, openSecret, sealSecret, type SecretBox } from "./secrets.js";
import type { AuditEntry, OutcomeRow, OverdueCount, Role, SecretRow, Store, TokenRow, User, Workspace } from "./store.js";

export const DEFAULT_WORKSPACE = "wsp_default";
export const BOOTSTRAP_ADMIN = "usr_admin";
const SECRET_NAME = /^[A-Za-z_][A-Za-z0-9_]{0,63}$/;
/** Tokens are looked up at most this often per process; a revocation takes effect within it. */
const TOKEN_CACHE_MS = 1000;
const SECRETS_CACHE_MS = 5000;
/** Active (not revoked) tokens one user may hold: each token has its own rate limit. */
export const MAX_TOKENS_PER_USER = 20;
/** `WEFT_ADMIN_TOKEN` is an instance admin's credential: at least this long (a generated one has 32). */
export const MIN_ADMIN_TOKEN_LENGTH = 32;

/** A unique-key violation from either store (SQLite or PostgreSQL). */
function isUniqueViolation(err: unknown): boolean {
  const code = (err as { code?: unknown } | null)?.code;
  return code === "SQLITE_CONSTRAINT_UNIQUE" || code === "23505";
}

export interface OpsOverview {
  overdue_runs: number;
  overdue_schedules: number;
  queue_depth: { due_runs: number; undispatched_events: number };
  oldest_due_run: { id: string; due_at: number } | null;
  window_ms: number;
  failed_runs: { automation_id: string; in_window: number; last_hour: number; spike: boolean }[];
}

export class Admin {
  private readonly tokens = new Map<string, { caller: Caller | null; at: number }>();
  private readonly secretCache = new Map<string, { at: number; values: Promise<ReadonlyMap<string, string>> }>();

  constructor(
    private readonly store: Store,
    private readonly clock: Clock,
    private readonly box: SecretBox | null,
  ) {}

  private audit(
    c: Caller | string,
    workspaceId: string,
    action: string,
    targetType: string,
    targetId: string,
    details: Record<string, unknown> = {},
  ): AuditEntry {
    return {
      workspace_id: workspaceId,
      actor: typeof c === "string" ? c : c.actor,
      action,
      target_type: targetType,
      target_id: targetId,
      details,
      at: this.clock.now(),
    };
  }

  // ---------- tokens and callers ----------

  /** The caller a bearer token stands for, or null (unknown or revoked). */
  async authenticate(token: string): Promise<Caller | null> {
    const hash = hashToken(token);
    const now = this.clock.now();
    const hit = this.tokens.get(hash);
    if (hit && now - hit.at < TOKEN_CACHE_MS) return hit.caller;
    const found = await this.store.tokenByHash(hash);
    // A disabled user's tokens stop working with the user (within this cache's second).
    const caller = found && !found.user.disabled_at ? callerOf(found.user, found.token.id) : null;
    if (this.tokens.size > 10_000) this.tokens.clear();
    this.tokens.set(hash, { caller, at: now });
    return caller;
  }

  /**
   * The default workspace, its admin (an instance admin) and a token. With `adminToken` (from
   * configuration) that token is made valid; without, a token is generated on the first start
   * only and returned so it can be printed once (later starts return null: it is stored hashed).
   * A configured token that was revoked stays revoked: it is not made valid again and the start
   * goes on without it (`revoked: true`, for the caller to say so).
   */
  async bootstrap(adminToken: string | undefined): Promise<{ token: string | null; generated: boolean; revoked?: boolean }> {
    const now = this.clock.now();
    await this.store.ensureWorkspace(DEFAULT_WORKSPACE, "Default workspace", now);
    if (!(await this.store.getUser(DEFAULT_WORKSPACE, BOOTSTRAP_ADMIN))) {
      const u: User = { id: BOOTSTRAP_ADMIN, workspace_id: DEFAULT_WORKSPACE, name: "admin", role: "admin", instance_admin: true, created_at: now };
      await this.store
        .insertUser(u, this.audit("system", DEFAULT_WORKSPACE, "user.create", "user", u.id, { role: "admin", bootstrap: true }))
        .catch(async (err) => {
          if (!(await this.store.getUser(DEFAULT_WORKSPACE, BOOTSTRAP_ADMIN))) throw err; // another process made it first
        });
    }
    if (adminToken) {
      if (await this.store.tokenByHash(hashToken(adminToken))) return { token: adminToken, generated: false };
      let revoked = false;
      await this.insertToken(DEFAULT_WORKSPACE, BOOTSTRAP_ADMIN, adminToken, "system", { source: "WEFT_ADMIN_TOKEN" }).catch(async (err) => {
        if (await this.store.tokenByHash(hashToken(adminToken))) return; // another process made it first
        // Its hash is taken but no live token has it: the token was revoked.
        if (!isUniqueViolation(err)) throw err;
        revoked = true;
      });
      return revoked ? { token: null, generated: false, revoked: true } : { token: adminToken, generated: false };
    }
    const live = (await this.store.listTokens(DEFAULT_WORKSPACE)).filter((t) => t.revoked_at === null);
    if (live.length > 0) return { token: null, generated: false };
    const token = newToken();
    await this.insertToken(DEFAULT_WORKSPACE, BOOTSTRAP_ADMIN, token, "system", { bootstrap: true });
    return { token, generated: true };
  }

  /** A fresh admin token for the default workspace (the `weft admin-token` command: local access is trusted). */
  async issueBootstrapToken(): Promise<{ id: string; token: string }> {
    await this.bootstrap(undefined);
    const token = newToken();
    const id = await this.insertToken(DEFAULT_WORKSPACE, BOOTSTRAP_ADMIN, token, "cli", { via: "weft admin-token" });
    return { id, token };
  }

  private async insertToken(workspaceId: string, userId: string, token: string, actor: Caller | string, details: Record<string, unknown>): Promise<string> {
    const now = this.clock.now();
    const row: TokenRow & { hash: string } = {
      id: newId("tok", now),
      workspace_id: workspaceId,
      user_id: userId,
      created_at: now,
      revoked_at: null,
      hash: hashToken(token),
    };
    await this.store.insertToken(row, this.audit(actor, workspaceId, "token.issue", "token", row.id, { user_id: userId, ...details }));
    return row.id;
  }

  // ---------- workspaces, users, tokens ----------

  async createWorkspace(c: Caller, name: string): Promise<{ workspace: Workspace; admin_user_id: string; admin_token: string }> {
    if (!c.instance_admin) throw new WeftError("auth.forbidden", "only an instance admin creates workspaces");
    const now = this.clock.now();
    const w: Workspace = { id: newId("wsp", now), name, created_at: now };
    const admin: User = { id: newId("usr", now), workspace_id: w.id, name: "admin", role: "admin", instance_admin: false, created_at: now };
    const token = newToken();
    const tok = { id: newId("tok", now), workspace_id: w.id, user_id: admin.id, created_at: now, revoked_at: null, hash: hashToken(token) };
    await this.store.createWorkspace(w, admin, tok, this.audit(c, w.id, "workspace.create", "workspace", w.id, { name, by_workspace: c.workspace_id }));
    return { workspace: w, admin_user_id: admin.id, admin_token: token };
  }

  async createUser(c: Caller, name: string, role: Role): Promise<User> {
    requireRole(c, "admin");
    const now = this.clock.now();
    const u: User = { id: newId("usr", now), workspace_id: c.workspace_id, name, role, instance_admin: false, created_at: now };
    await this.store.insertUser(u, this.audit(c, c.workspace_id, "user.create", "user", u.id, { name, role }));
    return u;
  }

  /**
   * Change a user's role or disable/enable them (admins). Their existing tokens follow at once in
   * this process and within the token cache's second elsewhere. The last enabled admin of a
   * workspace can be neither demoted nor disabled (409 `users.last_admin`).
   */
  async updateUser(c: Caller, id: string, patch: { role?: Role; disabled?: boolean }): Promise<User> {
    requireRole(c, "admin");
    // The instance admin's power reaches beyond this workspace: a workspace admin cannot take it away.
    const target = await this.store.getUser(c.workspace_id, id);
    if (target?.instance_admin && !c.instance_admin) throw new WeftError("auth.forbidden", "only an instance admin changes an instance admin");
    const now = this.clock.now();
    const change: { role?: Role; disabled_at?: number | null } = {};
    if (patch.role !== undefined) change.role = patch.role;
    if (patch.disabled !== undefined) change.disabled_at = patch.disabled ? now : null;
    const res = await this.store.updateUser(c.workspace_id, id, change, this.audit(c, c.workspace_id, "user.update", "user", id, { ...patch }));
    if (res === null) throw new WeftError("user.not_found", `user ${id} not found`);
    if (res === "last_admin")
      throw new WeftError("users.last_admin", "this would leave the workspace without an enabled admin", { pointer: patch.disabled ? "/disabled" : "/role" });
    this.tokens.clear();
    return res;
  }

  async listUsers(c: Caller): Promise<User[]> {
    requireRole(c, "admin");
    return this.store.listUsers(c.workspace_id);
  }

  /** Issue a token for a user of the caller's workspace (admins for anyone, others for themselves); shown once. */
  async issueToken(c: Caller, userId: string): Promise<{ id: string; token: string; user_id: string }> {
    if (userId !== c.user_id) requireRole(c, "admin");
    if (!(await this.store.getUser(c.workspace_id, userId))) throw new WeftError("user.not_found", `user ${userId} not found`, { pointer: "/user_id" });
    const active = (await this.store.listTokens(c.workspace_id)).filter((t) => t.user_id === userId && t.revoked_at === null).length;
    if (active >= MAX_TOKENS_PER_USER) {
      throw new WeftError("tokens.limit", `user ${userId} already has ${MAX_TOKENS_PER_USER} active tokens; revoke one first`, {
        pointer: "/user_id",
        limit: MAX_TOKENS_PER_USER,
      });
    }
    const token = newToken();
    const id = await this.insertToken(c.workspace_id, userId, token, c, {});
    return { id, token, user_id: userId };
  }

  async listTokens(c: Caller): Promise<TokenRow[]> {
    requireRole(c, "admin");
    return this.store.listTokens(c.workspace_id);
  }

  async revokeToken(c: Caller, id: string): Promise<void> {
    const mine = (await this.store.listTokens(c.workspace_id)).find((t) => t.id === id);
    if (!mine) throw new WeftError("token.not_found", `token ${id} not found`);
    if (mine.user_id !== c.user_id) requireRole(c, "admin");
    if (
      !(await this.store.revokeToken(
        c.workspace_id,
        id,
        this.clock.now(),
        this.audit(c, c.workspace_id, "token.revoke", "token", id, { user_id: mine.user_id }),
      ))
    ) {
      throw new WeftError("token.not_found", `token ${id} is already revoked`);
    }
    this.tokens.clear();
  }

  // ---------- secrets ----------

  async putSecret(c: Caller, name: string, value: string): Promise<{ name: string; created: boolean }> {
    requireRole(c, "admin");
    if (!SECRET_NAME.test(name))
      throw new WeftError("secrets.bad_name", "a secret name is a letter or _ then up to 63 of [A-Za-z0-9_]", { pointer: "/name", in: "path" });
    if (value.length < MIN_SECRET_LENGTH)
      throw new WeftError("secrets.too_short", `a secret value has at least ${MIN_SECRET_LENGTH} characters (shorter ones cannot be redacted safely)`, {
        pointer: "/value",
      });
    const sealed = sealSecret(this.box, value, `${c.workspace_id}/${name}`);
    const created = await this.store.putSecret(c.workspace_id, name, sealed, this.clock.now(), this.audit(c, c.workspace_id, "secret.put", "secret", name));
    this.secretCache.delete(c.workspace_id);
    return { name, created };
  }

  async deleteSecret(c: Caller, name: string): Promise<void> {
    requireRole(c, "admin");
    if (!(await this.store.deleteSecret(c.workspace_id, name, this.audit(c, c.workspace_id, "secret.delete", "secret", name)))) {
      throw new WeftError("secret.not_found", `secret ${name} not found`);
    }
    this.secretCache.delete(c.workspace_id);
  }

  /** Names and times only: values are never returned. */
  async listSecrets(c: Caller): Promise<Omit<SecretRow, "ciphertext">[]> {
    requireRole(c, "admin");
    return (await this.store.listSecrets(c.workspace_id)).map(({ ciphertext: _c, ...rest }) => rest);
  }

  /** Decrypted values for the runner (cached briefly; a put or delete in this process refreshes them). */
  secretsOf(workspaceId: string): Promise<ReadonlyMap<string, string>> {
    const now = this.clock.now();
    const hit = this.secretCache.get(workspaceId);
    if (hit && now - hit.at < SECRETS_CACHE_MS) return hit.values;
    const values = this.store.listSecrets(workspaceId).then((rows) => {
      if (rows.length === 0) return new Map<string, string>();
      return new Map(rows.map((r) => [r.name, openSecret(this.box, r.ciphertext, `${workspaceId}/${r.name}`)]));
    });
    values.catch(() => this.secretCache.delete(workspaceId));
    this.secretCache.set(workspaceId, { at: now, values });
    return values;
  }

  // ---------- reports ----------

  reportOutcomes(c: Caller, from: number, to: number): Promise<OutcomeRow[]> {
    if (!(from < to)) throw new WeftError("request.invalid", "`from` must be before `to`", { pointer: "/from", in: "query" });
    return this.store.reportOutcomes(c.workspace_id, from, to);
  }

  /** A failure spike: at least 5 failed runs in the last hour and over 3× the window's hourly average. */
  async opsOverview(c: Caller, overdue: OverdueCount[], windowMs: number): Promise<OpsOverview> {
    const now = this.clock.now();
    const counts = await this.store.opsCounts(c.workspace_id, now, windowMs);
    const hours = Math.max(1, windowMs / 3_600_000);
    return {
      overdue_runs: overdue.reduce((n, r) => n + r.runs, 0),
      overdue_schedules: overdue.reduce((n, r) => n + r.schedules, 0),
      queue_depth: { due_runs: counts.due_runs, undispatched_events: counts.undispatched_events },
      oldest_due_run: counts.oldest_due_run_id && counts.oldest_due_at !== null ? { id: counts.oldest_due_run_id, due_at: counts.oldest_due_at } : null,
      window_ms: windowMs,
      failed_runs: counts.failed.map((f) => ({
        automation_id: f.automation_id,
        in_window: f.window,
        last_hour: f.last_hour,
        spike: f.last_hour >= 5 && f.last_hour > 3 * (f.window / hours),
      })),
    };
  }
}
