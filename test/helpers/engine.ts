// Engine fixtures for tests: an engine on a real store, with short leases and a loopback sink.

import { Engine, DEFAULT_WORKSPACE, type EngineOptions } from "../../src/engine/engine.js";
import type { Run } from "../../src/engine/store.js";

export const WS = DEFAULT_WORKSPACE;

/** Test servers listen on 127.0.0.1, which the SSRF guard refuses unless allowed (as operators do with WEFT_HTTP_ALLOW). */
export const LOOPBACK = ["127.0.0.1"];

export async function startEngine(opts: EngineOptions): Promise<Engine> {
  const e = new Engine({ httpAllow: LOOPBACK, ...opts, runner: { leaseMs: 2000, pollMs: 50, ...opts.runner } });
  await e.start();
  return e;
}

/** Wait until the run is terminal (or `pred` holds). */
export function settle(e: Engine, runId: string, pred?: (r: Run) => boolean): Promise<Run> {
  return e.waitForRun(WS, runId, pred);
}
