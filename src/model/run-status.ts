// The run state machine. Transition table first; every status change goes through transition().
//
//   pending ─► running ─► waiting | retrying | interrupted ─► running ─► terminal
//   terminal: completed, completed_with_failures, failed, cancelled, exited (with exit_reason)
//   "overdue" is derived (a claimable run whose due time is past by more than a grace), never stored.

export const RunStatus = {
  pending: "pending",
  running: "running",
  waiting: "waiting",
  retrying: "retrying",
  interrupted: "interrupted",
  completed: "completed",
  completed_with_failures: "completed_with_failures",
  failed: "failed",
  cancelled: "cancelled",
  exited: "exited",
} as const;
export type RunStatus = (typeof RunStatus)[keyof typeof RunStatus];

/** The statuses a run never leaves; stores, the API schema and the console all read this list. */
export const TERMINAL_STATUSES = ["completed", "completed_with_failures", "failed", "cancelled", "exited"] as const satisfies readonly RunStatus[];
const TERMINAL = TERMINAL_STATUSES;
const STOPPABLE: RunStatus[] = ["cancelled", "exited"];

/** from → the statuses it may move to. running → running is a checkpoint inside one execution. */
export const RUN_TRANSITIONS: Readonly<Record<RunStatus, readonly RunStatus[]>> = {
  pending: ["running", ...STOPPABLE],
  running: ["running", "waiting", "retrying", "interrupted", ...TERMINAL],
  waiting: ["running", ...STOPPABLE],
  retrying: ["running", ...STOPPABLE],
  interrupted: ["running", ...STOPPABLE],
  completed: [],
  completed_with_failures: [],
  failed: [],
  cancelled: [],
  exited: [],
};

export function isTerminal(s: RunStatus): boolean {
  return RUN_TRANSITIONS[s].length === 0;
}

/** Statuses the runner may claim (when due). A `running` run is claimable only once its lease expired. */
export function isClaimable(s: RunStatus): boolean {
  return s === "pending" || s === "waiting" || s === "retrying" || s === "interrupted" || s === "running";
}

export function canTransition(from: RunStatus, to: RunStatus): boolean {
  return RUN_TRANSITIONS[from].includes(to);
}

export class IllegalTransition extends Error {
  constructor(
    readonly machine: string,
    readonly from: string,
    readonly to: string,
  ) {
    super(`illegal ${machine} transition ${from} → ${to}`);
    this.name = "IllegalTransition";
  }
}

export function transition(from: RunStatus, to: RunStatus): RunStatus {
  if (!canTransition(from, to)) throw new IllegalTransition("run", from, to);
  return to;
}

export const ExitReason = {
  completed: "completed",
  graph_changed: "graph_changed",
  node_removed: "node_removed",
  subject_paused: "subject_paused",
  reentry_cooldown: "reentry_cooldown",
  already_active: "already_active",
  input_timeout: "input_timeout",
  admin_stopped: "admin_stopped",
  handler_failure: "handler_failure",
  infinite_loop_cap: "infinite_loop_cap",
  /** Its claims were lost (the worker died or stalled) more often in a row than the quarantine setting allows. */
  quarantined: "quarantined",
  /** Its rate limit (`on_limit: skip`) had no turn free when it started (or reached the limited node). */
  rate_limited: "rate_limited",
} as const;
export type ExitReason = (typeof ExitReason)[keyof typeof ExitReason];

export const RUN_STATUSES = Object.values(RunStatus);

/**
 * What an operator's stop or cancel does to a run (engine/control.ts describes the request; each
 * store applies this atomically with its row lock):
 *   terminal                          → nothing (the run already ended)
 *   running and its lease still held  → flag it; the worker ends it at its next checkpoint
 *   otherwise (parked, due, lease lost) → end it now: stop → exited admin_stopped, cancel → cancelled;
 *                                       its unstarted items are skipped and its pending approvals cancelled
 */
export type ControlEffect = { kind: "none" } | { kind: "flag" } | { kind: "end"; status: "exited" | "cancelled"; exit_reason: ExitReason | null };

export function controlEffect(run: { status: RunStatus; due_at: number | null }, control: "stop" | "cancel", now: number): ControlEffect {
  if (isTerminal(run.status)) return { kind: "none" };
  if (run.status === "running" && run.due_at !== null && run.due_at > now) return { kind: "flag" };
  return control === "stop" ? { kind: "end", status: "exited", exit_reason: "admin_stopped" } : { kind: "end", status: "cancelled", exit_reason: null };
}
