// --only fleet: Weft as a fleet on one PostgreSQL. One `weft serve --role api` process and 1, 2 and
// 4 `weft serve --role worker` processes (each a real child process on a fresh schema), and beside
// them the same work in one `weft serve --role all` process. A separate load process posts events
// over HTTP (--fleet-events N, default 2000, --fleet-concurrency C at a time, default 32); each
// event starts a run of three http_request steps to a loopback server in this process. Measured per
// topology: event → third step p50/p99 (from the load process's send time, carried in the event,
// to the third request's arrival; one machine, one clock) and runs/s (events from the first send to
// the last third step). 100 warm-up events first, not counted.
//
// The cross-process anchor, in the same table: graphile-worker (--fleet-graphile 1,2,4 worker
// processes, default the same counts as --fleet-workers; "none" leaves it out) on a fresh database
// of the same PostgreSQL, doing the same work as three chained jobs, each one HTTP call to the same
// loopback sink (bench/peers/graphile-fleet.mjs), with the jobs added by a separate load process
// through addJob (bench/peers/graphile-fleet-load.mjs), N jobs C at a time, each carrying its send
// time: job added → third step p50/p99 and runs/s measured exactly as for Weft. Node 22, as in the
// side-by-side runs.

import { spawn, type ChildProcess } from "node:child_process";
import { createServer, type IncomingMessage, type ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";
import { fileURLToPath } from "node:url";
import pg from "pg";
import { existsSync, readFileSync } from "node:fs";
import { node22 } from "./node22.js";
import { cpuMs, pgMeter } from "./pg-meter.js";

const ROOT = fileURLToPath(new URL("..", import.meta.url));
const CLI = fileURLToPath(new URL("../src/cli/main.ts", import.meta.url));
const LOAD = fileURLToPath(new URL("./load-fleet.ts", import.meta.url));
const GRAPHILE_WORKER = fileURLToPath(new URL("./peers/graphile-fleet.mjs", import.meta.url));
const GRAPHILE_LOAD = fileURLToPath(new URL("./peers/graphile-fleet-load.mjs", import.meta.url));
export const TOKEN = "bench-fleet-admin-token-0123456789abcdef";

export interface FleetOptions {
  pgUrl: string;
  events: number;
  concurrency: number;
  /** The paced phase: this many events (jobs) at `rate` per second, for latency while the fleet keeps up. */
  pacedEvents: number;
  rate: number;
  workers: number[];
  /** Also run each fleet topology with WEFT_WAKEUPS=0 (polling only), labelled. */
  polling: boolean;
  /** graphile-worker worker-process counts for the anchor rows (empty: none). */
  graphile: number[];
}

export interface FleetRow {
  topology: string;
  /** Paced phase: event (job add) → third step, ms. */
  pacedP50: number;
  pacedP99: number;
  /** Closed phase (o.concurrency at a time, backlog included): event → third step, ms. */
  p50: number;
  p99: number;
  runsPerS: number;
  done: number;
  /** Closed phase, per completed run: CPU ms of the system's own processes (not the load's, not the sink's). */
  procCpuPerRun: number;
  /** Closed phase, per completed run: CPU ms of the PostgreSQL backends serving the system's database. */
  pgCpuPerRun: number;
  commitsPerRun: number;
  /** Closed phase: the share of the machine's CPU that was busy (every process on it). */
  machineBusy: number;
  /** Why the row was not measured (a peer not installed). */
  error?: string;
}

interface Sink {
  url: string;
  /** Third-step arrivals: key → latency from the event's send time, ms. */
  arrivals: Map<string, number>;
  firstSend: number;
  lastArrival: number;
  close(): Promise<void>;
}

async function startSink(): Promise<Sink> {
  const sink: Omit<Sink, "url" | "close"> = { arrivals: new Map(), firstSend: Infinity, lastArrival: 0 };
  const server = createServer((req: IncomingMessage, res: ServerResponse) => {
    let body = "";
    req.on("data", (c) => (body += c));
    req.on("end", () => {
      if (req.url === "/s3") {
        const now = Date.now();
        const b = JSON.parse(body) as { k: string; t0: number };
        if (!sink.arrivals.has(b.k)) sink.arrivals.set(b.k, now - b.t0);
        sink.firstSend = Math.min(sink.firstSend, b.t0);
        sink.lastArrival = Math.max(sink.lastArrival, now);
      }
      res.writeHead(200, { "content-type": "application/json" }).end("{}");
    });
  });
  server.keepAliveTimeout = 60_000;
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
  const { port } = server.address() as AddressInfo;
  return Object.assign(sink, {
    url: `http://127.0.0.1:${port}`,
    close: () => new Promise<void>((r) => server.close(() => r())),
  });
}

export function serve(role: "api" | "worker" | "all", env: Record<string, string>): ChildProcess {
  const child = spawn(process.execPath, ["--import", "tsx", CLI, "serve", "--role", role], {
    cwd: ROOT,
    env: { ...process.env, ...env, WEFT_LOG_LEVEL: "warn", WEFT_SAMPLE: "0", WEFT_RATE_LIMIT: "0", WEFT_HTTP_ALLOW: "127.0.0.1" },
    stdio: ["ignore", "ignore", "inherit"],
  });
  return child;
}

export async function waitHealthy(url: string): Promise<void> {
  for (let i = 0; i < 600; i++) {
    try {
      if ((await fetch(`${url}/healthz`)).ok) return;
    } catch {
      /* not up yet */
    }
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(`${url} never became healthy`);
}

export async function freePort(): Promise<number> {
  const s = createServer();
  await new Promise<void>((r) => s.listen(0, "127.0.0.1", r));
  const { port } = s.address() as AddressInfo;
  await new Promise<void>((r) => s.close(() => r()));
  return port;
}

function definition(sinkUrl: string) {
  const step = (n: number) => ({
    key: `s${n}`,
    kind: "http_request",
    config: { method: "POST", url: `${sinkUrl}/s${n}`, body: { k: "{{ event.payload.k }}", t0: "{{ event.payload.t0 }}" } },
  });
  return {
    key: "fleet",
    name: "Fleet",
    triggers: [{ type: "event", name: "fleet.go" }],
    reentry: { policy: "allow_concurrent" },
    root: "s1",
    nodes: [step(1), step(2), step(3)],
    edges: [
      { from: "s1", port: "next", to: "s2" },
      { from: "s2", port: "next", to: "s3" },
    ],
  };
}

/** A load process (argv after the binary) that prints { sent, errors } as its last line. */
function loadWith(bin: string, argv: string[]): Promise<{ sent: number; errors: number }> {
  return new Promise((resolve, reject) => {
    const child = spawn(bin, argv, {
      cwd: ROOT,
      stdio: ["ignore", "pipe", "inherit"],
    });
    let out = "";
    child.stdout!.on("data", (c) => (out += c));
    child.on("exit", (code) => (code === 0 ? resolve(JSON.parse(out.trim().split("\n").pop()!)) : reject(new Error(`load process exited ${code}`))));
  });
}

async function untilArrived(sink: Sink, prefix: string, n: number, capMs: number): Promise<number> {
  const deadline = Date.now() + capMs;
  const count = () => [...sink.arrivals.keys()].filter((k) => k.startsWith(prefix)).length;
  while (count() < n && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
  return count();
}

function pct(xs: number[], p: number): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor((p / 100) * s.length))] ?? NaN;
}

