// The unclaimed pass's read (Store.dueRuns): every automation's due runs in the claim's order
// (claimKey, then id), read through the claim-key index (migration 020) up to the largest key a due
// run can have. A run due exactly now at the lowest priority sits at that bound: a bound short by
// any part of the priority range would leave it out, and a run with a low key that is not due yet
// must stay out.

import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { claimKey, type Automation, type Run, type Store } from "../src/engine/store.js";
import { AGING_STEP_MS, PRIORITY_MAX, PRIORITY_MIN } from "../src/model/priority.js";
import { PostgresStore } from "../src/store/postgres/index.js";
import { tuplesRead as tuplesReadOf } from "./helpers/pg-stats.js";
import { insertEndAutomation, plannedRun } from "./helpers/planned-runs.js";
import { makeStore, PG_URL, STORE_KINDS, type TestStore } from "./helpers/stores.js";

const T0 = Date.UTC(2026, 0, 1);
const WS = "wsp_due";
let seq = 0;
const nextId = (prefix: string) => `${prefix}_${(++seq).toString().padStart(6, "0")}`;

const addAutomation = (store: Store, key: string): Promise<Automation> => insertEndAutomation(store, nextId("aut"), WS, key, T0);

async function insert(store: Store, a: Automation, due_at: number, priority: number): Promise<Run> {
  const res = await store.insertRun(plannedRun(a, nextId("run"), T0, { due_at, priority }), T0);
  expect(res.created).toBe(true);
  return res.run;
}

const byClaim = (runs: readonly Run[]) =>
  [...runs].sort(
    (p, q) => claimKey({ due_at: p.due_at!, priority: p.priority }) - claimKey({ due_at: q.due_at!, priority: q.priority }) || (p.id < q.id ? -1 : 1),
  );

describe.each(STORE_KINDS)("due runs for the unclaimed pass (%s store)", (kind) => {
  let ts: TestStore;
  let store: Store;

  beforeEach(async () => {
    ts = await makeStore(kind);
    store = ts.store;
    await store.ensureWorkspace(WS, "due", T0);
  });
  afterEach(async () => {
    await ts.destroy();
  });

  it("returns every due run in claim order, including the one due now at the lowest priority (the bound), and no run not yet due", async () => {
    const now = T0 + 600_000;
    const x = await addAutomation(store, "x");
    const y = await addAutomation(store, "y");
    const due: Run[] = [];
    // Due now at the lowest priority: key now + |PRIORITY_MIN| s, exactly the read's bound.
    due.push(await insert(store, x, now, PRIORITY_MIN));
    // One millisecond earlier at the lowest priority, and due now one step above it.
    due.push(await insert(store, y, now - 1, PRIORITY_MIN));
    due.push(await insert(store, y, now, PRIORITY_MIN + 1));
    // Long overdue, highest priority (the lowest keys), and a spread in between, in both automations.
    due.push(await insert(store, x, now - 300_000, PRIORITY_MAX));
    for (let i = 0; i < 20; i++) due.push(await insert(store, i % 2 ? x : y, now - i * 7_000, ((i * 37) % 201) - 100));
    // Not due: a millisecond from now at the highest priority (a key 100 s in the past), one a day out.
    await insert(store, x, now + 1, PRIORITY_MAX);
    await insert(store, y, now + 86_400_000, 0);

    const all = await store.dueRuns(now, 1000);
    expect(all.map((r) => r.id)).toEqual(byClaim(due).map((r) => r.id));
    expect(all.map((r) => r.id)).toContain(due[0]!.id);
    expect(claimKey({ due_at: now, priority: PRIORITY_MIN })).toBe(now - PRIORITY_MIN * AGING_STEP_MS);
    // A limit takes the front of that order: the highest priority first.
    expect((await store.dueRuns(now, 3)).map((r) => r.id)).toEqual(
      byClaim(due)
        .slice(0, 3)
        .map((r) => r.id),
    );
    // One millisecond before, the run due now is not due yet.
    expect((await store.dueRuns(now - 1, 1000)).map((r) => r.id)).not.toContain(due[0]!.id);
  });

  it("a batch at the bound: many runs due now at the lowest priority behind a backlog are all read, in id order", async () => {
    const now = T0 + 600_000;
    const x = await addAutomation(store, "x");
    const low: Run[] = [];
    for (let i = 0; i < 30; i++) low.push(await insert(store, x, now, PRIORITY_MIN));
    const backlog: Run[] = [];
    for (let i = 0; i < 30; i++) backlog.push(await insert(store, x, now - 60_000 - i, 0));
    const got = await store.dueRuns(now, 1000);
    expect(got.map((r) => r.id)).toEqual([...byClaim(backlog), ...byClaim(low)].map((r) => r.id));
  });
});

// What a due read costs: it reads the due runs, not the runs parked on timers due soon. One range
// up to now + |PRIORITY_MIN| s read every run due in the next 100 s and dropped it by its due time
// (100,000 timers due within a minute made each read scan most of them); the read is now two
// ranges (migration 021). Counted from PostgreSQL's own statistics (index tuples read on runs),
// on a store of one connection so a single backend does, and reports, all the work. The table is
// not analyzed, so the planner reads the claim-key indexes, the ranges this is about (with fresh
// statistics it may read the due-time index instead, which was never the problem).
describe.skipIf(!STORE_KINDS.includes("postgres"))("due reads do not read the runs parked on later timers (postgres store)", () => {
  let ts: TestStore;
  let one: PostgresStore;

  beforeEach(async () => {
    ts = await makeStore("postgres");
    await ts.store.ensureWorkspace(WS, "due", T0);
    one = new PostgresStore({ url: PG_URL, schema: ts.env.WEFT_DATABASE_SCHEMA!, poolSize: 1 });
  });
  afterEach(async () => {
    await one.close();
    await ts.destroy();
  });

  /** Index tuples read on runs by the one connection so far (its statistics flushed first). */
  const tuplesRead = () => tuplesReadOf(one.pool, ts.env.WEFT_DATABASE_SCHEMA!, "runs");

  it("the unclaimed pass's read and the claim each read a few index tuples, with 2,000 runs parked on timers due within 100 s", async () => {
    const now = T0 + 600_000;
    const a = await addAutomation(ts.store, "timers");
    const due: string[] = [];
    for (let i = 0; i < 2_005; i++) {
      const r = await insert(ts.store, a, i < 5 ? now - 1_000 + i : now + 1 + i * 49, 0);
      if (i < 5) due.push(r.id);
    }
    const before = await tuplesRead();
    const read = await one.dueRuns(now, 50);
    const afterRead = await tuplesRead();
    expect(read.map((r) => r.id)).toEqual(due);
    expect(afterRead - before).toBeLessThan(100);
    const claimed = await one.claimRuns("owner-1", now, 30_000, 50);
    const afterClaim = await tuplesRead();
    expect(claimed.map((r) => r.id).sort()).toEqual([...due].sort());
    expect(afterClaim - afterRead).toBeLessThan(200);
  });
});
