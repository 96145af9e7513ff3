// approval: create an approval record with the park (one commit), wait for a decision, leave by
// the approved, rejected or timeout port. Decisions are compare-and-swap in the store, so one
// decision applies and any other (concurrent, repeated, or after the timeout) is refused.

import { render } from "../../model/expressions.js";
import { newId } from "../ids.js";
import type { Approval } from "../store.js";
import type { NodeContext, NodeHandler, NodeResult } from "./types.js";

export interface ApprovalConfig {
  title: string;
  approvers?: string[];
  timeout_ms?: number;
}

/** A new pending approval for this node visit (and item, inside a fan-out). */
export function newApproval(ctx: NodeContext, cfg: ApprovalConfig, itemId: string | null, scope = ctx.scope): Approval {
  const now = ctx.now;
  return {
    id: newId("apr", now),
    workspace_id: ctx.run.workspace_id,
    run_id: ctx.run.id,
    automation_id: ctx.run.automation_id,
    node_key: ctx.node.key,
    visit: ctx.visit,
    item_id: itemId,
    title: String(render(cfg.title, scope)),
    approvers: cfg.approvers ?? [],
    status: "pending",
    decided_by: null,
    decided_at: null,
    comment: null,
    created_at: now,
    expires_at: cfg.timeout_ms !== undefined ? now + cfg.timeout_ms : null,
  };
}

/** The decision on an approval, applying its timeout (as the system) once it is past. */
export async function settleApproval(ctx: NodeContext, id: string): Promise<Approval | null> {
  let a = await ctx.store.getApproval(ctx.run.workspace_id, id);
  if (a && a.status === "pending" && a.expires_at !== null && ctx.now >= a.expires_at) {
    const res = await ctx.store.decideApproval(ctx.run.workspace_id, id, "timed_out", "system", null, ctx.now);
    a = res.approval;
  }
  return a;
}

export const approvalNode: NodeHandler = {
  kind: "approval",
  class: "fast",
  async execute(ctx): Promise<NodeResult> {
    const cfg = ctx.node.config as unknown as ApprovalConfig;
    const id = ctx.parked?.data?.approval_id as string | undefined;
    if (id === undefined) {
      const a = newApproval(ctx, cfg, null);
      return {
        kind: "park",
        waiting_for: "approval",
        until: a.expires_at,
        input: { approval_id: a.id, title: a.title, approvers: a.approvers },
        data: { approval_id: a.id },
        approvals: [a],
      };
    }
    const a = await settleApproval(ctx, id);
    const output = { approval_id: id, status: a?.status ?? "missing", decided_by: a?.decided_by ?? null, comment: a?.comment ?? null };
    switch (a?.status) {
      case "approved":
        return { kind: "next", port: "approved", output };
      case "rejected":
      case "cancelled":
        return { kind: "next", port: "rejected", output };
      case "timed_out":
        return { kind: "next", port: "timeout", output };
      case "pending":
        return { kind: "park", waiting_for: "approval", until: a.expires_at, data: { approval_id: id } };
      default:
        return { kind: "fail", error: { code: "approval.missing", message: `approval ${id} no longer exists`, retryable: false } };
    }
  },
};
