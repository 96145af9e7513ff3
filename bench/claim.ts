// --only claim: claim latency against the number of automations. On each store, a fresh database
// with D automations that have due work (--claim-due, default 10; each with a backlog of due
// runs) and I idle ones (0, then --claim-idle, default 9,990: 10 vs 10,000 automations in all),
// in two variants: the idle automations have no live run, or each has one run parked on a timer a
// day out. Then --claim-samples claims (default 300, after 20 not counted) of --claim-limit runs
// each (default 5), one at a time, on a clock that moves 1 ms per claim (leases never lapse):
// p50/p99 of the claim call, and the ratio of the large setup to the small one. The claim's work
// should follow the automations with due work and the limit, not the idle automations.

import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import pg from "pg";
import type { Automation, NewRun, Store } from "../src/engine/store.js";
import { EmbeddedStore } from "../src/store/embedded/index.js";
import { PostgresStore } from "../src/store/postgres/index.js";

export interface ClaimOptions {
  pgUrl: string;
  stores: string[];
  due: number;
  idle: number;
  samples: number;
  limit: number;
}

const WS = "wsp_bench_claim";
const T0 = Date.UTC(2026, 0, 1);
const LEASE = 30_000;

interface Opened {
  store: Store;
  /** After the set-up's bulk writes, before measuring: the WAL checkpointed (SQLite), statistics fresh (PostgreSQL). */
  settle(): Promise<void>;
  close(): Promise<void>;
}

async function open(kind: string, pgUrl: string): Promise<Opened> {
  if (kind === "embedded") {
    const dir = mkdtempSync(join(tmpdir(), "weft-bench-claim-"));
    const store = new EmbeddedStore({ file: join(dir, "weft.db") });
    await store.migrate();
    return {
      store,
      async settle() {
        store.db.pragma("wal_checkpoint(TRUNCATE)");
      },
      async close() {
        await store.close();
        rmSync(dir, { recursive: true, force: true });
      },
    };
  }
  const schema = `bench_claim_${process.pid}_${Date.now().toString(36)}`;
  const store = new PostgresStore({ url: pgUrl, schema, poolSize: 8 });
  await store.migrate();
  return {
    store,
    async settle() {
      await store.pool.query("VACUUM ANALYZE runs, due_marks, automations");
    },
    async close() {
      await store.close();
      const c = new pg.Client({ connectionString: pgUrl });
      await c.connect();
      await c.query(`DROP SCHEMA IF EXISTS "${schema}" CASCADE`);
      await c.end();
    },
  };
}

function automation(i: number): Automation {
  const id = `aut_${String(i).padStart(6, "0")}`;
  return { id, workspace_id: WS, key: `a-${i}`, name: `a-${i}`, status: "active", current_version: 1, created_at: T0, updated_at: T0 };
}

function run(a: Automation, n: number, dueAt: number, status: "pending" | "waiting"): NewRun {
  const id = `run_${a.id}_${n}`;
  return {
    id,
    workspace_id: WS,
    automation_id: a.id,
    version: 1,
    event_id: null,
    dedupe_key: id,
    trigger_type: "event",
    subject_id: null,
    active_subject: null,
    status,
    exit_reason: null,
    current_node_key: "a",
    waiting_for: status === "waiting" ? "delay" : null,
    waiting_until: null,
    event: {},
    context: {},
    steps: {},
    cursor: { node: "a", port: null, visits: {}, since_pause: 0, attempt: 0 },
    run_as: { type: "workspace" },
    trace_id: "4bf92f3577b34da6a3ce929d0e0e4736",
    due_at: dueAt,
    started_at: T0,
  };
}

async function inBatches<T>(xs: readonly T[], size: number, width: number, f: (batch: T[]) => Promise<unknown>): Promise<void> {
  const batches: T[][] = [];
  for (let i = 0; i < xs.length; i += size) batches.push(xs.slice(i, i + size));
  let next = 0;
  await Promise.all(
    Array.from({ length: width }, async () => {
      while (next < batches.length) await f(batches[next++]!);
    }),
  );
}

async function setUp(store: Store, o: ClaimOptions, idle: number, parked: boolean): Promise<void> {
  await store.ensureWorkspace(WS, "bench", T0);
  const auts = Array.from({ length: o.due + idle }, (_, i) => automation(i));
  const def = { key: "x", name: "x", triggers: [], root: "a", nodes: [{ key: "a", kind: "end", config: {} }], edges: [] };
  await inBatches(auts, 1, 8, ([a]) => store.insertAutomation(a!, { automation_id: a!.id, version: 1, definition: { ...def, key: a!.key }, created_at: T0 }));
  // A backlog on each automation with due work: enough for every claim to find runs.
  const backlog = Math.ceil(((o.samples + 20) * o.limit) / o.due) + o.limit;
  const due = auts.slice(0, o.due).flatMap((a) => Array.from({ length: backlog }, (_, n) => run(a, n, T0 - 1000 + n, "pending")));
  const idleRuns = parked ? auts.slice(o.due).map((a) => run(a, 0, T0 + 86_400_000, "waiting")) : [];
  await inBatches([...due, ...idleRuns], 500, 2, (b) => store.insertRuns(b, T0));
}

function pct(xs: number[], p: number): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor((p / 100) * s.length))]!;
}

/** Claims on the small and the large set-up in turn, so both see the same load from the rest of the machine. */
async function measure(small: Store, large: Store, o: ClaimOptions): Promise<{ p50: number; p99: number; claimed: number }[]> {
  const lat: number[][] = [[], []];
  const claimed = [0, 0];
  for (let i = 0; i < o.samples + 20; i++) {
    for (const [k, store] of [small, large].entries()) {
      const t = performance.now();
      const got = await store.claimRuns("bench", T0 + i, LEASE, o.limit);
      const ms = performance.now() - t;
      if (i >= 20) {
        lat[k]!.push(ms);
        claimed[k]! += got.length;
      }
    }
  }
  return lat.map((l, k) => ({ p50: pct(l, 50), p99: pct(l, 99), claimed: claimed[k]! }));
}

export async function benchClaim(o: ClaimOptions): Promise<void> {
  console.log(
    `\nClaim latency: ${o.samples} claims of ${o.limit} (after 20 not counted), ${o.due} automations with due work, with 0 or ${o.idle.toLocaleString("en-US")} idle automations; the two set-ups claimed in turn`,
  );
  console.log("| store | idle automations have | automations | p50 ms | p99 ms | runs claimed | p50 vs the small set-up |");
  console.log("| --- | --- | --- | --- | --- | --- | --- |");
  for (const kind of o.stores) {
    for (const parked of [false, true]) {
      const small = await open(kind, o.pgUrl);
      const large = await open(kind, o.pgUrl);
      try {
        await setUp(small.store, o, 0, parked);
        await setUp(large.store, o, o.idle, parked);
        await small.settle();
        await large.settle();
        const [s, l] = await measure(small.store, large.store, o);
        const have = parked ? "one run parked a day out" : "no live run";
        for (const [m, n] of [
          [s!, o.due],
          [l!, o.due + o.idle],
        ] as const) {
          console.log(
            `| ${kind} | ${have} | ${n.toLocaleString("en-US")} | ${m.p50.toFixed(2)} | ${m.p99.toFixed(2)} | ${m.claimed} | ${(m.p50 / s!.p50).toFixed(2)}× |`,
          );
        }
      } finally {
        await small.close();
        await large.close();
      }
    }
  }
}
