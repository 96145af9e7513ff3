// The Store interface the engine declares; store/postgres and store/embedded implement it and
// pass one contract suite. Domain types here are not row types: each store maps at its edge.
// All times are epoch milliseconds from the engine's clock (never the database's now()).

import type { Definition } from "../model/definition.js";
import type { TriggerEvent } from "../model/triggers.js";
import type { StepError } from "../model/errors.js";
import type { ExitReason, RunStatus } from "../model/run-status.js";
import type { StepOutcome } from "../model/step-outcome.js";
import type { ItemOutcome } from "../model/item-outcome.js";
import type { PolicyViolation } from "../model/permissions.js";
import { AGING_STEP_MS } from "../model/priority.js";
import type { FlowAcquire, FlowDecision, FlowRateGate, FlowSlotGate } from "../model/flow.js";
import type { FlowEntry as WindowEntry, FlowMembership as WindowMembership, FlowWindow as Window } from "../model/flow-windows.js";

/** An operator's request to end a run: `stop` exits at once (`admin_stopped`); `cancel` lets in-flight items finish. */
export type RunControl = "stop" | "cancel";

export type AutomationStatus = "active" | "paused";

export interface Automation {
  id: string;
  workspace_id: string;
  key: string;
  name: string;
  status: AutomationStatus;
  current_version: number;
  created_at: number;
  updated_at: number;
}

export interface AutomationVersion {
  automation_id: string;
  version: number;
  definition: Definition;
  created_at: number;
}

export type RunAs = { type: "workspace" } | { type: "user"; user_id: string };

/** Where a run stands in its graph; committed with every checkpoint. */
export interface Cursor {
  /** The node to execute next (null once the run is terminal). */
  node: string | null;
  /** The port by which that node was entered. */
  port: string | null;
  /** Visits per node key so far (the visit number is part of the step's idempotency key). */
  visits: Record<string, number>;
  /** Node visits since the last pause point (the loop cap). */
  since_pause: number;
  /** Attempts already made at the current visit (retries). */
  attempt: number;
  /**
   * Attempts an earlier drive made at the current visit before the run was redriven: step rows
   * number their attempts after these, while the retry policy counts only `attempt`.
   */
  attempt_base?: number;
  /** Set while the current node has parked the run (delay, waits); the node resumes from it. */
  parked?: { kind: string; since: number; until: number | null; data?: Record<string, unknown> } | undefined;
  /**
   * Named events taken by a wait of this run since its last commit. The commit records them in
   * the run's consumed events (Checkpoint.consumed), which later waits never count again; until
   * then a wait in the same drive excludes them from here.
   */
  consumed?: string[];
  /** Waits count named events received from this time on: the trigger event's arrival, or the enrollment. */
  events_from?: number;
  /** A rate-limit turn this run reserved (queued) at the gate it is parked before; it passes at that time. */
  flow_turn?: number;
}

export interface Run {
  id: string;
  workspace_id: string;
  automation_id: string;
  version: number;
  event_id: string | null;
  dedupe_key: string;
  trigger_type: string;
  subject_id: string | null;
  status: RunStatus;
  exit_reason: ExitReason | null;
  current_node_key: string | null;
  waiting_for: string | null;
  waiting_until: number | null;
  /** The trigger event as the run saw it at start (never re-read). */
  event: Record<string, unknown>;
  context: Record<string, unknown>;
  steps: Record<string, unknown>;
  cursor: Cursor;
  run_as: RunAs;
  trace_id: string;
  items_total: number;
  items_failed: number;
  /** How often the run was resumed after its worker vanished (never counted as failure). */
  interruptions: number;
  /** Claims since the last checkpoint commit, this one included (more than the quarantine setting lost: quarantined). */
  unsettled_claims: number;
  /** A stop or cancel requested while a worker held the run; the worker applies it at its next checkpoint. */
  control: RunControl | null;
  /** When the runner may claim it: wake time when parked, lease expiry while running, null when terminal. */
  due_at: number | null;
  /** Fixed at creation, already clamped (model/priority.ts): orders this automation's due runs in the claim (claimKey). Stores always set it; absent means 0. */
  priority?: number;
  /** Why the definition's priority expression gave 0 for this run (it failed or was not a number); null when it did not fail. */
  priority_error?: string | null;
  lease_owner: string | null;
  /** Compare-and-swap version: every state write names the rev it read. */
  rev: number;
  started_at: number;
  completed_at: number | null;
  updated_at: number;
}

export type NewRun = Omit<
  Run,
  "rev" | "lease_owner" | "interruptions" | "unsettled_claims" | "control" | "items_total" | "items_failed" | "completed_at" | "updated_at"
> & {
  /** Set to the subject when the automation allows one active run per subject (enforced by the store). */
  active_subject: string | null;
  completed_at?: number | null;
  /**
   * Re-entry cooldown: skip (as an exited run, `reentry_cooldown`) when the subject finished a run
   * of this automation less than this long ago. 0 = no cooldown.
   */
  cooldown_ms?: number;
  /**
   * Inserted held by this worker (the runner's leaseForInserts), as if claimed at its creation: it is
   * created `running`, `due_at` the lease's end, counting one unsettled claim. Dropped (created
   * without a lease) when the run is not created pending (an enrollment rule skipped it, or
   * admission parked it).
   */
  lease_owner?: string | null;
  /**
   * The run as its first step left it, when that step parks it (a root delay, computed in memory
   * before the insert: Runner.parkAtCreation). Created with it (status `waiting`, this cursor and
   * due time, and the step's row) when the run is created pending; an enrollment rule that skips
   * the run leaves it unused (the run is recorded as skipped, as without it).
   */
  first_park?: FirstPark;
  /** `reentry.policy: cancel_previous`: inserting it cancels the run holding its active slot (model/enrollment.ts). */
  replace_active?: boolean;
  /**
   * The automation's slot gates, rendered for this run (flow-gates.ts admissionGates): the store
   * admits the run at insert (model/flow.ts admitRuns), taking its slots or parking it as a waiter.
   */
  admit?: FlowSlotGate[];
  /** The automation's queued rate limit, rendered for this run: the store reserves its turn at insert (model/flow.ts admitRates). */
  admit_rate?: FlowRateGate;
  /**
   * Inserted only while its automation is active with `version` current, checked by the insert
   * itself: otherwise the store inserts none of the call's runs and throws StaleAutomationError.
   * Enrollment sets it, so it may plan runs from an automation it read earlier (a cached read,
   * no round trip) and still never enroll into a paused automation or a superseded version.
   */
  while_current?: boolean;
};

