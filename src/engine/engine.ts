// The engine as a library: automations and their versions, enrollment, run queries, and the
// runner loop. The server and CLI are thin faces over this class; an application can embed it.

import { randomUUID } from "node:crypto";
import { validateDefinition, type CustomKindSpec, type Definition } from "../model/definition.js";
import { WeftError } from "../model/errors.js";
import { checkJsonInput } from "../model/json-input.js";
import type { RunStatus } from "../model/run-status.js";
import { RegisteredAction, type ActionSpec } from "./actions.js";
import { actionNode } from "./nodes/action.js";
import { agentNode } from "./nodes/agent.js";
import { approvalNode } from "./nodes/approval.js";
import { forEachNode } from "./nodes/for-each.js";
import { inputNode, waitForEventNode } from "./nodes/waits.js";
import { simulate, type SimulateRequest, type Transcript } from "./simulate.js";
import { systemClock, type Clock } from "./clock.js";
import { ErrorCodes } from "./errors.js";
import { EngineEmitter } from "./events.js";
import { UndiciHttpClient, type HttpClient } from "./http.js";
import { newId } from "./ids.js";
import { newRun } from "./new-run.js";
import { BUILTIN_HANDLERS } from "./nodes/builtins.js";
import { httpRequestNode } from "./nodes/http-request.js";
import type { NodeHandler, NodeSettings } from "./nodes/types.js";
import { Runner, type RunnerOptions } from "./runner.js";
import type {
  Approval, ApprovalStatus, AuditEntry, AuditRow, Automation, AutomationStatus, AutomationVersion, HookRow, NewEvent, OverdueCount, Page, PauseRow,
  ProcessRole, Run, RunControl, RunItem, StepRun, Store,
} from "./store.js";
import { isWorkerRole } from "./store.js";
import { VersionCache } from "./versions.js";
import { Batcher } from "./batcher.js";
import { Admin, DEFAULT_WORKSPACE } from "./admin.js";
import { SecretBox, hasRedaction } from "./secrets.js";
import { rerenderInputs, type ForEachConfig } from "./nodes/for-each.js";
import { runScope } from "./scope.js";
import { explainRun, type Explanation } from "./explain.js";
import { Dispatcher } from "./dispatcher.js";
import { Heartbeat } from "./heartbeat.js";
import { explainStoredEvent, type EventExplanation } from "./event-explain.js";
import { apiEvent, type IncomingEvent } from "./intake.js";
import { Scheduler, scheduleRows } from "./scheduler.js";
import { makeHook, webhookEvent } from "./webhooks.js";

export { DEFAULT_WORKSPACE } from "./admin.js";

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

export interface Limits {
  /** One event's body (POST /v1/events, webhooks). */
  eventBytes: number;
  /** A run's context after any step, and an enrollment's context_overrides. */
  contextBytes: number;
  /** One step's output (it is kept on the run for later templates). */
  stepOutputBytes: number;
}

export const DEFAULT_LIMITS: Limits = { eventBytes: 256 * 1024, contextBytes: 1024 * 1024, stepOutputBytes: 512 * 1024 };

/** How late a due run or schedule must be to count as overdue. */
export const OVERDUE_GRACE_MS = 60_000;

export interface EnrollRequest {
  subject_id?: string | null;
  context_overrides?: Record<string, unknown>;
  idempotency_key?: string;
  /** The trigger event as the run will see it (defaults to a manual-enrollment event). */
  event?: Record<string, unknown>;
  trigger_type?: string;
  event_id?: string | null;
}

