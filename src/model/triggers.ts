// Trigger matching: which automations an event starts. Pure; decided before any run row exists,
// so an update that changes only unwatched fields creates nothing.

import type { TriggerDef } from "./definition.js";
import { CelScope, evaluateCondition } from "./expressions.js";
import { StepFailure } from "./errors.js";
import { canonical } from "./canonical.js";

/** An event as triggers see it (CONTRACT.md § POST /events). */
export interface TriggerEvent {
  type: "record" | "event" | "webhook" | "schedule" | string;
  name?: string | null;
  subject_id?: string | null;
  entity?: string | null;
  record_id?: string | null;
  op?: "created" | "updated" | "deleted" | null;
  before?: Record<string, unknown> | null;
  after?: Record<string, unknown> | null;
  payload?: unknown;
  /** For webhooks: the hook the event came in on. */
  hook_id?: string | null;
}

export type MatchResult = { matched: true } | { matched: false; why: string } | { matched: false; why: "filter_error"; error: string };

function sameValue(a: unknown, b: unknown): boolean {
  if (a === b) return true;
  if (a === undefined || b === undefined || a === null || b === null) return a === b || (a ?? null) === (b ?? null);
  if (typeof a !== "object" || typeof b !== "object") return false;
  return canonical(a) === canonical(b);
}

/** The watched fields that changed between before and after (all watched fields for created/deleted). */
export function changedFields(fields: readonly string[], before: Record<string, unknown> | null | undefined, after: Record<string, unknown> | null | undefined): string[] {
  return fields.filter((f) => !sameValue(before?.[f], after?.[f]));
}

function filterHolds(filter: string, event: TriggerEvent): boolean {
  return evaluateCondition(filter, new CelScope({ event, context: {}, steps: {}, subject: { id: event.subject_id ?? null }, run: {}, secrets: {} }));
}

export function matchTrigger(t: TriggerDef, e: TriggerEvent): MatchResult {
  try {
    switch (t.type) {
      case "record": {
        if (e.type !== "record") return { matched: false, why: "type" };
        if (e.entity !== t.entity) return { matched: false, why: "entity" };
        if (!e.op || !t.on.includes(e.op)) return { matched: false, why: "op" };
        if (e.op === "updated" && t.fields && t.fields.length > 0 && changedFields(t.fields, e.before, e.after).length === 0) {
          return { matched: false, why: "unwatched_fields" };
        }
        if (t.filter === undefined) return { matched: true };
        if (!filterHolds(t.filter, e)) return { matched: false, why: "filter" };
        if ((t.filter_mode ?? "every_time") === "becomes_true" && e.op === "updated") {
          // Fire only on the change that makes the filter true: evaluate it against the record as it was.
          let before = false;
          try {
            before = filterHolds(t.filter, { ...e, after: e.before ?? {} });
          } catch {
            before = false; // a field missing before the change: the filter did not hold then
          }
          if (before) return { matched: false, why: "already_true" };
        }
        return { matched: true };
      }
      case "event":
        if (e.type !== "event" || e.name !== t.name) return { matched: false, why: "name" };
        if (t.filter !== undefined && !filterHolds(t.filter, e)) return { matched: false, why: "filter" };
        return { matched: true };
      case "webhook":
        return e.type === "webhook" ? { matched: true } : { matched: false, why: "type" };
      case "schedule":
        return { matched: false, why: "schedule_fires_itself" };
    }
  } catch (err) {
    const msg = err instanceof StepFailure ? `${err.error.code}: ${err.error.message}` : String(err);
    return { matched: false, why: "filter_error", error: msg };
  }
}

/** What a re-synced schedule row needs of its old row (the same fields as the store's row). */
export interface ScheduleTimes {
  cron: string;
  timezone: string;
  next_fire_at: number | null;
  last_fired_at: number | null;
}

/**
 * A schedule re-synced on a new version or a status change keeps its pending next fire time while
 * its cron and zone are unchanged and it was and stays active (so a re-save neither skips nor
 * repeats a tick, and a due tick stays due); otherwise it takes the fresh one (a new cron starts
 * from now; a paused one has none). Its last fire time always carries over.
 */
export function resyncedSchedule<R extends ScheduleTimes>(old: ScheduleTimes | undefined, fresh: R): R {
  const keep = old !== undefined && old.cron === fresh.cron && old.timezone === fresh.timezone && fresh.next_fire_at !== null && old.next_fire_at !== null;
  return { ...fresh, next_fire_at: keep ? old.next_fire_at : fresh.next_fire_at, last_fired_at: old?.last_fired_at ?? null };
}