/**
 * An insert refused because a run's automation (NewRun.while_current) is no longer active with
 * that version current. Nothing of the call was written; the caller reads the automation again.
 */
export class StaleAutomationError extends Error {
  constructor(readonly automationId: string) {
    super(`automation ${automationId} changed since it was read (paused, or a new version published)`);
    this.name = "StaleAutomationError";
  }
}

/** A new run's first park (NewRun.first_park). */
export interface FirstPark {
  waiting_for: string;
  waiting_until: number | null;
  due_at: number | null;
  cursor: Cursor;
  steps: NewStepRun[];
}

export interface StepRun {
  id: number;
  run_id: string;
  node_key: string;
  node_kind: string;
  visit: number;
  attempt: number;
  entered_via_port_key: string | null;
  exited_via_port_key: string | null;
  outcome: StepOutcome;
  duration_ms: number;
  idempotency_key: string;
  input: unknown;
  output: unknown;
  error: StepError | null;
  /** Calls the step tried outside its permission set (blocked). */
  violations?: PolicyViolation[] | null;
  /** What a custom action logged (bounded). */
  logs?: LogLine[] | null;
  started_at: number;
  finished_at: number;
}

export type NewStepRun = Omit<StepRun, "id">;

export interface LogLine {
  level: "info" | "warn" | "error";
  message: string;
  data?: unknown;
  at: number;
}

/** The full mutable state of a run after a checkpoint. */
export interface RunState {
  status: RunStatus;
  exit_reason: ExitReason | null;
  current_node_key: string | null;
  waiting_for: string | null;
  waiting_until: number | null;
  context: Record<string, unknown>;
  steps: Record<string, unknown>;
  cursor: Cursor;
  items_total: number;
  items_failed: number;
  interruptions: number;
  /**
   * When the run is due once released. The store overrides it in one case: a run that carries a
   * stop or cancel request and is released without ending (a park, a retry park, a hand-back) is
   * due at `updated_at`, so the next claim applies the request whichever commit the worker made.
   */
  due_at: number | null;
  /** Keep the lease (the worker goes on executing) or release it (parked or terminal). */
  keep_lease: boolean;
  completed_at: number | null;
  updated_at: number;
  /**
   * Parked on wait_for_event / input: the named events that would wake the run. The store indexes
   * this (the dispatcher wakes matching runs), and when committing the park it makes the run due
   * at once if such an event is already stored, so an event stored while the run was deciding to
   * wait is not missed.
   */
  wait?: WaitSpec | null;
  /**
   * The run ends (terminal) and may leave items or approvals open: in the same commit the store
   * skips its unstarted items and cancels its pending approvals.
   */
  close_open?: boolean;
}

export interface WaitSpec {
  name: string;
  /** Only events about this subject (null: any subject). */
  subject_id: string | null;
  /** Events received at or after this time... */
  after: number;
  /** ...except these (already examined or consumed)... */
  exclude: string[];
  /** ...and except the events this run's waits already took (its recorded consumed events). */
  run_id?: string;
}

/** The index key of a run parked on named events: "<name>\u0001<subject or empty>" (both stores). */
export const waitKey = (name: string, subject: string | null): string => `${name}\u0001${subject ?? ""}`;

export interface RunItem {
  id: string;
  run_id: string;
  workspace_id: string;
  node_key: string;
  visit: number;
  /** Position in the fan-out list. */
  idx: number;
  subject_id: string | null;
  action_kind: string;
  outcome: ItemOutcome;
  attempts: number;
  /** `run / node / visit / idx`: the same for every attempt, including an operator's retry. */
  idempotency_key: string;
  input: unknown;
  output: unknown;
  error: StepError | null;
  approval_id: string | null;
  /** A retryable failure waits until then before its next attempt. */
  not_before: number | null;
  started_at: number | null;
  finished_at: number | null;
  updated_at: number;
}

export type ApprovalStatus = "pending" | "approved" | "rejected" | "timed_out" | "cancelled";

export interface Approval {
  id: string;
  workspace_id: string;
  run_id: string;
  automation_id: string;
  node_key: string;
  visit: number;
  /** Set when the approval gates one item of a fan-out. */
  item_id: string | null;
  title: string;
  approvers: string[];
  status: ApprovalStatus;
  decided_by: string | null;
  decided_at: number | null;
  comment: string | null;
  created_at: number;
  expires_at: number | null;
}

export interface AuditEntry {
  workspace_id: string;
  /** Who: `user:<id>`, `token:<id>`, `admin`, or `run:<id>` for what a run's step tried. */
  actor: string;
  /** What: `run.stop`, `approval.approve`, `policy.violation`, ... */
  action: string;
  target_type: string;
  target_id: string;
  details: Record<string, unknown>;
  at: number;
}

/**
 * The audit entry of a run an insert creates, made from the run as planned (before the insert);
 * the store writes it only for a run it creates, in the same commit, its details carrying the
 * run's status as created (`status`: pending, waiting, or exited when an enrollment rule skipped it).
 * Being decided before the insert, the entry can be written by the insert's own statement.
 */
export type RunAudit = (run: NewRun) => AuditEntry;

/** The audited form of a created run's entry (RunAudit): its details with the status it was created in. */
export function runAuditEntry(audit: RunAudit, planned: NewRun, created: Run): AuditEntry {
  const e = audit(planned);
  return { ...e, details: { ...e.details, status: created.status } };
}

