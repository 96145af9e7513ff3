// The runner: claims due runs with a lease and drives each through its pinned version.
//
// Fast nodes run inline and their step rows wait for the next commit; a slow node runs outside
// any transaction (no connection held) and its result is checkpointed, through the group
// committer, with a compare-and-swap on the run's rev and lease before the next node starts.
// A worker that dies loses its lease; the next claim resumes at the last checkpoint and re-runs
// the step under the same idempotency key (run/node/visit). That is an interruption, not a failure.

import type { NodeDef } from "../model/definition.js";
import { toStepError, StepFailure, type StepError } from "../model/errors.js";
import type { CelScope } from "../model/expressions.js";
import { DEFAULT_RETRY, decideRetry } from "../model/retry.js";
import { isTerminal, transition, type ExitReason, type RunStatus } from "../model/run-status.js";
import type { StepOutcome } from "../model/step-outcome.js";
import type { Clock } from "./clock.js";
import { Committer } from "./committer.js";
import type { EngineEmitter } from "./events.js";
import type { HttpClient } from "./http.js";
import type { NodeHandler, NodeReads, NodeResult, NodeSettings, ParkWait } from "./nodes/types.js";
import {
  claimOrder,
  type Approval,
  type AuditEntry,
  type Checkpoint,
  type Cursor,
  type LogLine,
  type NewRun,
  type NewStepRun,
  type Run,
  type RunControl,
  type RunItem,
  type RunState,
  type Store,
} from "./store.js";
import type { RegisteredAction } from "./actions.js";
import type { PolicyViolation } from "../model/permissions.js";
import type { LoadedVersion, VersionCache } from "./versions.js";
import { crashPoint } from "./crashpoints.js";
import { PauseView } from "./pauses.js";
import { HostPauses } from "./host-pauses.js";
import { Loop } from "./loop.js";
import { Redactor } from "./secrets.js";
import { withExpressionPointer } from "../model/cel-errors.js";
import { runScope, scopeForNode } from "./scope.js";
import { workspaceBudget } from "./workspace-settings.js";
import { DEFAULT_BUDGET, type Budget } from "../model/cel-budget.js";
import { FlowGates, hasFlow, type GateOutcome } from "./flow-gates.js";

/** Node visits without a pause point before a run is stopped as a runaway loop. */
export const LOOP_CAP = 200;

/** A run whose pause state could not be read is claimed again after this long. */
const PAUSE_CHECK_RETRY_MS = 1000;

/** Which due runs may be driven before a claim (Runner.driveUnclaimed): parked or new ones. */
const UNCLAIMED_STATUSES: ReadonlySet<string> = new Set(["pending", "waiting", "retrying"]);

/** Runs claimed per poll beyond capacity, for fairness (see the claim loop). */
const FAIR_SHARE_CLAIM = 4;

export interface RunnerOptions {
  owner: string;
  leaseMs: number;
  /** Runs driven at once by this process; slow steps hold only memory, so this can be large. */
  maxInFlight: number;
  claimBatch: number;
  /** Longest sleep between claims when idle (other processes may have made work due). */
  pollMs: number;
  commitBatch: number;
  commitConcurrency: number;
  /** Claims lost in a row (no commit between) after which a run is ended failed, `engine.quarantined`. */
  quarantineAfter: number;
}

/** What nodes may use beyond the run itself. */
export interface RunnerServices {
  actions: ReadonlyMap<string, RegisteredAction>;
  settings: NodeSettings;
  /** The workspace's secrets, decrypted (loaded only for versions that mention `secrets`). */
  secrets?: (workspaceId: string) => Promise<ReadonlyMap<string, string>>;
  /** This process recorded a destination pause: tell the others (wake-up kind "hosts"). */
  hostPaused?: () => void;
  /** Bytes of JSON a step's output and the run's context may take. */
  limits?: { stepOutputBytes: number; contextBytes: number };
}

export class Runner {
  private readonly committer: Committer;
  private readonly inFlight = new Map<string, AbortController>();
  /** The drive of each run in flight here (an operator's stop or cancel reaches it at once). */
  private readonly drives = new Map<string, Drive>();
  private readonly loop: Loop;
  private renewTimer: NodeJS.Timeout | null = null;
  private readonly drivers = new Set<Promise<void>>();
  /** Runs driven here before any claim (claimed by their first commit): no lease to renew yet. */
  private readonly unclaimed = new Map<string, () => void>();
  /** Settles when that run's unclaimed drive has made its first commit (or ended without one). */
  private readonly firstCommits = new Map<string, Promise<void>>();
  /** Runs whose unclaimed drive ended without a commit: the next one claims them first (lease, quarantine count). */
  private readonly claimFirst = new Set<string>();
  /** Which subjects are paused (cached; see pauses.ts). */
  readonly pauses: PauseView;
  /** Which destinations asked to be left alone (cached; see host-pauses.ts). */
  readonly hostPauses: HostPauses;
  private readonly reads: NodeReads;
  /** Concurrency, shared and rate limits (flow-gates.ts). */
  private readonly gates: FlowGates;
  /**
   * The last claim round left no due run behind and had room: a run created here now may be
   * driven at once (offer) without waiting for the claim loop's read, as no due run is ahead of it.
   */
  private caughtUp = false;
  /**
   * A claim is in flight: a run offered now could be both driven unclaimed and claimed by it (the
   * claim reads after the run's commit), driven twice; it is left to the next round instead.
   */
  private claiming = false;
  /** Leases granted to runs being inserted (leaseForInserts), not yet settled (settleLeases). */
  private reserved = 0;
  /** The loop sleeps until an unclaimed drive's first commit (see claimRound). */
  private awaitingFirstCommits = false;

  constructor(
    private readonly store: Store,
    private readonly versions: VersionCache,
    private readonly handlers: ReadonlyMap<string, NodeHandler>,
    private readonly clock: Clock,
    private readonly events: EngineEmitter,
    private readonly http: HttpClient,
    private readonly opts: RunnerOptions,
    private readonly services: RunnerServices = { actions: new Map(), settings: {} },
  ) {
    this.committer = new Committer(store, opts.owner, events, { maxBatch: opts.commitBatch, maxConcurrent: opts.commitConcurrency });
    this.pauses = new PauseView(store, clock);
    this.hostPauses = new HostPauses(store, () => services.hostPaused?.());
    // What nodes read and write in the store; destination pauses through this process's cache.
    this.reads = {
      findEvents: (...a) => store.findEvents(...a),
      listItems: (...a) => store.listItems(...a),
      getApproval: (...a) => store.getApproval(...a),
      decideApproval: (...a) => store.decideApproval(...a),
      hostPausedUntil: (...a) => this.hostPauses.hostPausedUntil(...a),
      pauseHost: (...a) => this.hostPauses.pauseHost(...a),
    };
    this.gates = new FlowGates(store, opts.leaseMs);
    this.loop = new Loop("claim", events, () => this.claimRound(), opts.pollMs);
  }

