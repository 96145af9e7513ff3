// Schedule triggers: cron with a time zone (croner), fired exactly once per tick across any
// number of processes. Each round reads the due rows, works out outside any transaction which ticks
// to fire and the next fire time, then in one short transaction advances each row only if it
// still holds the next_fire_at that was read (compare-and-set) and stores the tick events of the
// rows it advanced (unique key automation/trigger/tick): a row another process fired meanwhile is
// left alone.
//
// Catch-up after downtime (per trigger, `catch_up`):
//   latest (default) — fire once, for the most recent missed tick;
//   all              — fire every missed tick (at most MAX_CATCH_UP per round; the rest next round);
//   none             — skip missed ticks; fire only a tick less than TICK_GRACE_MS late.
// `latest` and `none` never walk the missed ticks: they need only the last tick at or before now
// and the one after it, so the work does not grow with the length of the downtime.
// Until they fire, late schedule rows count in the overdue view.

import { Cron } from "croner";
import { crashPoint, crashPointSync } from "./crashpoints.js";
import type { Definition } from "../model/definition.js";
import type { Clock } from "./clock.js";
import type { EngineEmitter } from "./events.js";
import { shardOf } from "./intake.js";
import { newId } from "./ids.js";
import { LoopingTask } from "./loop.js";
import type { NewEvent, ScheduleFiring, ScheduleRow, Store } from "./store.js";

export const MAX_CATCH_UP = 1000;
export const TICK_GRACE_MS = 60_000;
/** Due rows handled per round. */
const BATCH = 100;

const crons = new Map<string, Cron>();
function cronOf(pattern: string, tz: string): Cron {
  const k = `${pattern}\u0000${tz}`;
  let c = crons.get(k);
  if (!c) crons.set(k, (c = new Cron(pattern, { timezone: tz, paused: true })));
  return c;
}

let cronSearches = 0;
/** How many tick searches croner has been asked for so far (a test's handle on the work per catch-up). */
export function cronSearchCount(): number {
  return cronSearches;
}

/** The first tick strictly after `after`, or null if the pattern never fires again. */
export function nextTick(pattern: string, tz: string, after: number): number | null {
  cronSearches++;
  const d = cronOf(pattern, tz).nextRun(new Date(after));
  return d ? d.getTime() : null;
}

/** croner's own backward search for the last tick at or before `at`; null when it has none or fails. */
function previousTickGuess(pattern: string, tz: string, at: number): number | null {
  cronSearches++;
  try {
    // previousRuns looks strictly before its reference, to the second: start one second later
    const d = cronOf(pattern, tz).previousRuns(1, new Date(Math.floor(at / 1000) * 1000 + 1000))[0];
    return d ? d.getTime() : null;
  } catch {
    return null; // croner's backward search throws on some patterns; the bisection below covers them
  }
}

/**
 * The last tick at or before `now`, given a tick `from` ≤ now, and the tick after it, as a walk
 * forward from `from` would find them. croner's backward search is tried first and checked against
 * its forward search (the one every other decision uses: the two disagree around daylight-saving
 * gaps); when the check fails, a bisection over whole seconds for where nextTick passes `now` lands
 * on a forward tick close to now, and a few forward steps from it finish the job — about 40
 * searches at most, whatever the gap.
 */
export function lastTickAtOrBefore(pattern: string, tz: string, from: number, now: number): { last: number | null; following: number | null } {
  const guess = previousTickGuess(pattern, tz, now);
  if (guess !== null && guess >= from && guess <= now && nextTick(pattern, tz, guess - 1000) === guess) {
    const following = nextTick(pattern, tz, guess);
    if (following === null || following > now) return { last: guess, following };
  }
  let lo = Math.floor(from / 1000) - 1;
  let tick = nextTick(pattern, tz, lo * 1000);
  if (tick === null || tick > now) return { last: null, following: tick }; // no tick in [from, now]
  let hi = Math.floor(now / 1000); // ticks are whole seconds: nextTick(hi s) > now
  while (hi - lo > 1) {
    const mid = Math.floor((lo + hi) / 2);
    const n = nextTick(pattern, tz, mid * 1000);
    if (n === null || n > now) hi = mid;
    else [lo, tick] = [mid, n];
  }
  // `tick` is a forward tick ≤ now; a daylight-saving gap can leave one more before now.
  for (;;) {
    const n = nextTick(pattern, tz, tick);
    if (n === null || n > now) return { last: tick, following: n };
    tick = n;
  }
}

