// The step (node visit) state machine. Step rows are append-only, one per attempt; the outcome of
// each attempt must follow from the previous attempt's outcome by this table.
//
//   (start) ─► succeeded | failed | skipped | waiting | retrying
//   retrying ─► (next attempt) succeeded | failed | retrying | waiting
//   waiting ─► (the wait ends) succeeded | failed

import { IllegalTransition } from "./run-status.js";

export const StepOutcome = {
  succeeded: "succeeded",
  failed: "failed",
  retrying: "retrying",
  skipped: "skipped",
  waiting: "waiting",
} as const;
export type StepOutcome = (typeof StepOutcome)[keyof typeof StepOutcome];

export const STEP_TRANSITIONS: Readonly<Record<StepOutcome | "start", readonly StepOutcome[]>> = {
  start: ["succeeded", "failed", "skipped", "waiting", "retrying"],
  retrying: ["succeeded", "failed", "retrying", "waiting"],
  waiting: ["succeeded", "failed"],
  succeeded: [],
  failed: [],
  skipped: [],
};

export function canStepTransition(from: StepOutcome | "start", to: StepOutcome): boolean {
  return STEP_TRANSITIONS[from].includes(to);
}

export function stepTransition(from: StepOutcome | "start", to: StepOutcome): StepOutcome {
  if (!canStepTransition(from, to)) throw new IllegalTransition("step", from, to);
  return to;
}

export const STEP_OUTCOMES = Object.values(StepOutcome);
