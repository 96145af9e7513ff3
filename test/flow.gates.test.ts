// Flow control gates on both stores, in-process engines against a loopback destination:
// per-key concurrency (automation and node level), round-robin across keys, rate limits (queue and
// skip, on a manual clock), a destination's 429 + Retry-After pausing every engine on the store,
// and hostile key templates.

import http from "node:http";
import type { AddressInfo } from "node:net";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { ManualClock } from "../src/engine/clock.js";
import { HOST_PAUSE_CACHE_MS } from "../src/engine/host-pauses.js";
import { flowKey, hostPauseFor, MAX_FLOW_KEY_LENGTH, MAX_HOST_PAUSE_MS } from "../src/model/flow.js";
import type { Engine } from "../src/engine/engine.js";
import { settle, startEngine, WS } from "./helpers/engine.js";
import { makeStore, STORE_KINDS, type TestStore } from "./helpers/stores.js";
import { sleep, until } from "./helpers/wait.js";

/** A destination that counts requests in flight per path and records their arrival. */
class Destination {
  readonly arrivals: { path: string; at: number; wall: number }[] = [];
  readonly maxInFlight = new Map<string, number>();
  private readonly inFlight = new Map<string, number>();
  private server: http.Server;
  url = "";
  delayMs = 40;
  /** The reply's status and headers for the nth request (1-based); default 200. */
  reply: (nth: number) => { status: number; headers?: Record<string, string> } = () => ({ status: 200 });