/** The audit entry of a decided approval (both stores write it in the deciding transaction). */
export function approvalAudit(workspaceId: string, a: Approval, now: number): AuditEntry {
  const verb = a.status === "approved" ? "approve" : a.status === "rejected" ? "reject" : "time_out";
  return {
    workspace_id: workspaceId,
    actor: a.decided_by ?? "system",
    action: `approval.${verb}`,
    target_type: "approval",
    target_id: a.id,
    details: { run_id: a.run_id, node_key: a.node_key, item_id: a.item_id, comment: a.comment },
    at: now,
  };
}

/**
 * A failed or stopped run sent back to `pending` on the same run (redrive): the engine decides
 * the cursor, version and active slot; the store writes them only if the run still has
 * `expected_rev` and `expected_status`, with the audit entry, in one transaction.
 */
export interface Redrive {
  workspace_id: string;
  run_id: string;
  expected_rev: number;
  expected_status: RunStatus;
  version: number;
  cursor: Cursor;
  /** The subject's active slot the run takes again (null: the automation allows concurrent runs). */
  active_subject: string | null;
  audit: AuditEntry;
  now: number;
}

/** `applied`: the run was changed; `stale`: it changed since it was read; `slot_taken`: its subject has another active run. */
export type RedriveResult = { outcome: "applied"; run: Run } | { outcome: "stale" } | { outcome: "slot_taken" };

export interface AuditRow extends AuditEntry {
  id: number;
}

export interface CommitResult {
  applied: boolean;
  /** A stop or cancel request on the run, seen by this commit. */
  control: RunControl | null;
}

/** One run's progress, committed atomically: state CAS on (rev, lease owner), then its step rows. */
export interface Checkpoint {
  run_id: string;
  expected_rev: number;
  state: RunState;
  steps: NewStepRun[];
  /** Fan-out items written (inserted or replaced) with this checkpoint. */
  items?: RunItem[];
  /**
   * Fan-out items already on record whose attempt changed them: only outcome, attempts, output,
   * error, approval_id, not_before, started_at, finished_at and updated_at are written.
   */
  item_updates?: RunItem[];
  /** Approvals created with this checkpoint (ignored when the id exists). */
  approvals?: Approval[];
  audit?: AuditEntry[];
  /** Named events a wait took: recorded for the run (never taken again by it), with this checkpoint. */
  consumed?: string[];
  /**
   * Claimed by this commit, not before it (Store.dueRuns): applies only while the run is still
   * held by no worker, due at `at` and carries no stop or cancel (and its rev is expected_rev);
   * with keep_lease the committing worker takes the lease, until `lease_until`.
   */
  claim?: { at: number; lease_until: number };
  /**
   * The run's context, steps and cursor are exactly what its previous commit wrote (both are
   * flushes of one node execution's items, and nothing writes them while a node runs): the store
   * leaves those columns as they are instead of writing them again. A fan-out's item flushes would
   * otherwise rewrite the run's whole context, list included, each time.
   */
  state_unchanged?: boolean;
}

export interface RunFilter {
  workspace_id: string;
  /** Runs that execute as a specific user are visible to that user (and admins): set for non-admin callers. */
  visible_to_user?: string;
  automation_id?: string;
  status?: RunStatus;
  subject_id?: string;
  started_after?: number;
  started_before?: number;
  /** Opaque position from the previous page. */
  cursor?: string;
  limit: number;
}

export interface Page<T> {
  items: T[];
  next_cursor: string | null;
}

/** Rows per page of a list the API serves when none is asked for, and the most it serves (a larger ask is clamped). */
export const PAGE_DEFAULT = 50;
export const PAGE_MAX = 200;

/**
 * A run in a list: its identity, status and counts, without the fields that grow with the run
 * (context, trigger event, steps map, cursor). The stores select only these columns, so a list
 * never reads a large context to throw it away; the full run is `getRun`.
 */
export type RunSummary = Pick<
  Run,
  | "id"
  | "workspace_id"
  | "automation_id"
  | "version"
  | "event_id"
  | "trigger_type"
  | "subject_id"
  | "status"
  | "exit_reason"
  | "current_node_key"
  | "waiting_for"
  | "waiting_until"
  | "run_as"
  | "trace_id"
  | "items_total"
  | "items_failed"
  | "interruptions"
  | "started_at"
  | "completed_at"
  | "updated_at"
> & {
  /** The automation's key, for reading a list without a second request. */
  automation_key: string;
};

/**
 * created: a new run row exists — pending, or already `exited` when enrollment was skipped
 * (`subject_paused`, `reentry_cooldown`, `already_active`); skips are on the record too.
 * created false: the dedupe key was seen before; `run` is the first run.
 */
export type InsertRunResult = { created: boolean; run: Run };

export interface StoredEvent {
  id: string;
  workspace_id: string;
  /** Scope of the idempotency key: "api", "webhook:<hook id>", "schedule", "outbox", or the caller's. */
  source: string;
  idempotency_key: string;
  /** sha256 of the canonical body: the same key with another body is refused. */
  payload_hash: string;
  type: "record" | "event" | "webhook" | "schedule";
  name: string | null;
  subject_id: string | null;
  body: TriggerEvent;
  /** Dispatch shard: a hash of (workspace, type, name), so one flooded stream is one shard. */
  shard: number;
  received_at: number;
  dispatched_at: number | null;
  runs_created: number;
  /** Who posted it: the user id (API) or `system` (library); null for webhook, schedule and outbox events. */
  actor: string | null;
  /** The API token it was posted with (null: the library or the engine). */
  token_id: string | null;
  /** The poster's role in the workspace when it was posted (null: library or engine). */
  actor_role: Role | null;
  /** Dispatch rounds that leased it (a lease that never reached the dispatch commit counts). */
  dispatch_attempts: number;
  /** The last error planning it raised, if any. */
  dispatch_error: string | null;
  /** Set when its dispatch failed WEFT_QUARANTINE_AFTER times: dispatch skips it until replayed. */
  undeliverable_at: number | null;
  undeliverable_reason: string | null;
  /** A member dropped it (undeliverable for good). */
  dropped_at: number | null;
}

