// Named crash points at the runner's commit boundaries (after DBOS's debug points). Inert unless
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
