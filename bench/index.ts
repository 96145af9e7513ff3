// npm run bench: figures for the engine core on this machine.
//   1. PostgreSQL's single-row commit rate (the physical limit a commit-per-step design hits).
//   2. 5,000 runs of a 3-step automation on each store, each step a checkpointed no-op action
//      (its result committed before the next step starts): runs/s, steps/s, and the p50/p99 time
//      from one step's commit to the next step's start.
//   3. Event intake over HTTP: events accepted/s with p50/p99 latency, load from a second process;
//      one event per request, and beside it the batch form (POST /v1/events with an array of
//      --intake-batch events, default and at most the endpoint's maximum, 1,000, over 4
//      connections): events/s counts the events of the requests answered within the load's time,
//      latency is per request.
//   4. Fairness: while automation A takes a 20,000-event flood, the p99 delay from event to run
//      start for automation B's occasional events.
//   5. Fan-out: one run whose for_each runs a no-op action over 10,000 items: items/s.
//   6. Slow steps held: N runs parked inside a 30-second slow step (an AI call) at once in one
//      process, while fast runs keep starting: fast-run latency with and without the slow load.
// Options: --runs N (default 5000), --stores embedded,postgres, --only core,intake,fairness,fanout,hold,
//          --flood N (default 20000), --seconds N (intake load duration, default 5), --items N (fan-out, default 10000),
//          --slow N (slow steps held, default 2000), --hold-seconds N (default 30), --profile,
//          --intake-batch N (events per request in the intake batch rows, 1..1000, default 1000)
//   7. --compare (or --only compare): side by side with the peers users would pick instead (DBOS
//      Transact, graphile-worker, pg-boss), each in its own process on its own fresh PostgreSQL
//      database, and Weft on both stores. Workloads (--workloads runs,fanout,timers,intake):
//      runs: N three-step no-op runs counted two ways, in one table: "50 in flight", a closed
//      loop (a new run starts as each finishes, so work is processed while it is enqueued; every
//      system in a process of its own on a fresh database, Weft through bench/peers/weft.mjs),
//      with PostgreSQL's cost per step metered from outside meanwhile (bench/pg-meter.ts: commits
//      from pg_stat_database.xact_commit on the system's database, CPU ms of the backends serving
//      it from /proc/<pid>/stat, WAL bytes server-wide); and "enroll all first", every run started
//      (50 at a time) before waiting for the work. Plus the p50/p99 latency of one three-step run
//      started alone (--samples N, default 200). fanout: one run over --items items;
//      timers: --timers N (default 100,000) runs parked on timers due within one minute
//      (lateness p50/p99/max, memory; --timer-lead S: when the minute opens, default N/1000 s,
//      at least 30); Weft parks them through batch enrollment (enrollMany, 1,000 a call).
//      intake: events over HTTP for --seconds, and Weft's batch rows (--intake-batch) beside.
//      --peers "graphile-worker,pg-boss" runs only those peers beside Weft (default: all three).
//   8. --only fleet: one API process and 1, 2, 4 worker processes on one PostgreSQL beside one
//      process doing it all (bench/fleet.ts; paced: --fleet-paced N events at --fleet-rate R/s for latency,
//      default 200 at 20/s; closed: --fleet-events N, --fleet-concurrency C at a time, for runs/s and CPU
//      per run; --fleet-workers 1,2,4;
//      --fleet-polling adds each fleet with WEFT_WAKEUPS=0 beside it), and in the same table
//      graphile-worker with 1, 2, 4 worker processes doing the same three HTTP calls as chained
//      jobs added by a separate process (--fleet-graphile 1,2,4, default --fleet-workers' counts;
//      "none" leaves it out).
//   9. --only notify: what a LISTEN/NOTIFY wake-up costs a PostgreSQL commit (bench/notify.ts).
//  10. --only flow: flow control (bench/flow.ts): one key flooded (--flow-flood N, default 100,000)
//      under a per-key concurrency limit while 50 other keys trickle (their event → start p99 beside
//      an idle engine's), and the runs/s cost of a concurrency limit that never binds and one that does.
//      --only flow-rate (bench/flow-rate.ts): a rate limit (--rate-limit N per second, default 50)
//      shared by three processes, observed at a loopback destination over --rate-seconds (default 60).
//  11. --only claim: claim latency with 10 vs 10,000 automations, 10 of them with due work (bench/claim.ts;
//      --claim-due N, --claim-idle N, --claim-samples N, --claim-limit N).

import { existsSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { parseArgs } from "node:util";
import { spawn } from "node:child_process";
import os from "node:os";
import { fileURLToPath } from "node:url";
import pg from "pg";
import { buildApp } from "../src/server/app.js";
import { Engine, DEFAULT_WORKSPACE, MAX_BATCH } from "../src/engine/engine.js";
import type { Store } from "../src/engine/store.js";
import { EmbeddedStore } from "../src/store/embedded/index.js";
import { PostgresStore } from "../src/store/postgres/index.js";
import { node22 } from "./node22.js";
import { pgMeter, type PgCost } from "./pg-meter.js";

const PG_URL = process.env.WEFT_TEST_DATABASE_URL ?? "postgres://postgres@127.0.0.1:5432/test";
const { values: args } = parseArgs({
  options: {
    runs: { type: "string", default: "5000" },
    stores: { type: "string", default: "embedded,postgres" },
    profile: { type: "boolean", default: false },
    only: { type: "string", default: "core,intake,fairness,fanout,hold" },
    flood: { type: "string", default: "20000" },
    seconds: { type: "string", default: "5" },
    items: { type: "string", default: "10000" },
    slow: { type: "string", default: "2000" },
    "hold-seconds": { type: "string", default: "30" },
    compare: { type: "boolean", default: false },
    samples: { type: "string", default: "200" },
    workloads: { type: "string", default: "runs,fanout,timers,intake" },
    peers: { type: "string" },
    timers: { type: "string", default: "100000" },
    "timer-lead": { type: "string" },
    "fleet-events": { type: "string", default: "2000" },
    "fleet-concurrency": { type: "string", default: "32" },
    "fleet-paced": { type: "string", default: "200" },
    "fleet-rate": { type: "string", default: "20" },
    "fleet-workers": { type: "string", default: "1,2,4" },
    "fleet-polling": { type: "boolean", default: false },
    "flow-flood": { type: "string", default: "100000" },
    "rate-limit": { type: "string", default: "50" },
    "rate-seconds": { type: "string", default: "60" },
    "fleet-graphile": { type: "string" },
    "intake-batch": { type: "string", default: String(MAX_BATCH) },
    "claim-due": { type: "string", default: "10" },
    "claim-idle": { type: "string", default: "9990" },
    "claim-samples": { type: "string", default: "300" },
    "claim-limit": { type: "string", default: "5" },
  },
});
const ONLY = new Set(args.only!.split(","));
const RUNS = Number(args.runs);

function pct(xs: number[], p: number): number {
  if (xs.length === 0) return NaN;
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor((p / 100) * s.length))]!;
}
const f1 = (n: number) => n.toLocaleString("en-US", { maximumFractionDigits: 1 });
const f0 = (n: number) => Math.round(n).toLocaleString("en-US");