/** Fields the dispatcher and the operator write after the event is stored. */
type EventProgress = "dispatched_at" | "runs_created" | "dispatch_attempts" | "dispatch_error" | "undeliverable_at" | "undeliverable_reason" | "dropped_at";

export type NewEvent = Omit<StoredEvent, EventProgress | "actor" | "token_id" | "actor_role"> & {
  actor?: string | null;
  token_id?: string | null;
  actor_role?: Role | null;
};

/** A dispatch round's read: leased events and the automations active in their workspaces after the read. */
export interface DispatchBatch {
  events: StoredEvent[];
  active: Automation[];
  /** Events this round found past the quarantine setting and marked undeliverable. */
  undeliverable: StoredEvent[];
  /**
   * When nothing was leased: when the first live lease of an undispatched event lapses (its
   * dispatcher may have died), or null when none is held. The dispatcher looks again then.
   */
  next_lapse?: number | null;
}

/** What a round planned: the events, the runs, and the automations (id@version) it planned against. */
export interface DispatchPlan {
  event_ids: string[];
  runs: NewRun[];
  /** Per workspace, activeSignature() of the automations the plan used. */
  seen: Record<string, string>;
  /** Events held by debounce or batch (engine/flow-intake.ts): each joins or opens its key's window. */
  flow?: FlowEntry[];
}

/**
 * The dispatch commit's check (both stores): of the locked events, those whose workspace's active
 * automations (read inside the commit) are not the ones the plan used are stale.
 */
export function splitStale(locked: readonly StoredEvent[], active: readonly Automation[], plan: DispatchPlan): { fresh: StoredEvent[]; stale: string[] } {
  const now = new Map<string, Automation[]>();
  for (const a of active) now.set(a.workspace_id, [...(now.get(a.workspace_id) ?? []), a]);
  const fresh: StoredEvent[] = [];
  const stale: string[] = [];
  for (const e of locked) {
    if (activeSignature(now.get(e.workspace_id) ?? []) === (plan.seen[e.workspace_id] ?? "")) fresh.push(e);
    else stale.push(e.id);
  }
  return { fresh, stale };
}

/** The active automations of a workspace as one comparable string: a plan made on another set is stale. */
export function activeSignature(active: readonly Pick<Automation, "id" | "current_version">[]): string {
  return active
    .map((a) => `${a.id}@${a.current_version}`)
    .sort()
    .join(",");
}

export interface PauseKey {
  workspace_id: string;
  subject_id: string;
  automation_id: string;
}

export const pauseKey = (k: PauseKey): string => `${k.workspace_id}\u0000${k.subject_id}\u0000${k.automation_id}`;

/** Of several pauses in force, the one that ends last (null = indefinite). */
export function laterEnd(a: number | null | undefined, b: number | null): number | null {
  if (a === undefined) return b;
  if (a === null || b === null) return null;
  return Math.max(a, b);
}

export interface PauseRow {
  workspace_id: string;
  subject_id: string;
  /** "" for a global pause. */
  automation_id: string;
  pause_reason: string;
  paused_until: number | null;
  created_at: number;
}

export interface ScheduleRow {
  automation_id: string;
  trigger_index: number;
  workspace_id: string;
  cron: string;
  timezone: string;
  catch_up: "latest" | "all" | "none";
  next_fire_at: number | null;
  last_fired_at: number | null;
}

/** One due schedule row's firing, worked out before the transaction that stores it. */
export interface ScheduleFiring {
  automation_id: string;
  trigger_index: number;
  /** The next_fire_at the plan was made from: the row is advanced only if it still holds it. */
  expected_next_fire_at: number;
  next_fire_at: number | null;
  events: NewEvent[];
}

export interface HookRow {
  id: string;
  workspace_id: string;
  automation_id: string;
  trigger_index: number;
  /** The signing secret as stored: sealed (see engine/secrets.ts), or plaintext if written before sealing. */
  secret: string;
  created_at: number;
  /** The secret a rotation replaced (sealed), still verifying until previous_expires_at. */
  previous_secret: string | null;
  previous_expires_at: number | null;
  rotated_at: number | null;
}

/** A hook's secret columns after a rotation or a sealing. */
export type HookSecretUpdate = Pick<HookRow, "secret" | "previous_secret" | "previous_expires_at" | "rotated_at">;

export interface OverdueCount {
  automation_id: string;
  runs: number;
  schedules: number;
  oldest_due_at: number;
}

export type Role = "admin" | "member" | "viewer";

export interface Workspace {
  id: string;
  name: string;
  created_at: number;
}

export interface User {
  id: string;
  workspace_id: string;
  name: string;
  role: Role;
  /** May create workspaces (the bootstrap admin). */
  instance_admin: boolean;
  created_at: number;
  /** When an admin disabled the user (their tokens stop working); null while enabled. */
  disabled_at?: number | null;
}

/** An admin who can act: what a store counts for "a workspace keeps at least one enabled admin". */
export function isEnabledAdmin(u: Pick<User, "role" | "disabled_at">): boolean {
  return u.role === "admin" && !u.disabled_at;
}

export interface TokenRow {
  id: string;
  workspace_id: string;
  user_id: string;
  created_at: number;
  revoked_at: number | null;
}

export interface SecretRow {
  name: string;
  /** Opaque to the store: the engine's AES-256-GCM box. */
  ciphertext: string;
  created_at: number;
  updated_at: number;
}

export interface OutcomeRow {
  automation_id: string;
  runs: Record<string, number>;
  items: Record<string, number>;
}

export interface OpsCounts {
  /** Claimable runs due now (pending, retrying, interrupted, woken) and undispatched events. */
  due_runs: number;
  undispatched_events: number;
  oldest_due_at: number | null;
  oldest_due_run_id: string | null;
  /** Failed runs per automation: in the whole window and in its last hour. */
  failed: { automation_id: string; window: number; last_hour: number }[];
}

/** Which parts of the engine a process runs: `worker` dispatches, runs and fires schedules; `all` is both. */
export type ProcessRole = "api" | "worker" | "all";

