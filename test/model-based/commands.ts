// The commands of the model-based test: each one acts on the real engine (library API, HTTP API,
// webhooks, worker processes) and on the model, lets the engine settle, and then checks that the
// engine's observable state agrees with the model (runs, approvals, items, effects at the sink,
// the audit log) and that the invariants hold (legal transitions, terminal runs never change, no
// run without its trigger, legal step histories, every mutation audited).

import fc from "fast-check";
import { CRASH_POINTS } from "../../src/engine/crashpoints.js";
import type { Run, StepRun } from "../../src/engine/store.js";
import { RUN_TRANSITIONS, type RunStatus } from "../../src/model/run-status.js";
import { canStepTransition, type StepOutcome } from "../../src/model/step-outcome.js";
import { WS } from "../helpers/engine.js";
import { until } from "../helpers/wait.js";
import { definition, type Sequence } from "./harness.js";
import {
  AUTOMATIONS,
  HOUR,
  LEASE_MS,
  MINUTE,
  SLOT_LIMIT,
  audited,
  cancelFanOut,
  control,
  decide,
  effectPath,
  expected,
  isTerminal,
  newModel,
  pause,
  resume,
  redrive,
  retryItem,
  settle,
  stale,
  startRun,
  startStale,
  type Aut,
  type MRun,
  type Model,
} from "./model.js";

/**
 * Known defects the generators stay away from (so the rest of the state space is explored), by
 * name; `--hunt` in the chaos run lets the test look for them. All five below were found or
 * confirmed by this test and are fixed; none is avoided now.
 *  - stop-lost-in-park: a stop/cancel made while a worker (elsewhere) is inside a slow step that is
 *    followed by a wait is lost when the park commits.
 *  - explain-misses-approvals: explain may not name the approval a parked run waits for (the
 *    check that it does is skipped while this is avoided).
 *  - resume-lost-to-stale-pause-cache (found by this test): a resume made in another process
 *    within a second of a worker loading its pause cache makes the parked runs due, the worker
 *    claims them, still sees the pause and parks them again on subject_resume, due never: stuck.
 *    Avoided by having the workers' caches reload before the resume (as if a second had passed).
 *  - dispatch-lease-30s: the dispatch lease meant to be 10 s was 30 s (the 10 s had gone to the
 *    runner's lease), so a worker child killed inside its dispatch transaction held its event
 *    longer than a settle waits.
 *  - redrive-keeps-flow-place: a run stopped while it waited for a concurrency slot, redriven,
 *    waited from its first wait again, ahead of the key's waiters that came meanwhile (a stopped
 *    holder, redriven, even took its old slot back ahead of them).
 * Other known defects (a run's 102nd wait retaking its first event, fan-outs starting items after
 * shutdown, a crash during an operator's item retry) are out of reach of these commands: sequences
 * are short, restarts and crashes happen on a settled engine, and item retries run in the API
 * process, which is never killed.
 */
export type Defect = "stop-lost-in-park" | "explain-misses-approvals" | "resume-lost-to-stale-pause-cache" | "dispatch-lease-30s" | "redrive-keeps-flow-place";
export const KNOWN_DEFECTS: ReadonlySet<Defect> = new Set<Defect>();

export type Spec =
  | { t: "enroll"; aut: Aut; subj: number; items: boolean[]; key: number | null; acct?: number; inWorker?: boolean }
  | { t: "go"; subj: number; dup: boolean }
  | { t: "reply"; subj: number }
  | { t: "ping"; subj: number }
  | { t: "webhook"; bad: boolean }
  | { t: "record"; subj: number; changed: boolean }
  | { t: "decide"; pick: number; d: "approved" | "rejected" }
  | { t: "control"; pick: number; c: "stop" | "cancel"; slot?: boolean }
  | { t: "slots"; subjs: number[]; acct: number }
  | { t: "retrigger"; pick: number }
  | { t: "redrive"; pick: number }
  | { t: "retryItem"; pick: number; idx: number }
  | { t: "pause"; subj: number }
  | { t: "resume"; subj: number }
  | { t: "publish"; aut: Aut }
  | { t: "advance"; ms: number }
  | { t: "restart" }
  | { t: "secondWorker" }
  | { t: "hold"; aut: "pair" | "flow"; subj: number; c: "stop" | "cancel" }
  | { t: "crash"; point: string; subj: number }
  | { t: "cancelFan"; fails: boolean[] }
  | { t: "enrollMany"; aut: Aut; subjects: { subj: number; key: number | null; bad: boolean }[] }
  | { t: "eventBatch"; pings: { subj: number; bad: boolean }[] }
  | { t: "storeFault"; on: "commit" | "commitDispatch" };

/** What the checks counted, by invariant (the chaos run prints it). */
export const CHECKS = new Map<string, number>();
const count = (name: string, n = 1) => CHECKS.set(name, (CHECKS.get(name) ?? 0) + n);
/** Commands executed, by kind. */
export const EXECUTED = new Map<string, number>();

/** The real side of a sequence, with what the invariants remember between commands. */
export interface Real {
  s: Sequence;
  /** Event ids the sequence sent (settle waits until each is dispatched). */
  events: string[];
  seen: Map<string, RunStatus>;
  frozen: Map<string, string>;
  keyN: number;
  avoid: ReadonlySet<Defect>;
  /** Slot runs seen started (holding their slot), for the FIFO invariant. */
  started: Set<string>;
  /** Slot runs redriven (they wait again from their redrive, not from their creation). */
  redriven: Set<string>;
}

export function newReal(s: Sequence, avoid: ReadonlySet<Defect>): Real {
  return { s, events: [], seen: new Map(), frozen: new Map(), keyN: 0, avoid, started: new Set(), redriven: new Set() };
}

export function initialModel(s: Sequence): Model {
  return newModel(s.tag, s.clock.now());
}

// ---------- generators ----------

