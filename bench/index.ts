// npm run bench: figures for the engine core on this machine.
//   1. PostgreSQL's single-row commit rate (the physical limit a commit-per-step design hits).
//   2. 5,000 runs of a 3-step automation on each store, each step a checkpointed no-op action
//      (its result committed before the next step starts): runs/s, steps/s, and the p50/p99 time
//      from one step's commit to the next step's start.
// Options: --runs N (default 5000), --stores embedded,postgres

import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { parseArgs } from "node:util";
import pg from "pg";
import { Engine, DEFAULT_WORKSPACE } from "../src/engine/engine.js";
import type { Store } from "../src/engine/store.js";
import { EmbeddedStore } from "../src/store/embedded/index.js";
import { PostgresStore } from "../src/store/postgres/index.js";

const PG_URL = process.env.WEFT_TEST_DATABASE_URL ?? "postgres://postgres@127.0.0.1:5432/test";
const { values: args } = parseArgs({ options: { runs: { type: "string", default: "5000" }, stores: { type: "string", default: "embedded,postgres" }, profile: { type: "boolean", default: false } } });
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
  await Promise.all(Array.from({ length: clients }, async () => {
    while (performance.now() < end) {
      await pool.query({ name: "ins", text: `INSERT INTO ${schema}.t (v) VALUES ($1)`, values: ["x"] });
      n++;
    }
  }));
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
  key: "bench-three", name: "Three checkpointed steps", root: "a",
  nodes: [
    { key: "a", kind: "noop", config: {} },
    { key: "b", kind: "noop", config: {} },
    { key: "c", kind: "noop", config: {} },
  ],
  edges: [{ from: "a", port: "next", to: "b" }, { from: "b", port: "next", to: "c" }],
};

interface Result { store: string; enrollPerS: number; runsPerS: number; stepsPerS: number; p50: number; p99: number; seconds: number; commits: number; avgBatch: number }

async function benchStore(kind: "embedded" | "postgres"): Promise<Result> {
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

  const engine = new Engine({ store, runner: { pollMs: 20 } });
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
  return { store: kind, enrollPerS: RUNS / enrollS, runsPerS: RUNS / secs, stepsPerS: (RUNS * 3) / secs, p50: pct(gaps, 50), p99: pct(gaps, 99), seconds: secs, commits, avgBatch: committedRuns / Math.max(1, commits) };
}

const stores = args.stores!.split(",") as ("embedded" | "postgres")[];
console.log(`weft bench: ${RUNS} runs × 3 checkpointed no-op steps; node ${process.version}`);
let limit = NaN;
if (stores.includes("postgres")) {
  limit = await pgCommitRate();
  console.log(`PostgreSQL single-row INSERT commits/s (8 clients, 3 s): ${f0(limit)}`);
}
const rows: Result[] = [];
for (const s of stores) rows.push(await benchStore(s));
console.log("\n| store | enroll runs/s | runs/s | steps/s | steps/s ÷ PG commit rate | commit→next step p50 / p99 ms | commits | runs per commit |");
console.log("| --- | --- | --- | --- | --- | --- | --- | --- |");
for (const r of rows) {
  console.log(`| ${r.store} | ${f0(r.enrollPerS)} | ${f0(r.runsPerS)} | ${f0(r.stepsPerS)} | ${Number.isNaN(limit) ? "-" : f1(r.stepsPerS / limit) + "×"} | ${f1(r.p50)} / ${f1(r.p99)} | ${r.commits} | ${f1(r.avgBatch)} |`);
}