export interface ProcessBeat {
  id: string;
  role: ProcessRole;
  host: string;
  pid: number;
  started_at: number;
}

export interface LiveProcess extends ProcessBeat {
  last_seen: number;
}

/** How often a process records its heartbeat. */
export const HEARTBEAT_MS = 5_000;
/** A process not seen for this long is not alive (three missed beats). */
export const LIVENESS_MS = 3 * HEARTBEAT_MS;
/** A process's row is deleted once it has not been seen for this long. */
export const PROCESS_FORGET_MS = 3_600_000;

/** Whether a role dispatches events, drives runs and fires schedules. */
export const isWorkerRole = (role: ProcessRole): boolean => role === "worker" || role === "all";

export interface EventFilter {
  workspace_id: string;
  subject_id?: string;
  /** The stored type (record, event, webhook, schedule)... */
  type?: StoredEvent["type"];
  /** ...or the name of a named event. */
  name?: string;
  /** The idempotency key the event was sent with. */
  key?: string;
  /** Opaque position from the previous page. */
  cursor?: string;
  limit: number;
}

/**
 * What a change made by one process can make due for another: events to dispatch, runs to claim,
 * schedules to re-read, subject pauses to re-read.
 */
/** "hosts": a destination pause was recorded (each runner drops its cached pauses, host-pauses.ts). */
/** `workers`: a worker started or stopped (cleanly): processes that pick whom to wake read the live workers again. */
export type WakeKind = "dispatch" | "claim" | "schedule" | "pauses" | "hosts" | "workers";
export const WAKE_KINDS: readonly WakeKind[] = ["dispatch", "claim", "schedule", "pauses", "hosts", "workers"];

/**
 * Wake-ups between processes sharing a store. A wake-up only shortens a wait: every process still
 * polls, so a lost one costs latency, never work.
 */
export interface WakeChannel {
  /**
   * Tell the other processes that work of these kinds became due (after it committed): every
   * listener, or with `to` the one process of that id (what it listens to with its id).
   */
  notify(kinds: readonly WakeKind[], to?: string): Promise<void>;
  /**
   * Hear the other processes' wake-ups until the returned function is called. After a gap in
   * listening (a reconnect), `onWake` gets every kind, since what was sent meanwhile is lost.
   */
  listen(onWake: (kinds: readonly WakeKind[]) => void, id?: string): Promise<() => Promise<void>>;
}

export interface Store {
  readonly kind: "postgres" | "embedded";
  /** Cross-process wake-ups; absent where only one process uses the store (embedded). */
  readonly wakeups?: WakeChannel;
  migrate(): Promise<void>;
  close(): Promise<void>;

  ensureWorkspace(id: string, name: string, now: number): Promise<void>;

  /**
   * Throws WeftError `automation.key_taken` when the workspace already has this key. The audit
   * entry, if given, is written in the same transaction (no entry, no automation, and back).
   */
  insertAutomation(a: Automation, v: AutomationVersion, audit?: AuditEntry): Promise<void>;
  /** Adds version v.version if the automation's current version is still v.version - 1 (with its audit entry, in one transaction). */
  insertVersion(workspaceId: string, v: AutomationVersion, now: number, audit?: AuditEntry): Promise<boolean>;
  /** Sets the status and writes the audit entry in one transaction; false (nothing written) when there is no such automation. */
  setAutomationStatus(workspaceId: string, id: string, status: AutomationStatus, now: number, audit?: AuditEntry): Promise<boolean>;
  getAutomation(workspaceId: string, id: string): Promise<Automation | null>;
  listAutomations(workspaceId: string): Promise<Automation[]>;
  getVersion(automationId: string, version: number): Promise<AutomationVersion | null>;

  /**
   * Idempotent on (automation_id, dedupe_key). Applies the enrollment rules in the store, not by
   * read-then-write in the engine: a paused subject, a cooldown, or an active run of the same
   * (automation, active_subject) turn the new row into an `exited` run with that reason.
   */
  insertRun(run: NewRun, now: number, audit?: RunAudit): Promise<InsertRunResult>;
  /**
   * Many runs in one transaction, each as insertRun would (the enrollment rules per run, in input
   * order, so a later run sees an earlier one's active slot and dedupe key); results in input order.
   * With `audit`, each created run's entry (RunAudit) commits in that transaction.
   */
  insertRuns(runs: readonly NewRun[], now: number, audit?: RunAudit): Promise<InsertRunResult[]>;

  /**
   * Store events in one transaction (group commit for intake): each unless (workspace, source,
   * key) exists, in which case the first event is returned as a duplicate.
   */
  insertEvents(es: readonly NewEvent[]): Promise<{ event: StoredEvent; duplicate: boolean }[]>;
  getEvent(workspaceId: string, id: string): Promise<StoredEvent | null>;
  /**
   * A dispatch round's read, no transaction held afterwards. First, events whose dispatch failed
   * `maxAttempts` times (lease lapsed) are marked undeliverable. Then up to `limit` undispatched,
   * deliverable, unleased events are leased until now + leaseMs with their attempt counted
   * (round-robin over shards, SKIP LOCKED) — or, when an event was leased before and not
   * dispatched, that one event alone (so one event that kills its dispatcher cannot take a batch
   * with it). Then the active automations of their workspaces are read (after the events, so
   * every change committed before an event was acknowledged is seen).
   */
  leaseEvents(now: number, leaseMs: number, limit: number, maxAttempts: number): Promise<DispatchBatch>;
  /**
   * In one short transaction: lock the planned events still undispatched (SKIP LOCKED: one a
   * concurrent round holds or dispatched is left out), re-read the active automations of their
   * workspaces; an event whose workspace's activeSignature differs from the plan's is `stale`
   * (released, its attempt not counted; plan it again). For the rest: insert their planned runs
   * (as insertRun would) and mark them dispatched. `inside` runs before the commit.
   */
  commitDispatch(
    now: number,
    plan: DispatchPlan,
    inside?: () => void,
  ): Promise<{
    events: StoredEvent[];
    runs: Run[];
    stale: string[];
    flow_due?: number | null;
    /** Parked runs the named events made due (their waits matched). */
    woken?: number;
  }>;
  /**
   * Planning these events raised `error`: release their lease; each whose attempts reached
   * `maxAttempts` is marked undeliverable with the error as its reason. Returns those marked.
   */
  failDispatch(ids: readonly string[], error: string, now: number, maxAttempts: number): Promise<StoredEvent[]>;
  /** A round still planning these events extends their lease to `until` (those still undispatched and leased); the attempt is not counted again. */
  renewDispatch(ids: readonly string[], until: number): Promise<void>;
  /** An undeliverable (not dropped) event back to dispatch, attempts reset, with its audit entry; null when it is not undeliverable. */
  replayEvent(workspaceId: string, id: string, now: number, audit: AuditEntry): Promise<StoredEvent | null>;
  /** Drop an undeliverable event for good, with its audit entry; null when it is not undeliverable (or already dropped). */
  dropEvent(workspaceId: string, id: string, now: number, audit: AuditEntry): Promise<StoredEvent | null>;
  /** Undeliverable events not dropped, newest first, and how many there are. */
  undeliverableEvents(workspaceId: string, limit: number): Promise<{ total: number; events: StoredEvent[] }>;
  /** Runs ended by quarantine (failed, engine.quarantined), newest first, and how many there are. */
  quarantinedRuns(workspaceId: string, limit: number): Promise<{ total: number; runs: Run[] }>;