/** Busy and total CPU time of the whole machine so far, ms (/proc/stat's first line; NaN off Linux). */
function machineCpu(): { busy: number; total: number } {
  try {
    const f = readFileSync("/proc/stat", "utf8").split("\n")[0]!.trim().split(/\s+/).slice(1).map(Number);
    const idle = (f[3] ?? 0) + (f[4] ?? 0); // idle + iowait
    const total = f.slice(0, 8).reduce((a, b) => a + b, 0);
    return { busy: ((total - idle) * 1000) / 100, total: (total * 1000) / 100 };
  } catch {
    return { busy: NaN, total: NaN };
  }
}

const sumCpu = (pids: number[]) => pids.reduce((a, pid) => a + (cpuMs(pid) ?? NaN), 0);

/**
 * The two phases every topology runs, the same for Weft and the anchor, after the warm-up: paced
 * (o.pacedEvents at o.rate per second: latency when the fleet keeps up) and closed (o.events, o.concurrency
 * at a time: runs/s, and what each run cost the system's processes, PostgreSQL and the machine).
 */
async function measure(
  o: FleetOptions,
  label: string,
  sink: Sink,
  add: (prefix: string, n: number, rate: number) => Promise<unknown>,
  pids: number[],
  db: string,
): Promise<FleetRow> {
  await add("warm-", 100, 0);
  await untilArrived(sink, "warm-", 100, 60_000);
  const reset = () => {
    sink.arrivals.clear();
    sink.firstSend = Infinity;
    sink.lastArrival = 0;
  };
  reset();
  await add("p-", o.pacedEvents, o.rate);
  await untilArrived(sink, "p-", o.pacedEvents, 60_000);
  const paced = [...sink.arrivals.values()];
  reset();
  const meter = await pgMeter(o.pgUrl, db);
  try {
    await meter.start();
    const cpu0 = sumCpu(pids);
    const m0 = machineCpu();
    await add("m-", o.events, 0);
    const done = await untilArrived(sink, "m-", o.events, 120_000);
    const m1 = machineCpu();
    const cpu1 = sumCpu(pids);
    const cost = await meter.stop();
    const lat = [...sink.arrivals.values()];
    const seconds = (sink.lastArrival - sink.firstSend) / 1000;
    return {
      topology: label,
      pacedP50: pct(paced, 50),
      pacedP99: pct(paced, 99),
      p50: pct(lat, 50),
      p99: pct(lat, 99),
      runsPerS: done / seconds,
      done,
      procCpuPerRun: (cpu1 - cpu0) / done,
      pgCpuPerRun: cost.backendCpuMs / done,
      commitsPerRun: cost.commits / done,
      machineBusy: (m1.busy - m0.busy) / (m1.total - m0.total),
    };
  } finally {
    await meter.close();
  }
}