  /**
   * Park the run if its subject is paused (checked at claim and after every checkpoint). True:
   * the run must not go on (the caller commits the drive's state and lets it go). A pause that
   * cannot be read fails closed: the run is handed back, due again shortly, never run as if
   * unpaused and never failed for it.
   */
  private async parkIfPaused(d: Drive): Promise<boolean> {
    const r = d.run;
    if (r.subject_id === null) return false;
    let until: number | null | undefined;
    try {
      until = await this.pauses.pausedUntil({ workspace_id: r.workspace_id, subject_id: r.subject_id, automation_id: r.automation_id });
    } catch (error) {
      this.events.emit("engine:error", { where: "pause check", error });
      d.interrupt(this.clock.now() + PAUSE_CHECK_RETRY_MS);
      return true;
    }
    if (until === undefined) return false;
    d.park("waiting", "subject_resume", until);
    return true;
  }

  start(): void {
    if (this.renewTimer) return;
    this.loop.start();
    // Node timers cap at 2^31-1 ms (beyond, they fire every 1 ms).
    this.renewTimer = setInterval(() => void this.renew(), Math.max(50, Math.min(2_000_000_000, Math.floor(this.opts.leaseMs / 3))));
    this.renewTimer.unref();
  }

  /** Stop claiming; abort in-flight steps and wait for drivers (they hand their runs back as interrupted). */
  async stop(): Promise<void> {
    await this.loop.stop();
    if (this.renewTimer) clearInterval(this.renewTimer);
    this.renewTimer = null;
    for (const c of this.inFlight.values()) c.abort();
    await Promise.allSettled([...this.drivers]);
  }

  /** Something became due (a run was created, a clock moved): claim now instead of at the next poll. */
  poke(): void {
    this.loop.poke();
  }

  /**
   * A run this process just created and committed, due now: drive it at once, without the claim
   * loop's wake-up, read and claim, when nothing due is waiting ahead of it (the last claim round
   * left none) and there is room. Its first commit claims it (Checkpoint.claim), as in the
   * unclaimed pass: before a node that reaches outside this process that commit takes the lease,
   * so no effect starts unleased, and if another worker took the run first the drive is dropped
   * having done nothing outside. False: not taken (the caller wakes the claim loop instead).
   */
  offer(run: Run): boolean {
    if (!this.mayTakeNew()) return false;
    const now = this.clock.now();
    if (run.due_at === null || run.due_at > now) return false;
    // A copy: the drive mutates its run, and the caller hands this one back (the enroll's answer).
    return this.takeUnclaimed(structuredClone(run), now);
  }

  /** Every slot taken (drives in flight and leases granted to inserts): a claim now would take nothing. */
  get full(): boolean {
    return this.inFlight.size + this.reserved >= this.opts.maxInFlight;
  }

  /**
   * Whether a run created here may be driven at once (offer, leaseForInserts): the runner is running,
   * the last claim round left no due run behind, no claim is in flight (it could read the run after
   * its commit and drive it a second time), and there is room, leases granted to inserts counted.
   */
  private mayTakeNew(): boolean {
    return this.renewTimer !== null && this.caughtUp && !this.claiming && this.inFlight.size + this.reserved < this.opts.maxInFlight;
  }

  /**
   * Leases for runs this process is about to insert (an enrollment's, a dispatch's) that it will
   * drive as soon as they are created: each is inserted held by this worker (NewRun.lease_owner,
   * due at the lease's end), so its drive starts claimed and its first step needs no claim commit.
   * Only runs due now, created pending, with no admission that could park them and no first park;
   * granted in the order a claim would take them (claimOrder) while offer's terms hold (nothing due
   * left behind, no claim in flight, room, grants counted). The granted ids; every grant is settled
   * by settleLeases, whatever the insert did.
   */
  leaseForInserts(runs: readonly NewRun[]): Set<string> {
    const granted = new Set<string>();
    const now = this.clock.now();
    const eligible = runs.filter(
      (r): r is NewRun & { due_at: number } =>
        r.status === "pending" && r.admit === undefined && r.admit_rate === undefined && r.first_park === undefined && r.due_at !== null && r.due_at <= now,
    );
    for (const r of claimOrder(eligible, eligible.length)) {
      if (!this.mayTakeNew()) break;
      this.reserved++;
      r.lease_owner = this.opts.owner;
      r.due_at = now + this.opts.leaseMs;
      granted.add(r.id);
    }
    return granted;
  }

  /**
   * Settle the grants of leaseForInserts once the insert has answered (`created`: the runs it
   * created; none when it failed): each run created held by this worker is driven here at once,
   * claimed; the other grants are released. The ids of the runs driven. A run left undriven (this
   * process is stopping) is claimed by a worker once its lease lapses, as after a crash.
   */
  settleLeases(granted: ReadonlySet<string>, created: readonly Run[]): Set<string> {
    const driven = new Set<string>();
    this.reserved = Math.max(0, this.reserved - granted.size);
    for (const run of created) {
      if (!granted.has(run.id) || run.lease_owner !== this.opts.owner || this.renewTimer === null || this.inFlight.has(run.id)) continue;
      // A copy: the drive mutates its run, and the caller hands this one back (the enroll's answer).
      this.startDriver(structuredClone(run));
      driven.add(run.id);
    }
    return driven;
  }

