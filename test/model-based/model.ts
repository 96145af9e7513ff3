// The reference model of the whole engine for the model-based test: pure TypeScript, no I/O, no
// engine imports beyond types. It holds runs (status, exit reason, where they are parked), their
// waits, approvals, fan-out items, subject pauses, run controls and automation versions, and
// predicts, after each command and once the engine has settled, where every run must stand and
// which effects the loopback sink must have seen. Its rules are the documented ones (README,
// docs/design.md): enrollment and re-entry rules, the wait rule, first decision wins, stop/cancel,
// re-trigger from the root of the current version, item retry under the same key, subject pauses,
// versions pinned at run start, and the concurrency limit (README § Flow control): per key at
// most `limit` runs hold a slot, from their start until they end; a run beyond it waits
// (`waiting_for: concurrency`) holding nothing; slots go to the key's oldest waiter first.

export const MINUTE = 60_000;
export const HOUR = 60 * MINUTE;

/** The fixed automations every sequence works with (see harness.ts for their definitions). */
export const AUTOMATIONS = ["flow", "approve", "fan", "later", "pair", "slot"] as const;
export type Aut = (typeof AUTOMATIONS)[number];

/** Automations whose re-entry policy is skip_if_active (one active run per subject). */
const ONE_ACTIVE: ReadonlySet<Aut> = new Set(["flow", "approve", "later"]);

/**
 * The slot automation: an approval like approve's, but runs of one account (`context.acct`, any
 * subject) share a concurrency limit, and its re-entry policy is cancel_previous (a subject's new
 * run cancels its active one, holding a slot or waiting for one).
 */
export const SLOT_LIMIT = 1;
/** The workers' lease: a waiter checks its key again once per lease period (README § Concurrency). */
export const LEASE_MS = 10 * MINUTE;

/** How long the wait, the approval and the delay last before their timeout (the definitions use these). */
export const WAIT_MS = HOUR;
export const APPROVAL_MS = HOUR;
export const DELAY_MS = HOUR;

export type Status = "pending" | "running" | "waiting" | "completed" | "completed_with_failures" | "failed" | "cancelled" | "exited";
export const TERMINAL: ReadonlySet<string> = new Set(["completed", "completed_with_failures", "failed", "cancelled", "exited"]);

export type ApprovalStatus = "pending" | "approved" | "rejected" | "timed_out" | "cancelled";

export interface MEvent {
  id: string;
  name: string;
  subject: string | null;
  at: number;
}

export interface MItem {
  idx: number;
  key: string;
  fail: boolean;
  outcome: "succeeded" | "failed" | "skipped";
}

export interface MRun {
  id: string;
  aut: Aut;
  version: number;
  subject: string | null;
  status: Status;
  exit_reason: string | null;
  /** The node the run is at (parked there, or next to execute); null once terminal. */
  node: string | null;
  /** Parked because its subject is paused (waiting_for subject_resume). */
  pausedPark: boolean;
  /** The trigger event (never an answer to the run's own wait). */
  triggerEvent: string | null;
  /** Waits count named events received from this time on. */
  eventsFrom: number;
  consumed: Set<string>;
  /** Wake time of the current park (wait timeout, approval expiry, delay end). */
  until: number | null;
  approval: { id: string | null; status: ApprovalStatus; expires: number } | null;
  items: MItem[];
  /** Context given at enrollment (a re-trigger of an enrolled run starts from its payload). */
  context: Record<string, unknown>;
  /** The slot automation's concurrency key (its account), null for the others. */
  key: string | null;
  /** Where the run stands at the concurrency gate: not met yet, holding a slot, or in its key's queue. */
  gate: "none" | "held" | "waiting";
}

