// A model-based test of the concurrency slot rules on each store: random sequences of acquire
// (at a run's gate or a step's), a run ending (its commit, or an operator's cancel of a parked
// run), a claim, a worker's death (its lease lapses) and clock moves, driven through the real Store
// (real runs, claims, commits and leases), each checked against a small reference model: who may
// take a slot (per-key FIFO), who is woken when a slot frees, what is held and waiting per key.
// The gate replays a fixed seed; WEFT_MODEL_SEED=<n> replays another.

import fc from "fast-check";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ManualClock } from "../src/engine/clock.js";
import type { Engine } from "../src/engine/engine.js";
import type { Run, RunState, Store } from "../src/engine/store.js";
import { startEngine, WS } from "./helpers/engine.js";
import { makeStore, STORE_KINDS, type TestStore } from "./helpers/stores.js";

const SEED = process.env.WEFT_MODEL_SEED !== undefined ? Number(process.env.WEFT_MODEL_SEED) : 20261206;
const RUNS = 6;
const LIMIT = 1;
const LEASE = 10_000;
const FAR = 1e13;
const OWNER = "flow-model";
/** What the sequences exercised (a model test that never waited or lapsed would prove little). */
const seen = { waits: 0, woken: 0, lapsedStepSlots: 0, passes: 0 };

type Cmd = { op: "acquire" | "end" | "lapse"; run: number } | { op: "claim" } | { op: "tick" };
const cmdArb: fc.Arbitrary<Cmd> = fc.oneof(
  { weight: 5, arbitrary: fc.record({ op: fc.constant("acquire" as const), run: fc.nat(RUNS - 1) }) },
  { weight: 3, arbitrary: fc.record({ op: fc.constant("end" as const), run: fc.nat(RUNS - 1) }) },
  { weight: 2, arbitrary: fc.record({ op: fc.constant("lapse" as const), run: fc.nat(RUNS - 1) }) },
  { weight: 3, arbitrary: fc.constant({ op: "claim" as const }) },
  { weight: 1, arbitrary: fc.constant({ op: "tick" as const }) },
);

/** The reference: one run's state as the slot rules see it. */
interface M {
  id: string;
  key: string;
  status: "running" | "waiting" | "ended";
  leaseUntil: number;
  due: number;
  slot: boolean;
  since: number | null;
}

class Model {
  now: number;
  constructor(
    readonly runs: M[],
    now: number,
    readonly stepLevel: boolean,
  ) {
    this.now = now;
  }
  private heldNow(r: M): boolean {
    return r.slot && r.status !== "ended" && (!this.stepLevel || (r.status === "running" && r.leaseUntil > this.now));
  }
  held(key: string, except?: M): number {
    return this.runs.filter((r) => r.key === key && r !== except && this.heldNow(r)).length;
  }
  waiters(key: string): M[] {
    return this.runs
      .filter((r) => r.key === key && r.since !== null && r.status !== "ended")
      .sort((a, b) => a.since! - b.since! || (a.id < b.id ? -1 : a.id > b.id ? 1 : 0));
  }
  acquire(r: M): boolean {
    for (const o of this.runs) if (o.key === r.key && o.slot && !this.heldNow(o)) o.slot = false; // the acquire's clean-up
    const w = this.waiters(r.key).filter((o) => o !== r);
    const older = r.since === null ? w.length : w.filter((o) => o.since! < r.since! || (o.since === r.since && o.id < r.id)).length;
    const pass = r.slot || this.held(r.key, r) + older < LIMIT;
    if (pass) {
      r.slot = true;
      r.since = null;
    } else r.since ??= this.now;
    return pass;
  }
  wake(key: string): void {
    const n = Math.max(0, LIMIT - this.held(key));
    for (const w of this.waiters(key).slice(0, n)) if (w.status === "waiting" && w.due > this.now) w.due = this.now;
  }
  claimable(): M[] {
    return this.runs.filter((r) => (r.status === "waiting" && r.due <= this.now) || (r.status === "running" && r.leaseUntil <= this.now));
  }
}

