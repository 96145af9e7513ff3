// for_each: fan an action out over a list of subjects as run items.
//
// The first visit evaluates the list once (items, subject, condition, the action's input: "its
// parameters at this point in time") and commits every item before any action runs, a chunk at a
// time with the event loop yielded between chunks (a crash between chunks builds only the items
// not on record). Items then run with bounded concurrency, each holding one of its workspace's
// slots of the process (WEFT_ITEMS_IN_FLIGHT, shared by every fan-out); their outcomes are committed in batches while the fan-out goes on,
// so a crash resumes with the items not yet on record, each under its own idempotency key
// (`run / node / visit / idx`). A retryable failure waits (the run parks until the earliest retry)
// and tries again under the same key; an action that finds its effect already done reports
// `idempotent_replay`. With `approval`, each item first waits for its own decision
// (`awaiting_approval`); a rejected item is skipped. Cancel: items not started are skipped, items
// in flight finish and are recorded. Shutdown or a lost lease (the step's signal): no item starts
// after it, items in flight are abandoned without counting an attempt, and the run is handed back
// with them pending. Some items failed → the run ends completed_with_failures.

import { StepFailure, stepError, toStepError, type StepError } from "../../model/errors.js";
import { evaluate, evaluateCondition, render } from "../../model/expressions.js";
import { DEFAULT_RETRY, decideRetry } from "../../model/retry.js";
import { allows } from "../../model/permissions.js";
import { skippedByRunEnd } from "../../model/item-outcome.js";
import { newId } from "../ids.js";
import type { Approval, RunItem } from "../store.js";
import { newApproval, settleApproval, type ApprovalConfig } from "./approval.js";
import type { NodeContext, NodeHandler, NodeResult } from "./types.js";
import type { CelScope } from "../../model/expressions.js";
import { hasRedaction } from "../secrets.js";

/** A fan-out larger than this is refused (split it, or page through a query action). */
export const MAX_ITEMS = 100_000;

export interface ForEachConfig {
  items: string;
  subject?: string;
  condition?: string;
  action: { kind: string; config: Record<string, unknown> };
  concurrency?: number;
  approval?: ApprovalConfig;
}

type ItemResult = { ok: true; replayed: boolean; output: unknown } | { ok: false; error: StepError; output?: unknown };

/** Run one item's action: a registered custom action, or a built-in slow node (http_request). */
async function runAction(ctx: NodeContext, cfg: ForEachConfig, item: RunItem): Promise<ItemResult> {
  // A fan-out that declares permissions runs only the custom action kinds they name
  // (`action:<kind>`); a built-in http_request is held to the `http:<host>` entries instead.
  if (ctx.permissions !== null && ctx.actions.has(cfg.action.kind) && !allows(ctx.permissions, `action:${cfg.action.kind}`)) {
    const v = ctx.violate(`action:${cfg.action.kind}`, `item ${item.idx}: action "${cfg.action.kind}" is outside the step's permissions`);
    return { ok: false, error: stepError("policy.violation", v.message, false, { permission: v.permission }) };
  }
  const action = ctx.actions.get(cfg.action.kind);
  if (action) {
    const o = await action.invoke(item.input, {
      run_id: ctx.run.id,
      node_key: ctx.node.key,
      idempotency_key: item.idempotency_key,
      attempt: item.attempts,
      run_as: ctx.run.run_as,
      trace_id: ctx.run.trace_id,
      signal: ctx.signal,
      node_permissions: ctx.permissions,
      http: ctx.http,
      now: ctx.clockNow,
    });
    for (const v of o.violations) ctx.violate(v.permission, `item ${item.idx}: ${v.message}`);
    return o.ok ? { ok: true, replayed: o.replayed, output: o.output } : { ok: false, error: o.error! };
  }
  const handler = ctx.handlers.get(cfg.action.kind);
  if (!handler || handler.kind === "for_each") {
    return { ok: false, error: stepError("for_each.unknown_action", `no action kind "${cfg.action.kind}"`, false) };
  }
  // A built-in node run per item: its config is the item's resolved input (already rendered).
  const res = await handler.execute({
    ...ctx,
    node: { ...ctx.node, kind: handler.kind, config: item.input as Record<string, unknown> },
    idempotencyKey: item.idempotency_key,
    attempt: item.attempts,
    parked: undefined,
  });
  if (res.kind === "next") {
    const headers = (res.output as { headers?: Record<string, string> } | undefined)?.headers;
    return { ok: true, replayed: headers?.["idempotent-replayed"] === "true", output: res.output ?? null };
  }
  if (res.kind === "fail") return { ok: false, error: res.error, output: res.output };
  return { ok: false, error: stepError("for_each.unsupported_action", `"${handler.kind}" cannot run as a fan-out action`, false) };
}

