// Schedule catch-up without walking the missed ticks, outside the firing transaction; the
// compare-and-set that keeps each tick to one event; the re-sync rule for next_fire_at.
// A ManualClock drives engine.tick(); the work is measured in croner searches, not in time.

import { Cron } from "croner";
import net, { type AddressInfo } from "node:net";
import pg from "pg";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { ManualClock } from "../src/engine/clock.js";
import type { Engine, EngineOptions } from "../src/engine/engine.js";
import { cronSearchCount, fireDue, lastTickAtOrBefore, MAX_CATCH_UP, nextTick, scheduleRows, TICK_GRACE_MS } from "../src/engine/scheduler.js";
import type { Definition } from "../src/model/definition.js";
import type { ScheduleFiring, Store } from "../src/engine/store.js";
import { EmbeddedStore } from "../src/store/embedded/index.js";
import { PostgresStore, type PostgresStoreOptions } from "../src/store/postgres/index.js";
import { loadConfig } from "../src/server/config.js";
import { openStore } from "../src/server/open-store.js";
import { startEngine, WS } from "./helpers/engine.js";
import { makeStore, PG_URL, STORE_KINDS, type TestStore } from "./helpers/stores.js";
import { until } from "./helpers/wait.js";

const HOUR = 3_600_000;
const DAY = 24 * HOUR;

/** Every search croner is asked to make (forward or backward), counted at croner's own entry points. */
let croner = 0;
for (const m of ["nextRun", "previousRuns"] as const) {
  const orig = Cron.prototype[m] as (...a: unknown[]) => unknown;
  (Cron.prototype as unknown as Record<string, unknown>)[m] = function (this: Cron, ...a: unknown[]) {
    croner++;
    return orig.apply(this, a);
  };
}

async function scheduleTicks(store: Store, automationId: string): Promise<{ at: string; late_ms: number }[]> {
  let bodies: unknown[];
  if (store instanceof PostgresStore) {
    bodies = (await store.pool.query("SELECT body FROM events WHERE type = 'schedule' AND name = $1", [automationId])).rows.map((r) => r.body as unknown);
  } else if (store instanceof EmbeddedStore) {
    bodies = (store.db.prepare("SELECT body FROM events WHERE type = 'schedule' AND name = ?").all(automationId) as { body: string }[]).map(
      (r) => JSON.parse(r.body) as unknown,
    );
  } else {
    throw new Error("unknown store");
  }
  return bodies
    .map((b) => b as { scheduled_for: string; payload: { late_ms: number } })
    .map((b) => ({ at: b.scheduled_for, late_ms: b.payload.late_ms }))
    .sort((x, y) => x.at.localeCompare(y.at));
}

let seq = 0;
function everySecond(catchUp: string, cron = "* * * * * *") {
  const key = `rs-${++seq}`;
  return {
    key,
    name: key,
    triggers: [{ type: "schedule", cron, catch_up: catchUp }],
    root: "s",
    nodes: [{ key: "s", kind: "set", config: { assign: { ok: "true" } } }],
  };
}

const manual = (store: Store, clock: ManualClock): EngineOptions => ({
  store,
  clock,
  schedulePollMs: HOUR,
  dispatchPollMs: HOUR,
  runner: { leaseMs: 30 * DAY },
});