async function pgCommitRate(seconds = 3, clients = 8): Promise<number> {
  const schema = `bench_commit_${process.pid}`;
  const admin = new pg.Client({ connectionString: PG_URL });
  await admin.connect();
  await admin.query(`DROP SCHEMA IF EXISTS ${schema} CASCADE; CREATE SCHEMA ${schema}; CREATE TABLE ${schema}.t (id bigserial PRIMARY KEY, v text)`);
  const pool = new pg.Pool({ connectionString: PG_URL, max: clients });
  let n = 0;
  const end = performance.now() + seconds * 1000;
  await Promise.all(
    Array.from({ length: clients }, async () => {
      while (performance.now() < end) {
        await pool.query({ name: "ins", text: `INSERT INTO ${schema}.t (v) VALUES ($1)`, values: ["x"] });
        n++;
      }
    }),
  );
  await pool.end();
  await admin.query(`DROP SCHEMA ${schema} CASCADE`);
  await admin.end();
  return n / seconds;
}

/** --profile: a CPU profile of the execution phase only, written to the working folder. */
async function startProfile(): Promise<(file: string) => Promise<void>> {
  const { Session } = await import("node:inspector/promises");
  const { writeFileSync } = await import("node:fs");
  const s = new Session();
  s.connect();
  await s.post("Profiler.enable");
  await s.post("Profiler.start");
  return async (file) => {
    const { profile } = await s.post("Profiler.stop");
    writeFileSync(file, JSON.stringify(profile));
    s.disconnect();
    console.log(`profile written to ${file}`);
  };
}

const THREE_STEPS = {
  key: "bench-three",
  name: "Three checkpointed steps",
  root: "a",
  nodes: [
    { key: "a", kind: "noop", config: {} },
    { key: "b", kind: "noop", config: {} },
    { key: "c", kind: "noop", config: {} },
  ],
  edges: [
    { from: "a", port: "next", to: "b" },
    { from: "b", port: "next", to: "c" },
  ],
};

interface Result {
  store: string;
  enrollPerS: number;
  runsPerS: number;
  stepsPerS: number;
  p50: number;
  p99: number;
  seconds: number;
  commits: number;
  avgBatch: number;
}

async function openBenchStore(kind: "embedded" | "postgres"): Promise<{ store: Store; cleanup: () => Promise<void> }> {
  let store: Store;
  let cleanup: () => Promise<void>;
  if (kind === "embedded") {
    const dir = mkdtempSync(join(tmpdir(), "weft-bench-"));
    store = new EmbeddedStore({ file: join(dir, "weft.db") });
    cleanup = async () => rmSync(dir, { recursive: true, force: true });
  } else {
    const schema = `bench_${process.pid}`;
    const c = new pg.Client({ connectionString: PG_URL });
    await c.connect();
    await c.query(`DROP SCHEMA IF EXISTS ${schema} CASCADE`);
    await c.end();
    store = new PostgresStore({ url: PG_URL, schema, poolSize: 8 });
    cleanup = async () => {
      const d = new pg.Client({ connectionString: PG_URL });
      await d.connect();
      await d.query(`DROP SCHEMA IF EXISTS ${schema} CASCADE`);
      await d.end();
    };
  }
  await store.migrate();
  return { store, cleanup };
}

async function benchStore(kind: "embedded" | "postgres"): Promise<Result> {
  const { store, cleanup } = await openBenchStore(kind);
  const committedAt = new Map<string, number>(); // run id → time its latest checkpoint committed
  const gaps: number[] = [];
  const register = (e: Engine) =>
    e.registerAction({
      kind: "noop",
      handler: (_input, ctx) => {
        const t = committedAt.get(ctx.run_id);
        if (t !== undefined) gaps.push(performance.now() - t);
        return { ok: true };
      },
    });
  const writer = new Engine({ store, noRunner: true });
  register(writer);
  await writer.start();
  const a = await writer.createAutomation(DEFAULT_WORKSPACE, THREE_STEPS);
  const t0 = performance.now();
  const BATCH = 50;
  for (let i = 0; i < RUNS; i += BATCH) {
    await Promise.all(Array.from({ length: Math.min(BATCH, RUNS - i) }, (_, j) => writer.enroll(DEFAULT_WORKSPACE, a.id, { subject_id: `s${i + j}` })));
  }
  const enrollS = (performance.now() - t0) / 1000;

  const engine = new Engine({ store, httpAllow: ["127.0.0.1"], runner: { pollMs: 20 } });
  register(engine);
  let finished = 0;
  let commits = 0;
  let committedRuns = 0;
  engine.events.on("step:finished", (e) => committedAt.set(e.run_id, performance.now()));
  engine.events.on("checkpoint:committed", (e) => {
    commits++;
    committedRuns += e.runs;
  });
  const done = new Promise<void>((resolve) => engine.events.on("run:finished", () => ++finished === RUNS && resolve()));
  const profiler = args.profile ? await startProfile() : null;
  const t1 = performance.now();
  await engine.start();
  await done;
  const secs = (performance.now() - t1) / 1000;
  if (profiler) await profiler(`bench-${kind}.cpuprofile`);
  await engine.stop();
  await writer.stop();
  await store.close();
  await cleanup();
  return {
    store: kind,
    enrollPerS: RUNS / enrollS,
    runsPerS: RUNS / secs,
    stepsPerS: (RUNS * 3) / secs,
    p50: pct(gaps, 50),
    p99: pct(gaps, 99),
    seconds: secs,
    commits,
    avgBatch: committedRuns / Math.max(1, commits),
  };
}