  /**
   * A new run whose first node is a delay, taken in memory before its insert: when the delay parks
   * it, the run is created parked (NewRun.first_park: its cursor, due time and the step's row,
   * exactly as the drive's park commit would write them), so a timer costs one write, not an insert
   * and then a park. The step runs through the same code as in a drive (step). Not for a run with
   * flow control (its gates decide at the run's start), one whose definition names secrets, or one
   * not pending and due now; a delay that does not park (its time is past) leaves the run as it is.
   */
  async parkAtCreation(run: NewRun, v: LoadedVersion, now: number): Promise<void> {
    const node = run.cursor.node === null ? undefined : v.nodes.get(run.cursor.node);
    if (node?.kind !== "delay" || v.usesSecrets || hasFlow(v.definition) || run.admit !== undefined || run.admit_rate !== undefined) return;
    if (run.status !== "pending" || run.due_at === null || run.due_at > now) return;
    // What a step may change is copied (the run is inserted as it is unless the step parks it):
    // its context and steps, and its cursor, whose only nested state a step changes in place is
    // its visits (step); the rest of a cursor is replaced, not mutated.
    // Field by field (a spread of the run gaining the fields a NewRun lacks cost tens of µs).
    const probe: Run = {
      id: run.id,
      workspace_id: run.workspace_id,
      automation_id: run.automation_id,
      version: run.version,
      event_id: run.event_id,
      dedupe_key: run.dedupe_key,
      trigger_type: run.trigger_type,
      subject_id: run.subject_id,
      status: "running",
      exit_reason: run.exit_reason,
      current_node_key: run.current_node_key,
      waiting_for: run.waiting_for,
      waiting_until: run.waiting_until,
      event: run.event,
      context: { ...run.context },
      steps: { ...run.steps },
      cursor: { ...run.cursor, visits: { ...run.cursor.visits } },
      run_as: run.run_as,
      trace_id: run.trace_id,
      items_total: 0,
      items_failed: 0,
      interruptions: 0,
      unsettled_claims: 0,
      due_at: run.due_at,
      priority: run.priority,
      priority_error: run.priority_error,
      control: null,
      lease_owner: null,
      rev: 0,
      started_at: run.started_at,
      completed_at: null,
      updated_at: now,
    };
    const d = new Drive(probe, v);
    d.budget = await workspaceBudget(this.store, run.workspace_id);
    if ((await this.step(d, d.stopSignal)) !== "stop") return;
    const cp = d.checkpoint(false, this.clock.now());
    const st = cp.state;
    if (st.status !== "waiting" || st.waiting_for === null || st.wait !== null || cp.items || cp.approvals || cp.audit || cp.consumed) return;
    run.first_park = { waiting_for: st.waiting_for, waiting_until: st.waiting_until, due_at: st.due_at, cursor: st.cursor, steps: cp.steps };
  }

  /** An operator stopped or cancelled a run this process may be driving: apply it now, not at the next checkpoint. */
  control(runId: string, control: RunControl): void {
    this.drives.get(runId)?.requestControl(control);
  }

  get busy(): number {
    return this.inFlight.size;
  }

  /** No drive in flight and the claim loop asleep (a test moving a fake clock waits for it). */
  get idle(): boolean {
    return this.inFlight.size === 0 && this.loop.idle;
  }

  /** The flow sweep in flight, if any (see claimRound). */
  private sweeping: Promise<void> | null = null;

  /** Wake-ups after commits (FlowGates.afterCommit) in flight. */
  private flowWakes = 0;

  /**
   * Whether a flow sweep or a commit's wake-up is in flight: either may be about to make
   * concurrency waiters due (a test settles on it).
   */
  get flowWakeInFlight(): boolean {
    return this.sweeping !== null || this.flowWakes > 0;
  }

  /** One claim; true when a full batch came back (claim again at once), else how long to sleep. */
  private async claimRound(): Promise<boolean | number> {
    // At capacity, still claim a few (up to a hard cap of 1.25 × maxInFlight): claims are
    // round-robin across automations, so another automation's run is not left waiting behind
    // a flood that already fills this worker.
    const room = this.opts.maxInFlight - this.inFlight.size;
    const over = Math.floor(this.opts.maxInFlight * 1.25) - this.inFlight.size;
    const want = room > 0 ? Math.min(room, this.opts.claimBatch) : Math.min(over, FAIR_SHARE_CLAIM);
    // One `now` for both: the claim takes only runs the unclaimed pass saw due (and left alone),
    // not ones that came due since, which the next pass drives unclaimed.
    const now = this.clock.now();
    // Off the claim's path: a store that cannot answer now sweeps again next period. Waiters it
    // woke are due now: claim again at once rather than at the next poll.
    if (this.sweeping === null) {
      this.sweeping = this.gates
        .sweep(now)
        .then((woke) => {
          if (woke > 0) this.poke();
        })
        .catch(() => {})
        .finally(() => (this.sweeping = null));
    }
    // The unclaimed pass takes at most half a batch, so the claim's round-robin across automations
    // still shares out the rest when one automation floods; the claim is skipped when the pass
    // saw every due run and took them all.
    const { taken, more } = room > 0 ? await this.driveUnclaimed(now, Math.ceil(want / 2)) : { taken: 0, more: true };
    const rest = want - taken;
    let claimed: Run[] = [];
    if (rest > 0 && more) {
      // Not before the unclaimed drives have committed: the claim would take them too (and no run
      // is offered meanwhile, for the same reason).
      this.claiming = true;
      try {
        await Promise.all([...this.firstCommits.values()]);
        claimed = await this.store.claimRuns(this.opts.owner, now, this.opts.leaseMs, rest);
      } finally {
        this.claiming = false;
      }
    }
    for (const run of claimed) this.startDriver(run);
    // Nothing due was left behind (the pass saw every due run, or the claim took fewer than asked).
    this.caughtUp = room > 0 && (!more || claimed.length < rest);
    if (room > 0 && taken + claimed.length > 0 && taken + claimed.length === want) return true;
    // Runs driven unclaimed are still due until their first commit, which pokes the loop: sleep
    // till then rather than read them again and again.
    if (this.firstCommits.size > 0) {
      this.awaitingFirstCommits = true;
      return this.opts.pollMs;
    }
    return this.idleDelay();
  }

  /**
   * Due runs whose next node runs in process (no effect outside the run: set, branch, a delay's
   * end, a wait's check, end) are driven without a claim: the drive's first commit claims the
   * run with a compare-and-swap (still unheld, still due, no stop or cancel, same rev), so such a
   * timer fires in one commit instead of a claim and a commit. A drive whose run was taken
   * meanwhile (by another worker, or stopped by an operator) is refused and dropped, having done
   * nothing outside this process; a drive that reaches a node that could (an action, an HTTP
   * call) takes the lease first, by the same kind of commit. Resolves, without waiting for
   * their commits, with how many it took and whether due runs are left for the claim.
   */
  private async driveUnclaimed(now: number, limit: number): Promise<{ taken: number; more: boolean }> {
    if (limit <= 0) return { taken: 0, more: true };
    // The read may be older than a drive of this process that ends while it is in flight: such a
    // run is not in flight any more but may still show as due in what the read returns, and taking
    // it again would run its node a second time (the second drive's commit is refused, but a pure
    // action would have run twice). Drives that end until this pass is over are not taken.
    const ended = new Set<string>();
    this.endedDuringRead = ended;
    try {
      return await this.takeDue(await this.store.dueRuns(now, limit), now, limit, ended);
    } finally {
      this.endedDuringRead = null;
    }
  }

