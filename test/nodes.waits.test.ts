// Waiting nodes and the randomizer: wait_for_event wakes on a named event about the run's subject
// (optionally filtered by `match`), takes each event once, counts a reply that came while the run
// was still on its way to the wait but never one from before the run existed, times out by its
// `timeout` port (or ends the path when that port is not wired), and survives a restart; `input`
// assigns the reply to context and exits `input_timeout` when unanswered and unhandled; a sticky
// randomizer gives one subject one arm, spreads many subjects over the arms and never takes a
// variant of weight 0.

import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { ManualClock } from "../src/engine/clock.js";
import { Engine } from "../src/engine/engine.js";
import type { IncomingEvent } from "../src/engine/intake.js";
import type { Run, StepRun } from "../src/engine/store.js";
import { startEngine, WS } from "./helpers/engine.js";
import { makeStore, STORE_KINDS, type TestStore } from "./helpers/stores.js";
import { until } from "./helpers/wait.js";
import { Gate } from "./helpers/gate.js";

const SEC = 1000;
const MIN = 60 * SEC;
const HOUR = 60 * MIN;
const DAY = 24 * HOUR;

/** Which events an engine's dispatcher has handled, and a way to wait for one. */
class DispatchWatch {
  private readonly done = new Set<string>();
  private readonly waiters = new Map<string, (() => void)[]>();
  constructor(engine: Engine) {
    engine.events.on("event:dispatched", (p) => {
      this.done.add(p.event_id);
      for (const w of this.waiters.get(p.event_id) ?? []) w();
      this.waiters.delete(p.event_id);
    });
  }
  /** Resolves once the dispatcher handled the event (fails the test, naming it, after 30 s). */
  dispatched(eventId: string): Promise<void> {
    if (this.done.has(eventId)) return Promise.resolve();
    return new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`event ${eventId} was never dispatched`)), 30_000);
      const list = this.waiters.get(eventId) ?? [];
      list.push(() => {
        clearTimeout(timer);
        resolve();
      });
      this.waiters.set(eventId, list);
    });
  }
}

/** node key, outcome, entered via, exited via: the run thread as a user reads it. */
const thread = (steps: StepRun[]) => steps.map((s) => [s.node_key, s.outcome, s.entered_via_port_key, s.exited_via_port_key]);

const set = (key: string, assign: Record<string, string>) => ({ key, kind: "set", config: { assign } });
const waitFor = (key: string, config: Record<string, unknown>) => ({ key, kind: "wait_for_event", config });

let seq = 0;

