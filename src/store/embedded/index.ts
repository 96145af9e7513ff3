// Embedded store: SQLite through better-sqlite3, WAL with synchronous=FULL (one fsync per commit,
// so a committed write survives kill -9). Needs no server; one process at a time drives it.
// Measured choice: see docs/design.md § Stores.

import Database from "better-sqlite3";
import { readdirSync, readFileSync } from "node:fs";
import { dirname } from "node:path";
import { fileURLToPath } from "node:url";
import { WeftError } from "../../model/errors.js";
import { isTerminal, type RunStatus } from "../../model/run-status.js";
import { resyncedSchedule } from "../../model/triggers.js";
import { mappers, sqliteCodec, type Row } from "../rows.js";
import { sqlList } from "../sql.js";
import { AGING_STEP_MS, PRIORITY_MIN } from "../../model/priority.js";
import {
  enrollmentSkip,
  isEnrollmentChecked,
  NOT_ENROLLED,
  replacedAudit,
  replacesActive,
  skippedEnrollment,
  type EnrollmentSkip,
} from "../../model/enrollment.js";
import type {
  Automation,
  AutomationStatus,
  AutomationVersion,
  Checkpoint,
  DispatchBatch,
  DispatchPlan,
  HookRow,
  HookSecretUpdate,
  InsertRunResult,
  NewEvent,
  NewRun,
  OverdueCount,
  Page,
  PauseKey,
  PauseRow,
  Run,
  RunFilter,
  RunSummary,
  ScheduleFiring,
  ScheduleRow,
  StepRun,
  Store,
  StoredEvent,
} from "../../engine/store.js";
import { claimOrder, runAuditEntry, DUE_MARK_SWEEP_MS, laterEnd, pauseKey, splitStale, StaleAutomationError, waitKey } from "../../engine/store.js";
import { freshEvent } from "../fresh-event.js";
import type { ApprovalStatus, AuditEntry, NewStepRun, RunAudit, CommitResult, RunControl, RunItem, WaitSpec } from "../../engine/store.js";
import { EmbeddedNodes, toItem } from "./nodes.js";
import { EmbeddedIdentity } from "./identity.js";
import { securePrivateFiles } from "./files.js";
import type { Role, TokenRow, User, Workspace } from "../../engine/store.js";
import { decodeCursor, decodeItemCursor, encodeCursor, encodeItemCursor } from "../cursor.js";
import type { EventFilter, ProcessBeat, Redrive, RedriveResult } from "../../engine/store.js";
import { forgetProcess, heartbeat, liveProcesses } from "./heartbeats.js";
import { redriveRun } from "./redrive.js";
import { EmbeddedFlow } from "./flow-windows.js";
import * as WS from "./settings.js";
import * as F from "./flow.js";
import type { FlowAcquire, FlowSlotGate } from "../../model/flow.js";
import type { SharedLimit } from "../../engine/store.js";

const MIGRATIONS_DIR = fileURLToPath(new URL("./migrations/", import.meta.url));

export interface EmbeddedStoreOptions {
  /** Path of the database file, or ":memory:" (not durable; for throwaway use only). */
  file: string;
}

const j = (v: unknown): string | null => (v === undefined || v === null ? null : JSON.stringify(v));
const { automation: toAutomation, version: toVersion, run: toRun, runSummary: toRunSummary, event: toEvent, step: toStep } = mappers(sqliteCodec);

/** The columns of a run summary: never context, event, steps or cursor. */
const SUMMARY_COLUMNS = `id, workspace_id, automation_id, (SELECT key FROM automations a WHERE a.id = runs.automation_id) AS automation_key, version,
  event_id, trigger_type, subject_id, status, exit_reason, current_node_key, waiting_for, waiting_until, run_as, trace_id,
  items_total, items_failed, interruptions, started_at, completed_at, updated_at`;
/**
 * Due runs (`where`) in claim-key order (due_at − priority × 1000, then id), in two ranges
 * (migration 021), each read off the front of its index: priority 0 and above up to now (such a
 * run's key is at most its due time, so runs parked on later timers are never read), below 0 off
 * its partial index up to now + |PRIORITY_MIN| steps, the largest key a due run can have.
 */
function dueInClaimOrder(cols: string, where: string, index: string, indexBelow: string): string {
  const part = (idx: string, range: string) => `SELECT * FROM (SELECT ${cols}, due_at - priority * 1000 AS k FROM runs INDEXED BY ${idx}
      WHERE ${where} AND due_at IS NOT NULL AND ${range} AND due_at <= @now ORDER BY due_at - priority * 1000, id LIMIT @limit)`;
  return `SELECT ${cols} FROM (
    ${part(index, "due_at - priority * 1000 <= @now AND priority >= 0")}
    UNION ALL
    ${part(indexBelow, `priority < 0 AND due_at - priority * 1000 <= @now + ${-PRIORITY_MIN * AGING_STEP_MS}`)})
  ORDER BY k, id LIMIT @limit`;
}

export class EmbeddedStore implements Store {
  readonly kind = "embedded" as const;
  readonly db: Database.Database;
  private prepared: ReturnType<EmbeddedStore["prepare"]> | undefined;
  /** Statements are prepared on first use (the tables exist once migrate() has run, here or earlier). */
  private get s(): ReturnType<EmbeddedStore["prepare"]> {
    return (this.prepared ??= this.prepare());
  }

  private readonly nodes: EmbeddedNodes;
  private readonly ids: EmbeddedIdentity;

  constructor(opts: EmbeddedStoreOptions) {
    if (opts.file !== ":memory:") securePrivateFiles(dirname(opts.file), [opts.file, `${opts.file}-wal`, `${opts.file}-shm`]);
    this.db = new Database(opts.file);
    this.db.pragma("journal_mode = WAL");
    this.db.pragma("synchronous = FULL");
    this.db.pragma("foreign_keys = ON");
    this.db.pragma("busy_timeout = 5000");
    this.nodes = new EmbeddedNodes(this.db);
    this.ids = new EmbeddedIdentity(this.db);
  }

