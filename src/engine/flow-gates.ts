// Flow control gates: where a run (at its start) or a step (at its entry) meets the concurrency
// rules, shared limits and rate limit its definition declares. The engine renders the keys under
// the run's expression budget; the store takes every slot and the rate turn atomically (its
// decision is model/flow.ts's decideFlow, the same on both stores) or records the run as a waiter.
//
// A slot is tied to its run: a run's slot is held until the commit that ends the run; a step's
// slot until the commit that records the step (or until the run's lease lapses: a dead worker's
// step slot comes back then; its run's slot stays with the run, which the next claim resumes).
// A run meets its automation's slots first at creation (admissionGates; the store's insert admits
// it or parks it as a waiter), so a flooded key's backlog is parked, not queued for claims ahead of
// other keys' runs; its claim meets the gate again (a run that holds its slots passes at once).
// A waiter is parked with no due time (it holds no worker and no place in the claim queue): the
// releaser wakes the oldest waiters of the key after its commit, and the waiter wakes any free
// slot's waiters after its own park commits, so a release that raced the park is not lost; a
// sweep once per lease period wakes the head waiters of any key with a free slot (a wake lost with
// a crashed releaser, or a step slot that lapsed with its lease, costs at most that long).

import type { Definition, NodeDef } from "../model/definition.js";
import { stepError, type StepError } from "../model/errors.js";
import { render, type CelScope } from "../model/expressions.js";
import { flowKey, keyOf, type ConcurrencyRule, type FlowDecision, type FlowRateGate, type FlowSlotGate, type RateLimitDef } from "../model/flow.js";
import type { Budget } from "../model/expressions.js";
import { runScope } from "./scope.js";
import type { Checkpoint, Cursor, NewRun, Run, Store } from "./store.js";

interface FlowFields {
  concurrency?: ConcurrencyRule[] | undefined;
  limits?: string[] | undefined;
  rate_limit?: RateLimitDef | undefined;
}

/** What the runner does with a gate's answer. */
export type GateOutcome =
  | { kind: "pass" }
  | { kind: "park"; waiting_for: "concurrency" | "rate_limit"; until: number | null }
  | { kind: "exit" }
  | { kind: "fail"; error: StepError };

export function hasFlow(f: FlowFields): boolean {
  return f.concurrency !== undefined || f.limits !== undefined || f.rate_limit !== undefined;
}

/** A key template rendered to a stored key; a template that fails or renders a non-scalar fails the run with `flow.key_failed`. */
export function renderFlowKey(template: string | undefined, scope: CelScope, pointer: string): string {
  if (template === undefined) return "*";
  let v: unknown;
  try {
    v = render(template, scope);
  } catch (err) {
    const e = err as { error?: StepError; message?: string };
    throw new FlowKeyError(pointer, e.error?.message ?? e.message ?? String(err), e.error?.code);
  }
  if (v === null || v === undefined || typeof v === "object")
    throw new FlowKeyError(pointer, `rendered ${v === null ? "null" : typeof v}, not text or a number`);
  return flowKey(String(v));
}

export class FlowKeyError extends Error {
  constructor(
    readonly pointer: string,
    detail: string,
    readonly cause_code?: string,
  ) {
    super(`the flow-control key at ${pointer} could not be rendered: ${detail}`);
  }
}

/** A limit a simulated run would meet: where, which rule, and its key as rendered for this run. */
export interface SimulatedLimit {
  /** `automation`, or the node's key. */
  at: string;
  kind: "concurrency" | "shared_limit" | "rate_limit";
  /** The shared limit's name. */
  name?: string;
  /** The rendered key, or the error that would fail the run (`flow.key_failed`). */
  key?: string;
  error?: string;
  limit: number;
  period_ms?: number;
  on_limit?: "queue" | "skip";
}

/** The limits a run would meet at the automation (at = "automation") or a node, with their keys rendered; nothing is counted. */
export function simulatedLimits(f: FlowFields, at: string, pointer: string, scope: CelScope, shared: readonly SharedLimitDef[]): SimulatedLimit[] {
  const out: SimulatedLimit[] = [];
  const keyed = (template: string | undefined, ptr: string): { key: string } | { error: string } => {
    try {
      return { key: renderFlowKey(template, scope, ptr) };
    } catch (err) {
      if (err instanceof FlowKeyError) return { error: err.message };
      throw err;
    }
  };
  f.concurrency?.forEach((c, i) => out.push({ at, kind: "concurrency", ...keyed(c.key, `${pointer}/concurrency/${i}/key`), limit: c.limit }));
  f.limits?.forEach((name, i) => {
    const l = shared.find((x) => x.name === name);
    if (l) out.push({ at, kind: "shared_limit", name, ...keyed(l.key, `${pointer}/limits/${i}`), limit: l.limit });
  });
  const r = f.rate_limit;
  if (r) out.push({ at, kind: "rate_limit", ...keyed(r.key, `${pointer}/rate_limit/key`), limit: r.limit, period_ms: r.period_ms, on_limit: r.on_limit });
  return out;
}