/** Items materialized (and committed) per chunk; the event loop is yielded to between chunks. */
export const CHUNK = 500;

/** Let timers, I/O and other runs of the process go first (a macrotask, not a microtask). */
const yieldToLoop = () => new Promise<void>((resolve) => setImmediate(resolve));

/** Evaluate the list (once per visit, before any item exists or while some are missing). */
function evaluateList(ctx: NodeContext, cfg: ForEachConfig): unknown[] {
  const list = evaluate(cfg.items, ctx.scope);
  if (!Array.isArray(list))
    throw new StepFailure(stepError("for_each.not_a_list", `"items" evaluated to ${typeof list}, not a list`, false, { pointer: "/config/items" }));
  if (list.length > MAX_ITEMS) throw new StepFailure(stepError("for_each.too_many_items", `${list.length} items (at most ${MAX_ITEMS})`, false));
  return list;
}

/** Build one item (pending, or skipped when its condition does not hold). */
function materializeOne(ctx: NodeContext, cfg: ForEachConfig, value: unknown, idx: number): RunItem {
  const now = ctx.now;
  const scope = ctx.scope.with({ item: value, index: idx });
  const base: RunItem = {
    id: newId("itm", now),
    run_id: ctx.run.id,
    workspace_id: ctx.run.workspace_id,
    node_key: ctx.node.key,
    visit: ctx.visit,
    idx,
    subject_id: null,
    action_kind: cfg.action.kind,
    outcome: "pending",
    attempts: 0,
    idempotency_key: `${ctx.idempotencyKey}/${idx}`,
    input: null,
    output: null,
    error: null,
    approval_id: null,
    not_before: null,
    started_at: null,
    finished_at: null,
    updated_at: now,
  };
  try {
    const subject = cfg.subject !== undefined ? evaluate(cfg.subject, scope) : defaultSubject(value);
    base.subject_id = subject === null || subject === undefined ? null : String(subject);
    if (cfg.condition !== undefined && !evaluateCondition(cfg.condition, scope)) {
      return { ...base, outcome: "skipped", output: { reason: "condition" }, finished_at: now };
    }
    return { ...base, input: render(cfg.action.config, scope) };
  } catch (err) {
    // One item's bad data (a missing field) fails that item, not the fan-out.
    const error = err instanceof StepFailure ? err.error : toStepError(err);
    return { ...base, outcome: "failed", error, finished_at: now };
  }
}

/**
 * Every item of the visit: those the store has, and the rest built and committed `CHUNK` at a
 * time, yielding the event loop between chunks, so a huge list never holds up the process's
 * other runs, lease renewals or requests. Each chunk is a checkpoint: a crash between chunks
 * resumes here, and only the indexes not on record are built (under the same `run/node/visit/idx`
 * keys). A visit resuming from its own park has every item already (it parks only once they are
 * all committed), so the list is not evaluated again then. Stops between chunks when the signal
 * aborts (shutdown, lost lease, stop); the items not built yet are built on the next claim.
 */
async function materialize(ctx: NodeContext, cfg: ForEachConfig, stored: RunItem[]): Promise<RunItem[]> {
  if (ctx.parked && stored.length > 0) return stored;
  const list = evaluateList(ctx, cfg);
  const items: RunItem[] = [];
  for (const it of stored) items[it.idx] = it;
  // The next chunk is built while the previous one commits; chunks commit one at a time, in order
  // (each checkpoint names the rev the previous one made).
  // (A failed commit is held as its outcome until then, never left a rejection nobody handles.)
  let committing: Promise<{ ok: boolean; error?: unknown }> | null = null;
  const settled = async () => {
    const res = committing === null ? { ok: true } : await committing;
    committing = null;
    if (res.error !== undefined) throw res.error;
    if (!res.ok) throw new StepFailure(stepError("run.lease_lost", "the run's lease was lost", true));
  };
  let chunk: RunItem[] = [];
  for (let idx = 0; idx < list.length; idx++) {
    if (items[idx] === undefined) chunk.push((items[idx] = materializeOne(ctx, cfg, list[idx], idx)));
    if (chunk.length >= CHUNK || (idx === list.length - 1 && chunk.length > 0)) {
      await settled();
      committing = ctx.saveItems(chunk).then(
        (ok) => ({ ok }),
        (error: unknown) => ({ ok: false, error }),
      );
      chunk = [];
      await yieldToLoop();
      if (ctx.signal.aborted) break;
    }
  }
  await settled();
  // A list shorter than what is on record (it cannot change within a visit) keeps every stored item.
  return items.filter((it) => it !== undefined);
}

