// wait_for_event and input: park the run until a named event about its subject arrives (or the
// timeout passes).
//
// Which events count (the rule): a wait counts a matching named event received in or after the
// millisecond its run's trigger event was received (for an enrolled run: the enrollment), except
// the trigger event itself and events an earlier wait of the same run already took. So a reply
// that arrives while the run is still on its way to the wait (queued for dispatch, an HTTP call in
// between, a delay) is not lost, and an older event is not mistaken for an answer. Within that
// one millisecond the order is not known and the event counts: losing a real answer is the worse
// mistake. Each wait takes one event; the run's record of taken events (one row per event, kept
// by the store) makes the rule exact for any number of waits.
//
// How the run is woken: the dispatcher wakes runs parked on (event name, subject) when it
// dispatches such an event; the park's commit makes the run due at once if a candidate is already
// stored (it may have come while the run decided to wait). A woken wait looks events up itself and
// evaluates `match`, so a wake is only a hint and an event that does not match is passed over once.

import { StepFailure, stepError } from "../../model/errors.js";
import { evaluateCondition, render } from "../../model/expressions.js";
import type { StoredEvent } from "../store.js";
import type { NodeContext, NodeHandler, NodeResult, ParkWait } from "./types.js";

/** Events looked at per wake; a wait that sees a full page looks again before it parks. */
const PAGE = 200;
const MAX_PAGES = 10;

interface WaitData {
  /** Events received before this were all examined... */
  after: number;
  /** ...and so were these (received at `after` or later). */
  seen: string[];
}

/** Look for the first matching event; returns it, or where the look-up got to. */
async function lookFor(ctx: NodeContext, name: string, match: string | undefined): Promise<{ event: StoredEvent | null; data: WaitData }> {
  const prev = ctx.parked?.data as WaitData | undefined;
  let data: WaitData = prev ? { after: prev.after, seen: [...prev.seen] } : { after: ctx.run.cursor.events_from ?? ctx.run.started_at, seen: [] };
  for (let page = 0; page < MAX_PAGES; page++) {
    const events = await ctx.store.findEvents(ctx.run.workspace_id, { ...waitSpec(ctx, name, data), run_id: ctx.run.id }, PAGE);
    for (const e of events) {
      const ok =
        match === undefined ||
        evaluateCondition(
          match,
          ctx.scope.with({ event: { ...e.body, id: e.id, received_at: new Date(e.received_at).toISOString() }, trigger: ctx.run.event }),
        );
      if (ok) return { event: e, data };
      data = e.received_at > data.after ? { after: e.received_at, seen: [e.id] } : { after: data.after, seen: [...data.seen, e.id] };
    }
    if (events.length < PAGE) break;
  }
  return { event: null, data };
}

/**
 * The events a wait may still take. Excluded by id: the trigger event, events taken earlier in this
 * drive and not yet committed (the cursor), and those already examined; the store also excludes
 * the events the run's committed waits took.
 */
function waitSpec(ctx: NodeContext, name: string, data: WaitData): ParkWait {
  const trigger = ctx.run.event_id === null ? [] : [ctx.run.event_id];
  return { name, subject_id: ctx.run.subject_id, after: data.after, exclude: [...trigger, ...(ctx.run.cursor.consumed ?? []), ...data.seen] };
}

function parkOn(ctx: NodeContext, name: string, waitingFor: string, until: number | null, data: WaitData, input: unknown): NodeResult {
  return { kind: "park", waiting_for: waitingFor, until, input, data: { ...data }, wait: waitSpec(ctx, name, data) };
}

export const waitForEventNode: NodeHandler = {
  kind: "wait_for_event",
  class: "fast",
  async execute(ctx): Promise<NodeResult> {
    const cfg = ctx.node.config as { event: string; match?: string; timeout_ms?: number };
    const name = String(render(cfg.event, ctx.scope));
    const until = ctx.parked ? ctx.parked.until : cfg.timeout_ms !== undefined ? ctx.now + cfg.timeout_ms : null;
    const input = { event: name, subject_id: ctx.run.subject_id, match: cfg.match ?? null, until: until === null ? null : new Date(until).toISOString() };
    const { event, data } = await lookFor(ctx, name, cfg.match);
    if (event) {
      return { kind: "next", port: "received", input, output: { event_id: event.id, event: event.body }, consumed_event: event.id };
    }
    if (until !== null && ctx.now >= until) return { kind: "next", port: "timeout", input, output: { timed_out: true } };
    return parkOn(ctx, name, "event", until, data, input);
  },
};

/** The event a subject's reply arrives as (POST /v1/events { type: "reply.received", subject_id, payload: { text } }). */
export const REPLY_EVENT = "reply.received";

export const inputNode: NodeHandler = {
  kind: "input",
  class: "fast",
  async execute(ctx): Promise<NodeResult> {
    const cfg = ctx.node.config as { prompt: string; timeout_min?: number; assign_to?: string; event?: string };
    if (ctx.run.subject_id === null) {
      throw new StepFailure(stepError("input.no_subject", "an input node waits for a reply from the run's subject, and this run has none", false));
    }
    const name = cfg.event ?? REPLY_EVENT;
    const until = ctx.parked ? ctx.parked.until : cfg.timeout_min !== undefined ? ctx.now + cfg.timeout_min * 60_000 : null;
    const input = { prompt: String(render(cfg.prompt, ctx.scope)), event: name, until: until === null ? null : new Date(until).toISOString() };
    const { event, data } = await lookFor(ctx, name, undefined);
    if (event) {
      const payload = (event.body as { payload?: Record<string, unknown> }).payload ?? {};
      const reply = payload.text ?? payload.value ?? payload;
      const result: NodeResult = { kind: "next", port: "received", input, output: { event_id: event.id, reply }, consumed_event: event.id };
      if (cfg.assign_to) result.assign = { [cfg.assign_to]: reply };
      return result;
    }
    if (until !== null && ctx.now >= until) {
      // An unanswered input exits the run as input_timeout, unless the flow handles it.
      if (ctx.hasEdge("timeout")) return { kind: "next", port: "timeout", input, output: { timed_out: true } };
      return { kind: "exit", reason: "input_timeout", input, output: { timed_out: true } };
    }
    return parkOn(ctx, name, "input", until, data, input);
  },
};
