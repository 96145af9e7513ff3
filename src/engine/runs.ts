// Runs: enrollment (a run of the automation's current version) and reading runs and their steps.

import { WeftError } from "../model/errors.js";
import type { RunStatus } from "../model/run-status.js";
import { mustGetAutomation } from "./automations.js";
import type { EngineCore } from "./core.js";
import { ErrorCodes } from "./errors.js";
import { checkSize } from "./intake.js";
import { newRun } from "./new-run.js";
import type { Page, Run, StepRun } from "./store.js";

export interface EnrollRequest {
  subject_id?: string | null;
  context_overrides?: Record<string, unknown>;
  idempotency_key?: string;
  /** The trigger event as the run will see it (defaults to a manual-enrollment event). */
  event?: Record<string, unknown>;
  trigger_type?: string;
  event_id?: string | null;
}

export type RunListFilter = {
  workspace_id: string;
  automation_id?: string;
  status?: RunStatus;
  subject_id?: string;
  started_after?: number;
  started_before?: number;
  cursor?: string;
  limit?: number;
};

/**
 * Start a run of the automation's current version. Idempotent on `idempotency_key`: a repeat
 * returns the first run (`created: false`). Run-as and the trigger event are fixed here, once.
 */
export async function enroll(
  core: EngineCore,
  workspaceId: string,
  automationId: string,
  req: EnrollRequest,
  actor: string,
): Promise<{ run: Run; created: boolean }> {
  checkSize(req.context_overrides, core.limits.contextBytes, "limits.context_too_large", "/context_overrides");
  const a = await mustGetAutomation(core, workspaceId, automationId);
  if (a.status !== "active") throw new WeftError(ErrorCodes.automationPaused, `automation ${automationId} is paused`);
  const v = await core.versions.get(a.id, a.current_version);
  if (!v) throw new WeftError(ErrorCodes.versionNotFound, `version ${a.current_version} not found`);
  const now = core.clock.now();
  const run = newRun(
    v,
    {
      workspace_id: workspaceId,
      event: req.event ?? { type: "enroll", subject_id: req.subject_id ?? null, payload: req.context_overrides ?? {} },
      event_id: req.event_id ?? null,
      dedupe_key: req.idempotency_key ? `key:${req.idempotency_key}` : (id) => `run:${id}`,
      trigger_type: req.trigger_type ?? "api",
      context: { ...(req.context_overrides ?? {}) },
      subject_override: req.subject_id ?? null,
      subject_fallback: null,
    },
    now,
  );
  const res = await core.store.insertRun(run, now, (r) => ({
    workspace_id: workspaceId,
    actor,
    action: "run.enroll",
    target_type: "run",
    target_id: r.id,
    details: { automation_id: automationId, subject_id: r.subject_id, status: r.status },
    at: now,
  }));
  announceCreated(core, res);
  return res;
}

/** Tell listeners of a new run and claim it now when it is due. */
export function announceCreated(core: EngineCore, res: { run: Run; created: boolean }): void {
  if (res.created) {
    core.events.emit("run:created", { run: res.run });
    if (res.run.status === "pending") core.poke();
  }
}

export async function mustGetRun(core: EngineCore, workspaceId: string, id: string): Promise<Run> {
  const r = await core.store.getRun(workspaceId, id);
  if (!r) throw new WeftError(ErrorCodes.runNotFound, `run ${id} not found`);
  return r;
}

export function listRuns(core: EngineCore, filter: RunListFilter): Promise<Page<Run>> {
  return core.store.listRuns({ ...filter, limit: Math.min(Math.max(filter.limit ?? 50, 1), 500) });
}

export async function listSteps(core: EngineCore, workspaceId: string, runId: string): Promise<StepRun[]> {
  await mustGetRun(core, workspaceId, runId);
  return core.store.listSteps(runId);
}
