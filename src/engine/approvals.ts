// Approvals (list, read, decide once) and the audit log as operators read them.

import { WeftError } from "../model/errors.js";
import type { EngineCore } from "./core.js";
import type { Approval, ApprovalStatus, AuditRow } from "./store.js";

/** Page sizes asked of the store stay within 1..500. */
const clampLimit = (limit: number) => Math.min(Math.max(limit, 1), 500);

export function listApprovals(core: EngineCore, workspaceId: string, status: ApprovalStatus | undefined, limit: number): Promise<Approval[]> {
  return core.store.listApprovals(workspaceId, status, clampLimit(limit));
}

export async function getApproval(core: EngineCore, workspaceId: string, id: string): Promise<Approval> {
  const a = await core.store.getApproval(workspaceId, id);
  if (!a) throw new WeftError("approval.not_found", `approval ${id} not found`);
  return a;
}

/** Apply a decision once: a second, concurrent or late one is refused with `approval.already_decided`. */
export async function decideApproval(
  core: EngineCore,
  workspaceId: string,
  id: string,
  decision: "approved" | "rejected",
  actor: string,
  comment: string | null,
): Promise<Approval> {
  const now = core.clock.now();
  const res = await core.store.decideApproval(workspaceId, id, decision, actor, comment, now);
  if (!res.approval) throw new WeftError("approval.not_found", `approval ${id} not found`);
  if (!res.applied) {
    // Too late: this call recorded the timeout and made the run due, so the worker that takes it
    // is told (this process may be API-only), as for a decision.
    if (res.approval.status === "timed_out" && res.approval.decided_at === now) core.poke();
    throw new WeftError("approval.already_decided", `approval ${id} is already ${res.approval.status}`, {
      status: res.approval.status,
      decided_by: res.approval.decided_by,
    });
  }
  core.events.emit("approval:decided", { approval_id: id, run_id: res.approval.run_id, status: decision, actor });
  core.poke();
  return res.approval;
}

export function listAudit(core: EngineCore, workspaceId: string, limit: number, beforeId?: number): Promise<AuditRow[]> {
  return core.store.listAudit(workspaceId, clampLimit(limit), beforeId);
}
