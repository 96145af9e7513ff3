// The retry matrix for http_request against a loopback sink: 429/502/503/504, timeouts and refused
// connections are retried under the node's policy with one idempotency key per visit and a growing
// backoff; 4xx and template errors are attempted once and fail the run, unless the error port is wired.

import { createServer } from "node:net";
import type { AddressInfo } from "node:net";
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from "vitest";
import type { Engine } from "../src/engine/engine.js";
import type { EngineEvents } from "../src/engine/events.js";
import type { Run, StepRun } from "../src/engine/store.js";
import { settle, startEngine, WS } from "./helpers/engine.js";
import { Sink, type Reply } from "./helpers/sink.js";
import { makeStore, STORE_KINDS, type TestStore } from "./helpers/stores.js";

const RETRY = { max_attempts: 3, initial_ms: 20, max_ms: 100 };

let seq = 0;

interface HttpDefOptions {
  url: string;
  timeoutMs?: number;
  /** Wire the node's `error` port to a `handled` set node. */
  errorPort?: boolean;
}

function httpDef(o: HttpDefOptions) {
  const key = `retry-${++seq}`;
  return {
    key,
    name: key,
    root: "call",
    nodes: [
      {
        key: "call",
        kind: "http_request",
        config: { method: "POST", url: o.url, body: { hello: "{{ run.id }}" }, ...(o.timeoutMs ? { timeout_ms: o.timeoutMs } : {}) },
        retry: RETRY,
      },
      { key: "after", kind: "set", config: { assign: { called: "true" } } },
      ...(o.errorPort ? [{ key: "handled", kind: "set", config: { assign: { handled_code: "steps.call.error.code" } } }] : []),
    ],
    edges: [{ from: "call", port: "next", to: "after" }, ...(o.errorPort ? [{ from: "call", port: "error", to: "handled" }] : [])],
  };
}

/** A port on 127.0.0.1 that nothing listens on (bound, then closed). */
async function closedPort(): Promise<number> {
  const srv = createServer();
  await new Promise<void>((resolve) => srv.listen(0, "127.0.0.1", () => resolve()));
  const port = (srv.address() as AddressInfo).port;
  await new Promise<void>((resolve) => srv.close(() => resolve()));
  return port;
}

/** Replies: `failures` times the failing reply, then 200 (or always failing when failures is Infinity). */
function failThenOk(fail: Reply, failures: number): (req: unknown, nth: number) => Reply {
  return (_req, nth) => (nth <= failures ? fail : { status: 200, body: { ok: true } });
}

