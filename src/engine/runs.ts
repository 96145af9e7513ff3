// Runs: enrollment (a run of the automation's current version) and reading runs and their steps.

import { WeftError } from "../model/errors.js";
import type { RunStatus } from "../model/run-status.js";
import { mustGetAutomation } from "./automations.js";
import type { EngineCore } from "./core.js";
import { insertRunsTogether } from "./enroll-commit.js";
import { crashPoint } from "./crashpoints.js";
import { ErrorCodes } from "./errors.js";
import { admissionMayWake } from "./flow-gates.js";
import { checkBatchSize, checkSize } from "./intake.js";
import { newRun, sharedLimitsOf, type RunStart } from "./new-run.js";
import { StaleAutomationError, type Automation, type InsertRunResult, type NewRun, type NewStepRun, type Page, type Run, type StepRun } from "./store.js";

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
 * One enrollment is a batch of one: the same rules, the same path.
 */
export async function enroll(
  core: EngineCore,
  workspaceId: string,
  automationId: string,
  req: EnrollRequest,
  actor: string,
): Promise<{ run: Run; created: boolean }> {
  const [res] = await enrollMany(core, workspaceId, automationId, [req], actor);
  if (!res) throw new Error("enrollMany returned no result for one request");
  if ("error" in res) throw res.error;
  return { run: res.run, created: res.created };
}

/** One element's outcome in a batch enrollment, by its index in the input. */
export type EnrollResult = { index: number; run: Run; created: boolean } | { index: number; error: WeftError };

/**
 * Enroll many subjects in one automation: the automation is checked once for the request, each
 * element on its own terms (a refused one never refuses the others), and the runs are inserted in
 * one transaction with the enrollment rules (pause, re-entry, idempotency key) applied per run.
 * Each created run gets its `run.enroll` audit entry in that transaction.
 */
export async function enrollMany(
  core: EngineCore,
  workspaceId: string,
  automationId: string,
  reqs: readonly EnrollRequest[],
  actor: string,
): Promise<EnrollResult[]> {
  checkBatchSize(reqs.length, "/subjects");
  // The automation as last read (no round trip), checked by the insert (NewRun.while_current):
  // when it changed meanwhile nothing is written, and the enrollment reads it and plans again.
  for (let attempt = 0; ; attempt++) {
    const cached = attempt === 0 ? core.automations.get(workspaceId, automationId) : undefined;
    const a = cached ?? (await mustGetAutomation(core, workspaceId, automationId));
    core.automations.put(a);
    try {
      return await enrollInto(core, a, reqs, actor);
    } catch (err) {
      if (!(err instanceof StaleAutomationError) || attempt >= 2) throw err;
      core.automations.evict(workspaceId, automationId);
    }
  }
}

/** enrollMany for the automation as read: its runs planned from its current version, inserted while it is still current. */
async function enrollInto(core: EngineCore, a: Automation, reqs: readonly EnrollRequest[], actor: string): Promise<EnrollResult[]> {
  const workspaceId = a.workspace_id;
  const automationId = a.id;
  if (a.status !== "active") throw new WeftError(ErrorCodes.automationPaused, `automation ${automationId} is paused`);
  const v = await core.versions.get(a.id, a.current_version);
  if (!v) throw new WeftError(ErrorCodes.versionNotFound, `version ${a.current_version} not found`);
  const now = core.clock.now();
  const shared = await sharedLimitsOf(core.store, workspaceId, v.definition);
  const results: EnrollResult[] = new Array(reqs.length);
  const planned: { index: number; run: NewRun }[] = [];
  reqs.forEach((req, index) => {
    try {
      checkSize(req.context_overrides, core.limits.contextBytes, "limits.context_too_large", "/context_overrides");
      const run = newRun(v, enrollmentStart(workspaceId, req), now, undefined, shared);
      run.while_current = true;
      planned.push({ index, run });
    } catch (err) {
      if (!(err instanceof WeftError)) throw err;
      results[index] = { index, error: err };
    }
  });
  // A run whose first node is a delay is created parked there (one write per timer, not two).
  if (core.runner) for (const p of planned) await core.runner.parkAtCreation(p.run, v, now);
  // Runs this process will drive at once are inserted holding its lease: no claim commit before
  // their first step. Every grant is settled once the insert has answered or failed.
  const runs = planned.map((p) => p.run);
  const granted = core.runner?.leaseForInserts(runs) ?? new Set<string>();
  let inserted: InsertRunResult[];
  try {
    // Shared with concurrent enroll requests: one transaction for all (enroll-commit.ts).
    inserted = await insertRunsTogether(core.store, runs, now, (r) => ({
      workspace_id: workspaceId,
      actor,
      action: "run.enroll",
      target_type: "run",
      target_id: r.id,
      details: { automation_id: automationId, subject_id: r.subject_id },
      at: now,
    }));
  } catch (err) {
    core.runner?.settleLeases(granted, []);
    throw err;
  }
  // Runs inserted holding this process's lease, not yet driven: a crash here leaves them to the
  // claim once their lease lapses (a test point, see crashpoints.ts).
  if (granted.size > 0) await crashPoint("enroll:after-insert");
  const created = inserted.flatMap((r) => (r.created ? [r.run] : []));
  for (const run of created) core.events.emit("run:created", { run });
  const driven = core.runner?.settleLeases(granted, created) ?? new Set<string>();
  if (admissionMayWake(runs)) core.poke();
  planned.forEach((p, i) => {
    const res = inserted[i];
    if (!res) throw new Error(`no insert result for run ${p.run.id}`);
    if (res.created && !driven.has(res.run.id)) driveOrWake(core, res.run);
    if (res.created && res.run.status === "waiting" && p.run.first_park) announceParked(core, res.run, p.run.first_park.steps);
    results[p.index] = { index: p.index, ...res };
  });
  return results;
}

/** How a manual enrollment starts its run: the caller's subject, context and key. */
function enrollmentStart(workspaceId: string, req: EnrollRequest): RunStart {
  return {
    workspace_id: workspaceId,
    event: req.event ?? { type: "enroll", subject_id: req.subject_id ?? null, payload: req.context_overrides ?? {} },
    event_id: req.event_id ?? null,
    dedupe_key: req.idempotency_key ? `key:${req.idempotency_key}` : (id) => `run:${id}`,
    trigger_type: req.trigger_type ?? "api",
    context: { ...(req.context_overrides ?? {}) },
    subject_override: req.subject_id ?? null,
    subject_fallback: null,
  };
}

/** What a drive's park commit tells listeners, for a run created parked (NewRun.first_park). */
function announceParked(core: EngineCore, run: Run, steps: readonly NewStepRun[]): void {
  for (const s of steps) core.events.emit("step:finished", { run_id: run.id, automation_id: run.automation_id, trace_id: run.trace_id, step: s });
  core.events.emit("run:parked", { run_id: run.id, waiting_for: run.waiting_for ?? "waiting", due_at: run.due_at });
}

/** Tell listeners of a new run and drive it now when it is due (handed to this process's runner, or claimed). */
export function announceCreated(core: EngineCore, res: { run: Run; created: boolean }): void {
  if (!res.created) return;
  core.events.emit("run:created", { run: res.run });
  driveOrWake(core, res.run);
}

/** A new run not driven here yet: offered to this process's runner when it is due, else the claim is woken. */
function driveOrWake(core: EngineCore, run: Run): void {
  if (run.status === "pending" && !core.runner?.offer(run)) core.poke();
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