describe.each(STORE_KINDS)("schedule catch-up (%s store)", (kind) => {
  let ts: TestStore;
  let engine: Engine | undefined;
  let clock: ManualClock | undefined;
  // A fresh list per test: a stopped engine's last claims may still report into the previous one.
  let errors: unknown[] = [];

  beforeEach(async () => {
    ts = await makeStore(kind);
    errors = [];
  });
  afterEach(async () => {
    await engine?.stop();
    engine = undefined;
    clock = undefined;
    await ts.destroy();
    expect(errors.map((x) => String((x as { error?: unknown }).error))).toEqual([]);
  });

  async function engineOn(store: Store, clock: ManualClock): Promise<Engine> {
    engine = await startEngine(manual(store, clock));
    const mine = errors;
    engine.events.on("engine:error", (x) => mine.push(x));
    return engine;
  }

  /** Croner searches made by one tick after the clock jumps `gap` past a per-second schedule's first tick. */
  async function catchUpAfter(
    catchUp: string,
    gap: number,
  ): Promise<{ searches: number; ticks: { at: string; late_ms: number }[]; next: number | null; now: number }> {
    const t0 = Date.parse("2026-04-01T00:00:00Z");
    clock ??= new ManualClock(t0);
    const e = engine ?? (await engineOn(ts.store, clock));
    clock.set(t0);
    const a = await e.createAutomation(WS, everySecond(catchUp));
    // The new schedule woke the scheduler's own loop: let that round end before the clock jumps,
    // so the rounds counted here are the tick's alone (the loop fires a backlog round after round).
    await until("the scheduler's loop to sleep", async () => e.schedulerIdle || null);
    const now = t0 + gap + 400; // mid-second: the last tick is 400 ms old
    clock.set(now);
    const before = croner;
    await e.tick();
    const searches = croner - before;
    return { searches, ticks: await scheduleTicks(ts.store, a.id), next: (await ts.store.listSchedules(a.id))[0]!.next_fire_at, now };
  }

  it("latest: a per-second cron one day behind fires exactly the last tick, sets the next one, with as few searches as after an hour", async () => {
    const day = await catchUpAfter("latest", DAY);
    const lastTick = Math.floor(day.now / 1000) * 1000;
    expect(day.ticks).toEqual([{ at: new Date(lastTick).toISOString(), late_ms: 400 }]);
    expect(day.next).toBe(lastTick + 1000);
    // The old walk asked croner once per missed second (86,400 times here).
    expect(day.searches).toBeLessThanOrEqual(5);
    const hour = await catchUpAfter("latest", HOUR);
    expect(hour.ticks).toHaveLength(1);
    expect(hour.searches).toBe(day.searches);
  });

  it("none: a day behind, no late tick fires (only the current one, under the grace), and the next fire is right", async () => {
    const day = await catchUpAfter("none", DAY);
    const lastTick = Math.floor(day.now / 1000) * 1000;
    expect(day.ticks.every((t) => t.late_ms <= TICK_GRACE_MS)).toBe(true);
    expect(day.ticks).toEqual([{ at: new Date(lastTick).toISOString(), late_ms: 400 }]);
    expect(day.next).toBe(lastTick + 1000);
    expect(day.searches).toBeLessThanOrEqual(5);

    // An hourly schedule five minutes late fires nothing and moves on to the next hour.
    const t0 = Date.parse("2026-04-03T00:00:00Z");
    clock!.set(t0);
    const a = await engine!.createAutomation(WS, everySecond("none", "0 0 * * * *"));
    clock!.set(t0 + 2 * DAY + 5 * 60_000);
    await engine!.tick();
    expect(await scheduleTicks(ts.store, a.id)).toEqual([]);
    expect((await ts.store.listSchedules(a.id))[0]!.next_fire_at).toBe(t0 + 2 * DAY + HOUR);
  });

  it("all: a day behind, one round fires the capped number of oldest ticks and the next round continues from there", async () => {
    const day = await catchUpAfter("all", DAY);
    const t0 = Date.parse("2026-04-01T00:00:00Z");
    expect(day.ticks).toHaveLength(MAX_CATCH_UP);
    expect(day.ticks[0]!.at).toBe(new Date(t0 + 1000).toISOString());
    expect(day.ticks.at(-1)!.at).toBe(new Date(t0 + MAX_CATCH_UP * 1000).toISOString());
    expect(day.next).toBe(t0 + (MAX_CATCH_UP + 1) * 1000);
    expect(day.searches).toBeLessThanOrEqual(MAX_CATCH_UP + 1);
  });

  it("the firing transaction contains no tick computation: every croner search is made before it begins", async () => {
    const t0 = Date.parse("2026-04-04T00:00:00Z");
    const clock = new ManualClock(t0);
    const seen: { atEntry: number; inside: number; firings: readonly ScheduleFiring[] }[] = [];
    const real = ts.store;
    const watched = new Proxy(real, {
      get(target, prop) {
        if (prop === "fireSchedules") {
          return (now: number, firings: readonly ScheduleFiring[], inside?: () => void) => {
            const rec = { atEntry: cronSearchCount(), inside: -1, firings };
            seen.push(rec);
            return target.fireSchedules(now, firings, () => {
              rec.inside = cronSearchCount();
              inside?.();
            });
          };
        }
        const v = Reflect.get(target, prop, target) as unknown;
        return typeof v === "function" ? (v as (...a: unknown[]) => unknown).bind(target) : v;
      },
    }) as Store;
    const e = await engineOn(watched, clock);
    await e.createAutomation(WS, everySecond("latest"));
    await e.createAutomation(WS, everySecond("all"));
    clock.set(t0 + DAY);
    await e.tick();
    // The scheduler's own loop may fire in a round of its own beside the tick's: every firing
    // transaction is checked, and together they fire each schedule once.
    const firing = seen.filter((r) => r.firings.length > 0);
    expect(firing.length).toBeGreaterThanOrEqual(1);
    expect(firing.flatMap((r) => r.firings.map((f) => f.events.length)).sort((x, y) => x - y)).toEqual([1, MAX_CATCH_UP]);
    for (const r of firing) expect(r.inside).toBe(r.atEntry);
  });

  it("a firing planned from a row that has moved on stores nothing: the compare-and-set keeps each tick to one event", async () => {
    const t0 = Date.parse("2026-04-05T00:00:00Z");
    const clock = new ManualClock(t0);
    const e = await engineOn(ts.store, clock);
    const a = await e.createAutomation(WS, everySecond("latest"));
    const now = t0 + 10_000;
    // Two processes read the same due row and plan the same firing.
    const due = await ts.store.dueSchedules(now, 10);
    expect(due.map((r) => r.automation_id)).toEqual([a.id]);
    const first = fireDue(due, now);
    const second = fireDue(due, now);
    expect(await ts.store.fireSchedules(now, first)).toBe(1);
    expect(await ts.store.fireSchedules(now, second)).toBe(0);
    expect(await scheduleTicks(ts.store, a.id)).toHaveLength(1);
    expect((await ts.store.listSchedules(a.id))[0]).toMatchObject({ next_fire_at: now + 1000, last_fired_at: now });
  });

  it("re-sync (both stores, one rule): same cron keeps an overdue next fire time; another cron starts from now; paused has none", async () => {
    const t0 = Date.parse("2026-04-06T00:00:00Z");
    const clock = new ManualClock(t0);
    const e = await engineOn(ts.store, clock);
    const a = await e.createAutomation(WS, everySecond("latest", "0 0 * * * *"));
    expect((await ts.store.listSchedules(a.id))[0]!.next_fire_at).toBe(t0 + HOUR);
    // Three hours later, not yet fired (the engine was down): the store re-syncs the rows directly.
    const now = t0 + 3 * HOUR + 1000;
    const rows = (cron: string, active: boolean) =>
      scheduleRows(a.id, WS, { triggers: [{ type: "schedule", cron, catch_up: "latest" }] } as unknown as Definition, active, now);
    await ts.store.syncSchedules(a.id, rows("0 0 * * * *", true));
    expect((await ts.store.listSchedules(a.id))[0]!.next_fire_at).toBe(t0 + HOUR);
    await ts.store.syncSchedules(a.id, rows("0 30 * * * *", true));
    expect((await ts.store.listSchedules(a.id))[0]!.next_fire_at).toBe(t0 + 3 * HOUR + 30 * 60_000);
    await ts.store.syncSchedules(a.id, rows("0 30 * * * *", false));
    expect((await ts.store.listSchedules(a.id))[0]!.next_fire_at).toBeNull();
    // Back to active: from now, not from the old pending time.
    await ts.store.syncSchedules(a.id, rows("0 30 * * * *", true));
    expect((await ts.store.listSchedules(a.id))[0]!.next_fire_at).toBe(t0 + 3 * HOUR + 30 * 60_000);
  });
});

