// A run enrolled into a root delay is created parked on it: its insert writes what the drive's
// park commit would have written (status, cursor, due time, the delay's step row), so a timer costs
// one write. The run is the same run a drive would have parked; a run an enrollment rule skips is
// recorded as skipped, with no step and an untouched cursor.

import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { ManualClock } from "../src/engine/clock.js";
import { Engine } from "../src/engine/engine.js";
import type { Run, StepRun } from "../src/engine/store.js";
import { WS } from "./helpers/engine.js";
import { makeStore, STORE_KINDS, type TestStore } from "./helpers/stores.js";

const T0 = Date.UTC(2026, 5, 1);

const timer = (key: string, reentry: string) => ({
  key,
  name: key,
  root: "wait",
  reentry: { policy: reentry },
  nodes: [
    { key: "wait", kind: "delay", config: { duration_ms: 60_000 } },
    { key: "mark", kind: "set", config: { assign: { fired: "true" } } },
  ],
  edges: [{ from: "wait", port: "next", to: "mark" }],
});

/** A run's record with what names it (ids, keys, revision, lease) left out. */
function shape(r: Run) {
  const { id: _i, dedupe_key: _d, trace_id: _t, rev: _r, lease_owner: _l, updated_at: _u, subject_id: _s, event: _e, unsettled_claims: _c, ...rest } = r;
  return rest;
}
const stepShape = (s: StepRun) => {
  const { id: _i, run_id: _r, idempotency_key: k, ...rest } = s;
  return { ...rest, key: k.slice(k.indexOf("/")) };
};

describe.each(STORE_KINDS)("a run created parked on its root delay (%s store)", (kind) => {
  let ts: TestStore;
  let clock: ManualClock;
  let worker: Engine;
  let api: Engine;
  let commits: number;

  beforeEach(async () => {
    ts = await makeStore(kind);
    commits = 0;
    const commit = ts.store.commit.bind(ts.store);
    ts.store.commit = (owner, cps) => ((commits += cps.length), commit(owner, cps));
    clock = new ManualClock(T0);
    worker = new Engine({ store: ts.store, clock, runner: { pollMs: 20, leaseMs: 5_000 } });
    await worker.start();
    // A process that only takes requests: it creates runs as they are, and leaves them to a worker.
    api = new Engine({ store: ts.store, clock, noRunner: true });
    await api.start();
  });
  afterEach(async () => {
    await api.stop();
    await worker.stop();
    await ts.destroy();
  });

  it("is the run a drive would have parked, written by its insert alone", async () => {
    const a = await worker.createAutomation(WS, timer("parked", "allow_concurrent"));
    // Parked by the insert, in the process that drives it.
    const { run: made } = await worker.enroll(WS, a.id, { subject_id: "x" });
    expect(made).toMatchObject({ status: "waiting", waiting_for: "delay", due_at: T0 + 60_000, current_node_key: "wait" });
    expect(commits).toBe(0);
    // The same enrollment made by a process that drives nothing: inserted pending, then parked by the worker's drive.
    const { run: pending } = await api.enroll(WS, a.id, { subject_id: "x" });
    expect(pending.status).toBe("pending");
    const parked = await worker.waitForRun(WS, pending.id, (r) => r.status === "waiting");
    expect(commits).toBe(1);

    const first = (await worker.getRun(WS, made.id))!;
    expect(shape(first)).toEqual(shape(parked));
    expect((await worker.listSteps(WS, made.id)).map(stepShape)).toEqual((await worker.listSteps(WS, pending.id)).map(stepShape));
    expect((await worker.listSteps(WS, made.id)).map((s) => `${s.node_key}:${s.outcome}`)).toEqual(["wait:waiting"]);

    // Both fire alike when the delay ends.
    clock.advance(60_000);
    worker.poke();
    const [x, y] = await Promise.all([worker.waitForRun(WS, made.id), worker.waitForRun(WS, pending.id)]);
    expect(x).toMatchObject({ status: "completed", context: { fired: true } });
    expect(shape(x)).toEqual(shape(y));
    expect((await worker.listSteps(WS, made.id)).map(stepShape)).toEqual((await worker.listSteps(WS, pending.id)).map(stepShape));
  });

  it("a run an enrollment rule skips is recorded as skipped: no step, its cursor untouched", async () => {
    const a = await worker.createAutomation(WS, timer("skipped", "skip_if_active"));
    const { run: holder } = await worker.enroll(WS, a.id, { subject_id: "s" });
    expect(holder.status).toBe("waiting");
    const [one, two] = await worker.enrollMany(WS, a.id, [{ subject_id: "s" }, { subject_id: "t" }]);
    if (!one || !("run" in one) || !two || !("run" in two)) throw new Error("enrollment refused");
    expect(one.run).toMatchObject({ status: "exited", exit_reason: "already_active", due_at: null, waiting_for: null });
    expect(one.run.cursor).toEqual(expect.objectContaining({ node: "wait", visits: {} }));
    expect(one.run.cursor.parked).toBeUndefined();
    expect(await worker.listSteps(WS, one.run.id)).toEqual([]);
    // Its neighbour in the same call is created parked.
    expect(two.run).toMatchObject({ status: "waiting", waiting_for: "delay" });
    expect((await worker.listSteps(WS, two.run.id)).map((s) => s.outcome)).toEqual(["waiting"]);
  });
});
