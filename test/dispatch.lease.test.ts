// A run the dispatcher creates from an event is inserted holding the lease of the process that
// dispatched it, when that process's runner has room and left nothing due behind, and driven there
// at once: no claim round, no claim commit before its first step. With less room than runs, the
// leases go to the runs a claim would take first (claimOrder: priority, then id).

import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { Engine } from "../src/engine/engine.js";
import type { Run, Store } from "../src/engine/store.js";
import { LOOPBACK, WS } from "./helpers/engine.js";
import { makeStore, STORE_KINDS, type TestStore } from "./helpers/stores.js";
import { until } from "./helpers/wait.js";

describe.each(STORE_KINDS)("dispatched runs driven where they are created (%s store)", (kind) => {
  let ts: TestStore;
  const engines: Engine[] = [];
  /** Lets held actions finish (called before the engines stop, whatever the test did). */
  let release = () => {};

  beforeEach(async () => {
    ts = await makeStore(kind);
  });
  afterEach(async () => {
    release();
    for (const e of engines.splice(0)) await e.stop();
    await ts.destroy();
  });

  it("an event's run is created held by the dispatching process and runs with no claim", async () => {
    const calls = { claimRuns: 0 };
    const commits = new Map<string, number>();
    const store = new Proxy(ts.store, {
      get(target, prop, receiver) {
        const v = Reflect.get(target, prop, receiver);
        if (typeof v !== "function") return v;
        if (prop === "claimRuns") return (...a: unknown[]) => (calls.claimRuns++, v.apply(target, a));
        if (prop === "commit")
          return (owner: string, cps: { run_id: string }[]) => {
            for (const c of cps) commits.set(c.run_id, (commits.get(c.run_id) ?? 0) + 1);
            return v.apply(target, [owner, cps]);
          };
        return v.bind(target);
      },
    }) as Store;
    // Long polls: the loops run when woken (an event stored wakes the dispatcher).
    const engine = new Engine({ store, httpAllow: LOOPBACK, runner: { pollMs: 60_000 }, dispatchPollMs: 60_000 });
    engines.push(engine);
    const seen: Run[] = [];
    engine.registerAction({
      kind: "look",
      handler: async (_input, ctx) => {
        seen.push((await ts.store.getRun(WS, ctx.run_id))!);
        return {};
      },
    });
    const created: Run[] = [];
    engine.events.on("run:created", (e) => created.push(e.run));
    await engine.start();
    await engine.createAutomation(WS, {
      key: "on-event",
      name: "on event",
      triggers: [{ type: "event", name: "deal.won" }],
      reentry: { policy: "allow_concurrent" },
      root: "a",
      nodes: [
        { key: "a", kind: "look", config: {} },
        { key: "b", kind: "look", config: {} },
      ],
      edges: [{ from: "a", port: "next", to: "b" }],
    });
    // A first event, however its run starts, leaves the claim loop idle with nothing due behind.
    await engine.ingest(WS, { type: "deal.won", key: "warm", subject_id: "s0" });
    await until("the first run", () => created.length === 1 && seen.length === 2);
    await until("the runner idle", () => engine.runnerIdle);
    const claimsBefore = calls.claimRuns;
    seen.length = 0;

    await engine.ingest(WS, { type: "deal.won", key: "k1", subject_id: "s1" });
    await until("the second run created", () => created.length === 2);
    const run = created[1]!;
    // Created held by this process, as if claimed at its creation.
    expect(run).toMatchObject({ status: "running", lease_owner: engine.owner });
    const done = await engine.waitForRun(WS, run.id);
    expect(done.status).toBe("completed");
    // No claim; two commits (each action's result), none to claim it first.
    expect(calls.claimRuns).toBe(claimsBefore);
    expect(commits.get(run.id)).toBe(2);
    expect(seen).toHaveLength(2);
    for (const r of seen) expect(r).toMatchObject({ status: "running", lease_owner: engine.owner });
  });

  it("with room for one run, the dispatch leases the one a claim would take first; the others wait for the claim, in priority order", async () => {
    const runner = new Engine({ store: ts.store, httpAllow: LOOPBACK, runner: { maxInFlight: 1, claimBatch: 1, pollMs: 20 } });
    engines.push(runner);
    const started: string[] = [];
    runner.events.on("run:claimed", (p) => started.push(p.run_id));
    const created = new Map<string, Run>();
    runner.events.on("run:created", (e) => created.set(e.run.id, e.run));
    const gate = new Promise<void>((r) => (release = r));
    runner.registerAction({ kind: "hold", handler: async () => (await gate, {}) });
    await runner.start();
    await runner.createAutomation(WS, {
      key: "prio",
      name: "prio",
      triggers: [{ type: "event", name: "job" }],
      reentry: { policy: "allow_concurrent" },
      priority: "event.payload.level",
      root: "work",
      nodes: [{ key: "work", kind: "hold", config: {} }],
    });
    await until("the runner idle", () => runner.runnerIdle);
    // One batch of three events, dispatched in one round.
    await runner.ingestMany(
      WS,
      [1, 9, 5].map((level) => ({ type: "job", key: `job-${level}`, payload: { level } })),
    );
    await until("three runs created", () => created.size === 3);
    const byLevel = new Map([...created.values()].map((r) => [(r.event as { payload: { level: number } }).payload.level, r]));
    expect(byLevel.get(9)).toMatchObject({ status: "running", lease_owner: runner.owner });
    expect(byLevel.get(1)).toMatchObject({ status: "pending", lease_owner: null });
    expect(byLevel.get(5)).toMatchObject({ status: "pending", lease_owner: null });
    release();
    for (const r of created.values()) expect((await runner.waitForRun(WS, r.id)).status).toBe("completed");
    expect(started.map((id) => (created.get(id)!.event as { payload: { level: number } }).payload.level)).toEqual([9, 5, 1]);
  });
});