  /**
   * Of these (workspace, subject, automation) keys, the ones with a pause in force at `now`, each
   * with when it ends (null: until resumed). Keys are made by pauseKey().
   */
  activePauses(keys: readonly PauseKey[], now: number): Promise<Map<string, number | null>>;
  listActiveAutomations(): Promise<Automation[]>;
  /** Pauses in force at `now`, at most `limit` of them (the runner caches these). */
  listActivePauses(now: number, limit: number): Promise<PauseRow[]>;
  /** Put the pause and its audit entry in one transaction. */
  putPause(p: PauseRow, audit?: AuditEntry): Promise<void>;
  /**
   * Delete the pause and wake the runs parked on it; returns whether a row was deleted. The audit
   * entry is written, in the same transaction, only when one was.
   */
  deletePause(workspaceId: string, subjectId: string, automationId: string, now: number, audit?: AuditEntry): Promise<boolean>;
  listPauses(workspaceId: string, subjectId: string): Promise<PauseRow[]>;

  /** Replace an automation's schedule rows; what each keeps of its old row is resyncedSchedule's (model/triggers). */
  syncSchedules(automationId: string, rows: readonly ScheduleRow[]): Promise<void>;
  /** Up to `limit` schedules due at `now`, oldest first (a plain read: fireSchedules re-checks each). */
  dueSchedules(now: number, limit: number): Promise<ScheduleRow[]>;
  /**
   * In one short transaction, per firing: advance the row to `next_fire_at` (last_fired_at = now)
   * only if it still holds `expected_next_fire_at` and no other transaction has it locked, and
   * store its events only then; `inside` runs before the commit. Returns the events stored.
   */
  fireSchedules(now: number, firings: readonly ScheduleFiring[], inside?: () => void): Promise<number>;
  listSchedules(automationId: string): Promise<ScheduleRow[]>;

  /** Create hooks for these trigger indexes if missing; return all hooks of the automation. */
  ensureHooks(workspaceId: string, automationId: string, triggerIndexes: readonly number[], make: (index: number) => HookRow): Promise<HookRow[]>;
  getHook(id: string): Promise<HookRow | null>;
  listHooks(automationId: string): Promise<HookRow[]>;
  /**
   * Set the hook's secret columns if its secret is still `expectedSecret` (as stored), with the
   * audit entry, in one transaction; false (nothing written) when it changed meanwhile or is gone.
   */
  updateHookSecret(id: string, expectedSecret: string, next: HookSecretUpdate, audit?: AuditEntry): Promise<boolean>;
  /** Hooks whose secret does not start with `sealedPrefix`: written before secrets were sealed. */
  listUnsealedHooks(sealedPrefix: string): Promise<HookRow[]>;

  /** Derived, never stored: claimable runs due more than `graceMs` ago, and late schedules, per automation. */
  overdue(workspaceId: string, now: number, graceMs: number): Promise<OverdueCount[]>;
  /**
   * Claim up to `limit` runs whose due_at <= now, set their lease (due_at = now + leaseMs,
   * lease_owner = owner), count the claim in unsettled_claims (every commit resets it) and
   * return them. Which runs: the order of `claimOrder` below.
   */
  claimRuns(owner: string, now: number, leaseMs: number, limit: number): Promise<Run[]>;
  /**
   * Runs due at `now` (what a claim could take), oldest due first: a plain read, nothing locked
   * or written. A worker may drive one that no worker held and no operator is stopping in memory,
   * and claim it with its first commit (Checkpoint.claim).
   */
  dueRuns(now: number, limit: number): Promise<Run[]>;
  /** Apply checkpoints in one transaction; returns, per checkpoint, whether it applied (false: stale) and any control request. */
  commit(owner: string, checkpoints: readonly Checkpoint[]): Promise<CommitResult[]>;
  /** Extend the leases this owner still holds; returns the ids it still holds. */
  renewLeases(owner: string, runIds: readonly string[], until: number): Promise<string[]>;
  /** Earliest due_at among claimable runs (to sleep until), or null. */
  nextDueAt(): Promise<number | null>;

  getRun(workspaceId: string, id: string): Promise<Run | null>;
  listRuns(filter: RunFilter): Promise<Page<Run>>;
  /** The same rows and order as listRuns, as summaries (what list views serve). */
  listRunSummaries(filter: RunFilter): Promise<Page<RunSummary>>;
  listSteps(runId: string): Promise<StepRun[]>;

  // ---------- waits ----------

  /** Named events (type "event") matching a wait, oldest first; with `run_id`, none that run already took. */
  findEvents(workspaceId: string, wait: WaitSpec, limit: number): Promise<StoredEvent[]>;

  // ---------- fan-out items ----------