describe.each(STORE_KINDS)("wait_for_event, input and randomizer (%s store)", (kind) => {
  let ts: TestStore;
  let clock: ManualClock;
  let engine: Engine;
  let watch: DispatchWatch;
  let errors: unknown[];
  /** Every engine started in a test (stopped after it, once). */
  let engines: Engine[];
  let key = 0;

  async function boot(store = ts.store): Promise<Engine> {
    // Leases far longer than any clock jump here, so a jump never hands a run to a second driver.
    const e = await startEngine({ store, clock, runner: { leaseMs: 30 * DAY } });
    e.events.on("engine:error", (x) => errors.push(x));
    engines.push(e);
    return e;
  }

  beforeEach(async () => {
    ts = await makeStore(kind);
    clock = new ManualClock(Date.parse("2026-04-01T08:00:00Z") + seq++ * 30 * DAY);
    errors = [];
    engines = [];
    engine = await boot();
    watch = new DispatchWatch(engine);
  });
  afterEach(async () => {
    for (const e of engines) await e.stop();
    await ts.destroy();
    expect(errors).toEqual([]);
  });

  /** An enroll-only automation (no triggers) with a subject; root is the first node. */
  async function automation(nodes: unknown[], edges: { from: string; port: string; to: string }[] = [], extra: Record<string, unknown> = {}) {
    const k = `waits-${kind}-${++key}`;
    return engine.createAutomation(WS, { key: k, name: k, root: (nodes[0] as { key: string }).key, nodes, edges, ...extra });
  }

  /** Ingest and wait until the dispatcher has handled the event (woken whatever it wakes). */
  async function send(e: IncomingEvent): Promise<string> {
    const { event_id } = await engine.ingest(WS, { key: `ev-${kind}-${++key}`, ...e });
    await watch.dispatched(event_id);
    return event_id;
  }

  const settle = (runId: string, pred: (r: Run) => boolean = (r) => r.completed_at !== null, e: Engine = engine) => e.waitForRun(WS, runId, pred);
  const parkedOn = (what: string, node?: string) => (r: Run) =>
    r.status === "waiting" && r.waiting_for === what && (node === undefined || r.current_node_key === node);

  async function enroll(automationId: string, subject: string | null, context: Record<string, unknown> = {}): Promise<Run> {
    const { run } = await engine.enroll(WS, automationId, { subject_id: subject, context_overrides: context });
    return run;
  }

  /** wait (1 h timeout) → received: got; timeout: late. */
  const replyFlow = (waitConfig: Record<string, unknown> = {}) =>
    automation(
      [
        waitFor("wait", { event: "reply.received", timeout_ms: HOUR, ...waitConfig }),
        set("got", { answer: "steps.wait.event.payload.text" }),
        set("late", { answer: "'none'" }),
      ],
      [
        { from: "wait", port: "received", to: "got" },
        { from: "wait", port: "timeout", to: "late" },
      ],
    );

  // ---------- wait_for_event ----------

  it('parks on "event" and completes by "received" when the subject\'s event arrives; the event is the wait\'s output', async () => {
    const a = await replyFlow();
    const created = await enroll(a.id, "ct_1");
    const waiting = await settle(created.id, parkedOn("event", "wait"));
    expect(waiting).toMatchObject({ status: "waiting", waiting_for: "event", current_node_key: "wait", completed_at: null });
    expect(waiting.waiting_until).toBe(waiting.started_at + HOUR);
    expect(thread(await engine.listSteps(WS, created.id))).toEqual([["wait", "waiting", null, null]]);

    clock.advance(5 * SEC);
    const eventId = await send({ type: "reply.received", subject_id: "ct_1", payload: { text: "yes" } });
    const done = await settle(created.id);
    expect(done).toMatchObject({ status: "completed", exit_reason: "completed", context: { answer: "yes" }, waiting_for: null });
    expect(done.steps.wait).toMatchObject({
      event_id: eventId,
      event: { type: "event", name: "reply.received", subject_id: "ct_1", payload: { text: "yes" } },
    });
    expect((done.steps.wait as { event: { payload: { text: string } } }).event.payload.text).toBe("yes");
    expect(thread(await engine.listSteps(WS, done.id))).toEqual([
      ["wait", "waiting", null, null],
      ["wait", "succeeded", null, "received"],
      ["got", "succeeded", "received", "next"],
    ]);
  });

  it("an event about another subject, or with another name, neither wakes nor completes the wait", async () => {
    const a = await replyFlow();
    const created = await enroll(a.id, "ct_1");
    const waiting = await settle(created.id, parkedOn("event", "wait"));

    clock.advance(SEC);
    await send({ type: "reply.received", subject_id: "ct_2", payload: { text: "yes" } });
    await send({ type: "reply.sent", subject_id: "ct_1", payload: { text: "yes" } });
    await send({ type: "reply.received", payload: { text: "no subject" } });
    await engine.tick();
    const after = await engine.getRun(WS, created.id);
    expect(after).toMatchObject({ status: "waiting", waiting_for: "event", current_node_key: "wait" });
    // Not woken: still due only at its timeout.
    expect(after.due_at).toBe(waiting.waiting_until);
    expect(thread(await engine.listSteps(WS, created.id))).toEqual([["wait", "waiting", null, null]]);

    // The right event still completes it, and it is that event the wait took.
    clock.advance(SEC);
    const right = await send({ type: "reply.received", subject_id: "ct_1", payload: { text: "mine" } });
    const done = await settle(created.id);
    expect(done).toMatchObject({ status: "completed", context: { answer: "mine" } });
    expect(done.steps.wait).toMatchObject({ event_id: right });
  });

  it("match: a non-matching event is passed over (the run parks again); a matching one completes the wait and is its output", async () => {
    const a = await replyFlow({ match: "event.payload.text == 'yes'" });
    const created = await enroll(a.id, "ct_m");
    const waiting = await settle(created.id, parkedOn("event", "wait"));

    clock.advance(SEC);
    const reparked = engine.events.next("run:parked", (p) => p.run_id === created.id);
    const no = await send({ type: "reply.received", subject_id: "ct_m", payload: { text: "no" } });
    await engine.tick();
    await reparked; // woken by the event, looked, did not match, parked again
    const still = await engine.getRun(WS, created.id);
    expect(still).toMatchObject({ status: "waiting", waiting_for: "event", current_node_key: "wait" });
    expect(still.waiting_until).toBe(waiting.waiting_until); // the timeout does not restart
    expect(still.due_at).toBe(waiting.waiting_until);
    expect(thread(await engine.listSteps(WS, created.id))).toEqual([["wait", "waiting", null, null]]);

    clock.advance(SEC);
    const yes = await send({ type: "reply.received", subject_id: "ct_m", payload: { text: "yes" } });
    const done = await settle(created.id);
    expect(done).toMatchObject({ status: "completed", context: { answer: "yes" } });
    expect(done.steps.wait).toMatchObject({ event_id: yes, event: { payload: { text: "yes" } } });
    expect((done.steps.wait as { event_id: string }).event_id).not.toBe(no);
    expect(thread(await engine.listSteps(WS, done.id))).toEqual([
      ["wait", "waiting", null, null],
      ["wait", "succeeded", null, "received"],
      ["got", "succeeded", "received", "next"],
    ]);
  });

  it("an event that arrives after the run started but before it reached the wait counts (an HTTP call in between)", async () => {
    const gate = await new Gate().start();
    try {
      gate.hold.add("/before");
      const a = await automation(
        [
          { key: "call", kind: "http_request", config: { method: "POST", url: `${gate.url}/before`, body: { hi: "there" } } },
          waitFor("wait", { event: "reply.received", timeout_ms: HOUR }),
          set("got", { answer: "steps.wait.event.payload.text" }),
          set("late", { answer: "'none'" }),
        ],
        [
          { from: "call", port: "next", to: "wait" },
          { from: "wait", port: "received", to: "got" },
          { from: "wait", port: "timeout", to: "late" },
        ],
      );
      const created = await enroll(a.id, "ct_h");
      await until("the request to be held at the gate", () => gate.seen.some((r) => r.path === "/before"));

      clock.advance(SEC);
      const reply = await send({ type: "reply.received", subject_id: "ct_h", payload: { text: "early" } });
      expect(await engine.getRun(WS, created.id)).toMatchObject({ status: "running", current_node_key: "call" });

      gate.release("/before");
      const done = await settle(created.id);
      expect(done).toMatchObject({ status: "completed", exit_reason: "completed", context: { answer: "early" } });
      expect(done.steps.wait).toMatchObject({ event_id: reply });
      const steps = await engine.listSteps(WS, done.id);
      expect(thread(steps).filter(([k]) => k !== "call")).toEqual([
        ["wait", "succeeded", "next", "received"],
        ["got", "succeeded", "received", "next"],
      ]);
    } finally {
      await gate.stop();
    }
  });

  it("an event stored before the run was enrolled does not count: the run waits for a new one", async () => {
    const a = await replyFlow();
    const old = await send({ type: "reply.received", subject_id: "ct_old", payload: { text: "stale" } });
    clock.advance(SEC);
    const created = await enroll(a.id, "ct_old");
    const waiting = await settle(created.id, parkedOn("event", "wait"));
    await engine.tick();
    expect(await engine.getRun(WS, created.id)).toMatchObject({ status: "waiting", waiting_for: "event", due_at: waiting.waiting_until });

    clock.advance(SEC);
    const fresh = await send({ type: "reply.received", subject_id: "ct_old", payload: { text: "fresh" } });
    const done = await settle(created.id);
    expect(done).toMatchObject({ status: "completed", context: { answer: "fresh" } });
    expect(done.steps.wait).toMatchObject({ event_id: fresh });
    expect((done.steps.wait as { event_id: string }).event_id).not.toBe(old);
  });

  it("the rule at millisecond resolution: an event from the millisecond before enrollment does not count; one from the same millisecond does", async () => {
    // Within one millisecond the order of "stored" and "enrolled" is not known; the rule counts
    // such an event (losing a real answer is the worse mistake). One millisecond earlier, it is old.
    const a = await replyFlow();
    await send({ type: "reply.received", subject_id: "ct_tie", payload: { text: "stale" } });
    clock.advance(1);
    const created = await enroll(a.id, "ct_tie");
    const r = await settle(created.id, (x) => x.completed_at !== null || parkedOn("event", "wait")(x));
    expect({ status: r.status, current_node_key: r.current_node_key, took: (r.steps.wait as { event_id?: string } | undefined)?.event_id ?? null }).toEqual({
      status: "waiting",
      current_node_key: "wait",
      took: null,
    });

    const same = await send({ type: "reply.received", subject_id: "ct_same", payload: { text: "same ms" } });
    const sameRun = await enroll(a.id, "ct_same");
    const done = await settle(sameRun.id);
    expect(done.status).toBe("completed");
    expect(done.steps.wait).toMatchObject({ event_id: same });
  });

  it("the event that started a run is not an answer to that run's own wait for the same event name", async () => {
    // A run triggered by a reply that then waits for the next reply of the same subject.
    const k = `waits-${kind}-trigger`;
    const a = await engine.createAutomation(WS, {
      key: k,
      name: k,
      triggers: [{ type: "event", name: "reply.received" }],
      subject: "{{ event.subject_id }}",
      root: "wait",
      nodes: [waitFor("wait", { event: "reply.received", timeout_ms: HOUR }), set("got", { answer: "steps.wait.event.payload.text" })],
      edges: [{ from: "wait", port: "received", to: "got" }],
    });
    const first = await send({ type: "reply.received", subject_id: "ct_trig", payload: { text: "first" } });
    const runs = (await engine.listRuns({ workspace_id: WS, automation_id: a.id })).items;
    expect(runs).toHaveLength(1);
    expect(runs[0]!.event_id).toBe(first);
    const r = await settle(runs[0]!.id, (x) => x.completed_at !== null || parkedOn("event", "wait")(x));
    const took = (r.steps.wait as { event_id?: string } | undefined)?.event_id ?? null;
    expect({ status: r.status, current_node_key: r.current_node_key, took, trigger_event: first }).toEqual({
      status: "waiting",
      current_node_key: "wait",
      took: null,
      trigger_event: first,
    });

    // The next reply is the answer.
    clock.advance(SEC);
    const next = await send({ type: "reply.received", subject_id: "ct_trig", payload: { text: "second" } });
    const done = await settle(r.id);
    expect(done).toMatchObject({ status: "completed", context: { answer: "second" } });
    expect(done.steps.wait).toMatchObject({ event_id: next });
  });

  it("an event stored while the run is deciding to wait (after its look-up, before its park commits) still completes it", async () => {
    // The run's look-up is held after it found nothing; the event is stored and dispatched then
    // (the dispatcher's wake sees a running run, not a waiting one); the park's commit must notice it.
    let hold: Promise<void> | null = null;
    let release = () => {};
    let lookedUp = () => {};
    const looked = new Promise<void>((r) => (lookedUp = r));
    const inner = ts.store;
    const held = new Proxy(inner, {
      get(target, prop) {
        if (prop === "findEvents") {
          return async (...args: Parameters<typeof inner.findEvents>) => {
            const found = await target.findEvents(...args);
            if (hold) {
              const h = hold;
              hold = null;
              lookedUp();
              await h;
            }
            return found;
          };
        }
        const v = Reflect.get(target, prop, target) as unknown;
        return typeof v === "function" ? (v as (...a: unknown[]) => unknown).bind(target) : v;
      },
    });
    await engine.stop();
    engine = await boot(held);
    watch = new DispatchWatch(engine);

    const a = await replyFlow();
    hold = new Promise<void>((r) => (release = r));
    const created = await enroll(a.id, "ct_race");
    await looked;
    clock.advance(SEC);
    const reply = await send({ type: "reply.received", subject_id: "ct_race", payload: { text: "in between" } });
    release();
    const done = await until("the run to complete without another event", async () => {
      const r = await engine.getRun(WS, created.id);
      return r.completed_at !== null ? r : null;
    });
    expect(done).toMatchObject({ status: "completed", context: { answer: "in between" } });
    expect(done.steps.wait).toMatchObject({ event_id: reply });
    // It did park (its look-up had found nothing) and was made due by the park's commit.
    expect(thread(await engine.listSteps(WS, done.id))).toEqual([
      ["wait", "waiting", null, null],
      ["wait", "succeeded", null, "received"],
      ["got", "succeeded", "received", "next"],
    ]);
  });

  it("two waits in a row for the same event: one event completes only the first; the second needs another (each event is taken once)", async () => {
    const a = await automation(
      [
        waitFor("w1", { event: "reply.received", timeout_ms: HOUR }),
        waitFor("w2", { event: "reply.received", timeout_ms: HOUR }),
        set("done", { first: "steps.w1.event.payload.text", second: "steps.w2.event.payload.text" }),
      ],
      [
        { from: "w1", port: "received", to: "w2" },
        { from: "w2", port: "received", to: "done" },
      ],
    );
    const created = await enroll(a.id, "ct_2w");
    await settle(created.id, parkedOn("event", "w1"));

    clock.advance(SEC);
    const e1 = await send({ type: "reply.received", subject_id: "ct_2w", payload: { text: "one" } });
    const atW2 = await settle(created.id, parkedOn("event", "w2"));
    expect(atW2.steps.w1).toMatchObject({ event_id: e1 });
    expect(atW2.steps.w2).toBeUndefined();
    await engine.tick();
    const still = await engine.getRun(WS, created.id);
    expect(still).toMatchObject({ status: "waiting", current_node_key: "w2" });
    expect(still.due_at).toBe(still.waiting_until); // not made due by the event w1 took
    expect(thread(await engine.listSteps(WS, created.id))).toEqual([
      ["w1", "waiting", null, null],
      ["w1", "succeeded", null, "received"],
      ["w2", "waiting", "received", null],
    ]);

    clock.advance(SEC);
    const e2 = await send({ type: "reply.received", subject_id: "ct_2w", payload: { text: "two" } });
    const done = await settle(created.id);
    expect(done).toMatchObject({ status: "completed", context: { first: "one", second: "two" } });
    expect(done.steps.w2).toMatchObject({ event_id: e2 });
  });

  it("one event, two waits in a row: the second wait is not satisfied by it even when it arrived before the run reached either", async () => {
    const gate = await new Gate().start();
    try {
      gate.hold.add("/x");
      const a = await automation(
        [
          { key: "call", kind: "http_request", config: { method: "GET", url: `${gate.url}/x` } },
          waitFor("w1", { event: "reply.received", timeout_ms: HOUR }),
          waitFor("w2", { event: "reply.received", timeout_ms: HOUR }),
        ],
        [
          { from: "call", port: "next", to: "w1" },
          { from: "w1", port: "received", to: "w2" },
        ],
      );
      const created = await enroll(a.id, "ct_1ev");
      await until("the request to be held at the gate", () => gate.seen.some((r) => r.path === "/x"));
      clock.advance(SEC);
      const e1 = await send({ type: "reply.received", subject_id: "ct_1ev", payload: { text: "only" } });
      gate.release("/x");
      const atW2 = await settle(created.id, (r) => r.completed_at !== null || parkedOn("event", "w2")(r));
      expect(atW2).toMatchObject({ status: "waiting", current_node_key: "w2" });
      expect(atW2.steps.w1).toMatchObject({ event_id: e1 });
    } finally {
      await gate.stop();
    }
  });

  it('timeout: with no event the wait leaves by "timeout" once its time has passed', async () => {
    const a = await automation(
      [waitFor("wait", { event: "reply.received", timeout_ms: MIN }), set("got", { path: "'received'" }), set("late", { path: "'timeout'" })],
      [
        { from: "wait", port: "received", to: "got" },
        { from: "wait", port: "timeout", to: "late" },
      ],
    );
    const created = await enroll(a.id, "ct_t");
    const waiting = await settle(created.id, parkedOn("event", "wait"));
    expect(waiting.waiting_until).toBe(waiting.started_at + MIN);

    clock.advance(30 * SEC);
    await engine.tick();
    expect(await engine.getRun(WS, created.id)).toMatchObject({ status: "waiting", current_node_key: "wait" });

    clock.advance(31 * SEC);
    await engine.tick();
    const done = await settle(created.id);
    expect(done).toMatchObject({ status: "completed", exit_reason: "completed", context: { path: "timeout" } });
    expect(done.steps.wait).toEqual({ timed_out: true });
    expect(thread(await engine.listSteps(WS, done.id))).toEqual([
      ["wait", "waiting", null, null],
      ["wait", "succeeded", null, "timeout"],
      ["late", "succeeded", "timeout", "next"],
    ]);
  });

  it("timeout with the timeout port not wired: the path ends and the run completes", async () => {
    const a = await automation(
      [waitFor("wait", { event: "reply.received", timeout_ms: MIN }), set("got", { path: "'received'" })],
      [{ from: "wait", port: "received", to: "got" }],
    );
    const created = await enroll(a.id, "ct_t2");
    await settle(created.id, parkedOn("event", "wait"));
    clock.advance(61 * SEC);
    await engine.tick();
    const done = await settle(created.id);
    expect(done).toMatchObject({ status: "completed", exit_reason: "completed", context: {} });
    expect(thread(await engine.listSteps(WS, done.id))).toEqual([
      ["wait", "waiting", null, null],
      ["wait", "succeeded", null, "timeout"],
    ]);
  });

  // ---------- input ----------

  const askEmail = (withTimeoutEdge: boolean) =>
    automation(
      [
        { key: "ask", kind: "input", config: { prompt: "What's your email?", timeout_min: 60, assign_to: "email" } },
        set("thanks", { said: "'thanks ' + context.email" }),
        set("gave_up", { said: "'no reply'" }),
      ],
      [{ from: "ask", port: "received", to: "thanks" }, ...(withTimeoutEdge ? [{ from: "ask", port: "timeout", to: "gave_up" }] : [])],
    );

  it('input: parks on "input"; the subject\'s reply is assigned to context and the run follows "received"', async () => {
    const a = await askEmail(false);
    const created = await enroll(a.id, "ct_in");
    const waiting = await settle(created.id, parkedOn("input", "ask"));
    expect(waiting.waiting_until).toBe(waiting.started_at + HOUR);
    const [parkedStep] = await engine.listSteps(WS, created.id);
    expect(parkedStep).toMatchObject({ node_key: "ask", outcome: "waiting", input: { prompt: "What's your email?", event: "reply.received" } });

    clock.advance(MIN);
    const reply = await send({ type: "reply.received", subject_id: "ct_in", payload: { text: "a@b.c" } });
    const done = await settle(created.id);
    expect(done).toMatchObject({ status: "completed", exit_reason: "completed" });
    expect(done.context.email).toBe("a@b.c");
    expect(done.context.said).toBe("thanks a@b.c");
    expect(done.steps.ask).toEqual({ event_id: reply, reply: "a@b.c" });
    expect(thread(await engine.listSteps(WS, done.id))).toEqual([
      ["ask", "waiting", null, null],
      ["ask", "succeeded", null, "received"],
      ["thanks", "succeeded", "received", "next"],
    ]);
  });

  it("input: unanswered with no timeout edge, the run exits input_timeout", async () => {
    const a = await askEmail(false);
    const created = await enroll(a.id, "ct_in2");
    await settle(created.id, parkedOn("input", "ask"));
    clock.advance(61 * MIN);
    await engine.tick();
    const done = await settle(created.id);
    expect(done).toMatchObject({ status: "exited", exit_reason: "input_timeout" });
    expect(done.context).not.toHaveProperty("email");
    expect(done.completed_at).not.toBeNull();
    const steps = await engine.listSteps(WS, done.id);
    expect(thread(steps)).toEqual([
      ["ask", "waiting", null, null],
      ["ask", "succeeded", null, null],
    ]);
    expect(steps[1]!.output).toEqual({ timed_out: true });
  });

  it("input: unanswered with a timeout edge, the run follows it", async () => {
    const a = await askEmail(true);
    const created = await enroll(a.id, "ct_in3");
    await settle(created.id, parkedOn("input", "ask"));
    clock.advance(59 * MIN);
    await engine.tick();
    expect(await engine.getRun(WS, created.id)).toMatchObject({ status: "waiting", waiting_for: "input" });
    clock.advance(2 * MIN);
    await engine.tick();
    const done = await settle(created.id);
    expect(done).toMatchObject({ status: "completed", exit_reason: "completed", context: { said: "no reply" } });
    expect(thread(await engine.listSteps(WS, done.id))).toEqual([
      ["ask", "waiting", null, null],
      ["ask", "succeeded", null, "timeout"],
      ["gave_up", "succeeded", "timeout", "next"],
    ]);
  });

  it("input: a run without a subject cannot take a reply and fails input.no_subject", async () => {
    const a = await askEmail(true);
    const created = await enroll(a.id, null);
    const done = await settle(created.id);
    expect(done).toMatchObject({ status: "failed", exit_reason: "handler_failure" });
    const steps = await engine.listSteps(WS, done.id);
    expect(steps.map((s) => [s.node_key, s.outcome, s.error?.code])).toEqual([["ask", "failed", "input.no_subject"]]);
  });

  // ---------- durability ----------

  it("a waiting run survives a restart: the event is stored while no runner is up, and a new engine on the same store completes the run", async () => {
    const a = await replyFlow();
    const created = await enroll(a.id, "ct_d");
    await settle(created.id, parkedOn("event", "wait"));
    await engine.stop();

    // An API-only process takes the event while nothing runs.
    const api = new Engine({ store: ts.store, clock, noRunner: true });
    await api.start();
    clock.advance(10 * SEC);
    const { event_id } = await api.ingest(WS, { type: "reply.received", key: `restart-${kind}`, subject_id: "ct_d", payload: { text: "after restart" } });
    expect((await api.getEvent(WS, event_id)).dispatched_at).toBeNull();
    expect(await api.getRun(WS, created.id)).toMatchObject({ status: "waiting", current_node_key: "wait" });

    // A new process on the same data.
    const next = await boot(ts.reopen());
    const done = await settle(created.id, undefined, next);
    expect(done).toMatchObject({ status: "completed", exit_reason: "completed", context: { answer: "after restart" } });
    expect(done.steps.wait).toMatchObject({ event_id });
    expect(thread(await next.listSteps(WS, done.id))).toEqual([
      ["wait", "waiting", null, null],
      ["wait", "succeeded", null, "received"],
      ["got", "succeeded", "received", "next"],
    ]);
  });

  // ---------- randomizer ----------

  it("randomizer (sticky by default): one subject always gets one arm; many subjects get both arms; a weight-0 variant is never taken", async () => {
    const a = await automation(
      [
        {
          key: "pick",
          kind: "randomizer",
          config: {
            variants: [
              { port: "a", weight: 50 },
              { port: "never", weight: 0 },
              { port: "b", weight: 50 },
              { port: "never_last", weight: 0 },
            ],
          },
        },
        set("arm_a", { arm: "'a'" }),
        set("arm_b", { arm: "'b'" }),
        set("arm_never", { arm: "'never'" }),
        set("arm_never_last", { arm: "'never_last'" }),
      ],
      [
        { from: "pick", port: "a", to: "arm_a" },
        { from: "pick", port: "b", to: "arm_b" },
        { from: "pick", port: "never", to: "arm_never" },
        { from: "pick", port: "never_last", to: "arm_never_last" },
      ],
      { reentry: { policy: "allow_concurrent" } },
    );

    /** Enroll one run per subject, in chunks, and return each finished run's arm and recorded variant. */
    async function arms(subjects: string[]): Promise<{ arm: unknown; variant: unknown; sticky: unknown }[]> {
      const out: { arm: unknown; variant: unknown; sticky: unknown }[] = [];
      for (let i = 0; i < subjects.length; i += 50) {
        const runs = await Promise.all(subjects.slice(i, i + 50).map((s) => enroll(a.id, s)));
        for (const r of await Promise.all(runs.map((r) => settle(r.id)))) {
          expect(r).toMatchObject({ status: "completed", exit_reason: "completed" });
          const pick = r.steps.pick as { variant: string; sticky: boolean };
          out.push({ arm: r.context.arm, variant: pick.variant, sticky: pick.sticky });
        }
      }
      return out;
    }

    const same = await arms(Array.from({ length: 20 }, () => "ct_same"));
    expect(same).toHaveLength(20);
    expect(new Set(same.map((x) => x.arm)).size).toBe(1);
    expect(same.every((x) => x.variant === x.arm && x.sticky === true)).toBe(true);
    expect(["a", "b"]).toContain(same[0]!.arm);

    const many = await arms(Array.from({ length: 200 }, (_, i) => `ct_${i}`));
    const counts: Record<string, number> = {};
    for (const x of many) counts[String(x.arm)] = (counts[String(x.arm)] ?? 0) + 1;
    expect(Object.keys(counts).sort()).toEqual(["a", "b"]);
    expect(counts.a! + counts.b!).toBe(200);
    expect(many.every((x) => x.variant === x.arm)).toBe(true);

    // The same subjects again: each gets the arm it got the first time.
    const again = await arms(Array.from({ length: 20 }, (_, i) => `ct_${i}`));
    expect(again.map((x) => x.arm)).toEqual(many.slice(0, 20).map((x) => x.arm));
  });
});
