// "Why didn't my automation fire?" For one stored event: every automation of its workspace that
// could have taken it, whether it did (the run) and, if not, why — decided by the dispatcher's own
// matching rule (model/triggers.ts), the run rows the dispatcher made (skips are `exited` runs
// with their reason), and whether any process that dispatches is alive.

import type { TriggerDef } from "../model/definition.js";
import type { Budget } from "../model/cel-budget.js";
import { automationVerdict, type AutomationVerdict, type TriggerEvent } from "../model/triggers.js";
import { eventMayRunAs, runAsUser } from "./identity.js";
import { workspaceBudget } from "./workspace-settings.js";
import type { FlowMembership } from "./flow-intake.js";
import { isWorkerRole, type Automation, type EventFilter, type LiveProcess, type Run, type Store, type StoredEvent } from "./store.js";

export type EventReasonCode =
  | "taken"
  | "automation_paused"
  | "trigger_kind_differs"
  | "event_name_differs"
  | "entity_or_op_differs"
  | "watched_fields_unchanged"
  | "filter_false"
  | "subject_paused"
  | "reentry_cooldown"
  | "already_active"
  | "not_yet_dispatched"
  | "event_undeliverable"
  | "run_as_not_allowed"
  | "changed_since_dispatch"
  | FlowReasonCode;

export interface AutomationAnswer {
  automation_id: string;
  key: string;
  name: string;
  /** The version the reason was decided on (the current one; the run's own when there is a run). */
  version: number;
  taken: boolean;
  run_id: string | null;
  run_status: string | null;
  code: EventReasonCode;
  reason: string;
  /** The facts behind the code: names, entity and op, watched fields with before and after, the filter and its value or error. */
  details: Record<string, unknown>;
}

export interface EventExplanation {
  event_id: string;
  type: string;
  name: string | null;
  subject_id: string | null;
  received_at: string;
  dispatched_at: string | null;
  dispatched: boolean;
  /** Who posted it (user id, or `system` for the library; null for webhook, schedule and outbox events) and with which token. */
  actor: string | null;
  token_id: string | null;
  /** Set when its dispatch failed WEFT_QUARANTINE_AFTER times (dispatch skips it until replayed), with why. */
  undeliverable_at: string | null;
  undeliverable_reason: string | null;
  dropped_at: string | null;
  /** Whether a process that dispatches (role worker or all) is alive now. */
  dispatcher_alive: boolean;
  summary: string;
  automations: AutomationAnswer[];
}

export interface EventExplainInput {
  event: StoredEvent;
  /** The workspace's automations, each with the triggers and the run-as user (null: not a user) of its current version. */
  automations: { automation: Automation; triggers: readonly TriggerDef[]; runAsUser?: string | null }[];
  /** The runs the dispatcher created for the event. */
  runs: Run[];
  processes: LiveProcess[];
  /** The workspace's expression budget, as the dispatcher evaluates filters under it (default: the engine's). */
  budget?: Budget;
  /** The debounce and batch windows the event joined (store.eventFlow). */
  flow?: FlowMembership[];
}

const iso = (t: number) => new Date(t).toISOString();
const SKIPS = new Set(["subject_paused", "reentry_cooldown", "already_active"]);
const show = (v: unknown) => JSON.stringify(v ?? null);

/** An automation could have taken the event when it is addressed to it, or it has a trigger of a kind events start. */
function couldTake(e: StoredEvent, a: Automation, triggers: readonly TriggerDef[]): boolean {
  const body = e.body as TriggerEvent & { automation_id?: string };
  if (e.type === "webhook" || e.type === "schedule") return body.automation_id === a.id;
  return triggers.some((t) => t.type === "record" || t.type === "event");
}