describe.each(STORE_KINDS)("http_request retries (%s store)", (kind) => {
  let ts: TestStore;
  let engine: Engine;
  let sink: Sink;
  let retries: EngineEvents["step:retry_scheduled"][];
  let parks: EngineEvents["run:parked"][];

  beforeAll(async () => {
    ts = await makeStore(kind);
  });
  afterAll(async () => {
    await ts.destroy();
  });
  beforeEach(async () => {
    sink = await new Sink().start();
    engine = await startEngine({ store: ts.store });
    retries = [];
    parks = [];
    engine.events.on("step:retry_scheduled", (e) => retries.push(e));
    engine.events.on("run:parked", (e) => parks.push(e));
  });
  afterEach(async () => {
    await engine.stop();
    await sink.stop();
  });

  async function runOnce(o: HttpDefOptions, context: Record<string, unknown> = {}): Promise<{ run: Run; steps: StepRun[]; callSteps: StepRun[]; key: string }> {
    const a = await engine.createAutomation(WS, httpDef(o));
    const { run: created } = await engine.enroll(WS, a.id, { context_overrides: context });
    const run = await settle(engine, created.id);
    const steps = await engine.listSteps(WS, run.id);
    return { run, steps, callSteps: steps.filter((s) => s.node_key === "call"), key: `${run.id}/call/1` };
  }

  /** Attempts 1..n of one visit, one idempotency key, each attempt started after the previous finished plus its backoff. */
  function expectRetriedAttempts(run: Run, callSteps: StepRun[], key: string, outcomes: string[], code: string): void {
    expect(callSteps.map((s) => s.attempt)).toEqual(outcomes.map((_, i) => i + 1));
    expect(callSteps.map((s) => s.outcome)).toEqual(outcomes);
    for (const s of callSteps) {
      expect(s.visit).toBe(1);
      expect(s.idempotency_key).toBe(key);
      expect(s.node_kind).toBe("http_request");
    }
    for (const s of callSteps.filter((x) => x.outcome === "retrying")) {
      expect(s.error).toMatchObject({ code, retryable: true });
    }
    // The engine scheduled one retry per retrying attempt, with equal-jitter exponential backoff:
    // attempt 1 waits [10, 20] ms (initial 20), attempt 2 waits [20, 40] ms; never less than half.
    const mine = retries.filter((r) => r.run_id === run.id);
    expect(mine.map((r) => r.attempt)).toEqual(callSteps.filter((x) => x.outcome === "retrying").map((x) => x.attempt));
    for (const r of mine) {
      const exp = Math.min(RETRY.max_ms, RETRY.initial_ms * 2 ** (r.attempt - 1));
      expect(r.delay_ms).toBeGreaterThanOrEqual(exp / 2);
      expect(r.delay_ms).toBeLessThanOrEqual(exp);
    }
    for (let i = 1; i < mine.length; i++) expect(mine[i]!.delay_ms).toBeGreaterThanOrEqual(mine[i - 1]!.delay_ms);
    // Each retry parked the run as `retry`, due exactly its backoff after the failed attempt ended.
    const myParks = parks.filter((p) => p.run_id === run.id);
    expect(myParks.map((p) => p.waiting_for)).toEqual(mine.map(() => "retry"));
    // A later attempt starts only after the earlier one finished and its backoff elapsed.
    for (let i = 1; i < callSteps.length; i++) {
      const prev = callSteps[i - 1]!;
      const cur = callSteps[i]!;
      expect(myParks[i - 1]!.due_at).toBe(prev.finished_at + mine[i - 1]!.delay_ms);
      expect(cur.started_at).toBeGreaterThanOrEqual(prev.finished_at + mine[i - 1]!.delay_ms);
      expect(cur.id).toBeGreaterThan(prev.id);
    }
  }

  const retryable: { name: string; reply: Reply; code: string }[] = [
    { name: "502", reply: { status: 502, body: { e: "bad gateway" } }, code: "http.status_502" },
    { name: "503", reply: { status: 503, body: { e: "unavailable" } }, code: "http.status_503" },
    { name: "504", reply: { status: 504, body: { e: "gateway timeout" } }, code: "http.status_504" },
    { name: "429 without Retry-After", reply: { status: 429, body: { e: "slow down" } }, code: "http.status_429" },
  ];

  it.each(retryable)("$name is retried and the run completes when the sink recovers", async ({ reply, code }) => {
    sink.reply = failThenOk(reply, 2);
    const { run, callSteps, key } = await runOnce({ url: `${sink.url}/hook` });
    expect(run.status).toBe("completed");
    expect(run.exit_reason).toBe("completed");
    expect(run.context).toEqual({ called: true });
    expectRetriedAttempts(run, callSteps, key, ["retrying", "retrying", "succeeded"], code);
    expect(callSteps[2]!.error).toBeNull();
    expect(callSteps[2]!.exited_via_port_key).toBe("next");
    expect(callSteps[0]!.error?.details).toMatchObject({ status: (reply as { status: number }).status });
    expect(sink.countFor(key)).toBe(3);
    expect(sink.requests.map((r) => r.key)).toEqual([key, key, key]);
  });

  it.each(retryable)("$name on every attempt fails the run after max_attempts with a retryable error", async ({ reply, code }) => {
    sink.reply = () => reply;
    const { run, steps, callSteps, key } = await runOnce({ url: `${sink.url}/hook` });
    expect(run.status).toBe("failed");
    expect(run.exit_reason).toBe("handler_failure");
    expectRetriedAttempts(run, callSteps, key, ["retrying", "retrying", "failed"], code);
    expect(callSteps[2]!.error).toMatchObject({ code, retryable: true });
    expect(steps.map((s) => s.node_key)).toEqual(["call", "call", "call"]);
    expect(run.steps).toMatchObject({ call: { error: { code, retryable: true } } });
    expect(sink.countFor(key)).toBe(RETRY.max_attempts);
  });

  it("429 with Retry-After waits at least what the server asked, beyond the policy's max_ms", async () => {
    sink.reply = failThenOk({ status: 429, headers: { "retry-after": "1" }, body: {} }, 1);
    const { run, callSteps, key } = await runOnce({ url: `${sink.url}/hook` });
    expect(run.status).toBe("completed");
    expect(callSteps.map((s) => [s.attempt, s.outcome])).toEqual([
      [1, "retrying"],
      [2, "succeeded"],
    ]);
    expect(callSteps[0]!.error).toMatchObject({ code: "http.status_429", retryable: true, retry_after_ms: 1000 });
    const mine = retries.filter((r) => r.run_id === run.id);
    expect(mine.map((r) => r.delay_ms)).toEqual([1000]);
    expect(callSteps[1]!.started_at).toBeGreaterThanOrEqual(callSteps[0]!.finished_at + 1000);
    expect(callSteps.every((s) => s.idempotency_key === key)).toBe(true);
    expect(sink.countFor(key)).toBe(2);
  });

  it("a response slower than timeout_ms is a retryable http.timeout, and the run completes when the sink speeds up", async () => {
    sink.reply = failThenOk({ status: 200, body: { late: true }, delayMs: 1000 }, 2);
    const { run, callSteps, key } = await runOnce({ url: `${sink.url}/slow`, timeoutMs: 150 });
    expect(run.status).toBe("completed");
    expectRetriedAttempts(run, callSteps, key, ["retrying", "retrying", "succeeded"], "http.timeout");
    expect(callSteps[2]!.output).toMatchObject({ status: 200, body: { ok: true } });
    expect(sink.countFor(key)).toBe(3);
  });

  it("timeouts on every attempt fail the run after max_attempts", async () => {
    sink.reply = () => ({ status: 200, body: {}, delayMs: 1000 });
    const { run, callSteps, key } = await runOnce({ url: `${sink.url}/slow`, timeoutMs: 150 });
    expect(run.status).toBe("failed");
    expect(run.exit_reason).toBe("handler_failure");
    expectRetriedAttempts(run, callSteps, key, ["retrying", "retrying", "failed"], "http.timeout");
    expect(callSteps[2]!.error).toMatchObject({ code: "http.timeout", retryable: true });
    expect(sink.countFor(key)).toBe(3);
  });

  it("connection refused is a retryable http.network error and fails the run after max_attempts", async () => {
    const port = await closedPort();
    const { run, callSteps, key } = await runOnce({ url: `http://127.0.0.1:${port}/nobody` });
    expect(run.status).toBe("failed");
    expect(run.exit_reason).toBe("handler_failure");
    expectRetriedAttempts(run, callSteps, key, ["retrying", "retrying", "failed"], "http.network");
    expect(callSteps[2]!.error).toMatchObject({ code: "http.network", retryable: true });
    expect(sink.requests).toHaveLength(0);
  });

  it.each([400, 401, 404])("%i is attempted exactly once and fails the run", async (status) => {
    sink.reply = () => ({ status, body: { error: `nope ${status}` } });
    const { run, steps, callSteps, key } = await runOnce({ url: `${sink.url}/hook` });
    expect(run.status).toBe("failed");
    expect(run.exit_reason).toBe("handler_failure");
    expect(steps).toHaveLength(1);
    expect(callSteps[0]).toMatchObject({ attempt: 1, visit: 1, outcome: "failed", idempotency_key: key, output: { status } });
    expect(callSteps[0]!.error).toMatchObject({ code: `http.status_${status}`, retryable: false, details: { status } });
    expect(String((callSteps[0]!.error!.details as { body: string }).body)).toContain(`nope ${status}`);
    expect(retries.filter((r) => r.run_id === run.id)).toHaveLength(0);
    expect(sink.countFor(key)).toBe(1);
    expect(sink.requests).toHaveLength(1);
  });

  it("a template error (url {{ context.missing }}) is attempted once, sends nothing, and names the path", async () => {
    const { run, steps, callSteps } = await runOnce({ url: "{{ context.missing }}" });
    expect(run.status).toBe("failed");
    expect(run.exit_reason).toBe("handler_failure");
    expect(steps).toHaveLength(1);
    expect(callSteps[0]).toMatchObject({ attempt: 1, outcome: "failed" });
    expect(callSteps[0]!.error).toMatchObject({ code: "template.missing_variable", retryable: false, details: { path: "context.missing" } });
    expect(retries.filter((r) => r.run_id === run.id)).toHaveLength(0);
    expect(sink.requests).toHaveLength(0);
  });

  describe("with the error port wired", () => {
    it("a permanent 400 routes to the error port and the run completes", async () => {
      sink.reply = () => ({ status: 400, body: {} });
      const { run, steps, key } = await runOnce({ url: `${sink.url}/hook`, errorPort: true });
      expect(run.status).toBe("completed");
      expect(run.exit_reason).toBe("completed");
      expect(run.context).toEqual({ handled_code: "http.status_400" });
      expect(steps.map((s) => [s.node_key, s.attempt, s.outcome, s.entered_via_port_key])).toEqual([
        ["call", 1, "failed", null],
        ["handled", 1, "succeeded", "error"],
      ]);
      expect(sink.countFor(key)).toBe(1);
    });

    it("a template error routes to the error port and the run completes", async () => {
      const { run, steps } = await runOnce({ url: "{{ context.missing }}", errorPort: true });
      expect(run.status).toBe("completed");
      expect(run.context).toEqual({ handled_code: "template.missing_variable" });
      expect(steps.map((s) => [s.node_key, s.outcome])).toEqual([
        ["call", "failed"],
        ["handled", "succeeded"],
      ]);
      expect(sink.requests).toHaveLength(0);
    });

    it("retries are exhausted first, then the failure routes to the error port", async () => {
      sink.reply = () => ({ status: 503, body: {} });
      const { run, steps, callSteps, key } = await runOnce({ url: `${sink.url}/hook`, errorPort: true });
      expect(run.status).toBe("completed");
      expect(run.context).toEqual({ handled_code: "http.status_503" });
      expectRetriedAttempts(run, callSteps, key, ["retrying", "retrying", "failed"], "http.status_503");
      expect(steps.map((s) => s.node_key)).toEqual(["call", "call", "call", "handled"]);
      expect(steps[3]!.entered_via_port_key).toBe("error");
      expect(sink.countFor(key)).toBe(3);
    });
  });
});