describe("the last tick at or before now (pure)", () => {
  /** The answer by walking forward tick by tick, as the scheduler used to. */
  function walked(cron: string, tz: string, from: number, now: number): { last: number | null; following: number | null } {
    let last: number | null = null;
    let t: number | null = from;
    while (t !== null && t <= now) {
      last = t;
      t = nextTick(cron, tz, t);
    }
    return { last, following: t };
  }

  it("agrees with a forward walk where croner's backward search is wrong or throws (DST gaps, L, W, #)", () => {
    const cases: [string, string, string, string][] = [
      ["30 2 * * *", "Europe/Oslo", "2026-03-27T00:00:00Z", "2026-03-29T03:49:53.693Z"], // 02:30 does not exist that night
      ["30 2 * * *", "America/New_York", "2026-03-06T00:00:00Z", "2026-03-08T09:00:00Z"],
      ["30 1 * * *", "Europe/Oslo", "2026-10-23T00:00:00Z", "2026-10-25T05:00:00Z"], // 01:30 happens twice
      ["0 0 L * *", "UTC", "2026-01-01T00:00:00Z", "2026-07-15T12:00:00Z"],
      ["0 0 15W * *", "Asia/Kolkata", "2026-01-01T00:00:00Z", "2026-08-20T00:00:00Z"],
      ["0 0 * * 1#2", "Australia/Lord_Howe", "2026-01-01T00:00:00Z", "2026-11-30T00:00:00Z"],
      ["0 0 * * 5L", "UTC", "2026-01-01T00:00:00Z", "2026-12-01T00:00:00Z"],
      ["*/7 * * * * *", "UTC", "2026-01-01T00:00:00Z", "2026-01-01T01:00:00.250Z"],
    ];
    for (const [cron, tz, fromIso, nowIso] of cases) {
      const from = nextTick(cron, tz, Date.parse(fromIso))!;
      const now = Date.parse(nowIso);
      expect(lastTickAtOrBefore(cron, tz, from, now), `${cron} ${tz} at ${nowIso}`).toEqual(walked(cron, tz, from, now));
    }
  });

  it("finds no tick when none lies between the row's next fire time and now", () => {
    const from = Date.parse("2026-05-01T12:00:00Z");
    expect(lastTickAtOrBefore("0 0 12 * * *", "UTC", from, from - 1)).toEqual({ last: null, following: from });
  });
});

