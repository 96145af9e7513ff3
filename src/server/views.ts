// Domain objects → the JSON shapes of CONTRACT.md (snake_case, ISO times).

import type { AutomationView } from "../engine/engine.js";
import type { HookInfo } from "../engine/webhooks.js";
import type {
  Approval,
  AuditRow,
  Automation,
  AutomationVersion,
  PauseRow,
  Run,
  RunItem,
  RunSummary,
  StepRun,
  StoredEvent,
  TokenRow,
  User,
} from "../engine/store.js";

import type { z } from "zod";
import type * as S from "./shapes.js";

const iso = (t: number | null): string | null => (t === null ? null : new Date(t).toISOString());

export function automationJson(a: Automation | AutomationView): z.infer<typeof S.automationShape> {
  return {
    id: a.id,
    workspace_id: a.workspace_id,
    key: a.key,
    name: a.name,
    status: a.status,
    version: a.current_version,
    created_at: iso(a.created_at),
    updated_at: iso(a.updated_at),
    ...("definition" in a ? { definition: a.definition } : {}),
    ...("hooks" in a && a.hooks ? { hooks: a.hooks.map(hookJson) } : {}),
  };
}

/** A hook, never with its secret unless the engine handed it over to be shown this once. */
export function hookJson(h: HookInfo & { secret?: string }): z.infer<typeof S.hookShape> {
  return {
    id: h.id,
    trigger_index: h.trigger_index,
    path: `/v1/hooks/${h.id}`,
    created_at: iso(h.created_at),
    rotated_at: iso(h.rotated_at),
    previous_secret_expires_at: iso(h.previous_expires_at),
    ...(h.secret !== undefined ? { secret: h.secret } : {}),
  };
}

export function versionJson(v: AutomationVersion): z.infer<typeof S.versionShape> {
  return { automation_id: v.automation_id, version: v.version, definition: v.definition, created_at: iso(v.created_at) };
}

export function runJson(r: Run): z.infer<typeof S.runShape> {
  return {
    id: r.id,
    automation_id: r.automation_id,
    version: r.version,
    workspace_id: r.workspace_id,
    event_id: r.event_id,
    trigger_type: r.trigger_type,
    subject_id: r.subject_id,
    status: r.status,
    exit_reason: r.exit_reason,
    current_node_key: r.current_node_key,
    waiting_for: r.waiting_for,
    waiting_until: iso(r.waiting_until),
    context: r.context,
    event: r.event,
    run_as: r.run_as,
    trace_id: r.trace_id,
    items_total: r.items_total,
    items_failed: r.items_failed,
    interruptions: r.interruptions,
    priority: r.priority ?? 0,
    priority_error: r.priority_error ?? null,
    attempt: r.cursor.attempt,
    started_at: iso(r.started_at),
    completed_at: iso(r.completed_at),
    updated_at: iso(r.updated_at),
  };
}

export function runSummaryJson(r: RunSummary): z.infer<typeof S.runSummaryShape> {
  return {
    id: r.id,
    automation_id: r.automation_id,
    automation_key: r.automation_key,
    version: r.version,
    workspace_id: r.workspace_id,
    event_id: r.event_id,
    trigger_type: r.trigger_type,
    subject_id: r.subject_id,
    status: r.status,
    exit_reason: r.exit_reason,
    current_node_key: r.current_node_key,
    waiting_for: r.waiting_for,
    waiting_until: iso(r.waiting_until),
    run_as: r.run_as,
    trace_id: r.trace_id,
    items_total: r.items_total,
    items_failed: r.items_failed,
    interruptions: r.interruptions,
    started_at: iso(r.started_at),
    completed_at: iso(r.completed_at),
    updated_at: iso(r.updated_at),
  };
}

export function stepJson(s: StepRun): z.infer<typeof S.stepShape> {
  return {
    id: s.id,
    run_id: s.run_id,
    node_key: s.node_key,
    node_kind: s.node_kind,
    visit: s.visit,
    attempt: s.attempt,
    entered_via_port_key: s.entered_via_port_key,
    exited_via_port_key: s.exited_via_port_key,
    outcome: s.outcome,
    duration_ms: s.duration_ms,
    idempotency_key: s.idempotency_key,
    input: s.input,
    output: s.output,
    error: s.error,
    policy_violations: s.violations ?? [],
    logs: s.logs ?? [],
    started_at: iso(s.started_at),
    finished_at: iso(s.finished_at),
  };
}

export function eventJson(e: StoredEvent): z.infer<typeof S.eventShape> {
  return {
    id: e.id,
    source: e.source,
    key: e.idempotency_key,
    type: e.type,
    name: e.name,
    subject_id: e.subject_id,
    body: { ...e.body },
    received_at: iso(e.received_at),
    dispatched_at: iso(e.dispatched_at),
    runs_created: e.runs_created,
    actor: e.actor,
    token_id: e.token_id,
    dispatch_attempts: e.dispatch_attempts,
    undeliverable_at: iso(e.undeliverable_at),
    undeliverable_reason: e.undeliverable_reason,
    dropped_at: iso(e.dropped_at),
  };
}

export function eventSummaryJson(e: StoredEvent): z.infer<typeof S.eventSummaryShape> {
  const { body: _body, ...rest } = eventJson(e);
  return rest;
}

export function pauseJson(p: PauseRow): z.infer<typeof S.pauseShape> {
  return {
    subject_id: p.subject_id,
    automation_id: p.automation_id === "" ? null : p.automation_id,
    pause_reason: p.pause_reason,
    paused_until: iso(p.paused_until),
    created_at: iso(p.created_at),
  };
}

export function itemJson(i: RunItem): z.infer<typeof S.itemShape> {
  return {
    id: i.id,
    run_id: i.run_id,
    node_key: i.node_key,
    visit: i.visit,
    index: i.idx,
    subject_id: i.subject_id,
    action_kind: i.action_kind,
    outcome: i.outcome,
    attempts: i.attempts,
    idempotency_key: i.idempotency_key,
    input: i.input,
    output: i.output,
    error: i.error,
    approval_id: i.approval_id,
    next_attempt_at: iso(i.not_before),
    started_at: iso(i.started_at),
    finished_at: iso(i.finished_at),
    updated_at: iso(i.updated_at),
  };
}

export function approvalJson(a: Approval): z.infer<typeof S.approvalShape> {
  return {
    id: a.id,
    run_id: a.run_id,
    automation_id: a.automation_id,
    node_key: a.node_key,
    visit: a.visit,
    item_id: a.item_id,
    title: a.title,
    approvers: a.approvers,
    status: a.status,
    decided_by: a.decided_by,
    decided_at: iso(a.decided_at),
    comment: a.comment,
    created_at: iso(a.created_at),
    expires_at: iso(a.expires_at),
  };
}

export function auditJson(a: AuditRow): z.infer<typeof S.auditShape> {
  return { id: a.id, actor: a.actor, action: a.action, target_type: a.target_type, target_id: a.target_id, details: a.details, at: iso(a.at) };
}

export function userJson(u: User): z.infer<typeof S.userShape> {
  return { id: u.id, name: u.name, role: u.role, instance_admin: u.instance_admin, created_at: iso(u.created_at) };
}

/** Never the token itself: it is shown once, when issued. */
export function tokenJson(t: TokenRow): z.infer<typeof S.tokenShape> {
  return { id: t.id, user_id: t.user_id, created_at: iso(t.created_at), revoked_at: iso(t.revoked_at) };
}
