// Shared limits: /v1/limits. A shared limit is a named concurrency limit with its own key template
// that any automation or node of the workspace counts against by naming it in `limits`. Reading
// takes the role that reads runs; creating, changing and deleting the role that edits automations.
// Every change is audit-logged with the change itself.

import { z } from "zod";
import type { FastifyInstance, FastifyRequest } from "fastify";
import type { Engine } from "../engine/engine.js";
import type { FlowKeyStats, SharedLimit } from "../engine/store.js";
import { WeftError, type Problem } from "../model/errors.js";
import { checkTemplates } from "../model/expressions.js";
import { SHARED_LIMIT_NAME, unknownLimitProblems } from "../model/flow.js";
import { parse } from "./schemas.js";
import { flowRuleLabel } from "./metrics.js";

const keyField = z.string().min(1).max(500);
const limitField = z.number().int().min(1).max(100_000);

export const createLimitBody = z.strictObject({
  name: z.string().regex(SHARED_LIMIT_NAME, "a shared limit's name is lower-case letters, digits, _ . : - (up to 100)"),
  key: keyField,
  limit: limitField,
});
export const patchLimitBody = z.strictObject({ key: keyField.optional(), limit: limitField.optional() });

/** A shared limit as the routes answer it. */
export const limitShape = z.object({
  name: z.string(),
  key: z.string(),
  limit: z.number().int(),
  held: z.number().int(),
  waiting: z.number().int(),
  keys: z.array(z.object({ key: z.string(), held: z.number().int(), waiting: z.number().int() })),
  created_at: z.string(),
  updated_at: z.string(),
});

export const limitListShape = z.object({
  items: z.array(limitShape),
  busiest_keys: z.array(z.object({ limit: z.string(), key: z.string(), held: z.number().int(), waiting: z.number().int() })),
});

/** The keys the listing shows per limit (busiest first). */
const KEYS_SHOWN = 20;

function checkKey(key: string, pointer: string): void {
  const out: Problem[] = [];
  checkTemplates(key, pointer, out);
  const p = out[0];
  if (p) throw new WeftError(p.code, `body ${p.pointer}: ${p.message}`, { pointer: p.pointer, in: "body" });
}

function view(l: SharedLimit, stats: readonly FlowKeyStats[]) {
  const keys = stats.filter((s) => s.scope === `l:${l.name}`).slice(0, KEYS_SHOWN);
  return {
    name: l.name,
    key: l.key,
    limit: l.limit,
    held: keys.reduce((n, k) => n + k.held, 0),
    waiting: keys.reduce((n, k) => n + k.waiting, 0),
    keys: keys.map((k) => ({ key: k.key, held: k.held, waiting: k.waiting })),
    created_at: new Date(l.created_at).toISOString(),
    updated_at: new Date(l.updated_at).toISOString(),
  };
}

/** A definition naming a shared limit the workspace lacks is refused, at the first such name's pointer. */
export async function checkSharedLimitNames(engine: Engine, workspaceId: string, definition: Record<string, unknown>): Promise<void> {
  // Asked with no names known first: a definition naming none costs no read.
  if (unknownLimitProblems(definition, new Set()).length === 0) return;
  const known = new Set((await engine.store.getSharedLimits(workspaceId)).map((l) => l.name));
  const problems = unknownLimitProblems(definition, known);
  const p = problems[0];
  if (p) throw new WeftError(p.code, p.message, { pointer: p.pointer, errors: problems });
}

export function registerLimits(v1: FastifyInstance, engine: Engine): void {
  const audit = (req: FastifyRequest, action: string, name: string, details: Record<string, unknown>) => ({
    workspace_id: req.caller.workspace_id,
    actor: req.caller.actor,
    action,
    target_type: "limit",
    target_id: name,
    details,
    at: engine.clock.now(),
  });
  const one = async (ws: string, name: string) => {
    const [l] = await engine.store.getSharedLimits(ws, [name]);
    if (!l) throw new WeftError("limit.not_found", `no shared limit named "${name}"`, { pointer: "/name", in: "path" });
    return l;
  };
  const stats = (ws: string) => engine.store.flowStats(ws, engine.clock.now(), 1000);

  v1.get("/limits", { config: { role: "viewer" } }, async (req) => {
    const [limits, s] = await Promise.all([engine.store.getSharedLimits(req.caller.workspace_id), stats(req.caller.workspace_id)]);
    const items = limits.map((l) => view(l, s));
    items.sort((a, b) => b.held + b.waiting - (a.held + a.waiting) || (a.name < b.name ? -1 : 1));
    // Every rule's keys, shared or declared in a definition (flowStats answers busiest first): the ops view's table.
    const busiest_keys = s.slice(0, KEYS_SHOWN).map((k) => ({ limit: flowRuleLabel(k.scope), key: k.key, held: k.held, waiting: k.waiting }));
    return { items, busiest_keys };
  });
  v1.get<{ Params: { name: string } }>("/limits/:name", { config: { role: "viewer" } }, async (req) => {
    const l = await one(req.caller.workspace_id, req.params.name);
    return view(l, await stats(req.caller.workspace_id));
  });
  v1.post("/limits", { config: { role: "member" } }, async (req, reply) => {
    const b = parse(createLimitBody, req.body, "body");
    checkKey(b.key, "/key");
    const now = engine.clock.now();
    const l: SharedLimit = { workspace_id: req.caller.workspace_id, name: b.name, key: b.key, limit: b.limit, created_at: now, updated_at: now };
    if (!(await engine.store.putSharedLimit(l, audit(req, "limit.create", b.name, { key: b.key, limit: b.limit }), true))) {
      throw new WeftError("limit.key_taken", `a shared limit named "${b.name}" exists`, { pointer: "/name", in: "body" });
    }
    return reply.status(201).send(view(l, []));
  });
  v1.patch<{ Params: { name: string } }>("/limits/:name", { config: { role: "member" } }, async (req) => {
    const b = parse(patchLimitBody, req.body, "body");
    if (b.key !== undefined) checkKey(b.key, "/key");
    const cur = await one(req.caller.workspace_id, req.params.name);
    const next: SharedLimit = { ...cur, key: b.key ?? cur.key, limit: b.limit ?? cur.limit, updated_at: engine.clock.now() };
    const changed = { ...(b.key !== undefined ? { key: b.key } : {}), ...(b.limit !== undefined ? { limit: b.limit } : {}) };
    if (!(await engine.store.putSharedLimit(next, audit(req, "limit.update", cur.name, changed), false))) await one(req.caller.workspace_id, req.params.name);
    const s = await stats(req.caller.workspace_id);
    // A raised limit lets its waiters through now, not at their next check.
    const waiting = s.filter((k) => k.scope === `l:${next.name}` && k.waiting > 0).map((k) => ({ scope: k.scope, key: k.key, limit: next.limit }));
    if (waiting.length > 0) await engine.store.wakeFlowWaiters(req.caller.workspace_id, waiting, engine.clock.now());
    return view(next, s);
  });
  v1.delete<{ Params: { name: string } }>("/limits/:name", { config: { role: "member" } }, async (req, reply) => {
    if (!(await engine.store.deleteSharedLimit(req.caller.workspace_id, req.params.name, audit(req, "limit.delete", req.params.name, {})))) {
      await one(req.caller.workspace_id, req.params.name);
    }
    return reply.status(204).send();
  });
}
