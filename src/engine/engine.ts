// The engine as a library: one facade over its parts (automations.ts, runs.ts, intake.ts,
// control.ts, items.ts, approvals.ts, explain.ts, simulation.ts) and the background workers
// (runner, dispatcher, scheduler). The server and CLI are thin faces over this class; an
// application can embed it.

import { randomUUID } from "node:crypto";
import type { CustomKindSpec } from "../model/definition.js";
import { WeftError } from "../model/errors.js";
import { RegisteredAction, type ActionSpec } from "./actions.js";
import { Admin, DEFAULT_WORKSPACE } from "./admin.js";
import * as P from "./approvals.js";
import * as A from "./automations.js";
import type { AutomationView } from "./automations.js";
import { systemClock, type Clock } from "./clock.js";
import * as C from "./control.js";
import type { PauseRequest } from "./control.js";
import { DEFAULT_LIMITS, OVERDUE_GRACE_MS, type EngineCore, type Limits } from "./core.js";
import { DEFAULT_QUARANTINE_AFTER, Dispatcher } from "./dispatcher.js";
import { EngineEmitter } from "./events.js";
import { explain, type Explanation } from "./explain.js";
import { UndiciHttpClient, type HttpClient } from "./http.js";
import { Intake, checkSize, type EventPoster, type IncomingEvent, type IngestResult } from "./intake.js";
import * as I from "./items.js";
import { actionNode } from "./nodes/action.js";
import { NODE_HANDLERS } from "./nodes/registry.js";
import type { NodeHandler, NodeSettings } from "./nodes/types.js";
import { redriveRun, type RedriveVersion } from "./redrive.js";
import { Runner, type RunnerOptions } from "./runner.js";
import * as R from "./runs.js";
import type { EnrollRequest, EnrollResult, RunListFilter } from "./runs.js";
import { Scheduler } from "./scheduler.js";
import { SecretBox } from "./secrets.js";
import { HookSecrets } from "./webhooks.js";
import type { SimulateRequest, Transcript } from "./simulate.js";
import { simulateCurrent } from "./simulation.js";
import type {
  Approval,
  ApprovalStatus,
  AuditRow,
  Automation,
  AutomationStatus,
  AutomationVersion,
  OverdueCount,
  Page,
  PauseRow,
  ProcessRole,
  Run,
  RunControl,
  RunItem,
  StepRun,
  Store,
  StoredEvent,
} from "./store.js";
import { AutomationCache, VersionCache } from "./versions.js";
import { Wakeups, WorkerTargets } from "./wakeups.js";
import { Heartbeat } from "./heartbeat.js";
import { DEFAULT_ITEMS_IN_FLIGHT, WorkspaceSlots } from "./limiter.js";
import { explainStoredEvent, type EventExplanation } from "./event-explain.js";

export { DEFAULT_WORKSPACE } from "./admin.js";
export { DEFAULT_LIMITS, OVERDUE_GRACE_MS, type Limits } from "./core.js";
export type { AutomationView } from "./automations.js";
export type { EnrollRequest, EnrollResult } from "./runs.js";
export { MAX_BATCH, type IncomingEvent, type IngestResult } from "./intake.js";

export interface EngineOptions {
  store: Store;
  clock?: Clock;
  http?: HttpClient;
  /** Runner tuning; defaults suit one process on a small machine. */
  runner?: Partial<RunnerOptions>;
  /** Do not claim runs, dispatch events or fire schedules (an API-only process). */
  noRunner?: boolean;
  /** Dispatcher and scheduler poll intervals (ms); each is also woken directly by local work. */
  dispatchPollMs?: number;
  schedulePollMs?: number;
  /**
   * Wake-ups between processes over the store's channel (PostgreSQL LISTEN/NOTIFY); default on.
   * Off for a connection pooler that does not carry LISTEN (PgBouncer in transaction mode): the
   * processes then find each other's work by polling.
   */
  wakeups?: boolean;
  /** What nodes read from configuration (the AI endpoint for agent steps). */
  settings?: NodeSettings;
  /**
   * Hosts, IPs and CIDRs outbound HTTP may reach although private, loopback or link-local
   * (WEFT_HTTP_ALLOW). Everything else of that kind is refused at connect time, on every redirect.
   */
  httpAllow?: string[];
  /** 32 bytes (base64 or hex) that encrypt secrets at rest; without it secrets cannot be stored. */
  secretKey?: string;
  /** Payload limits (bytes of JSON). */
  limits?: Partial<Limits>;
  /** The role this process records in its heartbeat; default `all`, or `api` with noRunner. */
  role?: ProcessRole;
}