/** Schedule rows for a version's schedule triggers (next fire after `now`, or none while paused). */
export function scheduleRows(automationId: string, workspaceId: string, def: Definition, active: boolean, now: number): ScheduleRow[] {
  const rows: ScheduleRow[] = [];
  def.triggers.forEach((t, i) => {
    if (t.type !== "schedule") return;
    const tz = t.timezone ?? "UTC";
    rows.push({
      automation_id: automationId,
      trigger_index: i,
      workspace_id: workspaceId,
      cron: t.cron,
      timezone: tz,
      catch_up: t.catch_up ?? "latest",
      next_fire_at: active ? nextTick(t.cron, tz, now) : null,
      last_fired_at: null,
    });
  });
  return rows;
}

/** The ticks a due row fires at `now` under its catch-up policy, and its next fire time. */
export function ticksToFire(row: ScheduleRow, now: number): { ticks: number[]; next_fire_at: number | null } {
  const first = row.next_fire_at;
  if (first === null || first > now) return { ticks: [], next_fire_at: first };
  if (row.catch_up === "all") {
    // Every missed tick, oldest first, bounded by the cap; the rest fire next round.
    const ticks: number[] = [];
    let t: number | null = first;
    while (t !== null && t <= now && ticks.length < MAX_CATCH_UP) {
      ticks.push(t);
      t = nextTick(row.cron, row.timezone, t);
    }
    return { ticks, next_fire_at: t };
  }
  const { last, following } = lastTickAtOrBefore(row.cron, row.timezone, first, now);
  const fire = last !== null && (row.catch_up !== "none" || now - last <= TICK_GRACE_MS);
  return { ticks: fire ? [last] : [], next_fire_at: following };
}

/** Plan the firing of due rows (pure given `now`): each row's tick events and its next fire time. */
export function fireDue(due: readonly ScheduleRow[], now: number): ScheduleFiring[] {
  return due.map((row) => {
    const { ticks, next_fire_at } = ticksToFire(row, now);
    return {
      automation_id: row.automation_id,
      trigger_index: row.trigger_index,
      expected_next_fire_at: row.next_fire_at!,
      next_fire_at,
      events: ticks.map((tick) => tickEvent(row, tick, now)),
    };
  });
}

function tickEvent(row: ScheduleRow, tick: number, now: number): NewEvent {
  const at = new Date(tick).toISOString();
  const body = {
    type: "schedule",
    automation_id: row.automation_id,
    trigger_index: row.trigger_index,
    scheduled_for: at,
    subject_id: null,
    payload: { cron: row.cron, timezone: row.timezone, late_ms: now - tick },
  };
  return {
    id: newId("evt", now),
    workspace_id: row.workspace_id,
    source: "schedule",
    idempotency_key: `${row.automation_id}/${row.trigger_index}/${at}`,
    payload_hash: `schedule:${at}`,
    type: "schedule",
    name: row.automation_id,
    subject_id: null,
    body: body as NewEvent["body"],
    shard: shardOf(row.workspace_id, "schedule", row.automation_id),
    received_at: now,
  };
}

export class Scheduler extends LoopingTask {
  constructor(
    private readonly store: Store,
    private readonly clock: Clock,
    private readonly events: EngineEmitter,
    pollMs: number,
    private readonly onFired: () => void,
  ) {
    super("schedule", events, pollMs);
  }
  protected async round(): Promise<boolean> {
    return (await this.once()) > 0;
  }
  /** The round in flight (once and the loop's rounds run one at a time). */
  private inFlight: Promise<unknown> = Promise.resolve();

  /**
   * One round: fire the due schedules. Rounds run one at a time, so a tick's round and the loop's
   * never plan against the same due schedules at once (the second sees what the first fired).
   * Returns the number of tick events stored.
   */
  once(): Promise<number> {
    const next = this.inFlight.then(
      () => this.fireRound(),
      () => this.fireRound(),
    );
    this.inFlight = next.catch(() => undefined);
    return next;
  }

  private async fireRound(): Promise<number> {
    const now = this.clock.now();
    const due = await this.store.dueSchedules(now, BATCH);
    if (due.length === 0) return 0;
    // The ticks are worked out here, before the transaction, which only compares and writes.
    const firings = fireDue(due, now);
    const n = await this.store.fireSchedules(now, firings, () => crashPointSync("scheduler:inside-transaction"));
    if (n > 0) await crashPoint("scheduler:after-commit");
    if (n > 0) {
      this.events.emit("schedule:fired", { events: n });
      this.onFired();
    }
    return n;
  }
}
