// Destination pauses through each runner's cache (engine/host-pauses.ts): a workspace that was
// never throttled reads no pause per http_request step, and a pause one engine records stops the
// calls of another engine at once, although that engine had just read "not paused" for the host
// (the pause is announced on the wake-up channel; PostgreSQL's LISTEN/NOTIFY).

import http from "node:http";
import type { AddressInfo } from "node:net";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import type { Engine } from "../src/engine/engine.js";
import { HOST_PAUSE_CACHE_MS, HostPauses } from "../src/engine/host-pauses.js";
import type { Store } from "../src/engine/store.js";
import { settle, startEngine, WS } from "./helpers/engine.js";
import { makeStore, STORE_KINDS, type TestStore } from "./helpers/stores.js";
import { until } from "./helpers/wait.js";

/** Answers each request by its arrival number (1-based); records arrivals. */
class Destination {
  readonly arrivals: number[] = [];
  reply: (nth: number) => { status: number; headers?: Record<string, string> } = () => ({ status: 200 });
  private readonly server = http.createServer((req, res) => {
    req.resume();
    this.arrivals.push(Date.now());
    const r = this.reply(this.arrivals.length);
    res.writeHead(r.status, { "content-type": "application/json", ...(r.headers ?? {}) });
    res.end(JSON.stringify({ ok: r.status < 300 }));
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

let seq = 0;
const callDef = (url: string) => {
  const key = `host-pause-${++seq}`;
  return {
    key,
    name: key,
    root: "call",
    nodes: [{ key: "call", kind: "http_request", config: { method: "POST", url: `${url}/x` }, retry: { max_attempts: 3, initial_ms: 10, max_ms: 50 } }],
    edges: [],
  };
};

describe.each(STORE_KINDS)("destination pauses, cached per process (%s store)", (kind) => {
  let ts: TestStore;
  let dest: Destination;
  const engines: Engine[] = [];

  beforeEach(async () => {
    ts = await makeStore(kind);
    dest = await new Destination().start();
  });
  afterEach(async () => {
    for (const e of engines.splice(0)) await e.stop();
    await dest.stop();
    await ts.destroy();
  });

  it("steps calling a host that never asked to slow down do not read its pause each time", async () => {
    let reads = 0;
    const real = ts.store;
    // The real store, its pause reads counted.
    const store = new Proxy(real, {
      get(target, prop, receiver) {
        if (prop === "hostPausedUntil") return (...a: Parameters<Store["hostPausedUntil"]>) => (reads++, target.hostPausedUntil(...a));
        const v = Reflect.get(target, prop, receiver);
        return typeof v === "function" ? v.bind(target) : v;
      },
    });
    const e = await startEngine({ store });
    engines.push(e);
    const a = await e.createAutomation(WS, callDef(dest.url));
    const n = 10;
    for (let i = 0; i < n; i++) {
      const { run } = await e.enroll(WS, a.id, {});
      expect((await settle(e, run.id)).status).toBe("completed");
    }
    expect(dest.arrivals).toHaveLength(n);
    // One read per second at most (the cache's life), never one per step.
    expect(reads).toBeGreaterThanOrEqual(1);
    expect(reads).toBeLessThan(n);
  });

  it("an answer aged out is read again once and then served from the cache again, not read per call", async () => {
    let reads = 0;
    const store: Pick<Store, "hostPausedUntil" | "pauseHost"> = {
      hostPausedUntil: (...a) => (reads++, ts.store.hostPausedUntil(...a)),
      pauseHost: (...a) => ts.store.pauseHost(...a),
    };
    let clock = 0;
    const pauses = new HostPauses(
      store,
      () => {},
      () => clock,
    );
    const read = () => pauses.hostPausedUntil(WS, "api.example.test", Date.now());
    expect(await read()).toBeNull();
    expect(await read()).toBeNull();
    expect(reads).toBe(1);
    // Past the cache's life: one read, whose answer is kept for the next life.
    clock += HOST_PAUSE_CACHE_MS;
    expect(await read()).toBeNull();
    expect(await read()).toBeNull();
    expect(await read()).toBeNull();
    expect(reads).toBe(2);
    // A pause recorded here while a read is in flight is not overwritten by that read's answer.
    clock += HOST_PAUSE_CACHE_MS;
    const inFlight = read();
    await pauses.pauseHost(WS, "api.example.test", Date.now() + 60_000, 429, Date.now());
    await inFlight;
    expect((await read())?.status).toBe(429);
    expect(reads).toBe(3);
  });

  it.runIf(kind === "postgres")(
    "a 429 answered to another engine stops this engine's next call at once, though it had just read the host as not paused",
    async () => {
      dest.reply = (nth) => (nth === 2 ? { status: 429, headers: { "retry-after": "2" } } : { status: 200 });
      // Long polls: each engine drives only the runs enrolled through it.
      const e1 = await startEngine({ store: ts.store, runner: { pollMs: 60_000 } });
      const e2 = await startEngine({ store: ts.reopen(), runner: { pollMs: 60_000 } });
      engines.push(e1, e2);
      const drove = (e: Engine) => {
        const ids = new Set<string>();
        e.events.on("run:claimed", (x) => ids.add(x.run_id));
        return ids;
      };
      const by1 = drove(e1);
      const by2 = drove(e2);
      const a = await e1.createAutomation(WS, callDef(dest.url));
      // e2 calls the host: it now holds "not paused" for it.
      const { run: w } = await e2.enroll(WS, a.id, {});
      expect((await settle(e2, w.id)).status).toBe("completed");
      expect(by2.has(w.id)).toBe(true);
      const heard = e2.wakeups.heard;
      // e1's call is answered 429 with Retry-After: 2; e1 records the pause and announces it.
      const { run: x } = await e1.enroll(WS, a.id, {});
      await until("the 429", () => dest.arrivals.length === 2);
      const host = new URL(dest.url).host;
      await until("the pause recorded", async () => (await ts.store.hostPausedUntil(WS, host, Date.now())) !== null);
      await until("e2 hears of it", () => e2.wakeups.heard > heard);
      expect(by1.has(x.id)).toBe(true);
      // e2's next call parks instead of going out.
      const { run: y } = await e2.enroll(WS, a.id, {});
      const parked = await settle(e2, y.id, (r) => r.waiting_for === "rate_limit" || r.completed_at !== null);
      expect(by2.has(y.id)).toBe(true);
      expect(parked.waiting_for).toBe("rate_limit");
      expect(dest.arrivals).toHaveLength(2);
    },
  );
});