const subj = fc.integer({ min: 0, max: 2 });
const pick = fc.nat({ max: 1000 });

export function specArb(avoid: ReadonlySet<Defect>, opts: { crash: boolean }): fc.Arbitrary<Spec> {
  const holdAuts: ("pair" | "flow")[] = avoid.has("stop-lost-in-park") ? ["pair"] : ["pair", "flow"];
  const weighted: fc.WeightedArbitrary<Spec>[] = [
    {
      weight: 6,
      arbitrary: fc.record({
        t: fc.constant("enroll" as const),
        aut: fc.constantFrom(...AUTOMATIONS, "approve", "flow", "slot", "slot"),
        subj,
        items: fc.array(fc.boolean(), { maxLength: 3 }),
        key: fc.option(fc.integer({ min: 0, max: 2 }), { nil: null, freq: 3 }),
        // The slot automation's account: runs of one account (of any subject) share its limit.
        acct: fc.integer({ min: 0, max: 1 }),
        // Enrolled by a worker engine (the library's enroll): the run is created holding that
        // worker's lease, or parked on its root delay, and driven there; over the API it is
        // inserted pending and claimed.
        inWorker: fc.boolean(),
      }),
    },
    {
      // Slot runs of one account for one to three subjects, one after another: beyond the first, they queue.
      weight: 4,
      arbitrary: fc.record({
        t: fc.constant("slots" as const),
        subjs: fc.uniqueArray(subj, { minLength: 1, maxLength: 3 }),
        acct: fc.integer({ min: 0, max: 1 }),
      }),
    },
    {
      // Stop or cancel an active slot run: a holder (its slot frees) or a waiter (it leaves the queue).
      weight: 2,
      arbitrary: fc.record({ t: fc.constant("control" as const), pick, c: fc.constantFrom("stop" as const, "cancel" as const), slot: fc.constant(true) }),
    },
    { weight: 3, arbitrary: fc.record({ t: fc.constant("go" as const), subj, dup: fc.boolean() }) },
    { weight: 4, arbitrary: fc.record({ t: fc.constant("reply" as const), subj }) },
    { weight: 1, arbitrary: fc.record({ t: fc.constant("ping" as const), subj }) },
    { weight: 1, arbitrary: fc.record({ t: fc.constant("webhook" as const), bad: fc.boolean() }) },
    { weight: 1, arbitrary: fc.record({ t: fc.constant("record" as const), subj, changed: fc.boolean() }) },
    { weight: 4, arbitrary: fc.record({ t: fc.constant("decide" as const), pick, d: fc.constantFrom("approved" as const, "rejected" as const) }) },
    { weight: 3, arbitrary: fc.record({ t: fc.constant("control" as const), pick, c: fc.constantFrom("stop" as const, "cancel" as const) }) },
    { weight: 2, arbitrary: fc.record({ t: fc.constant("retrigger" as const), pick }) },
    { weight: 2, arbitrary: fc.record({ t: fc.constant("redrive" as const), pick }) },
    { weight: 2, arbitrary: fc.record({ t: fc.constant("retryItem" as const), pick, idx: fc.nat({ max: 2 }) }) },
    { weight: 2, arbitrary: fc.record({ t: fc.constant("pause" as const), subj }) },
    { weight: 2, arbitrary: fc.record({ t: fc.constant("resume" as const), subj }) },
    { weight: 2, arbitrary: fc.record({ t: fc.constant("publish" as const), aut: fc.constantFrom(...AUTOMATIONS) }) },
    { weight: 3, arbitrary: fc.record({ t: fc.constant("advance" as const), ms: fc.constantFrom(30 * MINUTE, HOUR + MINUTE) }) },
    { weight: 1, arbitrary: fc.constant({ t: "restart" as const }) },
    { weight: 1, arbitrary: fc.constant({ t: "secondWorker" as const }) },
    // A worker's next checkpoint batch or dispatch commit fails once before it is applied (a
    // killed connection): whatever it meets, the engine's second try makes it invisible.
    { weight: 2, arbitrary: fc.record({ t: fc.constant("storeFault" as const), on: fc.constantFrom("commit" as const, "commitDispatch" as const) }) },
    { weight: 1, arbitrary: fc.record({ t: fc.constant("cancelFan" as const), fails: fc.array(fc.boolean(), { minLength: 3, maxLength: 3 }) }) },
    {
      weight: 2,
      arbitrary: fc.record({
        t: fc.constant("enrollMany" as const),
        // Not the slot automation: runs a batch makes share a millisecond, so "oldest" would not order them.
        aut: fc.constantFrom(...AUTOMATIONS.filter((a) => a !== "slot"), "approve", "flow"),
        // Repeated subjects and keys inside one batch: the enrollment rules apply in element order.
        subjects: fc.array(
          fc.record({ subj, key: fc.option(fc.integer({ min: 0, max: 2 }), { nil: null, freq: 2 }), bad: fc.integer({ min: 0, max: 5 }).map((n) => n === 0) }),
          { minLength: 1, maxLength: 4 },
        ),
      }),
    },
    {
      weight: 1,
      arbitrary: fc.record({
        t: fc.constant("eventBatch" as const),
        pings: fc.array(fc.record({ subj, bad: fc.integer({ min: 0, max: 4 }).map((n) => n === 0) }), { minLength: 1, maxLength: 3 }),
      }),
    },
    {
      weight: 2,
      arbitrary: fc.record({
        t: fc.constant("hold" as const),
        aut: fc.constantFrom(...holdAuts),
        subj,
        c: fc.constantFrom("stop" as const, "cancel" as const),
      }),
    },
  ];
  if (opts.crash) {
    const points = CRASH_POINTS.filter((p) => !p.startsWith("scheduler:") && !(avoid.has("dispatch-lease-30s") && p === "dispatcher:inside-transaction"));
    weighted.push({ weight: 1, arbitrary: fc.record({ t: fc.constant("crash" as const), point: fc.constantFrom(...points), subj }) });
  }
  return fc.oneof(...weighted);
}

