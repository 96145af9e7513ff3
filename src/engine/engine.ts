// The engine as a library: automations and their versions, enrollment, run queries, and the
// runner loop. The server and CLI are thin faces over this class; an application can embed it.

import { randomUUID } from "node:crypto";
import { validateDefinition, type CustomKindSpec, type Definition } from "../model/definition.js";
import { WeftError } from "../model/errors.js";
import { CelScope, render } from "../model/expressions.js";
import type { RunStatus } from "../model/run-status.js";
import { actionHandler, type ActionSpec } from "./actions.js";
import { systemClock, type Clock } from "./clock.js";
import { ErrorCodes } from "./errors.js";
import { EngineEmitter } from "./events.js";
import { UndiciHttpClient, type HttpClient } from "./http.js";
import { newId, newTraceId } from "./ids.js";
import { BUILTIN_HANDLERS } from "./nodes/builtins.js";
import { httpRequestNode } from "./nodes/http-request.js";
import type { NodeHandler } from "./nodes/types.js";
import { Runner, type RunnerOptions } from "./runner.js";
import type { Automation, AutomationStatus, AutomationVersion, Page, Run, RunAs, StepRun, Store } from "./store.js";
import { VersionCache } from "./versions.js";

export const DEFAULT_WORKSPACE = "wsp_default";

export interface EngineOptions {
  store: Store;
  clock?: Clock;
  http?: HttpClient;
  /** Runner tuning; defaults suit one process on a small machine. */
  runner?: Partial<RunnerOptions>;
  /** Do not claim runs (an API-only process). */
  noRunner?: boolean;
}

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
}

export class Engine {
  readonly store: Store;
  readonly clock: Clock;
  readonly events = new EngineEmitter();
  readonly owner: string;
  private readonly handlers = new Map<string, NodeHandler>();
  private readonly customKinds = new Map<string, CustomKindSpec>();
  private readonly versions: VersionCache;
  private readonly runner: Runner | null;

  constructor(opts: EngineOptions) {
    this.store = opts.store;
    this.clock = opts.clock ?? systemClock;
    this.owner = opts.runner?.owner ?? `wkr_${randomUUID().slice(0, 8)}`;
    for (const h of [...BUILTIN_HANDLERS, httpRequestNode]) this.handlers.set(h.kind, h);
    this.versions = new VersionCache(this.store);
    const pg = this.store.kind === "postgres";
    this.runner = opts.noRunner
      ? null
      : new Runner(this.store, this.versions, this.handlers, this.clock, this.events, opts.http ?? new UndiciHttpClient(), {
          owner: this.owner,
          leaseMs: 30_000,
          maxInFlight: 2000,
          claimBatch: 200,
          pollMs: pg ? 250 : 1000,
          commitBatch: 500,
          commitConcurrency: pg ? 3 : 1,
          ...opts.runner,
        });
  }

  /** Register a custom action kind (TypeScript). Call before start(). */
  registerAction(spec: ActionSpec): void {
    if (this.handlers.has(spec.kind)) throw new WeftError("action.kind_taken", `kind "${spec.kind}" is already registered`);
    this.handlers.set(spec.kind, actionHandler(spec));
    this.customKinds.set(spec.kind, { ports: spec.ports ?? ["next", "error"] });
  }

  async start(): Promise<void> {
    await this.store.ensureWorkspace(DEFAULT_WORKSPACE, "Default workspace", this.clock.now());
    this.runner?.start();
  }

  async stop(): Promise<void> {
    await this.runner?.stop();
  }

