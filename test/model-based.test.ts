// The model-based test of the whole engine (short run): random sequences of commands (enroll,
// events, webhooks, approvals, stop/cancel, re-trigger, item retry, subject pause/resume, new
// versions, clock moves, restarts, a second worker, batches of events and of enrollments (repeated
// subjects and keys, a malformed element among good ones), a worker process SIGKILLed at a named crash
// point) against the real engine on each store, each checked after every command against the
// reference model in test/model-based/model.ts. Known defects are avoided (KNOWN_DEFECTS in commands.ts).
//
// The gate replays the same command sequences every time (a fixed seed), so a red suite always
// names a change, not a lucky draw; WEFT_MODEL_SEED=<n> replays another seed and
// WEFT_MODEL_SEED=random draws one. The hunt for new counterexamples is the long run with random
// seeds, `npm run chaos -- --model`; what it finds becomes a named test in
// model-based.regressions.test.ts.

import { describe, expect, it } from "vitest";
import { STORE_KINDS } from "./helpers/stores.js";
import { CHECKS, KNOWN_DEFECTS } from "./model-based/commands.js";
import { modelRun } from "./model-based/run.js";

const SEED_ENV = process.env.WEFT_MODEL_SEED;
const SEED = SEED_ENV === "random" ? undefined : SEED_ENV !== undefined ? Number(SEED_ENV) : 20261205;

describe.each(STORE_KINDS)("model-based test of the whole engine (%s store)", (kind) => {
  it("every command sequence agrees with the model and keeps the invariants", async () => {
    const res = await modelRun({ kind, sequences: 25, maxCommands: 12, avoid: KNOWN_DEFECTS, crash: true, seed: SEED });
    expect(res.counterexample).toBeNull();
    expect(res.sequences).toBe(25);
    expect(CHECKS.get("run agrees with the model") ?? 0).toBeGreaterThan(0);
  }, 300_000);
});