/** Keys one sweep looks at (a tenant with countless keys cannot make a sweep unbounded; the next sweep goes on). */
const SWEEP_KEYS = 500;

type SharedLimitDef = { name: string; key: string; limit: number };

/** The slot gates of an automation or node, keys rendered: one per concurrency rule, one per shared limit still defined. */
function slotGates(f: FlowFields, scopeId: string, at: string, scope: CelScope, shared: readonly SharedLimitDef[]): FlowSlotGate[] {
  const out: FlowSlotGate[] = [];
  f.concurrency?.forEach((c, i) => {
    out.push({ scope: `c${scopeId}:${i}`, key: renderFlowKey(c.key, scope, `${at}/concurrency/${i}/key`), limit: c.limit, label: "concurrency" });
  });
  if (f.limits !== undefined) {
    for (const l of shared) {
      if (!f.limits.includes(l.name)) continue;
      out.push({ scope: `l:${l.name}`, key: renderFlowKey(l.key, scope, `${at}/limits/${f.limits.indexOf(l.name)}`), limit: l.limit, label: l.name });
    }
  }
  return out;
}

/**
 * Whether an insert of these runs may have woken flow waiters: an admission that finds a slot of
 * its gates free with waiters queued wakes the oldest (keysToWake, in both stores), due at once.
 * Every path that inserts runs then wakes its claim, as a commit that frees a slot does.
 */
export function admissionMayWake(runs: readonly NewRun[]): boolean {
  return runs.some((r) => r.admit !== undefined);
}

/**
 * The gates a new run meets at creation (NewRun.admit, NewRun.admit_rate): its automation's slot
 * gates, or else its queued rate limit, with keys rendered over the run as its first claim would
 * render them. None (the claim decides, as before) when the automation has none, when it names
 * shared limits the caller did not read (admitting to some gates and not others would break
 * "every slot or none"), when it has slots and a rate both (the claim takes a turn only with every
 * slot), for a rate limit that skips (the claim ends the run), or when a key does not render here
 * (a key over secrets, say: the claim renders it, or fails the run).
 */
export function admissionGates(
  def: Definition,
  run: NewRun,
  shared: readonly SharedLimitDef[] | undefined,
  budget?: Budget,
): Pick<NewRun, "admit" | "admit_rate"> | undefined {
  if (def.concurrency === undefined && def.limits === undefined && def.rate_limit === undefined) return undefined;
  if (def.limits !== undefined && shared === undefined) return undefined;
  const asRun = { ...run, rev: 0, lease_owner: null, interruptions: 0, completed_at: null, updated_at: run.started_at } as unknown as Run;
  try {
    const scope = runScope(asRun, run.context, {}, new Map(), budget);
    const scopeId = `a:${run.automation_id}`;
    const gates = slotGates(def, scopeId, "", scope, shared ?? []);
    const r = def.rate_limit;
    if (gates.length > 0) return r === undefined ? { admit: gates } : undefined;
    if (r === undefined || r.on_limit !== "queue") return undefined;
    return {
      admit_rate: { scope: `r${scopeId}`, key: renderFlowKey(r.key, scope, "/rate_limit/key"), limit: r.limit, period_ms: r.period_ms, on_limit: r.on_limit },
    };
  } catch (err) {
    if (err instanceof FlowKeyError) return undefined;
    throw err;
  }
}

interface Held {
  workspace_id: string;
  step_key: string;
  gates: FlowSlotGate[];
}

/**
 * Gate calls of one process, queued per key in memory: a call waits here for the calls on its
 * keys ahead of it, not in the store for the key's lock while holding a pool connection. A
 * flooded key's gate traffic therefore takes one connection at a time, and a quiet key's gate (or
 * any other query) never waits for a connection behind it. Keys are taken in sorted order, so
 * two calls cannot wait for each other.
 */
