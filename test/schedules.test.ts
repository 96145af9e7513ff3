// Schedule triggers under a ManualClock, fired by engine.tick(): cron in a time zone across a DST
// change, catch-up after downtime (latest / all / none) with the overdue view meanwhile, paused
// automations, and (PostgreSQL) two engines ticking the same schedule concurrently — every tick
// fires exactly once.

import type { AddressInfo } from "node:net";
import { request } from "undici";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { ManualClock } from "../src/engine/clock.js";
import type { Engine, EngineOptions } from "../src/engine/engine.js";
import type { Run, Store } from "../src/engine/store.js";
import { buildApp } from "../src/server/app.js";
import { EmbeddedStore } from "../src/store/embedded/index.js";
import { PostgresStore } from "../src/store/postgres/index.js";
import { startEngine, WS } from "./helpers/engine.js";
import { makeStore, STORE_KINDS, type TestStore } from "./helpers/stores.js";
import { until } from "./helpers/wait.js";

const MIN = 60_000;
const HOUR = 60 * MIN;
const DAY = 24 * HOUR;

interface ScheduleEvent {
  id: string;
  idempotency_key: string;
  scheduled_for: string;
}

/** The schedule events stored for one automation, oldest first, straight from the database. */
async function scheduleEvents(store: Store, automationId: string): Promise<ScheduleEvent[]> {
  let rows: { id: string; idempotency_key: string; body: unknown }[];
  if (store instanceof PostgresStore) {
    rows = (
      await store.pool.query("SELECT id, idempotency_key, body FROM events WHERE type = 'schedule' AND name = $1 ORDER BY received_at, id", [automationId])
    ).rows;
  } else if (store instanceof EmbeddedStore) {
    rows = (
      store.db.prepare("SELECT id, idempotency_key, body FROM events WHERE type = 'schedule' AND name = ? ORDER BY received_at, id").all(automationId) as {
        id: string;
        idempotency_key: string;
        body: string;
      }[]
    ).map((r) => ({ ...r, body: JSON.parse(r.body) as unknown }));
  } else {
    throw new Error("unknown store");
  }
  return rows.map((r) => ({ id: r.id, idempotency_key: r.idempotency_key, scheduled_for: (r.body as { scheduled_for: string }).scheduled_for }));
}

async function allRuns(engine: Engine, automationId: string): Promise<Run[]> {
  const out: Run[] = [];
  let cursor: string | undefined;
  for (;;) {
    const page = await engine.listRuns({ workspace_id: WS, automation_id: automationId, limit: 500, ...(cursor ? { cursor } : {}) });
    out.push(...page.items);
    if (!page.next_cursor) return out;
    cursor = page.next_cursor;
  }
}

async function completedRuns(engine: Engine, automationId: string, n: number): Promise<Run[]> {
  return until(`${n} completed runs`, async () => {
    const runs = await allRuns(engine, automationId);
    return runs.length === n && runs.every((r) => r.status === "completed") ? runs : null;
  });
}

let seq = 0;
function scheduled(cron: string, extra: Record<string, unknown> = {}) {
  const key = `sched-${++seq}`;
  return {
    key,
    name: key,
    triggers: [{ type: "schedule", cron, ...extra }],
    root: "stamp",
    nodes: [
      { key: "stamp", kind: "set", config: { assign: { at: "event.scheduled_for" } } },
      { key: "done", kind: "end" },
    ],
    edges: [{ from: "stamp", port: "next", to: "done" }],
  };
}

/** Engine options for clock-driven tests: only tick() fires schedules; leases never lapse as the clock jumps. */
const manual = (store: Store, clock: ManualClock): EngineOptions => ({
  store,
  clock,
  schedulePollMs: HOUR,
  dispatchPollMs: HOUR,
  runner: { leaseMs: 30 * DAY },
});