  /** Runs whose drive ended while driveUnclaimed's read and pass were in flight; null when none is. */
  private endedDuringRead: Set<string> | null = null;

  private async takeDue(due: Run[], now: number, limit: number, ended: ReadonlySet<string>): Promise<{ taken: number; more: boolean }> {
    let taken = 0;
    let left = 0;
    for (const run of due) {
      // Still making its first commit from an earlier pass, or driven and ended since the read:
      // neither taken again nor left over.
      if (this.unclaimed.has(run.id) || ended.has(run.id)) continue;
      // Only what a claim would find parked or new: not a run a worker held (its lease lapsed),
      // nor one an operator is stopping; those are claimed, with a lease.
      const v =
        run.lease_owner === null && run.control === null && UNCLAIMED_STATUSES.has(run.status) && !this.inFlight.has(run.id) && !this.claimFirst.has(run.id)
          ? await this.versions.get(run.automation_id, run.version)
          : null;
      if (!v || !this.inProcess(v, run.cursor.node)) {
        left++;
        continue;
      }
      if (ended.has(run.id) || !this.takeUnclaimed(run, now)) continue;
      taken++;
    }
    return { taken, more: due.length >= limit || left > 0 };
  }

  /** Drive a due run no worker holds, to be claimed by its first commit (as of `now`). False: already driven here. */
  private takeUnclaimed(run: Run, now: number): boolean {
    if (this.unclaimed.has(run.id) || this.inFlight.has(run.id) || this.claimFirst.has(run.id)) return false;
    // What the claim would have set; the commit sets it in the store.
    run.status = "running";
    const first = this.startDriver(run, now);
    this.firstCommits.set(run.id, first);
    void first.then(() => {
      if (this.firstCommits.get(run.id) === first) this.firstCommits.delete(run.id);
      // The loop may be sleeping until it (see claimRound).
      if (this.awaitingFirstCommits) {
        this.awaitingFirstCommits = false;
        this.poke();
      }
    });
    return true;
  }

  /**
   * Whether the node at `key` only computes in this process: a fast built-in node, or a custom
   * action declared fast and granted no permission (by its declaration it only computes its
   * output, so it may run before the lease: a refused drive drops its result, and the run's next
   * drive computes it again). An action with any permission could reach outside: lease first.
   */
  private inProcess(v: LoadedVersion, key: string | null): boolean {
    const node = key === null ? undefined : v.nodes.get(key);
    if (node === undefined) return true;
    if (this.handlers.get(node.kind)?.class !== "fast") return false;
    const action = this.services.actions.get(node.kind);
    return action === undefined || action.effectivePermissions(null).length === 0;
  }

  private async idleDelay(): Promise<number> {
    try {
      const due = await this.store.nextDueAt();
      if (due === null) return this.opts.pollMs;
      return Math.max(1, Math.min(this.opts.pollMs, due - this.clock.now()));
    } catch {
      return this.opts.pollMs;
    }
  }

  /**
   * Drive a run. `claimAt`: not claimed yet (driveUnclaimed); the returned promise resolves once
   * the drive's first commit (which claims it) is settled, or the drive ends without one.
   */
  private startDriver(run: Run, claimAt: number | null = null): Promise<void> {
    // Our own lease may have lapsed (a stalled event loop) and we re-claimed the run: the old
    // drive must stop, and its cleanup must not remove the new one.
    this.inFlight.get(run.id)?.abort();
    this.claimFirst.delete(run.id);
    const ac = new AbortController();
    this.inFlight.set(run.id, ac);
    const claimed = claimAt === null ? Promise.resolve() : new Promise<void>((resolve) => this.unclaimed.set(run.id, resolve));
    this.events.emit("run:claimed", { run_id: run.id, automation_id: run.automation_id, interruptions: run.interruptions });
    const p = this.drive(run, ac.signal, claimAt)
      .catch((error) => {
        this.events.emit("engine:error", { where: `drive ${run.id}`, error });
        return false;
      })
      .then((ended) => {
        let unsettled = false;
        if (claimAt !== null && this.settleUnclaimed(run.id)) {
          // Ended with no commit (it threw): the next drive claims it first, with a lease, so a
          // run that keeps failing is retried after its lease and counted toward quarantine.
          if (this.claimFirst.size > 10_000) this.claimFirst.clear();
          this.claimFirst.add(run.id);
          unsettled = true;
        }
        if (this.inFlight.get(run.id) === ac) {
          this.inFlight.delete(run.id);
          this.endedDuringRead?.add(run.id);
        }
        this.drivers.delete(p);
        // The loop claims again for what this run leaves: its room (when due runs were left
        // behind), its next due time (parked), or the run itself. A run that ended, with nothing
        // left behind, leaves nothing to claim: no round (two reads) after every run.
        if (!ended || unsettled || !this.caughtUp) this.poke();
      });
    this.drivers.add(p);
    return claimed;
  }

  /** The unclaimed drive of this run made its first commit or ended: true when it was still waiting for it. */
  private settleUnclaimed(runId: string): boolean {
    const settle = this.unclaimed.get(runId);
    if (!settle) return false;
    this.unclaimed.delete(runId);
    settle();
    return true;
  }

  private renewing = false;

  private async renew(): Promise<void> {
    const ids = [...this.inFlight.keys()].filter((id) => !this.unclaimed.has(id));
    if (ids.length === 0 || this.renewing) return; // a slow renewal is not stacked on by the next tick
    this.renewing = true;
    try {
      const held = new Set(await this.store.renewLeases(this.opts.owner, ids, this.clock.now() + this.opts.leaseMs));
      for (const id of ids) {
        if (!held.has(id) && this.inFlight.has(id)) {
          // Another worker owns it now (we were too slow); stop what we are doing for it.
          this.events.emit("run:lease_lost", { run_id: id });
          this.inFlight.get(id)?.abort();
        }
      }
    } catch (error) {
      this.events.emit("engine:error", { where: "renew", error });
    } finally {
      this.renewing = false;
    }
  }

  // ---------- driving one run ----------