const stores = args.stores!.split(",") as ("embedded" | "postgres")[];
console.log(`weft bench on node ${process.version}, ${os.cpus().length} cores (${os.cpus()[0]?.model ?? "?"})`);
let limit = NaN;
if (stores.includes("postgres") || args.compare || ONLY.has("compare")) {
  limit = await pgCommitRate();
  console.log(`PostgreSQL single-row INSERT commits/s (8 clients, 3 s): ${f0(limit)}`);
}
if (ONLY.has("core")) {
  console.log(`\n## ${RUNS} runs × 3 checkpointed no-op steps`);
  const rows: Result[] = [];
  for (const s of stores) rows.push(await benchStore(s));
  console.log("\n| store | enroll runs/s | runs/s | steps/s | steps/s ÷ PG commit rate | commit→next step p50 / p99 ms | commits | runs per commit |");
  console.log("| --- | --- | --- | --- | --- | --- | --- | --- |");
  for (const r of rows) {
    console.log(
      `| ${r.store} | ${f0(r.enrollPerS)} | ${f0(r.runsPerS)} | ${f0(r.stepsPerS)} | ${Number.isNaN(limit) ? "-" : f1(r.stepsPerS / limit) + "×"} | ${f1(r.p50)} / ${f1(r.p99)} | ${r.commits} | ${f1(r.avgBatch)} |`,
    );
  }
}
/** Events per request in the intake batch rows (POST /v1/events with an array): --intake-batch, at most MAX_BATCH. */
const INTAKE_BATCH = Number(args["intake-batch"]);
if (!Number.isInteger(INTAKE_BATCH) || INTAKE_BATCH < 1 || INTAKE_BATCH > MAX_BATCH)
  throw new Error(`--intake-batch must be a whole number from 1 to ${MAX_BATCH}`);
/** Connections of the batch rows' load: 4 batches in flight (4,000 events at the default size), so
 *  that requests finish well inside the load's seconds and the ones cut off at its end are few. */
const INTAKE_BATCH_CONNECTIONS = 4;
if (ONLY.has("intake")) {
  console.log(`\n## Event intake over HTTP (autocannon in a second process, ${args.seconds} s, 32 connections, a fresh key per request)`);
  // CPU: the server process's per event accepted while the load ran (its dispatcher and runner
  // included), and the load process's share of one core.
  console.log("\n| store | events accepted/s | p50 ms | p99 ms | non-2xx | runs created | server CPU µs/event | load process CPU |");
  console.log("| --- | --- | --- | --- | --- | --- | --- | --- |");
  const cpuCols = (r: { serverCpuS: number; events: number; cpu_s: number; duration: number }) =>
    `${f0((r.serverCpuS * 1e6) / Math.max(1, r.events))} | ${f0((100 * r.cpu_s) / r.duration)}%`;
  for (const s of stores) {
    const r = await benchIntake(s);
    console.log(`| ${s} | ${f0(r.rps)} | ${r.p50} | ${r.p99} | ${r.non2xx} | ${r.runs} | ${cpuCols(r)} |`);
    // The batch form: arrays of INTAKE_BATCH events per request, INTAKE_BATCH_CONNECTIONS connections;
    // events/s counts events of the requests answered within the load's time, latency is per request.
    const b = await benchIntake(s, INTAKE_BATCH);
    console.log(
      `| ${s}, batches of ${INTAKE_BATCH} (${INTAKE_BATCH_CONNECTIONS} connections) | ${f0(b.eventsPerS)} | ${b.p50} | ${b.p99} | ${b.non2xx} | ${b.runs} | ${cpuCols(b)} |`,
    );
  }
}
if (ONLY.has("fairness")) {
  const flood = Number(args.flood);
  console.log(`\n## Fairness: automation A flooded with ${flood} events; B gets one event every 20 ms`);
  console.log(
    "\n| store | B events | B event→run start p50 / p99 / max ms | of which event→run created p50 / p99 ms | A runs finished when B's last run started |",
  );
  console.log("| --- | --- | --- | --- | --- |");
  for (const s of stores) {
    const r = await benchFairness(s, flood);
    console.log(`| ${s} | ${r.n} | ${f1(r.p50)} / ${f1(r.p99)} / ${f1(r.max)} | ${f1(r.dispatchP50)} / ${f1(r.dispatchP99)} | ${r.aDone} of ${flood} |`);
  }
}

interface LoadResult {
  requests: number;
  /** Events in the requests answered (requests × batch), and the load's seconds. */
  events: number;
  duration: number;
  non2xx: number;
  errors: number;
  rps: number;
  p50: number;
  p99: number;
  /** CPU seconds the load process spent. */
  cpu_s: number;
}

/** Load an events endpoint from a second process (bench/load-events.ts, autocannon), --seconds long, `connections` connections, `batch` events per request. */
async function loadHttp(url: string, token: string, batch = 1, connections = 32): Promise<LoadResult> {
  const out = await new Promise<string>((resolve, reject) => {
    const loader = fileURLToPath(new URL("./load-events.ts", import.meta.url));
    const child = spawn(process.execPath, ["--import", "tsx", loader, url, token, args.seconds!, String(connections), String(batch)], {
      stdio: ["ignore", "pipe", "inherit"],
    });
    let buf = "";
    child.stdout.on("data", (c) => (buf += c));
    child.on("exit", (code) => (code === 0 ? resolve(buf) : reject(new Error(`load process exited ${code}`))));
  });
  return JSON.parse(out.trim().split("\n").pop()!) as LoadResult;
}

async function benchIntake(kind: "embedded" | "postgres", batch = 1) {
  const { store, cleanup } = await openBenchStore(kind);
  const engine = new Engine({ store, httpAllow: ["127.0.0.1"] });
  await engine.start();
  await engine.createAutomation(DEFAULT_WORKSPACE, {
    key: "bench-intake",
    name: "Intake",
    triggers: [{ type: "event", name: "bench.ping" }],
    root: "a",
    reentry: { policy: "allow_concurrent" },
    nodes: [{ key: "a", kind: "set", config: { assign: { seen: "true" } } }],
  });
  const app = buildApp({ engine, adminToken: "bench-admin-token", rateLimitPerSecond: 0 });
  let accepted = 0; // counted by the server: the load process's total misses requests in flight at its end
  app.addHook("onResponse", async (_req, reply) => {
    if (reply.statusCode === 202) accepted++;
  });
  const addr = await app.listen({ host: "127.0.0.1", port: 0 });
  const cpu0 = process.cpuUsage();
  const r = await loadHttp(`${addr}/v1/events`, "bench-admin-token", batch, batch > 1 ? INTAKE_BATCH_CONNECTIONS : 32);
  const cpu = process.cpuUsage(cpu0);
  await app.close();
  // Let dispatch drain (every event made into its run, no run waiting to start), then count runs.
  for (let i = 0; i < 1200; i++) {
    await engine.tick();
    const q = await store.queueDepth(Date.now(), 0);
    if (q.undispatched_events === 0 && q.due_runs === 0) break;
    await new Promise((res) => setTimeout(res, 100));
  }
  let runs = 0;
  let cursor: string | undefined;
  do {
    const page = await store.listRuns({ workspace_id: DEFAULT_WORKSPACE, limit: 500, ...(cursor ? { cursor } : {}) });
    runs += page.items.length;
    cursor = page.next_cursor ?? undefined;
  } while (cursor);
  await engine.stop();
  await store.close();
  await cleanup();
  return { ...r, runs, accepted, eventsPerS: r.events / r.duration, serverCpuS: (cpu.user + cpu.system) / 1e6 };
}