describe.skipIf(!STORE_KINDS.includes("postgres"))("PostgreSQL pool timeouts", () => {
  let ts: TestStore;
  const extra: PostgresStore[] = [];
  beforeEach(async () => {
    ts = await makeStore("postgres");
  });
  afterEach(async () => {
    for (const s of extra.splice(0)) await s.close().catch(() => undefined);
    await ts.destroy();
  });

  const storeWith = (opts: Partial<PostgresStoreOptions>): PostgresStore => {
    const s = new PostgresStore({ url: PG_URL, schema: (ts.store as PostgresStore).schema, ...opts });
    extra.push(s);
    return s;
  };

  it("a statement blocked by a lock another connection holds fails with the statement timeout instead of hanging", async () => {
    const holder = new pg.Client({ connectionString: PG_URL });
    await holder.connect();
    try {
      await holder.query("BEGIN");
      await holder.query(`LOCK TABLE ${(ts.store as PostgresStore).schema}.schedules IN ACCESS EXCLUSIVE MODE`);
      const s = storeWith({ statementTimeoutMs: 300 });
      const err = (await s.dueSchedules(Date.now(), 10).then(
        () => null,
        (e: unknown) => e,
      )) as { code?: string; message?: string } | null;
      expect(err?.code).toBe("57014"); // query_canceled
      expect(err?.message).toMatch(/statement timeout/);
    } finally {
      await holder.query("ROLLBACK").catch(() => undefined);
      await holder.end();
    }
  });

  it("a session left idle inside a transaction is ended by the server", async () => {
    const s = storeWith({ idleInTransactionTimeoutMs: 200 });
    const c = await s.pool.connect();
    const pid = (await c.query("SELECT pg_backend_pid() AS pid")).rows[0].pid as number;
    await c.query("BEGIN");
    const watcher = new pg.Client({ connectionString: PG_URL });
    await watcher.connect();
    try {
      await until(
        "the idle-in-transaction session to be ended",
        async () => (await watcher.query("SELECT 1 FROM pg_stat_activity WHERE pid = $1", [pid])).rowCount === 0 || null,
        20_000,
      );
      await expect(c.query("SELECT 1")).rejects.toThrow();
    } finally {
      c.release(true);
      await watcher.end();
    }
  });

  it("connecting to a server that never answers fails after the connect timeout", async () => {
    const silent = net.createServer(() => undefined); // accepts, never speaks
    await new Promise<void>((r) => silent.listen(0, "127.0.0.1", () => r()));
    try {
      const port = (silent.address() as AddressInfo).port;
      const s = new PostgresStore({ url: `postgres://postgres@127.0.0.1:${port}/test`, connectTimeoutMs: 300 });
      extra.push(s);
      await expect(s.dueSchedules(Date.now(), 10)).rejects.toThrow(/timeout/i);
    } finally {
      silent.close();
    }
  });

  it("the settings reach the store: defaults on, each configurable, 0 turns one off", () => {
    const cfg = loadConfig({
      WEFT_DATABASE_URL: PG_URL,
      WEFT_PG_CONNECT_TIMEOUT_MS: "1500",
      WEFT_PG_STATEMENT_TIMEOUT_MS: "0",
      WEFT_PG_IDLE_TX_TIMEOUT_MS: "2500",
    });
    expect(cfg.pg).toEqual({ connectTimeoutMs: 1500, statementTimeoutMs: 0, idleInTransactionTimeoutMs: 2500 });
    const dflt = loadConfig({ WEFT_DATABASE_URL: PG_URL }).pg;
    for (const v of Object.values(dflt)) expect(v).toBeGreaterThan(0);
    expect(() => loadConfig({ WEFT_PG_STATEMENT_TIMEOUT_MS: "soon" })).toThrow(/WEFT_PG_STATEMENT_TIMEOUT_MS/);
    const s = openStore(cfg) as PostgresStore;
    extra.push(s);
    const o = s.pool.options as unknown as Record<string, unknown>;
    expect(o).toMatchObject({ connectionTimeoutMillis: 1500, idle_in_transaction_session_timeout: 2500 });
    expect(o.statement_timeout).toBeFalsy();
  });
});