  /** Drive a run until it parks, ends or is let go; true when it ended (its last commit made it terminal). */
  private async drive(claimed: Run, signal: AbortSignal, claimAt: number | null = null): Promise<boolean> {
    const v = await this.versions.get(claimed.automation_id, claimed.version);
    let secrets: ReadonlyMap<string, string> = new Map();
    let secretsError: StepError | null = null;
    if (v?.usesSecrets && this.services.secrets) {
      try {
        secrets = await this.services.secrets(claimed.workspace_id);
      } catch (error) {
        // A step that names a secret then fails with this cause, not a puzzling missing variable.
        secretsError = toStepError(error);
        this.events.emit("engine:error", { where: `secrets for ${claimed.id}`, error });
      }
    }
    const d = new Drive(claimed, v, secrets);
    d.claimAt = claimAt;
    d.secretsError = secretsError;
    d.budget = await workspaceBudget(this.store, claimed.workspace_id);
    this.drives.set(claimed.id, d);
    try {
      if (this.quarantined(d)) {
        await this.checkpoint(d, false);
        return d.ended;
      }
      await this.driveLoop(d, signal);
      return d.ended;
    } finally {
      if (this.drives.get(claimed.id) === d) {
        this.drives.delete(claimed.id);
        this.gates.forget(claimed.id);
      }
    }
  }

  /**
   * A run whose earlier claims were all lost (the worker died or stalled before committing
   * anything) more than `quarantineAfter` times in a row is not driven again: it ends failed,
   * its current step recording `engine.quarantined`. Not driving it is the point: whatever it
   * does to a worker, it does no more.
   */
  private quarantined(d: Drive): boolean {
    const lost = d.run.unsettled_claims - 1;
    if (lost < this.opts.quarantineAfter) return false;
    const key = d.cursor.node ?? d.run.current_node_key ?? "(start)";
    const node = d.version?.nodes.get(key) ?? ({ key, kind: "unknown" } as NodeDef);
    const error = stepErr(
      "engine.quarantined",
      `quarantined: ${lost} claims in a row were lost before any commit (the worker died or stalled while driving this run); the limit is ${this.opts.quarantineAfter} (WEFT_QUARANTINE_AFTER)`,
      { lost_claims: lost, limit: this.opts.quarantineAfter },
    );
    d.finishWithError(node, error, this.clock.now(), "quarantined");
    this.events.emit("run:quarantined", { run_id: d.run.id, automation_id: d.run.automation_id, lost_claims: lost });
    return true;
  }

  private async driveLoop(d: Drive, signal: AbortSignal): Promise<void> {
    if (d.control === null && (await this.parkIfPaused(d))) {
      await this.checkpoint(d, false);
      return;
    }
    if (d.control === null && d.version !== null && hasFlow(d.version.definition)) {
      const gate = await this.gates.atRunStart(d.run, d.version.definition, d.cursor, d.scope(), this.clock.now());
      if (this.applyGate(d, gate, d.version.nodes.get(d.cursor.node ?? "")) === "stop") return void (await this.checkpoint(d, false));
    }
    // A slow step's result is committed before the next slow step starts (or with the park or the
    // end of the run, whichever comes first): no effect begins before the previous one is on
    // record, and a run whose last step is slow commits that step with its completion, once.
    let uncommitted = false;
    for (;;) {
      if (signal.aborted) {
        // Shutting down or the lease is gone: hand the run back as interrupted, due now, so
        // another worker resumes it at once (a lost lease makes this write a refused no-op).
        d.interrupt(this.clock.now());
        await this.checkpoint(d, false);
        return;
      }
      if (d.control !== null) {
        // An operator's stop or cancel, seen at a node boundary: end the run here.
        d.applyControl();
        await this.checkpoint(d, false);
        return;
      }
      if (uncommitted && this.nextIsSlow(d)) {
        if (!(await this.checkpoint(d, true))) return;
        uncommitted = false;
        if (d.control !== null) continue;
        if (await this.parkIfPaused(d)) {
          await this.checkpoint(d, false);
          return;
        }
      }
      if (d.claimAt !== null && d.version !== null && !this.inProcess(d.version, d.cursor.node)) {
        // The next node may reach outside this process: claim the run (take its lease) first.
        if (!(await this.checkpoint(d, true))) return;
        if (d.control !== null) continue;
      }
      const outcome = await this.step(d, signal);
      if (outcome === "aborted" || outcome === "continue") continue;
      if (outcome === "slow_done") {
        uncommitted = true;
        continue;
      }
      // parked or terminal: commit and release the lease
      await this.checkpoint(d, false);
      return;
    }
  }

  private nextIsSlow(d: Drive): boolean {
    const node = d.cursor.node === null ? undefined : d.version?.nodes.get(d.cursor.node);
    return node !== undefined && this.handlers.get(node.kind)?.class === "slow";
  }

  /**
   * Commit the drive's pending steps and state. False when the lease is gone (stop driving).
   * `midStep`: a node's flush of its items while it runs (NodeContext.saveItems).
   */
  private async checkpoint(d: Drive, keepLease: boolean, midStep = false): Promise<boolean> {
    const now = this.clock.now();
    const cp = d.checkpoint(keepLease, now, midStep);
    const claiming = d.claimAt !== null;
    if (d.claimAt !== null) cp.claim = { at: d.claimAt, lease_until: now + this.opts.leaseMs };
    await crashPoint("runner:before-checkpoint");
    let ok: boolean;
    try {
      const res = await this.committer.submit(cp);
      ok = res.applied;
      if (res.control !== null && keepLease) d.requestControl(res.control);
    } catch (error) {
      // Unknown whether it committed: stop driving; the lease lapses and a claim resumes the run.
      this.events.emit("engine:error", { where: `checkpoint ${d.run.id}`, error });
      return false;
    } finally {
      if (claiming) {
        d.claimAt = null;
        this.settleUnclaimed(d.run.id);
      }
    }
    if (!ok) {
      // Unclaimed, refused: another worker or an operator had the run first; nothing was lost.
      if (!claiming) this.events.emit("run:lease_lost", { run_id: d.run.id });
      return false;
    }
    await crashPoint("runner:after-checkpoint");
    d.committed();
    // Wake-ups of flow waiters, off the drive's path (most commits have none); the waiters they
    // make due are claimed at once, not at the next poll.
    const waking = this.gates.afterCommit(d.run, cp, this.clock.now(), d.version === null || hasFlow(d.version.definition));
    if (waking !== null) {
      this.flowWakes++;
      waking
        .then((woke) => {
          if (woke > 0) this.poke();
        })
        .catch((error) => this.events.emit("engine:error", { where: `flow wake ${d.run.id}`, error }))
        .finally(() => this.flowWakes--);
    }
    for (const s of cp.steps) {
      this.events.emit("step:finished", { run_id: d.run.id, automation_id: d.run.automation_id, trace_id: d.run.trace_id, step: s });
      for (const v of s.violations ?? []) this.events.emit("policy:violation", { run_id: d.run.id, node_key: s.node_key, violation: v });
    }
    const st = cp.state;
    if (st.status === "waiting" || st.status === "retrying") {
      this.events.emit("run:parked", { run_id: d.run.id, waiting_for: st.waiting_for ?? st.status, due_at: st.due_at });
    } else if (st.status === "interrupted") {
      this.events.emit("run:parked", { run_id: d.run.id, waiting_for: "interrupted", due_at: st.due_at });
    } else if (!keepLease) {
      d.ended = true;
      this.events.emit("run:finished", {
        run_id: d.run.id,
        automation_id: d.run.automation_id,
        status: st.status,
        exit_reason: st.exit_reason,
        trace_id: d.run.trace_id,
      });
    }
    return true;
  }

