// The dispatcher turns stored events into runs in three steps, so nothing a tenant wrote (a
// trigger filter) is evaluated while a transaction, a connection or a row lock is held:
//   1. lease: a short write leases a batch of undispatched events (their attempt counted) and a
//      plain read takes the active automations of their workspaces;
//   2. plan: outside any transaction, each event is matched against them (yielding the event loop
//      between events); an event whose planning throws is handed back with the error;
//   3. commit: one short transaction claims the planned events still undispatched, checks the
//      automations are still the ones planned against (else the event is planned again), inserts
//      the runs (unique on automation + event) and marks the events dispatched.
// An event whose dispatch did not complete `quarantineAfter` times is marked undeliverable.

import type { Budget } from "../model/cel-budget.js";
import { automationVerdict, type TriggerEvent } from "../model/triggers.js";
import { crashPoint, crashPointSync } from "./crashpoints.js";
import { sendAgainOnce } from "./send-again.js";
import type { Clock } from "./clock.js";
import type { EngineEmitter } from "./events.js";
import { admissionMayWake } from "./flow-gates.js";
import { eventMayRunAs, runAsUser } from "./identity.js";
import { newRun, sharedLimitsOf } from "./new-run.js";
import { LoopingTask } from "./loop.js";
import { FlowWindows, routeFlow, type FlowEntry } from "./flow-intake.js";
import { activeSignature, type Automation, type NewRun, type SharedLimit, type Store, type StoredEvent } from "./store.js";
import type { Runner } from "./runner.js";
import type { LoadedVersion, VersionCache } from "./versions.js";
import { workspaceBudget } from "./workspace-settings.js";

/** Default of WEFT_QUARANTINE_AFTER: lost claims of a run, failed dispatches of an event. */
export const DEFAULT_QUARANTINE_AFTER = 3;

export interface DispatcherOptions {
  batch: number;
  pollMs: number;
  /** How long a round's lease on its events lasts (a dead dispatcher's events are leased again after it). */
  leaseMs: number;
  /** Failed dispatches after which an event is undeliverable. */
  quarantineAfter: number;
}

/**
 * The runner of this process, when it has one: leases for the runs a dispatch inserts that it will
 * drive at once, settled once the commit has answered (Runner.leaseForInserts, settleLeases).
 */
export type DispatchLeases = Pick<Runner, "leaseForInserts" | "settleLeases">;

interface Candidate {
  automation: Automation;
  version: LoadedVersion;
  /** The shared limits its definition names, read for this round (admission at creation). */
  shared?: SharedLimit[] | undefined;
}

/** The runs one event starts: at most one per automation of its workspace whose triggers match. */
export function planEvent(ev: StoredEvent, candidates: readonly Candidate[], now: number, budget?: Budget): NewRun[] {
  const out: NewRun[] = [];
  const body = ev.body as TriggerEvent & { automation_id?: string };
  for (const c of candidates) {
    if (c.automation.workspace_id !== ev.workspace_id) continue;
    if (!automationVerdict(c.automation.id, c.version.definition.triggers, body, budget).matched) continue;
    // The poster could not have chosen this automation's run-as: no run (explain: run_as_not_allowed).
    if (!eventMayRunAs(ev, runAsUser(c.version.definition))) continue;
    out.push(
      newRun(
        c.version,
        {
          workspace_id: ev.workspace_id,
          event: ev.body as unknown as Record<string, unknown>,
          event_id: ev.id,
          dedupe_key: `evt:${ev.id}`,
          trigger_type: ev.body.type,
          context: {},
          subject_override: null,
          subject_fallback: ev.subject_id,
          received_at: ev.received_at,
        },
        now,
        budget,
        c.shared,
      ),
    );
  }
  return out;
}

/** Which automations events start (the same rule, for a list of events). */
export function planEvents(events: readonly StoredEvent[], candidates: readonly Candidate[], now: number): NewRun[] {
  return events.flatMap((ev) => planEvent(ev, candidates, now));
}

const yieldToLoop = () => new Promise<void>((resolve) => setImmediate(resolve));