export interface Model {
  /** The sequence's tag: every effect path starts with it. */
  tag: string;
  now: number;
  versions: Record<Aut, number>;
  runs: MRun[];
  events: MEvent[];
  /** Subjects under a global pause. */
  paused: Set<string>;
  /** Effect paths the sink must have seen with a 2xx, exactly once each. */
  effects: Set<string>;
  /** Audit actions the sequence's commands must have written, by action. */
  audit: Map<string, number>;
  /** Enrollment idempotency keys ("aut/key") → the run the first enrollment made. */
  enrollKeys: Map<string, string>;
  /** Event idempotency keys sent → the subject of that event's body and its id. */
  eventKeys: Map<string, { subject: string; id: string }>;
  /** Per concurrency key, its waiters' run ids, oldest first. */
  queues: Map<string, string[]>;
  /** Keys whose oldest waiters a worker must wake in this settle (a slot its commit released). */
  wake: Set<string>;
  /** The clock moved at least a lease period: every key with a free slot wakes its oldest waiters (the sweep). */
  recheck: boolean;
}

export function newModel(tag: string, now: number): Model {
  return {
    tag,
    now,
    versions: { flow: 1, approve: 1, fan: 1, later: 1, pair: 1, slot: 1 },
    runs: [],
    events: [],
    paused: new Set(),
    effects: new Set(),
    audit: new Map(),
    enrollKeys: new Map(),
    eventKeys: new Map(),
    queues: new Map(),
    wake: new Set(),
    recheck: false,
  };
}

export function audited(m: Model, action: string): void {
  m.audit.set(action, (m.audit.get(action) ?? 0) + 1);
}

export function isTerminal(r: MRun): boolean {
  return TERMINAL.has(r.status);
}

export function runById(m: Model, id: string): MRun | undefined {
  return m.runs.find((r) => r.id === id);
}

/** An effect's path at the sink (the definitions in harness.ts build the same paths). */
export function effectPath(m: Model, r: MRun, node: string, item?: string): string {
  return item === undefined ? `/${m.tag}/${r.aut}/v${r.version}/${node}/${r.id}` : `/${m.tag}/fan/${r.id}/${item}`;
}

// ---------- starting runs ----------

export interface Start {
  id: string;
  aut: Aut;
  subject: string | null;
  triggerEvent: string | null;
  /** When the trigger event arrived (dispatched runs) or now (enrollments, re-triggers). */
  eventsFrom: number;
  context: Record<string, unknown>;
}

/**
 * The enrollment rules, in the store's order: a paused subject, then (skip_if_active) an active
 * run of the same automation and subject. A skipped start is still a run: `exited` with its reason.
 */
export function startRun(m: Model, s: Start): MRun {
  const r: MRun = {
    id: s.id,
    aut: s.aut,
    version: m.versions[s.aut],
    subject: s.subject,
    status: "pending",
    exit_reason: null,
    node: ROOT[s.aut],
    pausedPark: false,
    triggerEvent: s.triggerEvent,
    eventsFrom: s.eventsFrom,
    consumed: new Set(s.triggerEvent ? [s.triggerEvent] : []),
    until: null,
    approval: null,
    items: [],
    context: s.context,
    key: s.aut === "slot" ? String(s.context.acct) : null,
    gate: "none",
  };
  if (s.subject !== null && m.paused.has(s.subject)) exit(r, "exited", "subject_paused");
  else if (s.aut === "slot") {
    // cancel_previous: as an operator's cancel (the run is parked: it ends at once), but the slot it held frees waking nobody.
    for (const o of m.runs.filter((o) => o.aut === "slot" && o.subject === s.subject && !isTerminal(o))) {
      if (o.approval?.status === "pending") o.approval.status = m.now >= o.approval.expires ? "timed_out" : "cancelled";
      leaveGate(m, o, "replaced");
      exit(o, "cancelled", null);
      audited(m, "run.replaced");
    }
  } else if (s.subject !== null && ONE_ACTIVE.has(s.aut) && m.runs.some((o) => o.aut === s.aut && o.subject === s.subject && !isTerminal(o)))
    exit(r, "exited", "already_active");
  m.runs.push(r);
  return r;
}

const ROOT: Record<Aut, string> = { flow: "call", approve: "ask", fan: "fan", later: "nap", pair: "one", slot: "ask" };

function exit(r: MRun, status: Status, reason: string | null): void {
  r.status = status;
  r.exit_reason = reason;
  r.node = null;
  r.pausedPark = false;
  r.until = null;
}