export interface AutomationView extends Automation {
  definition: Definition;
  hooks?: HookRow[];
}

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
  readonly limits: Limits;
  private readonly versions: VersionCache;
  /** Concurrent ingests share one transaction (group commit); each resolves once it is durable. */
  private readonly intake = new Batcher((es: NewEvent[]) => this.store.insertEvents(es));
  private readonly runner: Runner | null;
  readonly dispatcher: Dispatcher | null;
  readonly scheduler: Scheduler | null;
  private readonly heartbeat: Heartbeat;

  constructor(opts: EngineOptions) {
    this.store = opts.store;
    this.clock = opts.clock ?? systemClock;
    this.owner = opts.runner?.owner ?? `wkr_${randomUUID().slice(0, 8)}`;
    for (const h of [...BUILTIN_HANDLERS, httpRequestNode, waitForEventNode, inputNode, approvalNode, forEachNode, agentNode]) this.handlers.set(h.kind, h);
    this.settings = opts.settings ?? {};
    this.http = opts.http ?? new UndiciHttpClient({ allow: opts.httpAllow ?? [] });
    this.limits = { ...DEFAULT_LIMITS, ...opts.limits };
    this.admin = new Admin(this.store, this.clock, opts.secretKey ? SecretBox.fromString(opts.secretKey) : null);
    this.versions = new VersionCache(this.store);
    const pg = this.store.kind === "postgres";
    this.runner = opts.noRunner
      ? null
      : new Runner(this.store, this.versions, this.handlers, this.clock, this.events, this.http, {
          owner: this.owner,
          leaseMs: 30_000,
          maxInFlight: 500,
          claimBatch: 200,
          pollMs: pg ? 250 : 1000,
          commitBatch: 500,
          commitConcurrency: pg ? 3 : 1,
          ...opts.runner,
        }, { actions: this.actions, settings: this.settings, secrets: (ws) => this.admin.secretsOf(ws), limits: this.limits });
    this.dispatcher = opts.noRunner
      ? null
      : new Dispatcher(this.store, this.versions, this.clock, this.events, { batch: 50, pollMs: opts.dispatchPollMs ?? (pg ? 100 : 500) }, () => this.poke());
    this.scheduler = opts.noRunner ? null : new Scheduler(this.store, this.clock, this.events, opts.schedulePollMs ?? 1000, () => this.dispatcher?.poke());
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
    await this.heartbeat.start();
    this.runner?.start();
    this.dispatcher?.start();
    this.scheduler?.start();
  }

  async stop(): Promise<void> {
    this.heartbeat.stop();
    await this.scheduler?.stop();
    await this.dispatcher?.stop();
    await this.runner?.stop();
  }

  /** Runs this process is driving now. */
  get busy(): number {
    return this.runner?.busy ?? 0;
  }

  /** Claim now (after creating work or moving a test clock). */
  poke(): void {
    this.runner?.poke();
  }

  /** Dispatch and fire schedules now (after moving a test clock), then claim. */
  async tick(): Promise<void> {
    await this.scheduler?.once();
    while (await this.dispatcher?.once()) {
      /* drain full batches */
    }
    this.poke();
  }

  // ---------- automations ----------

  validate(definition: unknown) {
    return validateDefinition(definition, { customKinds: this.customKinds });
  }

  private mustValidate(definition: unknown): Definition {
    const res = this.validate(definition);
    if (!res.ok) throw new WeftError(ErrorCodes.definitionInvalid, `the definition has ${res.errors.length} error(s)`, { errors: res.errors, warnings: res.warnings });
    return res.definition;
  }

  /** Append an audit entry for a mutation that has happened (the caller's name for who did it). */
  private async audit(workspaceId: string, actor: string, action: string, targetType: string, targetId: string, details: Record<string, unknown> = {}): Promise<void> {
    await this.store.appendAudit([{ workspace_id: workspaceId, actor, action, target_type: targetType, target_id: targetId, details, at: this.clock.now() }]);
  }

  async createAutomation(workspaceId: string, definition: unknown, status: AutomationStatus = "active", actor = "system"): Promise<AutomationView> {
    const def = this.mustValidate(definition);
    const now = this.clock.now();
    const a: Automation = { id: newId("aut", now), workspace_id: workspaceId, key: def.key, name: def.name, status, current_version: 1, created_at: now, updated_at: now };
    await this.store.insertAutomation(a, { automation_id: a.id, version: 1, definition: def, created_at: now });
    await this.audit(workspaceId, actor, "automation.create", "automation", a.id, { key: def.key, version: 1, status });
    const hooks = await this.syncTriggers(a, def);
    return { ...a, definition: def, hooks };
  }

  /** Schedule rows and webhook ingress points follow the current version and the status. */
  private async syncTriggers(a: Automation, def: Definition): Promise<HookRow[]> {
    const now = this.clock.now();
    await this.store.syncSchedules(a.id, scheduleRows(a.id, a.workspace_id, def, a.status === "active", now));
    const hookIdx = def.triggers.flatMap((t, i) => (t.type === "webhook" ? [i] : []));
    const hooks = await this.store.ensureHooks(a.workspace_id, a.id, hookIdx, (i) => makeHook(a.workspace_id, a.id, i, now));
    this.scheduler?.poke();
    return hooks.filter((h) => hookIdx.includes(h.trigger_index));
  }

  /** Make version n+1. Runs in flight stay on theirs. `expectedVersion` guards against lost edits. */
  async updateAutomation(workspaceId: string, id: string, definition: unknown, expectedVersion?: number, actor = "system"): Promise<AutomationView> {
    const def = this.mustValidate(definition);
    const current = await this.mustGetAutomation(workspaceId, id);
    if (def.key !== current.key) throw new WeftError("definition.key_changed", "an automation's key cannot change", { pointer: "/key" });
    const base = expectedVersion ?? current.current_version;
    if (base !== current.current_version) {
      throw new WeftError(ErrorCodes.versionConflict, `the automation is at version ${current.current_version}, not ${base}`, { expected_version: base, version: current.current_version });
    }
    const now = this.clock.now();
    const ok = await this.store.insertVersion(workspaceId, { automation_id: id, version: base + 1, definition: def, created_at: now }, now);
    if (!ok) throw new WeftError(ErrorCodes.versionConflict, `the automation is no longer at version ${base}`, { expected_version: base });
    await this.audit(workspaceId, actor, "automation.update", "automation", id, { version: base + 1 });
    const updated = { ...current, name: def.name, current_version: base + 1, updated_at: now };
    const hooks = await this.syncTriggers(updated, def);
    return { ...updated, definition: def, hooks };
  }

  async getAutomation(workspaceId: string, id: string): Promise<AutomationView> {
    const a = await this.mustGetAutomation(workspaceId, id);
    const v = await this.store.getVersion(id, a.current_version);
    if (!v) throw new WeftError(ErrorCodes.versionNotFound, `version ${a.current_version} not found`);
    // Hooks are made when a version is written (syncTriggers); reading only reads them.
    const idx = new Set(v.definition.triggers.flatMap((t, i) => (t.type === "webhook" ? [i] : [])));
    const hooks = idx.size > 0 ? (await this.store.listHooks(a.id)).filter((h) => idx.has(h.trigger_index)) : [];
    return { ...a, definition: v.definition, hooks };
  }

  listAutomations(workspaceId: string): Promise<Automation[]> {
    return this.store.listAutomations(workspaceId);
  }

  async getVersion(workspaceId: string, id: string, version: number): Promise<AutomationVersion> {
    await this.mustGetAutomation(workspaceId, id);
    const v = await this.store.getVersion(id, version);
    if (!v) throw new WeftError(ErrorCodes.versionNotFound, `automation ${id} has no version ${version}`);
    return v;
  }

  async setStatus(workspaceId: string, id: string, status: AutomationStatus, actor = "system"): Promise<Automation> {
    if (!(await this.store.setAutomationStatus(workspaceId, id, status, this.clock.now()))) {
      throw new WeftError(ErrorCodes.automationNotFound, `automation ${id} not found`);
    }
    await this.audit(workspaceId, actor, status === "active" ? "automation.activate" : "automation.pause", "automation", id);
    const a = await this.mustGetAutomation(workspaceId, id);
    const v = await this.store.getVersion(id, a.current_version);
    if (v) await this.syncTriggers(a, v.definition);
    return a;
  }

  private async mustGetAutomation(workspaceId: string, id: string): Promise<Automation> {
    const a = await this.store.getAutomation(workspaceId, id);
    if (!a) throw new WeftError(ErrorCodes.automationNotFound, `automation ${id} not found`);
    return a;
  }

  // ---------- runs ----------

  /**
   * Start a run of the automation's current version. Idempotent on `idempotency_key`: a repeat
   * returns the first run (`created: false`). Run-as and the trigger event are fixed here, once.
   */
  async enroll(workspaceId: string, automationId: string, req: EnrollRequest, actor = "system"): Promise<{ run: Run; created: boolean }> {
    this.checkSize(req.context_overrides, this.limits.contextBytes, "limits.context_too_large", "/context_overrides");
    const a = await this.mustGetAutomation(workspaceId, automationId);
    if (a.status !== "active") throw new WeftError(ErrorCodes.automationPaused, `automation ${automationId} is paused`);
    const v = await this.versions.get(a.id, a.current_version);
    if (!v) throw new WeftError(ErrorCodes.versionNotFound, `version ${a.current_version} not found`);
    const now = this.clock.now();
    const run = newRun(v, {
      workspace_id: workspaceId,
      event: req.event ?? { type: "enroll", subject_id: req.subject_id ?? null, payload: req.context_overrides ?? {} },
      event_id: req.event_id ?? null,
      dedupe_key: req.idempotency_key ? `key:${req.idempotency_key}` : (id) => `run:${id}`,
      trigger_type: req.trigger_type ?? "api",
      context: { ...(req.context_overrides ?? {}) },
      subject_override: req.subject_id ?? null,
      subject_fallback: null,
    }, now);
    const res = await this.store.insertRun(run, now, (r) => ({
      workspace_id: workspaceId, actor, action: "run.enroll", target_type: "run", target_id: r.id,
      details: { automation_id: automationId, subject_id: r.subject_id, status: r.status }, at: now,
    }));
    if (res.created) {
      this.events.emit("run:created", { run: res.run });
      if (res.run.status === "pending") this.poke();
    }
    return res;
  }

  /** Refuse a payload over its limit (or too deep, or with text no store can keep), naming where. */
  checkSize(value: unknown, limit: number, code: string, pointer: string): void {
    if (value === undefined) return;
    const problem = checkJsonInput(value, pointer);
    if (problem) throw new WeftError(problem.code, problem.message, { pointer: problem.pointer });
    const bytes = Buffer.byteLength(JSON.stringify(value));
    if (bytes > limit) throw new WeftError(code, `${pointer} is ${bytes} bytes; the limit is ${limit}`, { pointer, bytes, limit });
  }

  // ---------- events ----------

  /**
   * Store an event; resolves only once it is committed (acknowledge after this). A repeated key
   * (scoped to workspace and source) returns the first event; with another body it is refused.
   */
  async ingest(workspaceId: string, incoming: IncomingEvent): Promise<{ event_id: string; duplicate: boolean }> {
    this.checkSize(incoming, this.limits.eventBytes, "limits.event_too_large", "");
    const e = apiEvent(workspaceId, incoming, this.clock.now());
    return this.storeEvent(e);
  }

  /** Verify and store a webhook delivery (Standard Webhooks); the webhook-id is the idempotency key. */
  async ingestWebhook(hookId: string, raw: Buffer, headers: Record<string, string | string[] | undefined>, contentType: string | undefined): Promise<{ event_id: string; duplicate: boolean }> {
    const hook = await this.store.getHook(hookId);
    if (!hook) throw new WeftError("webhook.not_found", `no webhook ${hookId}`);
    return this.storeEvent(webhookEvent(hook, raw, headers, contentType, this.clock.now()));
  }

  private async storeEvent(e: NewEvent): Promise<{ event_id: string; duplicate: boolean }> {
    const { event, duplicate } = await this.intake.get(e);
    if (duplicate && event.payload_hash !== e.payload_hash) {
      throw new WeftError("event.key_conflict", `idempotency key "${e.idempotency_key}" was already used with a different body`, {
        field: "key", event_id: event.id,
      });
    }
    this.events.emit("event:stored", { event_id: event.id, duplicate });
    if (!duplicate) this.dispatcher?.poke();
    return { event_id: event.id, duplicate };
  }

  async getEvent(workspaceId: string, id: string) {
    const e = await this.store.getEvent(workspaceId, id);
    if (!e) throw new WeftError("event.not_found", `event ${id} not found`);
    return e;
  }

  /** Why the event did or did not start a run of each automation that could have taken it. */
  async explainEvent(workspaceId: string, id: string): Promise<EventExplanation> {
    return explainStoredEvent(this.store, await this.getEvent(workspaceId, id), this.clock.now());
  }

  // ---------- subjects ----------

  async pauseSubject(workspaceId: string, subjectId: string, p: { automation_id?: string | null; pause_reason: string; paused_until?: number | null }, actor = "system"): Promise<PauseRow> {
    if (p.automation_id) await this.mustGetAutomation(workspaceId, p.automation_id);
    const row: PauseRow = {
      workspace_id: workspaceId, subject_id: subjectId, automation_id: p.automation_id ?? "", pause_reason: p.pause_reason,
      paused_until: p.paused_until ?? null, created_at: this.clock.now(),
    };
    await this.store.putPause(row);
    await this.audit(workspaceId, actor, "subject.pause", "subject", subjectId, { automation_id: p.automation_id ?? null, pause_reason: p.pause_reason, paused_until: row.paused_until });
    this.runner?.pauses.invalidate();
    return row;
  }

  async resumeSubject(workspaceId: string, subjectId: string, automationId?: string | null, actor = "system"): Promise<boolean> {
    if (automationId) await this.mustGetAutomation(workspaceId, automationId);
    const deleted = await this.store.deletePause(workspaceId, subjectId, automationId ?? "", this.clock.now());
    if (deleted) await this.audit(workspaceId, actor, "subject.resume", "subject", subjectId, { automation_id: automationId ?? null });
    this.runner?.pauses.invalidate();
    this.poke();
    return deleted;
  }

  listPauses(workspaceId: string, subjectId: string): Promise<PauseRow[]> {
    return this.store.listPauses(workspaceId, subjectId);
  }

  /** Overdue is derived, never stored: due work late by more than the grace period. */
  overdue(workspaceId: string, graceMs = OVERDUE_GRACE_MS): Promise<OverdueCount[]> {
    return this.store.overdue(workspaceId, this.clock.now(), graceMs);
  }

  async getRun(workspaceId: string, id: string): Promise<Run> {
    const r = await this.store.getRun(workspaceId, id);
    if (!r) throw new WeftError(ErrorCodes.runNotFound, `run ${id} not found`);
    return r;
  }

  listRuns(filter: { workspace_id: string; automation_id?: string; status?: RunStatus; subject_id?: string; started_after?: number; started_before?: number; cursor?: string; limit?: number }): Promise<Page<Run>> {
    return this.store.listRuns({ ...filter, limit: Math.min(Math.max(filter.limit ?? 50, 1), 500) });
  }

  async listSteps(workspaceId: string, runId: string): Promise<StepRun[]> {
    await this.getRun(workspaceId, runId);
    return this.store.listSteps(runId);
  }

  // ---------- run control ----------

  /**
   * Stop (exit `admin_stopped`) or cancel a run. A parked run ends at once; a run a worker is
   * driving ends at that worker's next checkpoint (at once when it is this process). Recorded in
   * the audit log. Ending a run that already ended is refused (`run.already_ended`).
   */
  async controlRun(workspaceId: string, runId: string, control: RunControl, actor: string): Promise<Run> {
    const now = this.clock.now();
    const entry: AuditEntry = { workspace_id: workspaceId, actor, action: `run.${control}`, target_type: "run", target_id: runId, details: {}, at: now };
    const before = await this.getRun(workspaceId, runId);
    if (before.completed_at !== null) throw new WeftError("run.already_ended", `run ${runId} already ended (${before.status})`, { status: before.status });
    const r = await this.store.controlRun(workspaceId, runId, control, entry, now);
    if (!r) throw new WeftError(ErrorCodes.runNotFound, `run ${runId} not found`);
    if (r.completed_at !== null) {
      this.events.emit("run:finished", { run_id: r.id, automation_id: r.automation_id, status: r.status, exit_reason: r.exit_reason, trace_id: r.trace_id });
    } else {
      this.runner?.control(runId, control);
    }
    return r;
  }

  /** A new run from the start, for the same trigger event, on the automation's current version (re-entry rules apply). */
  async retriggerRun(workspaceId: string, runId: string, actor: string, idempotencyKey?: string): Promise<{ run: Run; created: boolean }> {
    const orig = await this.getRun(workspaceId, runId);
    const a = await this.mustGetAutomation(workspaceId, orig.automation_id);
    const v = await this.versions.get(a.id, a.current_version);
    if (!v) throw new WeftError(ErrorCodes.versionNotFound, `version ${a.current_version} not found`);
    const now = this.clock.now();
    const payload = (orig.event as { payload?: unknown }).payload;
    const run = newRun(v, {
      workspace_id: workspaceId, event: orig.event, event_id: orig.event_id,
      dedupe_key: idempotencyKey ? `retrigger:${orig.id}:${idempotencyKey}` : (id) => `retrigger:${orig.id}:${id}`,
      trigger_type: orig.trigger_type,
      context: orig.trigger_type === "api" && payload !== null && typeof payload === "object" ? { ...(payload as Record<string, unknown>) } : {},
      subject_override: orig.subject_id, subject_fallback: null,
    }, now);
    const res = await this.store.insertRun(run, now, (r) => ({
      workspace_id: workspaceId, actor, action: "run.retrigger", target_type: "run", target_id: orig.id, details: { new_run_id: r.id }, at: now,
    }));
    if (res.created) {
      this.events.emit("run:created", { run: res.run });
      if (res.run.status === "pending") this.poke();
    }
    return res;
  }

  async listItems(workspaceId: string, runId: string): Promise<RunItem[]> {
    await this.getRun(workspaceId, runId);
    return this.store.listItems(runId);
  }

  /**
   * Retry a failed item of an ended run, under the same idempotency key: an effect that already
   * happened comes back as `idempotent_replay`. One retry at a time per item (compare-and-swap).
   */
  async retryItem(workspaceId: string, runId: string, itemId: string, actor: string): Promise<RunItem> {
    const run = await this.getRun(workspaceId, runId);
    const item = await this.store.getItem(workspaceId, itemId);
    if (!item || item.run_id !== runId) throw new WeftError("item.not_found", `run ${runId} has no item ${itemId}`);
    if (item.outcome !== "failed") throw new WeftError("item.not_failed", `item ${itemId} is ${item.outcome}; only a failed item can be retried`, { outcome: item.outcome });
    if (run.completed_at === null) throw new WeftError("item.run_active", `run ${runId} is still ${run.status}; it retries its own items`, { status: run.status });
    const claimed = await this.store.beginItemRetry(workspaceId, itemId, this.clock.now());
    if (!claimed) throw new WeftError("item.not_failed", `item ${itemId} is no longer failed (another retry took it)`);
    const action = this.actions.get(claimed.action_kind);
    const v = await this.versions.get(run.automation_id, run.version);
    const node = v?.nodes.get(claimed.node_key);
    let result: { outcome: RunItem["outcome"]; output: unknown; error: RunItem["error"] };
    try {
      let input = claimed.input;
      if (hasRedaction(input) && node?.kind === "for_each") {
        // The stored input has its secrets masked: render it again from the run (secrets included).
        const secrets = await this.admin.secretsOf(workspaceId);
        const again = rerenderInputs(node.config as unknown as ForEachConfig, runScope(run, run.context, run.steps, secrets), [claimed]).get(claimed.idx);
        if (again === undefined) throw new WeftError("item.input_changed", "the item's input holds secrets and cannot be rendered again for the same subject");
        input = again;
      }
      result = await this.invokeItemRetry(action, run, { ...claimed, input }, node?.permissions ?? null);
    } catch (err) {
      // Never leave the item "running": it goes back to failed, retryable again.
      result = { outcome: "failed", output: null, error: { code: "item.retry_error", message: err instanceof Error ? err.message : String(err), retryable: true } };
    }
    const now = this.clock.now();
    const done: RunItem = { ...claimed, ...result, finished_at: now, updated_at: now };
    await this.store.finishItemRetry(done, {
      workspace_id: workspaceId, actor, action: "run_item.retry", target_type: "run_item", target_id: itemId,
      details: { run_id: runId, idempotency_key: claimed.idempotency_key, attempt: claimed.attempts, outcome: done.outcome }, at: now,
    });
    return done;
  }

  private async invokeItemRetry(action: RegisteredAction | undefined, run: Run, claimed: RunItem, permissions: readonly string[] | null) {
    let result: { outcome: RunItem["outcome"]; output: unknown; error: RunItem["error"] };
    if (!action) {
      result = { outcome: "failed", output: null, error: { code: "item.retry_unsupported", message: `"${claimed.action_kind}" is not a registered action`, retryable: false } };
    } else {
      const o = await action.invoke(claimed.input, {
        run_id: run.id, node_key: claimed.node_key, idempotency_key: claimed.idempotency_key, attempt: claimed.attempts,
        run_as: run.run_as, trace_id: run.trace_id, signal: AbortSignal.timeout(120_000), node_permissions: permissions,
        http: this.http, now: () => this.clock.now(),
      });
      result = o.ok ? { outcome: o.replayed ? "idempotent_replay" : "succeeded", output: o.output, error: null } : { outcome: "failed", output: null, error: o.error };
    }
    return result;
  }

  /** Why the run is where it is: what holds or failed it, in plain words (console and CLI). */
  async explain(workspaceId: string, runId: string): Promise<Explanation> {
    const run = await this.getRun(workspaceId, runId);
    const [steps, v, items, approvals, pauses] = await Promise.all([
      this.store.listSteps(run.id),
      this.versions.get(run.automation_id, run.version),
      this.store.listItems(run.id),
      this.store.listApprovals(workspaceId, undefined, 500).then((as) => as.filter((a) => a.run_id === run.id)),
      run.subject_id ? this.store.listPauses(workspaceId, run.subject_id) : Promise.resolve([]),
    ]);
    const workerAlive = (await this.store.liveProcesses(this.clock.now())).some((p) => isWorkerRole(p.role));
    return explainRun({
      run, steps, node: run.current_node_key ? v?.nodes.get(run.current_node_key) : undefined, approvals, items,
      pauses: pauses.filter((p) => p.automation_id === "" || p.automation_id === run.automation_id), now: this.clock.now(), graceMs: OVERDUE_GRACE_MS, workerAlive,
    });
  }

  // ---------- approvals ----------

  listApprovals(workspaceId: string, status?: ApprovalStatus, limit = 100): Promise<Approval[]> {
    return this.store.listApprovals(workspaceId, status, Math.min(Math.max(limit, 1), 500));
  }

  async getApproval(workspaceId: string, id: string): Promise<Approval> {
    const a = await this.store.getApproval(workspaceId, id);
    if (!a) throw new WeftError("approval.not_found", `approval ${id} not found`);
    return a;
  }

  /** Apply a decision once: a second, concurrent or late one is refused with `approval.already_decided`. */
  async decideApproval(workspaceId: string, id: string, decision: "approved" | "rejected", actor: string, comment: string | null = null): Promise<Approval> {
    const res = await this.store.decideApproval(workspaceId, id, decision, actor, comment, this.clock.now());
    if (!res.approval) throw new WeftError("approval.not_found", `approval ${id} not found`);
    if (!res.applied) {
      throw new WeftError("approval.already_decided", `approval ${id} is already ${res.approval.status}`, {
        status: res.approval.status, decided_by: res.approval.decided_by,
      });
    }
    this.events.emit("approval:decided", { approval_id: id, run_id: res.approval.run_id, status: decision, actor });
    this.poke();
    return res.approval;
  }

  listAudit(workspaceId: string, limit = 100, beforeId?: number): Promise<AuditRow[]> {
    return this.store.listAudit(workspaceId, Math.min(Math.max(limit, 1), 500), beforeId);
  }

  // ---------- simulation ----------

  /** Walk the automation's current version with a test context: nothing is written, sent or enqueued. */
  async simulate(workspaceId: string, automationId: string, req: SimulateRequest): Promise<Transcript> {
    const a = await this.mustGetAutomation(workspaceId, automationId);
    const v = await this.store.getVersion(a.id, a.current_version);
    if (!v) throw new WeftError(ErrorCodes.versionNotFound, `version ${a.current_version} not found`);
    const secretNames = (await this.store.listSecrets(workspaceId)).map((x) => x.name);
    return simulate(v.definition, req, { actions: this.actions, now: this.clock.now(), automation_id: a.id, version: v.version, settings: this.settings, secretNames });
  }

  /** Resolve when the run reaches a status satisfying `pred` (tests and the CLI wait this way). */
  async waitForRun(workspaceId: string, runId: string, pred: (r: Run) => boolean = (r) => r.completed_at !== null): Promise<Run> {
    for (;;) {
      const next = this.events.next("run:finished", (e) => e.run_id === runId);
      const parked = this.events.next("run:parked", (e) => e.run_id === runId);
      const r = await this.getRun(workspaceId, runId);
      if (pred(r)) return r;
      await Promise.race([next, parked, new Promise((res) => setTimeout(res, 200))]);
    }
  }
}