  listItems(runId: string, nodeKey?: string, visit?: number): Promise<RunItem[]>;
  /** One page of a run's items in listItems order, after the opaque cursor of the previous page. */
  listItemsPage(runId: string, cursor: string | undefined, limit: number): Promise<Page<RunItem>>;
  getItem(workspaceId: string, itemId: string): Promise<RunItem | null>;
  /**
   * An operator's retry of an item, step one: failed → running (attempts + 1) with a lease until
   * `leaseUntil` (kept in not_before), only while the run is terminal (no worker touches its
   * items). A running item whose lease has run out or that has none (the retrying process died)
   * is taken over the same way. Null when the item is neither (any more).
   */
  beginItemRetry(workspaceId: string, itemId: string, now: number, leaseUntil: number): Promise<RunItem | null>;
  /**
   * Step two: write the item's outcome, recount the run's failed items, append the audit entry —
   * only if the item is still running at this attempt (not taken over since); returns whether it was.
   */
  finishItemRetry(item: RunItem, audit: AuditEntry): Promise<boolean>;

  // ---------- approvals ----------

  getApproval(workspaceId: string, id: string): Promise<Approval | null>;
  listApprovals(workspaceId: string, status: ApprovalStatus | undefined, limit: number): Promise<Approval[]>;
  /** Every approval of one run, oldest first. */
  listRunApprovals(runId: string): Promise<Approval[]>;
  /**
   * Decide a pending approval (compare-and-swap: only one decision ever applies), wake the run
   * parked on it, append the audit entry. `applied` false: it was no longer pending.
   */
  decideApproval(
    workspaceId: string,
    id: string,
    status: "approved" | "rejected" | "timed_out",
    actor: string,
    comment: string | null,
    now: number,
  ): Promise<{ applied: boolean; approval: Approval | null }>;

  // ---------- run control and audit ----------

  /**
   * Stop or cancel a run. A run no worker holds (pending, waiting, retrying, interrupted) ends
   * here, at once: its unstarted items are skipped and its pending approvals cancelled. A run a
   * worker holds gets the request, which the worker applies at its next checkpoint. Null when
   * the run does not exist; a terminal run is returned unchanged.
   */
  controlRun(workspaceId: string, runId: string, control: RunControl, audit: AuditEntry, now: number): Promise<Run | null>;
  /** Apply a redrive (compare-and-swap on rev and status); see Redrive. */
  redriveRun(r: Redrive): Promise<RedriveResult>;
  appendAudit(entries: readonly AuditEntry[]): Promise<void>;
  listAudit(workspaceId: string, limit: number, beforeId?: number): Promise<AuditRow[]>;

  // ---------- identities and secrets (each mutation writes its audit entry in its transaction) ----------

  /** A workspace with its first admin user and token. */
  createWorkspace(w: Workspace, admin: User, token: TokenRow & { hash: string }, audit: AuditEntry): Promise<void>;
  getWorkspace(id: string): Promise<Workspace | null>;
  insertUser(u: User, audit: AuditEntry): Promise<void>;
  getUser(workspaceId: string, id: string): Promise<User | null>;
  listUsers(workspaceId: string): Promise<User[]>;
  /**
   * Change a user's role and/or disabled time. Refused ("last_admin", nothing written) when it
   * would leave the workspace without an enabled admin; null when the user does not exist.
   */
  updateUser(workspaceId: string, id: string, patch: { role?: Role; disabled_at?: number | null }, audit: AuditEntry): Promise<User | "last_admin" | null>;
  insertToken(t: TokenRow & { hash: string }, audit: AuditEntry): Promise<void>;
  /** The live (not revoked) token with this SHA-256, and its user (who may be disabled). */
  tokenByHash(hash: string): Promise<{ token: TokenRow; user: User } | null>;
  listTokens(workspaceId: string): Promise<TokenRow[]>;
  revokeToken(workspaceId: string, id: string, now: number, audit: AuditEntry): Promise<boolean>;
  /** Insert or replace; returns whether it was new. */
  putSecret(workspaceId: string, name: string, ciphertext: string, now: number, audit: AuditEntry): Promise<boolean>;
  listSecrets(workspaceId: string): Promise<SecretRow[]>;
  deleteSecret(workspaceId: string, name: string, audit: AuditEntry): Promise<boolean>;

  // ---------- events and liveness ----------

  /** Events newest first (received_at, id), with the filters; cursor pagination. */
  listEvents(filter: EventFilter): Promise<Page<StoredEvent>>;
  /** The runs (pending, running, ended or `exited` skips) the dispatcher created for this event. */
  eventRuns(workspaceId: string, eventId: string): Promise<Run[]>;
  /** Record that this process is alive at `now` (insert or update its row; forget long-gone ones). */
  heartbeat(p: ProcessBeat, now: number): Promise<void>;
  /** Remove this process's row: it stopped cleanly, so nobody counts it alive or sends it wake-ups. */
  forgetProcess(id: string): Promise<void>;
  /** Processes seen within LIVENESS_MS of `now`, newest first. */
  liveProcesses(now: number): Promise<LiveProcess[]>;

  // ---------- reports ----------

  /** Runs (by status) and items (by outcome) per automation, for runs started in [from, to). */
  reportOutcomes(workspaceId: string, from: number, to: number): Promise<OutcomeRow[]>;
  opsCounts(workspaceId: string, now: number, windowMs: number): Promise<OpsCounts>;
  /** Across workspaces, for metrics: runs due now, of which due longer ago than `graceMs`, and undispatched events. */
  queueDepth(now: number, graceMs: number): Promise<{ due_runs: number; overdue_runs: number; undispatched_events: number }>;

  // ---------- flow control: debounce and batch windows (rules in engine/flow-intake.ts) ----------