  constructor(private readonly clock: { now(): number } = { now: () => Date.now() }) {
    this.server = http.createServer((req, res) => {
      req.resume();
      const path = req.url ?? "";
      this.arrivals.push({ path, at: this.clock.now(), wall: Date.now() });
      const n = (this.inFlight.get(path) ?? 0) + 1;
      this.inFlight.set(path, n);
      this.maxInFlight.set(path, Math.max(n, this.maxInFlight.get(path) ?? 0));
      const r = this.reply(this.arrivals.length);
      setTimeout(() => {
        this.inFlight.set(path, (this.inFlight.get(path) ?? 1) - 1);
        res.writeHead(r.status, { "content-type": "application/json", ...(r.headers ?? {}) });
        res.end(JSON.stringify({ ok: r.status < 300 }));
      }, this.delayMs);
    });
  }
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
function callDef(url: string, flow: Record<string, unknown>, nodeFlow: Record<string, unknown> = {}) {
  const key = `flow-${++seq}`;
  return {
    key,
    name: key,
    root: "call",
    ...flow,
    nodes: [
      {
        key: "call",
        kind: "http_request",
        config: { method: "POST", url: `${url}/acct/{{ context.account }}` },
        retry: { max_attempts: 5, initial_ms: 10, max_ms: 50 },
        ...nodeFlow,
      },
    ],
    edges: [],
  };
}

describe.each(STORE_KINDS)("flow control gates (%s store)", (kind) => {
  let ts: TestStore;
  let dest: Destination;
  const engines: Engine[] = [];

  beforeAll(async () => {
    ts = await makeStore(kind);
  });
  afterAll(async () => {
    await ts.destroy();
  });
  afterEach(async () => {
    for (const e of engines.splice(0)) await e.stop();
    await dest?.stop();
  });

  async function enrollAll(e: Engine, automationId: string, accounts: string[]): Promise<string[]> {
    // One batch: every run is due at once, so each key's runs meet its limit together.
    const res = await e.enrollMany(
      WS,
      automationId,
      accounts.map((account) => ({ context_overrides: { account } })),
    );
    return res.map((r) => {
      if ("error" in r) throw new Error(`enroll refused: ${r.error.message}`);
      return r.run.id;
    });
  }

  it("per-key concurrency at the automation: never more than the limit per key in flight, every run completes, nothing stays held", async () => {
    dest = await new Destination().start();
    const e = await startEngine({ store: ts.store });
    engines.push(e);
    const a = await e.createAutomation(WS, callDef(dest.url, { concurrency: [{ key: "account:{{ context.account }}", limit: 2 }] }));
    const ids = await enrollAll(e, a.id, [..."AAAAAAAABBBB"]);
    const runs = await Promise.all(ids.map((id) => settle(e, id)));
    expect(runs.map((r) => r.status)).toEqual(ids.map(() => "completed"));
    // Without the limit more of A's requests overlap (measured once without it: 8 on the embedded store, 3 on PostgreSQL).
    expect(dest.maxInFlight.get("/acct/A")).toBeLessThanOrEqual(2);
    expect(dest.maxInFlight.get("/acct/B")).toBeLessThanOrEqual(2);
    expect(await ts.store.flowStats(WS, Date.now(), 100)).toEqual([]);
  });

  it("per-key concurrency at a node: the step holds the slot while it runs", async () => {
    dest = await new Destination().start();
    const e = await startEngine({ store: ts.store });
    engines.push(e);
    const a = await e.createAutomation(WS, callDef(dest.url, {}, { concurrency: [{ key: "{{ context.account }}", limit: 1 }] }));
    const ids = await enrollAll(e, a.id, [..."AAAAAABBB"]);
    const runs = await Promise.all(ids.map((id) => settle(e, id)));
    expect(runs.map((r) => r.status)).toEqual(ids.map(() => "completed"));
    expect(dest.maxInFlight.get("/acct/A")).toBe(1);
    expect(dest.maxInFlight.get("/acct/B")).toBe(1);
    expect(await ts.store.flowStats(WS, Date.now(), 100)).toEqual([]);
  });

  it("a flooded key does not hold back another key's runs", async () => {
    dest = await new Destination().start();
    dest.delayMs = 60;
    const e = await startEngine({ store: ts.store });
    engines.push(e);
    const a = await e.createAutomation(WS, callDef(dest.url, { concurrency: [{ key: "{{ context.account }}", limit: 1 }] }));
    const flood = await enrollAll(
      e,
      a.id,
      Array.from({ length: 12 }, () => "F"),
    );
    await until("the flood's first request", () => dest.arrivals.length > 0);
    const [other] = await enrollAll(e, a.id, ["Q"]);
    await settle(e, other!);
    await Promise.all(flood.map((id) => settle(e, id)));
    const order = dest.arrivals.map((x) => x.path);
    const q = order.indexOf("/acct/Q");
    // Q's run went out while most of the flood still waited its turn.
    expect(order.slice(q + 1).filter((p) => p === "/acct/F").length).toBeGreaterThanOrEqual(6);
    expect(dest.maxInFlight.get("/acct/F")).toBe(1);
  });

  it("rate limit, queue, two engines on one store: no period of any alignment sees more than the limit, the turns are spread, every run completes", async () => {
    const clock = new ManualClock(Date.UTC(2026, 0, 1));
    dest = await new Destination(clock).start();
    dest.delayMs = 0;
    const e = await startEngine({ store: ts.store, clock, runner: { leaseMs: 600_000 } });
    const e2 = await startEngine({ store: ts.reopen(), clock, runner: { leaseMs: 600_000 } });
    engines.push(e, e2);
    const a = await e.createAutomation(WS, callDef(dest.url, { rate_limit: { key: "{{ context.account }}", limit: 2, period_ms: 1000, on_limit: "queue" } }));
    const ids = [...(await enrollAll(e, a.id, [..."AAAA"])), ...(await enrollAll(e2, a.id, [..."AAA"]))];
    const waited = new Set<string>();
    await until(
      "every rate-limited run to complete",
      async () => {
        const runs = await Promise.all(ids.map((id) => e.getRun(WS, id)));
        for (const r of runs) if (r.waiting_for === "rate_limit") waited.add(r.id);
        if (runs.every((r) => r.completed_at !== null)) return true;
        // The clock moves only while nothing is in flight, so a request arrives at the engine time it was admitted at.
        if (runs.every((r) => r.completed_at !== null || (r.status === "waiting" && (r.due_at ?? 0) > clock.now()))) clock.advance(100);
        e.poke();
        e2.poke();
        await sleep(20);
        return false;
      },
      120_000,
    );
    const at = dest.arrivals.map((x) => x.at).sort((x, y) => x - y);
    expect(at).toHaveLength(7);
    for (const t of at) expect(at.filter((u) => u > t - 1000 && u <= t).length).toBeLessThanOrEqual(2);
    expect(at[6]! - at[0]!).toBeGreaterThanOrEqual(3000);
    expect(waited.size).toBeGreaterThanOrEqual(5);
  });

  it("rate limit, skip: runs beyond the limit exit rate_limited and send nothing", async () => {
    dest = await new Destination().start();
    const e = await startEngine({ store: ts.store });
    engines.push(e);
    const a = await e.createAutomation(WS, callDef(dest.url, { rate_limit: { limit: 2, period_ms: 3_600_000, on_limit: "skip" } }));
    const ids = await enrollAll(e, a.id, [..."ABCDE"]);
    const runs = await Promise.all(ids.map((id) => settle(e, id)));
    expect(runs.filter((r) => r.status === "completed")).toHaveLength(2);
    const skipped = runs.filter((r) => r.status === "exited");
    expect(skipped.map((r) => r.exit_reason)).toEqual(["rate_limited", "rate_limited", "rate_limited"]);
    expect(dest.arrivals).toHaveLength(2);
  });

  it("a node's rate limit, skip: the step beyond the limit ends the run rate_limited before it sends", async () => {
    dest = await new Destination().start();
    const e = await startEngine({ store: ts.store });
    engines.push(e);
    const a = await e.createAutomation(
      WS,
      callDef(dest.url, {}, { rate_limit: { key: "{{ context.account }}", limit: 1, period_ms: 3_600_000, on_limit: "skip" } }),
    );
    const ids = await enrollAll(e, a.id, ["A", "A", "B"]);
    const runs = await Promise.all(ids.map((id) => settle(e, id)));
    expect(runs.map((r) => [r.status, r.exit_reason]).sort()).toEqual([
      ["completed", "completed"],
      ["completed", "completed"],
      ["exited", "rate_limited"],
    ]);
    expect(dest.arrivals.map((x) => x.path).sort()).toEqual(["/acct/A", "/acct/B"]);
  });

  it("429 with Retry-After: 2 pauses the host for every engine on the store; nothing reaches it for 2 s", async () => {
    dest = await new Destination().start();
    dest.delayMs = 0;
    const sent429: number[] = [];
    dest.reply = (nth) => {
      if (nth === 1) {
        sent429.push(Date.now());
        return { status: 429, headers: { "retry-after": "2" } };
      }
      return { status: 200 };
    };
    const e1 = await startEngine({ store: ts.store });
    const e2 = await startEngine({ store: ts.reopen() });
    engines.push(e1, e2);
    const a = await e1.createAutomation(WS, callDef(dest.url, {}));
    const [first] = await enrollAll(e1, a.id, ["A"]);
    await until("the 429", () => sent429.length === 1 && dest.arrivals.length === 1);
    await until("the pause recorded", async () => (await ts.store.hostPausedUntil(WS, new URL(dest.url).host, Date.now())) !== null);
    const more = [...(await enrollAll(e1, a.id, ["B", "C"])), ...(await enrollAll(e2, a.id, ["D", "E"]))];
    const runs = await Promise.all([first!, ...more].map((id) => settle(e1, id)));
    expect(runs.map((r) => r.status)).toEqual(runs.map(() => "completed"));
    const after = dest.arrivals.slice(1).map((x) => x.wall);
    expect(after.length).toBe(5);
    for (const w of after) expect(w - sent429[0]!).toBeGreaterThanOrEqual(2000);
    // The runs that met the pause parked for it rather than sending.
    const parked = await Promise.all(more.map(async (id) => (await e1.listSteps(WS, id)).some((s) => s.outcome === "waiting")));
    expect(parked.filter(Boolean).length).toBeGreaterThanOrEqual(1);
  });

  it("an agent step's model endpoint answering 429 pauses that host: the next agent run parks instead of calling", async () => {
    dest = await new Destination().start();
    dest.delayMs = 0;
    const sent429: number[] = [];
    dest.reply = (nth) => {
      if (nth === 1) {
        sent429.push(Date.now());
        return { status: 429, headers: { "retry-after": "2" } };
      }
      return { status: 200 };
    };
    // The fake model answers `{ ok: true }` bodies, which are no completion: the agent steps fail, but only their arrival times matter here.
    const e = await startEngine({ store: ts.store, settings: { ai: { base_url: `${dest.url}/v1`, api_key: "k" } } });
    engines.push(e);
    const def = (key: string) => ({ key, name: key, root: "ask", nodes: [{ key: "ask", kind: "agent", config: { model: "m", prompt: "hi" } }] });
    const a = await e.createAutomation(WS, def(`agent-pause-${++seq}`));
    const { run: first } = await e.enroll(WS, a.id, {});
    await until("the 429", () => sent429.length === 1);
    await until("the pause recorded", async () => (await ts.store.hostPausedUntil(WS, new URL(dest.url).host, Date.now())) !== null);
    const { run: second } = await e.enroll(WS, a.id, {});
    await settle(e, second.id, (r) => r.waiting_for === "rate_limit" || r.completed_at !== null);
    expect((await e.getRun(WS, second.id)).waiting_for).toBe("rate_limit");
    await settle(e, second.id);
    await settle(e, first.id);
    for (const x of dest.arrivals.slice(1)) expect(x.wall - sent429[0]!).toBeGreaterThanOrEqual(2000);
    expect(dest.arrivals.length).toBeGreaterThanOrEqual(2);
  });

  it("a key template that throws fails the run with flow.key_failed; a huge key is cut and hashed", async () => {
    dest = await new Destination().start();
    const e = await startEngine({ store: ts.store });
    engines.push(e);
    const bad = await e.createAutomation(WS, callDef(dest.url, { concurrency: [{ key: "{{ context.missing.deeper }}", limit: 1 }] }));
    const [id] = await enrollAll(e, bad.id, ["A"]);
    const run = await settle(e, id!);
    expect(run.status).toBe("failed");
    const steps = await e.listSteps(WS, id!);
    expect(steps.at(-1)?.error).toMatchObject({ code: "flow.key_failed", details: { pointer: "/concurrency/0/key" } });
    const huge = await e.createAutomation(WS, callDef(dest.url, {}, { concurrency: [{ key: "{{ context.big }}", limit: 1 }] }));
    const { run: h } = await e.enroll(WS, huge.id, { context_overrides: { account: "A", big: "x".repeat(100_000) } });
    const keys = new Set<string>();
    const watch = setInterval(() => void ts.store.flowStats(WS, Date.now(), 10).then((s) => s.forEach((k) => keys.add(k.key))), 5);
    await until(
      "the huge key's slot held",
      async () => (await ts.store.flowStats(WS, Date.now(), 10)).length > 0 || (await e.getRun(WS, h.id)).completed_at !== null,
    );
    expect((await settle(e, h.id)).status).toBe("completed");
    clearInterval(watch);
    // Cut and hashed: two keys differing only past the cut stay apart, and none is long.
    expect(flowKey("x".repeat(100_000))).toHaveLength(flowKey(`${"x".repeat(99_999)}y`).length);
    expect(flowKey("x".repeat(100_000))).not.toBe(flowKey(`${"x".repeat(99_999)}y`));
    expect(flowKey("x".repeat(100_000)).length).toBeLessThanOrEqual(MAX_FLOW_KEY_LENGTH);
    for (const k of keys) expect(k.length).toBeLessThanOrEqual(MAX_FLOW_KEY_LENGTH);
  });
});

describe.each(STORE_KINDS)("flow control explained (%s store)", (kind) => {
  let ts: TestStore;
  let dest: Destination;
  let e: Engine;

  beforeAll(async () => {
    ts = await makeStore(kind);
  });
  afterAll(async () => {
    await ts.destroy();
  });
  afterEach(async () => {
    await e.stop();
    await dest.stop();
  });

  it("a held run says what holds it: the concurrency slot's key, holders and limit; a rate turn; a destination's pause", async () => {
    dest = await new Destination().start();
    dest.delayMs = 1500;
    e = await startEngine({ store: ts.store });
    const a = await e.createAutomation(WS, callDef(dest.url, { concurrency: [{ key: "account:{{ context.account }}", limit: 1 }] }));
    const { run: first } = await e.enroll(WS, a.id, { context_overrides: { account: "42" } });
    await until("the first run's request", () => dest.arrivals.length === 1);
    const { run: second } = await e.enroll(WS, a.id, { context_overrides: { account: "42" } });
    await settle(e, second.id, (r) => r.waiting_for === "concurrency");
    const x = await e.explain(WS, second.id);
    expect(x.waiting?.for).toBe("concurrency");
    expect(x.summary).toMatch(
      new RegExp(`^Waiting for a concurrency slot of \`account:42\` \\(1 of 1 held by runs ${first.id}, the oldest since \\d\\d:\\d\\d:\\d\\d\\)`),
    );
    await settle(e, second.id);

    // A queued rate turn.
    const r = await e.createAutomation(WS, callDef(dest.url, { rate_limit: { key: "crm:{{ context.account }}", limit: 1, period_ms: 60_000 } }));
    dest.delayMs = 0;
    const { run: r1 } = await e.enroll(WS, r.id, { context_overrides: { account: "42" } });
    await settle(e, r1.id);
    const { run: r2 } = await e.enroll(WS, r.id, { context_overrides: { account: "42" } });
    await settle(e, r2.id, (x) => x.waiting_for === "rate_limit");
    const rx = await e.explain(WS, r2.id);
    expect(rx.summary).toMatch(/^Rate limit `crm:42`: next slot in (59|60)\.\d s\.$/);

    // A destination's pause.
    const host = new URL(dest.url).host;
    // Recorded straight in the store, unannounced: this engine, which read the host as not paused
    // moments ago, sees it once that answer ages out of its cache (engine/host-pauses.ts).
    await ts.store.pauseHost(WS, host, Date.now() + 60_000, 429, Date.now());
    await sleep(HOST_PAUSE_CACHE_MS + 50);
    const p = await e.createAutomation(WS, callDef(dest.url, {}));
    const { run: p1 } = await e.enroll(WS, p.id, { context_overrides: { account: "7" } });
    await settle(e, p1.id, (x) => x.waiting_for === "rate_limit");
    const px = await e.explain(WS, p1.id);
    // A minute's pause, read a little over a second after it was recorded (and under a loaded machine, later).
    expect(px.summary).toMatch(new RegExp(`^Destination ${host.replace(/\./g, "\\.")} asked to slow down \\(429\\): next request in (5[6-9]|60)\\.\\d s\\.$`));
  });
});

describe.each(STORE_KINDS)("flow control simulated (%s store)", (kind) => {
  let ts: TestStore;
  let e: Engine;
  beforeAll(async () => {
    ts = await makeStore(kind);
    e = await startEngine({ store: ts.store });
  });
  afterAll(async () => {
    await e.stop();
    await ts.destroy();
  });

  it("a simulation lists the limits the run would meet, with their keys rendered, and counts nothing", async () => {
    const now = Date.now();
    await ts.store.putSharedLimit(
      { workspace_id: WS, name: "crm", key: "crm:{{ context.account }}", limit: 4, created_at: now, updated_at: now },
      { workspace_id: WS, actor: "test", action: "limit.create", target_type: "limit", target_id: "crm", details: {}, at: now },
      true,
    );
    const a = await e.createAutomation(
      WS,
      callDef(
        "http://127.0.0.1:9",
        {
          concurrency: [{ key: "account:{{ context.account }}", limit: 3 }],
          rate_limit: { key: "{{ context.account }}", limit: 10, period_ms: 60_000, on_limit: "skip" },
        },
        { limits: ["crm"] },
      ),
    );
    const t = await e.simulate(WS, a.id, { test_context: { account: "42" } });
    expect(t.limits).toEqual([
      { at: "automation", kind: "concurrency", key: "account:42", limit: 3 },
      { at: "automation", kind: "rate_limit", key: "42", limit: 10, period_ms: 60_000, on_limit: "skip" },
      { at: "call", kind: "shared_limit", name: "crm", key: "crm:42", limit: 4 },
    ]);
    expect(await ts.store.flowStats(WS, Date.now(), 10)).toEqual([]);
  });
});

describe("flow rules", () => {
  it("a destination's answer pauses its host: 429 or 503 with Retry-After, for that long, at most an hour", () => {
    expect(hostPauseFor(429, 2000)).toBe(2000);
    expect(hostPauseFor(429, undefined)).toBeNull();
    expect(hostPauseFor(503, 5000)).toBe(5000);
    expect(hostPauseFor(503, undefined)).toBeNull();
    expect(hostPauseFor(500, 5000)).toBeNull();
    expect(hostPauseFor(429, 10 * MAX_HOST_PAUSE_MS)).toBe(MAX_HOST_PAUSE_MS);
  });
});
