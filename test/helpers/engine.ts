// Engine fixtures for tests: an engine on a real store, with short leases and a loopback sink.

import { Engine, DEFAULT_WORKSPACE, type EngineOptions } from "../../src/engine/engine.js";
import type { Run } from "../../src/engine/store.js";

export const WS = DEFAULT_WORKSPACE;

export async function startEngine(opts: EngineOptions): Promise<Engine> {
  const e = new Engine({ ...opts, runner: { leaseMs: 2000, pollMs: 50, ...opts.runner } });
  await e.start();
  return e;
}

/** Wait until the run is terminal (or `pred` holds). */
export function settle(e: Engine, runId: string, pred?: (r: Run) => boolean): Promise<Run> {
  return e.waitForRun(WS, runId, pred);
}