/**
 * The action inputs of these items, rendered again from the list. A stored input has its secrets
 * replaced by markers, so an item that runs again (a retry after a park, an operator's retry) is
 * rendered afresh instead of sending the markers; the subject must still match, or the list
 * changed under it and the item is not re-run with someone else's input.
 */
export function rerenderInputs(cfg: ForEachConfig, scope: CelScope, items: readonly RunItem[]): Map<number, unknown> {
  const out = new Map<number, unknown>();
  if (items.length === 0) return out;
  const list = evaluate(cfg.items, scope);
  if (!Array.isArray(list)) return out;
  for (const it of items) {
    if (it.idx >= list.length) continue;
    const s = scope.with({ item: list[it.idx], index: it.idx });
    const subject = cfg.subject !== undefined ? evaluate(cfg.subject, s) : defaultSubject(list[it.idx]);
    if ((subject === null || subject === undefined ? null : String(subject)) !== it.subject_id) continue;
    out.set(it.idx, render(cfg.action.config, s));
  }
  return out;
}

function defaultSubject(v: unknown): unknown {
  if (typeof v === "string" || typeof v === "number") return v;
  if (v !== null && typeof v === "object" && "id" in v) return (v as { id: unknown }).id;
  return null;
}

function summary(items: readonly RunItem[]) {
  const count = (o: RunItem["outcome"]) => items.filter((i) => i.outcome === o).length;
  return {
    total: items.length,
    succeeded: count("succeeded"),
    idempotent_replay: count("idempotent_replay"),
    failed: count("failed"),
    skipped: count("skipped"),
    awaiting_approval: count("awaiting_approval"),
    pending: count("pending"),
  };
}

/** Wait for a slot of the run's workspace (no cap configured: at once). Null: the signal aborted first. */
function takeSlot(ctx: NodeContext): Promise<(() => void) | null> {
  const slots = ctx.settings.itemSlots;
  return slots ? slots.acquire(ctx.run.workspace_id, ctx.signal) : Promise.resolve(() => undefined);
}

