// Which worker hears a targeted wake-up (dispatch, claim): the live workers other than the
// sender, read from their heartbeats in the real store, each held for a while in turn, so that a
// worker gets a run of wake-ups and does their work in its own batches.

import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { ManualClock } from "../src/engine/clock.js";
import { TARGET_HOLD_MS, WorkerTargets } from "../src/engine/wakeups.js";
import { makeStore, STORE_KINDS, type TestStore } from "./helpers/stores.js";

describe.each(STORE_KINDS)("targeted wake-ups (%s store)", (kind) => {
  let ts: TestStore;
  const clock = new ManualClock(Date.now());
  const beat = (id: string, role: "worker" | "api" | "all") => ts.store.heartbeat({ id, role, host: "h", pid: 1, started_at: clock.now() }, clock.now());

  beforeEach(async () => {
    ts = await makeStore(kind);
    await beat("self", "worker");
    await beat("w1", "worker");
    await beat("w2", "worker");
    await beat("api", "api");
  });
  afterEach(async () => {
    await ts.destroy();
  });

  it("names one other live worker for a hold's time, then the next; never itself or an API process", async () => {
    const targets = new WorkerTargets(ts.store, clock, "self");
    // Not read yet: pickKnown reads the live processes first.
    const first = await targets.pickKnown();
    expect(["w1", "w2"]).toContain(first);
    // Within the hold: the same worker every time.
    for (let i = 0; i < 5; i++) {
      clock.advance(TARGET_HOLD_MS / 10);
      expect(targets.pick()).toBe(first);
    }
    // The hold over: the other one, then back.
    clock.advance(TARGET_HOLD_MS);
    const second = targets.pick();
    expect(second).not.toBe(first);
    expect(["w1", "w2"]).toContain(second);
    clock.advance(TARGET_HOLD_MS);
    expect(targets.pick()).toBe(first);
  });

  it("names nobody when no other worker is alive (a process alone tells nobody)", async () => {
    const alone = new WorkerTargets(ts.store, clock, "w9");
    await ts.store.forgetProcess("w1");
    await ts.store.forgetProcess("w2");
    await ts.store.forgetProcess("self");
    expect(await alone.pickKnown()).toBeNull();
  });
});
