// Slow work never blocks fast work: slow steps in flight hold no database connection and do not
// delay other runs. 100 slow steps wait at once on a PostgreSQL pool of 10 connections (each
// holding one would be impossible), while fast runs start, finish and are committed.

import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { Engine } from "../src/engine/engine.js";
import { PostgresStore } from "../src/store/postgres/index.js";
import { WS, LOOPBACK } from "./helpers/engine.js";
import { makeStore, STORE_KINDS, type TestStore } from "./helpers/stores.js";
import { until } from "./helpers/wait.js";

const SLOW = 100;
const FAST = 20;

describe.each(STORE_KINDS)("slow and fast work (%s store)", (kind) => {
  let ts: TestStore;
  let engine: Engine;

  beforeEach(async () => {
    ts = await makeStore(kind);
  });
  afterEach(async () => {
    await engine?.stop();
    await ts.destroy();
  });

  it("100 slow steps in flight hold no connection, and fast runs finish meanwhile", async () => {
    let release!: () => void;
    const gate = new Promise<void>((r) => (release = r));
    let entered = 0;
    engine = new Engine({ httpAllow: LOOPBACK, store: ts.store, runner: { leaseMs: 30_000, pollMs: 20 } });
    engine.registerAction({
      kind: "think",
      handler: async () => {
        entered++;
        await gate; // an AI call that takes as long as the test wants
        return { answer: 42 };
      },
    });
    await engine.start();
    const slow = await engine.createAutomation(WS, {
      key: "slow",
      name: "slow",
      root: "think",
      reentry: { policy: "allow_concurrent" },
      nodes: [
        { key: "think", kind: "think", config: {} },
        { key: "done", kind: "end" },
      ],
      edges: [{ from: "think", port: "next", to: "done" }],
    });
    const fast = await engine.createAutomation(WS, {
      key: "fast",
      name: "fast",
      root: "s",
      reentry: { policy: "allow_concurrent" },
      nodes: [
        { key: "s", kind: "set", config: { assign: { ok: "true" } } },
        { key: "done", kind: "end" },
      ],
      edges: [{ from: "s", port: "next", to: "done" }],
    });
    for (let i = 0; i < SLOW; i++) await engine.enroll(WS, slow.id, { subject_id: `slow-${i}` });
    await until("every slow step in flight", () => entered === SLOW);

    if (ts.store instanceof PostgresStore) {
      // The pool has 10 connections and 100 steps are waiting: none of them holds one.
      expect(ts.store.pool.options.max).toBe(10);
      expect(ts.store.pool.waitingCount).toBe(0);
    }

    const fastRuns = [];
    for (let i = 0; i < FAST; i++) fastRuns.push((await engine.enroll(WS, fast.id, { subject_id: `fast-${i}` })).run.id);
    const done = await Promise.all(fastRuns.map((id) => engine.waitForRun(WS, id)));
    expect(done.map((r) => r.status)).toEqual(fastRuns.map(() => "completed"));
    expect(entered).toBe(SLOW); // the slow steps are all still waiting
    const stillSlow = await engine.listRuns({ workspace_id: WS, automation_id: slow.id, status: "running", limit: 500 });
    expect(stillSlow.items).toHaveLength(SLOW);

    release();
    await until("every slow run completed", async () => {
      const page = await engine.listRuns({ workspace_id: WS, automation_id: slow.id, status: "completed", limit: 500 });
      return page.items.length === SLOW;
    });
  }, 120_000);
});
