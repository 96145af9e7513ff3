// The other tenant's latency under attack: while tenant A runs the worst expressions it can write
// (as a viewer, `matches('^(a+)+$')` over a long string through the simulate endpoint; as a
// member, nested comprehensions over large lists in a `set` node of its runs and in an event
// trigger's filter), tenant B's simple reads stay fast. The expression budget (cel-budget.ts) is
// what keeps them fast: every evaluation ends within its bounds, so no request of A's holds the
// event loop for long. With the budget raised out of reach, one of A's evaluations holds the
// process for seconds and this test fails.
//
// This is the one test in the suite that asserts a latency, as its task asks: tenant B's p99 over
// SAMPLES sequential GETs stays under 100 ms. The bound is generous for a GET that takes a few
// milliseconds alone; it is crossed when the process is held by long evaluations. On a machine so
// busy that one of the attack's evaluations, capped by the budget as shipped, itself takes more
// than 25 ms of wall time, the bound is six times that time instead: a read may arrive as such an
// evaluation starts, and on a crowded machine a CPU-bound stretch's wall time varies about
// twofold from one to the next (with the suite's files in parallel, four times was crossed by 5%
// once). Without the budget one evaluation runs some 40 times longer than a capped one, and the
// test fails either way.

import type { AddressInfo } from "node:net";
import type { FastifyInstance } from "fastify";
import { Agent, request } from "undici";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { Engine } from "../src/engine/engine.js";
import { type Budget, CelScope, evaluate, type Scope } from "../src/model/expressions.js";
import { buildApp } from "../src/server/app.js";
import { LOOPBACK } from "./helpers/engine.js";
import { makeStore, STORE_KINDS, type TestStore } from "./helpers/stores.js";
import { until } from "./helpers/wait.js";

const TOKEN = "hostile-latency-instance-admin-token";
/** Tenant B's reads measured while A attacks. */
const SAMPLES = 300;
const P99_BOUND_MS = 100;
/** Long enough that even a linear-time regex over it takes a while without the budget's input cap. */
const LONG = `${"a".repeat(600_000)}b`;
/** A list whose comprehension nested in itself is 4,000,000 steps. */
const XS = Array.from({ length: 2000 }, (_, i) => i);
const NESTED = (list: string) => `${list}.map(x, ${list}.filter(y, y > x).size()).size()`;

/**
 * How long this machine, now, takes for one of the attack's evaluations as the budget ships
 * (SHIPPED_BUDGET: a copy of cel-budget.ts's defaults, so raising the engine's budget does not
 * move it): the median of seven.
 */
function referenceTime(): number {
  const scope = new CelScope({ context: { xs: XS }, event: {}, steps: {}, subject: { id: null }, run: {}, secrets: {} } as unknown as Scope, SHIPPED_BUDGET);
  const times: number[] = [];
  for (let i = 0; i < 7; i++) {
    const t0 = performance.now();
    expect(() => evaluate(NESTED("context.xs"), scope)).toThrow(/budget/);
    times.push(performance.now() - t0);
  }
  return percentile(times, 0.5);
}

const SHIPPED_BUDGET: Budget = {
  maxIterations: 100_000,
  maxElements: 100_000,
  maxStringLength: 4_000_000,
  maxTimeMs: 500,
  maxRegexInput: 65_536,
  maxRegexScan: 262_144,
  maxRegexPattern: 1_000,
};

/**
 * Tenant B's simple reads, one after another, each timed (ms). With `bound`, sampling stops once
 * more than 1% of SAMPLES took longer: the p99 of all of them could no longer be under it.
 */
async function sample(call: (method: "GET", path: string) => Promise<Res>, bound = Number.POSITIVE_INFINITY): Promise<number[]> {
  const latencies: number[] = [];
  let over = 0;
  for (let i = 0; i < SAMPLES && over <= SAMPLES * 0.01; i++) {
    const t0 = performance.now();
    const res = await call("GET", "/v1/automations");
    const ms = performance.now() - t0;
    latencies.push(ms);
    if (ms >= bound) over += 1;
    if (res.status !== 200 || res.body.items?.length !== 1) throw new Error(`tenant B's read failed: ${res.status} ${res.text.slice(0, 200)}`);
  }
  return latencies;
}

