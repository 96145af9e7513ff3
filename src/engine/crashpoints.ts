// Named crash points at the commit boundaries of the runner, the dispatcher and the scheduler
// (after DBOS's debug points). Inert unless
// WEFT_CRASH_POINT names one: then the process SIGKILLs itself there, after WEFT_CRASH_AFTER
// passes (default 1), so a test can crash at each boundary and check what survives.
// WEFT_CRASH_MATCH narrows a point that names what it is at (a run, an event) to passes whose
// name contains it; WEFT_CRASH_MODE=throw makes the point throw instead of killing the process.

const target = process.env.WEFT_CRASH_POINT;
const match = process.env.WEFT_CRASH_MATCH;
const mode = process.env.WEFT_CRASH_MODE === "throw" ? "throw" : "kill";
let remaining = Number(process.env.WEFT_CRASH_AFTER ?? "1");

/** Whether this pass of `name` (at `what`) is the one to crash at. */
function armed(name: string, what: string | undefined): boolean {
  if (target === undefined || target !== name) return false;
  if (match !== undefined && !(what ?? "").includes(match)) return false;
  if (mode === "throw") return true;
  remaining -= 1;
  return remaining <= 0;
}

export async function crashPoint(name: string, what?: string): Promise<void> {
  if (!armed(name, what)) return;
  if (mode === "throw") throw new Error(`crash point ${name}`);
  process.kill(process.pid, "SIGKILL");
  await new Promise(() => undefined);
}

/** The same, for a point inside a synchronous callback (a dispatch commit's transaction). */
export function crashPointSync(name: string, what?: string): void {
  if (!armed(name, what)) return;
  if (mode === "throw") throw new Error(`crash point ${name}`);
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

/** Points a test aims at one run or event (with WEFT_CRASH_MATCH): not in the every-point crash test. */
export const TARGETED_POINTS = ["dispatcher:planning", "enroll:after-insert"] as const;