export function commandsArb(avoid: ReadonlySet<Defect>, opts: { maxCommands: number; crash: boolean }) {
  return fc.commands([specArb(avoid, opts).map((spec) => new Cmd(spec, avoid))], { maxCommands: opts.maxCommands, size: "max" });
}

// ---------- commands ----------

export class Cmd implements fc.AsyncCommand<Model, Real, false> {
  constructor(
    readonly spec: Spec,
    readonly avoid: ReadonlySet<Defect> = new Set(),
  ) {}
  check(m: Readonly<Model>): boolean {
    const c = this.spec;
    if (c.t === "decide") return approvalRuns(m as Model).length > 0;
    if (c.t === "control" && c.slot) return activeSlots(m as Model).length > 0;
    if (c.t === "control" || c.t === "retrigger") return m.runs.length > 0;
    if (c.t === "retryItem") return fanRuns(m as Model).length > 0;
    if (c.t === "redrive") return redrivable(m as Model, this.avoid).length > 0;
    return true;
  }
  async run(m: Model, r: Real): Promise<void> {
    EXECUTED.set(this.spec.t, (EXECUTED.get(this.spec.t) ?? 0) + 1);
    const before = new Map(m.runs.map((x) => [x.id, { gate: x.gate, terminal: isTerminal(x) }]));
    const faults = r.s.storeFaults;
    await execute(m, r, this.spec);
    settle(m);
    await verify(m, r, this.toString());
    if (r.s.storeFaults > faults) count("a store fault went off, sent again unseen", r.s.storeFaults - faults);
    // What the flow-control part of the sequence went through (a model that never queued would prove little).
    for (const x of m.runs) {
      const b = before.get(x.id);
      if (b?.gate === "waiting" && x.gate === "held") count("flow: a waiter took a freed slot");
      if (b?.gate === "held" && isTerminal(x)) count(`flow: a holder ended (${x.exit_reason ?? x.status})`);
      if (b?.gate === "waiting" && isTerminal(x)) count(`flow: a waiter ended (${x.exit_reason ?? x.status})`);
      if (x.gate === "waiting" && x.pausedPark) count("flow: a waiter parked on its paused subject");
    }
  }
  toString(): string {
    return JSON.stringify(this.spec);
  }
}

const approvalRuns = (m: Model) => m.runs.filter((r) => r.approval !== null);
const fanRuns = (m: Model) => m.runs.filter((r) => r.items.length > 0);
const activeSlots = (m: Model) => m.runs.filter((r) => r.aut === "slot" && !isTerminal(r));
/** Slot runs an operator stopped before they started (the only redrive the model follows). */
const redrivable = (m: Model, avoid: ReadonlySet<Defect>) =>
  m.runs.filter(
    (r) =>
      r.aut === "slot" &&
      r.exit_reason === "admin_stopped" &&
      r.approval === null &&
      !(avoid.has("redrive-keeps-flow-place") && (m.queues.get(r.key!)?.length ?? 0) > 0),
  );
const subject = (m: Model, n: number) => `${m.tag}-s${n}`;

/**
 * One millisecond passes before a slot run is made: each then waits from its own millisecond, so
 * "the oldest waiter" names one run (within a millisecond the engine may order waiters either way).
 */
function tick(m: Model, r: Real): void {
  r.s.clock.advance(1);
  m.now += 1;
}

function nextKey(r: Real): string {
  return `${r.s.tag}-k${r.keyN++}`;
}

/** Send a named or record event through the library API; returns its id. */
async function ingest(r: Real, e: Record<string, unknown>): Promise<string> {
  const { event_id } = await r.s.api.ingest(WS, { key: nextKey(r), ...e } as Parameters<typeof r.s.api.ingest>[1]);
  r.events.push(event_id);
  return event_id;
}

async function settleOrThrow(r: Real): Promise<Run[]> {
  const settled = await r.s.settle(r.events);
  if (typeof settled === "string") throw new Error(settled);
  return settled;
}

/** The run an event started in an automation, once the engine has settled. */
async function runOfEvent(r: Real, aut: Aut, eventId: string): Promise<Run | undefined> {
  const settled = await r.s.settle(r.events);
  if (typeof settled === "string") throw new Error(settled);
  return settled.find((x) => x.event_id === eventId && x.automation_id === r.s.automations[aut].id);
}

async function startedByEvent(m: Model, r: Real, aut: Aut, eventId: string, subj: string | null, at: number): Promise<void> {
  const run = await runOfEvent(r, aut, eventId);
  if (!run) throw new Error(`divergence: event ${eventId} started no run of ${aut}`);
  startRun(m, { id: run.id, aut, subject: subj, triggerEvent: eventId, eventsFrom: at, context: {} });
}

