// A run created by this process, with nothing due left behind by the claim loop, is driven at once
// (Runner.offer): no round of the claim loop (no due read, no claim) between its enroll and its
// end; its first commit takes the lease before its first action runs; the enroll's answer is the
// run as created, untouched by the drive.

import { afterEach, beforeEach, describe, expect, it } from "vitest";
import type { Engine } from "../src/engine/engine.js";
import type { Run, Store } from "../src/engine/store.js";
import { settle, startEngine, WS } from "./helpers/engine.js";
import { makeStore, STORE_KINDS, type TestStore } from "./helpers/stores.js";

describe.each(STORE_KINDS)("runs driven as soon as they are created (%s store)", (kind) => {
  let ts: TestStore;
  let e: Engine | null = null;

  beforeEach(async () => {
    ts = await makeStore(kind);
  });
  afterEach(async () => {
    await e?.stop();
    e = null;
    await ts.destroy();
  });

  it("an enrolled run runs to its end with no claim round, holding its lease when its action runs", async () => {
    const calls = { dueRuns: 0, claimRuns: 0 };
    // The real store, its claim loop's reads and claims counted.
    const store = new Proxy(ts.store, {
      get(target, prop, receiver) {
        const v = Reflect.get(target, prop, receiver);
        if (typeof v !== "function") return v;
        if (prop === "dueRuns" || prop === "claimRuns") return (...a: unknown[]) => (calls[prop]++, v.apply(target, a));
        return v.bind(target);
      },
    }) as Store;
    const seen: Run[] = [];
    // A long poll: the loop runs only when woken.
    e = await startEngine({ store, runner: { pollMs: 60_000 } });
    const engine = e;
    engine.registerAction({
      kind: "look",
      handler: async (_input, ctx) => {
        seen.push((await ts.store.getRun(WS, ctx.run_id))!);
        return { ok: true };
      },
    });
    const a = await engine.createAutomation(WS, {
      key: "offer",
      name: "offer",
      root: "a",
      reentry: { policy: "allow_concurrent" },
      nodes: [
        { key: "a", kind: "look", config: {} },
        { key: "b", kind: "look", config: {} },
      ],
      edges: [{ from: "a", port: "next", to: "b" }],
    });
    // A first run, however it starts, leaves the loop idle with nothing due behind.
    const { run: first } = await engine.enroll(WS, a.id, { subject_id: "first" });
    await settle(engine, first.id);
    seen.length = 0;
    const before = { ...calls };
    for (let i = 0; i < 3; i++) {
      const { run } = await engine.enroll(WS, a.id, { subject_id: `s${i}` });
      expect(run.status).toBe("pending");
      const done = await settle(engine, run.id);
      expect(done.status).toBe("completed");
      // The answer was not touched by the drive.
      expect(run).toMatchObject({ status: "pending", completed_at: null, current_node_key: "a" });
    }
    expect(calls).toEqual(before);
    expect(seen).toHaveLength(6);
    for (const r of seen) expect(r).toMatchObject({ status: "running", lease_owner: engine.owner });
  });
});
