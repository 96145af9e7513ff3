// The claim's raise (migration 014): an automation left with nothing due gets one mark, its earliest
// due_at, exactly. On PostgreSQL it is read off the claim-key indexes since migration 023 (not an
// index on (automation_id, due_at)): among runs of priority 0 and above up to the first one's
// due_at in key order, below 0 up to 100 s past it. Each case puts the earliest due run somewhere
// else in key order; a mark later than the earliest due_at leaves that run unclaimed when it comes
// due, one earlier makes the claim visit the automation early.

import { afterEach, beforeEach, describe, expect, it } from "vitest";
import pg from "pg";
import type { Automation, Run, Store } from "../src/engine/store.js";
import type { EmbeddedStore } from "../src/store/embedded/index.js";
import { PostgresStore } from "../src/store/postgres/index.js";
import { tuplesRead as tuplesReadOf } from "./helpers/pg-stats.js";
import { insertEndAutomation, plannedRun } from "./helpers/planned-runs.js";
import { makeStore, PG_URL, STORE_KINDS, type TestStore } from "./helpers/stores.js";

const T0 = Date.UTC(2026, 0, 1);
const S = 1000;
/** Longer than every case: the claimed run (due at its lease's end) is never the earliest. */
const LEASE = 10 * 86_400_000;
const WS = "wsp_raise";
let seq = 0;
const nextId = (prefix: string) => `${prefix}_${(++seq).toString().padStart(6, "0")}`;

const addAutomation = (store: Store, key: string): Promise<Automation> => insertEndAutomation(store, nextId("aut"), WS, key, T0);

async function insert(store: Store, a: Automation, due_at: number, priority: number): Promise<Run> {
  const res = await store.insertRun(plannedRun(a, nextId("run"), T0, { due_at, priority }), T0);
  expect(res.created).toBe(true);
  return res.run;
}

/** The due marks of one automation (ms), read straight from the store's database. */
async function marksOf(ts: TestStore, automationId: string): Promise<number[]> {
  const sql = "SELECT due_at FROM due_marks WHERE automation_id = $1 ORDER BY due_at";
  if (ts.kind === "embedded") {
    const db = (ts.store as unknown as EmbeddedStore).db;
    return db.prepare(sql.replace("$1", "?")).pluck().all(automationId) as number[];
  }
  const c = new pg.Client({ connectionString: ts.env.WEFT_DATABASE_URL });
  await c.connect();
  try {
    await c.query(`SET search_path TO "${ts.env.WEFT_DATABASE_SCHEMA}"`);
    return (await c.query<{ due_at: Date }>(sql, [automationId])).rows.map((r) => r.due_at.getTime());
  } finally {
    await c.end();
  }
}

// Parked runs as [due_at − T0 in s, priority]; the claim key is due_at − priority s.
const CASES: { name: string; parked: [number, number][]; earliest: number }[] = [
  {
    name: "the earliest run has priority 0; a higher priority run has the first key",
    parked: [
      [60, 0],
      [100, 50],
      [70, -30],
    ],
    earliest: 60,
  },
  {
    name: "the earliest run has a positive priority",
    parked: [
      [60, 0],
      [40, 50],
      [90, 0],
    ],
    earliest: 40,
  },
  {
    name: "the first key (priority 100) is not the earliest; a priority 0 run after it in key order is",
    parked: [
      [90, 100],
      [80, 0],
      [85, 3],
    ],
    earliest: 80,
  },
  {
    name: "the earliest run has a negative priority and a late key",
    parked: [
      [60, 0],
      [30, -100],
      [75, 10],
    ],
    earliest: 30,
  },
  {
    name: "only negative priorities; the first key is not the earliest",
    parked: [
      [220, -10],
      [200, -50],
      [400, -1],
    ],
    earliest: 200,
  },
  { name: "one run far out", parked: [[86_400, 0]], earliest: 86_400 },
];