describe.each(STORE_KINDS)("schedules (%s store)", (kind) => {
  let ts: TestStore;
  const engines: Engine[] = [];
  let errors: unknown[] = [];

  beforeEach(async () => {
    ts = await makeStore(kind);
  });
  afterEach(async () => {
    for (const e of engines.splice(0)) await e.stop();
    await ts.destroy();
    expect(errors).toEqual([]);
    errors = [];
  });

  async function engineOn(store: Store, clock: ManualClock): Promise<Engine> {
    const e = await startEngine(manual(store, clock));
    e.events.on("engine:error", (x) => errors.push(x));
    engines.push(e);
    return e;
  }

  it("cron 0 9 * * * in Europe/Oslo fires at 08:00Z in winter and 07:00Z in summer, across the March 2026 change", async () => {
    const clock = new ManualClock(Date.parse("2026-03-26T12:00:00Z"));
    const engine = await engineOn(ts.store, clock);
    const a = await engine.createAutomation(WS, scheduled("0 9 * * *", { timezone: "Europe/Oslo" }));
    expect((await ts.store.listSchedules(a.id))[0]!.next_fire_at).toBe(Date.parse("2026-03-27T08:00:00Z"));

    // Walk the clock an hour at a time for five days, ticking at every step.
    while (clock.now() < Date.parse("2026-03-31T12:00:00Z")) {
      clock.advance(HOUR);
      await engine.tick();
    }
    const expected = [
      "2026-03-27T08:00:00.000Z", // Friday, CET (UTC+1)
      "2026-03-28T08:00:00.000Z", // Saturday, CET
      "2026-03-29T07:00:00.000Z", // Sunday: clocks went forward at 01:00Z, CEST (UTC+2)
      "2026-03-30T07:00:00.000Z",
      "2026-03-31T07:00:00.000Z",
    ];
    const events = await scheduleEvents(ts.store, a.id);
    expect(events.map((e) => e.scheduled_for)).toEqual(expected);
    expect(events.map((e) => e.idempotency_key)).toEqual(expected.map((t) => `${a.id}/0/${t}`));

    // Each tick's run saw its own scheduled time.
    const runs = await completedRuns(engine, a.id, expected.length);
    const byEvent = new Map(runs.map((r) => [r.event_id, r]));
    for (const e of events) {
      const r = byEvent.get(e.id)!;
      expect(r.trigger_type).toBe("schedule");
      expect(r.context).toEqual({ at: e.scheduled_for });
      expect((await engine.getEvent(WS, e.id)).body).toMatchObject({ type: "schedule", automation_id: a.id, scheduled_for: e.scheduled_for });
    }
  });

  it("and back at 08:00Z after the October 2026 change", async () => {
    const clock = new ManualClock(Date.parse("2026-10-23T12:00:00Z"));
    const engine = await engineOn(ts.store, clock);
    const a = await engine.createAutomation(WS, scheduled("0 9 * * *", { timezone: "Europe/Oslo" }));
    while (clock.now() < Date.parse("2026-10-27T12:00:00Z")) {
      clock.advance(HOUR);
      await engine.tick();
    }
    expect((await scheduleEvents(ts.store, a.id)).map((e) => e.scheduled_for)).toEqual([
      "2026-10-24T07:00:00.000Z", // Saturday, CEST
      "2026-10-25T08:00:00.000Z", // Sunday: back to CET at 01:00Z
      "2026-10-26T08:00:00.000Z",
      "2026-10-27T08:00:00.000Z",
    ]);
  });

  it("catch-up after a 3-day downtime: latest → 1 event, all → 3, none → 0; overdue reports the schedules until they fire", async () => {
    const t0 = Date.parse("2026-02-02T00:00:00Z");
    const clock = new ManualClock(t0);
    const engine = await engineOn(ts.store, clock);
    const latest = await engine.createAutomation(WS, scheduled("0 12 * * *", { catch_up: "latest" }));
    const all = await engine.createAutomation(WS, scheduled("0 12 * * *", { catch_up: "all" }));
    const none = await engine.createAutomation(WS, scheduled("0 12 * * *", { catch_up: "none" }));
    const dflt = await engine.createAutomation(WS, scheduled("0 12 * * *"));
    const ids = [latest.id, all.id, none.id, dflt.id];

    // Nothing is due yet.
    await engine.tick();
    expect(await engine.overdue(WS)).toEqual([]);

    // Three days pass without a tick (the engine is effectively down): 12:00Z on the 2nd, 3rd and 4th are missed.
    clock.set(t0 + 3 * DAY);
    const overdue = await engine.overdue(WS);
    expect(overdue.map((o) => o.automation_id).sort()).toEqual([...ids].sort());
    for (const o of overdue) {
      expect(o.schedules).toBeGreaterThan(0);
      expect(o.runs).toBe(0);
      expect(o.oldest_due_at).toBe(Date.parse("2026-02-02T12:00:00Z"));
    }
    // The same over HTTP.
    const app = buildApp({ engine, adminToken: "sched-token" });
    await app.listen({ host: "127.0.0.1", port: 0 });
    try {
      const res = await request(`http://127.0.0.1:${(app.server.address() as AddressInfo).port}/v1/ops/overdue`, {
        headers: { authorization: "Bearer sched-token" },
      });
      expect(res.statusCode).toBe(200);
      const body = (await res.body.json()) as { overdue_schedules: number; by_automation: { automation_id: string; schedules: number }[] };
      expect(body.overdue_schedules).toBe(4);
      expect(body.by_automation.map((b) => b.automation_id).sort()).toEqual([...ids].sort());
    } finally {
      await app.close();
    }

    await engine.tick();
    // one catch-up round stores its events with the same received_at: order by scheduled time
    const fired = async (id: string) => (await scheduleEvents(ts.store, id)).map((e) => e.scheduled_for).sort();
    expect(await fired(latest.id)).toEqual(["2026-02-04T12:00:00.000Z"]);
    expect(await fired(all.id)).toEqual(["2026-02-02T12:00:00.000Z", "2026-02-03T12:00:00.000Z", "2026-02-04T12:00:00.000Z"]);
    expect(await fired(none.id)).toEqual([]);
    expect(await fired(dflt.id)).toEqual(["2026-02-04T12:00:00.000Z"]); // latest is the default
    // Every row moved on to the next tick: nothing is overdue any more.
    for (const id of ids) expect((await ts.store.listSchedules(id))[0]!.next_fire_at).toBe(Date.parse("2026-02-05T12:00:00Z"));
    await completedRuns(engine, all.id, 3);
    await completedRuns(engine, latest.id, 1);
    expect(await engine.overdue(WS)).toEqual([]);

    // On time again (30 s late): every policy fires that tick.
    clock.set(Date.parse("2026-02-05T12:00:30Z"));
    await engine.tick();
    for (const id of ids) expect((await fired(id)).at(-1)).toBe("2026-02-05T12:00:00.000Z");
    expect(await fired(none.id)).toEqual(["2026-02-05T12:00:00.000Z"]);

    // Five minutes late: `none` skips it, the others fire it once.
    clock.set(Date.parse("2026-02-06T12:05:00Z"));
    await engine.tick();
    expect(await fired(none.id)).toEqual(["2026-02-05T12:00:00.000Z"]);
    expect(await fired(latest.id)).toEqual(["2026-02-04T12:00:00.000Z", "2026-02-05T12:00:00.000Z", "2026-02-06T12:00:00.000Z"]);
    expect(await fired(all.id)).toHaveLength(5);
  });

  it("a paused automation's schedule neither fires nor counts as overdue; activation resumes from now without a burst", async () => {
    const t0 = Date.parse("2026-05-04T00:00:00Z");
    const clock = new ManualClock(t0);
    const engine = await engineOn(ts.store, clock);
    const a = await engine.createAutomation(WS, scheduled("0 * * * *", { catch_up: "all" }));
    await engine.setStatus(WS, a.id, "paused");
    clock.advance(5 * HOUR + 30 * MIN);
    await engine.tick();
    expect(await scheduleEvents(ts.store, a.id)).toEqual([]);
    expect(await engine.overdue(WS)).toEqual([]);
    await engine.setStatus(WS, a.id, "active");
    await engine.tick();
    expect(await scheduleEvents(ts.store, a.id)).toEqual([]);
    clock.advance(31 * MIN);
    await engine.tick();
    expect((await scheduleEvents(ts.store, a.id)).map((e) => e.scheduled_for)).toEqual(["2026-05-04T06:00:00.000Z"]);
  });
});