  private prepare() {
    const d = this.db;
    return {
      insertRun: d.prepare(`INSERT INTO runs (id, workspace_id, automation_id, version, event_id, dedupe_key, trigger_type, subject_id,
          active_subject, status, exit_reason, current_node_key, waiting_for, waiting_until, context, steps, cursor, run_as, trace_id,
          due_at, lease_owner, unsettled_claims, started_at, completed_at, updated_at, event, priority, priority_error)
        VALUES (@id, @workspace_id, @automation_id, @version, @event_id, @dedupe_key, @trigger_type, @subject_id, @active_subject,
          @status, @exit_reason, @current_node_key, @waiting_for, @waiting_until, @context, @steps, @cursor, @run_as, @trace_id,
          @due_at, @lease_owner, CASE WHEN @lease_owner IS NULL THEN 0 ELSE 1 END, @started_at, @completed_at, @started_at, @event, @priority, @priority_error)
        ON CONFLICT (automation_id, dedupe_key) DO NOTHING RETURNING *`),
      automationState: d.prepare("SELECT status, current_version FROM automations WHERE id = ?"),
      runByDedupe: d.prepare("SELECT * FROM runs WHERE automation_id = ? AND dedupe_key = ?"),
      pausedNow: d
        .prepare(`SELECT 1 FROM subject_controls WHERE workspace_id = ? AND subject_id = ? AND automation_id IN (?, '')
          AND (paused_until IS NULL OR paused_until > ?) LIMIT 1`)
        .pluck(),
      finishedSince: d
        .prepare(`SELECT 1 FROM runs WHERE automation_id = ? AND subject_id = ? AND completed_at >= ?
          AND (exit_reason IS NULL OR exit_reason NOT IN ${sqlList(NOT_ENROLLED)}) LIMIT 1`)
        .pluck(),
      insertEvent:
        d.prepare(`INSERT INTO events (id, workspace_id, source, idempotency_key, payload_hash, type, name, subject_id, body, shard, received_at, actor, token_id, actor_role)
          VALUES (@id, @workspace_id, @source, @idempotency_key, @payload_hash, @type, @name, @subject_id, @body, @shard, @received_at, @actor, @token_id, @actor_role)
          ON CONFLICT (workspace_id, source, idempotency_key) DO NOTHING RETURNING id`),
      eventByKey: d.prepare("SELECT * FROM events WHERE workspace_id = ? AND source = ? AND idempotency_key = ?"),
      // The next shard with undispatched events (a loose index scan: one probe per shard, not a pass over every event).
      nextUndispatchedShard: d.prepare("SELECT shard FROM events WHERE dispatched_at IS NULL AND shard > ? ORDER BY shard LIMIT 1").pluck(),
      undispatchedOfShard: d.prepare(`SELECT * FROM events WHERE shard = ? AND dispatched_at IS NULL AND undeliverable_at IS NULL
          AND (dispatch_until IS NULL OR dispatch_until <= ?) ORDER BY received_at, id LIMIT ?`),
      nextEventLapse: d.prepare(`SELECT min(dispatch_until) AS at FROM events WHERE dispatched_at IS NULL AND dispatch_attempts > 0
          AND undeliverable_at IS NULL AND dispatch_until > ?`),
      retryEvent: d.prepare(`SELECT * FROM events WHERE dispatched_at IS NULL AND dispatch_attempts > 0 AND undeliverable_at IS NULL
          AND (dispatch_until IS NULL OR dispatch_until <= ?) ORDER BY received_at, id LIMIT 1`),
      leaseEvent: d.prepare("UPDATE events SET dispatch_attempts = dispatch_attempts + 1, dispatch_until = ? WHERE id = ? RETURNING *"),
      quarantineEvents: d.prepare(`UPDATE events SET undeliverable_at = ?,
          undeliverable_reason = 'its dispatch did not complete ' || dispatch_attempts || ' times (' ||
            coalesce('last error: ' || dispatch_error, 'the dispatching process died or stalled while planning it') || ')'
        WHERE dispatched_at IS NULL AND dispatch_attempts > 0 AND dispatch_attempts >= ? AND undeliverable_at IS NULL
          AND (dispatch_until IS NULL OR dispatch_until <= ?) RETURNING *`),
      plannedEvent: d.prepare("SELECT * FROM events WHERE id = ? AND dispatched_at IS NULL AND undeliverable_at IS NULL"),
      releaseStale: d.prepare("UPDATE events SET dispatch_until = NULL, dispatch_attempts = max(dispatch_attempts - 1, 0) WHERE id = ?"),
      renewDispatch: d.prepare(
        "UPDATE events SET dispatch_until = @until WHERE id = @id AND dispatched_at IS NULL AND dispatch_until IS NOT NULL AND dispatch_until < @until",
      ),
      failDispatch: d.prepare(`UPDATE events SET dispatch_until = NULL, dispatch_error = @error,
          undeliverable_at = CASE WHEN dispatch_attempts >= @max THEN @now END,
          undeliverable_reason = CASE WHEN dispatch_attempts >= @max THEN 'its dispatch failed ' || dispatch_attempts || ' times (last error: ' || @error || ')' END
        WHERE id = @id AND dispatched_at IS NULL AND undeliverable_at IS NULL RETURNING *`),
      markDispatched: d.prepare("UPDATE events SET dispatched_at = ?, dispatch_until = NULL, runs_created = ? WHERE id = ?"),
      runByActiveSubject: d.prepare("SELECT * FROM runs WHERE automation_id = ? AND active_subject = ?"),
      // INDEXED BY: the range of marks due now, never a walk over every automation's mark (which
      // SQLite would otherwise pick for DISTINCT).
      markedAutomations: d.prepare("SELECT DISTINCT automation_id FROM due_marks INDEXED BY due_marks_due WHERE due_at <= ?").pluck(),
      // The claim key and its bound as in PostgreSQL's weft_claim (migration 014): runs_claim's range.
      dueOfAutomation: d.prepare(dueInClaimOrder("id, due_at, priority", "automation_id = @aid", "runs_claim", "runs_claim_below")),
      hasDue: d.prepare("SELECT 1 FROM runs WHERE automation_id = ? AND due_at <= ? LIMIT 1").pluck(),
      dropMarks: d.prepare("DELETE FROM due_marks WHERE automation_id = ?"),
      markEarliest: d.prepare(`INSERT INTO due_marks (automation_id, due_at)
          SELECT @aid, m FROM (SELECT min(due_at) AS m FROM runs WHERE automation_id = @aid AND due_at IS NOT NULL) WHERE m IS NOT NULL`),
      sweepMarks: d.prepare(`INSERT INTO due_marks (automation_id, due_at)
          SELECT g.automation_id, g.m FROM (SELECT automation_id, min(due_at) AS m FROM runs INDEXED BY runs_due WHERE due_at <= ? GROUP BY automation_id) g
          WHERE NOT EXISTS (SELECT 1 FROM due_marks d WHERE d.automation_id = g.automation_id AND d.due_at <= g.m)`),
      claimOne: d.prepare(`UPDATE runs SET due_at = ?, lease_owner = ?, interruptions = interruptions + (status IN ('running', 'interrupted')),
          unsettled_claims = unsettled_claims + 1, status = 'running', rev = rev + 1 WHERE id = ? AND due_at <= ? RETURNING *`),
      commitOne: d.prepare(`UPDATE runs SET status = @status, exit_reason = @exit_reason, current_node_key = @current_node_key,
          waiting_for = @waiting_for, waiting_until = @waiting_until,
          context = CASE WHEN @state_unchanged THEN context ELSE @context END,
          steps = CASE WHEN @state_unchanged THEN steps ELSE @steps END,
          cursor = CASE WHEN @state_unchanged THEN cursor ELSE @cursor END,
          items_total = @items_total, items_failed = @items_failed, interruptions = @interruptions,
          due_at = CASE WHEN @keep_lease THEN coalesce(@lease_until, due_at) WHEN control IS NOT NULL AND NOT @terminal THEN @updated_at
            WHEN wake AND @status = 'waiting' THEN @updated_at ELSE @due_at END,
          wake = CASE WHEN @keep_lease THEN wake ELSE 0 END,
          lease_owner = CASE WHEN @keep_lease THEN @owner ELSE NULL END,
          active_subject = CASE WHEN @terminal THEN NULL ELSE active_subject END,
          control = CASE WHEN @terminal THEN NULL ELSE control END, wait_key = @wait_key,
          completed_at = @completed_at, updated_at = @updated_at, unsettled_claims = 0, rev = rev + 1
        WHERE id = @run_id AND rev = @expected_rev AND CASE WHEN @claim_at IS NULL THEN lease_owner = @owner
          ELSE lease_owner IS NULL AND control IS NULL AND due_at <= @claim_at END RETURNING control`),
      // Every automation's due runs in claim-key order, so no backlog is sorted.
      dueRuns: d.prepare(dueInClaimOrder("*", "1", "runs_claim_key", "runs_claim_key_below")),
      insertStep: d.prepare(`INSERT INTO step_runs (run_id, node_key, node_kind, visit, attempt, entered_via_port_key, exited_via_port_key,
          outcome, duration_ms, idempotency_key, input, output, error, violations, logs, started_at, finished_at)
        VALUES (@run_id, @node_key, @node_kind, @visit, @attempt, @entered_via_port_key, @exited_via_port_key, @outcome,
          @duration_ms, @idempotency_key, @input, @output, @error, @violations, @logs, @started_at, @finished_at)`),
      renew: d.prepare("UPDATE runs SET due_at = ? WHERE id = ? AND lease_owner = ? AND status = 'running'"),
      nextDue: d.prepare("SELECT min(due_at) FROM runs WHERE due_at IS NOT NULL").pluck(),
      getVersion: d.prepare("SELECT * FROM automation_versions WHERE automation_id = ? AND version = ?"),
      getRun: d.prepare("SELECT * FROM runs WHERE id = ? AND workspace_id = ?"),
      steps: d.prepare("SELECT * FROM step_runs WHERE run_id = ? ORDER BY id"),
    };
  }

