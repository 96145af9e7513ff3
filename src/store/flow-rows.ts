// Row shapes of the flow-control tables (flow_windows, flow_members), the same in both stores
// (times are epoch milliseconds in integer columns; PostgreSQL returns bigint as text).

import type { FlowMembership, FlowWindow, NewRun } from "../engine/store.js";

export const W_COLS =
  "id, workspace_id, automation_id, kind, mode, key, status, count, first_at, last_at, due_at, last_event_id, last_received_at, run_id, run, closed_at";

const num = (v: unknown): number => Number(v);

export function toWindow(r: Record<string, unknown>): FlowWindow {
  return {
    id: r.id as string,
    workspace_id: r.workspace_id as string,
    automation_id: r.automation_id as string,
    kind: r.kind as FlowWindow["kind"],
    mode: r.mode as FlowWindow["mode"],
    key: r.key as string,
    status: r.status as FlowWindow["status"],
    count: num(r.count),
    first_at: num(r.first_at),
    last_at: num(r.last_at),
    due_at: num(r.due_at),
    last_event_id: r.last_event_id as string,
    last_received_at: num(r.last_received_at),
    run_id: r.run_id as string,
    run: (typeof r.run === "string" ? JSON.parse(r.run) : r.run) as NewRun,
    closed_at: r.closed_at === null ? null : num(r.closed_at),
  };
}

export function membership(row: Record<string, unknown>): FlowMembership {
  const w: Record<string, unknown> = {};
  for (const c of W_COLS.split(", ")) w[c] = row[`w_${c}`];
  return {
    event_id: row.event_id as string,
    automation_id: row.automation_id as string,
    window: row.w_id ? toWindow(w) : null,
    seq: num(row.seq),
    key: (row.key as string | null) ?? null,
    run_id: (row.run_id as string | null) ?? null,
    error_code: (row.error_code as string | null) ?? null,
    error_message: (row.error_message as string | null) ?? null,
  };
}
