// A due read is a snapshot: a run whose drive commits and ends while the claim loop's read is in
// flight can still show as due in what the read returns. Such a run is not taken again. Taking it
// would drive it a second time: its commit is refused, but a pure fast action (one that may run
// before the lease) would have run twice for one timer.

import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { ManualClock } from "../src/engine/clock.js";
import type { Engine } from "../src/engine/engine.js";
import type { Run, Store } from "../src/engine/store.js";
import { settle, startEngine, WS } from "./helpers/engine.js";
import { makeStore, STORE_KINDS, type TestStore } from "./helpers/stores.js";
import { until } from "./helpers/wait.js";

describe.each(STORE_KINDS)("a stale due read (%s store)", (kind) => {
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

  it("does not drive again a run whose drive ended while the read was in flight", async () => {
    /** When set: the due read that returns this run waits, after reading, for `release`. */
    let hold: { runId: string; read: () => void; release: Promise<void> } | null = null;
    const store = new Proxy(ts.store, {
      get(target, prop, receiver) {
        const v = Reflect.get(target, prop, receiver);
        if (typeof v !== "function") return v;
        if (prop === "dueRuns")
          return async (...a: unknown[]) => {
            const got = (await v.apply(target, a)) as Run[];
            const h = hold;
            if (h && got.some((r) => r.id === h.runId)) {
              hold = null;
              h.read();
              await h.release;
            }
            return got;
          };
        return v.bind(target);
      },
    }) as Store;
    const clock = new ManualClock(Date.UTC(2026, 0, 1));
    // A long poll: the claim loop runs only when woken.
    e = await startEngine({ store, clock, runner: { pollMs: 60_000 } });
    const engine = e;
    let calls = 0;
    let open!: () => void;
    const gate = new Promise<void>((r) => (open = r));
    engine.registerAction({
      kind: "pure",
      class: "fast",
      handler: async () => {
        calls++;
        await gate;
        return {};
      },
    });
    const a = await engine.createAutomation(WS, {
      key: "stale-due",
      name: "stale due",
      root: "wait",
      nodes: [
        { key: "wait", kind: "delay", config: { duration_ms: 300 } },
        { key: "act", kind: "pure" },
        { key: "done", kind: "end" },
      ],
      edges: [
        { from: "wait", port: "next", to: "act" },
        { from: "act", port: "next", to: "done" },
      ],
    });
    const { run } = await engine.enroll(WS, a.id, { subject_id: "s" });
    expect(run).toMatchObject({ status: "waiting", waiting_for: "delay" });
    // The timer falls due; a round's read takes it and drives it unclaimed into the pure action,
    // which waits at the gate (nothing committed yet: the run is still due in the store).
    clock.advance(300);
    engine.poke();
    await until("the first drive in the action", () => calls === 1);
    // Another round reads while that drive is in flight: the read sees the run still due.
    let read!: () => void;
    let release!: () => void;
    const hasRead = new Promise<void>((r) => (read = r));
    hold = { runId: run.id, read, release: new Promise<void>((r) => (release = r)) };
    engine.poke();
    await hasRead;
    // The first drive finishes (one commit: the delay's end, the action, the end) before the read returns.
    open();
    expect((await settle(engine, run.id)).status).toBe("completed");
    await until("the first drive to end", () => engine.busy === 0);
    release();
    await until("the claim loop asleep", () => engine.runnerIdle);
    expect(calls).toBe(1);
    expect((await engine.listSteps(WS, run.id)).map((s) => `${s.node_key}:${s.outcome}`)).toEqual([
      "wait:waiting",
      "wait:succeeded",
      "act:succeeded",
      "done:succeeded",
    ]);
  });
});
