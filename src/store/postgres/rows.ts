// Row ↔ domain mapping for PostgreSQL: timestamptz ↔ epoch ms, jsonb ↔ objects.

import type { Automation, AutomationVersion, Run, RunSummary, StepRun } from "../../engine/store.js";

export const ms = (d: Date | null): number | null => (d === null ? null : d.getTime());
export const ts = (n: number | null | undefined): Date | null => (n === null || n === undefined ? null : new Date(n));

/* eslint-disable @typescript-eslint/no-explicit-any */
export function toAutomation(r: any): Automation {
  return {
    id: r.id, workspace_id: r.workspace_id, key: r.key, name: r.name, status: r.status,
    current_version: r.current_version, created_at: r.created_at.getTime(), updated_at: r.updated_at.getTime(),
  };
}

export function toVersion(r: any): AutomationVersion {
  return { automation_id: r.automation_id, version: r.version, definition: r.definition, created_at: r.created_at.getTime() };
}

export function toRun(r: any): Run {
  return {
    id: r.id, workspace_id: r.workspace_id, automation_id: r.automation_id, version: r.version,
    event_id: r.event_id, dedupe_key: r.dedupe_key, trigger_type: r.trigger_type, subject_id: r.subject_id,
    status: r.status, exit_reason: r.exit_reason, current_node_key: r.current_node_key,
    waiting_for: r.waiting_for, waiting_until: ms(r.waiting_until), event: r.event, context: r.context, steps: r.steps,
    cursor: r.cursor, run_as: r.run_as, trace_id: r.trace_id, items_total: r.items_total,
    items_failed: r.items_failed, interruptions: r.interruptions, due_at: ms(r.due_at),
    control: r.control ?? null, lease_owner: r.lease_owner, rev: r.rev, started_at: r.started_at.getTime(),
    completed_at: ms(r.completed_at), updated_at: r.updated_at.getTime(),
  };
}

export function toRunSummary(r: any): RunSummary {
  return {
    id: r.id, workspace_id: r.workspace_id, automation_id: r.automation_id, automation_key: r.automation_key, version: r.version,
    event_id: r.event_id, trigger_type: r.trigger_type, subject_id: r.subject_id, status: r.status, exit_reason: r.exit_reason,
    current_node_key: r.current_node_key, waiting_for: r.waiting_for, waiting_until: ms(r.waiting_until), run_as: r.run_as,
    trace_id: r.trace_id, items_total: r.items_total, items_failed: r.items_failed, interruptions: r.interruptions,
    started_at: r.started_at.getTime(), completed_at: ms(r.completed_at), updated_at: r.updated_at.getTime(),
  };
}

export function toStep(r: any): StepRun {
  return {
    id: Number(r.id), run_id: r.run_id, node_key: r.node_key, node_kind: r.node_kind, visit: r.visit,
    attempt: r.attempt, entered_via_port_key: r.entered_via_port_key, exited_via_port_key: r.exited_via_port_key,
    outcome: r.outcome, duration_ms: r.duration_ms, idempotency_key: r.idempotency_key, input: r.input,
    output: r.output, error: r.error, violations: r.violations ?? null, logs: r.logs ?? null,
    started_at: r.started_at.getTime(), finished_at: r.finished_at.getTime(),
  };
}