async function benchFairness(kind: "embedded" | "postgres", flood: number) {
  const { store, cleanup } = await openBenchStore(kind);
  const writer = new Engine({ store, noRunner: true });
  await writer.start();
  const slowAction = {
    kind: "work",
    handler: async () => {
      await new Promise((r) => setTimeout(r, 5));
      return { ok: true };
    },
  };
  writer.registerAction(slowAction);
  const graph = (key: string, name: string) => ({
    key,
    name: key,
    triggers: [{ type: "event" as const, name }],
    root: "w",
    reentry: { policy: "allow_concurrent" as const },
    nodes: [{ key: "w", kind: "work", config: {} }],
  });
  const a = await writer.createAutomation(DEFAULT_WORKSPACE, graph("flood-a", "a.ping"));
  const b = await writer.createAutomation(DEFAULT_WORKSPACE, graph("quiet-b", "b.ping"));
  for (let i = 0; i < flood; i += 200) {
    await Promise.all(Array.from({ length: Math.min(200, flood - i) }, (_, j) => writer.ingest(DEFAULT_WORKSPACE, { type: "a.ping", key: `a${i + j}` })));
  }
  const engine = new Engine({ store, httpAllow: ["127.0.0.1"], runner: { pollMs: 20 } });
  engine.registerAction(slowAction);
  // B's events share one shard and are dispatched in order, so B's k-th run answers its k-th event.
  const sentAt: number[] = [];
  const runIndex = new Map<string, number>();
  const delays: number[] = [];
  let aDone = 0;
  let aDoneAtLastB = 0;
  const createdDelays: number[] = [];
  let bCreated = 0;
  engine.events.on("run:created", (e) => {
    if (e.run.automation_id !== b.id) return;
    const k = bCreated++;
    runIndex.set(e.run.id, k);
    if (sentAt[k] !== undefined) createdDelays.push(performance.now() - sentAt[k]!);
  });
  engine.events.on("run:claimed", (e) => {
    const k = runIndex.get(e.run_id);
    if (k === undefined || sentAt[k] === undefined) return;
    delays.push(performance.now() - sentAt[k]!);
    runIndex.delete(e.run_id);
    aDoneAtLastB = aDone;
  });
  engine.events.on("run:finished", (e) => {
    if (e.automation_id === a.id) aDone++;
  });
  await engine.start();
  const N = 50;
  for (let i = 0; i < N; i++) {
    sentAt.push(performance.now());
    await engine.ingest(DEFAULT_WORKSPACE, { type: "b.ping", key: `b${i}` });
    await new Promise((r) => setTimeout(r, 20));
  }
  for (let i = 0; i < 500 && delays.length < N; i++) await new Promise((r) => setTimeout(r, 20));
  await engine.stop();
  await writer.stop();
  await store.close();
  await cleanup();
  return {
    n: delays.length,
    p50: pct(delays, 50),
    p99: pct(delays, 99),
    max: Math.max(...delays),
    aDone: aDoneAtLastB,
    dispatchP50: pct(createdDelays, 50),
    dispatchP99: pct(createdDelays, 99),
  };
}

async function benchFanout(kind: "embedded" | "postgres", items: number) {
  const { store, cleanup } = await openBenchStore(kind);
  const engine = new Engine({ store, httpAllow: ["127.0.0.1"], runner: { pollMs: 20 } });
  let calls = 0;
  // It yields to the event loop once, like any action that does I/O, so item commits interleave.
  engine.registerAction({
    kind: "noop",
    handler: async () => {
      await new Promise((r) => setImmediate(r));
      return { n: ++calls };
    },
  });
  let commits = 0;
  engine.events.on("checkpoint:committed", () => commits++);
  await engine.start();
  const a = await engine.createAutomation(DEFAULT_WORKSPACE, {
    key: "fanout",
    name: "fanout",
    root: "each",
    nodes: [
      {
        key: "each",
        kind: "for_each",
        config: { items: "context.ids", subject: "item", action: { kind: "noop", config: { id: "{{ item }}" } }, concurrency: 50 },
      },
    ],
  });
  const ids = Array.from({ length: items }, (_, i) => `acct_${i}`);
  const t0 = performance.now();
  const { run } = await engine.enroll(DEFAULT_WORKSPACE, a.id, { context_overrides: { ids } });
  const done = await engine.waitForRun(DEFAULT_WORKSPACE, run.id);
  const secs = (performance.now() - t0) / 1000;
  const listed = await store.listItems(run.id);
  await engine.stop();
  await store.close();
  await cleanup();
  return {
    status: done.status,
    items: listed.length,
    succeeded: listed.filter((i) => i.outcome === "succeeded").length,
    calls,
    secs,
    perS: items / secs,
    commits,
  };
}

async function benchHold(kind: "embedded" | "postgres", slow: number, holdMs: number) {
  const { store, cleanup } = await openBenchStore(kind);
  const engine = new Engine({ store, httpAllow: ["127.0.0.1"], runner: { pollMs: 20, maxInFlight: slow + 500, claimBatch: 500 } });
  let inSlow = 0;
  let peak = 0;
  engine.registerAction({
    kind: "think",
    handler: async (_i, ctx) => {
      inSlow++;
      peak = Math.max(peak, inSlow);
      // A long AI call: no connection, no transaction, only a timer and a promise.
      await new Promise((r) => {
        const t = setTimeout(r, holdMs);
        ctx.signal.addEventListener("abort", () => {
          clearTimeout(t);
          r(null);
        });
      });
      inSlow--;
      return { answer: 42 };
    },
  });
  await engine.start();
  const slowA = await engine.createAutomation(DEFAULT_WORKSPACE, {
    key: "slow",
    name: "slow",
    root: "t",
    reentry: { policy: "allow_concurrent" },
    nodes: [{ key: "t", kind: "think", config: {} }],
  });
  const fastA = await engine.createAutomation(DEFAULT_WORKSPACE, {
    key: "fast",
    name: "fast",
    root: "s",
    reentry: { policy: "allow_concurrent" },
    nodes: [
      { key: "s", kind: "set", config: { assign: { ok: "true" } } },
      { key: "b", kind: "branch", config: { condition: "context.ok" } },
    ],
    edges: [{ from: "s", port: "next", to: "b" }],
  });
  const fastLatency = async (n: number): Promise<number[]> => {
    const out: number[] = [];
    for (let i = 0; i < n; i++) {
      const t = performance.now();
      const { run } = await engine.enroll(DEFAULT_WORKSPACE, fastA.id, {});
      await engine.waitForRun(DEFAULT_WORKSPACE, run.id);
      out.push(performance.now() - t);
      await new Promise((r) => setTimeout(r, 20));
    }
    return out;
  };
  const baseline = await fastLatency(50);
  for (let i = 0; i < slow; i += 200) {
    await Promise.all(Array.from({ length: Math.min(200, slow - i) }, () => engine.enroll(DEFAULT_WORKSPACE, slowA.id, {})));
  }
  const t0 = performance.now();
  while (inSlow < slow && performance.now() - t0 < holdMs) await new Promise((r) => setTimeout(r, 20));
  const held = inSlow;
  const during = await fastLatency(Math.max(10, Math.min(100, Math.floor((holdMs - (performance.now() - t0)) / 60))));
  const stillHeld = inSlow;
  let finished = 0;
  const all = new Promise<void>((resolve) => {
    engine.events.on("run:finished", (e) => {
      if (e.automation_id === slowA.id && ++finished === slow) resolve();
    });
  });
  await Promise.race([all, new Promise((r) => setTimeout(r, holdMs * 3))]);
  await engine.stop();
  await store.close();
  await cleanup();
  return { held, peak, stillHeld, finished, baseline, during };
}