export const forEachNode: NodeHandler = {
  kind: "for_each",
  class: "slow",
  async execute(ctx): Promise<NodeResult> {
    const cfg = ctx.node.config as unknown as ForEachConfig;
    const items = await materialize(ctx, cfg, await ctx.store.listItems(ctx.run.id, ctx.node.key, ctx.visit));
    const dirty = new Map<string, RunItem>();
    const approvals: Approval[] = [];
    /** When undecided approvals time out (the run must wake then to apply it). */
    const approvalExpiry: number[] = [];
    const input = { items: items.length, action: cfg.action.kind, concurrency: cfg.concurrency ?? 10 };
    const put = (it: RunItem) => {
      items[it.idx] = it;
      dirty.set(it.id, it);
    };
    /** Set when a commit failed (the lease is gone): stop starting items; the run is resumed elsewhere. */
    let lost: unknown = null;
    /** The signal was aborted by shutdown or a lost lease: a stop aborts it too, and is recorded as the stop. */
    const handedBack = () => ctx.signal.aborted && ctx.control() !== "stop";
    // One checkpoint at a time (each names the rev the previous one made); workers that find a
    // flush in flight leave their items for the next one.
    let flushing: Promise<void> | null = null;
    const flushNow = async (): Promise<void> => {
      if (dirty.size === 0 && approvals.length === 0) return;
      const batch = [...dirty.values()];
      dirty.clear();
      // Every item here was committed when the list was materialized: only its outcome changes.
      if (!(await ctx.saveItems(batch, approvals.splice(0), true))) throw new StepFailure(stepError("run.lease_lost", "the run's lease was lost", true));
    };
    const flush = async (): Promise<void> => {
      while (flushing) await flushing;
      flushing = flushNow().finally(() => (flushing = null));
      await flushing;
    };

    // Approvals: ask for each pending item's own decision first; apply decisions made since.
    if (cfg.approval) {
      for (const it of items) {
        if (it.outcome === "pending" && it.approval_id === null) {
          const a = newApproval(ctx, cfg.approval, it.id, ctx.scope.with({ item: it.input, subject: { id: it.subject_id } }));
          approvals.push(a);
          if (a.expires_at !== null) approvalExpiry.push(a.expires_at);
          put({ ...it, outcome: "awaiting_approval", approval_id: a.id, updated_at: ctx.now });
        } else if (it.outcome === "awaiting_approval" && it.approval_id !== null) {
          const a = await settleApproval(ctx, it.approval_id);
          if (a?.status === "approved") put({ ...it, outcome: "pending", updated_at: ctx.now });
          else if (a && a.status !== "pending") {
            put({ ...it, outcome: "skipped", output: { reason: a.status, decided_by: a.decided_by }, finished_at: ctx.now, updated_at: ctx.now });
          } else if (a?.expires_at != null) approvalExpiry.push(a.expires_at);
        }
      }
    }
    await flush();

    // Run what is due, `concurrency` at a time; stop taking new items on stop or cancel.
    const due = items.filter((i) => i.outcome === "pending" && (i.not_before ?? 0) <= ctx.now).map((i) => i.idx);
    const fresh = rerenderInputs(
      cfg,
      ctx.scope,
      due.map((i) => items[i]!).filter((i) => hasRedaction(i.input)),
    );
    let next = 0;
    const policy = ctx.node.retry ?? DEFAULT_RETRY;
    const more = () => next < due.length && ctx.control() === null && lost === null && !ctx.signal.aborted;
    let started = 0;
    let pause: Promise<unknown> | null = null;
    const worker = async (): Promise<void> => {
      while (more()) {
        // A slot of the workspace's share of the process (every fan-out of the workspace draws
        // from it), taken before the item so a waiting worker holds no item.
        const release = await takeSlot(ctx);
        if (release === null) return;
        if (!more()) {
          release();
          return;
        }
        const idx = due[next++]!;
        const it = { ...items[idx]!, attempts: items[idx]!.attempts + 1, started_at: ctx.clockNow() };
        let r: ItemResult;
        try {
          r = await runAction(ctx, cfg, fresh.has(idx) ? { ...it, input: fresh.get(idx) } : it);
        } catch (err) {
          r = { ok: false, error: err instanceof StepFailure ? err.error : toStepError(err) };
        } finally {
          release();
        }
        // Aborted by shutdown or a lost lease (not a stop): the call's outcome is unknown and not
        // an attempt; the item stays as it was and runs again, under its key, on the next claim.
        if (handedBack()) return;
        const at = ctx.clockNow();
        if (r.ok) {
          put({
            ...it,
            outcome: r.replayed ? "idempotent_replay" : "succeeded",
            output: r.output,
            error: null,
            not_before: null,
            finished_at: at,
            updated_at: at,
          });
        } else {
          const d = decideRetry(r.error, it.attempts, policy, ctx.random());
          if (d.kind === "retry" && ctx.control() === null)
            put({ ...it, error: r.error, output: r.output ?? null, not_before: at + d.delayMs, updated_at: at });
          else put({ ...it, outcome: "failed", error: r.error, output: r.output ?? null, not_before: null, finished_at: at, updated_at: at });
        }
        // Commit whenever no commit of this run is in flight (results gather meanwhile, and the
        // group committer batches them with other runs'): a crash loses at most what was in
        // flight and one commit's worth, each re-run under its own key.
        if (!flushing && dirty.size > 0) flush().catch((err) => (lost ??= err));
        // Results outrunning the commits wait for the one in flight: every commit stays about a chunk.
        else if (flushing && dirty.size >= CHUNK) await flushing.catch(() => undefined);
        // Fast actions settle in microtasks: every CHUNK items, all workers give the event loop a turn.
        if (++started % CHUNK === 0) pause ??= yieldToLoop().then(() => (pause = null));
        if (pause) await pause;
      }
    };
    await Promise.all(Array.from({ length: Math.min(cfg.concurrency ?? 10, Math.max(due.length, 1)) }, worker));
    if (lost !== null) throw lost;
    if (handedBack()) {
      // Keep what finished before the signal (the lease is still ours on shutdown); the runner
      // discards this step's result and hands the run back as interrupted.
      await flush();
      throw new StepFailure(stepError("run.interrupted", "the fan-out was interrupted (shutdown or lease lost)", true));
    }

    const control = ctx.control();
    if (control !== null) {
      // Items not started are skipped; those in flight finished above and are recorded.
      const at = ctx.clockNow();
      for (const it of items) {
        if (it.outcome === "pending" || it.outcome === "awaiting_approval") {
          put({ ...it, outcome: "skipped", error: skippedByRunEnd(control), finished_at: at, updated_at: at });
        }
      }
    }
    await flush();
    const s = summary(items);
    const counts = { total: s.total, failed: s.failed };
    const waitingRetry = items.filter((i) => i.outcome === "pending").map((i) => i.not_before ?? ctx.clockNow());
    if (control === null && (s.awaiting_approval > 0 || waitingRetry.length > 0)) {
      const wake = [...waitingRetry, ...approvalExpiry];
      const until = wake.length > 0 ? Math.min(...wake) : null;
      return { kind: "park", waiting_for: s.awaiting_approval > 0 ? "approval" : "item_retry", until, input, items: counts, data: { summary: s } };
    }
    return { kind: "next", port: "next", input, output: s, items: counts };
  },
};
