// Read side on PostgreSQL: one run, run lists with cursor pagination, the step timeline.

import type pg from "pg";
import type { Page, Run, RunFilter, StepRun } from "../../engine/store.js";
import { decodeCursor, encodeCursor } from "../cursor.js";
import { toRun, toStep, ts } from "./rows.js";

export async function getRun(pool: pg.Pool, workspaceId: string, id: string): Promise<Run | null> {
  const res = await pool.query("SELECT * FROM runs WHERE id = $1 AND workspace_id = $2", [id, workspaceId]);
  return res.rows[0] ? toRun(res.rows[0]) : null;
}

export async function listRuns(pool: pg.Pool, f: RunFilter): Promise<Page<Run>> {
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
  const res = await pool.query(`SELECT * FROM runs WHERE ${where.join(" AND ")} ORDER BY started_at DESC, id DESC LIMIT $${args.length}`, args);
  const runs = res.rows.slice(0, f.limit).map(toRun);
  const last = runs[runs.length - 1];
  return { items: runs, next_cursor: res.rows.length > f.limit && last ? encodeCursor(last.started_at, last.id) : null };
}

export async function listSteps(pool: pg.Pool, runId: string): Promise<StepRun[]> {
  const res = await pool.query("SELECT * FROM step_runs WHERE run_id = $1 ORDER BY id", [runId]);
  return res.rows.map(toStep);
}