  async migrate(): Promise<void> {
    this.db.exec("CREATE TABLE IF NOT EXISTS weft_migrations (id INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at INTEGER NOT NULL)");
    const files = readdirSync(MIGRATIONS_DIR)
      .filter((f) => /^\d+_.+\.sql$/.test(f))
      .sort();
    const apply = this.db.transaction(() => {
      const done = new Set(this.db.prepare("SELECT id FROM weft_migrations").pluck().all() as number[]);
      for (const f of files) {
        const id = Number(f.split("_")[0]);
        if (done.has(id)) continue;
        this.db.prepare("INSERT INTO weft_migrations (id, name, applied_at) VALUES (?, ?, ?)").run(id, f, Date.now());
        this.db.exec(readFileSync(`${MIGRATIONS_DIR}/${f}`, "utf8"));
      }
    });
    apply.immediate();
    this.prepared = undefined;
  }

  async close(): Promise<void> {
    this.db.close();
  }

  async ensureWorkspace(id: string, name: string, now: number): Promise<void> {
    this.db.prepare("INSERT INTO workspaces (id, name, created_at) VALUES (?, ?, ?) ON CONFLICT (id) DO NOTHING").run(id, name, now);
  }

  async insertAutomation(a: Automation, v: AutomationVersion, audit?: AuditEntry): Promise<void> {
    const tx = this.db.transaction(() => {
      this.db
        .prepare(`INSERT INTO automations (id, workspace_id, key, name, status, current_version, created_at, updated_at)
        VALUES (?, ?, ?, ?, ?, ?, ?, ?)`)
        .run(a.id, a.workspace_id, a.key, a.name, a.status, a.current_version, a.created_at, a.updated_at);
      this.db
        .prepare("INSERT INTO automation_versions (automation_id, version, definition, created_at) VALUES (?, ?, ?, ?)")
        .run(v.automation_id, v.version, JSON.stringify(v.definition), v.created_at);
      if (audit) this.nodes.audit([audit]);
    });
    try {
      tx.immediate();
    } catch (err) {
      if ((err as { code?: string }).code === "SQLITE_CONSTRAINT_UNIQUE") {
        throw new WeftError("automation.key_taken", `an automation with key "${a.key}" already exists`, { field: "key" });
      }
      throw err;
    }
  }

  async insertVersion(workspaceId: string, v: AutomationVersion, now: number, audit?: AuditEntry): Promise<boolean> {
    const tx = this.db.transaction(() => {
      const upd = this.db
        .prepare(`UPDATE automations SET current_version = ?, name = ?, updated_at = ?
        WHERE id = ? AND workspace_id = ? AND current_version = ?`)
        .run(v.version, v.definition.name, now, v.automation_id, workspaceId, v.version - 1);
      if (upd.changes !== 1) return false;
      this.db
        .prepare("INSERT INTO automation_versions (automation_id, version, definition, created_at) VALUES (?, ?, ?, ?)")
        .run(v.automation_id, v.version, JSON.stringify(v.definition), v.created_at);
      if (audit) this.nodes.audit([audit]);
      return true;
    });
    return tx.immediate();
  }

  async setAutomationStatus(workspaceId: string, id: string, status: AutomationStatus, now: number, audit?: AuditEntry): Promise<boolean> {
    return this.db
      .transaction(() => {
        const changed =
          this.db.prepare("UPDATE automations SET status = ?, updated_at = ? WHERE id = ? AND workspace_id = ?").run(status, now, id, workspaceId).changes ===
          1;
        if (changed && audit) this.nodes.audit([audit]);
        return changed;
      })
      .immediate();
  }

  async getAutomation(workspaceId: string, id: string): Promise<Automation | null> {
    const r = this.db.prepare("SELECT * FROM automations WHERE id = ? AND workspace_id = ?").get(id, workspaceId);
    return r ? toAutomation(r) : null;
  }

  async listAutomations(workspaceId: string): Promise<Automation[]> {
    return this.db.prepare("SELECT * FROM automations WHERE workspace_id = ? ORDER BY created_at, id").all(workspaceId).map(toAutomation);
  }

  async getVersion(automationId: string, version: number): Promise<AutomationVersion | null> {
    const r = this.s.getVersion.get(automationId, version) as Row | undefined;
    return r ? toVersion(r) : null;
  }

  async insertRun(run: NewRun, now: number, audit?: RunAudit): Promise<InsertRunResult> {
    const [res] = await this.insertRuns([run], now, audit);
    if (!res) throw new Error(`run ${run.id} was not inserted`);
    return res;
  }

  async insertRuns(runs: readonly NewRun[], now: number, audit?: RunAudit): Promise<InsertRunResult[]> {
    return this.db
      .transaction(() => {
        // NewRun.while_current: every such run's automation still active with its version current, or nothing is written.
        const checked = new Set<string>();
        for (const run of runs) {
          if (!run.while_current || checked.has(`${run.automation_id}@${run.version}`)) continue;
          const a = this.s.automationState.get(run.automation_id) as { status: string; current_version: number } | undefined;
          if (a?.status !== "active" || a.current_version !== run.version) throw new StaleAutomationError(run.automation_id);
          checked.add(`${run.automation_id}@${run.version}`);
        }
        const results = runs.map((run) => this.insertRunTx(run, now));
        if (audit) this.nodes.audit(results.flatMap((r, i) => (r.created ? [runAuditEntry(audit, runs[i]!, r.run)] : [])));
        return results;
      })
      .immediate();
  }