/**
 * A slot run ends: it leaves its key's queue, or frees its slot. A slot freed by a worker's
 * commit or by an operator's stop or cancel wakes the key's oldest waiters; one freed by a
 * cancel_previous replacement wakes nobody by itself (the new run's park may: see `gate`; else
 * the sweep, see `stale`).
 */
function leaveGate(m: Model, r: MRun, by: "released" | "replaced"): void {
  if (r.key === null) return;
  if (r.gate === "waiting") {
    const q = queue(m, r.key);
    q.splice(q.indexOf(r.id), 1);
  } else if (r.gate === "held" && by === "released") m.wake.add(r.key);
  r.gate = "none";
}

// ---------- settling: every run goes as far as it can ----------

/** Is the run able to move now (new, or its park's wake condition holds)? */
function wakes(m: Model, r: MRun): boolean {
  if (isTerminal(r)) return false;
  if (r.pausedPark) return r.subject === null || !m.paused.has(r.subject);
  if (r.gate === "waiting") return false;
  if (r.status === "pending") return true;
  switch (r.node) {
    case "wait":
      return findReply(m, r) !== undefined || m.now >= (r.until ?? Infinity);
    case "ask":
      return r.approval!.status !== "pending" || m.now >= r.approval!.expires;
    case "nap":
      return m.now >= (r.until ?? Infinity);
    default:
      return true;
  }
}

/** The wait rule: a matching named event received in or after the run's start millisecond, not the trigger, not taken before. */
function findReply(m: Model, r: MRun): MEvent | undefined {
  return m.events.find((e) => e.name === "reply" && e.subject === r.subject && e.at >= r.eventsFrom && !r.consumed.has(e.id));
}

export function queue(m: Model, key: string): string[] {
  let q = m.queues.get(key);
  if (!q) m.queues.set(key, (q = []));
  return q;
}

/** Runs holding a slot of the key. */
export function holders(m: Model, key: string): MRun[] {
  return m.runs.filter((r) => r.key === key && r.gate === "held" && !isTerminal(r));
}

/**
 * The concurrency gate, met by a run that is to start (or, queued, is woken): it takes a slot
 * when the slots held and the waiters older than it leave one free; otherwise it waits in the
 * key's queue (a new waiter goes last).
 */
function gate(m: Model, r: MRun): boolean {
  const key = r.key!;
  const q = queue(m, key);
  const older = r.gate === "waiting" ? q.indexOf(r.id) : q.length;
  if (holders(m, key).length + older < SLOT_LIMIT) {
    if (r.gate === "waiting") q.splice(older, 1);
    r.gate = "held";
    return true;
  }
  if (r.gate !== "waiting") q.push(r.id);
  // It waits behind older waiters while a slot is free (one freed by an operator or a
  // cancel_previous replacement, which woke nobody): its park wakes them (README § Flow control).
  if (holders(m, key).length < SLOT_LIMIT) m.wake.add(key);
  r.gate = "waiting";
  r.status = "waiting";
  r.pausedPark = false;
  return false;
}

/** Move a run one claim on: the gate first for a slot run not yet started, then its nodes. */
function drive(m: Model, r: MRun): void {
  if (r.key !== null && r.gate !== "held" && !gate(m, r)) return;
  step(m, r);
}

/**
 * Let every run move as far as it can, as the engine does between commands (the model's
 * "quiescence"). A run that wakes while its subject is paused parks on subject_resume instead.
 * Then the woken keys' oldest waiters (one per free slot) are claimed: they meet the gate again.
 */
export function settle(m: Model): void {
  for (const r of m.runs) {
    if (!wakes(m, r)) continue;
    if (r.subject !== null && m.paused.has(r.subject)) {
      r.status = "waiting";
      r.pausedPark = true;
      continue;
    }
    r.pausedPark = false;
    drive(m, r);
  }
  const keys = m.recheck ? [...m.queues.keys()] : [...m.wake];
  m.wake.clear();
  m.recheck = false;
  for (const key of keys) {
    const q = queue(m, key);
    // A wake-up, and the recheck of every key, claim the oldest waiters, one per free slot (a full
    // key's waiters are left alone: README § Flow control, the sweep is for keys with a free slot).
    const woken = q.slice(0, Math.max(0, SLOT_LIMIT - holders(m, key).length));
    for (const id of woken) {
      const r = runById(m, id)!;
      if (r.subject !== null && m.paused.has(r.subject)) {
        r.pausedPark = true;
        continue;
      }
      if (!r.pausedPark) drive(m, r);
    }
  }
}