/** A fresh database on the server o.pgUrl names: its URL, and a drop for the end. */
async function freshDb(o: FleetOptions, db: string): Promise<{ url: string; drop(): Promise<void> }> {
  const admin = new pg.Client({ connectionString: o.pgUrl });
  await admin.connect();
  await admin.query(`DROP DATABASE IF EXISTS ${db} WITH (FORCE)`);
  await admin.query(`CREATE DATABASE ${db}`);
  const url = new URL(o.pgUrl);
  url.pathname = `/${db}`;
  return {
    url: url.toString(),
    async drop() {
      await admin.query(`DROP DATABASE IF EXISTS ${db} WITH (FORCE)`);
      await admin.end();
    },
  };
}

const exited = (c: ChildProcess) => (c.exitCode === null && c.signalCode === null ? new Promise((r) => c.once("exit", r)) : null);

async function topology(o: FleetOptions, workers: number, label: string, extraEnv: Record<string, string> = {}): Promise<FleetRow> {
  const db = `weft_bench_fleet_${process.pid}_${workers}`;
  const fresh = await freshDb(o, db);
  const sink = await startSink();
  const port = await freePort();
  const env = { ...extraEnv, WEFT_DATABASE_URL: fresh.url, WEFT_ADMIN_TOKEN: TOKEN, WEFT_PORT: String(port) };
  const children: ChildProcess[] = [];
  try {
    const url = `http://127.0.0.1:${port}`;
    // The first process migrates the schema; the workers start once it answers.
    children.push(serve(workers === 0 ? "all" : "api", env));
    await waitHealthy(url);
    for (let i = 0; i < workers; i++) children.push(serve("worker", { ...env, WEFT_PORT: "0" }));
    const res = await fetch(`${url}/v1/automations`, {
      method: "POST",
      headers: { authorization: `Bearer ${TOKEN}`, "content-type": "application/json" },
      body: JSON.stringify({ definition: definition(sink.url) }),
    });
    if (!res.ok) throw new Error(`create automation: ${res.status} ${await res.text()}`);
    const add = (prefix: string, n: number, rate: number) =>
      loadWith(process.execPath, ["--import", "tsx", LOAD, `${url}/v1/events`, TOKEN, prefix, String(n), String(o.concurrency), String(rate)]);
    return await measure(
      o,
      label,
      sink,
      add,
      children.map((c) => c.pid!),
      db,
    );
  } finally {
    for (const c of children) c.kill("SIGTERM");
    await Promise.all(children.map(exited));
    await sink.close();
    await fresh.drop();
  }
}

const notRun = (topology: string, error: string): FleetRow => ({
  topology,
  pacedP50: NaN,
  pacedP99: NaN,
  p50: NaN,
  p99: NaN,
  runsPerS: NaN,
  done: 0,
  procCpuPerRun: NaN,
  pgCpuPerRun: NaN,
  commitsPerRun: NaN,
  machineBusy: NaN,
  error,
});