  /** The enrollment rules, inside the caller's write transaction (one writer at a time in SQLite). */
  private insertRunTx(run: NewRun, now: number): InsertRunResult {
    const dup = this.s.runByDedupe.get(run.automation_id, run.dedupe_key);
    if (dup) return { created: false, run: toRun(dup) };
    const holds: Record<EnrollmentSkip, () => boolean> = {
      subject_paused: () => !!this.s.pausedNow.get(run.workspace_id, run.subject_id, run.automation_id, now),
      reentry_cooldown: () => (run.cooldown_ms ?? 0) > 0 && !!this.s.finishedSince.get(run.automation_id, run.subject_id, now - (run.cooldown_ms ?? 0)),
      // cancel_previous: the slot's holder is cancelled and its slot freed instead (model/enrollment.ts).
      already_active: () =>
        run.active_subject !== null &&
        (replacesActive(run) ? this.replaceHolder(run, now) : !!this.s.runByActiveSubject.get(run.automation_id, run.active_subject)),
    };
    const skip = isEnrollmentChecked(run) ? enrollmentSkip((check) => holds[check]()) : null;
    const r = skip === null ? run : skippedEnrollment(run, skip, now);
    // Created parked where its first step parked it (NewRun.first_park), when it is created pending and no admission may park it.
    const fp = r.status === "pending" && run.admit === undefined && run.admit_rate === undefined ? run.first_park : undefined;
    const row = {
      ...r,
      event: j(r.event),
      context: j(r.context),
      steps: j(r.steps),
      cursor: j(r.cursor),
      run_as: j(r.run_as),
      completed_at: r.completed_at ?? null,
      // Held at its creation (running) only when it is created pending and no admission may park it (NewRun.lease_owner).
      ...(r.status === "pending" && run.admit === undefined && run.admit_rate === undefined && r.lease_owner && !fp
        ? { status: "running", lease_owner: r.lease_owner }
        : { lease_owner: null }),
      ...(fp ? { status: "waiting", waiting_for: fp.waiting_for, waiting_until: fp.waiting_until, due_at: fp.due_at, cursor: j(fp.cursor) } : {}),
      priority: r.priority ?? 0,
      priority_error: r.priority_error ?? null,
    };
    delete (row as { cooldown_ms?: number }).cooldown_ms;
    delete (row as { replace_active?: boolean }).replace_active;
    delete (row as { admit?: unknown }).admit;
    delete (row as { admit_rate?: unknown }).admit_rate;
    delete (row as { first_park?: unknown }).first_park;
    const made = toRun(this.s.insertRun.get(row));
    if (fp) for (const s of fp.steps) this.insertStepRow(s);
    // Admission at creation (flow.ts): a run with slot gates takes them or waits; one with a queued rate limit takes its turn.
    if (made.status === "pending" && run.admit !== undefined) return { created: true, run: F.admitCreated(this.db, made, run.admit, now) };
    if (made.status === "pending" && run.admit_rate !== undefined) return { created: true, run: F.admitRateCreated(this.db, made, run.admit_rate, now) };
    return { created: true, run: made };
  }

  private insertStepRow(s: NewStepRun): void {
    this.s.insertStep.run({ ...s, input: j(s.input), output: j(s.output), error: j(s.error), violations: j(s.violations), logs: j(s.logs) });
  }

  /** reentry cancel_previous: cancel the run holding this run's slot (the operator's cancel rule) and free the slot; false: the run starts. */
  private replaceHolder(run: NewRun, now: number): false {
    const holder = this.s.runByActiveSubject.get(run.automation_id, run.active_subject) as Row | undefined;
    if (!holder || holder.id === run.id) return false;
    const h = toRun(holder);
    this.nodes.controlRun(h.workspace_id, h.id, "cancel", replacedAudit({ ...h, active_subject: run.active_subject }, run, now), now);
    this.db.prepare("UPDATE runs SET active_subject = NULL WHERE id = ?").run(h.id);
    return false;
  }

  private insertEventTx(e: NewEvent): { event: StoredEvent; duplicate: boolean } {
    const r = this.s.insertEvent.get({ actor: null, token_id: null, actor_role: null, ...e, body: JSON.stringify(e.body) });
    if (r) return { event: freshEvent(e), duplicate: false }; // just written: no row to read back
    return { event: toEvent(this.s.eventByKey.get(e.workspace_id, e.source, e.idempotency_key)), duplicate: true };
  }

  async insertEvents(es: readonly NewEvent[]): Promise<{ event: StoredEvent; duplicate: boolean }[]> {
    return this.db.transaction(() => es.map((e) => this.insertEventTx(e))).immediate();
  }

  async getEvent(workspaceId: string, id: string): Promise<StoredEvent | null> {
    const r = this.db.prepare("SELECT * FROM events WHERE id = ? AND workspace_id = ?").get(id, workspaceId);
    return r ? toEvent(r) : null;
  }

  async leaseEvents(now: number, leaseMs: number, limit: number, maxAttempts: number): Promise<DispatchBatch> {
    const leased = this.db
      .transaction(() => {
        const undeliverable = this.s.quarantineEvents.all(now, maxAttempts, now).map(toEvent);
        const retry = this.s.retryEvent.get(now);
        const picked: StoredEvent[] = retry ? [toEvent(retry)] : this.roundRobin(now, limit);
        const events = picked.map((e) => toEvent(this.s.leaseEvent.get(now + leaseMs, e.id)));
        const next_lapse = events.length === 0 ? ((this.s.nextEventLapse.get(now) as { at: number | null } | undefined)?.at ?? null) : null;
        return { events, undeliverable, next_lapse };
      })
      .immediate();
    // Read after the events: every automation change committed before an event was stored is seen.
    const active = leased.events.length === 0 ? [] : this.activeAutomations();
    return { ...leased, active };
  }

  /** Up to `limit` leasable events, round-robin over shards, oldest first within each. */
  private roundRobin(now: number, limit: number): StoredEvent[] {
    const shards: number[] = [];
    for (
      let sh = this.s.nextUndispatchedShard.get(-1) as number | undefined;
      sh !== undefined;
      sh = this.s.nextUndispatchedShard.get(sh) as number | undefined
    ) {
      shards.push(sh);
    }
    const perShard = shards.map((sh) => this.s.undispatchedOfShard.all(sh, now, limit).map(toEvent));
    const events: StoredEvent[] = [];
    for (let rank = 0; events.length < limit; rank++) {
      let any = false;
      for (const list of perShard) {
        const ev = list[rank];
        if (ev === undefined) continue;
        any = true;
        events.push(ev);
        if (events.length >= limit) break;
      }
      if (!any) break;
    }
    return events.sort((a, b) => a.received_at - b.received_at || (a.id < b.id ? -1 : 1));
  }

  private activeAutomations(): Automation[] {
    return this.db.prepare("SELECT * FROM automations WHERE status = 'active' ORDER BY created_at, id").all().map(toAutomation);
  }

  /** Debounce and batch windows (store/embedded/flow.ts), inserting runs by the enrollment rules. */
  private get flow(): EmbeddedFlow {
    this.flowRows ??= new EmbeddedFlow(this.db, (run, now) => this.insertRunTx(run, now));
    return this.flowRows;
  }
  private flowRows: EmbeddedFlow | undefined;

  async closeFlowWindows(now: number, limit: number): Promise<Run[]> {
    return this.flow.close(now, limit);
  }
  async eventFlow(workspaceId: string, eventId: string) {
    return this.flow.eventFlow(workspaceId, eventId);
  }
  async openFlowWindows(workspaceId: string, filter: { automation_id?: string; run_id?: string }, limit: number) {
    return this.flow.openWindows(workspaceId, filter, limit);
  }

