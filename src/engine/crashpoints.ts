// Named crash points at the commit boundaries of the runner, the dispatcher and the scheduler
// (after DBOS's debug points). Inert unless
// WEFT_CRASH_POINT names one: then the process SIGKILLs itself there, after WEFT_CRASH_AFTER
// passes (default 1), so a test can crash at each boundary and check what survives.

const target = process.env.WEFT_CRASH_POINT;
let remaining = Number(process.env.WEFT_CRASH_AFTER ?? "1");

export async function crashPoint(name: string): Promise<void> {
  if (target === undefined || target !== name) return;
  remaining -= 1;
  if (remaining > 0) return;
  process.kill(process.pid, "SIGKILL");
  await new Promise(() => undefined);
}

/** The same, for a point inside a synchronous callback (a dispatch plan runs inside its transaction). */
export function crashPointSync(name: string): void {
  if (target === undefined || target !== name) return;
  remaining -= 1;
  if (remaining > 0) return;
  process.kill(process.pid, "SIGKILL");
}

/** Every named point, for the test that crashes at each one. */
export const CRASH_POINTS = [
  "runner:after-step-effect",
  "runner:before-checkpoint",
  "runner:after-checkpoint",
  "dispatcher:inside-transaction",
  "dispatcher:after-commit",
  "scheduler:inside-transaction",
  "scheduler:after-commit",
] as const;