/**
 * A key with a free slot and a waiter that could take it, but that nothing has woken: its slot
 * was freed by a cancel_previous replacement of another key's run, or a paused waiter ahead of
 * it left. The README promises the waiter a start within a
 * lease period (the model starts it at the next recheck); the engine may start it sooner (a
 * worker that meets the key, say another run parking on it, may wake it). Returns the run that
 * may start now, if any.
 */
export function stale(m: Model, key: string): MRun | undefined {
  const q = queue(m, key);
  const free = SLOT_LIMIT - holders(m, key).length;
  for (let i = 0; i < Math.min(free, q.length); i++) {
    const r = runById(m, q[i]!)!;
    if (!r.pausedPark && (r.subject === null || !m.paused.has(r.subject))) return r;
  }
  return undefined;
}

/** The engine started a stale key's waiter early: the model follows (its gate and its first step). */
export function startStale(m: Model, r: MRun): void {
  drive(m, r);
  settle(m);
}

function park(r: MRun, node: string, until: number | null): void {
  r.status = "waiting";
  r.node = node;
  r.until = until;
}

function effect(m: Model, r: MRun, node: string): void {
  m.effects.add(effectPath(m, r, node));
}

function step(m: Model, r: MRun): void {
  const fresh = r.status === "pending" || (r.key !== null && r.approval === null);
  switch (r.aut) {
    case "flow":
      if (fresh) {
        effect(m, r, "call");
        r.node = "wait";
        r.until = m.now + WAIT_MS;
      }
      {
        const e = findReply(m, r);
        if (e) {
          r.consumed.add(e.id);
          effect(m, r, "done");
          exit(r, "completed", "completed");
        } else if (m.now >= r.until!) exit(r, "completed", "completed");
        else park(r, "wait", r.until);
      }
      return;
    case "approve":
    case "slot":
      if (fresh) r.approval = { id: null, status: "pending", expires: m.now + APPROVAL_MS };
      {
        const a = r.approval!;
        if (a.status === "pending" && m.now >= a.expires) a.status = "timed_out";
        if (a.status === "approved") {
          effect(m, r, "ship");
          exit(r, "completed", "completed");
        } else if (a.status === "pending") park(r, "ask", a.expires);
        else exit(r, "completed", "completed");
        if (isTerminal(r)) leaveGate(m, r, "released");
      }
      return;
    case "later":
      if (fresh) r.until = m.now + DELAY_MS;
      if (m.now >= r.until!) {
        effect(m, r, "after");
        exit(r, "completed", "completed");
      } else park(r, "nap", r.until);
      return;
    case "pair":
      effect(m, r, "one");
      effect(m, r, "two");
      exit(r, "completed", "completed");
      return;
    case "fan": {
      // An item whose id starts with "f" is refused by the sink on its first call (harness.ts).
      const list = (r.context.items as { id: string }[] | undefined) ?? [];
      r.items = list.map((it, idx) => ({ idx, key: it.id, fail: it.id.startsWith("f"), outcome: it.id.startsWith("f") ? "failed" : "succeeded" }));
      for (const it of r.items) if (!it.fail) m.effects.add(effectPath(m, r, "fan", it.key));
      // The exit reason stays "completed": the status says that some items failed.
      exit(r, r.items.some((i) => i.outcome === "failed") ? "completed_with_failures" : "completed", "completed");
      return;
    }
  }
}

// ---------- operator commands ----------

/**
 * Redrive of a slot run stopped before it started (it never held a slot): it is pending again at
 * its root and meets the gate as a new arrival, behind the key's waiters.
 */
