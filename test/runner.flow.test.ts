// The run thread through the fast built-ins (set, branch, switch, delay, end): context accumulates,
// outputs land at steps.<key>, ports are followed and recorded, delays park and resume, loops are
// capped, runs stay on their pinned version, enrollment is idempotent, step rows are append-only.

import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from "vitest";
import type { Engine } from "../src/engine/engine.js";
import { LOOP_CAP } from "../src/engine/runner.js";
import type { StepRun } from "../src/engine/store.js";
import { settle, startEngine, WS } from "./helpers/engine.js";
import { Sink } from "./helpers/sink.js";
import { makeStore, STORE_KINDS, type TestStore } from "./helpers/stores.js";

let seq = 0;

/** A definition with a fresh key; `nodes` and `edges` as in the definition format. */
function def(root: string, nodes: unknown[], edges: { from: string; port: string; to: string }[] = []) {
  const key = `flow-${++seq}`;
  return { key, name: key, root, nodes, edges };
}

const set = (key: string, assign: Record<string, string>) => ({ key, kind: "set", config: { assign } });
const chain = (...keys: string[]) => keys.slice(1).map((to, i) => ({ from: keys[i]!, port: "next", to }));

/** node key, outcome, entered via, exited via: the run thread as a user reads it. */
const thread = (steps: StepRun[]) => steps.map((s) => [s.node_key, s.outcome, s.entered_via_port_key, s.exited_via_port_key]);

