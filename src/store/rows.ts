// Row → domain mapping shared by both stores. The stores differ only in how their drivers return
// three column kinds (timestamps, JSON, booleans); each passes a Codec for those, and the field
// list of every object is written once here.

import type { Approval, AuditRow, Automation, AutomationVersion, Run, RunItem, RunSummary, StepRun, StoredEvent, TokenRow, User } from "../engine/store.js";

/** A row as a driver returns it; each mapper narrows its columns. */
export type Row = Record<string, unknown>;

export interface Codec {
  /** A timestamp column as epoch ms (null stays null). */
  time(v: unknown): number | null;
  /** A JSON column as a value (null stays null). */
  json(v: unknown): unknown;
  bool(v: unknown): boolean;
}

/** PostgreSQL: timestamptz arrives as Date, jsonb already parsed, booleans as booleans. */
export const pgCodec: Codec = {
  time: (v) => (v === null || v === undefined ? null : (v as Date).getTime()),
  json: (v) => v ?? null,
  bool: (v) => v === true,
};

/** SQLite: timestamps are stored as epoch ms, JSON as text, booleans as 0/1. */
export const sqliteCodec: Codec = {
  time: (v) => (v === null || v === undefined ? null : (v as number)),
  json: (v) => (v === null || v === undefined ? null : JSON.parse(v as string)),
  bool: (v) => v === 1,
};

/** An object with exactly T's keys, whose values the caller vouches for (they come from T's own table). */
const shaped = <T>(o: Record<keyof T, unknown>): T => o as T;

export interface Mappers {
  automation(row: unknown): Automation;
  version(row: unknown): AutomationVersion;
  run(row: unknown): Run;
  runSummary(row: unknown): RunSummary;
  event(row: unknown): StoredEvent;
  step(row: unknown): StepRun;
  item(row: unknown): RunItem;
  approval(row: unknown): Approval;
  audit(row: unknown): AuditRow;
  user(row: unknown): User;
  token(row: unknown): TokenRow;
}