export function redrive(m: Model, r: MRun): void {
  r.status = "pending";
  r.exit_reason = null;
  r.node = ROOT[r.aut];
  r.gate = "none";
}

/** Stop or cancel: an ended run is refused (`run.already_ended`); a parked one ends at once, its approval cancelled. */
export function control(m: Model, r: MRun, c: "stop" | "cancel"): "ok" | "run.already_ended" {
  if (isTerminal(r)) return "run.already_ended";
  if (r.approval?.status === "pending") r.approval.status = m.now >= r.approval.expires ? "timed_out" : "cancelled";
  // The engine wakes the freed slot's waiters before it answers (README § Flow control).
  leaveGate(m, r, "released");
  if (c === "stop") exit(r, "exited", "admin_stopped");
  else exit(r, "cancelled", null);
  audited(m, `run.${c}`);
  return "ok";
}

/** A decision: the first one wins; a later one, or one after the timeout, is refused. */
export function decide(m: Model, r: MRun, d: "approved" | "rejected"): "ok" | "approval.already_decided" {
  const a = r.approval!;
  if (a.status === "pending" && m.now >= a.expires) a.status = "timed_out";
  if (a.status !== "pending") return "approval.already_decided";
  a.status = d;
  audited(m, d === "approved" ? "approval.approve" : "approval.reject");
  return "ok";
}

/**
 * Cancel a fan-out while its first two items are in flight (concurrency 2) in the process that
 * drives it: those two finish and are recorded, the rest are skipped, the run ends cancelled.
 */
export function cancelFanOut(m: Model, r: MRun): void {
  const list = (r.context.items as { id: string }[] | undefined) ?? [];
  r.items = list.map((it, idx) => {
    const fail = it.id.startsWith("f");
    const outcome = idx >= 2 ? "skipped" : fail ? "failed" : "succeeded";
    if (outcome === "succeeded") m.effects.add(effectPath(m, r, "fan", it.id));
    return { idx, key: it.id, fail, outcome };
  });
  exit(r, "cancelled", null);
  audited(m, "run.cancel");
}

/** An operator's item retry: only a failed item of an ended run; the same key, so the effect happens once. */
export function retryItem(m: Model, r: MRun, idx: number): "ok" | "item.not_failed" | "item.run_active" {
  const it = r.items[idx]!;
  if (it.outcome !== "failed") return "item.not_failed";
  if (!isTerminal(r)) return "item.run_active";
  it.outcome = "succeeded";
  m.effects.add(effectPath(m, r, "fan", it.key));
  audited(m, "run_item.retry");
  return "ok";
}

export function pause(m: Model, subject: string): void {
  m.paused.add(subject);
  audited(m, "subject.pause");
}

/** Resume deletes the pause (audited only when there was one); parked runs become due at once. */
export function resume(m: Model, subject: string): boolean {
  const had = m.paused.delete(subject);
  if (had) audited(m, "subject.resume");
  return had;
}

/** What the model expects of a run, in the engine's terms. */
export interface Expected {
  status: Status;
  exit_reason: string | null;
  current_node_key: string | null;
  subject_resume: boolean;
  /** Held at the concurrency gate (`waiting_for: concurrency`). */
  concurrency: boolean;
  version: number;
  subject_id: string | null;
  items_failed: number;
  items: string[];
  approval: ApprovalStatus | null;
  /** The approval is pending past its expiry (the runner has not applied the timeout yet: its subject is paused). */
  approvalLate: boolean;
}

export function expected(m: Model, r: MRun): Expected {
  return {
    status: r.status,
    exit_reason: r.exit_reason,
    current_node_key: isTerminal(r) ? null : r.node,
    subject_resume: r.pausedPark,
    concurrency: r.gate === "waiting" && !r.pausedPark && !isTerminal(r),
    version: r.version,
    subject_id: r.subject,
    items_failed: r.items.filter((i) => i.outcome === "failed").length,
    items: r.items.map((i) => i.outcome),
    approval: r.approval?.status ?? null,
    approvalLate: r.approval?.status === "pending" && m.now >= r.approval.expires,
  };
}
