// Debounce and batch windows, the rules both stores apply (engine/flow-intake.ts renders keys and
// plans; store/*/flow.ts read and write the rows and call these). Pure: no I/O.
//
// A window is a row per (automation, key): open while it takes events, `due` once it takes no more
// (deadline passed, a full batch, or a newer window replaced it) until a dispatcher closes it,
// `closed` after. Times are the engine clock's at dispatch.

import { flowKey as storedFlowKey } from "./flow.js";

/** The part of a new run these rules read and write (the engine's NewRun). */
export interface FlowRun {
  id: string;
  event: Record<string, unknown>;
  due_at: number | null;
  started_at: number;
}

export type FlowKind = "debounce" | "batch";
export type FlowMode = "trailing" | "leading" | "batch";
export type FlowWindowStatus = "open" | "due" | "closed";

/** The code recorded on an event whose flow key did not render: the event started a run of its own. */
export const FLOW_KEY_ERROR = "flow.key_error";

/** A key too long to store is cut and hashed by the one rule every flow key follows (flowKey in model/flow.ts). */
export const capFlowKey = (key: string): string => storedFlowKey(key);

/** What dispatch decided for one (event, automation with debounce or batch). */
export interface FlowEntry<R extends FlowRun = FlowRun> {
  event_id: string;
  workspace_id: string;
  automation_id: string;
  kind: FlowKind;
  mode: FlowMode;
  /** The rendered key (capped: see flowKey). */
  key: string;
  period_ms: number;
  max_wait_ms: number | null;
  max_size: number | null;
  /** When the event was received: a debounce keeps the newest by (received_at, id), whichever dispatcher commits first. */
  received_at: number;
  /** The id the window gets if this event opens one (made by the engine). */
  window_id: string;
  /** The run this event would start alone (the window's run takes its id when it opens a window). */
  run: R;
  /** Set when the key did not render: no window; `run` is started on its own (it is in the plan's runs). */
  key_error: { code: string; message: string } | null;
}

export interface FlowWindow<R extends FlowRun = FlowRun> {
  id: string;
  workspace_id: string;
  automation_id: string;
  kind: FlowKind;
  mode: FlowMode;
  key: string;
  status: FlowWindowStatus;
  /** Events taken so far. */
  count: number;
  first_at: number;
  last_at: number;
  due_at: number;
  /** trailing debounce: the event the run will carry; leading: the event that started it; batch: the last joined. */
  last_event_id: string;
  /** received_at of last_event_id. */
  last_received_at: number;
  /** The run the window starts (or started, leading): named before it exists, so explain can name it. */
  run_id: string;
  /** trailing debounce: the last event's run as it would start; batch: the first event's; leading: the started run. */
  run: R;
  closed_at: number | null;
}

/** One event's part in flow control, for explain. */
export interface FlowMembership<R extends FlowRun = FlowRun> {
  event_id: string;
  automation_id: string;
  /** Null when the key did not render (the event started a run of its own). */
  window: FlowWindow<R> | null;
  /** The event's position in its window (1 = first). */
  seq: number;
  key: string | null;
  run_id: string | null;
  error_code: string | null;
  error_message: string | null;
}

/**
 * The time an event counts at in its window: when it was received, or the dispatch round's time
 * if later. A round reads the clock before it leases, so its time may predate an event it takes;
 * counting such an event at the round's time would end its burst early.
 */
export const eventTime = (e: Pick<FlowEntry, "received_at">, now: number): number => Math.max(now, e.received_at);

/** Whether an event joins this window: it is open and its deadline has not passed. */
export function joins(w: Pick<FlowWindow, "status" | "due_at">, now: number): boolean {
  return w.status === "open" && now < w.due_at;
}

/** The window an event opens (its first event). A batch of one is due at once. */
export function openWindow<R extends FlowRun>(e: FlowEntry<R>, now: number): FlowWindow<R> {
  const due =
    e.kind === "batch" ? now + (e.max_wait_ms ?? 0) : e.mode === "leading" ? now + e.period_ms : now + Math.min(e.period_ms, e.max_wait_ms ?? e.period_ms);
  const full = e.kind === "batch" && (e.max_size ?? 1) <= 1;
  return {
    id: e.window_id,
    workspace_id: e.workspace_id,
    automation_id: e.automation_id,
    kind: e.kind,
    mode: e.mode,
    key: e.key,
    status: full ? "due" : "open",
    count: 1,
    first_at: now,
    last_at: now,
    due_at: full ? now : due,
    last_event_id: e.event_id,
    last_received_at: e.received_at,
    run_id: e.run.id,
    run: e.mode === "leading" ? leadingRun(e, now) : e.run,
    closed_at: null,
  };
}