/** Prints {"ready":true} once started: resolves then (rejects if it exits first). */
function graphileWorker(bin: string, dbUrl: string, sinkUrl: string): Promise<ChildProcess> {
  return new Promise((resolve, reject) => {
    const child = spawn(bin, [GRAPHILE_WORKER, dbUrl, sinkUrl], { cwd: ROOT, stdio: ["ignore", "pipe", "inherit"] });
    let out = "";
    child.stdout!.on("data", (c) => {
      out += c;
      if (out.includes('{"ready":true}')) resolve(child);
    });
    child.once("exit", (code) => reject(new Error(`graphile-worker process exited ${code} before it was ready`)));
  });
}

/** graphile-worker with `workers` worker processes on a fresh database, jobs added from a separate process. */
async function graphileTopology(o: FleetOptions, workers: number): Promise<FleetRow> {
  const label = `graphile-worker: ${workers} worker process${workers === 1 ? "" : "es"}, jobs added by a separate process (addJob)`;
  const bin = node22();
  if (!bin) return notRun(label, "needs Node 22 (bench/peers/node22, npm install)");
  if (!existsSync(fileURLToPath(new URL("./node_modules/graphile-worker/package.json", import.meta.url))))
    return notRun(label, "graphile-worker is not installed (npm install --prefix bench)");
  const db = `weft_bench_fleet_gw_${process.pid}_${workers}`;
  const fresh = await freshDb(o, db);
  const sink = await startSink();
  const children: ChildProcess[] = [];
  try {
    // The first worker installs graphile-worker's schema; the others start once it runs.
    for (let i = 0; i < workers; i++) children.push(await graphileWorker(bin, fresh.url, sink.url));
    const add = (prefix: string, n: number, rate: number) => loadWith(bin, [GRAPHILE_LOAD, fresh.url, prefix, String(n), String(o.concurrency), String(rate)]);
    return await measure(
      o,
      label,
      sink,
      add,
      children.map((c) => c.pid!),
      db,
    );
  } finally {
    for (const c of children) c.kill("SIGTERM");
    await Promise.all(children.map(exited));
    await sink.close();
    await fresh.drop();
  }
}

export async function benchFleet(o: FleetOptions): Promise<FleetRow[]> {
  const rows: FleetRow[] = [];
  rows.push(await topology(o, 0, "Weft, one process (serve --role all)"));
  for (const w of o.workers) {
    const name = `Weft, api + ${w} worker${w === 1 ? "" : "s"}`;
    rows.push(await topology(o, w, name));
    if (o.polling) rows.push(await topology(o, w, `${name}, polling only (WEFT_WAKEUPS=0)`, { WEFT_WAKEUPS: "0" }));
  }
  for (const w of o.graphile) rows.push(await graphileTopology(o, w));
  const single = rows[0]!;
  console.log(
    `\nFleet on PostgreSQL: each run is three http_request steps to a loopback server (graphile-worker: three chained jobs calling the same server). ` +
      `Paced: ${o.pacedEvents} events (jobs) sent at ${o.rate}/s from a separate process. Closed: ${o.events} events (jobs), ${o.concurrency} at a time, ` +
      `over HTTP (graphile-worker: addJob) from a separate process; the CPU columns are the closed phase's, per run completed`,
  );
  console.log(
    "| topology | paced: event (job add) → third step p50 / p99 ms | paced p50 ÷ Weft one process's | closed: runs/s | closed: p50 / p99 ms | its processes' CPU ms per run | PG backends' CPU ms per run | PG commits per run | machine CPU busy | runs completed |",
  );
  console.log("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |");
  const f2 = (n: number) => (Number.isFinite(n) ? n.toFixed(2) : "-");
  for (const r of rows) {
    if (r.error) {
      console.log(`| ${r.topology} | not run: ${r.error} | - | - | - | - | - | - | - | - |`);
      continue;
    }
    console.log(
      `| ${r.topology} | ${r.pacedP50} / ${r.pacedP99} | ${(r.pacedP50 / single.pacedP50).toFixed(2)}× | ${Math.round(r.runsPerS)} | ${r.p50} / ${r.p99} | ` +
        `${f2(r.procCpuPerRun)} | ${f2(r.pgCpuPerRun)} | ${f2(r.commitsPerRun)} | ${Math.round(r.machineBusy * 100)}% | ${r.done} of ${o.events} |`,
    );
  }
  return rows;
}
