// What an operator does to runs and subjects: stop or cancel a run, re-trigger it, pause or
// resume a subject. Each is recorded in the audit log.

import { WeftError } from "../model/errors.js";
import { mustGetAutomation } from "./automations.js";
import type { EngineCore } from "./core.js";
import { ErrorCodes } from "./errors.js";
import { admissionMayWake } from "./flow-gates.js";
import { newRun, sharedLimitsOf } from "./new-run.js";
import { announceCreated, mustGetRun } from "./runs.js";
import type { AuditEntry, PauseRow, Run, RunControl } from "./store.js";

/**
 * Stop (exit `admin_stopped`) or cancel a run. A parked run ends at once; a run a worker is
 * driving ends at that worker's next checkpoint (at once when it is this process). Recorded in
 * the audit log. Ending a run that already ended is refused (`run.already_ended`). What the store
 * does to the run row is `controlEffect` (model/run-status.ts), applied under the row's lock.
 */
export async function controlRun(core: EngineCore, workspaceId: string, runId: string, control: RunControl, actor: string): Promise<Run> {
  const now = core.clock.now();
  const entry: AuditEntry = { workspace_id: workspaceId, actor, action: `run.${control}`, target_type: "run", target_id: runId, details: {}, at: now };
  const before = await mustGetRun(core, workspaceId, runId);
  if (before.completed_at !== null) throw new WeftError("run.already_ended", `run ${runId} already ended (${before.status})`, { status: before.status });
  const r = await core.store.controlRun(workspaceId, runId, control, entry, now);
  if (!r) throw new WeftError(ErrorCodes.runNotFound, `run ${runId} not found`);
  if (r.completed_at !== null) {
    core.events.emit("run:finished", { run_id: r.id, automation_id: r.automation_id, status: r.status, exit_reason: r.exit_reason, trace_id: r.trace_id });
    // Its concurrency slots are free now: their keys' oldest waiters go (a failed wake is the
    // sweep's), due now, so the process that claims them is told (this one may be API-only).
    if ((await core.store.wakeFlowOfRun(workspaceId, r.id, now).catch(() => 0)) > 0) core.poke();
  } else {
    core.runner?.control(runId, control);
  }
  return r;
}

/** A new run from the start, for the same trigger event, on the automation's current version (re-entry rules apply). */
export async function retriggerRun(
  core: EngineCore,
  workspaceId: string,
  runId: string,
  actor: string,
  idempotencyKey?: string,
): Promise<{ run: Run; created: boolean }> {
  const orig = await mustGetRun(core, workspaceId, runId);
  const a = await mustGetAutomation(core, workspaceId, orig.automation_id);
  const v = await core.versions.get(a.id, a.current_version);
  if (!v) throw new WeftError(ErrorCodes.versionNotFound, `version ${a.current_version} not found`);
  const now = core.clock.now();
  const payload = (orig.event as { payload?: unknown }).payload;
  const shared = await sharedLimitsOf(core.store, workspaceId, v.definition);
  const run = newRun(
    v,
    {
      workspace_id: workspaceId,
      event: orig.event,
      event_id: orig.event_id,
      dedupe_key: idempotencyKey ? `retrigger:${orig.id}:${idempotencyKey}` : (id) => `retrigger:${orig.id}:${id}`,
      trigger_type: orig.trigger_type,
      context: orig.trigger_type === "api" && payload !== null && typeof payload === "object" ? { ...(payload as Record<string, unknown>) } : {},
      subject_override: orig.subject_id,
      subject_fallback: null,
    },
    now,
    undefined,
    shared,
  );
  const res = await core.store.insertRun(run, now, (r) => ({
    workspace_id: workspaceId,
    actor,
    action: "run.retrigger",
    target_type: "run",
    target_id: orig.id,
    details: { new_run_id: r.id },
    at: now,
  }));
  announceCreated(core, res);
  if (admissionMayWake([run])) core.poke();
  return res;
}

export interface PauseRequest {
  automation_id?: string | null;
  pause_reason: string;
  paused_until?: number | null;
}

export async function pauseSubject(core: EngineCore, workspaceId: string, subjectId: string, p: PauseRequest, actor: string): Promise<PauseRow> {
  if (p.automation_id) await mustGetAutomation(core, workspaceId, p.automation_id);
  const row: PauseRow = {
    workspace_id: workspaceId,
    subject_id: subjectId,
    automation_id: p.automation_id ?? "",
    pause_reason: p.pause_reason,
    paused_until: p.paused_until ?? null,
    created_at: core.clock.now(),
  };
  await core.store.putPause(row, {
    workspace_id: workspaceId,
    actor,
    action: "subject.pause",
    target_type: "subject",
    target_id: subjectId,
    details: { automation_id: p.automation_id ?? null, pause_reason: p.pause_reason, paused_until: row.paused_until },
    at: row.created_at,
  });
  core.wake("pauses");
  return row;
}

export async function resumeSubject(
  core: EngineCore,
  workspaceId: string,
  subjectId: string,
  automationId: string | null | undefined,
  actor: string,
): Promise<boolean> {
  if (automationId) await mustGetAutomation(core, workspaceId, automationId);
  const now = core.clock.now();
  const deleted = await core.store.deletePause(workspaceId, subjectId, automationId ?? "", now, {
    workspace_id: workspaceId,
    actor,
    action: "subject.resume",
    target_type: "subject",
    target_id: subjectId,
    details: { automation_id: automationId ?? null },
    at: now,
  });
  core.wake("pauses");
  core.poke();
  return deleted;
}