async function execute(m: Model, r: Real, c: Spec): Promise<void> {
  const s = r.s;
  const http = s.http;
  switch (c.t) {
    case "enroll": {
      const ctx = c.aut === "fan" ? { items: c.items.map((f, i) => ({ id: `${f ? "f" : "i"}${i}` })) } : c.aut === "slot" ? { acct: `a${c.acct ?? 0}` } : {};
      if (c.aut === "slot") tick(m, r);
      const key = c.key === null ? undefined : `${m.tag}-e${c.key}`;
      const req = { subject_id: subject(m, c.subj), context_overrides: ctx, ...(key ? { idempotency_key: key } : {}) };
      const worker = c.inWorker ? s.workers[0] : undefined;
      const res = worker
        ? { status: 200, body: { id: (await worker.enroll(WS, s.automations[c.aut].id, req, "user:model")).run.id } }
        : await http.call<{ id: string; duplicate?: boolean }>("POST", `/v1/automations/${s.automations[c.aut].id}/enroll`, req);
      if (res.status !== 200 && res.status !== 201) throw new Error(`divergence: enroll answered ${res.status} ${JSON.stringify(res.body)}`);
      // A repeated key returns the first run, whatever else the request says: no new run, no audit entry.
      const first = key ? m.enrollKeys.get(`${c.aut}/${key}`) : undefined;
      if (first !== undefined) {
        if (res.body.id !== first) throw new Error(`divergence: enrollment key ${key} answered run ${res.body.id}, the first enrollment made ${first}`);
        return;
      }
      if (key) m.enrollKeys.set(`${c.aut}/${key}`, res.body.id);
      startRun(m, { id: res.body.id, aut: c.aut, subject: subject(m, c.subj), triggerEvent: null, eventsFrom: m.now, context: ctx });
      audited(m, "run.enroll");
      return;
    }
    case "go": {
      // dup: send the sequence's first "go" key again. The same body is a duplicate (no second
      // run); another subject under that key is refused (409 event.key_conflict), never merged.
      const again = c.dup ? [...m.eventKeys].find(([k]) => k.endsWith("-go")) : undefined;
      if (again) {
        const [key, first] = again;
        const res = await http.call<{ event_id: string; duplicate: boolean }>("POST", "/v1/events", {
          type: `${m.tag}.go`,
          key,
          subject_id: subject(m, c.subj),
        });
        const want = first.subject === subject(m, c.subj) ? "ok" : "event.key_conflict";
        expectAnswer(`resend of event key ${key}`, res, want);
        if (want === "ok" && (res.body.event_id !== first.id || res.body.duplicate !== true))
          throw new Error(`divergence: resend of ${key} answered ${JSON.stringify(res.body)}, not a duplicate of ${first.id}`);
        return;
      }
      const key = `${m.tag}-go`;
      const id = await ingest(r, { type: `${m.tag}.go`, subject_id: subject(m, c.subj), ...(m.eventKeys.has(key) ? {} : { key }) });
      if (!m.eventKeys.has(key)) m.eventKeys.set(key, { subject: subject(m, c.subj), id });
      return startedByEvent(m, r, "flow", id, subject(m, c.subj), m.now);
    }
    case "reply": {
      const id = await ingest(r, { type: `${m.tag}.reply`, subject_id: subject(m, c.subj) });
      m.events.push({ id, name: "reply", subject: subject(m, c.subj), at: m.now });
      return;
    }
    case "ping": {
      const id = await ingest(r, { type: `${m.tag}.ping`, subject_id: subject(m, c.subj) });
      return startedByEvent(m, r, "pair", id, subject(m, c.subj), m.now);
    }
    case "webhook": {
      if (c.bad) {
        // Signed with another secret: refused with a structured error, nothing stored.
        const res = await s.webhook({ hello: "model" }, nextKey(r), "whsec_" + Buffer.alloc(24, 7).toString("base64"));
        const code = (res as { error?: { code?: string } }).error?.code;
        if (res.status < 400 || res.status >= 500 || code !== "webhook.bad_signature")
          throw new Error(`divergence: a badly signed webhook answered ${res.status} ${code}`);
        return;
      }
      const res = await s.webhook({ hello: "model" }, nextKey(r));
      if (res.status !== 202 || !res.event_id) throw new Error(`divergence: a validly signed webhook answered ${res.status}`);
      r.events.push(res.event_id);
      return startedByEvent(m, r, "pair", res.event_id, null, m.now);
    }
    case "record": {
      const rec = subject(m, c.subj);
      const id = await ingest(r, {
        type: "record",
        entity: `${m.tag}_deal`,
        record_id: rec,
        op: "updated",
        before: { stage: "a", note: 1 },
        after: { stage: c.changed ? "b" : "a", note: 2 },
      });
      if (c.changed) return startedByEvent(m, r, "pair", id, rec, m.now);
      const run = await runOfEvent(r, "pair", id);
      if (run) throw new Error(`divergence: a record change of an unwatched field started run ${run.id}`);
      return;
    }
    case "decide": {
      const runs = approvalRuns(m);
      const run = runs[c.pick % runs.length]!;
      const want = decide(m, run, c.d);
      const res = await http.call("POST", `/v1/approvals/${run.approval!.id}/${c.d === "approved" ? "approve" : "reject"}`, {});
      expectAnswer(`decide ${run.id}`, res, want);
      return;
    }
    case "control": {
      const runs = c.slot ? activeSlots(m) : m.runs;
      const run = runs[c.pick % runs.length]!;
      const want = control(m, run, c.c);
      const res = await http.call("POST", `/v1/automation-runs/${run.id}/${c.c}`, {});
      expectAnswer(`${c.c} ${run.id}`, res, want);
      return;
    }
    case "retrigger": {
      const orig = m.runs[c.pick % m.runs.length]!;
      if (orig.aut === "slot") tick(m, r);
      const res = await http.call<{ id: string }>("POST", `/v1/automation-runs/${orig.id}/retrigger`, {});
      if (res.status !== 200 && res.status !== 201) throw new Error(`divergence: retrigger answered ${res.status} ${JSON.stringify(res.body)}`);
      startRun(m, { id: res.body.id, aut: orig.aut, subject: orig.subject, triggerEvent: orig.triggerEvent, eventsFrom: m.now, context: orig.context });
      audited(m, "run.retrigger");
      return;
    }
    case "slots":
      for (const [i, n] of c.subjs.entries()) {
        // Each settles before the next comes, in the engine and in the model: the order they come
        // in is the order they wait in (a later one's cancel_previous frees a slot an earlier one
        // already waits for: the later one, parking behind it, wakes it).
        if (i > 0) {
          await settleOrThrow(r);
          settle(m);
        }
        await execute(m, r, { t: "enroll", aut: "slot", subj: n, items: [], key: null, acct: c.acct });
      }
      return;
    case "redrive": {
      const runs = redrivable(m, r.avoid);
      const run = runs[c.pick % runs.length]!;
      tick(m, r);
      const res = await http.call("POST", `/v1/automation-runs/${run.id}/redrive`, {});
      // Its subject has another active run of the automation (enrolled since it stopped): refused, nothing changes (README).
      const taken = m.runs.some((o) => o !== run && o.aut === run.aut && o.subject === run.subject && !isTerminal(o));
      expectAnswer(`redrive ${run.id}`, res, taken ? "run.redrive_conflict" : "ok");
      if (taken) {
        count("redrive refused: the subject has another active run");
        return;
      }
      redrive(m, run);
      audited(m, "run.redrive");
      // An operator's way out of a terminal status: the run's history starts again.
      r.seen.delete(run.id);
      r.frozen.delete(run.id);
      r.redriven.add(run.id);
      return;
    }
    case "retryItem": {
      const runs = fanRuns(m);
      const run = runs[c.pick % runs.length]!;
      const idx = c.idx % run.items.length;
      const items = await s.api.listItems(WS, run.id);
      const item = items.find((i) => i.idx === idx);
      if (!item) throw new Error(`divergence: run ${run.id} has no item ${idx}`);
      const want = retryItem(m, run, idx);
      const res = await http.call("POST", `/v1/automation-runs/${run.id}/items/${item.id}/retry`, {});
      expectAnswer(`retry item ${idx} of ${run.id}`, res, want);
      return;
    }
    case "pause": {
      pause(m, subject(m, c.subj));
      const res = await http.call("POST", `/v1/subjects/${subject(m, c.subj)}/automation-pause`, { pause_reason: "model" });
      if (res.status >= 300) throw new Error(`divergence: pause answered ${res.status} ${JSON.stringify(res.body)}`);
      s.pausesChanged();
      return;
    }
    case "resume": {
      // Avoiding the stale-cache defect, the workers reload their pause caches around the resume
      // (as if a second had passed); hunting it, they are left alone, as another process's would be.
      const avoid = r.avoid.has("resume-lost-to-stale-pause-cache");
      resume(m, subject(m, c.subj));
      if (avoid) s.pausesChanged();
      const res = await http.call("POST", `/v1/subjects/${subject(m, c.subj)}/automation-resume`, {});
      if (res.status >= 300) throw new Error(`divergence: resume answered ${res.status} ${JSON.stringify(res.body)}`);
      if (avoid) s.pausesChanged();
      return;
    }
    case "publish": {
      const n = m.versions[c.aut] + 1;
      const res = await http.call("PUT", `/v1/automations/${s.automations[c.aut].id}`, {
        definition: definition(c.aut, m.tag, s.h.sink.url, n),
        expected_version: n - 1,
      });
      if (res.status !== 200) throw new Error(`divergence: publish answered ${res.status} ${JSON.stringify(res.body)}`);
      m.versions[c.aut] = n;
      audited(m, "automation.update");
      return;
    }
    case "advance":
      s.clock.advance(c.ms);
      m.now += c.ms;
      m.recheck = c.ms >= LEASE_MS;
      // What the workers' timers do when the time comes (only that, with wake-ups only).
      for (const w of s.workers) {
        if (s.h.wakeOnly) await w.tick();
        else w.poke();
      }
      return;
    case "restart":
      return s.restart();
    case "secondWorker":
      return s.secondWorker();
    case "storeFault":
      // The model is not told: a fault the engine sends again past changes nothing it can see.
      s.storeFault = c.on;
      return;
    case "hold":
      return hold(m, r, c);
    case "cancelFan":
      return cancelFan(m, r, c);
    case "enrollMany":
      return enrollMany(m, r, c);
    case "eventBatch":
      return eventBatch(m, r, c);
    case "crash": {
      const { eventId } = await s.crashChild(c.point, () => ingest(r, { type: `${m.tag}.ping`, subject_id: subject(m, c.subj) }));
      return startedByEvent(m, r, "pair", eventId, subject(m, c.subj), m.now);
    }
  }
}

