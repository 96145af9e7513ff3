// The enrollment decision: whether a new run on a subject starts, or is recorded as exited at once.
// Checked in this order, the first that holds deciding the reason:
//   subject_paused    an operator paused the subject (for this automation or all) and the pause holds now
//   reentry_cooldown  a run of this automation on this subject finished within the cooldown
//   already_active    another run of this automation holds the subject (one active run per subject)
// Only a pending run with a subject is checked. Runs skipped by this decision never ran, so they
// neither start a cooldown nor hold the subject. The stores evaluate each check atomically with
// the insert (SQL), but the order, the reasons and the skipped row's shape are decided here.

import { capFlowKey } from "./flow-windows.js";

export const ENROLLMENT_CHECKS = ["subject_paused", "reentry_cooldown", "already_active"] as const;
export type EnrollmentSkip = (typeof ENROLLMENT_CHECKS)[number];

/** Exit reasons of runs that never ran: a finished run with one of these does not start a cooldown. */
export const NOT_ENROLLED: readonly EnrollmentSkip[] = ENROLLMENT_CHECKS;

/** Whether the enrollment checks apply to a new run at all: a pending run with a subject or a singleton key (`reentry.key`). */
export function isEnrollmentChecked(run: { subject_id: string | null; status: string; active_subject?: string | null }): boolean {
  return (run.subject_id !== null || (run.active_subject ?? null) !== null) && run.status === "pending";
}

/** The first check that holds, in the order above; `holds` is asked lazily, in that order. */
export function enrollmentSkip(holds: (check: EnrollmentSkip) => boolean): EnrollmentSkip | null {
  for (const check of ENROLLMENT_CHECKS) if (holds(check)) return check;
  return null;
}

/** The row a skipped enrollment records: exited with the reason, not due, not holding the subject. */
export function skippedEnrollment<R extends object>(run: R, reason: EnrollmentSkip, now: number) {
  return {
    ...run,
    status: "exited" as const,
    exit_reason: reason,
    active_subject: null,
    due_at: null,
    lease_owner: null,
    completed_at: now,
    current_node_key: null,
  };
}

// ---------- singleton per key: reentry.key and cancel_previous ----------
//
// The active slot a run holds (one active run per slot and automation, enforced by the stores'
// unique index) is `reentry.key` rendered over the trigger event, or the run's subject when the
// key is omitted or does not render (a template error never refuses the run). Long keys are cut
// and hashed like flow keys. With `cancel_previous`, inserting a run first releases the slot's
// holder: it is cancelled by the operator's cancel rule (controlEffect in run-status.ts: ended at
// once when no worker holds it; flagged, to end at the worker's next checkpoint, when one does)
// and its slot is freed in the same transaction, so the new run starts; an audit entry
// `run.replaced` names the run that replaced it.

/** The slot a run of this re-entry setting holds: null when concurrent runs are allowed. */
export function singletonSlot(
  reentry: { policy?: string; key?: string | undefined } | undefined,
  subject: string | null,
  renderKey: (template: string) => unknown,
): string | null {
  if ((reentry?.policy ?? "skip_if_active") === "allow_concurrent") return null;
  if (reentry?.key === undefined) return subject;
  try {
    const v = renderKey(reentry.key);
    if (v === null || v === undefined || v === "") return subject;
    return capFlowKey(typeof v === "string" ? v : JSON.stringify(v));
  } catch {
    return subject;
  }
}

/** Whether inserting this run first cancels the active run holding its slot (`cancel_previous`). */
export function replacesActive(run: { replace_active?: boolean; active_subject: string | null; status: string }): boolean {
  return run.replace_active === true && run.active_subject !== null && run.status === "pending";
}

/** The audit entry of a run cancelled because a newer run of its slot replaced it. */
export function replacedAudit(holder: { id: string; workspace_id: string; active_subject: string | null }, by: { id: string }, now: number) {
  return {
    workspace_id: holder.workspace_id,
    actor: "system",
    action: "run.replaced",
    target_type: "run",
    target_id: holder.id,
    details: { replaced_by: by.id, key: holder.active_subject, reentry_policy: "cancel_previous" },
    at: now,
  };
}