describe.each(STORE_KINDS)("run flow (%s store)", (kind) => {
  let ts: TestStore;
  let engine: Engine;
  let errors: unknown[];

  beforeAll(async () => {
    ts = await makeStore(kind);
  });
  afterAll(async () => {
    await ts.destroy();
  });
  beforeEach(async () => {
    engine = await startEngine({ store: ts.store });
    errors = [];
    engine.events.on("engine:error", (e) => errors.push(e));
  });
  afterEach(async () => {
    await engine.stop();
    expect(errors).toEqual([]);
  });

  async function runToEnd(definition: unknown, context: Record<string, unknown> = {}) {
    const a = await engine.createAutomation(WS, definition);
    const { run: created } = await engine.enroll(WS, a.id, { context_overrides: context });
    const r = await settle(engine, created.id);
    return { run: r, steps: await engine.listSteps(WS, r.id), automation: a };
  }

  it("set nodes accumulate context and each output lands at steps.<key>", async () => {
    const { run, steps } = await runToEnd(
      def(
        "a",
        [
          set("a", { x: "context.start + 1" }),
          set("b", { y: "context.x * 2", label: "'b-' + string(context.x)" }),
          set("c", { z: "steps.b.y + context.x", from_a: "steps.a.x" }),
          { key: "done", kind: "end" },
        ],
        chain("a", "b", "c", "done"),
      ),
      { start: 4 },
    );
    expect(run.status).toBe("completed");
    expect(run.exit_reason).toBe("completed");
    expect(run.context).toEqual({ start: 4, x: 5, y: 10, label: "b-5", z: 15, from_a: 5 });
    expect(run.steps).toMatchObject({ a: { x: 5 }, b: { y: 10, label: "b-5" }, c: { z: 15, from_a: 5 } });
    expect(thread(steps)).toEqual([
      ["a", "succeeded", null, "next"],
      ["b", "succeeded", "next", "next"],
      ["c", "succeeded", "next", "next"],
      ["done", "succeeded", "next", null],
    ]);
    expect(steps.map((s) => s.output)).toEqual([{ x: 5 }, { y: 10, label: "b-5" }, { z: 15, from_a: 5 }, null]);
    expect(steps.every((s) => s.attempt === 1 && s.visit === 1 && s.error === null)).toBe(true);
    expect(steps.map((s) => s.idempotency_key)).toEqual(["a", "b", "c", "done"].map((k) => `${run.id}/${k}/1`));
    expect(run.current_node_key).toBeNull();
    expect(run.completed_at).not.toBeNull();
  });

  it("branch follows true and false, and the thread records the port taken", async () => {
    const d = def(
      "check",
      [{ key: "check", kind: "branch", config: { condition: "context.amount > 1000" } }, set("big", { path: "'big'" }), set("small", { path: "'small'" })],
      [
        { from: "check", port: "true", to: "big" },
        { from: "check", port: "false", to: "small" },
      ],
    );
    const a = await engine.createAutomation(WS, d);
    const big = await engine.enroll(WS, a.id, { context_overrides: { amount: 5000 } });
    const small = await engine.enroll(WS, a.id, { context_overrides: { amount: 10 } });
    const [rBig, rSmall] = await Promise.all([settle(engine, big.run.id), settle(engine, small.run.id)]);
    expect(rBig.context).toEqual({ amount: 5000, path: "big" });
    expect(rSmall.context).toEqual({ amount: 10, path: "small" });
    expect(rBig.steps).toMatchObject({ check: { value: true } });
    expect(rSmall.steps).toMatchObject({ check: { value: false } });
    expect(thread(await engine.listSteps(WS, rBig.id))).toEqual([
      ["check", "succeeded", null, "true"],
      ["big", "succeeded", "true", "next"],
    ]);
    expect(thread(await engine.listSteps(WS, rSmall.id))).toEqual([
      ["check", "succeeded", null, "false"],
      ["small", "succeeded", "false", "next"],
    ]);
  });

  it("switch takes the first matching case, else default", async () => {
    const d = def(
      "tier",
      [
        {
          key: "tier",
          kind: "switch",
          config: {
            cases: [
              { port: "gold", condition: "context.spend >= 1000" },
              { port: "silver", condition: "context.spend >= 100" },
            ],
          },
        },
        set("g", { tier: "'gold'" }),
        set("s", { tier: "'silver'" }),
        set("d", { tier: "'none'" }),
      ],
      [
        { from: "tier", port: "gold", to: "g" },
        { from: "tier", port: "silver", to: "s" },
        { from: "tier", port: "default", to: "d" },
      ],
    );
    const a = await engine.createAutomation(WS, d);
    const out: Record<number, unknown> = {};
    for (const spend of [5000, 500, 5]) {
      const { run } = await engine.enroll(WS, a.id, { context_overrides: { spend } });
      const r = await settle(engine, run.id);
      const steps = await engine.listSteps(WS, r.id);
      out[spend] = [r.context.tier, steps[0]!.exited_via_port_key, steps[1]!.entered_via_port_key, (r.steps.tier as { matched: string }).matched];
    }
    expect(out).toEqual({
      5000: ["gold", "gold", "gold", "gold"],
      500: ["silver", "silver", "silver", "silver"],
      5: ["none", "default", "default", "default"],
    });
  });

  it('delay parks the run as waiting on "delay", then resumes and finishes', async () => {
    const a = await engine.createAutomation(
      WS,
      def(
        "before",
        [set("before", { n: "1" }), { key: "wait", kind: "delay", config: { duration_ms: 1500 } }, set("after", { n: "context.n + 1" })],
        chain("before", "wait", "after"),
      ),
    );
    // Long enough that a loaded machine still reads the run while it waits (the real clock runs here).
    const parked = engine.events.next("run:parked", (e) => e.waiting_for === "delay");
    const { run: created } = await engine.enroll(WS, a.id, {});
    const p = await parked;
    expect(p.run_id).toBe(created.id);
    const waiting = await engine.getRun(WS, created.id);
    expect(waiting).toMatchObject({ status: "waiting", waiting_for: "delay", current_node_key: "wait", completed_at: null, lease_owner: null });
    expect(waiting.context).toEqual({ n: 1 });
    expect(waiting.waiting_until).toBe(p.due_at);
    expect(waiting.due_at).toBe(p.due_at);
    const whileWaiting = await engine.listSteps(WS, created.id);
    expect(whileWaiting.map((s) => [s.node_key, s.outcome])).toEqual([
      ["before", "succeeded"],
      ["wait", "waiting"],
    ]);

    const done = await settle(engine, created.id);
    expect(done.status).toBe("completed");
    expect(done.context).toEqual({ n: 2 });
    expect(done.waiting_for).toBeNull();
    const steps = await engine.listSteps(WS, done.id);
    expect(thread(steps)).toEqual([
      ["before", "succeeded", null, "next"],
      ["wait", "waiting", "next", null],
      ["wait", "succeeded", "next", "next"],
      ["after", "succeeded", "next", "next"],
    ]);
    // Both rows of the delay belong to one visit; it resumes no earlier than its due time.
    expect(steps[1]!.idempotency_key).toBe(steps[2]!.idempotency_key);
    expect(steps[2]!.started_at).toBeGreaterThanOrEqual(p.due_at!);
    expect((steps[2]!.output as { waited_ms: number }).waited_ms).toBeGreaterThanOrEqual(1500);
  });

  it("an edge to a node that does not exist ends the path and the run completes (a warning that names the likely key)", async () => {
    const d = def("a", [set("a", { x: "1" })], [{ from: "a", port: "next", to: "ghost" }]);
    expect(engine.validate(d)).toMatchObject({ ok: true, warnings: [{ code: "definition.dangling_edge", pointer: "/edges/0/to" }] });
    const { run, steps } = await runToEnd(d);
    expect(run).toMatchObject({ status: "completed", exit_reason: "completed", context: { x: 1 } });
    expect(thread(steps)).toEqual([["a", "succeeded", null, "next"]]);
  });

  it("end stops the run even with nodes after it", async () => {
    const { run, steps } = await runToEnd(def("a", [set("a", { x: "1" }), { key: "stop", kind: "end" }, set("never", { x: "2" })], chain("a", "stop")));
    expect(run).toMatchObject({ status: "completed", exit_reason: "completed", context: { x: 1 } });
    expect(steps.map((s) => s.node_key)).toEqual(["a", "stop"]);
  });

  it(`a cycle of set nodes without a pause point fails with infinite_loop_cap after ${LOOP_CAP} visits`, async () => {
    const { run, steps } = await runToEnd(
      def(
        "inc",
        [set("inc", { n: "context.n + 1" }), set("again", { m: "context.n" })],
        [
          { from: "inc", port: "next", to: "again" },
          { from: "again", port: "next", to: "inc" },
        ],
      ),
      { n: 0 },
    );
    expect(run.status).toBe("failed");
    expect(run.exit_reason).toBe("infinite_loop_cap");
    expect(run.completed_at).not.toBeNull();
    expect(steps).toHaveLength(LOOP_CAP);
    expect(steps.every((s) => s.outcome === "succeeded")).toBe(true);
    expect(run.context).toEqual({ n: LOOP_CAP / 2, m: LOOP_CAP / 2 });
    // Every visit is its own step with its own visit number and idempotency key.
    const inc = steps.filter((s) => s.node_key === "inc");
    expect(inc.map((s) => s.visit)).toEqual(Array.from({ length: LOOP_CAP / 2 }, (_, i) => i + 1));
    expect(new Set(steps.map((s) => s.idempotency_key)).size).toBe(LOOP_CAP);
  });

  it("a pause point inside a loop resets the loop count", async () => {
    // 3 nodes per lap and 70 laps = 210 visits in all, more than the cap, but never 200 in a row
    // without the delay parking the run.
    const { run, steps } = await runToEnd(
      def(
        "inc",
        [
          set("inc", { n: "context.n + 1" }),
          { key: "nap", kind: "delay", config: { duration_ms: 1 } },
          { key: "more", kind: "branch", config: { condition: "context.n < 70" } },
        ],
        [
          { from: "inc", port: "next", to: "nap" },
          { from: "nap", port: "next", to: "more" },
          { from: "more", port: "true", to: "inc" },
        ],
      ),
      { n: 0 },
    );
    expect(run.status).toBe("completed");
    expect(run.context).toEqual({ n: 70 });
    expect(steps.filter((s) => s.node_key === "inc")).toHaveLength(70);
  });

  it("editing an automation leaves waiting runs on their version; new enrollments use the new one", async () => {
    const v1 = def("wait", [{ key: "wait", kind: "delay", config: { duration_ms: 1500 } }, set("mark", { tag: "'v1'" })], chain("wait", "mark"));
    const a = await engine.createAutomation(WS, v1);
    const old = await Promise.all([1, 2, 3].map((i) => engine.enroll(WS, a.id, { subject_id: `s${i}` })));
    const oldIds = old.map((o) => o.run.id);
    await Promise.all(oldIds.map((id) => settle(engine, id, (r) => r.status === "waiting")));

    const v2 = {
      ...v1,
      nodes: [{ key: "wait", kind: "delay", config: { duration_ms: 0 } }, set("mark", { tag: "'v2'" }), set("extra", { extra: "true" })],
      edges: chain("wait", "mark", "extra"),
    };
    const updated = await engine.updateAutomation(WS, a.id, v2);
    expect(updated.current_version).toBe(2);
    for (const id of oldIds) expect((await engine.getRun(WS, id)).status).toBe("waiting");

    const fresh = await engine.enroll(WS, a.id, { subject_id: "s-new" });
    expect(fresh.run.version).toBe(2);
    const newRun = await settle(engine, fresh.run.id);
    expect(newRun).toMatchObject({ status: "completed", version: 2, context: { tag: "v2", extra: true } });
    expect((await engine.listSteps(WS, newRun.id)).map((s) => s.node_key)).toEqual(["wait", "mark", "extra"]);

    for (const id of oldIds) {
      const r = await settle(engine, id);
      expect(r).toMatchObject({ status: "completed", version: 1, context: { tag: "v1" } });
      expect(r.context).not.toHaveProperty("extra");
      expect((await engine.listSteps(WS, id)).map((s) => [s.node_key, s.outcome])).toEqual([
        ["wait", "waiting"],
        ["wait", "succeeded"],
        ["mark", "succeeded"],
      ]);
    }
  });

  it("enroll with the same idempotency_key twice returns the same run with created false", async () => {
    const a = await engine.createAutomation(WS, def("a", [set("a", { x: "1" })]));
    const first = await engine.enroll(WS, a.id, { idempotency_key: "signup-42", context_overrides: { n: 1 } });
    const second = await engine.enroll(WS, a.id, { idempotency_key: "signup-42", context_overrides: { n: 2 } });
    expect(first.created).toBe(true);
    expect(second.created).toBe(false);
    expect(second.run.id).toBe(first.run.id);
    const done = await settle(engine, first.run.id);
    expect(done.context).toEqual({ n: 1, x: 1 });
    const third = await engine.enroll(WS, a.id, { idempotency_key: "signup-42" });
    expect(third).toMatchObject({ created: false, run: { id: first.run.id, status: "completed" } });

    // Racing enrollments with one key still make one run.
    const racing = await Promise.all([1, 2, 3, 4].map(() => engine.enroll(WS, a.id, { idempotency_key: "signup-43" })));
    expect(new Set(racing.map((r) => r.run.id)).size).toBe(1);
    expect(racing.filter((r) => r.created)).toHaveLength(1);
    const other = await engine.enroll(WS, a.id, { idempotency_key: "signup-44" });
    expect(other.created).toBe(true);
    expect(other.run.id).not.toBe(first.run.id);
    await Promise.all([settle(engine, racing[0]!.run.id), settle(engine, other.run.id)]);
    const runs = await engine.listRuns({ workspace_id: WS, automation_id: a.id });
    expect(runs.items).toHaveLength(3);
  });

  describe("with a sink", () => {
    let sink: Sink;
    beforeEach(async () => {
      sink = await new Sink().start();
    });
    afterEach(async () => {
      await sink.stop();
    });

    it("the Idempotency-Key header the sink sees is the step row's idempotency_key, per visit", async () => {
      const { run, steps } = await runToEnd(
        def(
          "call",
          [
            { key: "call", kind: "http_request", config: { method: "POST", url: `${sink.url}/hook/{{ string(context.n) }}`, body: { n: "{{ context.n }}" } } },
            set("inc", { n: "context.n + 1" }),
            { key: "more", kind: "branch", config: { condition: "context.n < 3" } },
          ],
          [
            { from: "call", port: "next", to: "inc" },
            { from: "inc", port: "next", to: "more" },
            { from: "more", port: "true", to: "call" },
          ],
        ),
        { n: 0 },
      );
      expect(run.status).toBe("completed");
      const calls = steps.filter((s) => s.node_key === "call");
      expect(calls.map((s) => s.idempotency_key)).toEqual([1, 2, 3].map((v) => `${run.id}/call/${v}`));
      expect(sink.requests.map((r) => r.key)).toEqual(calls.map((s) => s.idempotency_key));
      expect(sink.requests.map((r) => r.path)).toEqual(["/hook/0", "/hook/1", "/hook/2"]);
      expect(sink.requests.map((r) => JSON.parse(r.body))).toEqual([{ n: 0 }, { n: 1 }, { n: 2 }]);
      // The trace id of the run travels with every call.
      for (const r of sink.requests) expect(String(r.headers.traceparent)).toMatch(new RegExp(`^00-${run.trace_id}-[0-9a-f]{16}-01$`));
      // The step row keeps the request it sent (the key included) and the response it got.
      expect(calls[0]!.input).toMatchObject({ method: "POST", headers: { "idempotency-key": calls[0]!.idempotency_key } });
      expect(calls[0]!.output).toMatchObject({ status: 200, body: { ok: true } });
    });

    it("step rows are append-only: one row per attempt, ids increasing, earlier rows never rewritten", async () => {
      sink.reply = (_req, nth) => (nth === 1 ? { status: 503, body: {} } : { status: 200, body: { ok: true } });
      const snapshots: Promise<StepRun[]>[] = [];
      const off = engine.events.on("run:parked", (e) => snapshots.push(engine.listSteps(WS, e.run_id)));
      const { run, steps } = await runToEnd(
        def(
          "first",
          [
            set("first", { a: "1" }),
            { key: "call", kind: "http_request", config: { method: "GET", url: `${sink.url}/x` }, retry: { max_attempts: 3, initial_ms: 20, max_ms: 100 } },
            { key: "nap", kind: "delay", config: { duration_ms: 200 } },
            set("last", { b: "2" }),
          ],
          chain("first", "call", "nap", "last"),
        ),
      );
      off();
      expect(run.status).toBe("completed");
      expect(steps.map((s) => [s.node_key, s.attempt, s.outcome])).toEqual([
        ["first", 1, "succeeded"],
        ["call", 1, "retrying"],
        ["call", 2, "succeeded"],
        ["nap", 1, "waiting"],
        ["nap", 1, "succeeded"],
        ["last", 1, "succeeded"],
      ]);
      for (let i = 1; i < steps.length; i++) expect(steps[i]!.id).toBeGreaterThan(steps[i - 1]!.id);
      const seen = await Promise.all(snapshots);
      expect(seen.length).toBe(2); // parked for the retry, then for the delay
      for (const snap of seen) {
        expect(snap.length).toBeGreaterThan(0);
        expect(steps.slice(0, snap.length)).toEqual(snap);
      }
      // Every attempt row of the call keeps its own outcome and error.
      expect(steps[1]!.error).toMatchObject({ code: "http.status_503", retryable: true });
      expect(steps[2]!.error).toBeNull();
      expect(sink.requests.map((r) => r.key)).toEqual([steps[1]!.idempotency_key, steps[1]!.idempotency_key]);
    });
  });
});
