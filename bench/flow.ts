// --only flow: what flow control costs and whether it keeps keys apart.
//   1. Key fairness: one automation with a per-key concurrency limit (`{{ context.k }}`, 5 per
//      key); one key is flooded (--flow-flood N runs enrolled in batches of 1,000, default 100,000),
//      and 50 other keys get one enrollment every 20 ms between them. Measured: the other keys'
//      enroll → run start p50/p99, beside the same trickle on an idle engine (no flood), and their
//      ratio. (Runs, not events: events of one stream are dispatched in the order they arrived,
//      so a flood of one event name delays that name's later events by the dispatch backlog.)
//   2. Cost: N three-step no-op runs (--runs) started 50 at a time with no limit, then with a
//      concurrency limit that never binds (every run its own key), then with one that does (10
//      keys, 5 each): runs/s of each, and the cost per limited run in µs.

import { Engine, DEFAULT_WORKSPACE } from "../src/engine/engine.js";
import type { Store } from "../src/engine/store.js";

export interface FlowFairness {
  idleP50: number;
  idleP99: number;
  floodP50: number;
  floodP99: number;
  n: number;
  floodStarted: number;
}

export interface FlowCost {
  variant: string;
  runsPerS: number;
}

type OpenStore = () => Promise<{ store: Store; cleanup: () => Promise<void> }>;

const pct = (xs: number[], p: number) => {
  if (xs.length === 0) return Number.NaN;
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.ceil((p / 100) * s.length) - 1)]!;
};

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

const work = { kind: "work", handler: async () => ({ ok: true }) };

/** The trickle's enroll → start delays, with `flood` runs of one hot key enrolled first. */
async function trickle(open: OpenStore, flood: number, keys: number, each: number): Promise<{ delays: number[]; floodStarted: number }> {
  const { store, cleanup } = await open();
  const writer = new Engine({ store, noRunner: true });
  await writer.start();
  writer.registerAction(work);
  const aut = await writer.createAutomation(DEFAULT_WORKSPACE, {
    key: "flow-keys",
    name: "Per-key concurrency",
    root: "w",
    reentry: { policy: "allow_concurrent" },
    concurrency: [{ key: "{{ context.k }}", limit: 5 }],
    nodes: [{ key: "w", kind: "work", config: {} }],
  });
  for (let i = 0; i < flood; i += 1000) {
    const batch = Array.from({ length: Math.min(1000, flood - i) }, () => ({ context_overrides: { k: "hot" } }));
    await writer.enrollMany(DEFAULT_WORKSPACE, aut.id, batch);
  }
  const engine = new Engine({ store, httpAllow: ["127.0.0.1"], runner: { pollMs: 20 } });
  engine.registerAction(work);
  const claimedAt = new Map<string, number>();
  engine.events.on("run:claimed", (e) => {
    if (!claimedAt.has(e.run_id)) claimedAt.set(e.run_id, performance.now());
  });
  await engine.start();
  // Let the flood get going before the trickle starts.
  await sleep(flood > 0 ? 1000 : 0);
  const total = keys * each;
  const cold: { id: string; t0: number }[] = [];
  for (let i = 0; i < total; i++) {
    const t0 = performance.now();
    const { run } = await engine.enroll(DEFAULT_WORKSPACE, aut.id, { context_overrides: { k: `cold${i % keys}` } });
    cold.push({ id: run.id, t0 });
    await sleep(20);
  }
  for (let i = 0; i < 1000 && cold.some((c) => !claimedAt.has(c.id)); i++) await sleep(20);
  const delays = cold.filter((c) => claimedAt.has(c.id)).map((c) => claimedAt.get(c.id)! - c.t0);
  const floodStarted = claimedAt.size - delays.length;
  await engine.stop();
  await writer.stop();
  await store.close();
  await cleanup();
  return { delays, floodStarted };
}

export async function benchFlowFairness(open: OpenStore, flood: number): Promise<FlowFairness> {
  const idle = await trickle(open, 0, 50, 4);
  const busy = await trickle(open, flood, 50, 4);
  return {
    idleP50: pct(idle.delays, 50),
    idleP99: pct(idle.delays, 99),
    floodP50: pct(busy.delays, 50),
    floodP99: pct(busy.delays, 99),
    n: busy.delays.length,
    floodStarted: busy.floodStarted,
  };
}

/** N three-step runs, 50 in flight at a time (started as others finish), under `concurrency` (or none). */
async function closedLoop(open: OpenStore, runs: number, concurrency: { key?: string; limit: number }[] | undefined, keyOf: (i: number) => string) {
  const { store, cleanup } = await open();
  const engine = new Engine({ store, httpAllow: ["127.0.0.1"], runner: { pollMs: 20 } });
  engine.registerAction(work);
  await engine.start();
  const aut = await engine.createAutomation(DEFAULT_WORKSPACE, {
    key: "flow-cost",
    name: "Flow control cost",
    root: "a",
    reentry: { policy: "allow_concurrent" },
    ...(concurrency ? { concurrency } : {}),
    nodes: [
      { key: "a", kind: "work", config: {} },
      { key: "b", kind: "work", config: {} },
      { key: "c", kind: "work", config: {} },
    ],
    edges: [
      { from: "a", port: "next", to: "b" },
      { from: "b", port: "next", to: "c" },
    ],
  });
  let started = 0;
  let finished = 0;
  let done!: () => void;
  const all = new Promise<void>((r) => (done = r));
  const startOne = () => {
    const i = started++;
    void engine.enroll(DEFAULT_WORKSPACE, aut.id, { subject_id: `s${i}`, context_overrides: { k: keyOf(i) } });
  };
  engine.events.on("run:finished", (e) => {
    if (e.automation_id !== aut.id) return;
    finished++;
    if (finished === runs) done();
    else if (started < runs) startOne();
  });
  const t0 = performance.now();
  for (let i = 0; i < Math.min(50, runs); i++) startOne();
  await all;
  const s = (performance.now() - t0) / 1000;
  await engine.stop();
  await store.close();
  await cleanup();
  return runs / s;
}

export async function benchFlowCost(open: OpenStore, runs: number): Promise<FlowCost[]> {
  const none = await closedLoop(open, runs, undefined, () => "");
  const loose = await closedLoop(open, runs, [{ key: "{{ context.k }}", limit: 5 }], (i) => `k${i}`);
  const binding = await closedLoop(open, runs, [{ key: "{{ context.k }}", limit: 5 }], (i) => `k${i % 10}`);
  return [
    { variant: "no limit", runsPerS: none },
    { variant: "concurrency limit that never binds (a key per run)", runsPerS: loose },
    { variant: "concurrency limit that binds (10 keys × 5 slots, 50 in flight)", runsPerS: binding },
  ];
}