/**
 * Stop or cancel a run while a worker is inside its first slow step: the sink holds that request
 * until the operator's call is answered. The worker (another engine than the API's) learns of it
 * at its next checkpoint: the step's effect happened, nothing after it does.
 */
async function hold(m: Model, r: Real, c: Extract<Spec, { t: "hold" }>): Promise<void> {
  const s = r.s;
  const first = c.aut === "pair" ? "one" : "call";
  const prefix = `/${m.tag}/${c.aut}/v${m.versions[c.aut]}/${first}/`;
  s.h.sink.hold.add(prefix);
  try {
    const res = await s.http.call<{ id: string }>("POST", `/v1/automations/${s.automations[c.aut].id}/enroll`, {
      subject_id: subject(m, c.subj),
      context_overrides: {},
    });
    if (res.status !== 200 && res.status !== 201) throw new Error(`divergence: enroll answered ${res.status}`);
    const run = startRun(m, { id: res.body.id, aut: c.aut, subject: subject(m, c.subj), triggerEvent: null, eventsFrom: m.now, context: {} });
    audited(m, "run.enroll");
    if (!isTerminal(run)) {
      await until(`the sink to hold ${prefix}`, () => s.h.sink.holding(prefix), 20_000, 10);
      m.effects.add(effectPath(m, run, first));
    }
    const want = control(m, run, c.c);
    const ans = await s.http.call("POST", `/v1/automation-runs/${run.id}/${c.c}`, {});
    expectAnswer(`${c.c} ${run.id} inside its slow step`, ans, want);
  } finally {
    s.h.sink.release(prefix);
  }
}

/**
 * Cancel a fan-out of three items while its first two are in flight, through the engine that
 * drives it (told at once): the two finish and are recorded, the third never starts (skipped).
 */