export function mappers(c: Codec): Mappers {
  const t = c.time;
  const j = c.json;
  // Drivers type their rows loosely (better-sqlite3: unknown); each mapper reads one table's row.
  const m =
    <T>(f: (r: Row) => T) =>
    (row: unknown): T =>
      f(row as Row);
  return {
    automation: m((r) =>
      shaped<Automation>({
        id: r.id,
        workspace_id: r.workspace_id,
        key: r.key,
        name: r.name,
        status: r.status,
        current_version: r.current_version,
        created_at: t(r.created_at),
        updated_at: t(r.updated_at),
      }),
    ),
    version: m((r) =>
      shaped<AutomationVersion>({ automation_id: r.automation_id, version: r.version, definition: j(r.definition), created_at: t(r.created_at) }),
    ),
    run: m((r) =>
      shaped<Run>({
        id: r.id,
        workspace_id: r.workspace_id,
        automation_id: r.automation_id,
        version: r.version,
        event_id: r.event_id,
        dedupe_key: r.dedupe_key,
        trigger_type: r.trigger_type,
        subject_id: r.subject_id,
        status: r.status,
        exit_reason: r.exit_reason,
        current_node_key: r.current_node_key,
        waiting_for: r.waiting_for,
        waiting_until: t(r.waiting_until),
        event: j(r.event),
        context: j(r.context),
        steps: j(r.steps),
        cursor: j(r.cursor),
        run_as: j(r.run_as),
        trace_id: r.trace_id,
        items_total: r.items_total,
        items_failed: r.items_failed,
        interruptions: r.interruptions,
        unsettled_claims: r.unsettled_claims ?? 0,
        due_at: t(r.due_at),
        priority: r.priority ?? 0,
        priority_error: r.priority_error ?? null,
        control: r.control ?? null,
        lease_owner: r.lease_owner,
        rev: r.rev,
        started_at: t(r.started_at),
        completed_at: t(r.completed_at),
        updated_at: t(r.updated_at),
      }),
    ),
    runSummary: m((r) =>
      shaped<RunSummary>({
        id: r.id,
        workspace_id: r.workspace_id,
        automation_id: r.automation_id,
        automation_key: r.automation_key,
        version: r.version,
        event_id: r.event_id,
        trigger_type: r.trigger_type,
        subject_id: r.subject_id,
        status: r.status,
        exit_reason: r.exit_reason,
        current_node_key: r.current_node_key,
        waiting_for: r.waiting_for,
        waiting_until: t(r.waiting_until),
        run_as: j(r.run_as),
        trace_id: r.trace_id,
        items_total: r.items_total,
        items_failed: r.items_failed,
        interruptions: r.interruptions,
        started_at: t(r.started_at),
        completed_at: t(r.completed_at),
        updated_at: t(r.updated_at),
      }),
    ),
    event: m((r) =>
      shaped<StoredEvent>({
        id: r.id,
        workspace_id: r.workspace_id,
        source: r.source,
        idempotency_key: r.idempotency_key,
        payload_hash: r.payload_hash,
        type: r.type,
        name: r.name,
        subject_id: r.subject_id,
        body: j(r.body),
        shard: r.shard,
        received_at: t(r.received_at),
        dispatched_at: t(r.dispatched_at),
        runs_created: r.runs_created,
        actor: r.actor ?? null,
        token_id: r.token_id ?? null,
        actor_role: r.actor_role ?? null,
        dispatch_attempts: r.dispatch_attempts ?? 0,
        dispatch_error: r.dispatch_error ?? null,
        undeliverable_at: t(r.undeliverable_at),
        undeliverable_reason: r.undeliverable_reason ?? null,
        dropped_at: t(r.dropped_at),
      }),
    ),
    // bigserial ids arrive from PostgreSQL as strings.
    step: m((r) =>
      shaped<StepRun>({
        id: Number(r.id),
        run_id: r.run_id,
        node_key: r.node_key,
        node_kind: r.node_kind,
        visit: r.visit,
        attempt: r.attempt,
        entered_via_port_key: r.entered_via_port_key,
        exited_via_port_key: r.exited_via_port_key,
        outcome: r.outcome,
        duration_ms: r.duration_ms,
        idempotency_key: r.idempotency_key,
        input: j(r.input),
        output: j(r.output),
        error: j(r.error),
        violations: j(r.violations),
        logs: j(r.logs),
        started_at: t(r.started_at),
        finished_at: t(r.finished_at),
      }),
    ),
    item: m((r) =>
      shaped<RunItem>({
        id: r.id,
        run_id: r.run_id,
        workspace_id: r.workspace_id,
        node_key: r.node_key,
        visit: r.visit,
        idx: r.idx,
        subject_id: r.subject_id,
        action_kind: r.action_kind,
        outcome: r.outcome,
        attempts: r.attempts,
        idempotency_key: r.idempotency_key,
        input: j(r.input),
        output: j(r.output),
        error: j(r.error),
        approval_id: r.approval_id,
        not_before: t(r.not_before),
        started_at: t(r.started_at),
        finished_at: t(r.finished_at),
        updated_at: t(r.updated_at),
      }),
    ),
    approval: m((r) =>
      shaped<Approval>({
        id: r.id,
        workspace_id: r.workspace_id,
        run_id: r.run_id,
        automation_id: r.automation_id,
        node_key: r.node_key,
        visit: r.visit,
        item_id: r.item_id,
        title: r.title,
        approvers: j(r.approvers),
        status: r.status,
        decided_by: r.decided_by,
        decided_at: t(r.decided_at),
        comment: r.comment,
        created_at: t(r.created_at),
        expires_at: t(r.expires_at),
      }),
    ),
    audit: m((r) =>
      shaped<AuditRow>({
        id: Number(r.id),
        workspace_id: r.workspace_id,
        actor: r.actor,
        action: r.action,
        target_type: r.target_type,
        target_id: r.target_id,
        details: j(r.details),
        at: t(r.at),
      }),
    ),
    user: m((r) =>
      shaped<User>({
        id: r.id,
        workspace_id: r.workspace_id,
        name: r.name,
        role: r.role,
        instance_admin: c.bool(r.instance_admin),
        created_at: t(r.created_at),
        disabled_at: t(r.disabled_at),
      }),
    ),
    token: m((r) => shaped<TokenRow>({ id: r.id, workspace_id: r.workspace_id, user_id: r.user_id, created_at: t(r.created_at), revoked_at: t(r.revoked_at) })),
  };
}
