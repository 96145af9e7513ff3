// Read side on PostgreSQL: one run, run lists with cursor pagination, the step timeline.

import type pg from "pg";
import type { Page, Run, RunFilter, RunSummary, StepRun } from "../../engine/store.js";
import { decodeCursor, encodeCursor } from "../cursor.js";
import { toRun, toRunSummary, toStep, ts } from "./rows.js";

export async function getRun(pool: pg.Pool, workspaceId: string, id: string): Promise<Run | null> {
  const res = await pool.query("SELECT * FROM runs WHERE id = $1 AND workspace_id = $2", [id, workspaceId]);
  return res.rows[0] ? toRun(res.rows[0]) : null;
}

export function listRuns(pool: pg.Pool, f: RunFilter): Promise<Page<Run>> {
  return runPage(pool, f, "*", toRun);
}

/** The columns of a run summary: never context, event, steps or cursor. */
const SUMMARY_COLUMNS = `id, workspace_id, automation_id, (SELECT key FROM automations a WHERE a.id = runs.automation_id) AS automation_key, version,
  event_id, trigger_type, subject_id, status, exit_reason, current_node_key, waiting_for, waiting_until, run_as, trace_id,
  items_total, items_failed, interruptions, started_at, completed_at, updated_at`;

export function listRunSummaries(pool: pg.Pool, f: RunFilter): Promise<Page<RunSummary>> {
  return runPage(pool, f, SUMMARY_COLUMNS, toRunSummary);
}

/** One page of runs, newest first, with the columns a list asks for. */
async function runPage<T extends { started_at: number; id: string }>(
  pool: pg.Pool,
  f: RunFilter,
  columns: string,
  map: (r: pg.QueryResultRow) => T,
): Promise<Page<T>> {
  const where: string[] = ["workspace_id = $1"];
  const args: unknown[] = [f.workspace_id];
  const add = (sql: string, v: unknown) => {
    args.push(v);
    where.push(sql.replace("?", `$${args.length}`));
  };
  if (f.visible_to_user !== undefined) add("(run_as->>'type' <> 'user' OR run_as->>'user_id' = ?)", f.visible_to_user);
  if (f.automation_id !== undefined) add("automation_id = ?", f.automation_id);
  if (f.status !== undefined) add("status = ?", f.status);
  if (f.subject_id !== undefined) add("subject_id = ?", f.subject_id);
  if (f.started_after !== undefined) add("started_at >= ?", ts(f.started_after));
  if (f.started_before !== undefined) add("started_at < ?", ts(f.started_before));
  if (f.cursor !== undefined) {
    const c = decodeCursor(f.cursor);
    args.push(ts(c.t), c.id);
    where.push(`(started_at, id) < ($${args.length - 1}, $${args.length})`);
  }
  args.push(f.limit + 1);
  const res = await pool.query(`SELECT ${columns} FROM runs WHERE ${where.join(" AND ")} ORDER BY started_at DESC, id DESC LIMIT $${args.length}`, args);
  const runs = res.rows.slice(0, f.limit).map(map);
  const last = runs[runs.length - 1];
  return { items: runs, next_cursor: res.rows.length > f.limit && last ? encodeCursor(last.started_at, last.id) : null };
}

export async function listSteps(pool: pg.Pool, runId: string): Promise<StepRun[]> {
  const res = await pool.query("SELECT * FROM step_runs WHERE run_id = $1 ORDER BY id", [runId]);
  return res.rows.map(toStep);
}