/**
 * How long a dispatch round's lease on its events lasts without renewal: a dispatcher that dies
 * mid-round leaves its events to the others this long; a living one renews it while it works.
 */
export const DISPATCH_LEASE_MS = 10_000;

/** Engine.waitForRun's reads of a run that may end in another process: the first after this, then doubling to the most. */
const WAIT_POLL_MIN_MS = 200;
const WAIT_POLL_MAX_MS = 1_000;

export class Engine {
  readonly store: Store;
  readonly clock: Clock;
  readonly events = new EngineEmitter();
  readonly owner: string;
  private readonly handlers = new Map<string, NodeHandler>();
  private readonly actions = new Map<string, RegisteredAction>();
  private readonly customKinds = new Map<string, CustomKindSpec>();
  private readonly settings: NodeSettings;
  private readonly http: HttpClient;
  readonly admin: Admin;
  /** Hook secrets: reveal and rotation (admins), and the secrets deliveries are checked against. */
  readonly hooks: HookSecrets;
  readonly limits: Limits;
  private readonly versions: VersionCache;
  private readonly intake: Intake;
  /** What the parts this facade delegates to share. */
  private readonly core: EngineCore;
  private readonly runner: Runner | null;
  readonly dispatcher: Dispatcher | null;
  readonly scheduler: Scheduler | null;
  private readonly heartbeat: Heartbeat;
  /** Wakes the work a change makes due, here or in the other processes sharing the store. */
  readonly wakeups: Wakeups;

