// Payload limits and the per-token rate limit. An event over 256 KiB is 413 limits.event_too_large
// (with the limit), a body over 1 MiB is 413 limits.body_too_large, an enrollment whose context is
// over 1 MiB is refused (limits.context_too_large), a step output over 512 KiB fails its step
// permanently (limits.step_output_too_large; the run fails, or follows its error port), a `set`
// that would grow the context past 1 MiB fails likewise; nothing is half-written by a refusal.
// With rateLimitPerSecond 5, the 6th request of a second with one token is 429 limits.rate with
// Retry-After; another token is unaffected; a refused event is not stored, accepted ones all are.

import type { AddressInfo } from "node:net";
import type { FastifyInstance } from "fastify";
import { Agent, request } from "undici";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { DEFAULT_LIMITS, type Engine } from "../src/engine/engine.js";
import type { Run, StepRun, Store } from "../src/engine/store.js";
import { WeftError } from "../src/model/errors.js";
import { buildApp } from "../src/server/app.js";
import { EmbeddedStore } from "../src/store/embedded/index.js";
import { PostgresStore } from "../src/store/postgres/index.js";
import { startApi, type Api } from "./helpers/api.js";
import { startEngine, WS } from "./helpers/engine.js";
import { Sink } from "./helpers/sink.js";
import { makeStore, STORE_KINDS, type TestStore } from "./helpers/stores.js";
import { sleep } from "./helpers/wait.js";

const TOKEN = "limits-admin-token";
const KiB = 1024;
const MiB = 1024 * KiB;

async function countRows(store: Store, table: string): Promise<number> {
  if (store instanceof PostgresStore) return (await store.pool.query<{ n: number }>(`SELECT count(*)::int AS n FROM ${table}`)).rows[0]!.n;
  if (store instanceof EmbeddedStore) return store.db.prepare(`SELECT count(*) FROM ${table}`).pluck().get() as number;
  throw new Error("unknown store");
}

async function storedEventKeys(store: Store): Promise<Map<string, string>> {
  let rows: { id: string; idempotency_key: string }[];
  if (store instanceof PostgresStore) rows = (await store.pool.query<{ id: string; idempotency_key: string }>("SELECT id, idempotency_key FROM events")).rows;
  else if (store instanceof EmbeddedStore) rows = store.db.prepare("SELECT id, idempotency_key FROM events").all() as { id: string; idempotency_key: string }[];
  else throw new Error("unknown store");
  return new Map(rows.map((r) => [r.idempotency_key, r.id]));
}

let seq = 0;
const uniq = (p: string) => `${p}-${++seq}-${Date.now().toString(36)}`;