export function explainEvent(x: EventExplainInput): EventExplanation {
  const e = x.event;
  const dispatcherAlive = x.processes.some((p) => isWorkerRole(p.role));
  const automations = x.automations
    .filter((c) => couldTake(e, c.automation, c.triggers) || x.runs.some((r) => r.automation_id === c.automation.id))
    .map((c) => answer(x, c.automation, c.triggers, dispatcherAlive, c.runAsUser ?? null));
  const taken = automations.filter((a) => a.taken).length;
  let summary: string;
  if (e.dropped_at !== null) {
    summary = `Received at ${iso(e.received_at)}; undeliverable (${e.undeliverable_reason ?? "?"}) and dropped at ${iso(e.dropped_at)}: it starts nothing.`;
  } else if (e.undeliverable_at !== null) {
    summary = `Received at ${iso(e.received_at)}; undeliverable since ${iso(e.undeliverable_at)}: ${e.undeliverable_reason ?? "?"}. Dispatch skips it until a member replays it (POST /v1/events/${e.id}/replay) or drops it.`;
  } else if (e.dispatched_at === null) {
    summary = dispatcherAlive
      ? `Received at ${iso(e.received_at)}; not dispatched yet (a worker is alive and will take it shortly).`
      : `Received at ${iso(e.received_at)}; not dispatched: no worker alive to dispatch it. Start one (weft serve --role worker, or weft start) on this store.`;
  } else {
    summary = `Dispatched at ${iso(e.dispatched_at)}: ${taken} of ${automations.length} automation(s) that could take it started a run.`;
  }
  return {
    event_id: e.id,
    type: e.type,
    name: e.name,
    subject_id: e.subject_id,
    received_at: iso(e.received_at),
    dispatched_at: e.dispatched_at === null ? null : iso(e.dispatched_at),
    dispatched: e.dispatched_at !== null,
    actor: e.actor,
    token_id: e.token_id,
    undeliverable_at: e.undeliverable_at === null ? null : iso(e.undeliverable_at),
    undeliverable_reason: e.undeliverable_reason,
    dropped_at: e.dropped_at === null ? null : iso(e.dropped_at),
    dispatcher_alive: dispatcherAlive,
    summary,
    automations,
  };
}

function answer(x: EventExplainInput, a: Automation, triggers: readonly TriggerDef[], dispatcherAlive: boolean, runAs: string | null): AutomationAnswer {
  const base = { automation_id: a.id, key: a.key, name: a.name, version: a.current_version, taken: false, run_id: null, run_status: null, details: {} };
  const held = (x.flow ?? []).find((m) => m.automation_id === a.id);
  if (held) return { ...base, ...flowAnswer(held, x.event.id) };
  const run = x.runs.find((r) => r.automation_id === a.id);
  if (run) {
    const at = { ...base, version: run.version, run_id: run.id, run_status: run.status };
    if (run.status === "exited" && SKIPS.has(run.exit_reason ?? "")) {
      return { ...at, code: run.exit_reason as EventReasonCode, reason: skipReason(run) };
    }
    return { ...at, taken: true, code: "taken", reason: `It took the event: run ${run.id} (${run.status}).` };
  }
  if (x.event.dispatched_at === null && x.event.undeliverable_at !== null) {
    return {
      ...base,
      code: "event_undeliverable",
      reason: `The event is undeliverable (${x.event.undeliverable_reason ?? "?"}): dispatch skips it${x.event.dropped_at === null ? " until a member replays it" : "; it was dropped"}.`,
      details: { dispatch_attempts: x.event.dispatch_attempts, dropped: x.event.dropped_at !== null },
    };
  }
  if (x.event.dispatched_at === null) {
    const who = dispatcherAlive ? "a worker is alive and will dispatch it shortly" : "no worker alive to dispatch it";
    return { ...base, code: "not_yet_dispatched", reason: `The event has not been dispatched yet: ${who}.`, details: { dispatcher_alive: dispatcherAlive } };
  }
  if (a.status === "paused") {
    return { ...base, code: "automation_paused", reason: "The automation is paused: it takes no new runs (activate it to take later events)." };
  }
  const v = automationVerdict(a.id, triggers, x.event.body as TriggerEvent & { automation_id?: string }, x.budget);
  if (v.matched && !eventMayRunAs(x.event, runAs)) {
    // The dispatcher's own rule (identity.ts): the poster could not have chosen this run-as.
    return {
      ...base,
      code: "run_as_not_allowed",
      reason: `It runs as user ${runAs}; the event was posted by ${x.event.actor} (${x.event.actor_role}), who could not have chosen that run-as, so no run was started.`,
      details: { run_as_user_id: runAs, actor: x.event.actor, actor_role: x.event.actor_role },
    };
  }
  return { ...base, ...verdictWords(v, a, x.event) };
}