describe.each(STORE_KINDS)("the claim raises an automation's mark to its earliest due time (%s store)", (kind) => {
  let ts: TestStore;
  let store: Store;

  beforeEach(async () => {
    ts = await makeStore(kind);
    store = ts.store;
    await store.ensureWorkspace(WS, "raise", T0);
    // The first claim of this store object (it sweeps), before anything exists.
    expect(await store.claimRuns("w1", T0 - 1, LEASE, 10)).toEqual([]);
  });
  afterEach(async () => {
    await ts.destroy();
  });

  for (const c of CASES) {
    it(c.name, async () => {
      const x = await addAutomation(store, "x");
      const due = await insert(store, x, T0, 0);
      const parked = [];
      for (const [at, p] of c.parked) parked.push(await insert(store, x, T0 + at * S, p));
      // The claim takes the one due run; x is left with nothing due and its marks are raised.
      expect((await store.claimRuns("w1", T0, LEASE, 10)).map((r) => r.id)).toEqual([due.id]);
      expect(await marksOf(ts, x.id)).toEqual([T0 + c.earliest * S]);
      // The earliest run is claimed when it comes due, not a moment before.
      expect(await store.claimRuns("w1", T0 + c.earliest * S - 1, LEASE, 10)).toEqual([]);
      const first = parked.find((r) => r.due_at === T0 + c.earliest * S)!;
      expect((await store.claimRuns("w1", T0 + c.earliest * S, LEASE, 10)).map((r) => r.id)).toEqual([first.id]);
    });
  }

  it("the claimed run's lease counts: raised to the lease's end when it is the earliest due time left", async () => {
    const x = await addAutomation(store, "x");
    const due = await insert(store, x, T0, 0);
    await insert(store, x, T0 + 60 * S, 0);
    expect((await store.claimRuns("w1", T0, 30 * S, 10)).map((r) => r.id)).toEqual([due.id]);
    expect(await marksOf(ts, x.id)).toEqual([T0 + 30 * S]);
  });
});

// With fresh statistics the planner knows how few runs are due, and plans the claim's statements
// with their values (plpgsql's first five calls in a session): the per-automation read, the "due
// run left" probe and the raise still read the due runs and the front of the key order, not the
// runs parked on timers. Counted from PostgreSQL's own statistics on a store of one connection,
// as in due-runs.test.ts.
describe.skipIf(!STORE_KINDS.includes("postgres"))("the claim's reads with fresh statistics (postgres store)", () => {
  let ts: TestStore;
  let one: PostgresStore;

  beforeEach(async () => {
    ts = await makeStore("postgres");
    await ts.store.ensureWorkspace(WS, "raise", T0);
    one = new PostgresStore({ url: PG_URL, schema: ts.env.WEFT_DATABASE_SCHEMA!, poolSize: 1 });
  });
  afterEach(async () => {
    await one.close();
    await ts.destroy();
  });

  it("a claim of 5 due runs beside 2,000 parked on timers reads a few index tuples, and raises the mark to the next timer", async () => {
    const x = await addAutomation(ts.store, "timers");
    const due: string[] = [];
    for (let i = 0; i < 2_005; i++) {
      const r = await insert(ts.store, x, i < 5 ? T0 - 1_000 + i : T0 + 1 + i * 49, 0);
      if (i < 5) due.push(r.id);
    }
    await one.pool.query("ANALYZE runs");
    const before = await tuplesReadOf(one.pool, ts.env.WEFT_DATABASE_SCHEMA!, "runs");
    expect((await one.claimRuns("w1", T0, 30 * S, 50)).map((r) => r.id).sort()).toEqual([...due].sort());
    const read = (await tuplesReadOf(one.pool, ts.env.WEFT_DATABASE_SCHEMA!, "runs")) - before;
    expect(read).toBeLessThan(200);
    expect(await marksOf(ts, x.id)).toEqual([T0 + 1 + 5 * 49]);
  });
});

// Planner settings the store relies on under load (migration 025 and the pool's options): JIT
// compiled a short statement for hundreds of milliseconds when its estimate passed jit_above_cost,
// and a bitmap scan of the claim's range re-read every dead entry of the runs fired since the last
// vacuum (a plain index scan stops at its limit and marks the dead entries it passes).
describe.skipIf(!STORE_KINDS.includes("postgres"))("the store's planner settings (postgres store)", () => {
  let ts: TestStore;

  beforeEach(async () => {
    ts = await makeStore("postgres");
  });
  afterEach(async () => {
    await ts.destroy();
  });

  it("runs its statements without JIT, and the claim without bitmap scans", async () => {
    const pool = (ts.store as PostgresStore).pool;
    expect((await pool.query<{ jit: string }>("SHOW jit")).rows[0]!.jit).toBe("off");
    const { rows } = await pool.query<{ config: string[] | null }>(
      "SELECT p.proconfig AS config FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace WHERE p.proname = 'weft_claim' AND n.nspname = $1",
      [ts.env.WEFT_DATABASE_SCHEMA],
    );
    expect(rows).toHaveLength(1);
    expect(rows[0]!.config).toContain("enable_bitmapscan=off");
  });
});
