// The run-item state machine (one action on one subject inside a fan-out).
//
//   pending ─► running ─► succeeded | failed | idempotent_replay | awaiting_approval
//   pending ─► skipped (condition did not hold, or the run was cancelled first)
//   awaiting_approval ─► running (approved) | skipped (rejected)
//   failed ─► running (an operator retries it with the same idempotency key)

import { IllegalTransition } from "./run-status.js";

export const ItemOutcome = {
  pending: "pending",
  running: "running",
  succeeded: "succeeded",
  failed: "failed",
  skipped: "skipped",
  awaiting_approval: "awaiting_approval",
  idempotent_replay: "idempotent_replay",
} as const;
export type ItemOutcome = (typeof ItemOutcome)[keyof typeof ItemOutcome];

export const ITEM_TRANSITIONS: Readonly<Record<ItemOutcome, readonly ItemOutcome[]>> = {
  pending: ["running", "skipped"],
  running: ["succeeded", "failed", "idempotent_replay", "awaiting_approval"],
  awaiting_approval: ["running", "skipped"],
  failed: ["running"],
  succeeded: [],
  skipped: [],
  idempotent_replay: [],
};

export function itemTransition(from: ItemOutcome, to: ItemOutcome): ItemOutcome {
  if (!ITEM_TRANSITIONS[from].includes(to)) throw new IllegalTransition("item", from, to);
  return to;
}

/**
 * The error on an item skipped because an operator stopped or cancelled its run before the item
 * started. The fan-out node and both stores' run control write exactly this.
 */
export function skippedByRunEnd(control: "stop" | "cancel"): { code: string; message: string; retryable: false } {
  return { code: `run.${control === "stop" ? "stopped" : "cancelled"}`, message: "the run ended before this item started", retryable: false };
}
