// GET /v1/automation-runs/{id}/explain: why a run is where it is, in plain words — what it waits
// for and what would wake it, which worker holds it, why nobody has claimed it, or why its step
// failed and what to do about it.

import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { ManualClock } from "../src/engine/clock.js";
import type { Engine } from "../src/engine/engine.js";
import { diagnose } from "../src/engine/explain.js";
import { settle, startEngine, WS } from "./helpers/engine.js";
import { Sink } from "./helpers/sink.js";
import { makeStore, STORE_KINDS, type TestStore } from "./helpers/stores.js";

describe.each(STORE_KINDS)("explain (%s store)", (kind) => {
  let ts: TestStore;
  let engine: Engine;
  let sink: Sink;
  let clock: ManualClock;

  beforeEach(async () => {
    ts = await makeStore(kind);
    sink = await new Sink().start();
    clock = new ManualClock(Date.parse("2026-06-01T09:00:00Z"));
    engine = await startEngine({ store: ts.store, clock, runner: { leaseMs: 3_600_000 } });
  });
  afterEach(async () => {
    await engine.stop();
    await sink.stop();
    await ts.destroy();
  });

  async function runOf(nodes: unknown[], edges: unknown[] = [], subject = "ct_1", context: Record<string, unknown> = {}) {
    const a = await engine.createAutomation(WS, {
      key: `x-${Math.random().toString(36).slice(2, 8)}`,
      name: "x",
      root: (nodes[0] as { key: string }).key,
      reentry: { policy: "allow_concurrent" },
      nodes,
      edges,
    });
    const { run } = await engine.enroll(WS, a.id, { subject_id: subject, context_overrides: context });
    return run.id;
  }
  const parked = (id: string) => settle(engine, id, (r) => r.status === "waiting" || r.completed_at !== null);

  it("a run waiting for an event says which event, about whom, since when, until when, and what would wake it", async () => {
    const id = await runOf([{ key: "w", kind: "wait_for_event", config: { event: "reply.received", timeout_ms: 3_600_000 } }]);
    await parked(id);
    const x = await engine.explain(WS, id);
    expect(x.waiting).toMatchObject({ for: "event", since: "2026-06-01T09:00:00.000Z", until: "2026-06-01T10:00:00.000Z" });
    expect(x.waiting!.wakes_on).toContain('"reply.received" event about subject ct_1');
    expect(x.summary).toMatch(/Waiting since .* for a "reply.received" event about subject ct_1, at most until 2026-06-01T10:00:00.000Z/);
    expect(x.overdue).toBe(false);
  });

  it("a run waiting for an approval names it, its approvers and its timeout", async () => {
    const id = await runOf([{ key: "ask", kind: "approval", config: { title: "Send the offer", approvers: ["role:admin"], timeout_ms: 60_000 } }]);
    await parked(id);
    const x = await engine.explain(WS, id);
    expect(x.waiting?.for).toBe("approval");
    expect(x.summary).toMatch(/approval apr_\w+ \("Send the offer"\), to be decided by role:admin; it times out at 2026-06-01T09:01:00.000Z/);
  });

  it("a run parked on a paused subject says so, with the reason and how to resume", async () => {
    const id = await runOf(
      [
        { key: "d", kind: "delay", config: { duration_ms: 1000 } },
        { key: "e", kind: "end" },
      ],
      [{ from: "d", port: "next", to: "e" }],
      "ct_paused",
    );
    await parked(id);
    // Paused while it waits: when it wakes, the pause is checked and it parks on subject_resume.
    await engine.pauseSubject(WS, "ct_paused", { pause_reason: "manual_takeover" });
    clock.advance(2000);
    engine.poke();
    await settle(engine, id, (r) => r.waiting_for === "subject_resume");
    const x = await engine.explain(WS, id);
    expect(x.waiting?.for).toBe("subject_resume");
    expect(x.summary).toContain("subject ct_paused is paused (manual_takeover, until resumed)");
    expect(x.waiting?.wakes_on).toContain("/v1/subjects/ct_paused/automation-resume");
  });

  it("a pending run nobody claims becomes overdue, and the explanation says to check the workers", async () => {
    await engine.stop(); // no worker
    const id = await runOf([{ key: "s", kind: "set", config: { assign: { a: "1" } } }]);
    expect((await engine.explain(WS, id)).overdue).toBe(false);
    clock.advance(5 * 60_000);
    const x = await engine.explain(WS, id);
    expect(x.status).toBe("pending");
    expect(x.overdue).toBe(true);
    expect(x.summary).toContain("no worker has claimed it");
  });

  it("a failed step is explained: a missing variable names its path; a 401 says the credentials were refused, with the API's body", async () => {
    const missing = await runOf([{ key: "s", kind: "set", config: { assign: { a: "context.customer.email" } } }]);
    const m = await engine.explain(WS, (await settle(engine, missing)).id);
    expect(m.failed_step).toMatchObject({ node_key: "s", code: "expression.missing_field", retryable: false });
    // The path that does not resolve is the first missing link: context.customer.
    expect(m.failed_step!.cause).toContain("the expression names context.customer,");
    expect(m.summary).toContain('Failed at step "s"');

    sink.reply = () => ({ status: 401, body: { error: "invalid api key" } });
    const denied = await runOf([{ key: "call", kind: "http_request", config: { method: "GET", url: `${sink.url}/crm` } }]);
    const d = await engine.explain(WS, (await settle(engine, denied)).id);
    expect(d.failed_step).toMatchObject({ code: "http.status_401" });
    expect(d.failed_step!.cause).toContain("refused the credentials");
    expect(d.failed_step!.cause).toContain("invalid api key");
    expect(d.failed_step!.advice).toContain("secret");
  });

  it("diagnoses the other common causes in plain words", () => {
    const cause = (code: string, details: Record<string, unknown> = {}, retryable = false) => diagnose({ code, message: code, retryable, details }).cause;
    expect(cause("http.status_503", {}, true)).toContain("unavailable");
    expect(cause("http.status_422", { body: "amount must be positive" })).toContain("amount must be positive");
    expect(cause("http.blocked_destination")).toContain("private");
    expect(cause("policy.violation", { permission: "http:evil.example" })).toContain("http:evil.example");
    expect(cause("action.invalid_input", { pointer: "/owner_id" })).toContain("/owner_id");
  });
});