/** The p99 of SAMPLES reads of which these are the first (those not taken count as fast). */
function p99Of(latencies: number[]): number {
  const all = [...latencies, ...Array<number>(SAMPLES - latencies.length).fill(0)];
  return percentile(all, 0.99);
}

function percentile(xs: number[], p: number): number {
  const sorted = [...xs].sort((a, b) => a - b);
  return sorted[Math.ceil(sorted.length * p) - 1]!;
}

function describeLatencies(xs: number[]): string {
  return `p50 ${percentile(xs, 0.5).toFixed(1)} ms, p99 ${percentile(xs, 0.99).toFixed(1)} ms, max ${Math.max(...xs).toFixed(1)} ms over ${xs.length} GETs`;
}

interface Res {
  status: number;
  text: string;
  body: Record<string, any>;
}

describe.each(STORE_KINDS)("another tenant's latency under hostile expressions (%s store)", (kind) => {
  let ts: TestStore;
  let engine: Engine;
  let app: FastifyInstance;
  let base: string;
  let agent: Agent;

  beforeAll(async () => {
    ts = await makeStore(kind);
    engine = new Engine({ httpAllow: LOOPBACK, store: ts.store, runner: { leaseMs: 30_000, pollMs: 20 } });
    await engine.start();
    app = buildApp({ engine, adminToken: TOKEN, rateLimitPerSecond: 0 });
    await app.listen({ host: "127.0.0.1", port: 0 });
    base = `http://127.0.0.1:${(app.server.address() as AddressInfo).port}`;
    agent = new Agent({ connections: 20 });
  });
  afterAll(async () => {
    await agent?.close();
    await app?.close();
    await engine?.stop();
    await ts?.destroy();
  });

  const as =
    (token: string) =>
    async (method: "GET" | "POST", path: string, body?: unknown): Promise<Res> => {
      const res = await request(`${base}${path}`, {
        method,
        dispatcher: agent,
        headers: { authorization: `Bearer ${token}`, ...(body !== undefined ? { "content-type": "application/json" } : {}) },
        ...(body !== undefined ? { body: JSON.stringify(body) } : {}),
      });
      const text = await res.body.text();
      return { status: res.statusCode, text, body: text.startsWith("{") ? JSON.parse(text) : {} };
    };

  /** A new workspace: its admin's client, and a client of a new user of `role`. */
  async function tenant(name: string, role: "viewer" | "member") {
    const ws = await as(TOKEN)("POST", "/v1/workspaces", { name });
    expect(ws.status, ws.text).toBe(201);
    const admin = as(ws.body.admin_token);
    const user = await admin("POST", "/v1/users", { name: `${name} ${role}`, role });
    expect(user.status, user.text).toBe(201);
    const token = await admin("POST", "/v1/tokens", { user_id: user.body.id });
    expect(token.status, token.text).toBe(201);
    return { id: ws.body.id as string, admin, user: as(token.body.token) };
  }

  it(`tenant B's simple GETs keep p99 under ${P99_BOUND_MS} ms while tenant A runs the worst expressions it can write`, async () => {
    const A = await tenant("A", "viewer");
    const B = await tenant("B", "viewer");
    const create = async (definition: Record<string, unknown>) => {
      const res = await A.admin("POST", "/v1/automations", { definition });
      expect(res.status, res.text).toBe(201);
      return res.body.id as string;
    };
    const regex = await create({
      key: "regex",
      name: "regex",
      root: "s",
      nodes: [{ key: "s", kind: "set", config: { assign: { hit: "context.s.matches('^(a+)+$')" } } }],
    });
    const nestedSet = await create({
      key: "nested-set",
      name: "nested in a set node",
      reentry: { policy: "allow_concurrent" },
      root: "s",
      nodes: [{ key: "s", kind: "set", config: { assign: { n: NESTED("context.xs") } } }],
    });
    await create({
      key: "nested-filter",
      name: "nested in a trigger filter",
      triggers: [{ type: "event", name: "a.flood", filter: `${NESTED("event.payload.xs")} > 0` }],
      root: "s",
      nodes: [{ key: "s", kind: "set", config: { assign: { ok: "true" } } }],
    });
    const bRes = await B.admin("POST", "/v1/automations", {
      definition: { key: "b", name: "b", root: "s", nodes: [{ key: "s", kind: "set", config: { assign: { ok: "true" } } }] },
    });
    expect(bRes.status, bRes.text).toBe(201);

    // For the report: the same reads without the attack, on this machine, now.
    const quiet = describeLatencies(await sample(B.user));
    // The bound: 100 ms, or on a machine so busy that one capped evaluation takes longer than
    // 25 ms, six times that (see the head of this file).
    const reference = referenceTime();
    const bound = Math.max(P99_BOUND_MS, 6 * reference);

    // Tenant A attacks without pause, one request after another, cycling through the three
    // attacks; each next request is sent once the last one's expression has been evaluated (the
    // run ended, the event dispatched). What is measured is how long one evaluation may hold the
    // process, which the budget bounds, not how much work a tenant may queue at once (the rate
    // limit's and the runner's concern).
    let done = false;
    const attacks = { simulate: 0, enroll: 0, event: 0 };
    const simulated: Res[] = [];
    const attacking = (async () => {
      while (!done) {
        const sim = await A.user("POST", `/v1/automations/${regex}/simulate`, { test_context: { s: LONG } });
        if (simulated.length < 3) simulated.push(sim);
        attacks.simulate += 1;
        const run = await A.admin("POST", `/v1/automations/${nestedSet}/enroll`, { context_overrides: { xs: XS } });
        expect(run.status, run.text).toBe(201);
        await engine.waitForRun(A.id, run.body.id);
        attacks.enroll += 1;
        const evt = await A.admin("POST", "/v1/events", { type: "a.flood", key: `flood-${attacks.event}`, payload: { xs: XS } });
        expect(evt.status, evt.text).toBe(202);
        await until("the event's dispatch", async () => (await ts.store.getEvent(A.id, evt.body.event_id))?.dispatched_at != null, 60_000, 10);
        attacks.event += 1;
      }
    })();

    let latencies: number[];
    try {
      latencies = await sample(B.user, bound);
    } finally {
      done = true;
      await attacking;
    }
    const p99 = p99Of(latencies);
    const summary = `${describeLatencies(latencies)}, p99 of ${SAMPLES} ${p99.toFixed(1)} ms; bound ${bound.toFixed(0)} ms (one capped evaluation: ${reference.toFixed(0)} ms); A's attacks: ${JSON.stringify(attacks)}; without the attack: ${quiet}`;
    console.log(`[${kind}] tenant B under attack: ${summary}`);
    expect(p99, summary).toBeLessThan(bound);

    // The attack was real: every stream ran repeatedly during the measurement, and each expression
    // ended at its budget rather than completing.
    expect(attacks.simulate).toBeGreaterThan(3);
    expect(attacks.enroll).toBeGreaterThan(3);
    expect(attacks.event).toBeGreaterThan(3);
    for (const s of simulated) {
      expect(s.status, s.text).toBe(200);
      expect(s.text).toContain("expression.budget_exceeded");
    }
    const runs = await engine.listRuns({ workspace_id: A.id, automation_id: nestedSet, limit: 10 });
    const ended = await Promise.all(runs.items.map((r) => engine.waitForRun(A.id, r.id)));
    expect(ended.length).toBeGreaterThan(0);
    for (const r of ended) expect(r.status).toBe("failed");
    const steps = await engine.listSteps(A.id, ended[0]!.id);
    expect(steps.map((s) => s.error?.code)).toContain("expression.budget_exceeded");
  }, 600_000);
});