  constructor(opts: EngineOptions) {
    this.store = opts.store;
    this.clock = opts.clock ?? systemClock;
    this.owner = opts.runner?.owner ?? `wkr_${randomUUID().slice(0, 8)}`;
    for (const h of NODE_HANDLERS) this.handlers.set(h.kind, h);
    this.settings = { ...opts.settings, itemSlots: new WorkspaceSlots(opts.settings?.itemsInFlight ?? DEFAULT_ITEMS_IN_FLIGHT) };
    this.http = opts.http ?? new UndiciHttpClient({ allow: opts.httpAllow ?? [], operatorEndpoints: this.settings.ai ? [this.settings.ai.base_url] : [] });
    this.limits = { ...DEFAULT_LIMITS, ...opts.limits };
    const box = opts.secretKey ? SecretBox.fromString(opts.secretKey) : null;
    this.admin = new Admin(this.store, this.clock, box);
    this.hooks = new HookSecrets(this.store, this.clock, box);
    this.versions = new VersionCache(this.store);
    const pg = this.store.kind === "postgres";
    // With wake-ups live (PostgreSQL's LISTEN/NOTIFY), every change that makes work due is told to
    // the process that does it, timers and lapsed leases are slept until, and the polls are only
    // the fallback for a lost notification: a second. Without, they are how work is found.
    const heard = pg && opts.wakeups !== false && this.store.wakeups !== undefined;
    this.runner = opts.noRunner
      ? null
      : new Runner(
          this.store,
          this.versions,
          this.handlers,
          this.clock,
          this.events,
          this.http,
          {
            owner: this.owner,
            leaseMs: 30_000,
            quarantineAfter: DEFAULT_QUARANTINE_AFTER,
            maxInFlight: 500,
            claimBatch: 200,
            pollMs: heard ? 1000 : pg ? 250 : 1000,
            commitBatch: 500,
            commitConcurrency: pg ? 3 : 1,
            ...opts.runner,
          },
          {
            actions: this.actions,
            settings: this.settings,
            secrets: (ws) => this.admin.secretsOf(ws),
            limits: this.limits,
            hostPaused: () => this.wakeups.tell("hosts"),
          },
        );
    this.dispatcher = opts.noRunner
      ? null
      : new Dispatcher(
          this.store,
          this.versions,
          this.clock,
          this.events,
          {
            batch: 50,
            pollMs: opts.dispatchPollMs ?? (heard ? 1000 : pg ? 100 : 500),
            // Never longer than a run's lease (a short one, as tests and chaos runs set, shortens both).
            leaseMs: Math.min(DISPATCH_LEASE_MS, opts.runner?.leaseMs ?? DISPATCH_LEASE_MS),
            quarantineAfter: opts.runner?.quarantineAfter ?? DEFAULT_QUARANTINE_AFTER,
          },
          () => this.poke(),
          // Runs it creates are driven here at once when the runner has room (lease-at-insert).
          this.runner,
        );
    this.scheduler = opts.noRunner ? null : new Scheduler(this.store, this.clock, this.events, opts.schedulePollMs ?? 1000, () => this.dispatcher?.poke());
    const runner = this.runner;
    const dispatcher = this.dispatcher;
    const scheduler = this.scheduler;
    const targets = new WorkerTargets(this.store, this.clock, this.owner);
    this.wakeups = new Wakeups(
      opts.wakeups === false ? undefined : this.store.wakeups,
      {
        workers: () => targets.invalidate(),
        ...(runner ? { claim: () => runner.poke(), pauses: () => runner.pauses.invalidate(), hosts: () => runner.hostPauses.invalidate() } : {}),
        ...(dispatcher ? { dispatch: () => dispatcher.poke() } : {}),
        ...(scheduler ? { schedule: () => scheduler.poke() } : {}),
      },
      this.events,
      this.owner,
      targets,
    );
    this.core = {
      store: this.store,
      clock: this.clock,
      events: this.events,
      versions: this.versions,
      automations: new AutomationCache(),
      actions: this.actions,
      customKinds: this.customKinds,
      settings: this.settings,
      http: this.http,
      admin: this.admin,
      hooks: this.hooks,
      limits: this.limits,
      runner: this.runner,
      dispatcher: this.dispatcher,
      scheduler: this.scheduler,
      poke: () => this.poke(),
      wake: (kind) => this.wakeups.signal(kind),
    };
    this.intake = new Intake({ ...this.core, dispatcher: { poke: () => this.wakeups.signal("dispatch") } });
    this.heartbeat = new Heartbeat(this.store, this.clock, this.events, this.owner, opts.role ?? (opts.noRunner ? "api" : "all"));
  }

  /** Register a custom action kind (TypeScript; see defineAction in actions.ts). Call before start(). */
  registerAction<I = Record<string, unknown>>(spec: ActionSpec<I>): void {
    if (this.handlers.has(spec.kind)) throw new WeftError("action.kind_taken", `kind "${spec.kind}" is already registered`);
    const reg = new RegisteredAction(spec as ActionSpec<unknown>);
    this.actions.set(spec.kind, reg);
    this.handlers.set(spec.kind, actionNode(reg));
    this.customKinds.set(spec.kind, { ports: reg.ports });
  }

  async start(): Promise<void> {
    await this.store.ensureWorkspace(DEFAULT_WORKSPACE, "Default workspace", this.clock.now());
    // Hook secrets stored before sealing existed are sealed as soon as a key is at hand.
    await this.hooks.sealLegacy();
    await this.heartbeat.start();
    await this.wakeups.start();
    // Processes that pick a worker to wake count this one from now, not from their next read (it
    // listens already; what it hears before its loops start, they do at their first round).
    if (this.runner) await this.wakeups.announce("workers");
    this.runner?.start();
    this.dispatcher?.start();
    this.scheduler?.start();
  }