if (ONLY.has("fanout")) {
  const items = Number(args.items);
  console.log(`\n## Fan-out: one run, for_each over ${items} items, a no-op custom action each, concurrency 50`);
  console.log("\n| store | run status | items | items/s | seconds | commits |");
  console.log("| --- | --- | --- | --- | --- | --- |");
  for (const s of stores) {
    const r = await benchFanout(s, items);
    console.log(`| ${s} | ${r.status} | ${r.succeeded} of ${r.items} (calls ${r.calls}) | ${f0(r.perS)} | ${f1(r.secs)} | ${r.commits} |`);
  }
}
if (ONLY.has("hold")) {
  const slow = Number(args.slow);
  const holdMs = Number(args["hold-seconds"]) * 1000;
  console.log(`\n## Slow steps held: ${slow} runs each inside a ${holdMs / 1000}-second slow step, fast runs (2 fast nodes) started one at a time meanwhile`);
  console.log(
    "\n| store | slow steps in flight at once | fast runs: enroll→finished p50 / p99 ms, idle | same while the slow steps are held | slow runs finished |",
  );
  console.log("| --- | --- | --- | --- | --- |");
  for (const s of stores) {
    const r = await benchHold(s, slow, holdMs);
    console.log(
      `| ${s} | ${r.held} (held through the fast runs: ${r.stillHeld}) | ${f1(pct(r.baseline, 50))} / ${f1(pct(r.baseline, 99))} | ${f1(pct(r.during, 50))} / ${f1(pct(r.during, 99))} (n=${r.during.length}) | ${r.finished} of ${slow} |`,
    );
  }
}

// ---- 7. Side by side with peers ----------------------------------------------------------------
// Each workload runs on Weft (both stores, in this process) and on each peer (its own process,
// its own fresh database on the same PostgreSQL), one after the other, so none competes with
// another for the machine.

type Workload = "runs" | "loop" | "fanout" | "timers" | "intake";
interface PeerResult {
  peer: string;
  version?: string;
  node?: string;
  how?: string;
  error?: string;
  runsPerS?: number;
  stepsPerS?: number;
  p50?: number;
  p99?: number; // runs
  itemsPerS?: number;
  seconds?: number; // fanout
  timers?: number;
  fired?: number;
  createdS?: number;
  parkedInTime?: boolean;
  lateP50?: number;
  lateP99?: number;
  lateMax?: number;
  rssParkedMB?: number;
  rssPeakMB?: number; // timers
  rps?: number;
  non2xx?: number;
  accepted?: number;
  processed?: number; // intake (p50/p99 too)
  loopRunsPerS?: number;
  loopStepsPerS?: number;
  loopSeconds?: number;
  inFlight?: number; // loop (the closed loop), with what PostgreSQL spent on it:
  cost?: PgCost;
}

const weftName = (kind: "embedded" | "postgres") => `Weft, ${kind === "embedded" ? "embedded (SQLite)" : "PostgreSQL"} store`;

/** Weft on one store: the same N runs end to end (enroll, then execute: both phases' time), and
 *  the latency of one three-step run started alone (enroll → finished). */
async function weftRuns(kind: "embedded" | "postgres", samples: number): Promise<PeerResult> {
  const r = await benchStore(kind);
  const e2eSecs = RUNS / r.enrollPerS + r.seconds;
  const { store, cleanup } = await openBenchStore(kind);
  // Default runner settings, as in the closed loop; the end is the engine's run:finished (the
  // completion committed), the in-process signal each peer's latency also ends at.
  const engine = new Engine({ store, httpAllow: ["127.0.0.1"] });
  engine.registerAction({ kind: "noop", handler: () => ({ ok: true }) });
  await engine.start();
  const a = await engine.createAutomation(DEFAULT_WORKSPACE, THREE_STEPS);
  const xs: number[] = [];
  // Runs that finished, and the one awaited: a run could finish before its enroll answered.
  const ended = new Set<string>();
  let awaited: { id: string; resolve: () => void } | null = null;
  engine.events.on("run:finished", (e) => {
    ended.add(e.run_id);
    if (awaited?.id === e.run_id) awaited.resolve();
  });
  for (let i = 0; i < samples + 10; i++) {
    const t = performance.now();
    const { run } = await engine.enroll(DEFAULT_WORKSPACE, a.id, { subject_id: `lat${i}` });
    if (!ended.has(run.id)) await new Promise<void>((resolve) => (awaited = { id: run.id, resolve }));
    if (i >= 10) xs.push(performance.now() - t);
  }
  await engine.stop();
  await store.close();
  await cleanup();
  return {
    peer: weftName(kind),
    node: process.version,
    runsPerS: RUNS / e2eSecs,
    stepsPerS: (RUNS * 3) / e2eSecs,
    p50: pct(xs, 50),
    p99: pct(xs, 99),
    how: "enroll all (50 at a time), then run them; latency enroll → run:finished",
  };
}

interface PeerProc {
  name: string;
  script: string;
  pkg?: string;
  node: 20 | 22;
  embedded?: boolean;
}
/** Weft itself through the peers' harness (built code, a process of its own), where the process is measured. */
const WEFT_PROCS: PeerProc[] = [
  { name: "Weft, embedded (SQLite) store", script: "weft.mjs", node: 20, embedded: true },
  { name: "Weft, PostgreSQL store", script: "weft.mjs", node: 20 },
];
const ALL_PEERS: PeerProc[] = [
  { name: "DBOS Transact", script: "dbos.mjs", pkg: "@dbos-inc/dbos-sdk", node: 20 }, // engines: node >= 20
  { name: "graphile-worker", script: "graphile-worker.mjs", pkg: "graphile-worker", node: 22 }, // engines: node >= 22.18
  { name: "pg-boss", script: "pg-boss.mjs", pkg: "pg-boss", node: 22 }, // engines: node >= 22.12
];
/** --peers: the peers to run beside Weft (names as listed, comma-separated; default all). */
const PEERS: PeerProc[] = args.peers ? ALL_PEERS.filter((p) => args.peers!.split(",").includes(p.name)) : ALL_PEERS;
const PEER_TIMEOUT_MS = 900_000;

