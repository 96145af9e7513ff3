// Flow control under crashes: worker processes (`weft serve --role worker`, 3 at once on
// PostgreSQL beside this process's API engine, one at a time on the embedded store) drive runs
// with per-key concurrency limits while workers are SIGKILLed at random. A loopback destination counts requests in flight per key: the
// automation's limit (2 per key, held across both steps) and the node's (1 per key) are never
// exceeded, every run completes, and afterwards no slot is held and no run waits.

import http from "node:http";
import type { AddressInfo } from "node:net";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { Engine } from "../src/engine/engine.js";
import { startEngine, WS } from "./helpers/engine.js";
import { makeStore, STORE_KINDS, type TestStore } from "./helpers/stores.js";
import { sleep, until } from "./helpers/wait.js";
import { kill, killAll, startWorker, type Worker } from "./helpers/workers.js";

const LEASE_MS = 1000;
const ACCOUNTS = ["k1", "k2", "k3"];
const RUNS_PER_ACCOUNT = 8;

/** Requests in flight per account (both paths of a run count for its automation-level slot), and per node path. */
class Destination {
  readonly max = new Map<string, number>();
  private readonly now = new Map<string, number>();
  requests = 0;
  private server = http.createServer((req, res) => {
    req.resume();
    const [, node, account] = (req.url ?? "").split("/");
    const keys = [`run:${account}`, `${node}:${account}`];
    this.requests++;
    for (const k of keys) {
      const n = (this.now.get(k) ?? 0) + 1;
      this.now.set(k, n);
      this.max.set(k, Math.max(n, this.max.get(k) ?? 0));
    }
    setTimeout(() => {
      for (const k of keys) this.now.set(k, (this.now.get(k) ?? 1) - 1);
      res.writeHead(200, { "content-type": "application/json" });
      res.end("{}");
    }, 150);
  });
  url = "";
  async start(): Promise<this> {
    await new Promise<void>((resolve) => this.server.listen(0, "127.0.0.1", () => resolve()));
    this.url = `http://127.0.0.1:${(this.server.address() as AddressInfo).port}`;
    return this;
  }
  async stop(): Promise<void> {
    this.server.closeAllConnections();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }
}

describe.each(STORE_KINDS)("flow control under SIGKILL (%s store)", (kind) => {
  let ts: TestStore;
  let api: Engine;
  let dest: Destination;

  beforeAll(async () => {
    ts = await makeStore(kind);
    dest = await new Destination().start();
    api = await startEngine({ store: ts.store, noRunner: true });
  });
  afterAll(async () => {
    await killAll();
    await api.stop();
    await dest.stop();
    await ts.destroy();
  });

  it("per-key limits hold while workers die; every run completes; nothing stays held", { timeout: 300_000 }, async () => {
    const retry = { max_attempts: 10, initial_ms: 50, max_ms: 500 };
    const a = await api.createAutomation(WS, {
      key: "flow-crash",
      name: "flow crash",
      root: "a",
      concurrency: [{ key: "{{ context.account }}", limit: 2 }],
      nodes: [
        { key: "a", kind: "http_request", config: { method: "POST", url: `${dest.url}/a/{{ context.account }}` }, retry },
        {
          key: "b",
          kind: "http_request",
          config: { method: "POST", url: `${dest.url}/b/{{ context.account }}` },
          retry,
          concurrency: [{ key: "{{ context.account }}", limit: 1 }],
        },
      ],
      edges: [{ from: "a", port: "next", to: "b" }],
    });
    const ids: string[] = [];
    for (let i = 0; i < RUNS_PER_ACCOUNT; i++) {
      for (const account of ACCOUNTS) ids.push((await api.enroll(WS, a.id, { context_overrides: { account } })).run.id);
    }
    const env = { WEFT_LEASE_MS: String(LEASE_MS), WEFT_QUARANTINE_AFTER: "1000", WEFT_POLL_MS: "100" };
    const count = kind === "postgres" ? 3 : 1;
    const workers: Worker[] = [];
    for (let i = 0; i < count; i++) workers.push(startWorker(ts, env));
    const allDone = async () => (await Promise.all(ids.map((id) => api.getRun(WS, id)))).every((r) => r.completed_at !== null);

    let kills = 0;
    while (kills < 5 && !(await allDone())) {
      // A worker at random, after a random number of its requests: the kill lands anywhere in a step or a gate.
      const i = Math.floor(Math.random() * workers.length);
      const up = await workers[i]!.ready;
      if (!up) throw new Error(`worker exited on its own:\n${workers[i]!.output()}`);
      // Let it drive a few requests first, so the kill lands mid-step with slots held.
      const seen = dest.requests;
      const after = 1 + Math.floor(Math.random() * 4);
      await until("the worker's requests", () => dest.requests >= seen + after || allDone(), 60_000, 20);
      await kill(workers[i]!);
      kills++;
      workers[i] = startWorker(ts, env);
      await sleep(200);
    }
    await until("every run to end", allDone, 240_000, 100);
    const runs = await Promise.all(ids.map((id) => api.getRun(WS, id)));
    console.log(`[flow crash ${kind}] kills=${kills} requests=${dest.requests} max=${JSON.stringify(Object.fromEntries(dest.max))}`);
    expect(runs.map((r) => r.status)).toEqual(ids.map(() => "completed"));
    for (const account of ACCOUNTS) {
      expect(dest.max.get(`run:${account}`)).toBeLessThanOrEqual(2);
      expect(dest.max.get(`b:${account}`)).toBe(1);
    }
    expect(await ts.store.flowStats(WS, Date.now(), 100)).toEqual([]);
    expect(kills).toBeGreaterThan(0);
  });
});
