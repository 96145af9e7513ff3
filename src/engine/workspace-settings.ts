// A workspace's settings as the engine uses them: read (defaults filled in), changed by an admin
// (validated, audited as `workspace.settings`), and the expression budget every evaluation in the
// workspace runs under. The rules themselves are in model/workspace-settings.ts.
//
// The budget is read on every run drive, simulation and dispatch, so it is cached per store for a
// few seconds: a change made through this process applies at once (the cache is dropped), one
// made through another process within BUDGET_CACHE_MS.

import type { Budget } from "../model/cel-budget.js";
import { WeftError } from "../model/errors.js";
import { applySettingsPatch, budgetOf, resolveSettings, type WorkspaceSettings } from "../model/workspace-settings.js";
import type { Store } from "./store.js";

/** How long a workspace's budget is reused before it is read again. */
export const BUDGET_CACHE_MS = 5_000;
const CACHE_MAX = 10_000;

/** Cached as the read in flight, so the many runs a claim starts at once share one read. */
const budgets = new WeakMap<Store, Map<string, { budget: Promise<Budget>; at: number }>>();

/** The workspace's settings, with the defaults for whatever was never set. */
export async function readSettings(store: Store, workspaceId: string): Promise<WorkspaceSettings> {
  return resolveSettings(await store.getWorkspaceSettings(workspaceId));
}

/**
 * The expression budget of `workspaceId`: what the runner, simulation, fan-out lists and the
 * dispatcher's trigger filters evaluate under.
 */
export async function workspaceBudget(store: Store, workspaceId: string): Promise<Budget> {
  let cache = budgets.get(store);
  if (cache === undefined) budgets.set(store, (cache = new Map()));
  const hit = cache.get(workspaceId);
  const now = performance.now();
  if (hit !== undefined && now - hit.at < BUDGET_CACHE_MS) return hit.budget;
  const budget = readSettings(store, workspaceId).then((s) => Object.freeze(budgetOf(s)));
  if (cache.size >= CACHE_MAX) cache.clear();
  const entry = { budget, at: now };
  cache.set(workspaceId, entry);
  // A failed read is not kept: the next caller reads again.
  budget.catch(() => cache.get(workspaceId) === entry && cache.delete(workspaceId));
  return budget;
}

/**
 * Change the settings an admin names (a JSON merge; see applySettingsPatch). Every problem is
 * refused together, as `settings.invalid` with the problems and the first one's pointer; nothing
 * is written then.
 */
export async function updateSettings(store: Store, workspaceId: string, patch: unknown, actor: string, now: number): Promise<WorkspaceSettings> {
  const before = await readSettings(store, workspaceId);
  const res = applySettingsPatch(before, patch);
  if (!res.ok) {
    const first = res.problems[0]!;
    throw new WeftError(res.problems.length === 1 ? first.code : "settings.invalid", `body ${first.pointer || "/"}: ${first.message}`, {
      pointer: first.pointer,
      in: "body",
      problems: res.problems,
    });
  }
  await store.putWorkspaceSettings(workspaceId, res.settings as unknown as Record<string, unknown>, now, {
    workspace_id: workspaceId,
    actor,
    action: "workspace.settings",
    target_type: "workspace",
    target_id: workspaceId,
    details: { before, after: res.settings },
    at: now,
  });
  budgets.get(store)?.delete(workspaceId);
  return res.settings;
}
