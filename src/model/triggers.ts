// Trigger matching: which automations an event starts. Pure; decided before any run row exists,
// so an update that changes only unwatched fields creates nothing.

import type { TriggerDef } from "./definition.js";
import { CelScope, DEFAULT_BUDGET, evaluateCondition, type Budget } from "./expressions.js";
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

/**
 * Why a trigger did or did not take an event, as a code and the facts behind it (the event
 * explanation shows these). matchTrigger() is this verdict reduced to what the dispatcher needs.
 */
export type TriggerVerdict =
  | { matched: true }
  | { matched: false; code: "trigger_kind_differs"; expected: string; got: string }
  | { matched: false; code: "event_name_differs"; expected: string; got: string | null }
  | { matched: false; code: "entity_or_op_differs"; expected: { entity: string; ops: string[] }; got: { entity: string | null; op: string | null } }
  | { matched: false; code: "watched_fields_unchanged"; fields: { field: string; before: unknown; after: unknown }[] }
  | { matched: false; code: "filter_false"; filter: string; value: false; mode?: "becomes_true" }
  | { matched: false; code: "filter_error"; filter: string; error: string }
  | { matched: false; code: "schedule_fires_itself" };

function sameValue(a: unknown, b: unknown): boolean {
  if (a === b) return true;
  if (a === undefined || b === undefined || a === null || b === null) return a === b || (a ?? null) === (b ?? null);
  if (typeof a !== "object" || typeof b !== "object") return false;
  return canonical(a) === canonical(b);
}

/** The watched fields that changed between before and after (all watched fields for created/deleted). */
export function changedFields(
  fields: readonly string[],
  before: Record<string, unknown> | null | undefined,
  after: Record<string, unknown> | null | undefined,
): string[] {
  return fields.filter((f) => !sameValue(before?.[f], after?.[f]));
}

function filterHolds(filter: string, event: TriggerEvent, budget: Readonly<Budget>): boolean {
  return evaluateCondition(filter, new CelScope({ event, context: {}, steps: {}, subject: { id: event.subject_id ?? null }, run: {}, secrets: {} }, budget));
}

/** Whether the trigger takes the event (the dispatcher's rule), with the reason when it does not. */
export function matchTrigger(t: TriggerDef, e: TriggerEvent, budget: Readonly<Budget> = DEFAULT_BUDGET): MatchResult {
  const v = triggerVerdict(t, e, budget);
  if (v.matched) return v;
  return v.code === "filter_error" ? { matched: false, why: "filter_error", error: v.error } : { matched: false, why: v.code };
}

/** `budget`: the workspace's expression budget the filter is evaluated under (workspaceBudget()). */
export function triggerVerdict(t: TriggerDef, e: TriggerEvent, budget: Readonly<Budget> = DEFAULT_BUDGET): TriggerVerdict {
  const filter = "filter" in t ? t.filter : undefined;
  try {
    switch (t.type) {
      case "record": {
        if (e.type !== "record") return { matched: false, code: "trigger_kind_differs", expected: "record", got: e.type };
        if (e.entity !== t.entity || !e.op || !t.on.includes(e.op)) {
          return {
            matched: false,
            code: "entity_or_op_differs",
            expected: { entity: t.entity, ops: [...t.on] },
            got: { entity: e.entity ?? null, op: e.op ?? null },
          };
        }
        if (e.op === "updated" && t.fields && t.fields.length > 0 && changedFields(t.fields, e.before, e.after).length === 0) {
          return {
            matched: false,
            code: "watched_fields_unchanged",
            fields: t.fields.map((f) => ({ field: f, before: e.before?.[f] ?? null, after: e.after?.[f] ?? null })),
          };
        }
        if (t.filter === undefined) return { matched: true };
        if (!filterHolds(t.filter, e, budget)) return { matched: false, code: "filter_false", filter: t.filter, value: false };
        if ((t.filter_mode ?? "every_time") === "becomes_true" && e.op === "updated") {
          // Fire only on the change that makes the filter true: evaluate it against the record as it was.
          let before = false;
          try {
            before = filterHolds(t.filter, { ...e, after: e.before ?? {} }, budget);
          } catch {
            before = false; // a field missing before the change: the filter did not hold then
          }
          if (before) return { matched: false, code: "filter_false", filter: t.filter, value: false, mode: "becomes_true" };
        }
        return { matched: true };
      }
      case "event":
        if (e.type !== "event") return { matched: false, code: "trigger_kind_differs", expected: "event", got: e.type };
        if (e.name !== t.name) return { matched: false, code: "event_name_differs", expected: t.name, got: e.name ?? null };
        if (t.filter !== undefined && !filterHolds(t.filter, e, budget)) return { matched: false, code: "filter_false", filter: t.filter, value: false };
        return { matched: true };
      case "webhook":
        return e.type === "webhook" ? { matched: true } : { matched: false, code: "trigger_kind_differs", expected: "webhook", got: e.type };
      case "schedule":
        return { matched: false, code: "schedule_fires_itself" };
    }
  } catch (err) {
    const msg = err instanceof StepFailure ? `${err.error.code}: ${err.error.message}` : String(err);
    return { matched: false, code: "filter_error", filter: String(filter ?? ""), error: msg };
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

/** How close a non-matching verdict came: the explanation reports the closest trigger's reason. */
const CLOSENESS: Record<string, number> = {
  schedule_fires_itself: 0,
  not_addressed: 0,
  trigger_kind_differs: 1,
  event_name_differs: 2,
  entity_or_op_differs: 2,
  watched_fields_unchanged: 3,
  filter_false: 4,
  filter_error: 5,
};

export type AutomationVerdict = TriggerVerdict | { matched: false; code: "not_addressed"; automation_id: string | null };

/**
 * Whether an automation takes an event (the dispatcher's rule): a webhook or schedule event is
 * addressed to one automation by its hook or schedule row; any other event is taken when one of
 * the triggers matches. Not taken: the reason of the trigger that came closest.
 */
export function automationVerdict(
  automationId: string,
  triggers: readonly TriggerDef[],
  e: TriggerEvent & { automation_id?: string | null },
  budget: Readonly<Budget> = DEFAULT_BUDGET,
): AutomationVerdict {
  if (e.type === "webhook" || e.type === "schedule") {
    return e.automation_id === automationId ? { matched: true } : { matched: false, code: "not_addressed", automation_id: e.automation_id ?? null };
  }
  let best: AutomationVerdict | null = null;
  for (const t of triggers) {
    const v = triggerVerdict(t, e, budget);
    if (v.matched) return v;
    if (best === null || (!best.matched && CLOSENESS[v.code]! > CLOSENESS[best.code]!)) best = v;
  }
  return best ?? { matched: false, code: "trigger_kind_differs", expected: "none (enrollment only)", got: e.type };
}