/**
 * The window after an event joins it. Trailing debounce: the event replaces the one the run will
 * carry and the deadline moves to `period_ms` from now, never past `max_wait_ms` after the first
 * event. Leading: the event is absorbed (the deadline stays `period_ms` after the starting event).
 * Batch: one more; a batch reaching `max_size` is due at once.
 */
export function foldInto<R extends FlowRun>(w: FlowWindow<R>, e: FlowEntry<R>, now: number): FlowWindow<R> {
  const count = w.count + 1;
  if (w.mode === "leading") return { ...w, count, last_at: now };
  if (w.kind === "batch") {
    const full = count >= (e.max_size ?? Number.POSITIVE_INFINITY);
    return { ...w, count, last_at: now, status: full ? "due" : "open", due_at: full ? now : w.due_at, ...newest(w, e) };
  }
  const cap = e.max_wait_ms === null ? Number.POSITIVE_INFINITY : w.first_at + e.max_wait_ms;
  const due_at = Math.min(now + e.period_ms, cap);
  // Two dispatchers may commit a key's events out of order: the run carries the newest received.
  return isNewer(e, w) ? { ...w, count, last_at: now, due_at, ...newest(w, e), run: { ...e.run, id: w.run_id } } : { ...w, count, last_at: now, due_at };
}

const isNewer = (e: FlowEntry<FlowRun>, w: FlowWindow<FlowRun>) =>
  e.received_at > w.last_received_at || (e.received_at === w.last_received_at && e.event_id > w.last_event_id);

const newest = (w: FlowWindow<FlowRun>, e: FlowEntry<FlowRun>) =>
  isNewer(e, w) ? { last_event_id: e.event_id, last_received_at: e.received_at } : { last_event_id: w.last_event_id, last_received_at: w.last_received_at };

/** Whether opening this window starts its run at once (leading debounce). */
export const startsAtOpen = (w: Pick<FlowWindow, "mode">): boolean => w.mode === "leading";

function leadingRun<R extends FlowRun>(e: FlowEntry<R>, now: number): R {
  return { ...e.run, event: { ...e.run.event, debounce: { key: e.key, count: 1, first_at: new Date(now).toISOString() } } };
}

/**
 * The run a due window starts, or null (a leading window started its run when it opened).
 * Trailing debounce: the last event, with `debounce: { key, count, first_at }`. Batch: the first
 * event's fields with `batch` (every event's body, in the order they joined) and `batch_size`.
 */
export function closingRun<R extends FlowRun>(w: FlowWindow<R>, bodies: readonly unknown[], now: number): R | null {
  if (w.mode === "leading") return null;
  const first_at = new Date(w.first_at).toISOString();
  const event =
    w.kind === "batch"
      ? { ...w.run.event, batch: bodies, batch_size: bodies.length, batch_key: w.key, batch_first_at: first_at }
      : { ...w.run.event, debounce: { key: w.key, count: w.count, first_at } };
  return { ...w.run, id: w.run_id, event, due_at: now, started_at: now };
}

/** Flow entries of one commit in the order their windows are locked (automation, key), so concurrent commits never deadlock. */
export function lockOrder<E extends { automation_id: string; key: string }>(entries: readonly E[]): E[] {
  return entries
    .map((e, i) => ({ e, i }))
    .sort((a, b) => cmp(a.e.automation_id, b.e.automation_id) || cmp(a.e.key, b.e.key) || a.i - b.i)
    .map((x) => x.e);
}

const cmp = (a: string, b: string) => (a < b ? -1 : a > b ? 1 : 0);

/** The `waiting_for` a held window reports. */
export const windowWaitingFor = (w: Pick<FlowWindow, "kind">): "debounce" | "batch" => w.kind;
