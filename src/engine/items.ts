// Fan-out items as an operator sees them: list a run's items, retry a failed one.
//
// A retry is begun and finished in two transactions with the action's call between them, so the
// begin takes a lease (kept in the item's not_before): a retry whose process dies leaves a running
// item that the next retry takes over once the lease has run out, under the same idempotency key
// (the remote system answers a replay; the effect is not doubled).

import { WeftError } from "../model/errors.js";
import type { RegisteredAction } from "./actions.js";
import type { EngineCore } from "./core.js";
import { rerenderInputs, type ForEachConfig } from "./nodes/for-each.js";
import { mustGetRun } from "./runs.js";
import { runScope } from "./scope.js";
import { workspaceBudget } from "./workspace-settings.js";
import { hasRedaction } from "./secrets.js";
import type { Run, RunItem } from "./store.js";

export async function listItems(core: EngineCore, workspaceId: string, runId: string): Promise<RunItem[]> {
  await mustGetRun(core, workspaceId, runId);
  return core.store.listItems(runId);
}

/** How long one item call may take (the retry's signal aborts it then). */
const ITEM_CALL_TIMEOUT_MS = 120_000;
/** An operator's retry holds its item this long: past its call's timeout, so only a dead retry is taken over. */
export const ITEM_RETRY_LEASE_MS = ITEM_CALL_TIMEOUT_MS + 60_000;

/**
 * Whether an operator may retry the item now: a failed item, or a running one whose retry's lease
 * has run out (or that has none: one begun before retries took a lease). The store's
 * compare-and-swap in beginItemRetry takes the same two cases.
 */
function checkRetryable(item: RunItem, now: number): void {
  if (item.outcome === "running") {
    if (item.not_before !== null && item.not_before > now) {
      throw new WeftError("item.retry_conflict", `item ${item.id} is being retried (until ${new Date(item.not_before).toISOString()} at the latest)`, {
        outcome: item.outcome,
        lease_until: item.not_before,
      });
    }
    return;
  }
  if (item.outcome !== "failed")
    throw new WeftError("item.not_failed", `item ${item.id} is ${item.outcome}; only a failed item can be retried`, { outcome: item.outcome });
}

/**
 * Retry a failed item of an ended run, under the same idempotency key: an effect that already
 * happened comes back as `idempotent_replay`. One retry at a time per item (compare-and-swap).
 */
export async function retryItem(core: EngineCore, workspaceId: string, runId: string, itemId: string, actor: string): Promise<RunItem> {
  const run = await mustGetRun(core, workspaceId, runId);
  const item = await core.store.getItem(workspaceId, itemId);
  if (!item || item.run_id !== runId) throw new WeftError("item.not_found", `run ${runId} has no item ${itemId}`);
  checkRetryable(item, core.clock.now());
  if (run.completed_at === null)
    throw new WeftError("item.run_active", `run ${runId} is still ${run.status}; it retries its own items`, { status: run.status });
  const began = core.clock.now();
  const claimed = await core.store.beginItemRetry(workspaceId, itemId, began, began + ITEM_RETRY_LEASE_MS);
  if (!claimed) throw new WeftError("item.not_failed", `item ${itemId} is no longer failed (another retry took it)`);
  const action = core.actions.get(claimed.action_kind);
  const v = await core.versions.get(run.automation_id, run.version);
  const node = v?.nodes.get(claimed.node_key);
  let result: { outcome: RunItem["outcome"]; output: unknown; error: RunItem["error"] };
  try {
    let input = claimed.input;
    if (hasRedaction(input) && node?.kind === "for_each") {
      // The stored input has its secrets masked: render it again from the run (secrets included).
      const secrets = await core.admin.secretsOf(workspaceId);
      const again = rerenderInputs(
        node.config as unknown as ForEachConfig,
        runScope(run, run.context, run.steps, secrets, await workspaceBudget(core.store, workspaceId)),
        [claimed],
      ).get(claimed.idx);
      if (again === undefined) throw new WeftError("item.input_changed", "the item's input holds secrets and cannot be rendered again for the same subject");
      input = again;
    }
    result = await invokeItemRetry(core, action, run, { ...claimed, input }, node?.permissions ?? null);
  } catch (err) {
    // Never leave the item "running": it goes back to failed, retryable again.
    result = {
      outcome: "failed",
      output: null,
      error: { code: "item.retry_error", message: err instanceof Error ? err.message : String(err), retryable: true },
    };
  }
  const now = core.clock.now();
  const done: RunItem = { ...claimed, ...result, finished_at: now, updated_at: now };
  const finished = await core.store.finishItemRetry(done, {
    workspace_id: workspaceId,
    actor,
    action: "run_item.retry",
    target_type: "run_item",
    target_id: itemId,
    details: { run_id: runId, idempotency_key: claimed.idempotency_key, attempt: claimed.attempts, outcome: done.outcome },
    at: now,
  });
  if (!finished) {
    throw new WeftError("item.retry_conflict", `item ${itemId}: this retry outlived its lease and another retry took the item over; its outcome stands`, {
      attempt: claimed.attempts,
    });
  }
  return done;
}

async function invokeItemRetry(core: EngineCore, action: RegisteredAction | undefined, run: Run, claimed: RunItem, permissions: readonly string[] | null) {
  let result: { outcome: RunItem["outcome"]; output: unknown; error: RunItem["error"] };
  if (!action) {
    result = {
      outcome: "failed",
      output: null,
      error: { code: "item.retry_unsupported", message: `"${claimed.action_kind}" is not a registered action`, retryable: false },
    };
  } else {
    const o = await action.invoke(claimed.input, {
      run_id: run.id,
      node_key: claimed.node_key,
      idempotency_key: claimed.idempotency_key,
      attempt: claimed.attempts,
      run_as: run.run_as,
      trace_id: run.trace_id,
      signal: AbortSignal.timeout(ITEM_CALL_TIMEOUT_MS),
      node_permissions: permissions,
      http: core.http,
      now: () => core.clock.now(),
    });
    result = o.ok
      ? { outcome: o.replayed ? "idempotent_replay" : "succeeded", output: o.output, error: null }
      : { outcome: "failed", output: null, error: o.error };
  }
  return result;
}