async function cancelFan(m: Model, r: Real, c: Extract<Spec, { t: "cancelFan" }>): Promise<void> {
  const s = r.s;
  const prefix = `/${m.tag}/fan/`;
  const ctx = { items: c.fails.map((f, i) => ({ id: `${f ? "f" : "i"}${i}` })) };
  s.h.sink.hold.add(prefix);
  try {
    const { run } = await s.api.enroll(WS, s.automations.fan.id, { subject_id: null, context_overrides: ctx }, "user:model");
    const mr = startRun(m, { id: run.id, aut: "fan", subject: null, triggerEvent: null, eventsFrom: m.now, context: ctx });
    audited(m, "run.enroll");
    await until("two items of the fan-out in flight at the sink", () => s.h.sink.holding(prefix, 2), 20_000, 10);
    const driver = s.workers.find((w) => w.busy > 0);
    if (!driver) throw new Error(`divergence: no worker drives fan-out ${run.id} although two of its items are in flight`);
    cancelFanOut(m, mr);
    await driver.controlRun(WS, run.id, "cancel", "user:model");
  } finally {
    s.h.sink.release(prefix);
  }
}

type BatchResult = { index: number; error?: { code: string; details?: { pointer?: string } } } & Record<string, unknown>;

/** A refused element of a batch: its own error, pointing at it; the others are not affected. */
function expectElementError(what: string, res: BatchResult | undefined, pointerPrefix: string): void {
  if (!res?.error) throw new Error(`divergence: ${what}: a malformed element was accepted: ${JSON.stringify(res)}`);
  if (!res.error.details?.pointer?.startsWith(pointerPrefix))
    throw new Error(`divergence: ${what}: the error points at ${res.error.details?.pointer}, not under ${pointerPrefix}`);
}

/** Many subjects in one enrollment call: each element is enrolled on its own terms, in order. */
async function enrollMany(m: Model, r: Real, c: Extract<Spec, { t: "enrollMany" }>): Promise<void> {
  const s = r.s;
  // A fan-out's items come from its context; a batch enrolls each subject over no items.
  const ctx = c.aut === "fan" ? { items: [] } : {};
  const body = c.subjects.map((e) => {
    if (e.bad) return { subject_id: 42 };
    const key = e.key === null ? undefined : `${m.tag}-e${e.key}`;
    return { subject_id: subject(m, e.subj), context_overrides: ctx, ...(key ? { idempotency_key: key } : {}) };
  });
  const res = await s.http.call<{ results: BatchResult[] }>("POST", `/v1/automations/${s.automations[c.aut].id}/enroll`, { subjects: body });
  if (res.status !== 200) throw new Error(`divergence: batch enroll answered ${res.status} ${JSON.stringify(res.body)}`);
  const results = res.body.results;
  if (results.length !== body.length) throw new Error(`divergence: batch enroll answered ${results.length} results for ${body.length} subjects`);
  c.subjects.forEach((e, i) => {
    const got = results[i];
    if (got?.index !== i) throw new Error(`divergence: batch enroll result ${i} has index ${got?.index}`);
    if (e.bad) return expectElementError(`batch enroll element ${i}`, got, `/subjects/${i}`);
    const run = got.run as { id?: string } | undefined;
    if (!run?.id) throw new Error(`divergence: batch enroll element ${i} answered ${JSON.stringify(got)}`);
    const key = e.key === null ? undefined : `${m.tag}-e${e.key}`;
    const first = key ? m.enrollKeys.get(`${c.aut}/${key}`) : undefined;
    if (first !== undefined) {
      if (run.id !== first || got.duplicate !== true)
        throw new Error(
          `divergence: batch enrollment key ${key} answered run ${run.id} (duplicate ${String(got.duplicate)}), the first enrollment made ${first}`,
        );
      return;
    }
    if (key) m.enrollKeys.set(`${c.aut}/${key}`, run.id);
    startRun(m, { id: run.id, aut: c.aut, subject: subject(m, e.subj), triggerEvent: null, eventsFrom: m.now, context: ctx });
    audited(m, "run.enroll");
  });
}

/** Several events in one POST: each stored (or refused) on its own, each accepted one starting its run. */
async function eventBatch(m: Model, r: Real, c: Extract<Spec, { t: "eventBatch" }>): Promise<void> {
  const body = c.pings.map((p) => (p.bad ? { type: 7, key: nextKey(r) } : { type: `${m.tag}.ping`, key: nextKey(r), subject_id: subject(m, p.subj) }));
  const res = await r.s.http.call<{ results: BatchResult[] }>("POST", "/v1/events", body);
  if (res.status !== 202) throw new Error(`divergence: an event batch answered ${res.status} ${JSON.stringify(res.body)}`);
  const results = res.body.results;
  const accepted: { id: string; subj: number }[] = [];
  c.pings.forEach((p, i) => {
    const got = results[i];
    if (p.bad) return expectElementError(`event batch element ${i}`, got, `/${i}`);
    const id = got?.event_id;
    if (typeof id !== "string" || got?.duplicate !== false) throw new Error(`divergence: event batch element ${i} answered ${JSON.stringify(got)}`);
    r.events.push(id);
    accepted.push({ id, subj: p.subj });
  });
  for (const a of accepted) await startedByEvent(m, r, "pair", a.id, subject(m, a.subj), m.now);
}

function expectAnswer(what: string, res: { status: number; body: { error?: { code: string } } }, want: string): void {
  const got = res.status < 300 ? "ok" : (res.body.error?.code ?? String(res.status));
  if (got !== want) throw new Error(`divergence: ${what}: the API answered ${got} (${res.status}), the model expects ${want}`);
}

// ---------- checks ----------

/** Statuses reachable from each status (the run state machine's closure). */
const REACH = new Map<RunStatus, Set<RunStatus>>();
for (const from of Object.keys(RUN_TRANSITIONS) as RunStatus[]) {
  const seen = new Set<RunStatus>([from]);
  const todo = [from];
  while (todo.length) for (const n of RUN_TRANSITIONS[todo.pop()!]) if (!seen.has(n)) seen.add(n), todo.push(n);
  REACH.set(from, seen);
}