/** A peer process on its own fresh database: `<url> <workload> <n> [extra]`; its last JSON line is the result.
 *  For intake it first prints {"listening": url}: the load runs against it, then its stdin is closed.
 *  For loop it prints {"meter":"start"} and {"meter":"stop"} around the measured work and waits for a
 *  line on stdin after each: PostgreSQL's counters for its database are read there (bench/pg-meter.ts). */
async function runPeer(p: PeerProc, workload: Workload, n: number, extra?: number): Promise<PeerResult> {
  const base: PeerResult = { peer: p.name };
  if (p.pkg && !existsSync(fileURLToPath(new URL(`./node_modules/${p.pkg}/package.json`, import.meta.url))))
    return { ...base, error: `${p.pkg} is not installed (npm install)` };
  const nodeBin = p.node === 22 ? node22() : process.execPath;
  if (!nodeBin) return { ...base, error: "needs Node >= 22; bench/peers/node22 did not install it (npm install)" };
  // A fresh database for each PostgreSQL run (created here, dropped after); an embedded store needs none.
  const db = p.embedded ? null : `weft_bench_peer_${p.script.replace(/\W+/g, "_")}_${process.pid}`;
  const admin = new pg.Client({ connectionString: PG_URL });
  await admin.connect();
  const url = new URL(PG_URL);
  if (db) {
    await admin.query(`DROP DATABASE IF EXISTS ${db} WITH (FORCE)`);
    await admin.query(`CREATE DATABASE ${db}`);
    url.pathname = `/${db}`;
  }
  const target = db ? url.toString() : "embedded";
  const loaded: { r?: LoadResult; cost?: PgCost } = {};
  const meter = db ? await pgMeter(PG_URL, db) : null;
  try {
    const argv = [fileURLToPath(new URL(`./peers/${p.script}`, import.meta.url)), target, workload, String(n), ...(extra === undefined ? [] : [String(extra)])];
    const out = await new Promise<string>((resolve, reject) => {
      const child = spawn(nodeBin, argv, { stdio: ["pipe", "pipe", "pipe"] });
      let buf = "";
      let err = "";
      let loading = false;
      const timer = setTimeout(() => {
        child.kill("SIGKILL");
        reject(new Error(`timed out after ${PEER_TIMEOUT_MS / 1000} s`));
      }, PEER_TIMEOUT_MS);
      let seen = 0; // how much of buf has been scanned for meter lines
      child.stdout.on("data", (c) => {
        buf += c;
        const end = buf.lastIndexOf("\n") + 1;
        for (const l of buf.slice(seen, end).split("\n")) {
          if (l === '{"meter":"start"}') (meter ? meter.start() : Promise.resolve()).then(() => child.stdin.write("go\n"), reject);
          if (l === '{"meter":"stop"}')
            (meter ? meter.stop() : Promise.resolve(undefined)).then((cost) => {
              loaded.cost = cost;
              child.stdin.write("go\n");
            }, reject);
        }
        seen = Math.max(seen, end);
        const m = /\{"listening":"([^"]+)"\}/.exec(buf);
        if (m && !loading) {
          loading = true;
          loadHttp(m[1]!, "unused").then(
            (r) => {
              loaded.r = r;
              child.stdin.end();
            },
            (e) => {
              child.kill("SIGKILL");
              reject(e);
            },
          );
        }
      });
      child.stderr.on("data", (c) => (err += c));
      child.on("exit", (code) => {
        clearTimeout(timer);
        if (code === 0) resolve(buf);
        else
          reject(
            new Error(
              `exited ${code}: ${err
                .trim()
                .split("\n")
                .filter((l) => !/DeprecationWarning|trace-deprecation/.test(l))
                .slice(-3)
                .join(" ")
                .slice(0, 300)}`,
            ),
          );
      });
    });
    const line = out
      .trim()
      .split("\n")
      .filter((l) => l.startsWith("{") && !l.startsWith('{"listening"') && !l.startsWith('{"meter"'))
      .pop();
    if (!line) throw new Error("printed no result");
    const l = loaded.r;
    return {
      ...base,
      ...JSON.parse(line),
      ...(l ? { rps: l.rps, p50: l.p50, p99: l.p99, non2xx: l.non2xx } : {}),
      ...(loaded.cost ? { cost: loaded.cost } : {}),
    };
  } catch (e) {
    return { ...base, error: (e as Error).message };
  } finally {
    await meter?.close();
    if (db) await admin.query(`DROP DATABASE IF EXISTS ${db} WITH (FORCE)`);
    await admin.end();
  }
}