describe.each(STORE_KINDS)("model-based test of the slot rules (%s store)", (kind) => {
  let ts: TestStore;
  let engine: Engine;
  const clock = new ManualClock(Date.UTC(2026, 0, 1));
  let seq = 0;

  beforeAll(async () => {
    ts = await makeStore(kind);
    engine = await startEngine({ store: ts.store, clock, noRunner: true });
  });
  afterAll(async () => {
    await engine.stop();
    await ts.destroy();
  });

  async function commit(store: Store, run: Run & { rev: number }, state: Partial<RunState>, now: number): Promise<void> {
    const base: RunState = {
      status: "waiting",
      exit_reason: null,
      current_node_key: "call",
      waiting_for: null,
      waiting_until: null,
      context: {},
      steps: {},
      cursor: run.cursor,
      items_total: 0,
      items_failed: 0,
      interruptions: run.interruptions,
      due_at: null,
      keep_lease: false,
      completed_at: null,
      updated_at: now,
    };
    const [res] = await store.commit(OWNER, [{ run_id: run.id, expected_rev: run.rev, state: { ...base, ...state }, steps: [] }]);
    expect(res?.applied, `commit of ${run.id}`).toBe(true);
    run.rev += 1;
  }

  async function sequence(cmds: Cmd[], stepLevel: boolean): Promise<void> {
    const store = ts.store;
    const n = ++seq;
    const scope = `cm:${n}`;
    const stepKey = stepLevel ? "step" : "";
    const a = await engine.createAutomation(WS, {
      key: `flow-model-${n}`,
      name: "m",
      root: "call",
      nodes: [{ key: "call", kind: "set", config: { assign: {} } }],
    });
    const rows = new Map<string, Run & { rev: number }>();
    const model = new Model([], clock.now(), stepLevel);
    for (let i = 0; i < RUNS; i++) {
      const { run } = await engine.enroll(WS, a.id, { subject_id: `s${i}` });
      model.runs.push({ id: run.id, key: `k${i % 2}`, status: "running", leaseUntil: 0, due: 0, slot: false, since: null });
    }
    for (const r of await store.claimRuns(OWNER, clock.now(), LEASE, 100)) rows.set(r.id, r);
    expect([...rows.keys()].sort()).toEqual(model.runs.map((r) => r.id).sort());
    for (const r of model.runs) r.leaseUntil = clock.now() + LEASE;

    const gate = (r: M) => ({ scope, key: r.key, limit: LIMIT, label: "concurrency" });
    const check = async (what: string) => {
      const stats = (await store.flowStats(WS, clock.now(), 1000)).filter((s) => s.scope === scope);
      for (const key of ["k0", "k1"]) {
        const s = stats.find((x) => x.key === key);
        expect({ held: s?.held ?? 0, waiting: s?.waiting ?? 0 }, `${what}: key ${key}`).toEqual({ held: model.held(key), waiting: model.waiters(key).length });
        expect(model.held(key)).toBeLessThanOrEqual(LIMIT);
      }
    };

    for (const c of cmds) {
      const now = clock.now();
      model.now = now;
      if (c.op === "tick") {
        clock.advance(10);
        continue;
      }
      if (c.op === "claim") {
        const want = model
          .claimable()
          .map((r) => r.id)
          .sort();
        seen.woken += model.claimable().filter((r) => r.status === "waiting").length;
        const got = (await store.claimRuns(OWNER, now, LEASE, 100)).filter((r) => rows.has(r.id));
        for (const r of got) rows.set(r.id, r);
        expect(got.map((r) => r.id).sort(), "claimed").toEqual(want);
        for (const id of want) {
          const m = model.runs.find((r) => r.id === id)!;
          m.status = "running";
          m.leaseUntil = now + LEASE;
        }
        await check("after claim");
        continue;
      }
      const m = model.runs[c.run]!;
      const row = rows.get(m.id)!;
      const live = m.status === "running" && m.leaseUntil > now;
      if (c.op === "acquire" && live) {
        const want = model.acquire(m);
        const d = await store.acquireFlow({ workspace_id: WS, run_id: m.id, step_key: stepKey, slots: [gate(m)], rate: null, reserved_at: null }, now);
        expect(d.kind, `acquire by ${m.id}`).toBe(want ? "pass" : "wait_slot");
        if (want) seen.passes++;
        else seen.waits++;
        if (!want) {
          // The gate parks the run, then wakes a free slot's waiters (itself, when one freed meanwhile).
          await commit(store, row, { status: "waiting", waiting_for: "concurrency", due_at: FAR }, now);
          m.status = "waiting";
          m.due = FAR;
          model.wake(m.key);
          await store.wakeFlowWaiters(WS, [gate(m)], now);
        }
        await check("after acquire");
      } else if (c.op === "end" && (live || m.status === "waiting")) {
        if (live) {
          await commit(store, row, { status: "completed", exit_reason: "completed", current_node_key: null, completed_at: now }, now);
          m.status = "ended";
          model.wake(m.key);
          await store.wakeFlowWaiters(WS, [gate(m)], now);
        } else {
          // An operator's cancel of a parked run: no worker commits, so nobody wakes (waiters re-check once per lease).
          await store.controlRun(
            WS,
            m.id,
            "cancel",
            { workspace_id: WS, actor: "test", action: "run.cancel", target_type: "run", target_id: m.id, details: {}, at: now },
            now,
          );
          m.status = "ended";
        }
        await check("after end");
      } else if (c.op === "lapse" && live) {
        // The worker driving this run dies: every other lease is renewed, then the clock passes this one's.
        const others = model.runs.filter((r) => r !== m && r.status === "running" && r.leaseUntil > now);
        const renewed = await store.renewLeases(
          OWNER,
          others.map((r) => r.id),
          now + 10 * LEASE,
        );
        expect(renewed.sort()).toEqual(others.map((r) => r.id).sort());
        for (const r of others) r.leaseUntil = now + 10 * LEASE;
        clock.advance(LEASE + 1);
        model.now = clock.now();
        if (stepLevel && m.slot) seen.lapsedStepSlots++;
        await check("after a lapse");
      }
      // Woken runs are due now: the model's and the store's due times agree.
      for (const r of model.runs.filter((x) => x.status === "waiting")) {
        const real = await store.getRun(WS, r.id);
        expect(real?.due_at !== null && real!.due_at <= clock.now(), `${r.id} due`).toBe(r.due <= clock.now());
      }
    }
    // Clean up: end every run of the sequence so the next one's claims see only its own.
    model.now = clock.now();
    for (const m of model.runs.filter((r) => r.status !== "ended")) {
      await store.controlRun(
        WS,
        m.id,
        "stop",
        { workspace_id: WS, actor: "test", action: "run.stop", target_type: "run", target_id: m.id, details: {}, at: clock.now() },
        clock.now(),
      );
    }
    clock.advance(20 * LEASE);
    for (const r of await store.claimRuns(OWNER, clock.now(), LEASE, 100)) {
      if (rows.has(r.id))
        await commit(store, r, { status: "exited", exit_reason: "admin_stopped", current_node_key: null, completed_at: clock.now() }, clock.now());
    }
  }

  it("acquire, release, lease lapse and wake-ups agree with the model", { timeout: 300_000 }, async () => {
    Object.assign(seen, { waits: 0, woken: 0, lapsedStepSlots: 0, passes: 0 });
    await fc.assert(
      fc.asyncProperty(fc.array(cmdArb, { minLength: 5, maxLength: 30 }), fc.boolean(), async (cmds, stepLevel) => {
        await sequence(cmds, stepLevel);
      }),
      { numRuns: 40, seed: SEED, endOnFailure: true },
    );
    console.log(`[flow model ${kind}] ${JSON.stringify(seen)}`);
    expect(seen.waits).toBeGreaterThan(0);
    expect(seen.woken).toBeGreaterThan(0);
    expect(seen.lapsedStepSlots).toBeGreaterThan(0);
  });
});