function skipReason(run: Run): string {
  const who = run.subject_id ?? "?";
  switch (run.exit_reason) {
    case "subject_paused":
      return `Subject ${who} was paused for this automation: run ${run.id} exited subject_paused at once.`;
    case "reentry_cooldown":
      return `Subject ${who} finished a run of this automation within its re-entry cooldown: run ${run.id} exited reentry_cooldown.`;
    default:
      return `Subject ${who} already had an active run of this automation (skip_if_active): run ${run.id} exited already_active.`;
  }
}

function verdictWords(v: AutomationVerdict, a: Automation, e: StoredEvent): Pick<AutomationAnswer, "code" | "reason" | "details"> {
  if (v.matched) {
    // Its triggers take the event now, yet no run was made: it changed after the event was dispatched.
    return {
      code: "changed_since_dispatch",
      details: { automation_updated_at: iso(a.updated_at) },
      reason: `Its current triggers take this event, but it was created, activated or changed (${iso(a.updated_at)}) after the event was dispatched.`,
    };
  }
  switch (v.code) {
    case "trigger_kind_differs":
      return { code: v.code, reason: `Its triggers take ${v.expected} events; this is a ${v.got} event.`, details: { expected: v.expected, got: v.got } };
    case "event_name_differs":
      return { code: v.code, reason: `It listens for "${v.expected}"; this event is "${v.got ?? ""}".`, details: { expected: v.expected, got: v.got } };
    case "entity_or_op_differs":
      return {
        code: v.code,
        details: { expected: v.expected, got: v.got },
        reason: `It watches ${v.expected.entity} ${v.expected.ops.join("/")}; this is ${v.got.entity ?? "?"} ${v.got.op ?? "?"}.`,
      };
    case "watched_fields_unchanged":
      return {
        code: v.code,
        details: { fields: v.fields },
        reason: `None of its watched fields changed: ${v.fields.map((f) => `${f.field} ${show(f.before)} → ${show(f.after)}`).join(", ")}.`,
      };
    case "filter_false":
      return {
        code: v.code,
        details: { filter: v.filter, value: false, ...(v.mode ? { mode: v.mode } : {}) },
        reason:
          v.mode === "becomes_true"
            ? `Its filter ${v.filter} already held before the change (filter_mode becomes_true fires only when it turns true).`
            : `Its filter ${v.filter} is false for this event.`,
      };
    case "filter_error":
      // The dispatcher treats a filter that errors as one that does not hold: same code, with the error.
      return {
        code: "filter_false",
        reason: `Its filter ${v.filter} could not be evaluated (so it does not hold): ${v.error}.`,
        details: { filter: v.filter, value: null, error: v.error },
      };
    default:
      // Addressed to another automation (webhooks, schedules): not a candidate, kept for completeness.
      return { code: "trigger_kind_differs", reason: `The ${e.type} event is addressed to another automation.`, details: { got: e.type } };
  }
}

/** Load what the explanation needs for a stored event and explain it. */
export async function explainStoredEvent(store: Store, event: StoredEvent, now: number): Promise<EventExplanation> {
  const [list, runs, processes, budget, flow] = await Promise.all([
    store.listAutomations(event.workspace_id),
    store.eventRuns(event.workspace_id, event.id),
    store.liveProcesses(now),
    workspaceBudget(store, event.workspace_id),
    store.eventFlow(event.workspace_id, event.id),
  ]);
  const automations = await Promise.all(
    list.map(async (a) => {
      const def = (await store.getVersion(a.id, a.current_version))?.definition;
      return { automation: a, triggers: def?.triggers ?? [], runAsUser: runAsUser(def) };
    }),
  );
  return explainEvent({ event, automations, runs, processes, budget, flow });
}

