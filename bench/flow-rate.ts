// --only flow-rate: a rate limit across processes, observed at the destination. Three Weft
// processes on one PostgreSQL schema (`serve --role all` and two `--role worker`) share a backlog
// of runs of one automation whose only step is an http_request to a loopback sink in this process,
// under `rate_limit: { limit: N, period_ms: 1000, on_limit: "queue" }` (--rate-limit N, default
// 50). The sink records each request's arrival. Measured over --rate-seconds S (default 60), after
// 5 s of warm-up: requests per second against N (and the deviation), and the most requests any
// one-second window of any alignment saw (the sliding-log promise: never more than N admitted per
// period; a request's arrival lags its admission by the step's own latency, so arrivals can bunch).

import { createServer } from "node:http";
import type { AddressInfo } from "node:net";
import type { ChildProcess } from "node:child_process";
import pg from "pg";
import { freePort, serve, TOKEN, waitHealthy } from "./fleet.js";

export interface FlowRateRow {
  processes: number;
  limit: number;
  seconds: number;
  observedPerS: number;
  deviation: number;
  maxInAnySecond: number;
  requests: number;
  /** Requests for a run the sink had already seen (a second side effect; should be 0). */
  repeats: number;
}

const WARMUP_MS = 5000;

export async function benchFlowRate(pgUrl: string, limit: number, seconds: number): Promise<FlowRateRow> {
  const arrivals: number[] = [];
  const seen = new Set<string>();
  let repeats = 0;
  const sink = createServer((req, res) => {
    let body = "";
    req.on("data", (c) => (body += c));
    req.on("end", () => {
      arrivals.push(performance.timeOrigin + performance.now());
      const run = (JSON.parse(body || "{}") as { run?: string }).run ?? "";
      if (seen.has(run)) repeats++;
      seen.add(run);
      res.writeHead(200, { "content-type": "application/json" }).end("{}");
    });
  });
  sink.keepAliveTimeout = 60_000;
  await new Promise<void>((r) => sink.listen(0, "127.0.0.1", r));
  const sinkUrl = `http://127.0.0.1:${(sink.address() as AddressInfo).port}`;
  const schema = `bench_rate_${process.pid}`;
  const admin = new pg.Client({ connectionString: pgUrl });
  await admin.connect();
  await admin.query(`DROP SCHEMA IF EXISTS ${schema} CASCADE`);
  const port = await freePort();
  const env = { WEFT_DATABASE_URL: pgUrl, WEFT_DATABASE_SCHEMA: schema, WEFT_ADMIN_TOKEN: TOKEN, WEFT_PORT: String(port) };
  const children: ChildProcess[] = [];
  const processes = 3;
  try {
    const url = `http://127.0.0.1:${port}`;
    children.push(serve("all", env));
    await waitHealthy(url);
    for (let i = 1; i < processes; i++) children.push(serve("worker", { ...env, WEFT_PORT: "0" }));
    const call = async (method: string, path: string, body: unknown) => {
      const res = await fetch(`${url}${path}`, {
        method,
        headers: { authorization: `Bearer ${TOKEN}`, "content-type": "application/json" },
        body: JSON.stringify(body),
      });
      if (!res.ok) throw new Error(`${method} ${path}: ${res.status} ${await res.text()}`);
      return res.json() as Promise<Record<string, unknown>>;
    };
    const a = await call("POST", "/v1/automations", {
      definition: {
        key: "rated",
        name: "Rate limited",
        reentry: { policy: "allow_concurrent" },
        rate_limit: { key: "crm", limit, period_ms: 1000, on_limit: "queue" },
        root: "call",
        nodes: [{ key: "call", kind: "http_request", config: { method: "POST", url: `${sinkUrl}/r`, body: { run: "{{ run.id }}" } } }],
      },
    });
    // A backlog that outlasts the window: every process has rate-limited work the whole time.
    const backlog = Math.ceil(limit * (seconds + WARMUP_MS / 1000) * 1.3);
    for (let i = 0; i < backlog; i += 1000) {
      const n = Math.min(1000, backlog - i);
      await call("POST", `/v1/automations/${a.id}/enroll`, { subjects: Array.from({ length: n }, (_, j) => ({ subject_id: `s${i + j}` })) });
    }
    while (arrivals.length === 0) await new Promise((r) => setTimeout(r, 20));
    const from = arrivals[0]! + WARMUP_MS;
    const to = from + seconds * 1000;
    await new Promise((r) => setTimeout(r, Math.max(0, to - Date.now() + 500)));
    const inWindow = arrivals.filter((t) => t >= from && t < to).sort((x, y) => x - y);
    let maxInAnySecond = 0;
    let lo = 0;
    for (let hi = 0; hi < inWindow.length; hi++) {
      while (inWindow[hi]! - inWindow[lo]! >= 1000) lo++;
      maxInAnySecond = Math.max(maxInAnySecond, hi - lo + 1);
    }
    const observedPerS = inWindow.length / seconds;
    return { processes, limit, seconds, observedPerS, deviation: observedPerS / limit - 1, maxInAnySecond, requests: inWindow.length, repeats };
  } finally {
    for (const c of children) c.kill("SIGTERM");
    await Promise.all(children.map((c) => (c.exitCode === null ? new Promise((r) => c.once("exit", r)) : null)));
    sink.closeAllConnections();
    await new Promise<void>((r) => sink.close(() => r()));
    await admin.query(`DROP SCHEMA IF EXISTS ${schema} CASCADE`);
    await admin.end();
  }
}
