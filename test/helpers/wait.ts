// Waiting in tests: poll a condition (usually the store) at short intervals, with a cap that
// fails the test naming what never happened. Never a fixed sleep standing in for the engine.

export const sleep = (ms: number): Promise<void> => new Promise<void>((resolve) => setTimeout(resolve, ms));

export async function until<T>(
  what: string,
  fn: () => T | null | undefined | false | Promise<T | null | undefined | false>,
  capMs = 30_000,
  everyMs = 25,
): Promise<T> {
  const deadline = Date.now() + capMs;
  for (;;) {
    const v = await fn();
    if (v) return v;
    if (Date.now() > deadline) throw new Error(`timed out after ${capMs} ms waiting for ${what}`);
    await sleep(everyMs);
  }
}
