// Simulation as the engine offers it: the automation's current version, walked with a test
// context (the walk itself is in simulate.ts). Nothing is written, sent or enqueued.

import { WeftError } from "../model/errors.js";
import { mustGetAutomation } from "./automations.js";
import type { EngineCore } from "./core.js";
import { ErrorCodes } from "./errors.js";
import { simulate, type SimulateRequest, type Transcript } from "./simulate.js";
import { workspaceBudget } from "./workspace-settings.js";

export async function simulateCurrent(core: EngineCore, workspaceId: string, automationId: string, req: SimulateRequest): Promise<Transcript> {
  const a = await mustGetAutomation(core, workspaceId, automationId);
  const v = await core.store.getVersion(a.id, a.current_version);
  if (!v) throw new WeftError(ErrorCodes.versionNotFound, `version ${a.current_version} not found`);
  const secretNames = (await core.store.listSecrets(workspaceId)).map((x) => x.name);
  return simulate(v.definition, req, {
    actions: core.actions,
    now: core.clock.now(),
    workspace_id: workspaceId,
    automation_id: a.id,
    version: v.version,
    settings: core.settings,
    secretNames,
    budget: await workspaceBudget(core.store, workspaceId),
    sharedLimits: v.definition.limits || v.definition.nodes.some((n) => n.limits) ? await core.store.getSharedLimits(workspaceId) : [],
  });
}
