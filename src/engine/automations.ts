// Automations and their versions: create, edit (version n+1), read, pause/activate, and keeping
// schedule rows and webhook ingress points in step with the current version and the status.

import { validateDefinition, type Definition } from "../model/definition.js";
import { WeftError, type Problem } from "../model/errors.js";
import { refusedWarnings } from "../model/workspace-settings.js";
import type { EngineCore } from "./core.js";
import { ErrorCodes } from "./errors.js";
import { newId } from "./ids.js";
import { scheduleRows } from "./scheduler.js";
import type { AuditEntry, Automation, AutomationStatus, AutomationVersion, HookRow } from "./store.js";
import { hookInfo, type HookInfo } from "./webhooks.js";
import { readSettings } from "./workspace-settings.js";

export interface AutomationView extends Automation {
  definition: Definition;
  /** The webhook triggers' hooks; `secret` only on a hook the call that returns it has just made. */
  hooks?: (HookInfo & { secret?: string })[];
}

export function validate(core: EngineCore, definition: unknown) {
  return validateDefinition(definition, { customKinds: core.customKinds });
}

/** Valid, and without warnings when the workspace's definitions are strict (`strict_definitions`). */
async function mustValidate(core: EngineCore, workspaceId: string, definition: unknown): Promise<Definition> {
  const res = validate(core, definition);
  if (!res.ok)
    throw new WeftError(ErrorCodes.definitionInvalid, `the definition has ${res.errors.length} error(s)`, { errors: res.errors, warnings: res.warnings });
  await refuseWarningsIfStrict(core, workspaceId, res.warnings);
  return res.definition;
}

async function refuseWarningsIfStrict(core: EngineCore, workspaceId: string, warnings: Problem[]): Promise<void> {
  if (warnings.length === 0) return;
  const refused = refusedWarnings((await readSettings(core.store, workspaceId)).strict_definitions, warnings);
  if (refused.length > 0) {
    throw new WeftError(ErrorCodes.definitionInvalid, `the definition has ${refused.length} warning(s), and this workspace's strict_definitions is on`, {
      errors: refused,
      warnings: [],
      strict: true,
    });
  }
}

/** The audit entry of an automation mutation (who did it, in the caller's words); the store writes it with the change. */
function audit(core: EngineCore, workspaceId: string, actor: string, action: string, id: string, details: Record<string, unknown> = {}): AuditEntry {
  return { workspace_id: workspaceId, actor, action, target_type: "automation", target_id: id, details, at: core.clock.now() };
}

export async function mustGetAutomation(core: EngineCore, workspaceId: string, id: string): Promise<Automation> {
  const a = await core.store.getAutomation(workspaceId, id);
  if (!a) throw new WeftError(ErrorCodes.automationNotFound, `automation ${id} not found`);
  return a;
}

export async function createAutomation(
  core: EngineCore,
  workspaceId: string,
  definition: unknown,
  status: AutomationStatus,
  actor: string,
): Promise<AutomationView> {
  const def = await mustValidate(core, workspaceId, definition);
  requireKeyForNewHooks(core, def, []);
  const now = core.clock.now();
  const a: Automation = {
    id: newId("aut", now),
    workspace_id: workspaceId,
    key: def.key,
    name: def.name,
    status,
    current_version: 1,
    created_at: now,
    updated_at: now,
  };
  await core.store.insertAutomation(
    a,
    { automation_id: a.id, version: 1, definition: def, created_at: now },
    audit(core, workspaceId, actor, "automation.create", a.id, { key: def.key, version: 1, status }),
  );
  const hooks = await syncTriggers(core, a, def);
  return { ...a, definition: def, hooks };
}

const webhookIndexes = (def: Definition): number[] => def.triggers.flatMap((t, i) => (t.type === "webhook" ? [i] : []));

/** A webhook trigger without its hook yet needs the secret key: refused before anything is written. */
function requireKeyForNewHooks(core: EngineCore, def: Definition, existing: readonly HookRow[]): void {
  const missing = webhookIndexes(def).find((i) => !existing.some((h) => h.trigger_index === i));
  if (missing !== undefined) core.hooks.requireKey(`/triggers/${missing}`);
}

/**
 * Schedule rows and webhook ingress points follow the current version and the status. A hook made
 * here carries its secret in the clear in the result: the one response that shows it.
 */