  async stop(): Promise<void> {
    // Out of the live list first, then said: what others send from now goes to the workers left.
    await this.heartbeat.stop();
    if (this.runner) await this.wakeups.announce("workers");
    await this.wakeups.stop();
    await this.scheduler?.stop();
    await this.dispatcher?.stop();
    await this.runner?.stop();
  }

  /** Runs this process is driving now. */
  get busy(): number {
    return this.runner?.busy ?? 0;
  }

  /** No run driven here and the claim loop asleep: a test moving a fake clock waits for it. */
  get runnerIdle(): boolean {
    return this.runner?.idle ?? true;
  }

  /** The scheduler's loop is asleep (no round in flight or asked for): a test moving a fake clock waits for it. */
  get schedulerIdle(): boolean {
    return this.scheduler?.idle ?? true;
  }

  /** Whether this process's flow sweep or a commit's flow wake-up is in flight (either may be about to make concurrency waiters due). */
  get flowWakeInFlight(): boolean {
    return this.runner?.flowWakeInFlight ?? false;
  }

  /**
   * Claim now (after creating work or moving a test clock). When this runner is full, another
   * live worker is told too: wakeups.ts's TARGET_HOLD_MS sends one worker all the work for a
   * while, and what it has no room for (its dispatch's runs left pending, runs it enrolled or
   * woke) must not wait for the others' polls.
   */
  poke(): void {
    this.wakeups.signal("claim");
    if (this.runner?.full) void this.wakeups.tellAnother("claim");
  }

  /** Dispatch and fire schedules now (after moving a test clock), then claim. */
  async tick(): Promise<void> {
    await this.scheduler?.once();
    while (await this.dispatcher?.once()) {
      /* drain full batches */
    }
    this.poke();
  }

  // ---------- automations (automations.ts) ----------

  validate(definition: unknown) {
    return A.validate(this.core, definition);
  }

  createAutomation(workspaceId: string, definition: unknown, status: AutomationStatus = "active", actor = "system"): Promise<AutomationView> {
    return A.createAutomation(this.core, workspaceId, definition, status, actor);
  }

  /** Make version n+1. Runs in flight stay on theirs. `expectedVersion` guards against lost edits. */
  updateAutomation(workspaceId: string, id: string, definition: unknown, expectedVersion?: number, actor = "system"): Promise<AutomationView> {
    return A.updateAutomation(this.core, workspaceId, id, definition, expectedVersion, actor);
  }

  getAutomation(workspaceId: string, id: string): Promise<AutomationView> {
    return A.getAutomation(this.core, workspaceId, id);
  }

  listAutomations(workspaceId: string): Promise<Automation[]> {
    return this.store.listAutomations(workspaceId);
  }

  getVersion(workspaceId: string, id: string, version: number): Promise<AutomationVersion> {
    return A.getVersion(this.core, workspaceId, id, version);
  }

  setStatus(workspaceId: string, id: string, status: AutomationStatus, actor = "system"): Promise<Automation> {
    return A.setStatus(this.core, workspaceId, id, status, actor);
  }

  // ---------- runs (runs.ts) ----------

  /**
   * Start a run of the automation's current version. Idempotent on `idempotency_key`: a repeat
   * returns the first run (`created: false`). Run-as and the trigger event are fixed here, once.
   */
  enroll(workspaceId: string, automationId: string, req: EnrollRequest, actor = "system"): Promise<{ run: Run; created: boolean }> {
    return R.enroll(this.core, workspaceId, automationId, req, actor);
  }

  /**
   * Enroll up to MAX_BATCH subjects at once: the same rules as `enroll`, per subject, the runs
   * inserted in one transaction. Results in input order: `{ index, run, created }` or
   * `{ index, error }` (a WeftError) for an element refused on its own terms.
   */
  enrollMany(workspaceId: string, automationId: string, reqs: readonly EnrollRequest[], actor = "system"): Promise<EnrollResult[]> {
    return R.enrollMany(this.core, workspaceId, automationId, reqs, actor);
  }

