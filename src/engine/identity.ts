// Who is calling: workspaces, users with roles, API tokens (random, shown once, stored as SHA-256),
// and the rules every route applies: a caller sees only its own workspace; a run that executes as
// a specific user is visible to that user and to admins only; viewers read, members act, admins
// also manage users, tokens and secrets; only an instance admin creates workspaces.

import { createHash, randomBytes } from "node:crypto";
import { WeftError } from "../model/errors.js";
import type { Role, Run, User } from "./store.js";

export interface Caller {
  workspace_id: string;
  user_id: string;
  role: Role;
  instance_admin: boolean;
  token_id: string;
  /** How the audit log names the caller. */
  actor: string;
}

/** A new API token: 192 random bits; only its SHA-256 is stored (no slow hash needed for random secrets). */
export function newToken(): string {
  return `wft_${randomBytes(24).toString("base64url")}`;
}

export function hashToken(token: string): string {
  return createHash("sha256").update(token).digest("hex");
}

export function callerOf(user: User, tokenId: string): Caller {
  return {
    workspace_id: user.workspace_id,
    user_id: user.id,
    role: user.role,
    instance_admin: user.instance_admin,
    token_id: tokenId,
    actor: `user:${user.id}`,
  };
}

const RANK: Record<Role, number> = { viewer: 0, member: 1, admin: 2 };

/** Throws `auth.forbidden` unless the caller's role is at least `role`. */
export function requireRole(c: Caller, role: Role): void {
  if (RANK[c.role] < RANK[role])
    throw new WeftError("auth.forbidden", `this needs the ${role} role; the caller is ${c.role}`, { required: role, role: c.role });
}

/**
 * The least a route asks of its caller: a workspace role, or `instance_admin` (the instance's own
 * administrator, who alone creates workspaces and reads every workspace's metrics). Each route
 * declares one; the API's request hook enforces it with `requireRouteRole`, and the generated role
 * matrix (docs/roles.md) is computed with `hasRouteRole`, so the two cannot disagree.
 */
export type RouteRole = Role | "instance_admin";

export const ROUTE_ROLES: readonly RouteRole[] = ["viewer", "member", "admin", "instance_admin"];

export function hasRouteRole(c: Pick<Caller, "role" | "instance_admin">, need: RouteRole): boolean {
  return need === "instance_admin" ? c.instance_admin : RANK[c.role] >= RANK[need];
}

/** Throws `auth.forbidden` (403) unless the caller has at least what the route declares. */
export function requireRouteRole(c: Caller, need: RouteRole): void {
  if (need === "instance_admin") {
    if (!c.instance_admin)
      throw new WeftError("auth.forbidden", `this needs an instance admin; the caller is a workspace ${c.role}`, { required: need, role: c.role });
    return;
  }
  requireRole(c, need);
}

/**
 * Who may make a run execute as `userId`: an admin as anyone in the workspace, anyone else only as
 * themselves. Applies alike to defining an automation's `run_as` and to starting a run of one
 * (enroll, retrigger), so nobody borrows an identity they could not have chosen.
 */
export function mayChooseRunAs(c: Caller, userId: string): boolean {
  return userId === c.user_id || c.role === "admin";
}

/** The run-as a definition names, when it is a specific user. */
export function runAsUser(definition: { run_as?: unknown } | null | undefined): string | null {
  const runAs = definition?.run_as as { type?: unknown; user_id?: unknown } | undefined;
  return runAs?.type === "user" && typeof runAs.user_id === "string" ? runAs.user_id : null;
}

/** Throws `auth.run_as_forbidden` (403) when the caller could not have chosen this run-as. */
export function requireRunAs(c: Caller, userId: string | null): void {
  if (userId === null || mayChooseRunAs(c, userId)) return;
  throw new WeftError("auth.run_as_forbidden", `this automation runs as user ${userId}; only that user or an admin may start its runs`, {
    run_as_user_id: userId,
  });
}

/** A run that executes as a specific user is that user's and the admins' to see. */
export function canSee(c: Caller, run: Pick<Run, "run_as">): boolean {
  return run.run_as.type !== "user" || run.run_as.user_id === c.user_id || c.role === "admin";
}

/** Approvers: `role:<role>` (that role or higher) or `user:<id>`; an empty list means any member. */
export function mayDecide(c: Caller, approvers: readonly string[]): boolean {
  if (RANK[c.role] < RANK.member) return false;
  if (approvers.length === 0) return true;
  return approvers.some((a) => {
    if (a.startsWith("user:")) return a.slice(5) === c.user_id;
    if (a.startsWith("role:")) {
      const r = a.slice(5) as Role;
      return r in RANK && RANK[c.role] >= RANK[r];
    }
    return false;
  });
}