const TRACKED = new Set([
  "run.enroll",
  "run.stop",
  "run.cancel",
  "run.retrigger",
  "run.redrive",
  "run.replaced",
  "approval.approve",
  "approval.reject",
  "run_item.retry",
  "subject.pause",
  "subject.resume",
  "automation.update",
]);

export async function verify(m: Model, r: Real, after: string): Promise<void> {
  const s = r.s;
  const settled = await s.settle(r.events);
  if (typeof settled === "string") throw new Error(`after ${after}: ${settled}`);
  const bad: string[] = [];
  followStale(m, settled);
  const real = new Map(settled.map((x) => [x.id, x]));
  const models = new Map(m.runs.map((x) => [x.id, x]));

  // Runs: the same set, each where the model says.
  for (const x of settled) if (!models.has(x.id)) bad.push(`run ${x.id} (${x.status}) exists but the model has no such run`);
  for (const mr of m.runs) {
    const x = real.get(mr.id);
    count("run agrees with the model");
    if (!x) {
      bad.push(`run ${mr.id} of ${mr.aut} is missing`);
      continue;
    }
    const e = expected(m, mr);
    const got = {
      status: x.status,
      exit_reason: x.exit_reason,
      current_node_key: x.current_node_key,
      subject_resume: x.waiting_for === "subject_resume",
      concurrency: x.waiting_for === "concurrency",
      version: x.version,
      subject_id: x.subject_id,
      items_failed: x.items_failed,
    };
    const want = {
      status: e.status,
      exit_reason: e.exit_reason,
      current_node_key: e.current_node_key,
      subject_resume: e.subject_resume,
      concurrency: e.concurrency,
      version: e.version,
      subject_id: e.subject_id,
      items_failed: e.items_failed,
    };
    if (JSON.stringify(got) !== JSON.stringify(want)) bad.push(`run ${mr.id} of ${mr.aut}: engine ${JSON.stringify(got)}, model ${JSON.stringify(want)}`);
    else if (e.concurrency) {
      count("a run held by its concurrency limit");
      const ex = await s.api.explain(WS, mr.id);
      if (ex.waiting?.for !== "concurrency") bad.push(`explain of run ${mr.id} (held by its concurrency limit) says it waits for ${ex.waiting?.for}`);
    }
  }

  await checkApprovals(m, r, bad);
  await checkItems(m, r, bad);
  checkEffects(m, r, bad);
  await checkAudit(m, r, settled, bad);
  await checkInvariants(r, settled, bad);
  if (bad.length) throw new Error(`divergence after ${after}:\n  ${bad.join("\n  ")}`);
}

/**
 * A slot freed by a cancel_previous replacement (of a run of another key) wakes nobody: the key's
 * oldest waiter starts within a lease period (the model starts it at the next recheck), but a
 * worker may start it sooner. Where the engine did, the model follows; only that waiter may start.
 */
function followStale(m: Model, runs: Run[]): void {
  const byId = new Map(runs.map((x) => [x.id, x]));
  for (const key of [...m.queues.keys()]) {
    for (let w = stale(m, key); w !== undefined; w = stale(m, key)) {
      const x = byId.get(w.id);
      if (!x || (x.status === "waiting" && (x.waiting_for === "concurrency" || x.waiting_for === "subject_resume"))) break;
      count("a freed slot's waiter started before its recheck");
      startStale(m, w);
    }
  }
}

async function checkApprovals(m: Model, r: Real, bad: string[]): Promise<void> {
  const withApproval = m.runs.filter((x) => x.approval !== null);
  if (withApproval.length === 0) return;
  const all = await r.s.api.listApprovals(WS, undefined, 500);
  for (const mr of withApproval) {
    count("approval agrees with the model");
    const rows = all.filter((a) => a.run_id === mr.id);
    if (rows.length !== 1) {
      bad.push(`run ${mr.id} has ${rows.length} approvals, the model one`);
      continue;
    }
    const a = rows[0]!;
    mr.approval!.id = a.id;
    const e = expected(m, mr);
    const ok = a.status === e.approval || (e.approvalLate && a.status === "timed_out");
    if (!ok) bad.push(`approval ${a.id} of run ${mr.id} is ${a.status}, the model says ${e.approval}`);
    if (mr.status === "waiting" && mr.node === "ask" && !mr.pausedPark && !r.avoid.has("explain-misses-approvals")) {
      count("explain names the approval a run waits for");
      const ex = await r.s.api.explain(WS, mr.id);
      if (ex.waiting?.for !== "approval" || !ex.summary.includes(a.id)) bad.push(`explain of run ${mr.id} does not name its approval ${a.id}: ${ex.summary}`);
    }
  }
}

async function checkItems(m: Model, r: Real, bad: string[]): Promise<void> {
  for (const mr of m.runs.filter((x) => x.aut === "fan" && isTerminal(x) && (x.exit_reason === "completed" || x.status === "cancelled"))) {
    count("items agree with the model");
    const items = (await r.s.api.listItems(WS, mr.id)).sort((a, b) => a.idx - b.idx);
    const got = items.map((i) => (i.outcome === "idempotent_replay" ? "succeeded" : i.outcome));
    const want = expected(m, mr).items;
    if (JSON.stringify(got) !== JSON.stringify(want)) bad.push(`items of run ${mr.id}: engine ${JSON.stringify(got)}, model ${JSON.stringify(want)}`);
    const keys = new Set(items.map((i) => i.idempotency_key));
    if (keys.size !== items.length) bad.push(`items of run ${mr.id} share an idempotency key`);
  }
}

