// Redrive: a failed or stopped run resumes on the same run from the step where it ended, under
// that step's idempotency key (run/node/visit), so the steps that succeeded are not sent again.

import { WeftError } from "../model/errors.js";
import { mustGetAutomation } from "./automations.js";
import type { EngineCore } from "./core.js";
import { ErrorCodes } from "./errors.js";
import { activeSlot } from "./new-run.js";
import { mustGetRun } from "./runs.js";
import type { Cursor, Run, StepRun } from "./store.js";
import type { LoadedVersion } from "./versions.js";

export type RedriveVersion = "own" | "current";

/** Where a redriven run resumes: the node, the port it was entered by, and the visit whose key it reuses. */
export interface RedriveTarget {
  node: string;
  port: string | null;
  visit: number;
}

/** Only a failed run or one an operator stopped can be redriven. */
export function isRedrivable(run: Pick<Run, "status" | "exit_reason">): boolean {
  return run.status === "failed" || (run.status === "exited" && run.exit_reason === "admin_stopped");
}

/**
 * The step the run ended at. A run stopped while parked or between steps still has its cursor
 * at that node; a run that ended inside a step has it cleared, and its last step row names the
 * node (a step that succeeded last means the run ended on its way to the next node).
 */
export function redriveTarget(run: Run, steps: readonly StepRun[], v: LoadedVersion): RedriveTarget | null {
  const c = run.cursor;
  if (c.node !== null) {
    const fresh = c.attempt === 0 && !c.parked;
    return { node: c.node, port: c.port, visit: fresh ? (c.visits[c.node] ?? 0) + 1 : (c.visits[c.node] ?? 1) };
  }
  const last = steps.at(-1);
  if (!last) return null;
  if (last.outcome !== "succeeded") return { node: last.node_key, port: last.entered_via_port_key, visit: last.visit };
  const next = last.exited_via_port_key === null ? undefined : v.edges.get(last.node_key)?.get(last.exited_via_port_key);
  if (next === undefined) return null;
  return { node: next, port: last.exited_via_port_key, visit: (c.visits[next] ?? 0) + 1 };
}

/**
 * The cursor of the redriven run: at the target node with no attempt made, so the step's retry
 * policy applies afresh, and its visit count one below the target visit, so the runner's next
 * fresh visit is that visit again (the same idempotency key).
 */
export function redriveCursor(run: Run, t: RedriveTarget, steps: readonly StepRun[]): Cursor {
  const { parked: _parked, consumed: _consumed, attempt_base: _base, ...rest } = run.cursor;
  const visits = { ...rest.visits };
  if (t.visit > 1) visits[t.node] = t.visit - 1;
  else delete visits[t.node];
  // The thread numbers the new attempts after the ones already made at this visit.
  const made = steps.reduce((n, s) => (s.node_key === t.node && s.visit === t.visit ? Math.max(n, s.attempt) : n), 0);
  return { ...rest, node: t.node, port: t.port, visits, attempt: 0, ...(made > 0 ? { attempt_base: made } : {}) };
}

export async function redriveRun(core: EngineCore, workspaceId: string, runId: string, opts: { version?: RedriveVersion }, actor: string): Promise<Run> {
  const choice = opts.version ?? "own";
  const run = await mustGetRun(core, workspaceId, runId);
  if (!isRedrivable(run)) {
    throw new WeftError("run.not_redrivable", `run ${runId} is ${run.status}: only a failed or stopped run can be redriven`, {
      status: run.status,
      exit_reason: run.exit_reason,
    });
  }
  const own = await loadVersion(core, run.automation_id, run.version);
  const steps = await core.store.listSteps(run.id);
  const target = redriveTarget(run, steps, own);
  if (target === null) throw new WeftError("run.not_redrivable", `run ${runId} has no step to resume from`, { status: run.status });
  let v = own;
  if (choice === "current") {
    const a = await mustGetAutomation(core, workspaceId, run.automation_id);
    v = await loadVersion(core, a.id, a.current_version);
    if (!v.nodes.has(target.node)) {
      throw new WeftError("run.redrive_node_missing", `node ${target.node} is not in version ${v.version} of the automation`, {
        node: target.node,
        version: v.version,
      });
    }
  }
  const now = core.clock.now();
  const res = await core.store.redriveRun({
    workspace_id: workspaceId,
    run_id: run.id,
    expected_rev: run.rev,
    expected_status: run.status,
    version: v.version,
    cursor: redriveCursor(run, target, steps),
    active_subject: activeSlot(v.definition, run.subject_id, run.event),
    now,
    audit: {
      workspace_id: workspaceId,
      actor,
      action: "run.redrive",
      target_type: "run",
      target_id: run.id,
      details: { version: v.version, version_choice: choice, node_key: target.node, visit: target.visit, from_status: run.status },
      at: now,
    },
  });
  if (res.outcome === "stale") throw new WeftError("run.redrive_conflict", `run ${runId} changed while it was being redriven`, { reason: "changed" });
  if (res.outcome === "slot_taken") {
    throw new WeftError("run.redrive_conflict", `subject ${run.subject_id} already has an active run of this automation`, {
      reason: "already_active",
      subject_id: run.subject_id,
    });
  }
  core.poke();
  return res.run;
}

async function loadVersion(core: EngineCore, automationId: string, version: number): Promise<LoadedVersion> {
  const v = await core.versions.get(automationId, version);
  if (!v) throw new WeftError(ErrorCodes.versionNotFound, `version ${version} not found`);
  return v;
}