async function syncTriggers(core: EngineCore, a: Automation, def: Definition): Promise<(HookInfo & { secret?: string })[]> {
  const now = core.clock.now();
  await core.store.syncSchedules(a.id, scheduleRows(a.id, a.workspace_id, def, a.status === "active", now));
  const hookIdx = webhookIndexes(def);
  const existing = hookIdx.length > 0 ? await core.store.listHooks(a.id) : [];
  // Only missing hooks are made (a secret is sealed for each): the others keep theirs.
  const missing = hookIdx.filter((i) => !existing.some((h) => h.trigger_index === i));
  const made = new Map<string, string>();
  const hooks = await core.store.ensureHooks(a.workspace_id, a.id, missing, (i) => {
    const h = core.hooks.make(a.workspace_id, a.id, i, now);
    made.set(h.row.id, h.secret);
    return h.row;
  });
  core.wake("schedule");
  // A hook another writer made meanwhile (the same trigger index) is not ours to show.
  return hooks
    .filter((h) => hookIdx.includes(h.trigger_index))
    .map((h) => {
      const secret = made.get(h.id);
      return secret === undefined ? hookInfo(h) : { ...hookInfo(h), secret };
    });
}

/** Make version n+1. Runs in flight stay on theirs. `expectedVersion` guards against lost edits. */
export async function updateAutomation(
  core: EngineCore,
  workspaceId: string,
  id: string,
  definition: unknown,
  expectedVersion: number | undefined,
  actor: string,
): Promise<AutomationView> {
  const def = await mustValidate(core, workspaceId, definition);
  const current = await mustGetAutomation(core, workspaceId, id);
  if (def.key !== current.key) throw new WeftError("definition.key_changed", "an automation's key cannot change", { pointer: "/key" });
  requireKeyForNewHooks(core, def, webhookIndexes(def).length > 0 ? await core.store.listHooks(id) : []);
  const base = expectedVersion ?? current.current_version;
  if (base !== current.current_version) {
    throw new WeftError(ErrorCodes.versionConflict, `the automation is at version ${current.current_version}, not ${base}`, {
      expected_version: base,
      version: current.current_version,
    });
  }
  const now = core.clock.now();
  const ok = await core.store.insertVersion(
    workspaceId,
    { automation_id: id, version: base + 1, definition: def, created_at: now },
    now,
    audit(core, workspaceId, actor, "automation.update", id, { version: base + 1 }),
  );
  if (!ok) throw new WeftError(ErrorCodes.versionConflict, `the automation is no longer at version ${base}`, { expected_version: base });
  const updated = { ...current, name: def.name, current_version: base + 1, updated_at: now };
  const hooks = await syncTriggers(core, updated, def);
  return { ...updated, definition: def, hooks };
}

export async function getAutomation(core: EngineCore, workspaceId: string, id: string): Promise<AutomationView> {
  const a = await mustGetAutomation(core, workspaceId, id);
  const v = await core.store.getVersion(id, a.current_version);
  if (!v) throw new WeftError(ErrorCodes.versionNotFound, `version ${a.current_version} not found`);
  // Hooks are made when a version is written (syncTriggers); reading only reads them.
  const idx = new Set(webhookIndexes(v.definition));
  const hooks = idx.size > 0 ? (await core.store.listHooks(a.id)).filter((h) => idx.has(h.trigger_index)).map(hookInfo) : [];
  return { ...a, definition: v.definition, hooks };
}

export async function getVersion(core: EngineCore, workspaceId: string, id: string, version: number): Promise<AutomationVersion> {
  await mustGetAutomation(core, workspaceId, id);
  const v = await core.store.getVersion(id, version);
  if (!v) throw new WeftError(ErrorCodes.versionNotFound, `automation ${id} has no version ${version}`);
  return v;
}

export async function setStatus(core: EngineCore, workspaceId: string, id: string, status: AutomationStatus, actor: string): Promise<Automation> {
  if (status === "active") {
    // A version stored before the workspace turned strict is checked again when it is (re)activated.
    const a = await mustGetAutomation(core, workspaceId, id);
    const v = await core.store.getVersion(id, a.current_version);
    if (v) await refuseWarningsIfStrict(core, workspaceId, validate(core, v.definition).warnings);
  }
  const entry = audit(core, workspaceId, actor, status === "active" ? "automation.activate" : "automation.pause", id);
  if (!(await core.store.setAutomationStatus(workspaceId, id, status, core.clock.now(), entry))) {
    throw new WeftError(ErrorCodes.automationNotFound, `automation ${id} not found`);
  }
  const a = await mustGetAutomation(core, workspaceId, id);
  const v = await core.store.getVersion(id, a.current_version);
  if (v) await syncTriggers(core, a, v.definition);
  return a;
}
