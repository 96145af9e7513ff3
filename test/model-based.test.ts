// The model-based test of the whole engine (short run): random sequences of commands (enroll,
// events, webhooks, approvals, stop/cancel, re-trigger, item retry, subject pause/resume, new
// versions, clock moves, restarts, a second worker, a worker process SIGKILLed at a named crash
// point) against the real engine on each store, each checked after every command against the
// reference model in test/model-based/model.ts. Known defects are avoided (KNOWN_DEFECTS in commands.ts); `npm run chaos -- --model` is the long run.

import { describe, expect, it } from "vitest";
import { STORE_KINDS } from "./helpers/stores.js";
import { CHECKS, KNOWN_DEFECTS } from "./model-based/commands.js";
import { modelRun } from "./model-based/run.js";

describe.each(STORE_KINDS)("model-based test of the whole engine (%s store)", (kind) => {
  it("every command sequence agrees with the model and keeps the invariants", async () => {
    const res = await modelRun({ kind, sequences: 25, maxCommands: 12, avoid: KNOWN_DEFECTS, crash: true });
    expect(res.counterexample).toBeNull();
    expect(res.sequences).toBe(25);
    expect(CHECKS.get("run agrees with the model") ?? 0).toBeGreaterThan(0);
  }, 300_000);
});