describe.skipIf(!STORE_KINDS.includes("postgres"))("schedules across two engines (postgres store)", () => {
  let ts: TestStore;
  const engines: Engine[] = [];
  const errors: unknown[] = [];

  beforeEach(async () => {
    ts = await makeStore("postgres");
  });
  afterEach(async () => {
    for (const e of engines.splice(0)) await e.stop();
    await ts.destroy();
    expect(errors).toEqual([]);
  });

  it("two engines ticking */15 concurrently in 1–7 minute steps across a day: 96 events, 96 runs, no tick twice", async () => {
    const day = Date.parse("2026-06-10T00:00:00Z");
    const clock = new ManualClock(day - 1000);
    const e1 = await startEngine(manual(ts.store, clock));
    const e2 = await startEngine(manual(ts.reopen(), clock));
    engines.push(e1, e2);
    let firedByEngines = 0;
    for (const e of [e1, e2]) {
      e.events.on("engine:error", (x) => errors.push(x));
      e.events.on("schedule:fired", (p) => (firedByEngines += p.events));
    }
    const a = await e1.createAutomation(WS, scheduled("*/15 * * * *"));

    let steps = 0;
    const end = day + DAY - 1000; // the last tick of the day is 23:45; 24:00 is not reached
    while (clock.now() < end) {
      const step = (1 + Math.floor(Math.random() * 7)) * MIN;
      clock.set(Math.min(end, clock.now() + step));
      await Promise.all([e1.tick(), e2.tick()]);
      steps++;
    }

    const expected = Array.from({ length: 96 }, (_, i) => new Date(day + i * 15 * MIN).toISOString());
    const events = await scheduleEvents(ts.store, a.id);
    expect(new Set(events.map((e) => e.scheduled_for)).size).toBe(96);
    expect(events.map((e) => e.scheduled_for).sort()).toEqual(expected);
    // Each tick was fired by exactly one engine (a second firing would be counted here even
    // though the event's unique key would have absorbed it).
    expect(firedByEngines).toBe(96);

    let last: Run[] = [];
    const runs = await until(
      "96 completed runs",
      async () => {
        const rs = (last = await allRuns(e1, a.id));
        return rs.length >= 96 && rs.every((r) => r.status === "completed") ? rs : null;
      },
      // Generous: on a loaded machine the day of ticks alone can take a minute (a bound against a hang, not a budget).
      180_000,
    ).catch(async (err) => {
      const evs = await scheduleEvents(ts.store, a.id);
      const undispatched = (await Promise.all(evs.map((e) => ts.store.getEvent(WS, e.id)))).filter((e) => e && e.dispatched_at === null);
      const by = (xs: string[]) => Object.entries(xs.reduce<Record<string, number>>((m, x) => ({ ...m, [x]: (m[x] ?? 0) + 1 }), {}));
      throw new Error(
        `${err.message}: ${last.length} runs ${JSON.stringify(by(last.map((r) => `${r.status}/${r.exit_reason}`)))}; undispatched events ${undispatched.length}; errors ${errors
          .map((e) => String((e as { error?: unknown }).error))
          .slice(0, 3)
          .join(" | ")}`,
      );
    });
    expect(runs).toHaveLength(96);
    expect(new Set(runs.map((r) => r.event_id))).toEqual(new Set(events.map((e) => e.id)));
    expect(new Set(runs.map((r) => (r.context as { at: string }).at)).size).toBe(96);
    console.log(`[schedules 2 engines] ${steps} clock steps`);
  }, 360_000);
});