export const EVENT_PAGE_MAX = 200;
const STORED_TYPES = new Set(["record", "webhook", "schedule"]);

/**
 * The list's filters as the store takes them. `type` reads as events are sent: `record`, or the
 * name of a named event (`webhook` and `schedule` are the kinds those ingress paths store).
 */
export function eventListFilter(workspaceId: string, q: { subject_id?: string; type?: string; key?: string; cursor?: string; limit?: number }): EventFilter {
  const t = q.type;
  return {
    workspace_id: workspaceId,
    limit: Math.min(Math.max(q.limit ?? 50, 1), EVENT_PAGE_MAX),
    ...(q.subject_id !== undefined ? { subject_id: q.subject_id } : {}),
    ...(t !== undefined ? (STORED_TYPES.has(t) ? { type: t as StoredEvent["type"] } : { type: "event" as const, name: t }) : {}),
    ...(q.key !== undefined ? { key: q.key } : {}),
    ...(q.cursor !== undefined ? { cursor: q.cursor } : {}),
  };
}

// ---------- debounce and batch (engine/flow-intake.ts) ----------

export type FlowReasonCode = "debounced" | "debounce_absorbed" | "debounce_waiting" | "batch_waiting" | "batched" | "flow_key_error";

/** What debounce or batch did with the event, in words: the key, the count so far, when the run starts, the run it folded into. */
export function flowAnswer(m: FlowMembership, eventId: string): Pick<AutomationAnswer, "taken" | "run_id" | "run_status" | "code" | "reason" | "details"> {
  const w = m.window;
  if (w === null) {
    return {
      taken: true,
      run_id: m.run_id,
      run_status: null,
      code: "flow_key_error",
      reason: `Its debounce/batch key did not render (${m.error_code}: ${m.error_message}); the event was not held and started run ${m.run_id} on its own.`,
      details: { error_code: m.error_code, error_message: m.error_message },
    };
  }
  const open = w.status === "open";
  const key = `\`${w.key}\``;
  const details = {
    key: w.key,
    window_id: w.id,
    count: w.count,
    position: m.seq,
    first_at: iso(w.first_at),
    starts_at: iso(w.due_at),
    window_status: w.status,
    ...(open ? { waiting_for: w.kind } : {}),
  };
  const at = { taken: true, run_id: w.run_id, run_status: null, details };
  if (w.kind === "batch") {
    return open
      ? {
          ...at,
          code: "batch_waiting",
          reason: `Held by batch (waiting_for: batch): key ${key} has ${w.count} event(s) so far; run ${w.run_id} starts with them at ${iso(w.due_at)}, or as soon as the batch is full.`,
        }
      : { ...at, code: "batched", reason: `Batched: it is event ${m.seq} of the ${w.count} in run ${w.run_id} (key ${key}).` };
  }
  if (w.mode === "leading") {
    return m.seq === 1
      ? {
          ...at,
          code: "debounced",
          reason: `It started run ${w.run_id} at once (leading debounce, key ${key}); ${w.count - 1} later event(s) of the key were absorbed.`,
        }
      : {
          ...at,
          code: "debounce_absorbed",
          reason: `debounced: run ${w.run_id} already started for ${key} at the burst's first event (leading); this event came within the period and was absorbed.`,
        };
  }
  if (w.last_event_id !== eventId) {
    const when = open
      ? ` (not started yet: waiting_for debounce, ${w.count} event(s) so far, starts at ${iso(w.due_at)} if no other event of the key comes first)`
      : "";
    return { ...at, code: "debounced", reason: `debounced: a newer event for ${key} replaced this one; it folded into run ${w.run_id}${when}.` };
  }
  return open
    ? {
        ...at,
        code: "debounce_waiting",
        reason: `Held by debounce (waiting_for: debounce): key ${key} has ${w.count} event(s) so far; run ${w.run_id} starts with this event at ${iso(w.due_at)} unless another event of the key comes first.`,
      }
    : { ...at, code: "debounced", reason: `It is the last of a burst of ${w.count} event(s) for ${key}: it started run ${w.run_id}.` };
}