export class Dispatcher extends LoopingTask {
  /** Debounce and batch windows: closed when due, their deadlines wake this loop (flow-intake.ts). */
  private readonly flowWindows: FlowWindows;
  constructor(
    private readonly store: Store,
    private readonly versions: VersionCache,
    private readonly clock: Clock,
    private readonly events: EngineEmitter,
    private readonly opts: DispatcherOptions,
    private readonly onRuns: (n: number) => void,
    private readonly leases: DispatchLeases | null = null,
  ) {
    super("dispatch", events, opts.pollMs);
    this.flowWindows = new FlowWindows(store, clock, () => this.poke());
  }

  protected round(): Promise<boolean | number> {
    return this.dispatchRound();
  }

  /** One dispatch round; returns whether to go again at once (a full batch, or events to plan again). */
  async once(): Promise<boolean> {
    return (await this.dispatchRound()) === true;
  }

  /**
   * One dispatch round: true to go again at once (more to do); with nothing leased, how long until
   * the first live lease of an undispatched event lapses (its dispatcher may have died: its events
   * are taken then, not at whichever poll comes next), or false (sleep till a wake-up or the poll).
   */
  private async dispatchRound(): Promise<boolean | number> {
    const now = this.clock.now();
    const closed = await this.flowWindows.close(now);
    for (const r of closed) this.events.emit("run:created", { run: r });
    if (closed.length > 0) this.onRuns(closed.length);
    // A lease stands for a living dispatcher, so it runs on real time: the engine's clock (which
    // a test may move by hours) decides what is due, not whether a dispatcher died.
    const {
      events: leased,
      active,
      undeliverable,
      next_lapse,
    } = await this.store.leaseEvents(Date.now(), this.opts.leaseMs, this.opts.batch, this.opts.quarantineAfter);
    for (const e of undeliverable) this.emitUndeliverable(e);
    if (leased.length === 0) return next_lapse === null || next_lapse === undefined ? false : Math.max(1, next_lapse - Date.now() + 1);
    // The lease is short (a dead dispatcher's events wait at most that long) and renewed while
    // this round plans and commits, however long that takes.
    const renew = setInterval(
      () => {
        this.store
          .renewDispatch(
            leased.map((e) => e.id),
            Date.now() + this.opts.leaseMs,
          )
          .catch((error) => this.events.emit("engine:error", { where: "dispatch lease renewal", error }));
      },
      Math.max(100, Math.floor(this.opts.leaseMs / 3)),
    );
    renew.unref();
    try {
      return await this.dispatchLeased(leased, active, now);
    } finally {
      clearInterval(renew);
    }
  }

