// A run's priority: an integer from PRIORITY_MIN to PRIORITY_MAX, fixed when the run is created.
// The claim orders an automation's due runs by `due_at − priority × AGING_STEP_MS` (claimKey in
// engine/store.ts): each point of priority is one step of head start, so a run is never passed by
// a run of the same automation that became due more than (difference in priority × step) after it.

import type { Problem } from "./errors.js";
import { CelScope, checkExpression, DEFAULT_BUDGET, evaluate, type Budget } from "./expressions.js";

export const PRIORITY_MIN = -100;
export const PRIORITY_MAX = 100;
/** One point of priority is worth this much waiting time (ms). */
export const AGING_STEP_MS = 1000;

/** A finite number rounded to an integer and clamped to the range; anything else is 0. */
export function clampPriority(n: unknown): number {
  if (typeof n !== "number" || !Number.isFinite(n)) return 0;
  return Math.min(PRIORITY_MAX, Math.max(PRIORITY_MIN, Math.round(n))) || 0;
}

/**
 * The definition's `priority` (validateDefinition): a literal must be in the range; a string must
 * be a valid CEL expression. Other types and non-finite numbers are the schema's to report.
 */
export function priorityProblem(value: unknown): Problem | null {
  // A non-finite number (YAML's .inf, .nan) is the schema's definition.invalid_type at /priority.
  if (typeof value === "number" && Number.isFinite(value) && (value < PRIORITY_MIN || value > PRIORITY_MAX)) {
    return { code: "definition.bad_priority", pointer: "/priority", message: `priority ${value} is outside ${PRIORITY_MIN}..${PRIORITY_MAX}` };
  }
  if (typeof value === "string" && value !== "") return checkExpression(value, "/priority");
  return null;
}

/** What a run's priority came to, and why it is 0 when the expression failed (recorded on the run). */
export interface RunPriority {
  priority: number;
  error: string | null;
}

/**
 * A new run's priority from the definition: a literal as it is (clamped), an expression evaluated
 * once over the trigger event under `budget`. An error or a non-number never stops the run: it
 * gets 0 and the reason.
 */
export function runPriority(spec: number | string | undefined, event: Record<string, unknown>, budget: Readonly<Budget> = DEFAULT_BUDGET): RunPriority {
  if (spec === undefined) return { priority: 0, error: null };
  if (typeof spec === "number") return { priority: clampPriority(spec), error: null };
  let v: unknown;
  try {
    v = evaluate(spec, new CelScope({ event, context: {}, steps: {}, subject: null, run: {}, secrets: {} }, budget));
  } catch (err) {
    const e = err as { error?: { code?: string; message?: string }; message?: string };
    return { priority: 0, error: `${e.error?.code ?? "expression.error"}: ${e.error?.message ?? e.message ?? String(err)}` };
  }
  if (typeof v !== "number" || !Number.isFinite(v)) {
    return { priority: 0, error: `priority.not_number: ${JSON.stringify(spec)} gave ${v === null ? "null" : typeof v}, not a finite number` };
  }
  return { priority: clampPriority(v), error: null };
}
