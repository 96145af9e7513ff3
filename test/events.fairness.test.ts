// Fairness: a flood on one automation must not starve another. With 2,000 pending events (or
// runs) for automation A stored before the engine starts, automation B's few are dispatched in the
// first dispatch round, claimed among the first claims, and finished before A's 500th run.

import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { Engine } from "../src/engine/engine.js";
import { shardOf } from "../src/engine/intake.js";
import { WS, LOOPBACK } from "./helpers/engine.js";
import { makeStore, STORE_KINDS, type TestStore } from "./helpers/stores.js";
import { until } from "./helpers/wait.js";

const FLOOD = 2000;
const FEW = 3;
const FLOOD_NAME = "fair.flood";
const FEW_NAME = "fair.few";

/** Run `n` tasks with at most `width` in flight. */
async function bounded(n: number, width: number, task: (i: number) => Promise<unknown>): Promise<void> {
  let next = 0;
  await Promise.all(
    Array.from({ length: Math.min(width, n) }, async () => {
      while (next < n) await task(next++);
    }),
  );
}

function automation(key: string, eventName: string) {
  return {
    key,
    name: key,
    triggers: [{ type: "event", name: eventName }],
    reentry: { policy: "allow_concurrent" },
    root: "work",
    nodes: [
      { key: "work", kind: "set", config: { assign: { n: "1 + 1" } } },
      { key: "done", kind: "end" },
    ],
    edges: [{ from: "work", port: "next", to: "done" }],
  };
}

describe.each(STORE_KINDS)("fairness under a flood (%s store)", (kind) => {
  let ts: TestStore;
  let writer: Engine;
  let runner: Engine | null = null;
  let errors: unknown[];

  beforeEach(async () => {
    ts = await makeStore(kind);
    writer = new Engine({ store: ts.store, noRunner: true });
    await writer.start();
    errors = [];
  });
  afterEach(async () => {
    await runner?.stop();
    runner = null;
    await writer.stop();
    await ts.destroy();
    expect(errors).toEqual([]);
  });

  /** Start a working engine and record the order of claims, finishes and dispatches. */
  async function startRunner() {
    const claimed: string[] = [];
    const finished: { automation_id: string; status: string }[] = [];
    const dispatched: string[] = [];
    const e = new Engine({ httpAllow: LOOPBACK, store: ts.store, runner: { leaseMs: 30_000, pollMs: 50 } });
    e.events.on("engine:error", (x) => errors.push(x));
    e.events.on("run:claimed", (p) => claimed.push(p.automation_id));
    e.events.on("run:finished", (p) => finished.push({ automation_id: p.automation_id, status: p.status }));
    e.events.on("event:dispatched", (p) => dispatched.push(p.event_id));
    runner = e;
    await e.start();
    return { claimed, finished, dispatched };
  }

  function check(order: { claimed: string[]; finished: { automation_id: string; status: string }[] }, a: string, b: string) {
    const bClaims = order.claimed.flatMap((id, i) => (id === b ? [i] : []));
    const bFinishes = order.finished.flatMap((f, i) => (f.automation_id === b ? [i] : []));
    const a500 = order.finished.map((f, i) => ({ f, i })).filter(({ f }) => f.automation_id === a)[499]!.i;
    console.log(`[fairness ${kind}] B claimed at positions ${bClaims.join(",")}, finished at ${bFinishes.join(",")}; A's 500th finished at ${a500}`);
    expect(order.finished.filter((f) => f.status !== "completed")).toEqual([]);
    expect(bClaims).toHaveLength(FEW);
    expect(bFinishes).toHaveLength(FEW);
    // One claim takes at most 200 runs: B is in the first.
    expect(Math.max(...bClaims)).toBeLessThan(200);
    expect(Math.max(...bFinishes)).toBeLessThan(a500);
  }

  it("events: 2,000 pending for A do not hold back B's few — dispatched first round, claimed among the first claims, finished before A's 500th run", async () => {
    expect(shardOf(WS, "event", FLOOD_NAME)).not.toBe(shardOf(WS, "event", FEW_NAME)); // two streams
    const a = await writer.createAutomation(WS, automation("flooded", FLOOD_NAME));
    const b = await writer.createAutomation(WS, automation("quiet", FEW_NAME));
    await bounded(FLOOD, 20, (i) => writer.ingest(WS, { type: FLOOD_NAME, key: `flood-${i}`, payload: { i } }));
    const bEvents: string[] = [];
    for (let i = 0; i < FEW; i++) bEvents.push((await writer.ingest(WS, { type: FEW_NAME, key: `few-${i}`, payload: { i } })).event_id);

    const order = await startRunner();
    await until(`${FLOOD + FEW} finished runs`, () => order.finished.length >= FLOOD + FEW, 240_000);

    // B's events were in the first dispatch round (one round takes at most 500 events).
    const bDispatched = bEvents.map((id) => order.dispatched.indexOf(id));
    expect(bDispatched.every((i) => i >= 0 && i < 500)).toBe(true);
    check(order, a.id, b.id);
    const aRuns = await writer.listRuns({ workspace_id: WS, automation_id: a.id, status: "completed", limit: 1 });
    expect(aRuns.items).toHaveLength(1);
    expect(order.finished).toHaveLength(FLOOD + FEW);
  }, 300_000);

  it("runs: 2,000 due runs of A enrolled before the engine starts do not hold back B's few", async () => {
    const a = await writer.createAutomation(WS, automation("flooded-runs", FLOOD_NAME));
    const b = await writer.createAutomation(WS, automation("quiet-runs", FEW_NAME));
    await bounded(FLOOD, 20, (i) => writer.enroll(WS, a.id, { subject_id: `a-${i}`, idempotency_key: `a-${i}` }));
    for (let i = 0; i < FEW; i++) await writer.enroll(WS, b.id, { subject_id: `b-${i}`, idempotency_key: `b-${i}` });

    const order = await startRunner();
    await until(`${FLOOD + FEW} finished runs`, () => order.finished.length >= FLOOD + FEW, 240_000);
    check(order, a.id, b.id);
    expect(order.finished).toHaveLength(FLOOD + FEW);
  }, 300_000);
});