if (args.compare || ONLY.has("compare")) {
  const samples = Number(args.samples);
  const workloads = args.workloads!.split(",") as Workload[];
  const timerN = Number(args.timers);
  const lead = Number(args["timer-lead"] ?? Math.max(30, Math.ceil(timerN / 1000))) * 1000;
  const items = Number(args.items);
  const x = (a?: number, b?: number) =>
    a === undefined || b === undefined || !b || Number.isNaN(a) || Number.isNaN(b) ? "-" : `${a / b < 1 ? (a / b).toFixed(2) : f1(a / b)}×`;
  const ms = (n?: number) => (n === undefined || Number.isNaN(n) ? "-" : n < 10 ? n.toFixed(1) : f0(n));
  const hows: string[] = [];
  /** Each workload alone: Weft's two rows first (embedded, then PostgreSQL), then each peer. */
  const side = async (w: Workload, weft: (k: "embedded" | "postgres") => Promise<PeerResult>, n: number, extra?: number) => {
    const rows: PeerResult[] = [await weft("embedded"), await weft("postgres")];
    for (const p of PEERS) rows.push(await runPeer(p, w, n, extra));
    return rows;
  };
  /**
   * One table: a column is [heading, cell]; a column marked "ratio" compares a row with Weft's
   * rows and prints "-" on Weft's own. The rows' "how" lines are kept for the end.
   */
  type Col = [string, (r: PeerResult, weft: { pg: PeerResult; emb: PeerResult }) => string, "ratio"?];
  const table = (title: string, rows: PeerResult[], cols: Col[]) => {
    const weft = { emb: rows[0]!, pg: rows[1]! };
    console.log(`\n## ${title}\n`);
    console.log(`| system | ${cols.map((c) => c[0]).join(" | ")} |`);
    console.log(`| --- |${" --- |".repeat(cols.length)}`);
    for (const r of rows) {
      const name = r.version ? `${r.peer} ${r.version}` : r.peer;
      if (r.error) {
        console.log(`| ${name} | not run: ${r.error.replace(/\|/g, "/")} |${" - |".repeat(cols.length - 1)}`);
        continue;
      }
      const cells = cols.map(([, cell, ratio]) => (ratio && r.peer.startsWith("Weft") ? "-" : cell(r, weft)));
      console.log(`| ${name} | ${cells.join(" | ")} |`);
      if (r.how) hows.push(`- ${r.peer}: ${r.how}`);
    }
  };
  console.log(`\n# Side by side with peers (PostgreSQL single-row INSERT commits/s in this run, 8 clients, 3 s: ${f0(limit)})`);

  if (workloads.includes("runs")) {
    // Two ways to count runs/s. "enroll all first": every run started (50 at a time) before the
    // work is waited for. "50 in flight": a closed loop, each finished run replaced by a new one,
    // so work is processed while it is enqueued; every system in a process of its own (Weft
    // through bench/peers/weft.mjs) on a fresh database, its PostgreSQL cost metered meanwhile.
    const rows = await side("runs", (k) => weftRuns(k, samples), RUNS, samples);
    const loops: PeerResult[] = [];
    for (const p of [...WEFT_PROCS, ...PEERS]) loops.push(await runPeer(p, "loop", RUNS));
    const merged = rows.map((r, i): PeerResult & { loopError?: string } => {
      const l = loops[i]!;
      if (l.error) return { ...r, loopError: l.error };
      return { ...r, loopRunsPerS: l.loopRunsPerS, loopStepsPerS: l.loopStepsPerS, inFlight: l.inFlight, ...(l.cost ? { cost: l.cost } : {}) };
    });
    const loopCell = (r: PeerResult & { loopError?: string }, v: (r: PeerResult) => string) =>
      r.loopError ? `not run: ${r.loopError.replace(/\|/g, "/").slice(0, 80)}` : v(r);
    const perStep = (r: PeerResult, v: (c: PgCost) => number, fmt = f1) => (r.cost ? fmt(v(r.cost) / (RUNS * 3)) : "-");
    table(
      `${RUNS} three-step no-op runs: runs/s with 50 in flight (closed loop) and with every run enrolled first (started 50 at a time, end to end); PostgreSQL's cost per step in the closed loop; one three-step run started alone (${samples} samples, sequential)`,
      merged,
      [
        ["node", (r) => r.node ?? "-"],
        ["runs/s, 50 in flight", (r) => loopCell(r, (l) => f0(l.loopRunsPerS!))],
        ["steps/s, 50 in flight", (r) => loopCell(r, (l) => f0(l.loopStepsPerS!))],
        ["runs/s, enroll all first", (r) => f0(r.runsPerS!)],
        ["steps/s, enroll all first", (r) => f0(r.stepsPerS!)],
        [
          "commits per step",
          (r) =>
            perStep(
              r,
              (c) => c.commits,
              (n) => n.toFixed(2),
            ),
        ],
        [
          "PG backend CPU ms per step",
          (r) =>
            perStep(
              r,
              (c) => c.backendCpuMs,
              (n) => n.toFixed(3),
            ),
        ],
        [
          "PG shared processes CPU ms per step",
          (r) =>
            perStep(
              r,
              (c) => c.sharedCpuMs,
              (n) => n.toFixed(3),
            ),
        ],
        ["WAL bytes per step (server-wide)", (r) => perStep(r, (c) => c.walBytes, f0)],
        ["single run p50 / p99 ms", (r) => `${ms(r.p50)} / ${ms(r.p99)}`],
        ["Weft PG ÷ it, runs/s 50 in flight", (r, w) => x(w.pg.loopRunsPerS, r.loopRunsPerS), "ratio"],
        ["Weft PG ÷ it, runs/s enroll all first", (r, w) => x(w.pg.runsPerS, r.runsPerS), "ratio"],
        ["its p50 ÷ Weft PG's p50", (r, w) => x(r.p50, w.pg.p50), "ratio"],
        ["Weft embedded ÷ it, runs/s enroll all first", (r, w) => x(w.emb.runsPerS, r.runsPerS), "ratio"],
      ],
    );
    for (const l of loops) if (l.how && !l.error) hows.push(`- ${l.peer}, 50 in flight: ${l.how}`);
  }
  if (workloads.includes("fanout")) {
    const weftFanout = async (k: "embedded" | "postgres"): Promise<PeerResult> => {
      const r = await benchFanout(k, items);
      return {
        peer: weftName(k),
        node: process.version,
        itemsPerS: r.perS,
        seconds: r.secs,
        how: `for_each over ${items} items, a no-op custom action each, concurrency 50 (${r.succeeded} succeeded, run ${r.status})`,
      };
    };
    table(`Fan-out: one run over ${f0(items)} items, 50 at a time`, await side("fanout", weftFanout, items), [
      ["items/s", (r) => f0(r.itemsPerS!)],
      ["seconds", (r) => f1(r.seconds!)],
      ["items/s ÷ PG commit rate", (r) => x(r.itemsPerS, limit)],
      ["Weft PG ÷ it", (r, w) => x(w.pg.itemsPerS, r.itemsPerS), "ratio"],
      ["Weft embedded ÷ it", (r, w) => x(w.emb.itemsPerS, r.itemsPerS), "ratio"],
    ]);
  }
  if (workloads.includes("timers")) {
    // Weft too runs in a process of its own here, so that memory is measured alike. A system
    // that could not park them all before the first was due runs again with the lead it needs.
    const rows: PeerResult[] = [];
    for (const p of [...WEFT_PROCS, ...PEERS]) {
      const r = await runPeer(p, "timers", timerN, lead);
      rows.push(r.parkedInTime === false && r.createdS ? await runPeer(p, "timers", timerN, Math.ceil(r.createdS * 1.3 + 10) * 1000) : r);
    }
    table(`${f0(timerN)} runs parked on timers due within one minute (the window opens once all are parked)`, rows, [
      ["parked in s", (r) => `${f1(r.createdS!)}${r.parkedInTime ? "" : " (not all parked before the first was due)"}`],
      ["fired", (r) => `${f0(r.fired!)} of ${f0(r.timers!)}`],
      ["lateness p50 / p99 / max ms", (r) => `${ms(r.lateP50)} / ${ms(r.lateP99)} / ${ms(r.lateMax)}`],
      ["RSS while parked MB", (r) => ms(r.rssParkedMB)],
      ["peak RSS MB", (r) => ms(r.rssPeakMB)],
      ["its p99 lateness ÷ Weft PG's", (r, w) => x(r.lateP99, w.pg.lateP99), "ratio"],
      ["its RSS parked ÷ Weft PG's", (r, w) => x(r.rssParkedMB, w.pg.rssParkedMB), "ratio"],
    ]);
  }
  if (workloads.includes("intake")) {
    const weftIntake = async (k: "embedded" | "postgres"): Promise<PeerResult> => {
      const r = await benchIntake(k);
      return {
        peer: weftName(k),
        node: process.version,
        rps: r.rps,
        p50: r.p50,
        p99: r.p99,
        non2xx: r.non2xx,
        accepted: r.accepted,
        processed: r.runs,
        how: "POST /v1/events (bearer token, schema checks, dedupe by key), the dispatcher makes the runs",
      };
    };
    const weftIntakeBatch = async (k: "embedded" | "postgres"): Promise<PeerResult> => {
      const r = await benchIntake(k, INTAKE_BATCH);
      return {
        peer: `${weftName(k)}, batches of ${INTAKE_BATCH} (${INTAKE_BATCH_CONNECTIONS} connections)`,
        node: process.version,
        rps: r.eventsPerS,
        p50: r.p50,
        p99: r.p99,
        non2xx: r.non2xx,
        accepted: r.accepted * INTAKE_BATCH,
        processed: r.runs,
        how: `POST /v1/events with an array of ${INTAKE_BATCH} events per request, ${INTAKE_BATCH_CONNECTIONS} connections (events/s: events of the requests answered within the load's time; latency is per request)`,
      };
    };
    table(
      `Event intake over HTTP: ${args.seconds} s of load from a second process, 32 connections, a fresh key per event; acknowledged once durably stored`,
      [
        ...(await side("intake", weftIntake, 0)),
        // Weft's batch form beside its single-event rows (the peers' bare endpoints take one event a request).
        await weftIntakeBatch("embedded"),
        await weftIntakeBatch("postgres"),
      ],
      [
        ["events accepted/s", (r) => f0(r.rps!)],
        ["p50 / p99 ms", (r) => `${r.p50} / ${r.p99}`],
        ["non-2xx", (r) => String(r.non2xx)],
        ["runs made", (r) => `${f0(r.processed!)} of ${f0(r.accepted ?? NaN)}`],
        ["accepted/s ÷ PG commit rate", (r) => x(r.rps, limit)],
        ["Weft PG ÷ it", (r, w) => x(w.pg.rps, r.rps), "ratio"],
        ["Weft embedded ÷ it", (r, w) => x(w.emb.rps, r.rps), "ratio"],
      ],
    );
  }
  console.log(`\nHow each ran:\n${[...new Set(hows)].join("\n")}`);
}

