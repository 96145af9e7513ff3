// The enrollment decision: whether a new run on a subject starts, or is recorded as exited at once.
// Checked in this order, the first that holds deciding the reason:
//   subject_paused    an operator paused the subject (for this automation or all) and the pause holds now
//   reentry_cooldown  a run of this automation on this subject finished within the cooldown
//   already_active    another run of this automation holds the subject (one active run per subject)
// Only a pending run with a subject is checked. Runs skipped by this decision never ran, so they
// neither start a cooldown nor hold the subject. The stores evaluate each check atomically with
// the insert (SQL), but the order, the reasons and the skipped row's shape are decided here.

export const ENROLLMENT_CHECKS = ["subject_paused", "reentry_cooldown", "already_active"] as const;
export type EnrollmentSkip = (typeof ENROLLMENT_CHECKS)[number];

/** Exit reasons of runs that never ran: a finished run with one of these does not start a cooldown. */
export const NOT_ENROLLED: readonly EnrollmentSkip[] = ENROLLMENT_CHECKS;

/** Whether the enrollment checks apply to a new run at all. */
export function isEnrollmentChecked(run: { subject_id: string | null; status: string }): boolean {
  return run.subject_id !== null && run.status === "pending";
}

/** The first check that holds, in the order above; `holds` is asked lazily, in that order. */
export function enrollmentSkip(holds: (check: EnrollmentSkip) => boolean): EnrollmentSkip | null {
  for (const check of ENROLLMENT_CHECKS) if (holds(check)) return check;
  return null;
}

/** The row a skipped enrollment records: exited with the reason, not due, not holding the subject. */
export function skippedEnrollment<R extends object>(run: R, reason: EnrollmentSkip, now: number) {
  return { ...run, status: "exited" as const, exit_reason: reason, active_subject: null, due_at: null, completed_at: now, current_node_key: null };
}