  /** An output or context over its limit fails the step (permanently) instead of bloating the run row. */
  private withinLimits(result: Extract<NodeResult, { kind: "next" }>, d: Drive): NodeResult {
    const lim = this.services.limits;
    if (!lim) return result;
    const out = result.output === undefined ? 0 : Buffer.byteLength(JSON.stringify(result.output));
    if (out > lim.stepOutputBytes) {
      return {
        kind: "fail",
        input: result.input,
        error: stepErr("limits.step_output_too_large", `the step's output is ${out} bytes; the limit is ${lim.stepOutputBytes}`, {
          bytes: out,
          limit: lim.stepOutputBytes,
        }),
      };
    }
    if (result.assign) {
      const ctx = Buffer.byteLength(JSON.stringify({ ...d.context, ...result.assign }));
      if (ctx > lim.contextBytes) {
        return {
          kind: "fail",
          input: result.input,
          error: stepErr("limits.context_too_large", `the run's context would be ${ctx} bytes; the limit is ${lim.contextBytes}`, {
            bytes: ctx,
            limit: lim.contextBytes,
          }),
        };
      }
    }
    return result;
  }

  /** A flow gate's answer applied to the drive: go on, or park / exit / fail it ("stop"). */
  private applyGate(d: Drive, g: GateOutcome, node: NodeDef | undefined): "go" | "stop" {
    if (g.kind === "pass") return "go";
    if (g.kind === "park") return d.park("waiting", g.waiting_for, g.until);
    if (g.kind === "exit") return d.finish("exited", "rate_limited");
    return d.finishWithError(node ?? ({ key: d.cursor.node ?? "(start)", kind: "unknown" } as NodeDef), g.error, this.clock.now());
  }

  /** Execute the node at the cursor. */
  private async step(d: Drive, signal: AbortSignal): Promise<"continue" | "slow_done" | "stop" | "aborted"> {
    const key = d.cursor.node;
    const node = key === null || d.version === null ? undefined : d.version.nodes.get(key);
    if (d.version === null) return d.finish("failed", "graph_changed");
    if (node === undefined) return d.finish("completed", "completed"); // path ended, or an edge to no node
    const handler = this.handlers.get(node.kind);
    if (!handler) return d.finishWithError(node, stepErr("node.unknown_kind", `no handler for kind "${node.kind}"`), this.clock.now());

    // A fresh visit (not a retry, not a parked node resuming) gets the next visit number; the
    // cursor records it only once the visit has an outcome, so an aborted attempt is re-run
    // under the same idempotency key.
    const fresh = d.cursor.attempt === 0 && !d.cursor.parked;
    const visit = fresh ? (d.cursor.visits[node.key] ?? 0) + 1 : (d.cursor.visits[node.key] ?? 1);
    if (fresh && d.cursor.since_pause + 1 > LOOP_CAP) return d.finish("failed", "infinite_loop_cap");
    const attempt = d.cursor.attempt + 1;
    const idempotencyKey = `${d.run.id}/${node.key}/${visit}`;
    if (hasFlow(node)) {
      const at = d.version.definition.nodes.findIndex((n) => n.key === node.key);
      const gate = await this.gates.atStep(d.run, node, at, idempotencyKey, fresh, d.cursor, d.scope(), this.clock.now());
      if (this.applyGate(d, gate, node) === "stop") return "stop";
    }
    const started = this.clock.now();
    const violations: PolicyViolation[] = [];
    const logs: LogLine[] = [];
    const stepSignal = d.stepSignal(signal);
    let result: NodeResult;
    try {
      d.handlerSeq++;
      result = await handler.execute({
        run: d.run,
        node,
        scope: scopeForNode(d.scope(), node, violations, this.clock),
        idempotencyKey,
        visit,
        attempt,
        now: started,
        parked: d.cursor.parked,
        signal: stepSignal,
        http: this.http,
        random: Math.random,
        store: this.reads,
        permissions: node.permissions ?? null,
        violate: (permission, message) => {
          const v: PolicyViolation = { code: "policy.violation", permission, message, at: this.clock.now() };
          violations.push(v);
          return v;
        },
        log: (level, message, data) => {
          if (logs.length < 50) logs.push({ level, message, ...(data === undefined ? {} : { data }), at: this.clock.now() });
        },
        actions: this.services.actions,
        handlers: this.handlers,
        settings: this.services.settings,
        saveItems: async (items, approvals, onRecord) => {
          d.stage(items, approvals ?? [], onRecord === true);
          return this.checkpoint(d, true, true);
        },
        control: () => d.control,
        clockNow: () => this.clock.now(),
        hasEdge: (port) => d.version?.edges.get(node.key)?.has(port) ?? false,
      });
    } catch (err) {
      result = { kind: "fail", error: err instanceof StepFailure ? err.error : toStepError(err) };
    }
    if (signal.aborted && handler.class === "slow") return "aborted"; // lease lost or shutting down: discard the result
    if (
      result.kind === "fail" &&
      d.secretsError &&
      /^(template\.missing_variable|expression\.missing_field)$/.test(result.error.code) &&
      /secrets\./.test(result.error.message)
    ) {
      result = { ...result, error: d.secretsError };
    }
    if (result.kind === "fail") result = { ...result, error: withExpressionPointer(result.error, d.version.definition.nodes, node.key) };
    if (!d.redactor.empty) {
      // Nothing a step leaves behind (row, context, run thread, audit) carries a secret's value.
      result = d.redactor.value(result);
      for (let i = 0; i < violations.length; i++) violations[i] = d.redactor.value(violations[i]!);
      for (let i = 0; i < logs.length; i++) logs[i] = d.redactor.value(logs[i]!);
    }
    if (result.kind === "next") result = this.withinLimits(result, d);
    if (fresh) {
      d.cursor.visits[node.key] = visit;
      d.cursor.since_pause += 1;
    }
    await crashPoint("runner:after-step-effect", `${d.run.id} ${d.run.subject_id ?? ""}`);
    const finished = this.clock.now();
    if (violations.length > 0) {
      d.audit(
        violations.map(
          (v): AuditEntry => ({
            workspace_id: d.run.workspace_id,
            actor: `run:${d.run.id}`,
            action: "policy.violation",
            target_type: "step",
            target_id: idempotencyKey,
            details: { node_key: node.key, node_kind: node.kind, permission: v.permission, message: v.message },
            at: v.at,
          }),
        ),
      );
    }
    const stepAttempt = attempt + (d.cursor.attempt_base ?? 0);
    const enteredVia = d.cursor.port;
    const input = "input" in result ? (result.input ?? null) : null;
    // Field by field: a spread of a common part with the outcome's fields added cost several
    // microseconds per row (V8 leaves its fast clone path when a spread gains new properties).
    const row = (outcome: StepOutcome, exited: string | null, output: unknown, error: StepError | null): NewStepRun => ({
      run_id: d.run.id,
      node_key: node.key,
      node_kind: node.kind,
      visit,
      attempt: stepAttempt,
      entered_via_port_key: enteredVia,
      idempotency_key: idempotencyKey,
      input,
      started_at: started,
      finished_at: finished,
      duration_ms: Math.max(0, Math.round(finished - started)),
      violations: violations.length > 0 ? violations : null,
      logs: logs.length > 0 ? logs : null,
      outcome,
      exited_via_port_key: exited,
      output: output ?? null,
      error,
    });

    switch (result.kind) {
      case "next": {
        d.addStep(row("succeeded", result.port, result.output, null));
        d.steps[node.key] = result.output ?? null;
        if (result.assign) Object.assign(d.context, result.assign);
        if (result.items) d.countItems(result.items.total, result.items.failed);
        if (result.consumed_event) d.cursor.consumed = [...(d.cursor.consumed ?? []), result.consumed_event];
        d.advance(node.key, result.port);
        return handler.class === "slow" ? "slow_done" : "continue";
      }
      case "end":
        d.addStep(row("succeeded", null, null, null));
        return d.finish("completed", "completed");
      case "exit":
        d.addStep(row("succeeded", null, result.output, null));
        return d.finish("exited", result.reason);
      case "park": {
        // A node woken early (an event that did not match, a spurious wake) parks again without a new row.
        const again = d.cursor.parked !== undefined;
        if (!again || violations.length > 0) d.addStep(row("waiting", null, null, null));
        d.cursor.parked = {
          kind: result.waiting_for,
          since: d.cursor.parked?.since ?? started,
          until: result.until,
          ...(result.data ? { data: result.data } : {}),
        };
        d.cursor.since_pause = 0;
        if (result.items) d.countItems(result.items.total, result.items.failed);
        d.stage([], result.approvals ?? []);
        d.wait = result.wait ?? null;
        return d.park("waiting", result.waiting_for, result.until);
      }
      case "fail": {
        if (d.control === "stop") {
          // Stopped mid-step (its signal was aborted): the attempt is on record, the run exits.
          d.addStep(row("failed", null, result.output, result.error));
          d.applyControl();
          return "stop";
        }
        const policy = node.retry ?? DEFAULT_RETRY;
        const decision = decideRetry(result.error, attempt, policy, Math.random());
        if (decision.kind === "retry") {
          d.addStep(row("retrying", null, result.output, result.error));
          d.cursor.attempt = attempt;
          this.events.emit("step:retry_scheduled", {
            run_id: d.run.id,
            node_key: node.key,
            node_kind: node.kind,
            attempt,
            delay_ms: decision.delayMs,
            error: result.error,
          });
          return d.park("retrying", "retry", finished + decision.delayMs);
        }
        const errorPort = d.version?.edges.get(node.key)?.has("error") ? "error" : null;
        d.addStep(row("failed", errorPort, result.output, result.error));
        return d.routeError(node, result.error);
      }
    }
  }
}

