// Subjects: at most one active run per (subject, automation) — a second trigger is recorded as an
// exited run (already_active); the re-entry cooldown (reentry_cooldown); subject pauses — a paused
// subject's new trigger is exited (subject_paused), an in-flight run parks as waiting on
// "subject_resume" at its next node visit and continues after resume or when paused_until passes.

import type { AddressInfo } from "node:net";
import { request } from "undici";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { ManualClock } from "../src/engine/clock.js";
import type { Engine } from "../src/engine/engine.js";
import type { IncomingEvent } from "../src/engine/intake.js";
import type { Run, StoredEvent } from "../src/engine/store.js";
import { buildApp } from "../src/server/app.js";
import { startEngine, WS } from "./helpers/engine.js";
import { makeStore, STORE_KINDS, type TestStore } from "./helpers/stores.js";
import { Gate } from "./helpers/gate.js";
import { until } from "./helpers/wait.js";

const MIN = 60_000;
const HOUR = 60 * MIN;
const DAY = 24 * HOUR;

let seq = 0;

describe.each(STORE_KINDS)("subjects (%s store)", (kind) => {
  let ts: TestStore;
  let clock: ManualClock;
  let engine: Engine;
  let errors: unknown[];
  let key = 0;

  beforeEach(async () => {
    // A fresh store per test: a new engine's first dispatch round then has few versions to load
    // (see events.dispatch.test.ts for what a slow first round does to a just-created automation).
    ts = await makeStore(kind);
    clock = new ManualClock(Date.parse("2026-04-01T08:00:00Z") + seq++ * 30 * DAY);
    // Leases far longer than any clock jump here, so a jump never hands a run to a second driver.
    engine = await startEngine({ store: ts.store, clock, runner: { leaseMs: 30 * DAY } });
    errors = [];
    engine.events.on("engine:error", (e) => errors.push(e));
  });
  afterEach(async () => {
    await engine.stop();
    await ts.destroy();
    expect(errors).toEqual([]);
  });

  /** An automation on the named event `name`, subject from the event, with the given nodes. */
  async function automation(name: string, nodes: unknown[], edges: unknown[] = [], reentry?: unknown) {
    const k = `subj-${kind}-${++key}`;
    return engine.createAutomation(WS, {
      key: k,
      name: k,
      triggers: [{ type: "event", name }],
      ...(reentry ? { reentry } : {}),
      subject: "{{ event.subject_id }}",
      root: (nodes[0] as { key: string }).key,
      nodes,
      edges,
    });
  }
  const delayThenEnd = (ms: number) =>
    [
      [
        { key: "wait", kind: "delay", config: { duration_ms: ms } },
        { key: "done", kind: "end" },
      ],
      [{ from: "wait", port: "next", to: "done" }],
    ] as const;

  /** Ingest and wait until the dispatcher has decided the event. */
  async function send(e: IncomingEvent): Promise<StoredEvent> {
    const { event_id } = await engine.ingest(WS, { key: `ev-${kind}-${++key}`, ...e });
    return until(`dispatch of ${event_id}`, async () => {
      const ev = await engine.getEvent(WS, event_id);
      return ev.dispatched_at !== null ? ev : null;
    });
  }
  const runsOf = async (automationId: string): Promise<Run[]> => (await engine.listRuns({ workspace_id: WS, automation_id: automationId, limit: 500 })).items;
  const runOf = async (automationId: string, ev: StoredEvent): Promise<Run> => {
    const r = (await runsOf(automationId)).find((x) => x.event_id === ev.id);
    if (!r) throw new Error(`no run for event ${ev.id} (runs_created ${ev.runs_created})`);
    return r;
  };
  const settle = (runId: string, pred: (r: Run) => boolean = (r) => r.completed_at !== null) => engine.waitForRun(WS, runId, pred);
  const parkedOn = (what: string) => (r: Run) => r.status === "waiting" && r.waiting_for === what;

  it("at most one active run per (subject, automation): a second event while the first is parked is an exited already_active run", async () => {
    const [nodes, edges] = delayThenEnd(HOUR);
    const a = await automation("subj.one", [...nodes], [...edges]);
    const first = await send({ type: "subj.one", subject_id: "ct_1" });
    const run1 = await settle((await runOf(a.id, first)).id, parkedOn("delay"));

    const second = await send({ type: "subj.one", subject_id: "ct_1" });
    expect(second.runs_created).toBe(1); // the skip is on the record as a run row
    const run2 = await runOf(a.id, second);
    expect(run2).toMatchObject({ status: "exited", exit_reason: "already_active", subject_id: "ct_1" });
    expect(run2.completed_at).not.toBeNull();
    expect(await engine.listSteps(WS, run2.id)).toEqual([]);

    // Another subject is not affected.
    const other = await send({ type: "subj.one", subject_id: "ct_2" });
    const runOther = await settle((await runOf(a.id, other)).id, parkedOn("delay"));
    expect(runOther.subject_id).toBe("ct_2");

    // Once the first run is over, the subject can enter again.
    clock.advance(HOUR + MIN);
    await engine.tick();
    expect((await settle(run1.id)).status).toBe("completed");
    const third = await send({ type: "subj.one", subject_id: "ct_1" });
    const run3 = await settle((await runOf(a.id, third)).id, parkedOn("delay"));
    expect(run3.exit_reason).toBeNull();
  });

  it("five simultaneous events for one subject: exactly one active run, four exited already_active", async () => {
    const [nodes, edges] = delayThenEnd(HOUR);
    const a = await automation("subj.burst", [...nodes], [...edges]);
    const acks = await Promise.all(
      Array.from({ length: 5 }, (_, i) => engine.ingest(WS, { type: "subj.burst", key: `burst-${kind}-${i}`, subject_id: "ct_b" })),
    );
    await until("all five dispatched", async () =>
      (await Promise.all(acks.map((x) => engine.getEvent(WS, x.event_id)))).every((e) => e.dispatched_at !== null),
    );
    const runs = await runsOf(a.id);
    expect(runs).toHaveLength(5);
    const active = runs.filter((r) => r.status !== "exited");
    expect(active).toHaveLength(1);
    expect(runs.filter((r) => r.status === "exited" && r.exit_reason === "already_active")).toHaveLength(4);
    await settle(active[0]!.id, parkedOn("delay"));
  });

  it("re-entry cooldown: an event within the cooldown after the last run finished is exited reentry_cooldown; after it, a new run", async () => {
    const a = await automation("subj.cool", [{ key: "done", kind: "end" }], [], { policy: "skip_if_active", cooldown_min: 1 });
    const first = await send({ type: "subj.cool", subject_id: "ct_c" });
    const run1 = await settle((await runOf(a.id, first)).id);
    expect(run1.status).toBe("completed");
    expect(run1.completed_at).toBe(clock.now());

    clock.advance(30_000);
    const early = await send({ type: "subj.cool", subject_id: "ct_c" });
    expect(await runOf(a.id, early)).toMatchObject({ status: "exited", exit_reason: "reentry_cooldown" });
    // The cooldown is per subject.
    const otherSubject = await send({ type: "subj.cool", subject_id: "ct_d" });
    expect((await settle((await runOf(a.id, otherSubject)).id)).status).toBe("completed");

    // 59.9 s after the finish is still inside; the skipped run above does not restart the cooldown.
    clock.set(run1.completed_at! + 59_900);
    const stillEarly = await send({ type: "subj.cool", subject_id: "ct_c" });
    expect(await runOf(a.id, stillEarly)).toMatchObject({ status: "exited", exit_reason: "reentry_cooldown" });

    clock.set(run1.completed_at! + MIN + 1000);
    const later = await send({ type: "subj.cool", subject_id: "ct_c" });
    const run3 = await settle((await runOf(a.id, later)).id);
    expect(run3).toMatchObject({ status: "completed", exit_reason: "completed" });
  });

  it("a paused subject's new event is an exited subject_paused run; a pause on another automation does not apply", async () => {
    const a = await automation("subj.paused", [{ key: "done", kind: "end" }]);
    const b = await automation("subj.paused", [{ key: "done", kind: "end" }]);
    await engine.pauseSubject(WS, "ct_p", { automation_id: a.id, pause_reason: "support ticket open" });
    const e1 = await send({ type: "subj.paused", subject_id: "ct_p" });
    expect(await runOf(a.id, e1)).toMatchObject({ status: "exited", exit_reason: "subject_paused" });
    expect((await settle((await runOf(b.id, e1)).id)).status).toBe("completed");

    // A global pause (no automation) applies to every automation.
    await engine.pauseSubject(WS, "ct_p", { pause_reason: "gdpr erasure pending" });
    const e2 = await send({ type: "subj.paused", subject_id: "ct_p" });
    expect(await runOf(a.id, e2)).toMatchObject({ status: "exited", exit_reason: "subject_paused" });
    expect(await runOf(b.id, e2)).toMatchObject({ status: "exited", exit_reason: "subject_paused" });
    // Enrolment honours pauses too.
    const enrolled = await engine.enroll(WS, b.id, { subject_id: "ct_p" });
    expect(enrolled.run).toMatchObject({ status: "exited", exit_reason: "subject_paused" });

    expect(await engine.resumeSubject(WS, "ct_p")).toBe(true);
    const e3 = await send({ type: "subj.paused", subject_id: "ct_p" });
    expect(await runOf(a.id, e3)).toMatchObject({ status: "exited", exit_reason: "subject_paused" }); // a's own pause remains
    expect((await settle((await runOf(b.id, e3)).id)).status).toBe("completed");
    expect(await engine.resumeSubject(WS, "ct_p", a.id)).toBe(true);
    const e4 = await send({ type: "subj.paused", subject_id: "ct_p" });
    expect((await settle((await runOf(a.id, e4)).id)).status).toBe("completed");
  });

  it("a run parked on a delay parks again as waiting on subject_resume when it wakes while paused, and completes after resume", async () => {
    const [nodes, edges] = delayThenEnd(10 * MIN);
    const a = await automation("subj.delay", [...nodes], [...edges]);
    const ev = await send({ type: "subj.delay", subject_id: "ct_w" });
    const run = await settle((await runOf(a.id, ev)).id, parkedOn("delay"));
    await engine.pauseSubject(WS, "ct_w", { automation_id: a.id, pause_reason: "hold" });

    clock.advance(11 * MIN);
    await engine.tick();
    const held = await settle(run.id, parkedOn("subject_resume"));
    expect(held).toMatchObject({ current_node_key: "wait", waiting_until: null, due_at: null });
    // The delay did not complete while paused.
    expect((await engine.listSteps(WS, run.id)).map((s) => [s.node_key, s.outcome])).toEqual([["wait", "waiting"]]);

    clock.advance(DAY);
    await engine.tick();
    expect((await engine.getRun(WS, run.id)).waiting_for).toBe("subject_resume"); // an indefinite pause has no wake time

    expect(await engine.resumeSubject(WS, "ct_w", a.id)).toBe(true);
    const done = await settle(run.id);
    expect(done.status).toBe("completed");
    expect((await engine.listSteps(WS, run.id)).map((s) => [s.node_key, s.outcome])).toEqual([
      ["wait", "waiting"],
      ["wait", "succeeded"],
      ["done", "succeeded"],
    ]);
  });

  it("a run between two http_request steps parks on subject_resume after the first when the subject is paused meanwhile; resume runs the second", async () => {
    const gate = await new Gate().start();
    try {
      gate.hold.add("/one");
      const call = (k: string) => ({ key: k, kind: "http_request", config: { method: "POST", url: `${gate.url}/${k}`, body: { step: k } } });
      const a = await automation(
        "subj.http",
        [call("one"), call("two"), { key: "done", kind: "end" }],
        [
          { from: "one", port: "next", to: "two" },
          { from: "two", port: "next", to: "done" },
        ],
      );
      const ev = await send({ type: "subj.http", subject_id: "ct_h" });
      const runId = (await runOf(a.id, ev)).id;
      await until("the first request to arrive", async () => gate.seen.some((s) => s.path === "/one"));

      await engine.pauseSubject(WS, "ct_h", { pause_reason: "customer asked to stop" });
      gate.release("/one");
      const held = await settle(runId, parkedOn("subject_resume"));
      expect(held.current_node_key).toBe("two");
      expect(gate.seen.map((s) => s.path)).toEqual(["/one"]);
      expect((await engine.listSteps(WS, runId)).map((s) => [s.node_key, s.outcome])).toEqual([["one", "succeeded"]]);

      expect(await engine.resumeSubject(WS, "ct_h")).toBe(true);
      const done = await settle(runId);
      expect(done.status).toBe("completed");
      expect(gate.seen.map((s) => [s.path, s.key])).toEqual([
        ["/one", `${runId}/one/1`],
        ["/two", `${runId}/two/1`],
      ]);
      expect((await engine.listSteps(WS, runId)).map((s) => [s.node_key, s.outcome])).toEqual([
        ["one", "succeeded"],
        ["two", "succeeded"],
        ["done", "succeeded"],
      ]);
    } finally {
      await gate.stop();
    }
  });

  it("a pause with paused_until: new events are exited meanwhile; a parked run wakes by itself when it expires", async () => {
    const [nodes, edges] = delayThenEnd(10 * MIN);
    const a = await automation("subj.until", [...nodes], [...edges], { policy: "allow_concurrent" });
    const ev = await send({ type: "subj.until", subject_id: "ct_u" });
    const run = await settle((await runOf(a.id, ev)).id, parkedOn("delay"));
    const until30 = clock.now() + 30 * MIN;
    await engine.pauseSubject(WS, "ct_u", { pause_reason: "quiet hours", paused_until: until30 });

    const during = await send({ type: "subj.until", subject_id: "ct_u" });
    expect(await runOf(a.id, during)).toMatchObject({ status: "exited", exit_reason: "subject_paused" });

    clock.advance(11 * MIN);
    await engine.tick();
    const held = await settle(run.id, parkedOn("subject_resume"));
    expect(held.waiting_until).toBe(until30);
    expect(held.due_at).toBe(until30);

    // No resume call: moving past paused_until is enough.
    clock.set(until30 + 1000);
    await engine.tick();
    expect((await settle(run.id)).status).toBe("completed");

    const after = await send({ type: "subj.until", subject_id: "ct_u" });
    const next = await settle((await runOf(a.id, after)).id, parkedOn("delay"));
    expect(next.exit_reason).toBeNull();
  });

  it("pause, list and resume over HTTP (/v1/subjects/{id}/automation-pause|controls|resume)", async () => {
    const app = buildApp({ engine, adminToken: "subj-token" });
    await app.listen({ host: "127.0.0.1", port: 0 });
    const base = `http://127.0.0.1:${(app.server.address() as AddressInfo).port}`;
    const call = async (method: "GET" | "POST", path: string, body?: unknown) => {
      const res = await request(`${base}${path}`, {
        method,
        headers: { authorization: "Bearer subj-token", ...(body !== undefined ? { "content-type": "application/json" } : {}) },
        ...(body !== undefined ? { body: JSON.stringify(body) } : {}),
      });
      return { status: res.statusCode, body: (await res.body.json()) as Record<string, unknown> };
    };
    try {
      const a = await automation("subj.api", [{ key: "done", kind: "end" }]);
      const untilIso = new Date(clock.now() + HOUR).toISOString();
      const paused = await call("POST", "/v1/subjects/ct_api/automation-pause", { automation_id: a.id, pause_reason: "dispute", paused_until: untilIso });
      expect(paused.status).toBe(201);
      expect(paused.body).toMatchObject({ subject_id: "ct_api", automation_id: a.id, pause_reason: "dispute", paused_until: untilIso });
      expect((await call("GET", "/v1/subjects/ct_api/automation-controls")).body.items).toEqual([paused.body]);

      const unknown = await call("POST", "/v1/subjects/ct_api/automation-pause", { automation_id: "aut_nope", pause_reason: "x" });
      expect(unknown.status).toBe(404);
      const invalid = await call("POST", "/v1/subjects/ct_api/automation-pause", { automation_id: a.id });
      expect(invalid.status).toBe(400);
      expect((invalid.body.error as { details: { pointer: string } }).details.pointer).toBe("/pause_reason");

      const ev = await send({ type: "subj.api", subject_id: "ct_api" });
      expect(await runOf(a.id, ev)).toMatchObject({ status: "exited", exit_reason: "subject_paused" });

      expect((await call("POST", "/v1/subjects/ct_api/automation-resume", { automation_id: a.id })).body).toEqual({ resumed: true });
      expect((await call("POST", "/v1/subjects/ct_api/automation-resume", { automation_id: a.id })).body).toEqual({ resumed: false });
      expect((await call("GET", "/v1/subjects/ct_api/automation-controls")).body.items).toEqual([]);
      const ev2 = await send({ type: "subj.api", subject_id: "ct_api" });
      expect((await settle((await runOf(a.id, ev2)).id)).status).toBe("completed");
    } finally {
      await app.close();
    }
  });
});