  async commitDispatch(
    now: number,
    plan: DispatchPlan,
    inside?: () => void,
  ): Promise<{ events: StoredEvent[]; runs: Run[]; stale: string[]; flow_due?: number | null }> {
    return this.db
      .transaction(() => {
        const locked = plan.event_ids.flatMap((id) => {
          const r = this.s.plannedEvent.get(id);
          return r ? [toEvent(r)] : [];
        });
        if (locked.length === 0) return { events: [], runs: [], stale: [] };
        const { fresh, stale } = splitStale(locked, this.activeAutomations(), plan);
        for (const id of stale) this.s.releaseStale.run(id);
        const ids = new Set(fresh.map((e) => e.id));
        const runs: Run[] = [];
        const made = new Map<string, number>();
        for (const nr of plan.runs) {
          if (nr.event_id === null || !ids.has(nr.event_id)) continue;
          const res = this.insertRunTx(nr, now);
          if (res.created) {
            runs.push(res.run);
            made.set(nr.event_id, (made.get(nr.event_id) ?? 0) + 1);
          }
        }
        const flow = this.flow.apply(
          (plan.flow ?? []).filter((f) => ids.has(f.event_id)),
          now,
        );
        runs.push(...flow.runs);
        for (const r of flow.runs) if (r.event_id) made.set(r.event_id, (made.get(r.event_id) ?? 0) + 1);
        for (const ev of fresh) this.s.markDispatched.run(now, made.get(ev.id) ?? 0, ev.id);
        let woken = 0;
        for (const ev of fresh) {
          if (ev.type !== "event" || ev.name === null) continue;
          woken += this.nodes.wake(ev.workspace_id, waitKey(ev.name, ev.subject_id), now);
          if (ev.subject_id !== null) woken += this.nodes.wake(ev.workspace_id, waitKey(ev.name, null), now);
        }
        inside?.();
        return { events: fresh, runs, stale, flow_due: flow.due, woken };
      })
      .immediate();
  }

  async failDispatch(ids: readonly string[], error: string, now: number, maxAttempts: number): Promise<StoredEvent[]> {
    return this.db
      .transaction(() =>
        ids.flatMap((id) => {
          const r = this.s.failDispatch.get({ id, error, now, max: maxAttempts });
          const e = r ? toEvent(r) : null;
          return e && e.undeliverable_at !== null ? [e] : [];
        }),
      )
      .immediate();
  }

  async renewDispatch(ids: readonly string[], until: number): Promise<void> {
    this.db.transaction(() => {
      for (const id of ids) this.s.renewDispatch.run({ id, until });
    })();
  }

  async replayEvent(workspaceId: string, id: string, _now: number, audit: AuditEntry): Promise<StoredEvent | null> {
    return this.db
      .transaction(() => {
        const r = this.db
          .prepare(`UPDATE events SET undeliverable_at = NULL, undeliverable_reason = NULL, dispatch_attempts = 0, dispatch_error = NULL,
              dispatch_until = NULL WHERE id = ? AND workspace_id = ? AND undeliverable_at IS NOT NULL AND dropped_at IS NULL
              AND dispatched_at IS NULL RETURNING *`)
          .get(id, workspaceId);
        if (!r) return null;
        this.nodes.audit([audit]);
        return toEvent(r);
      })
      .immediate();
  }

  async dropEvent(workspaceId: string, id: string, now: number, audit: AuditEntry): Promise<StoredEvent | null> {
    return this.db
      .transaction(() => {
        const r = this.db
          .prepare("UPDATE events SET dropped_at = ? WHERE id = ? AND workspace_id = ? AND undeliverable_at IS NOT NULL AND dropped_at IS NULL RETURNING *")
          .get(now, id, workspaceId);
        if (!r) return null;
        this.nodes.audit([audit]);
        return toEvent(r);
      })
      .immediate();
  }

  async undeliverableEvents(workspaceId: string, limit: number): Promise<{ total: number; events: StoredEvent[] }> {
    const where = "workspace_id = ? AND undeliverable_at IS NOT NULL AND dropped_at IS NULL";
    const total = this.db.prepare(`SELECT count(*) FROM events WHERE ${where}`).pluck().get(workspaceId) as number;
    const rows = this.db.prepare(`SELECT * FROM events WHERE ${where} ORDER BY undeliverable_at DESC, id DESC LIMIT ?`).all(workspaceId, limit);
    return { total, events: rows.map(toEvent) };
  }

  async quarantinedRuns(workspaceId: string, limit: number): Promise<{ total: number; runs: Run[] }> {
    const where = "workspace_id = ? AND status = 'failed' AND exit_reason = 'quarantined'";
    const total = this.db.prepare(`SELECT count(*) FROM runs WHERE ${where}`).pluck().get(workspaceId) as number;
    const rows = this.db.prepare(`SELECT * FROM runs WHERE ${where} ORDER BY completed_at DESC, id DESC LIMIT ?`).all(workspaceId, limit);
    return { total, runs: rows.map(toRun) };
  }

  async activePauses(keys: readonly PauseKey[], now: number): Promise<Map<string, number | null>> {
    const out = new Map<string, number | null>();
    const q = this.db
      .prepare(`SELECT paused_until FROM subject_controls WHERE workspace_id = ? AND subject_id = ? AND automation_id IN (?, '')
        AND (paused_until IS NULL OR paused_until > ?)`)
      .pluck();
    for (const k of keys) {
      for (const until of q.all(k.workspace_id, k.subject_id, k.automation_id, now) as (number | null)[]) {
        out.set(pauseKey(k), laterEnd(out.get(pauseKey(k)), until));
      }
    }
    return out;
  }

  async listActiveAutomations(): Promise<Automation[]> {
    return this.db.prepare("SELECT * FROM automations WHERE status = 'active' ORDER BY created_at, id").all().map(toAutomation);
  }

  async listActivePauses(now: number, limit: number): Promise<PauseRow[]> {
    return this.db.prepare("SELECT * FROM subject_controls WHERE paused_until IS NULL OR paused_until > ? LIMIT ?").all(now, limit) as PauseRow[];
  }

  async putPause(p: PauseRow, audit?: AuditEntry): Promise<void> {
    this.db
      .transaction(() => {
        this.db
          .prepare(`INSERT INTO subject_controls (workspace_id, subject_id, automation_id, pause_reason, paused_until, created_at)
        VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (workspace_id, subject_id, automation_id)
        DO UPDATE SET pause_reason = excluded.pause_reason, paused_until = excluded.paused_until, created_at = excluded.created_at`)
          .run(p.workspace_id, p.subject_id, p.automation_id, p.pause_reason, p.paused_until, p.created_at);
        if (audit) this.nodes.audit([audit]);
      })
      .immediate();
  }