if (ONLY.has("fleet")) {
  const { benchFleet } = await import("./fleet.js");
  await benchFleet({
    pgUrl: PG_URL,
    events: Number(args["fleet-events"]),
    concurrency: Number(args["fleet-concurrency"]),
    pacedEvents: Number(args["fleet-paced"]),
    rate: Number(args["fleet-rate"]),
    workers: args["fleet-workers"]!.split(",").map(Number),
    polling: args["fleet-polling"]!,
    // The graphile-worker anchor: the same worker counts as Weft's fleet unless told ("none": left out).
    graphile: (args["fleet-graphile"] ?? args["fleet-workers"]!) === "none" ? [] : (args["fleet-graphile"] ?? args["fleet-workers"]!).split(",").map(Number),
  });
}

if (ONLY.has("notify")) {
  const { benchNotify } = await import("./notify.js");
  console.log("\nWhat a wake-up notification costs a commit (PostgreSQL, 8 clients, 3 s each, one listener):");
  const rows = await benchNotify(PG_URL);
  console.log("| commit | commits/s | µs per commit |\n| --- | --- | --- |");
  for (const r of rows) console.log(`| ${r.variant} | ${r.commitsPerS.toLocaleString("en-US")} | ${r.perCommitUs} |`);
}

if (ONLY.has("flow")) {
  const { benchFlowFairness, benchFlowCost } = await import("./flow.js");
  const flood = Number(args["flow-flood"]);
  console.log(`\n## Flow control: one key flooded with ${flood} enrolled runs under a per-key concurrency limit (5), 50 other keys trickling`);
  console.log(
    "\n| store | trickle runs | idle enroll→start p50 / p99 ms | flooded enroll→start p50 / p99 ms | p99 ÷ idle p99 | flood runs started meanwhile |",
  );
  console.log("| --- | --- | --- | --- | --- | --- |");
  for (const s of stores) {
    const r = await benchFlowFairness(() => openBenchStore(s), flood);
    console.log(
      `| ${s} | ${r.n} | ${f1(r.idleP50)} / ${f1(r.idleP99)} | ${f1(r.floodP50)} / ${f1(r.floodP99)} | ${(r.floodP99 / r.idleP99).toFixed(2)}× | ${r.floodStarted} |`,
    );
  }
  const runs = Number(args.runs);
  console.log(`\n## Flow control cost: ${runs} three-step runs, 50 in flight`);
  console.log("\n| store | no limit runs/s | limit that never binds runs/s | cost | limit that binds (10 keys × 5) runs/s | µs per limited run |");
  console.log("| --- | --- | --- | --- | --- | --- |");
  for (const s of stores) {
    const [none, loose, binding] = await benchFlowCost(() => openBenchStore(s), runs);
    const cost = 1 - loose!.runsPerS / none!.runsPerS;
    const perRun = (1e6 / loose!.runsPerS - 1e6 / none!.runsPerS).toFixed(0);
    console.log(
      `| ${s} | ${none!.runsPerS.toFixed(0)} | ${loose!.runsPerS.toFixed(0)} | ${(cost * 100).toFixed(1)}% | ${binding!.runsPerS.toFixed(0)} | ${perRun} |`,
    );
  }
}

if (ONLY.has("flow-rate")) {
  const { benchFlowRate } = await import("./flow-rate.js");
  const r = await benchFlowRate(PG_URL, Number(args["rate-limit"]), Number(args["rate-seconds"]));
  console.log(
    `\n## Rate limit across processes: ${r.processes} processes on one PostgreSQL, rate_limit ${r.limit} per 1,000 ms (queue), one http_request per run to a loopback sink, ${r.seconds} s after 5 s of warm-up`,
  );
  console.log("\n| limit per s | requests | observed per s | deviation | most in any 1 s window | repeated requests |\n| --- | --- | --- | --- | --- | --- |");
  console.log(`| ${r.limit} | ${r.requests} | ${r.observedPerS.toFixed(2)} | ${(r.deviation * 100).toFixed(2)}% | ${r.maxInAnySecond} | ${r.repeats} |`);
}

if (ONLY.has("claim")) {
  const { benchClaim } = await import("./claim.js");
  await benchClaim({
    pgUrl: PG_URL,
    stores: args.stores!.split(","),
    due: Number(args["claim-due"]),
    idle: Number(args["claim-idle"]),
    samples: Number(args["claim-samples"]),
    limit: Number(args["claim-limit"]),
  });
}