  /** Plan the leased events and commit them (see once). */
  private async dispatchLeased(leased: StoredEvent[], active: Automation[], now: number): Promise<boolean> {
    const candidates = await this.candidates(active);
    const { runs, planned, failed, flow } = await this.plan(leased, candidates, now);
    const seen: Record<string, string> = {};
    for (const ws of new Set(leased.map((e) => e.workspace_id))) seen[ws] = activeSignature(active.filter((a) => a.workspace_id === ws));
    const granted = this.leases?.leaseForInserts(runs) ?? new Set<string>();
    let res: Awaited<ReturnType<Store["commitDispatch"]>>;
    try {
      // Sent again once if it fails (send-again.ts): a first try that did commit left its events
      // dispatched, which the second leaves out (and failDispatch below leaves alone).
      res = await sendAgainOnce(
        () =>
          this.store.commitDispatch(now, { event_ids: planned, runs, seen, flow }, () => {
            if (planned.length > 0) crashPointSync("dispatcher:inside-transaction");
          }),
        (error) => this.events.emit("engine:error", { where: `dispatch commit of ${planned.length} events (sent again)`, error }),
      );
    } catch (err) {
      this.leases?.settleLeases(granted, []);
      // The commit failed (rolled back): hand the events back now, their attempt counted, rather
      // than leave them leased (and undispatched) until the lease lapses.
      const error = `the dispatch commit failed: ${err instanceof Error ? err.message : String(err)}`;
      const ids = leased.map((e) => e.id);
      for (const e of await this.store.failDispatch(ids, error, Date.now(), this.opts.quarantineAfter).catch(() => [])) this.emitUndeliverable(e);
      throw err;
    }
    // A planned event the commit could not lock (another round held it) was neither dispatched
    // nor handed back: hand it back now rather than leave it leased until the lease lapses.
    const settled = new Set([...res.events.map((e) => e.id), ...res.stale]);
    const leftover = planned.filter((id) => !settled.has(id));
    if (leftover.length > 0) {
      for (const e of await this.store.failDispatch(leftover, "its dispatch commit found it locked by another round", Date.now(), this.opts.quarantineAfter)) {
        this.emitUndeliverable(e);
      }
    }
    this.flowWindows.arm(res.flow_due);
    if (res.events.length > 0) await crashPoint("dispatcher:after-commit");
    for (const r of res.runs) this.events.emit("run:created", { run: r });
    for (const e of res.events) this.events.emit("event:dispatched", { event_id: e.id, runs: res.runs.filter((r) => r.event_id === e.id).map((r) => r.id) });
    // Runs created holding this process's lease are driven here at once; every grant is settled.
    this.leases?.settleLeases(granted, res.runs);
    // Runs left to a claim (no lease granted: created pending): wake it.
    // Waiters the admission woke (admissionMayWake) are due now too.
    // Runs parked on the named events dispatched (waits that matched) are due now too.
    if (res.runs.some((r) => r.status === "pending") || admissionMayWake(runs) || (res.woken ?? 0) > 0) this.onRuns(res.runs.length);
    // After the commit: the events planned fine are dispatched whatever becomes of these.
    for (const [error, ids] of failed) {
      for (const e of await this.store.failDispatch(ids, error, Date.now(), this.opts.quarantineAfter)) this.emitUndeliverable(e);
    }
    return (
      leased.length === this.opts.batch || (res.flow_due ?? Number.POSITIVE_INFINITY) <= now || res.stale.length > 0 || failed.size > 0 || leftover.length > 0
    );
  }

  /** Each active automation with its current version (versions are immutable: loaded once, cached). */
  private async candidates(active: readonly Automation[]): Promise<Candidate[]> {
    const out: Candidate[] = [];
    for (const a of active) {
      const version = await this.versions.get(a.id, a.current_version);
      if (version) out.push({ automation: a, version, shared: await sharedLimitsOf(this.store, a.workspace_id, version.definition) });
    }
    return out;
  }

  /** Plan event by event outside any transaction; an event whose planning throws is set aside with its error. */
  private async plan(events: readonly StoredEvent[], candidates: readonly Candidate[], now: number) {
    const runs: NewRun[] = [];
    const flow: FlowEntry[] = [];
    const defs = new Map(candidates.map((c) => [c.automation.id, c.version.definition]));
    const planned: string[] = [];
    const failed = new Map<string, string[]>();
    for (const ev of events) {
      try {
        crashPointSync("dispatcher:planning", `${ev.id} ${ev.subject_id ?? ""}`);
        // Filters evaluate under the event's workspace's expression budget (cached a few seconds).
        const budget = await workspaceBudget(this.store, ev.workspace_id);
        // Debounce and batch hold their runs in windows (flow-intake.ts); the rest start now.
        const routed = routeFlow(planEvent(ev, candidates, now, budget), (id) => defs.get(id), budget);
        runs.push(...routed.runs);
        flow.push(...routed.flow);
        planned.push(ev.id);
      } catch (err) {
        const error = err instanceof Error ? err.message : String(err);
        failed.set(error, [...(failed.get(error) ?? []), ev.id]);
      }
      await yieldToLoop();
    }
    return { runs, planned, failed, flow };
  }

  private emitUndeliverable(e: StoredEvent): void {
    this.events.emit("event:undeliverable", { event_id: e.id, workspace_id: e.workspace_id, reason: e.undeliverable_reason ?? "" });
  }
}