  async deletePause(workspaceId: string, subjectId: string, automationId: string, now: number, audit?: AuditEntry): Promise<boolean> {
    return this.db
      .transaction(() => {
        const n = this.db
          .prepare("DELETE FROM subject_controls WHERE workspace_id = ? AND subject_id = ? AND automation_id = ?")
          .run(workspaceId, subjectId, automationId).changes;
        // As in the PostgreSQL store: parked runs due now, a held run woken at its next park.
        this.db
          .prepare(`UPDATE runs SET due_at = CASE WHEN status = 'waiting' THEN ? ELSE due_at END,
          wake = CASE WHEN status = 'running' THEN 1 ELSE wake END
          WHERE workspace_id = ? AND subject_id = ? AND (? = '' OR automation_id = ?)
          AND (status = 'running' OR (status = 'waiting' AND waiting_for = 'subject_resume'))`)
          .run(now, workspaceId, subjectId, automationId, automationId);
        if (n === 1 && audit) this.nodes.audit([audit]);
        return n === 1;
      })
      .immediate();
  }

  async listPauses(workspaceId: string, subjectId: string): Promise<PauseRow[]> {
    return this.db
      .prepare("SELECT * FROM subject_controls WHERE workspace_id = ? AND subject_id = ? ORDER BY automation_id")
      .all(workspaceId, subjectId) as PauseRow[];
  }

  async syncSchedules(automationId: string, rows: readonly ScheduleRow[]): Promise<void> {
    this.db
      .transaction(() => {
        const old = new Map(
          (this.db.prepare("SELECT * FROM schedules WHERE automation_id = ?").all(automationId) as ScheduleRow[]).map((r) => [r.trigger_index, r]),
        );
        this.db.prepare("DELETE FROM schedules WHERE automation_id = ?").run(automationId);
        const ins = this.db.prepare(`INSERT INTO schedules (automation_id, trigger_index, workspace_id, cron, timezone, catch_up, next_fire_at, last_fired_at)
        VALUES (?, ?, ?, ?, ?, ?, ?, ?)`);
        for (const fresh of rows) {
          const r = resyncedSchedule(old.get(fresh.trigger_index), fresh);
          ins.run(r.automation_id, r.trigger_index, r.workspace_id, r.cron, r.timezone, r.catch_up, r.next_fire_at, r.last_fired_at);
        }
      })
      .immediate();
  }

  async dueSchedules(now: number, limit: number): Promise<ScheduleRow[]> {
    return this.db.prepare("SELECT * FROM schedules WHERE next_fire_at <= ? ORDER BY next_fire_at LIMIT ?").all(now, limit) as ScheduleRow[];
  }

  async fireSchedules(now: number, firings: readonly ScheduleFiring[], inside?: () => void): Promise<number> {
    return this.db
      .transaction(() => {
        const cas = this.db.prepare(
          "UPDATE schedules SET next_fire_at = ?, last_fired_at = ? WHERE automation_id = ? AND trigger_index = ? AND next_fire_at = ?",
        );
        let stored = 0;
        for (const f of firings) {
          if (cas.run(f.next_fire_at, now, f.automation_id, f.trigger_index, f.expected_next_fire_at).changes !== 1) continue; // fired or re-synced meanwhile
          for (const e of f.events) this.insertEventTx(e);
          stored += f.events.length;
        }
        inside?.();
        return stored;
      })
      .immediate();
  }

  async listSchedules(automationId: string): Promise<ScheduleRow[]> {
    return this.db.prepare("SELECT * FROM schedules WHERE automation_id = ? ORDER BY trigger_index").all(automationId) as ScheduleRow[];
  }

  async ensureHooks(workspaceId: string, automationId: string, triggerIndexes: readonly number[], make: (index: number) => HookRow): Promise<HookRow[]> {
    return this.db
      .transaction(() => {
        const ins = this.db.prepare(`INSERT INTO hooks (id, workspace_id, automation_id, trigger_index, secret, created_at) VALUES (?, ?, ?, ?, ?, ?)
        ON CONFLICT (automation_id, trigger_index) DO NOTHING`);
        for (const i of triggerIndexes) {
          const h = make(i);
          ins.run(h.id, workspaceId, automationId, i, h.secret, h.created_at);
        }
        return this.listHooksNow(automationId);
      })
      .immediate();
  }

  private listHooksNow(automationId: string): HookRow[] {
    return this.db.prepare("SELECT * FROM hooks WHERE automation_id = ? ORDER BY trigger_index").all(automationId) as HookRow[];
  }

  async listHooks(automationId: string): Promise<HookRow[]> {
    return this.listHooksNow(automationId);
  }

  async getHook(id: string): Promise<HookRow | null> {
    return (this.db.prepare("SELECT * FROM hooks WHERE id = ?").get(id) as HookRow | undefined) ?? null;
  }

  async updateHookSecret(id: string, expectedSecret: string, next: HookSecretUpdate, audit?: AuditEntry): Promise<boolean> {
    return this.db
      .transaction(() => {
        const changed = this.db
          .prepare("UPDATE hooks SET secret = ?, previous_secret = ?, previous_expires_at = ?, rotated_at = ? WHERE id = ? AND secret = ?")
          .run(next.secret, next.previous_secret, next.previous_expires_at, next.rotated_at, id, expectedSecret).changes;
        if (changed === 1 && audit) this.nodes.audit([audit]);
        return changed === 1;
      })
      .immediate();
  }

  async listUnsealedHooks(sealedPrefix: string): Promise<HookRow[]> {
    // substr, not LIKE: the prefix is compared as written ("." and "_" are not patterns here).
    return this.db.prepare("SELECT * FROM hooks WHERE substr(secret, 1, length(?)) <> ?").all(sealedPrefix, sealedPrefix) as HookRow[];
  }

  async overdue(workspaceId: string, now: number, graceMs: number): Promise<OverdueCount[]> {
    const cutoff = now - graceMs;
    const rows = this.db
      .prepare(`
      SELECT automation_id, sum(runs) AS runs, sum(schedules) AS schedules, min(oldest) AS oldest_due_at FROM (
        SELECT automation_id, count(*) AS runs, 0 AS schedules, min(due_at) AS oldest FROM runs
          WHERE workspace_id = ? AND due_at < ? AND status IN ('pending', 'waiting', 'retrying', 'interrupted', 'running')
          GROUP BY automation_id
        UNION ALL
        SELECT automation_id, 0, count(*), min(next_fire_at) FROM schedules
          WHERE workspace_id = ? AND next_fire_at < ? GROUP BY automation_id
      ) GROUP BY automation_id ORDER BY automation_id`)
      .all(workspaceId, cutoff, workspaceId, cutoff) as OverdueCount[];
    return rows;
  }

  /** When this store last swept its due marks (engine clock). */
  private lastSweep: number | undefined;

  /**
   * In `claimOrder` (engine/store.ts), over the automations with a due mark only (migration 014),
   * then the marks of those left with nothing due are raised to their earliest due_at. One writer
   * at a time (the write transaction), so no locking is needed; the periodic sweep is the same
   * safety net as PostgreSQL's.
   */
  async claimRuns(owner: string, now: number, leaseMs: number, limit: number): Promise<Run[]> {
    const tx = this.db.transaction(() => {
      if (this.lastSweep === undefined || now - this.lastSweep >= DUE_MARK_SWEEP_MS || now < this.lastSweep) {
        this.lastSweep = now;
        this.s.sweepMarks.run(now);
      }
      const marked = this.s.markedAutomations.all(now) as string[];
      const due: { id: string; automation_id: string; due_at: number; priority: number }[] = [];
      for (const aid of marked) {
        const rows = this.s.dueOfAutomation.all({ aid, now, limit }) as { id: string; due_at: number; priority: number }[];
        due.push(...rows.map((r) => ({ ...r, automation_id: aid })));
      }
      const out: Run[] = [];
      for (const { id } of claimOrder(due, limit)) {
        const r = this.s.claimOne.get(now + leaseMs, owner, id, now);
        if (r) out.push(toRun(r));
      }
      for (const aid of marked) {
        if (this.s.hasDue.get(aid, now)) continue;
        this.s.dropMarks.run(aid);
        this.s.markEarliest.run({ aid });
      }
      return out;
    });
    return tx.immediate();
  }

