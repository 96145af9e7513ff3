// A run created by this process, with nothing due left behind by the claim loop, is driven at once:
// no round of the claim loop (no due read, no claim) between its enroll and its end. Enrolled, it
// is inserted holding this process's lease (Runner.leaseForInserts), so its first action runs leased
// with no claim commit before it; the enroll's answer is the run as created, untouched by the drive.

import { afterEach, beforeEach, describe, expect, it } from "vitest";
import type { Engine } from "../src/engine/engine.js";
import { ManualClock } from "../src/engine/clock.js";
import { StepFailure, stepError } from "../src/model/errors.js";
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
    /** Checkpoints committed per run. */
    const commits = new Map<string, number>();
    // The real store, its claim loop's reads and claims counted, and its commits.
    const store = new Proxy(ts.store, {
      get(target, prop, receiver) {
        const v = Reflect.get(target, prop, receiver);
        if (typeof v !== "function") return v;
        if (prop === "dueRuns" || prop === "claimRuns") return (...a: unknown[]) => (calls[prop]++, v.apply(target, a));
        if (prop === "commit")
          return (owner: string, cps: { run_id: string }[]) => {
            for (const c of cps) commits.set(c.run_id, (commits.get(c.run_id) ?? 0) + 1);
            return v.apply(target, [owner, cps]);
          };
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
      // Created held by this process (as if claimed at its creation), due at its lease's end.
      expect(run).toMatchObject({ status: "running", lease_owner: engine.owner, unsettled_claims: 1 });
      const done = await settle(engine, run.id);
      expect(done.status).toBe("completed");
      // The answer was not touched by the drive.
      expect(run).toMatchObject({ status: "running", completed_at: null, current_node_key: "a", rev: 0 });
      // Two commits for two actions: the first action's result (before the second starts), and the
      // end. No claim commit before the first.
      expect(commits.get(run.id)).toBe(2);
    }
    expect(calls).toEqual(before);
    expect(seen).toHaveLength(6);
    for (const r of seen) expect(r).toMatchObject({ status: "running", lease_owner: engine.owner });
  });

  it("a run created while a claim is in flight is not offered: the claim could take it too, and it would be driven twice", async () => {
    // The real store; its claim held open on demand, and the first commits of unclaimed drives
    // held until that claim has read (so the claim would see such a run still unheld).
    let hold: { entered: () => void; release: Promise<void> } | null = null;
    let claimOpen: Promise<void> | null = null;
    const store = new Proxy(ts.store, {
      get(target, prop, receiver) {
        const v = Reflect.get(target, prop, receiver);
        if (typeof v !== "function") return v;
        if (prop === "claimRuns")
          return async (...a: unknown[]) => {
            const h = hold;
            hold = null;
            if (!h) return v.apply(target, a);
            let done!: () => void;
            claimOpen = new Promise<void>((r) => (done = r));
            h.entered();
            await h.release;
            try {
              return await v.apply(target, a);
            } finally {
              done();
            }
          };
        if (prop === "commit")
          return async (owner: string, cps: { claim?: unknown }[]) => {
            if (claimOpen && cps.some((c) => c.claim)) await claimOpen;
            return v.apply(target, [owner, cps]);
          };
        return v.bind(target);
      },
    }) as Store;
    // Time moves only when told: the run created during the claim is due as of the claim's now,
    // as when its enroll committed just after a round began.
    const clock = new ManualClock(Date.UTC(2026, 0, 1));
    e = await startEngine({ store, clock, runner: { pollMs: 60_000 } });
    const engine = e;
    const claims = new Map<string, number>();
    engine.events.on("run:claimed", (x) => claims.set(x.run_id, (claims.get(x.run_id) ?? 0) + 1));
    let touches = 0;
    engine.registerAction({
      kind: "touch",
      handler: async () => {
        if (++touches === 1) throw new StepFailure(stepError("test.flaky", "first call fails", true));
        return { ok: true };
      },
    });
    // B's action fails once and is retried: when the retry falls due, the claim loop's round leaves
    // it to the claim (it needs the lease before its action runs).
    const b = await engine.createAutomation(WS, {
      key: "offer-b",
      name: "b",
      root: "act",
      nodes: [{ key: "act", kind: "touch", config: {}, retry: { max_attempts: 2, initial_ms: 300, max_ms: 300 } }],
    });
    const a = await engine.createAutomation(WS, {
      key: "offer-a",
      name: "a",
      root: "note",
      reentry: { policy: "allow_concurrent" },
      nodes: [{ key: "note", kind: "set", config: { assign: { n: "1" } } }],
    });
    const { run: warm } = await engine.enroll(WS, a.id, { subject_id: "warm" });
    await settle(engine, warm.id);
    let entered!: () => void;
    let release!: () => void;
    const inClaim = new Promise<void>((r) => (entered = r));
    hold = { entered, release: new Promise<void>((r) => (release = r)) };
    const { run: parked } = await engine.enroll(WS, b.id, { subject_id: "b" });
    await settle(engine, parked.id, (r) => r.status === "retrying");
    clock.advance(300);
    engine.poke();
    await inClaim; // B's retry fell due; the round's claim is open
    const { run: x } = await engine.enroll(WS, a.id, { subject_id: "x" });
    release();
    expect((await settle(engine, x.id)).status).toBe("completed");
    clock.advance(300); // B's retry, if the claim left it
    expect((await settle(engine, parked.id)).status).toBe("completed");
    expect(claims.get(x.id)).toBe(1);
  });
});