/** Every expected effect at the sink exactly once (one key per path, one 2xx per key), nothing else. */
function checkEffects(m: Model, r: Real, bad: string[]): void {
  const prefix = `/${m.tag}/`;
  const byPath = new Map<string, string[]>();
  for (const [key, path] of r.s.h.sink.effects) if (path.startsWith(prefix)) byPath.set(path, [...(byPath.get(path) ?? []), key]);
  for (const p of m.effects) {
    count("expected effect happened exactly once");
    const keys = byPath.get(p);
    if (!keys) bad.push(`effect ${p} is missing at the sink`);
    else if (keys.length > 1) bad.push(`effect ${p} happened under ${keys.length} keys: ${keys.join(", ")}`);
  }
  for (const p of byPath.keys()) if (!m.effects.has(p)) bad.push(`unexpected effect ${p} at the sink`);
  count("no unexpected effect");
}

async function checkAudit(m: Model, r: Real, runs: Run[], bad: string[]): Promise<void> {
  const entries = [];
  let before: number | undefined;
  for (;;) {
    const page = await r.s.api.listAudit(WS, 500, before);
    const mine = page.filter((e) => e.id > r.s.auditFrom);
    entries.push(...mine);
    if (page.length < 500 || mine.length < page.length) break;
    before = page[page.length - 1]!.id;
  }
  const got = new Map<string, number>();
  for (const e of entries) if (TRACKED.has(e.action)) got.set(e.action, (got.get(e.action) ?? 0) + 1);
  for (const action of TRACKED) {
    count("every mutation in the audit log");
    if ((got.get(action) ?? 0) !== (m.audit.get(action) ?? 0))
      bad.push(`audit log has ${got.get(action) ?? 0} × ${action}, the model ${m.audit.get(action) ?? 0}`);
  }
  // No run without its trigger: an event, or an enrollment or re-trigger entry naming it.
  const named = new Set(entries.flatMap((e) => [e.target_id, String((e.details as { new_run_id?: unknown }).new_run_id ?? "")]));
  for (const x of runs) {
    count("no run without its trigger");
    if (x.event_id !== null) {
      const ev = await r.s.api.getEvent(WS, x.event_id).catch(() => null);
      if (!ev) bad.push(`run ${x.id} names event ${x.event_id}, which does not exist`);
    } else if (!named.has(x.id)) bad.push(`run ${x.id} has no trigger event and no enrollment or re-trigger in the audit log`);
  }
}

async function checkInvariants(r: Real, runs: Run[], bad: string[]): Promise<void> {
  const slotRuns = runs.filter((x) => x.automation_id === r.s.automations.slot.id).sort((a, b) => (a.id < b.id ? -1 : 1));
  const acct = (x: Run) => String((x.context as { acct?: unknown }).acct);
  const slotStarted = new Set<string>();
  for (const x of runs) {
    count("legal status transition");
    const prev = r.seen.get(x.id);
    if (prev !== undefined && !REACH.get(prev)!.has(x.status)) bad.push(`run ${x.id} went ${prev} → ${x.status}`);
    r.seen.set(x.id, x.status);
    const steps = await r.s.api.listSteps(WS, x.id);
    checkSteps(x, steps, bad);
    if (x.automation_id === r.s.automations.slot.id && steps.length > 0) slotStarted.add(x.id);
    if (x.completed_at !== null) {
      count("terminal run never changes");
      const snap = JSON.stringify([x.status, x.exit_reason, x.completed_at, x.context, x.version, steps.length]);
      const was = r.frozen.get(x.id);
      if (was !== undefined && was !== snap) bad.push(`terminal run ${x.id} changed: ${was} → ${snap}`);
      r.frozen.set(x.id, snap);
    }
  }
  // Concurrency, without the model: per key, at most the limit of started runs active; a run
  // starts only once every older run of its key (ids sort by creation) has started or ended.
  const active = new Map<string, number>();
  for (const x of slotRuns) {
    if (!slotStarted.has(x.id) || x.completed_at !== null) continue;
    active.set(acct(x), (active.get(acct(x)) ?? 0) + 1);
  }
  for (const [key, n] of active) {
    count("concurrency limit held");
    if (n > SLOT_LIMIT) bad.push(`${n} runs of ${key} hold a slot at once, the limit is ${SLOT_LIMIT}`);
  }
  for (const x of slotRuns) {
    if (!slotStarted.has(x.id) || r.started.has(x.id) || r.redriven.has(x.id)) continue;
    r.started.add(x.id);
    count("slot runs start in order");
    const jumped = slotRuns.find((o) => o.id < x.id && acct(o) === acct(x) && o.completed_at === null && !slotStarted.has(o.id) && !r.redriven.has(o.id));
    if (jumped) bad.push(`run ${x.id} of ${acct(x)} started while the older ${jumped.id} still waits (${jumped.status}, ${jumped.waiting_for})`);
  }
}

/** Each (node, visit)'s rows follow the step state machine; every key is run/node/visit; none after the end. */
function checkSteps(run: Run, steps: StepRun[], bad: string[]): void {
  const last = new Map<string, StepOutcome | "start">();
  for (const st of [...steps].sort((a, b) => a.id - b.id)) {
    count("legal step history");
    const k = `${st.node_key}#${st.visit}`;
    const from = last.get(k) ?? "start";
    if (!canStepTransition(from, st.outcome)) bad.push(`run ${run.id} step ${k}: ${from} → ${st.outcome}`);
    last.set(k, st.outcome);
    if (st.idempotency_key !== `${run.id}/${st.node_key}/${st.visit}`) bad.push(`run ${run.id} step ${k} has key ${st.idempotency_key}`);
    if (run.completed_at !== null && st.finished_at > run.completed_at) bad.push(`run ${run.id} step ${k} finished after the run ended`);
  }
}

/** The model's run for a run id (regressions use it). */
export function modelRun(m: Model, id: string): MRun | undefined {
  return m.runs.find((x) => x.id === id);
}