  /** Claim now (after creating work or moving a test clock). */
  poke(): void {
    this.runner?.poke();
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

  async createAutomation(workspaceId: string, definition: unknown, status: AutomationStatus = "active"): Promise<AutomationView> {
    const def = this.mustValidate(definition);
    const now = this.clock.now();
    const a: Automation = { id: newId("aut", now), workspace_id: workspaceId, key: def.key, name: def.name, status, current_version: 1, created_at: now, updated_at: now };
    await this.store.insertAutomation(a, { automation_id: a.id, version: 1, definition: def, created_at: now });
    return { ...a, definition: def };
  }

  /** Make version n+1. Runs in flight stay on theirs. `expectedVersion` guards against lost edits. */
  async updateAutomation(workspaceId: string, id: string, definition: unknown, expectedVersion?: number): Promise<AutomationView> {
    const def = this.mustValidate(definition);
    const current = await this.mustGetAutomation(workspaceId, id);
    if (def.key !== current.key) throw new WeftError("definition.key_changed", "an automation's key cannot change", { pointer: "/key" });
    const base = expectedVersion ?? current.current_version;
    const now = this.clock.now();
    const ok = await this.store.insertVersion(workspaceId, { automation_id: id, version: base + 1, definition: def, created_at: now }, now);
    if (!ok) throw new WeftError(ErrorCodes.versionConflict, `the automation is no longer at version ${base}`, { expected_version: base });
    return { ...current, name: def.name, current_version: base + 1, updated_at: now, definition: def };
  }

  async getAutomation(workspaceId: string, id: string): Promise<AutomationView> {
    const a = await this.mustGetAutomation(workspaceId, id);
    const v = await this.store.getVersion(id, a.current_version);
    if (!v) throw new WeftError(ErrorCodes.versionNotFound, `version ${a.current_version} not found`);
    return { ...a, definition: v.definition };
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

  async setStatus(workspaceId: string, id: string, status: AutomationStatus): Promise<Automation> {
    if (!(await this.store.setAutomationStatus(workspaceId, id, status, this.clock.now()))) {
      throw new WeftError(ErrorCodes.automationNotFound, `automation ${id} not found`);
    }
    return this.mustGetAutomation(workspaceId, id);
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
  async enroll(workspaceId: string, automationId: string, req: EnrollRequest): Promise<{ run: Run; created: boolean }> {
    const a = await this.mustGetAutomation(workspaceId, automationId);
    if (a.status !== "active") throw new WeftError(ErrorCodes.automationPaused, `automation ${automationId} is paused`);
    const v = await this.versions.get(a.id, a.current_version);
    if (!v) throw new WeftError(ErrorCodes.versionNotFound, `version ${a.current_version} not found`);
    const def = v.definition;
    const now = this.clock.now();
    const id = newId("run", now);
    const event = req.event ?? { type: "enroll", subject_id: req.subject_id ?? null, payload: req.context_overrides ?? {} };
    const context = { ...(req.context_overrides ?? {}) };
    let subject = req.subject_id ?? null;
    if (subject === null && def.subject !== undefined) {
      const s = render(def.subject, new CelScope({ event, context, steps: {}, subject: null, run: { id }, secrets: {} }));
      subject = s === null || s === undefined || s === "" ? null : String(s);
    }
    const runAs: RunAs = def.run_as ?? { type: "workspace" };
    const policy = def.reentry?.policy ?? "skip_if_active";
    const res = await this.store.insertRun({
      id, workspace_id: workspaceId, automation_id: a.id, version: a.current_version, event_id: req.event_id ?? null,
      dedupe_key: req.idempotency_key ? `key:${req.idempotency_key}` : `run:${id}`, trigger_type: req.trigger_type ?? "api",
      subject_id: subject, active_subject: policy === "allow_concurrent" ? null : subject, status: "pending",
      exit_reason: null, current_node_key: def.root, waiting_for: null, waiting_until: null, event, context, steps: {},
      cursor: { node: def.root, port: null, visits: {}, since_pause: 0, attempt: 0 },
      run_as: runAs, trace_id: newTraceId(), due_at: now, started_at: now,
    });
    if (res.created) {
      this.events.emit("run:created", { run: res.run });
      this.poke();
      return { run: res.run, created: true };
    }
    if (res.reason === "duplicate") return { run: res.run, created: false };
    throw new WeftError("run.already_active", `subject ${subject} already has an active run of this automation`, { active_run_id: res.run?.id ?? null });
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