  /** Refuse a payload over its limit (or too deep, or with text no store can keep), naming where. */
  checkSize(value: unknown, limit: number, code: string, pointer: string): void {
    checkSize(value, limit, code, pointer);
  }

  getRun(workspaceId: string, id: string): Promise<Run> {
    return R.mustGetRun(this.core, workspaceId, id);
  }

  listRuns(filter: RunListFilter): Promise<Page<Run>> {
    return R.listRuns(this.core, filter);
  }

  listSteps(workspaceId: string, runId: string): Promise<StepRun[]> {
    return R.listSteps(this.core, workspaceId, runId);
  }

  /** Overdue is derived, never stored: due work late by more than the grace period. */
  overdue(workspaceId: string, graceMs = OVERDUE_GRACE_MS): Promise<OverdueCount[]> {
    return this.store.overdue(workspaceId, this.clock.now(), graceMs);
  }

  // ---------- events (intake.ts) ----------

  /**
   * Store an event; resolves only once it is committed (acknowledge after this). A repeated key
   * (scoped to workspace and source) returns the first event; with another body it is refused.
   */
  ingest(workspaceId: string, incoming: IncomingEvent, by?: EventPoster): Promise<{ event_id: string; duplicate: boolean }> {
    return this.intake.ingest(workspaceId, incoming, by);
  }

  /** An undeliverable event back to dispatch (audited); `event.not_undeliverable` otherwise. */
  replayEvent(workspaceId: string, id: string, actor = "system"): Promise<StoredEvent> {
    return this.intake.replayEvent(workspaceId, id, actor);
  }

  /** Drop an undeliverable event for good (audited); `event.not_undeliverable` otherwise. */
  dropEvent(workspaceId: string, id: string, actor = "system"): Promise<StoredEvent> {
    return this.intake.dropEvent(workspaceId, id, actor);
  }

  /**
   * Store up to MAX_BATCH events; each is checked and stored on its own terms, all in the same
   * group commit. Resolves once every accepted one is durable, with results in input order:
   * `{ index, event_id, duplicate }` or `{ index, error }` (a WeftError).
   */
  ingestMany(workspaceId: string, incoming: readonly IncomingEvent[], by?: EventPoster): Promise<IngestResult[]> {
    return this.intake.ingestMany(workspaceId, incoming, by);
  }

  /** Verify and store a webhook delivery (Standard Webhooks); the webhook-id is the idempotency key. */
  ingestWebhook(
    hookId: string,
    raw: Buffer,
    headers: Record<string, string | string[] | undefined>,
    contentType: string | undefined,
  ): Promise<{ event_id: string; duplicate: boolean }> {
    return this.intake.ingestWebhook(hookId, raw, headers, contentType);
  }

  getEvent(workspaceId: string, id: string) {
    return this.intake.getEvent(workspaceId, id);
  }
  /** Why the event did or did not start a run of each automation that could have taken it. */
  async explainEvent(workspaceId: string, id: string): Promise<EventExplanation> {
    return explainStoredEvent(this.store, await this.getEvent(workspaceId, id), this.clock.now());
  }

  // ---------- run and subject control (control.ts) ----------

  pauseSubject(workspaceId: string, subjectId: string, p: PauseRequest, actor = "system"): Promise<PauseRow> {
    return C.pauseSubject(this.core, workspaceId, subjectId, p, actor);
  }

  resumeSubject(workspaceId: string, subjectId: string, automationId?: string | null, actor = "system"): Promise<boolean> {
    return C.resumeSubject(this.core, workspaceId, subjectId, automationId, actor);
  }

  listPauses(workspaceId: string, subjectId: string): Promise<PauseRow[]> {
    return this.store.listPauses(workspaceId, subjectId);
  }

