// Reports and the ops overview, on a ManualClock.
//
// GET /v1/reports/outcomes?from&to counts, per automation, runs by status and items by outcome for
// the runs started in [from, to) (a run started at `from` counts, one at `to` does not); a bad range
// is 400 request.invalid pointing at /from. GET /v1/ops/overview shows overdue runs and schedules,
// the queue (due runs, undispatched events), the oldest due run, and failed runs per automation with
// a spike flag: at least 5 failures in the last hour and over 3× the window's hourly average.

import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { defineAction } from "../src/engine/actions.js";
import { ManualClock } from "../src/engine/clock.js";
import { Engine, type EngineOptions } from "../src/engine/engine.js";
import type { Run } from "../src/engine/store.js";
import { startApi, type Api } from "./helpers/api.js";
import { LOOPBACK, WS } from "./helpers/engine.js";
import { makeStore, STORE_KINDS, type TestStore } from "./helpers/stores.js";

const TOKEN = "reports-admin-token";
const MIN = 60_000;
const HOUR = 60 * MIN;
const DAY = 24 * HOUR;
const T0 = Date.UTC(2026, 2, 2, 0, 0, 0);
const iso = (t: number) => new Date(t).toISOString();

let seq = 0;
const uniq = (p: string) => `${p}-${++seq}-${Date.now().toString(36)}`;

/** One automation, four fates by context.mode: ok → completed, fan → a fan-out over context.items, fail → failed, wait → a day's delay. */
function fates(key: string) {
  return {
    key,
    name: key,
    root: "mode",
    nodes: [
      {
        key: "mode",
        kind: "switch",
        config: {
          cases: [
            { port: "fan", condition: "context.mode == 'fan'" },
            { port: "fail", condition: "context.mode == 'fail'" },
            { port: "wait", condition: "context.mode == 'wait'" },
          ],
        },
      },
      { key: "fan", kind: "for_each", config: { items: "context.items", action: { kind: "rep.item", config: { fail: "{{ item.fail }}" } } } },
      { key: "fail", kind: "set", config: { assign: { x: "context.nothing.here" } } },
      { key: "wait", kind: "delay", config: { duration_ms: DAY } },
      { key: "done", kind: "end" },
    ],
    edges: [
      { from: "mode", port: "fan", to: "fan" },
      { from: "mode", port: "fail", to: "fail" },
      { from: "mode", port: "wait", to: "wait" },
      { from: "mode", port: "default", to: "done" },
      { from: "fan", port: "next", to: "done" },
      { from: "fail", port: "next", to: "done" },
      { from: "wait", port: "next", to: "done" },
    ],
  };
}

interface OutcomeRow {
  automation_id: string;
  runs: Record<string, number>;
  items: Record<string, number>;
}
interface Overview {
  overdue_runs: number;
  overdue_schedules: number;
  queue_depth: { due_runs: number; undispatched_events: number };
  oldest_due_run: { id: string; due_at: string } | null;
  window_ms: number;
  failed_runs: { automation_id: string; in_window: number; last_hour: number; spike: boolean }[];
}