  /**
   * Close up to `limit` windows due at `now` (deadline passed, full batch, or replaced), each
   * starting its run (as insertRun would), in one transaction; a window another process is closing
   * is skipped. Returns the runs created.
   */
  closeFlowWindows(now: number, limit: number): Promise<Run[]>;
  /** The windows (and their runs) this event joined, per automation; a key that failed to render is a row with its error. */
  eventFlow(workspaceId: string, eventId: string): Promise<FlowMembership[]>;
  /** Windows not yet closed (waiting_for debounce or batch), earliest deadline first; optionally of one automation, or the one whose run is `run_id`. */
  openFlowWindows(workspaceId: string, filter: { automation_id?: string; run_id?: string }, limit: number): Promise<FlowWindow[]>;

  // ---------- workspace settings ----------

  /** The workspace's stored settings object, or null when none was ever written (the defaults apply). */
  getWorkspaceSettings(workspaceId: string): Promise<Record<string, unknown> | null>;
  /** Replace the workspace's settings object, with its audit entry, in one transaction. */
  putWorkspaceSettings(workspaceId: string, settings: Record<string, unknown>, now: number, audit: AuditEntry): Promise<void>;

  // ---------- flow control (see flow-gates.ts and model/flow.ts) ----------

  /** Take every slot and the rate turn of one gate atomically, or record the run as a waiter and say why not. */
  acquireFlow(req: FlowAcquire, now: number): Promise<FlowDecision>;
  /** Wake (due now) the oldest parked waiters of each key, one per free slot. */
  wakeFlowWaiters(workspaceId: string, gates: readonly Pick<FlowSlotGate, "scope" | "key" | "limit">[], now: number): Promise<number>;
  /** Wake the waiters of every key a run holds a slot of (after a commit made elsewhere ended it: a stop, a cancel). */
  wakeFlowOfRun(workspaceId: string, runId: string, now: number): Promise<number>;
  /**
   * The safety net for a lost wake (a releaser that died between its commit and its wake, a
   * step slot that lapsed with its lease): wake the head waiters of keys with free slots, at most
   * `maxKeys` keys a call, and drop waiter rows whose run ended.
   */
  sweepFlowWaiters(now: number, maxKeys: number): Promise<number>;
  /** Pause calls to a host until `until` (a later pause already recorded stays). */
  pauseHost(workspaceId: string, host: string, until: number, status: number, now: number): Promise<void>;
  /** When calls to a host may go again, or null when it is not paused. */
  hostPausedUntil(workspaceId: string, host: string, now: number): Promise<HostPause | null>;
  putSharedLimit(l: SharedLimit, audit: AuditEntry, create: boolean): Promise<boolean>;
  getSharedLimits(workspaceId: string, names?: readonly string[]): Promise<SharedLimit[]>;
  deleteSharedLimit(workspaceId: string, name: string, audit: AuditEntry): Promise<boolean>;
  /** Held and waiting counts per scope and key, busiest first (one workspace, or all with null). */
  flowStats(workspaceId: string | null, now: number, limit: number): Promise<FlowKeyStats[]>;
  /** What holds a waiting run: its waiter rows with the holders of each key, and the rate turn it reserved. */
  flowWaitOf(workspaceId: string, runId: string, now: number): Promise<FlowWaitInfo>;
}

export interface HostPause {
  host: string;
  until: number;
  status: number;
  since: number;
}

export interface SharedLimit {
  workspace_id: string;
  name: string;
  key: string;
  limit: number;
  created_at: number;
  updated_at: number;
}

export interface FlowKeyStats {
  workspace_id: string;
  scope: string;
  key: string;
  held: number;
  waiting: number;
}

export interface FlowWaitInfo {
  slots: FlowWait[];
  /** The latest rate-limit turn the run holds (a queued run's is in the future). */
  turn: { scope: string; key: string; at: number } | null;
}

export interface FlowWait {
  scope: string;
  key: string;
  /** The key's limit when the run last met it. */
  limit: number;
  since: number;
  /** Runs holding a slot of the key, oldest first (at most 10). */
  holders: { run_id: string; since: number }[];
  held: number;
}

/** Debounce and batch (model/flow-windows.ts), over the engine's runs. */
export type FlowEntry = WindowEntry<NewRun>;
export type FlowWindow = Window<NewRun>;
export type FlowMembership = WindowMembership<NewRun>;

/**
 * A due run's place in its automation's queue: due_at − priority × AGING_STEP_MS (priority is
 * stored clamped). With every priority 0 it is due_at. PostgreSQL computes the same key as
 * weft_claim_at(due_at, priority) (migration 014), the embedded store as due_at − priority * 1000.
 */
export const claimKey = (r: { due_at: number; priority?: number }): number => r.due_at - (r.priority ?? 0) * AGING_STEP_MS;

/**
 * The claim order, round-robin by automation: each automation's due runs are ranked by
 * (claimKey, id); the claim takes runs by (rank, claimKey, id). So one automation with 20,000 due
 * runs gets one slot per round like every other, within a round the lowest keys go first, and
 * priority reorders runs only inside their automation's queue (it never gives an automation more
 * slots per round). Both stores claim exactly this (the embedded one by calling it, PostgreSQL in
 * its claim query). Which runs are "due" (due_at <= now) is unchanged by priority.
 *
 * How the stores find the due runs without visiting every automation: see `due_marks` in
 * migration 014 (a lower bound of each automation's earliest due_at, kept by triggers and
 * corrected by the claimer), so a claim's cost follows the automations with due work.
 */
export function claimOrder<T extends { id: string; automation_id: string; due_at: number; priority?: number }>(due: readonly T[], limit: number): T[] {
  const byKey = (a: T, b: T) => claimKey(a) - claimKey(b) || (a.id < b.id ? -1 : a.id > b.id ? 1 : 0);
  const rank = new Map<string, number>();
  const seen = new Map<string, number>();
  for (const r of [...due].sort(byKey)) {
    const n = seen.get(r.automation_id) ?? 0;
    seen.set(r.automation_id, n + 1);
    rank.set(r.id, n);
  }
  return [...due].sort((a, b) => rank.get(a.id)! - rank.get(b.id)! || byKey(a, b)).slice(0, limit);
}

/** The store re-derives its due marks from the due runs this often (engine clock): the safety net. */
export const DUE_MARK_SWEEP_MS = 60_000;