describe.each(STORE_KINDS)("payload limits (%s store)", (kind) => {
  let ts: TestStore;
  let engine: Engine;
  let api: Api;
  let sink: Sink;
  let errors: unknown[];

  beforeEach(async () => {
    ts = await makeStore(kind);
    engine = await startEngine({ store: ts.store });
    errors = [];
    engine.events.on("engine:error", (e) => errors.push(e));
    api = await startApi(engine, TOKEN);
    sink = await new Sink().start();
  });
  afterEach(async () => {
    await api.close();
    await engine.stop();
    await sink.stop();
    await ts.destroy();
    expect(errors).toEqual([]);
  });

  async function counts() {
    return { events: await countRows(ts.store, "events"), runs: await countRows(ts.store, "runs"), steps: await countRows(ts.store, "step_runs") };
  }

  async function create(definition: Record<string, unknown>): Promise<string> {
    const res = await api.call<{ id: string }>("POST", "/v1/automations", { definition });
    expect(res.status, JSON.stringify(res.body)).toBe(201);
    return res.body.id;
  }

  it("an event over 256 KiB is 413 limits.event_too_large naming the limit; one at exactly the limit is accepted", async () => {
    expect(engine.limits.eventBytes).toBe(256 * KiB);
    // Sized so the event's JSON is exactly the limit (then one byte more).
    const event = (key: string, extra: number) => {
      const base = { type: "big.event", key, payload: { blob: "" } };
      return { ...base, payload: { blob: "a".repeat(256 * KiB - Buffer.byteLength(JSON.stringify(base)) + extra) } };
    };
    const before = await counts();
    const over = await api.call("POST", "/v1/events", event("over", 1));
    expect(over.status).toBe(413);
    expect(over.body.error?.code).toBe("limits.event_too_large");
    expect(over.body.error?.details).toMatchObject({ limit: 256 * KiB, bytes: 256 * KiB + 1 });
    expect(await counts()).toEqual(before);

    const far = await api.call("POST", "/v1/events", { type: "big.event", key: "far", payload: { blob: "b".repeat(700 * KiB) } });
    expect(far.status).toBe(413);
    expect(far.body.error?.code).toBe("limits.event_too_large");
    expect(far.body.error?.details.limit).toBe(256 * KiB);
    expect(await counts()).toEqual(before);

    const at = await api.call<{ event_id: string }>("POST", "/v1/events", event("at", 0));
    expect(at.status, JSON.stringify(at.body.error)).toBe(202);
    expect(await countRows(ts.store, "events")).toBe(before.events + 1);
  });

  it("a body over 1 MiB is 413 limits.body_too_large (events and enrollments alike); nothing is stored", async () => {
    const id = await create({
      key: uniq("plain"),
      name: "plain",
      root: "note",
      nodes: [
        { key: "note", kind: "set", config: { assign: { ok: "true" } } },
        { key: "done", kind: "end" },
      ],
      edges: [{ from: "note", port: "next", to: "done" }],
    });
    const before = await counts();
    const ev = await api.call("POST", "/v1/events", { type: "huge.event", key: "huge", payload: { blob: "c".repeat(1.1 * MiB) } });
    expect(ev.status).toBe(413);
    expect(ev.body.error?.code).toBe("limits.body_too_large");
    // An enrollment's context is limited to 1 MiB too, but over HTTP the body limit is met first.
    const en = await api.call("POST", `/v1/automations/${id}/enroll`, { context_overrides: { blob: "d".repeat(MiB + 16) } });
    expect(en.status).toBe(413);
    expect(en.body.error?.code).toBe("limits.body_too_large");
    expect(await counts()).toEqual(before);
  });

  it("Engine.enroll with a context over 1 MiB throws limits.context_too_large; no run, no audit entry", async () => {
    const id = await create({
      key: uniq("plain"),
      name: "plain",
      root: "note",
      nodes: [
        { key: "note", kind: "set", config: { assign: { ok: "true" } } },
        { key: "done", kind: "end" },
      ],
      edges: [{ from: "note", port: "next", to: "done" }],
    });
    const before = { ...(await counts()), audit: await countRows(ts.store, "audit_log") };
    const err = await engine.enroll(WS, id, { context_overrides: { blob: "e".repeat(1.1 * MiB) } }).then(
      () => null,
      (e: unknown) => e,
    );
    expect(err).toBeInstanceOf(WeftError);
    expect((err as WeftError).code).toBe("limits.context_too_large");
    expect((err as WeftError).details).toMatchObject({ pointer: "/context_overrides", limit: MiB });
    expect((err as WeftError).details.bytes as number).toBeGreaterThan(MiB);
    expect({ ...(await counts()), audit: await countRows(ts.store, "audit_log") }).toEqual(before);
  });

  /** An automation calling the sink for a 600 KiB JSON body (allowed by max_response_bytes), then `after`. */
  function bigCall(wireError: boolean) {
    return {
      key: uniq("big-out"),
      name: "big output",
      root: "call",
      nodes: [
        {
          key: "call",
          kind: "http_request",
          retry: { max_attempts: 3, initial_ms: 10, max_ms: 10 },
          config: { method: "GET", url: `${sink.url}/big`, max_response_bytes: 2_000_000 },
        },
        { key: "after", kind: "set", config: { assign: { code: "has(steps.call.error) ? steps.call.error.code : 'none'" } } },
        { key: "done", kind: "end" },
      ],
      edges: [
        { from: "call", port: "next", to: "after" },
        ...(wireError ? [{ from: "call", port: "error", to: "after" }] : []),
        { from: "after", port: "next", to: "done" },
      ],
    };
  }

  async function runOf(automationId: string, context: Record<string, unknown> = {}): Promise<{ run: Run; steps: StepRun[] }> {
    const { run } = await engine.enroll(WS, automationId, { context_overrides: context });
    const done = await engine.waitForRun(WS, run.id);
    return { run: done, steps: await engine.listSteps(WS, run.id) };
  }

  it("a step output over 512 KiB fails the step permanently (limits.step_output_too_large) and the run fails", async () => {
    sink.reply = () => ({ status: 200, body: { blob: "z".repeat(600 * KiB) } });
    const { run, steps } = await runOf(await create(bigCall(false)));
    expect(sink.requests).toHaveLength(1); // permanent: not retried although the node allows 3 attempts
    expect(run.status).toBe("failed");
    expect(run.exit_reason).toBe("handler_failure");
    expect(steps.map((s) => [s.node_key, s.outcome])).toEqual([["call", "failed"]]);
    const err = steps[0]!.error!;
    expect(err.code).toBe("limits.step_output_too_large");
    expect(err.retryable).toBe(false);
    expect(err.details).toMatchObject({ limit: DEFAULT_LIMITS.stepOutputBytes });
    expect(err.details!.bytes as number).toBeGreaterThan(600 * KiB);
    // The oversized output is kept nowhere: not on the step, not in the run's steps or context.
    expect(steps[0]!.output).toBeNull();
    expect(Buffer.byteLength(JSON.stringify(run.steps)) + Buffer.byteLength(JSON.stringify(run.context))).toBeLessThan(10 * KiB);
  });

  it("…and with its error port wired, the run follows it", async () => {
    sink.reply = () => ({ status: 200, body: { blob: "z".repeat(600 * KiB) } });
    const { run, steps } = await runOf(await create(bigCall(true)));
    expect(sink.requests).toHaveLength(1);
    expect(run.status).toBe("completed");
    expect(steps.map((s) => [s.node_key, s.outcome, s.exited_via_port_key])).toEqual([
      ["call", "failed", "error"],
      ["after", "succeeded", "next"],
      ["done", "succeeded", null],
    ]);
    expect(run.context.code).toBe("limits.step_output_too_large");
  });

  it("a set that would grow the context past 1 MiB fails with limits.context_too_large; the context is unchanged", async () => {
    const id = await create({
      key: uniq("grow"),
      name: "grow",
      root: "grow",
      nodes: [
        { key: "grow", kind: "set", config: { assign: { copy: "context.half" } } },
        { key: "done", kind: "end" },
      ],
      edges: [{ from: "grow", port: "next", to: "done" }],
    });
    // 520 KiB + 480 KiB: under 1 MiB at enrollment; the copy (480 KiB, under the output limit) would make it ~1.45 MiB.
    const context = { a: "a".repeat(520 * KiB), half: "h".repeat(480 * KiB) };
    expect(Buffer.byteLength(JSON.stringify(context))).toBeLessThan(MiB);
    const { run, steps } = await runOf(id, context);
    expect(run.status).toBe("failed");
    expect(steps.map((s) => [s.node_key, s.outcome])).toEqual([["grow", "failed"]]);
    expect(steps[0]!.error).toMatchObject({ code: "limits.context_too_large", retryable: false, details: { limit: MiB } });
    expect(steps[0]!.error!.details!.bytes as number).toBeGreaterThan(MiB);
    expect(Object.keys(run.context).sort()).toEqual(["a", "half"]);
  });
});