describe.each(STORE_KINDS)("reports and the ops overview (%s store)", (kind) => {
  let ts: TestStore;
  let clock: ManualClock;
  let engine: Engine;
  let api: Api;
  let errors: unknown[];

  beforeEach(async () => {
    ts = await makeStore(kind);
    clock = new ManualClock(T0);
    errors = [];
  });
  afterEach(async () => {
    await api?.close();
    await engine?.stop();
    await ts.destroy();
    expect(errors).toEqual([]);
  });

  async function boot(opts: Partial<EngineOptions> = {}): Promise<void> {
    engine = new Engine({ httpAllow: LOOPBACK, store: ts.store, clock, ...opts, runner: { leaseMs: 30_000, pollMs: 20, ...opts.runner } });
    engine.registerAction(
      defineAction({
        kind: "rep.item",
        handler(input: { fail?: unknown }) {
          if (input.fail === true) throw new Error("this item fails");
          return { done: true };
        },
      }),
    );
    engine.events.on("engine:error", (e) => errors.push(e));
    await engine.start();
    api = await startApi(engine, TOKEN);
  }

  async function create(definition: Record<string, unknown>): Promise<string> {
    const res = await api.call<{ id: string }>("POST", "/v1/automations", { definition });
    expect(res.status, JSON.stringify(res.body)).toBe(201);
    return res.body.id;
  }

  /** Start a run at the clock's current time and wait until it ends (or parks, for `wait`). */
  async function runAt(automationId: string, context: Record<string, unknown>): Promise<Run> {
    const { run } = await engine.enroll(WS, automationId, { context_overrides: context });
    expect(run.started_at).toBe(clock.now());
    return engine.waitForRun(WS, run.id, (r) => r.completed_at !== null || r.status === "waiting");
  }

  const items = (...fails: boolean[]) => fails.map((fail, i) => ({ id: `s${i}`, fail }));

  it("outcomes: per automation, runs by status and items by outcome, only for runs started in [from, to)", async () => {
    await boot();
    const a = await create(fates(uniq("rep-a")));
    const b = await create(fates(uniq("rep-b")));
    const from = T0 + DAY;
    const to = from + 6 * HOUR;

    // Before the range: counted nowhere.
    clock.set(from - HOUR);
    expect((await runAt(a, { mode: "ok" })).status).toBe("completed");
    expect((await runAt(b, { mode: "fan", items: items(true, true) })).status).toBe("completed_with_failures");
    clock.set(from - 1);
    expect((await runAt(a, { mode: "fail" })).status).toBe("failed");

    // In the range.
    clock.set(from); // exactly `from`: counted
    expect((await runAt(a, { mode: "ok" })).status).toBe("completed");
    clock.advance(10 * MIN);
    expect((await runAt(a, { mode: "ok" })).status).toBe("completed");
    expect((await runAt(a, { mode: "fan", items: items(false, true, false) })).status).toBe("completed_with_failures");
    clock.advance(HOUR);
    expect((await runAt(a, { mode: "fail" })).status).toBe("failed");
    const waiting = await runAt(a, { mode: "wait" });
    expect(waiting.status).toBe("waiting");
    expect((await engine.controlRun(WS, waiting.id, "stop", "test")).status).toBe("exited");
    expect((await runAt(b, { mode: "ok" })).status).toBe("completed");
    clock.advance(2 * HOUR);
    expect((await runAt(b, { mode: "fail" })).status).toBe("failed");
    expect((await runAt(b, { mode: "fail" })).status).toBe("failed");
    expect((await runAt(b, { mode: "fan", items: items(true, false, true, false) })).status).toBe("completed_with_failures");
    clock.set(to - 1);
    expect((await runAt(b, { mode: "fan", items: items(false) })).status).toBe("completed");

    // At `to` and after: not counted.
    clock.set(to);
    expect((await runAt(b, { mode: "ok" })).status).toBe("completed");
    clock.advance(HOUR);
    expect((await runAt(b, { mode: "fan", items: items(false, false, true) })).status).toBe("completed_with_failures");
    expect((await runAt(a, { mode: "fail" })).status).toBe("failed");

    const res = await api.call<{ from: string; to: string; items: OutcomeRow[] }>(
      "GET",
      `/v1/reports/outcomes?from=${encodeURIComponent(iso(from))}&to=${encodeURIComponent(iso(to))}`,
    );
    expect(res.status, JSON.stringify(res.body)).toBe(200);
    expect(res.body.from).toBe(iso(from));
    expect(res.body.to).toBe(iso(to));
    const byId = new Map(res.body.items.map((r) => [r.automation_id, r]));
    expect(byId.size).toBe(2);
    expect(byId.get(a)).toEqual({
      automation_id: a,
      runs: { completed: 2, completed_with_failures: 1, failed: 1, exited: 1 },
      items: { succeeded: 2, failed: 1 },
    });
    expect(byId.get(b)).toEqual({
      automation_id: b,
      runs: { completed: 2, completed_with_failures: 1, failed: 2 },
      items: { succeeded: 3, failed: 2 },
    });

    // A range with nothing in it: no rows.
    const empty = await api.call<{ items: OutcomeRow[] }>(
      "GET",
      `/v1/reports/outcomes?from=${encodeURIComponent(iso(T0))}&to=${encodeURIComponent(iso(T0 + HOUR))}`,
    );
    expect(empty.status).toBe(200);
    expect(empty.body.items).toEqual([]);
  });

  it("outcomes: from ≥ to is 400 pointing at /from; a missing or malformed bound is 400 request.invalid", async () => {
    await boot();
    const q = (s: string) => api.call("GET", `/v1/reports/outcomes${s}`);
    for (const [f, t] of [
      [T0 + HOUR, T0],
      [T0, T0],
    ]) {
      const res = await q(`?from=${encodeURIComponent(iso(f!))}&to=${encodeURIComponent(iso(t!))}`);
      expect(res.status).toBe(400);
      expect(res.body.error?.code).toBe("request.invalid");
      expect(res.body.error?.details.pointer).toBe("/from");
    }
    const missing = await q(`?to=${encodeURIComponent(iso(T0))}`);
    expect(missing.status).toBe(400);
    expect(missing.body.error?.code).toBe("request.invalid");
    expect(missing.body.error?.details.pointer).toBe("/from");
    const noTo = await q(`?from=${encodeURIComponent(iso(T0))}`);
    expect(noTo.status).toBe(400);
    expect(noTo.body.error?.details.pointer).toBe("/to");
    const bad = await q(`?from=yesterday&to=${encodeURIComponent(iso(T0))}`);
    expect(bad.status).toBe(400);
    expect(bad.body.error?.code).toBe("request.invalid");
    expect(bad.body.error?.details.pointer).toBe("/from");
  });

  it("overview: overdue runs and schedules, queue depth, undispatched events, the oldest due run", async () => {
    await boot({ noRunner: true }); // nothing claims, dispatches or fires: the queue only grows
    const plain = await create({
      key: uniq("ops-plain"),
      name: "plain",
      root: "note",
      nodes: [{ key: "note", kind: "set", config: { assign: { ok: "true" } } }],
    });
    await create({
      key: uniq("ops-cron"),
      name: "cron",
      triggers: [{ type: "schedule", cron: "*/5 * * * *" }],
      root: "note",
      nodes: [{ key: "note", kind: "set", config: { assign: { ok: "true" } } }],
    });
    const idle = await api.call<Overview>("GET", "/v1/ops/overview");
    expect(idle.body).toMatchObject({
      overdue_runs: 0,
      overdue_schedules: 0,
      queue_depth: { due_runs: 0, undispatched_events: 0 },
      oldest_due_run: null,
      failed_runs: [],
    });
    const first = (await engine.enroll(WS, plain, {})).run;
    clock.advance(MIN);
    await engine.enroll(WS, plain, {});
    clock.advance(MIN);
    await engine.enroll(WS, plain, {});
    await engine.ingest(WS, { type: "ops.noise", key: "n1" });
    await engine.ingest(WS, { type: "ops.noise", key: "n2" });

    // At T0 + 2 min: the first run is more than the 60 s grace late; the schedule (T0 + 5 min) is not due.
    let o = await api.call<Overview>("GET", "/v1/ops/overview");
    expect(o.status, JSON.stringify(o.body)).toBe(200);
    expect(o.body).toMatchObject({
      overdue_runs: 1,
      overdue_schedules: 0,
      queue_depth: { due_runs: 3, undispatched_events: 2 },
      oldest_due_run: { id: first.id, due_at: iso(T0) },
      window_ms: DAY,
      failed_runs: [],
    });

    clock.set(T0 + 10 * MIN);
    o = await api.call<Overview>("GET", "/v1/ops/overview?window_hours=2");
    expect(o.status).toBe(200);
    expect(o.body).toMatchObject({
      overdue_runs: 3,
      overdue_schedules: 1,
      queue_depth: { due_runs: 3, undispatched_events: 2 },
      oldest_due_run: { id: first.id, due_at: iso(T0) },
      window_ms: 2 * HOUR,
      failed_runs: [],
    });
    // The same numbers as the overdue view.
    const overdue = await api.call<{ overdue_runs: number; overdue_schedules: number }>("GET", "/v1/ops/overdue");
    expect(overdue.body).toMatchObject({ overdue_runs: 3, overdue_schedules: 1 });

    const bad = await api.call("GET", "/v1/ops/overview?window_hours=0");
    expect(bad.status).toBe(400);
    expect(bad.body.error?.code).toBe("request.invalid");
  });

  it("overview: a failure spike is flagged (6 in the last hour, none before); failures spread over 24 h or over a high baseline are not", async () => {
    await boot();
    const failing = (k: string) =>
      create({
        key: uniq(k),
        name: k,
        root: "boom",
        nodes: [{ key: "boom", kind: "set", config: { assign: { x: "context.nothing.here" } } }],
      });
    const spiky = await failing("spiky");
    const steady = await failing("steady");
    const busy = await failing("busy");
    const NOW = T0 + 2 * DAY;
    const failAt = async (automationId: string, at: number, n = 1) => {
      clock.set(at);
      const runs = await Promise.all(Array.from({ length: n }, () => runAt(automationId, {})));
      for (const r of runs) {
        expect(r.status).toBe("failed");
        expect(r.completed_at).toBe(at);
      }
    };
    // Chronologically (the clock only moves forward while runs are driven).
    // steady: six failures spread over the day, one of them in the last hour.
    // busy: 42 failures over the day before its last hour, then 6 (48 in the window, 2/h on average): 6 is not over 3 × 2.
    const plan: [string, number, number][] = [];
    for (const h of [23, 19, 15, 11, 7]) plan.push([steady, NOW - h * HOUR + 5 * MIN, 1]);
    plan.push([steady, NOW - 20 * MIN, 1]);
    for (let h = 23; h >= 3; h--) plan.push([busy, NOW - h * HOUR + 10 * MIN, 2]);
    plan.push([busy, NOW - 30 * MIN, 6]);
    plan.push([spiky, NOW - 40 * MIN, 3], [spiky, NOW - 10 * MIN, 3]);
    plan.sort((x, y) => x[1] - y[1]);
    for (const [id, at, n] of plan) await failAt(id, at, n);
    clock.set(NOW);

    const o = await api.call<Overview>("GET", "/v1/ops/overview?window_hours=24");
    expect(o.status).toBe(200);
    const by = new Map(o.body.failed_runs.map((f) => [f.automation_id, f]));
    expect(by.get(spiky)).toEqual({ automation_id: spiky, in_window: 6, last_hour: 6, spike: true });
    expect(by.get(steady)).toEqual({ automation_id: steady, in_window: 6, last_hour: 1, spike: false });
    expect(by.get(busy)).toEqual({ automation_id: busy, in_window: 48, last_hour: 6, spike: false });
    expect(o.body.failed_runs).toHaveLength(3);

    // Over a one-hour window, the same six are the whole window: 6 is not over 3 × 6.
    const short = await api.call<Overview>("GET", "/v1/ops/overview?window_hours=1");
    expect(short.body.failed_runs.find((f) => f.automation_id === spiky)).toEqual({ automation_id: spiky, in_window: 6, last_hour: 6, spike: false });
  });
});