  async dueRuns(now: number, limit: number): Promise<Run[]> {
    return this.s.dueRuns.all({ now, limit }).map(toRun);
  }

  async commit(owner: string, cps: readonly Checkpoint[]): Promise<CommitResult[]> {
    const tx = this.db.transaction(() =>
      cps.map((c): CommitResult => {
        const st = c.state;
        const wait = st.wait ?? null;
        // Parking on named events: due at once if one is already stored (see the PostgreSQL commit).
        const dueAt = wait && !st.keep_lease && this.nodes.waitSatisfied(this.runWorkspace(c.run_id), c.run_id, wait) ? st.updated_at : st.due_at;
        const res = this.s.commitOne.get({
          run_id: c.run_id,
          expected_rev: c.expected_rev,
          owner,
          status: st.status,
          exit_reason: st.exit_reason,
          current_node_key: st.current_node_key,
          waiting_for: st.waiting_for,
          waiting_until: st.waiting_until,
          // Not serialized again when the previous commit wrote them (Checkpoint.state_unchanged).
          state_unchanged: c.state_unchanged ? 1 : 0,
          context: c.state_unchanged ? null : j(st.context),
          steps: c.state_unchanged ? null : j(st.steps),
          cursor: c.state_unchanged ? null : j(st.cursor),
          items_total: st.items_total,
          items_failed: st.items_failed,
          interruptions: st.interruptions,
          due_at: dueAt,
          keep_lease: st.keep_lease ? 1 : 0,
          terminal: isTerminal(st.status as RunStatus) ? 1 : 0,
          completed_at: st.completed_at,
          updated_at: st.updated_at,
          wait_key: wait ? waitKey(wait.name, wait.subject_id) : null,
          claim_at: c.claim?.at ?? null,
          lease_until: c.claim?.lease_until ?? null,
        }) as { control: RunControl | null } | undefined;
        if (!res) return { applied: false, control: null };
        for (const s of c.steps) this.insertStepRow(s);
        this.nodes.writeCheckpointExtras(c);
        return { applied: true, control: res.control ?? null };
      }),
    );
    return tx.immediate();
  }

  private runWorkspace(runId: string): string {
    return (this.db.prepare("SELECT workspace_id FROM runs WHERE id = ?").pluck().get(runId) as string | undefined) ?? "";
  }

  async renewLeases(owner: string, ids: readonly string[], until: number): Promise<string[]> {
    const tx = this.db.transaction(() => ids.filter((id) => this.s.renew.run(until, id, owner).changes === 1));
    return tx.immediate();
  }

  async nextDueAt(): Promise<number | null> {
    return (this.s.nextDue.get() as number | null) ?? null;
  }

  async getRun(workspaceId: string, id: string): Promise<Run | null> {
    const r = this.s.getRun.get(id, workspaceId);
    return r ? toRun(r) : null;
  }

  async listRuns(f: RunFilter): Promise<Page<Run>> {
    return this.runPage(f, "*", toRun);
  }

  async listRunSummaries(f: RunFilter): Promise<Page<RunSummary>> {
    return this.runPage(f, SUMMARY_COLUMNS, toRunSummary);
  }

  /** One page of runs, newest first, with the columns a list asks for. */
  private runPage<T extends { started_at: number; id: string }>(f: RunFilter, columns: string, map: (r: unknown) => T): Page<T> {
    const where: string[] = ["workspace_id = ?"];
    const args: unknown[] = [f.workspace_id];
    if (f.visible_to_user !== undefined)
      where.push("(json_extract(run_as, '$.type') <> 'user' OR json_extract(run_as, '$.user_id') = ?)"), args.push(f.visible_to_user);
    if (f.automation_id !== undefined) where.push("automation_id = ?"), args.push(f.automation_id);
    if (f.status !== undefined) where.push("status = ?"), args.push(f.status);
    if (f.subject_id !== undefined) where.push("subject_id = ?"), args.push(f.subject_id);
    if (f.started_after !== undefined) where.push("started_at >= ?"), args.push(f.started_after);
    if (f.started_before !== undefined) where.push("started_at < ?"), args.push(f.started_before);
    if (f.cursor !== undefined) {
      const c = decodeCursor(f.cursor);
      where.push("(started_at < ? OR (started_at = ? AND id < ?))");
      args.push(c.t, c.t, c.id);
    }
    args.push(f.limit + 1);
    const rows = this.db.prepare(`SELECT ${columns} FROM runs WHERE ${where.join(" AND ")} ORDER BY started_at DESC, id DESC LIMIT ?`).all(...args);
    const runs = rows.slice(0, f.limit).map(map);
    const last = runs[runs.length - 1];
    return { items: runs, next_cursor: rows.length > f.limit && last ? encodeCursor(last.started_at, last.id) : null };
  }

  async listSteps(runId: string): Promise<StepRun[]> {
    return this.s.steps.all(runId).map(toStep);
  }

  async findEvents(workspaceId: string, wait: WaitSpec, limit: number): Promise<StoredEvent[]> {
    return this.nodes.findEvents(workspaceId, wait, limit, toEvent);
  }
  async listItems(runId: string, nodeKey?: string, visit?: number): Promise<RunItem[]> {
    return this.nodes.listItems(runId, nodeKey, visit);
  }
  async listItemsPage(runId: string, cursor: string | undefined, limit: number): Promise<Page<RunItem>> {
    const c = cursor === undefined ? null : decodeItemCursor(cursor);
    const rows = this.db
      .prepare(`SELECT * FROM run_items WHERE run_id = ?
        AND (? IS NULL OR node_key > ? OR (node_key = ? AND (visit > ? OR (visit = ? AND idx > ?))))
        ORDER BY node_key, visit, idx LIMIT ?`)
      .all(runId, c?.node_key ?? null, c?.node_key ?? null, c?.node_key ?? null, c?.visit ?? null, c?.visit ?? null, c?.idx ?? null, limit + 1);
    const items = rows.slice(0, limit).map(toItem);
    const last = items[items.length - 1];
    return { items, next_cursor: rows.length > limit && last ? encodeItemCursor(last.node_key, last.visit, last.idx) : null };
  }
  async getItem(workspaceId: string, itemId: string): Promise<RunItem | null> {
    return this.nodes.getItem(workspaceId, itemId);
  }
  async beginItemRetry(workspaceId: string, itemId: string, now: number, leaseUntil: number): Promise<RunItem | null> {
    return this.nodes.beginItemRetry(workspaceId, itemId, now, leaseUntil);
  }
  async finishItemRetry(item: RunItem, audit: AuditEntry): Promise<boolean> {
    return this.nodes.finishItemRetry(item, audit);
  }
  async getApproval(workspaceId: string, id: string) {
    return this.nodes.getApproval(workspaceId, id);
  }
  async listApprovals(workspaceId: string, status: ApprovalStatus | undefined, limit: number) {
    return this.nodes.listApprovals(workspaceId, status, limit);
  }
  async listRunApprovals(runId: string) {
    return this.nodes.listRunApprovals(runId);
  }
  async decideApproval(workspaceId: string, id: string, status: "approved" | "rejected" | "timed_out", actor: string, comment: string | null, now: number) {
    return this.nodes.decideApproval(workspaceId, id, status, actor, comment, now);
  }
  async controlRun(workspaceId: string, runId: string, control: RunControl, audit: AuditEntry, now: number): Promise<Run | null> {
    const r = this.nodes.controlRun(workspaceId, runId, control, audit, now);
    return r === undefined ? null : toRun(r);
  }
  async redriveRun(r: Redrive): Promise<RedriveResult> {
    return redriveRun(this.db, r, (e) => this.nodes.audit(e), toRun);
  }
  async appendAudit(entries: readonly AuditEntry[]): Promise<void> {
    this.db.transaction(() => this.nodes.audit(entries)).immediate();
  }
  async listAudit(workspaceId: string, limit: number, beforeId?: number) {
    return this.nodes.listAudit(workspaceId, limit, beforeId);
  }

