// GET and PATCH /v1/workspace/settings: any member reads the workspace's settings (with the
// instance's ceilings, so a client can tell what it may ask for); only an admin changes them.

import { z } from "zod";
import type { FastifyInstance } from "fastify";
import type { Engine } from "../engine/engine.js";
import { readSettings, updateSettings } from "../engine/workspace-settings.js";
import { BUDGET_CEILING, type WorkspaceSettings } from "../model/workspace-settings.js";

const budgetShape = z.object({
  max_iterations: z.number().int(),
  max_elements: z.number().int(),
  max_string_chars: z.number().int(),
  max_ms: z.number().int(),
});

/** The response of both routes: the settings in force, and the ceilings of this instance. */
export const settingsShape = z.object({
  strict_definitions: z.boolean(),
  expression_budget: budgetShape,
  ceilings: z.object({ expression_budget: budgetShape }),
});

/** The PATCH body (for the OpenAPI document; the rules, with every problem's pointer, are applySettingsPatch's). */
export const settingsPatchBody = z.strictObject({
  strict_definitions: z.boolean().optional(),
  expression_budget: z
    .strictObject({
      max_iterations: z.number().int().min(1).max(BUDGET_CEILING.max_iterations).optional(),
      max_elements: z.number().int().min(1).max(BUDGET_CEILING.max_elements).optional(),
      max_string_chars: z.number().int().min(1).max(BUDGET_CEILING.max_string_chars).optional(),
      max_ms: z.number().int().min(1).max(BUDGET_CEILING.max_ms).optional(),
    })
    .optional(),
});

const view = (s: WorkspaceSettings) => ({ ...s, ceilings: { expression_budget: { ...BUDGET_CEILING } } });

export function registerWorkspaceSettings(v1: FastifyInstance, engine: Engine): void {
  v1.get("/workspace/settings", { config: { role: "viewer" } }, async (req) => view(await readSettings(engine.store, req.caller.workspace_id)));
  v1.patch("/workspace/settings", { config: { role: "admin" } }, async (req) => {
    return view(await updateSettings(engine.store, req.caller.workspace_id, req.body ?? {}, req.caller.actor, engine.clock.now()));
  });
}