  /** Stop (exit `admin_stopped`) or cancel a run; refused (`run.already_ended`) once it has ended. */
  controlRun(workspaceId: string, runId: string, control: RunControl, actor: string): Promise<Run> {
    return C.controlRun(this.core, workspaceId, runId, control, actor);
  }

  /** A new run from the start, for the same trigger event, on the automation's current version (re-entry rules apply). */
  retriggerRun(workspaceId: string, runId: string, actor: string, idempotencyKey?: string): Promise<{ run: Run; created: boolean }> {
    return C.retriggerRun(this.core, workspaceId, runId, actor, idempotencyKey);
  }

  /** Resume a failed or stopped run on the same run from the step it ended at, under that step's idempotency key. */
  redriveRun(workspaceId: string, runId: string, opts: { version?: RedriveVersion }, actor: string): Promise<Run> {
    return redriveRun(this.core, workspaceId, runId, opts, actor);
  }

  // ---------- items (items.ts) ----------

  listItems(workspaceId: string, runId: string): Promise<RunItem[]> {
    return I.listItems(this.core, workspaceId, runId);
  }

  /** Retry a failed item of an ended run, under the same idempotency key. */
  retryItem(workspaceId: string, runId: string, itemId: string, actor: string): Promise<RunItem> {
    return I.retryItem(this.core, workspaceId, runId, itemId, actor);
  }

  // ---------- explain, approvals, audit (explain.ts, approvals.ts) ----------

  /** Why the run is where it is: what holds or failed it, in plain words (console and CLI). */
  explain(workspaceId: string, runId: string): Promise<Explanation> {
    return explain(this.core, workspaceId, runId);
  }

  listApprovals(workspaceId: string, status?: ApprovalStatus, limit = 100): Promise<Approval[]> {
    return P.listApprovals(this.core, workspaceId, status, limit);
  }

  getApproval(workspaceId: string, id: string): Promise<Approval> {
    return P.getApproval(this.core, workspaceId, id);
  }

  /** Apply a decision once: a second, concurrent or late one is refused with `approval.already_decided`. */
  decideApproval(workspaceId: string, id: string, decision: "approved" | "rejected", actor: string, comment: string | null = null): Promise<Approval> {
    return P.decideApproval(this.core, workspaceId, id, decision, actor, comment);
  }

  listAudit(workspaceId: string, limit = 100, beforeId?: number): Promise<AuditRow[]> {
    return P.listAudit(this.core, workspaceId, limit, beforeId);
  }

  // ---------- simulation (simulation.ts) ----------

  /** Walk the automation's current version with a test context: nothing is written, sent or enqueued. */
  simulate(workspaceId: string, automationId: string, req: SimulateRequest): Promise<Transcript> {
    return simulateCurrent(this.core, workspaceId, automationId, req);
  }

  /**
   * Resolve when the run reaches a status satisfying `pred` (tests and the CLI wait this way). The
   * run is read again when this process announces its end or park, and otherwise on a timer for
   * an end in another process: after 200 ms, then less often, up to once a second (a read is the
   * whole run, a fan-out's list included).
   */
  async waitForRun(workspaceId: string, runId: string, pred: (r: Run) => boolean = (r) => r.completed_at !== null): Promise<Run> {
    for (let pollMs = WAIT_POLL_MIN_MS; ; pollMs = Math.min(pollMs * 2, WAIT_POLL_MAX_MS)) {
      // Listen before reading (an end between the read and the wait is not missed); every round
      // removes its listeners and timer, however it ends, so a long wait leaves nothing behind.
      let wake!: () => void;
      const woken = new Promise<void>((res) => (wake = res));
      const offs = [this.events.on("run:finished", (e) => e.run_id === runId && wake()), this.events.on("run:parked", (e) => e.run_id === runId && wake())];
      const timer = setTimeout(wake, pollMs);
      try {
        const r = await this.getRun(workspaceId, runId);
        if (pred(r)) return r;
        await woken;
      } finally {
        clearTimeout(timer);
        for (const off of offs) off();
      }
    }
  }
}
