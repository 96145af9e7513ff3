// Schedule triggers: cron with a time zone (croner), fired exactly once per tick across any
// number of processes: the tick's event (unique key automation/trigger/tick) and the row's next
// fire time are written in one transaction over rows locked with SKIP LOCKED.
//
// Catch-up after downtime (per trigger, `catch_up`):
//   latest (default) — fire once, for the most recent missed tick;
//   all              — fire every missed tick (at most MAX_CATCH_UP per round; the rest next round);
//   none             — skip missed ticks; fire only a tick less than TICK_GRACE_MS late.
// Until they fire, late schedule rows count in the overdue view.

import { Cron } from "croner";
import { crashPoint, crashPointSync } from "./crashpoints.js";
import type { Definition } from "../model/definition.js";
import type { Clock } from "./clock.js";
import type { EngineEmitter } from "./events.js";
import { shardOf } from "./intake.js";
import { newId } from "./ids.js";
import { LoopingTask } from "./loop.js";
import type { NewEvent, ScheduleRow, Store } from "./store.js";

export const MAX_CATCH_UP = 1000;
export const TICK_GRACE_MS = 60_000;

const crons = new Map<string, Cron>();
function cronOf(pattern: string, tz: string): Cron {
  const k = `${pattern}\u0000${tz}`;
  let c = crons.get(k);
  if (!c) crons.set(k, (c = new Cron(pattern, { timezone: tz, paused: true })));
  return c;
}

/** The first tick strictly after `after`, or null if the pattern never fires again. */
export function nextTick(pattern: string, tz: string, after: number): number | null {
  const d = cronOf(pattern, tz).nextRun(new Date(after));
  return d ? d.getTime() : null;
}

/** Schedule rows for a version's schedule triggers (next fire after `now`, or none while paused). */
export function scheduleRows(automationId: string, workspaceId: string, def: Definition, active: boolean, now: number): ScheduleRow[] {
  const rows: ScheduleRow[] = [];
  def.triggers.forEach((t, i) => {
    if (t.type !== "schedule") return;
    const tz = t.timezone ?? "UTC";
    rows.push({
      automation_id: automationId, trigger_index: i, workspace_id: workspaceId, cron: t.cron, timezone: tz,
      catch_up: t.catch_up ?? "latest", next_fire_at: active ? nextTick(t.cron, tz, now) : null, last_fired_at: null,
    });
  });
  return rows;
}

/** Decide the events and next fire times for due rows (pure given `now`). */
export function fireDue(due: ScheduleRow[], now: number): { events: NewEvent[]; next: { automation_id: string; trigger_index: number; next_fire_at: number | null }[] } {
  const events: NewEvent[] = [];
  const next: { automation_id: string; trigger_index: number; next_fire_at: number | null }[] = [];
  for (const row of due) {
    const ticks: number[] = [];
    let t: number | null = row.next_fire_at;
    let following: number | null = null;
    while (t !== null && t <= now) {
      ticks.push(t);
      t = nextTick(row.cron, row.timezone, t);
      if (row.catch_up === "all" && ticks.length >= MAX_CATCH_UP) break;
    }
    following = t;
    let fire: number[];
    if (row.catch_up === "all") fire = ticks;
    else if (row.catch_up === "none") fire = ticks.filter((x) => now - x <= TICK_GRACE_MS).slice(-1);
    else fire = ticks.slice(-1);
    for (const tick of fire) {
      const at = new Date(tick).toISOString();
      const body = { type: "schedule", automation_id: row.automation_id, trigger_index: row.trigger_index, scheduled_for: at, subject_id: null, payload: { cron: row.cron, timezone: row.timezone, late_ms: now - tick } };
      events.push({
        id: newId("evt", now), workspace_id: row.workspace_id, source: "schedule", idempotency_key: `${row.automation_id}/${row.trigger_index}/${at}`,
        payload_hash: `schedule:${at}`, type: "schedule", name: row.automation_id, subject_id: null, body: body as NewEvent["body"],
        shard: shardOf(row.workspace_id, "schedule", row.automation_id), received_at: now,
      });
    }
    next.push({ automation_id: row.automation_id, trigger_index: row.trigger_index, next_fire_at: following });
  }
  return { events, next };
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
  /** Fire everything due now; returns the number of tick events stored. */
  async once(): Promise<number> {
    const now = this.clock.now();
    const n = await this.store.fireSchedules(now, 100, (due) => {
      const fired = fireDue(due, now);
      if (due.length > 0) crashPointSync("scheduler:inside-transaction");
      return fired;
    });
    if (n > 0) await crashPoint("scheduler:after-commit");
    if (n > 0) {
      this.events.emit("schedule:fired", { events: n });
      this.onFired();
    }
    return n;
  }
}