describe.each(STORE_KINDS)("rate limit per token (%s store)", (kind) => {
  let ts: TestStore;
  let engine: Engine;
  let app: FastifyInstance;
  let base: string;
  let agent: Agent;

  beforeEach(async () => {
    ts = await makeStore(kind);
    engine = await startEngine({ store: ts.store });
    app = buildApp({ engine, adminToken: TOKEN, rateLimitPerSecond: 5 });
    await app.listen({ host: "127.0.0.1", port: 0 });
    base = `http://127.0.0.1:${(app.server.address() as AddressInfo).port}`;
    agent = new Agent({ connections: 20 });
  });
  afterEach(async () => {
    await agent.close();
    await app.close();
    await engine.stop();
    await ts.destroy();
  });

  async function call(token: string, method: "GET" | "POST", path: string, body?: unknown) {
    const res = await request(`${base}${path}`, {
      method,
      dispatcher: agent,
      headers: { authorization: `Bearer ${token}`, ...(body !== undefined ? { "content-type": "application/json" } : {}) },
      ...(body !== undefined ? { body: JSON.stringify(body) } : {}),
    });
    const text = await res.body.text();
    return {
      status: res.statusCode,
      headers: res.headers,
      body: (text === "" ? {} : JSON.parse(text)) as { event_id?: string; error?: { code: string; message: string; details: Record<string, unknown> } },
    };
  }

  it("the 6th request in a second with one token is 429 limits.rate with Retry-After; another token is unaffected", async () => {
    const other = (await engine.admin.issueBootstrapToken()).token;
    // Sent together, so all six fall in one window of the limiter.
    const replies = await Promise.all(Array.from({ length: 6 }, () => call(TOKEN, "GET", "/v1/automations")));
    const statuses = replies.map((r) => r.status).sort();
    expect(statuses).toEqual([200, 200, 200, 200, 200, 429]);
    const refused = replies.find((r) => r.status === 429)!;
    expect(refused.body.error?.code).toBe("limits.rate");
    expect(refused.body.error?.details).toMatchObject({ limit_per_second: 5 });
    const retryAfter = refused.headers["retry-after"];
    expect(retryAfter, "a Retry-After header").toBeDefined();
    expect(Number(retryAfter)).toBeGreaterThanOrEqual(1);
    expect(Number.isInteger(Number(retryAfter))).toBe(true);
    // Another token has its own budget.
    const theirs = await Promise.all(Array.from({ length: 5 }, () => call(other, "GET", "/v1/automations")));
    expect(theirs.map((r) => r.status)).toEqual([200, 200, 200, 200, 200]);
  });

  it("POST /v1/events refused with 429 stores nothing; every event accepted with 202 is stored; a retry after Retry-After is accepted", async () => {
    const token = (await engine.admin.issueBootstrapToken()).token;
    const before = await countRows(ts.store, "events");
    const keys = Array.from({ length: 8 }, (_, i) => `rl-${i}`);
    const replies = await Promise.all(keys.map((key) => call(token, "POST", "/v1/events", { type: "rate.test", key, payload: { key } })));
    const accepted = keys.filter((_, i) => replies[i]!.status === 202);
    const refused = keys.filter((_, i) => replies[i]!.status === 429);
    expect(accepted).toHaveLength(5);
    expect(refused).toHaveLength(3);
    for (const r of replies.filter((x) => x.status === 429)) expect(r.body.error?.code).toBe("limits.rate");
    const stored = await storedEventKeys(ts.store);
    expect(stored.size).toBe(before + 5);
    for (const [i, key] of keys.entries()) {
      if (replies[i]!.status === 202) expect(stored.get(key)).toBe(replies[i]!.body.event_id);
      else expect(stored.has(key)).toBe(false);
    }
    // A client that waits as told gets its refused events in.
    const wait = Math.max(...replies.filter((x) => x.status === 429).map((x) => Number(x.headers["retry-after"])));
    await sleep(wait * 1000);
    const again = await Promise.all(refused.map((key) => call(token, "POST", "/v1/events", { type: "rate.test", key, payload: { key } })));
    expect(again.map((r) => r.status)).toEqual([202, 202, 202]);
    expect(await countRows(ts.store, "events")).toBe(before + 8);
  });
});