class KeyQueue {
  private readonly tails = new Map<string, Promise<void>>();

  async run<T>(keys: readonly string[], fn: () => Promise<T>): Promise<T> {
    const releases: (() => void)[] = [];
    try {
      for (const k of [...new Set(keys)].sort()) {
        const prev = this.tails.get(k);
        let release!: () => void;
        const mine = new Promise<void>((r) => (release = r));
        const tail = prev === undefined ? mine : prev.then(() => mine);
        this.tails.set(k, tail);
        releases.push(() => {
          release();
          if (this.tails.get(k) === tail) this.tails.delete(k);
        });
        if (prev !== undefined) await prev;
      }
      return await fn();
    } finally {
      for (const r of releases) r();
    }
  }
}

const gateKeys = (ws: string, slots: readonly Pick<FlowSlotGate, "scope" | "key">[], rate?: Pick<FlowRateGate, "scope" | "key"> | null): string[] => [
  ...slots.map((g) => `${ws}\u0000${keyOf(g)}`),
  ...(rate ? [`${ws}\u0000rate:${keyOf(rate)}`] : []),
];

export class FlowGates {
  /** Slots this process took, per run, until the commit that releases them (then their waiters are woken). */
  private readonly held = new Map<string, Held[]>();
  /** Gates a run parked at, per run, until its park commits (then it wakes a free slot's waiters itself). */
  private readonly parked = new Map<string, Held>();

  private sweptAt = Number.NEGATIVE_INFINITY;
  private readonly queue = new KeyQueue();
  /** Wakes queued behind a running one, per set of keys: a later release of the same keys joins the queued wake (it reads the free slots when it runs). */
  private readonly queuedWakes = new Map<string, { entry: { started: boolean }; done: Promise<number> }>();

  constructor(
    private readonly store: Store,
    private readonly recheckMs: number,
  ) {}

  /** The lost-wake safety net (Store.sweepFlowWaiters), at most once per recheck period per process: what the store's sweep answers (0 when not due yet). */
  async sweep(now: number): Promise<number> {
    if (now - this.sweptAt < this.recheckMs) return 0;
    this.sweptAt = now;
    return this.store.sweepFlowWaiters(now, SWEEP_KEYS);
  }

  /** The automation's gate, met at every claim until the run ends (a run that holds its slots passes at once). */
  atRunStart(run: Run, def: Definition, cursor: Cursor, scope: CelScope, now: number): Promise<GateOutcome> {
    const started = Object.keys(cursor.visits).length > 0;
    return this.gate(run, def, "", `a:${run.automation_id}`, "", scope, cursor, now, !started);
  }

  /** A node's gate, met at each fresh visit (retries of the visit pass its rate limit but not its slots). */
  atStep(run: Run, node: NodeDef, nodeIndex: number, stepKey: string, fresh: boolean, cursor: Cursor, scope: CelScope, now: number): Promise<GateOutcome> {
    return this.gate(run, node, stepKey, `n:${run.automation_id}:${node.key}`, `/nodes/${nodeIndex}`, scope, cursor, now, fresh);
  }

  private async gate(
    run: Run,
    f: FlowFields,
    stepKey: string,
    scopeId: string,
    at: string,
    scope: CelScope,
    cursor: Cursor,
    now: number,
    withRate: boolean,
  ): Promise<GateOutcome> {
    let slots: FlowSlotGate[];
    let rate: FlowRateGate | null = null;
    try {
      slots = await this.slots(run.workspace_id, f, scopeId, at, scope);
      const r = f.rate_limit;
      if (r !== undefined && withRate) {
        rate = { scope: `r${scopeId}`, key: renderFlowKey(r.key, scope, `${at}/rate_limit/key`), limit: r.limit, period_ms: r.period_ms, on_limit: r.on_limit };
      }
    } catch (err) {
      if (!(err instanceof FlowKeyError)) throw err;
      return {
        kind: "fail",
        error: stepError("flow.key_failed", err.message, false, { pointer: err.pointer, ...(err.cause_code ? { cause: err.cause_code } : {}) }),
      };
    }
    if (slots.length === 0 && rate === null) return { kind: "pass" };
    const req = { workspace_id: run.workspace_id, run_id: run.id, step_key: stepKey, slots, rate, reserved_at: rate ? (cursor.flow_turn ?? null) : null };
    const d: FlowDecision = await this.queue.run(gateKeys(run.workspace_id, slots, rate), () => this.store.acquireFlow(req, now));
    switch (d.kind) {
      case "pass": {
        delete cursor.flow_turn;
        if (slots.length > 0) {
          const list = this.held.get(run.id) ?? [];
          if (!list.some((h) => h.step_key === stepKey)) list.push({ workspace_id: run.workspace_id, step_key: stepKey, gates: slots });
          this.held.set(run.id, list);
        }
        return { kind: "pass" };
      }
      case "wait_slot":
        this.parked.set(run.id, { workspace_id: run.workspace_id, step_key: stepKey, gates: [d.gate] });
        // No due time: the releaser's wake (or the sweep, for a wake lost with a crash) makes it due.
        return { kind: "park", waiting_for: "concurrency", until: null };
      case "wait_rate":
        cursor.flow_turn = d.until;
        return { kind: "park", waiting_for: "rate_limit", until: d.until };
      case "skip_rate":
        return { kind: "exit" };
    }
  }