function stepErr(code: string, message: string, details?: Record<string, unknown>): StepError {
  return { code, message, retryable: false, ...(details ? { details } : {}) };
}

/** The in-memory state of one run while this worker holds its lease. */
class Drive {
  readonly context: Record<string, unknown>;
  readonly steps: Record<string, unknown>;
  readonly cursor: Cursor;
  private status: RunStatus;
  private exitReason: ExitReason | null = null;
  private waitingFor: string | null = null;
  private waitingUntil: number | null = null;
  private dueAt: number | null = null;
  private rev: number;
  private pending: NewStepRun[] = [];
  private pendingItems: RunItem[] = [];
  private pendingItemUpdates: RunItem[] = [];
  private pendingApprovals: Approval[] = [];
  private pendingAudit: AuditEntry[] = [];
  private itemsTotal: number;
  private itemsFailed: number;
  /** Set while parked on named events (wait_for_event, input). */
  wait: ParkWait | null = null;
  /** An operator's stop or cancel (from the claimed row, a commit, or this process). */
  control: RunControl | null;
  private readonly stopper = new AbortController();

  readonly redactor: Redactor;
  /** Why the workspace's secrets could not be loaded for this drive, if they could not. */
  secretsError: StepError | null = null;
  /** The workspace's expression budget, read when the drive starts. */
  budget: Readonly<Budget> = DEFAULT_BUDGET;
  /** Not claimed yet: the next commit claims the run, as of this time (Checkpoint.claim). */
  claimAt: number | null = null;
  /** The run's end is committed. */
  ended = false;

  constructor(
    readonly run: Run,
    readonly version: LoadedVersion | null,
    private readonly secrets: ReadonlyMap<string, string> = new Map(),
  ) {
    this.redactor = new Redactor(secrets);
    // The claimed row was decoded for this drive alone, so it is ours to mutate.
    this.context = run.context;
    this.steps = run.steps;
    this.cursor = run.cursor;
    this.status = run.status;
    this.rev = run.rev;
    this.itemsTotal = run.items_total;
    this.itemsFailed = run.items_failed;
    this.control = run.control;
    if (this.control === "stop") this.stopper.abort();
  }

  /** Aborted by a stop: an in-flight slow step is abandoned (a cancel lets it finish). */
  get stopSignal(): AbortSignal {
    return this.stopper.signal;
  }

  private linked: { from: AbortSignal; signal: AbortSignal } | null = null;

  /**
   * What a step's signal follows: the drive's (the lease lost, shutting down) and an operator's
   * stop. Made once per drive, not per step (AbortSignal.any is not cheap); the stop signal alone
   * when that is what the drive runs under (a run taken in memory before its insert).
   */
  stepSignal(signal: AbortSignal): AbortSignal {
    if (signal === this.stopper.signal) return signal;
    if (this.linked?.from !== signal) this.linked = { from: signal, signal: AbortSignal.any([signal, this.stopper.signal]) };
    return this.linked.signal;
  }

