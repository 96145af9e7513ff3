// reentry.policy `once`: a subject is enrolled at most once per automation, however long after its
// first run ended (the second enrollment exits reentry_cooldown); other subjects are unaffected.

import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { Engine } from "../src/engine/engine.js";
import { settle, startEngine, WS } from "./helpers/engine.js";
import { makeStore, STORE_KINDS, type TestStore } from "./helpers/stores.js";
import { ManualClock } from "../src/engine/clock.js";

describe.each(STORE_KINDS)("reentry once (%s store)", (kind) => {
  let ts: TestStore;
  let engine: Engine;
  const clock = new ManualClock(Date.parse("2026-01-01T00:00:00Z"));

  beforeAll(async () => {
    ts = await makeStore(kind);
    engine = await startEngine({ store: ts.store, clock });
  });
  afterAll(async () => {
    await engine?.stop();
    await ts?.destroy();
  });

  it("a subject's second enrollment, a year after its first run completed, exits reentry_cooldown; another subject runs", async () => {
    const a = await engine.createAutomation(WS, {
      key: "once",
      name: "once",
      reentry: { policy: "once" },
      root: "done",
      nodes: [{ key: "done", kind: "end" }],
    });
    const first = await engine.enroll(WS, a.id, { subject_id: "ct_1" });
    expect((await settle(engine, first.run.id)).status).toBe("completed");
    clock.advance(365 * 86_400_000);
    const again = await engine.enroll(WS, a.id, { subject_id: "ct_1" });
    expect(again.run).toMatchObject({ status: "exited", exit_reason: "reentry_cooldown" });
    const other = await engine.enroll(WS, a.id, { subject_id: "ct_2" });
    expect((await settle(engine, other.run.id)).status).toBe("completed");
  });
});