  private async slots(workspaceId: string, f: FlowFields, scopeId: string, at: string, scope: CelScope): Promise<FlowSlotGate[]> {
    // A shared limit deleted after the definition was applied no longer holds anyone back.
    const shared = f.limits === undefined ? [] : await this.store.getSharedLimits(workspaceId, f.limits);
    return slotGates(f, scopeId, at, scope, shared);
  }

  /**
   * After a commit of this run (`flow`: its automation has limits, or its version is unknown):
   * slots the commit released (the run ended, the step's row is in, or the run left `running`)
   * wake their keys' oldest waiters; a park on a slot wakes a free slot's waiters (itself, when
   * the slot freed meanwhile). What this process holds is updated now; the wake-ups run in the
   * returned promise (how many waiters they made due), null when there is none to make (most
   * commits: nothing more is done for them).
   */
  afterCommit(run: Run, cp: Checkpoint, now: number, flow: boolean): Promise<number> | null {
    const wake: Held[] = [];
    const list = this.held.get(run.id);
    // A run of an automation with limits that ended without this drive taking its slots (they
    // were taken at its creation, and it was quarantined, stopped at its claim, ...): its keys'
    // waiters are woken from its slot rows.
    const ofRun = flow && list === undefined && cp.state.completed_at !== null;
    if (list !== undefined) {
      const st = cp.state;
      const steps = new Set(cp.steps.map((s) => s.idempotency_key));
      const ended = st.completed_at !== null;
      const keep = list.filter((h) => {
        const released = ended || (h.step_key !== "" && (steps.has(h.step_key) || st.status !== "running"));
        if (released) wake.push(h);
        return !released;
      });
      if (keep.length > 0) this.held.set(run.id, keep);
      else this.held.delete(run.id);
    }
    const p = this.parked.get(run.id);
    if (p !== undefined && cp.state.waiting_for === "concurrency") {
      this.parked.delete(run.id);
      wake.push(p);
    }
    if (!ofRun && wake.length === 0) return null;
    return this.wakeAfter(run, ofRun, wake, now);
  }

  private async wakeAfter(run: Run, ofRun: boolean, wake: readonly Held[], now: number): Promise<number> {
    let woken = ofRun ? await this.store.wakeFlowOfRun(run.workspace_id, run.id, now) : 0;
    for (const h of wake) woken += await this.wake(h.workspace_id, h.gates, now);
    return woken;
  }

  private wake(ws: string, gates: readonly FlowSlotGate[], now: number): Promise<number> {
    const keys = gateKeys(ws, gates);
    const id = keys.join("\u0001");
    const queued = this.queuedWakes.get(id);
    if (queued !== undefined) return queued.done;
    const entry = { started: false };
    const done = this.queue.run(keys, () => {
      // Running now (perhaps at once, when nothing was ahead): later releases need a wake of their own.
      entry.started = true;
      if (this.queuedWakes.get(id)?.entry === entry) this.queuedWakes.delete(id);
      return this.store.wakeFlowWaiters(ws, gates, now);
    });
    if (!entry.started) this.queuedWakes.set(id, { entry, done });
    return done;
  }

  /**
   * The drive ended: forget what it took here. Its last commit's wake-ups already read this (the
   * next claim's gate takes the run's slots again, as held); a drive that lost its lease leaves
   * its slots to the store's rules (a step's lapses with the lease).
   */
  forget(runId: string): void {
    this.held.delete(runId);
    this.parked.delete(runId);
  }
}