  requestControl(c: RunControl): void {
    if (this.control === "stop") return;
    this.control = c;
    if (c === "stop") this.stopper.abort();
  }

  /** End the run as the operator asked: stop → exited (admin_stopped), cancel → cancelled. */
  applyControl(): void {
    if (this.control === "stop") this.finish("exited", "admin_stopped");
    else this.finish("cancelled", null);
  }

  stage(items: RunItem[], approvals: Approval[], onRecord = false): void {
    (onRecord ? this.pendingItemUpdates : this.pendingItems).push(...this.redactor.value(items));
    this.pendingApprovals.push(...this.redactor.value(approvals));
    if (approvals.length > 0) this.hadApprovals = true;
  }

  private hadApprovals = false;
  /** The run ends with items or approvals that may still be open: the store closes them with the final commit. */
  private closeOpen = false;

  audit(entries: AuditEntry[]): void {
    this.pendingAudit.push(...entries);
  }

  countItems(total: number, failed: number): void {
    this.itemsTotal = total;
    this.itemsFailed = failed;
  }

  scope(): CelScope {
    return runScope(this.run, this.context, this.steps, this.secrets, this.budget);
  }

  addStep(s: NewStepRun): void {
    this.pending.push(s);
  }

  advance(from: string, port: string): void {
    this.cursor.parked = undefined;
    this.wait = null;
    this.cursor.attempt = 0;
    delete this.cursor.attempt_base;
    this.cursor.port = port;
    this.cursor.node = this.version?.edges.get(from)?.get(port) ?? null;
  }

  park(status: "waiting" | "retrying", waitingFor: string, until: number | null): "stop" {
    this.status = transition(this.status, status);
    this.waitingFor = waitingFor;
    this.waitingUntil = until;
    this.dueAt = until;
    return "stop";
  }

  /** Give the run back mid-flight, due at `dueAt`: not a failure; it resumes from its last checkpoint. */
  interrupt(dueAt: number): void {
    this.status = transition(this.status, "interrupted");
    this.waitingFor = null;
    this.waitingUntil = null;
    this.dueAt = dueAt;
  }

  finish(status: RunStatus, reason: ExitReason | null): "stop" {
    // A run whose fan-out had failed items did not simply complete.
    if (status === "completed" && this.itemsFailed > 0) status = "completed_with_failures";
    this.closeOpen = this.itemsTotal > 0 || this.hadApprovals || this.cursor.parked?.kind === "approval";
    this.status = transition(this.status, status);
    this.wait = null;
    this.exitReason = reason;
    this.cursor.node = null;
    this.cursor.parked = undefined;
    delete this.cursor.attempt_base;
    this.dueAt = null;
    return "stop";
  }

  finishWithError(node: NodeDef, error: StepError, now: number, reason: ExitReason = "handler_failure"): "stop" {
    this.pending.push({
      run_id: this.run.id,
      node_key: node.key,
      node_kind: node.kind,
      visit: this.cursor.visits[node.key] ?? 1,
      attempt: 1,
      entered_via_port_key: this.cursor.port,
      exited_via_port_key: null,
      outcome: "failed",
      duration_ms: 0,
      idempotency_key: `${this.run.id}/${node.key}/${this.cursor.visits[node.key] ?? 1}`,
      input: null,
      output: null,
      error,
      started_at: now,
      finished_at: now,
    });
    return this.finish("failed", reason);
  }

  /** A failed node: follow its `error` port when wired, else fail the run. */
  routeError(node: NodeDef, error: StepError): "continue" | "stop" {
    const to = this.version?.edges.get(node.key)?.get("error");
    this.steps[node.key] = { error };
    if (to !== undefined) {
      this.advance(node.key, "error");
      return "continue";
    }
    this.cursor.attempt = 0;
    return this.finish("failed", "handler_failure");
  }

  checkpoint(keepLease: boolean, now: number, midStep = false): Checkpoint {
    if (keepLease) this.status = transition(this.status, "running");
    // Events the drive's waits took go to the run's record with this commit, not on the cursor.
    const consumed = this.cursor.consumed ?? [];
    delete this.cursor.consumed;
    const terminal = isTerminal(this.status);
    const state: RunState = {
      status: this.status,
      exit_reason: this.exitReason,
      current_node_key: this.cursor.node,
      waiting_for: keepLease || terminal ? null : this.waitingFor,
      waiting_until: keepLease || terminal ? null : this.waitingUntil,
      context: this.context,
      steps: this.steps,
      cursor: this.cursor,
      items_total: this.itemsTotal,
      items_failed: this.itemsFailed,
      interruptions: this.run.interruptions,
      due_at: keepLease ? null : this.dueAt,
      keep_lease: keepLease,
      completed_at: terminal ? now : null,
      updated_at: now,
      wait: !keepLease && this.status === "waiting" ? this.wait : null,
      close_open: terminal && this.closeOpen,
    };
    // Not copied: the drive awaits this checkpoint's commit before it mutates anything again.
    const cp: Checkpoint = { run_id: this.run.id, expected_rev: this.rev, state, steps: this.pending.splice(0) };
    if (this.pendingItems.length > 0) cp.items = this.pendingItems.splice(0);
    if (this.pendingItemUpdates.length > 0) cp.item_updates = this.pendingItemUpdates.splice(0);
    if (this.pendingApprovals.length > 0) cp.approvals = this.pendingApprovals.splice(0);
    if (this.pendingAudit.length > 0) cp.audit = this.pendingAudit.splice(0);
    if (consumed.length > 0) cp.consumed = consumed;
    // A node's flush of its items while it runs (a fan-out's): nothing writes the run's context,
    // steps or cursor until the node returns (the runner applies its result then), so a flush after
    // the first of the same execution finds them as that flush wrote them; said so, the store does
    // not write them again (Checkpoint.state_unchanged). No comparison: a fan-out's context holds
    // its whole list, and serializing it for every flush cost more than the flushes' SQL.
    if (midStep && this.committedFlushOf === this.handlerSeq) cp.state_unchanged = true;
    this.pendingFlushOf = midStep ? this.handlerSeq : -1;
    return cp;
  }

  /** Node executions begun by this drive (Runner.step): which one a mid-step flush belongs to. */
  handlerSeq = 0;
  /** The execution whose mid-step flush the last commit was (-1: the last commit was no such flush). */
  private committedFlushOf = -1;
  private pendingFlushOf = -1;

  committed(): void {
    this.rev += 1;
    this.committedFlushOf = this.pendingFlushOf;
  }
}