  async createWorkspace(w: Workspace, admin: User, token: TokenRow & { hash: string }, audit: AuditEntry) {
    this.ids.createWorkspace(w, admin, token, audit);
  }
  async getWorkspace(id: string) {
    return this.ids.getWorkspace(id);
  }
  async insertUser(u: User, audit: AuditEntry) {
    this.ids.insertUser(u, audit);
  }
  async getUser(workspaceId: string, id: string) {
    return this.ids.getUser(workspaceId, id);
  }
  async listUsers(workspaceId: string) {
    return this.ids.listUsers(workspaceId);
  }
  async updateUser(workspaceId: string, id: string, patch: { role?: Role; disabled_at?: number | null }, a: AuditEntry) {
    return this.ids.updateUser(workspaceId, id, patch, a);
  }
  async insertToken(t: TokenRow & { hash: string }, audit: AuditEntry) {
    this.ids.insertToken(t, audit);
  }
  async tokenByHash(hash: string) {
    return this.ids.tokenByHash(hash);
  }
  async listTokens(workspaceId: string) {
    return this.ids.listTokens(workspaceId);
  }
  async revokeToken(workspaceId: string, id: string, now: number, audit: AuditEntry) {
    return this.ids.revokeToken(workspaceId, id, now, audit);
  }
  async putSecret(workspaceId: string, name: string, ciphertext: string, now: number, audit: AuditEntry) {
    return this.ids.putSecret(workspaceId, name, ciphertext, now, audit);
  }
  async listSecrets(workspaceId: string) {
    return this.ids.listSecrets(workspaceId);
  }
  async deleteSecret(workspaceId: string, name: string, audit: AuditEntry) {
    return this.ids.deleteSecret(workspaceId, name, audit);
  }
  async reportOutcomes(workspaceId: string, from: number, to: number) {
    return this.ids.reportOutcomes(workspaceId, from, to);
  }
  async opsCounts(workspaceId: string, now: number, windowMs: number) {
    return this.ids.opsCounts(workspaceId, now, windowMs);
  }
  async queueDepth(now: number, graceMs: number) {
    return this.ids.queueDepth(now, graceMs);
  }

  // ---------- events and liveness ----------

  async listEvents(f: EventFilter): Promise<Page<StoredEvent>> {
    const where: string[] = ["workspace_id = ?"];
    const args: unknown[] = [f.workspace_id];
    const add = (sql: string, v: unknown) => {
      where.push(sql);
      args.push(v);
    };
    if (f.subject_id !== undefined) add("subject_id = ?", f.subject_id);
    if (f.type !== undefined) add("type = ?", f.type);
    if (f.name !== undefined) add("name = ?", f.name);
    if (f.key !== undefined) add("idempotency_key = ?", f.key);
    if (f.cursor !== undefined) {
      const c = decodeCursor(f.cursor);
      where.push("(received_at < ? OR (received_at = ? AND id < ?))");
      args.push(c.t, c.t, c.id);
    }
    args.push(f.limit + 1);
    const rows = this.db.prepare(`SELECT * FROM events WHERE ${where.join(" AND ")} ORDER BY received_at DESC, id DESC LIMIT ?`).all(...args);
    const events = rows.slice(0, f.limit).map(toEvent);
    const last = events[events.length - 1];
    return { items: events, next_cursor: rows.length > f.limit && last ? encodeCursor(last.received_at, last.id) : null };
  }
  async eventRuns(workspaceId: string, eventId: string): Promise<Run[]> {
    return this.db.prepare("SELECT * FROM runs WHERE event_id = ? AND workspace_id = ? ORDER BY started_at, id").all(eventId, workspaceId).map(toRun);
  }
  async heartbeat(p: ProcessBeat, now: number) {
    heartbeat(this.db, p, now);
  }
  async forgetProcess(id: string) {
    forgetProcess(this.db, id);
  }
  async liveProcesses(now: number) {
    return liveProcesses(this.db, now);
  }
  async getWorkspaceSettings(workspaceId: string) {
    return WS.getWorkspaceSettings(this.db, workspaceId);
  }
  async putWorkspaceSettings(workspaceId: string, settings: Record<string, unknown>, now: number, audit: AuditEntry) {
    WS.putWorkspaceSettings(this.db, workspaceId, settings, now, audit);
  }

  // flow control (flow.ts)
  async acquireFlow(req: FlowAcquire, now: number) {
    return F.acquireFlow(this.db, req, now);
  }
  async wakeFlowWaiters(workspaceId: string, gates: readonly Pick<FlowSlotGate, "scope" | "key" | "limit">[], now: number) {
    return F.wakeFlowWaiters(this.db, workspaceId, gates, now);
  }
  async wakeFlowOfRun(workspaceId: string, runId: string, now: number) {
    return F.wakeFlowOfRun(this.db, workspaceId, runId, now);
  }
  async sweepFlowWaiters(now: number, maxKeys: number) {
    return this.db.transaction(() => F.sweepFlowWaiters(this.db, now, maxKeys)).immediate();
  }
  async pauseHost(workspaceId: string, host: string, until: number, status: number, now: number) {
    F.pauseHost(this.db, workspaceId, host, until, status, now);
  }
  async hostPausedUntil(workspaceId: string, host: string, now: number) {
    return F.hostPausedUntil(this.db, workspaceId, host, now);
  }
  async putSharedLimit(l: SharedLimit, audit: AuditEntry, create: boolean) {
    return F.putSharedLimit(this.db, l, audit, create);
  }
  async getSharedLimits(workspaceId: string, names?: readonly string[]) {
    return F.getSharedLimits(this.db, workspaceId, names);
  }
  async deleteSharedLimit(workspaceId: string, name: string, audit: AuditEntry) {
    return F.deleteSharedLimit(this.db, workspaceId, name, audit);
  }
  async flowStats(workspaceId: string | null, now: number, limit: number) {
    return F.flowStats(this.db, workspaceId, now, limit);
  }
  async flowWaitOf(workspaceId: string, runId: string, now: number) {
    return F.flowWaitOf(this.db, workspaceId, runId, now);
  }
}
