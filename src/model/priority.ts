// A run's priority: an integer from PRIORITY_MIN to PRIORITY_MAX, fixed when the run is created.
// The claim orders an automation's due runs by `due_at − priority × AGING_STEP_MS` (claimKey in
// engine/store.ts): each point of priority is one step of head start, so a run is never passed by
// a run of the same automation that became due more than (difference in priority × step) after it.

export const PRIORITY_MIN = -100;
export const PRIORITY_MAX = 100;
/** One point of priority is worth this much waiting time (ms). */
export const AGING_STEP_MS = 1000;

/** A finite number rounded to an integer and clamped to the range; anything else is 0. */
export function clampPriority(n: unknown): number {
  if (typeof n !== "number" || !Number.isFinite(n)) return 0;
  return Math.min(PRIORITY_MAX, Math.max(PRIORITY_MIN, Math.round(n))) || 0;
}
