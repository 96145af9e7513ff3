// Liveness of the fleet on PostgreSQL: one row per process, upserted by its heartbeat.

import type pg from "pg";
import { LIVENESS_MS, PROCESS_FORGET_MS, type LiveProcess, type ProcessBeat } from "../../engine/store.js";
import { ts } from "./rows.js";

export async function heartbeat(pool: pg.Pool, p: ProcessBeat, now: number): Promise<void> {
  await pool.query({
    name: "weft_heartbeat",
    text: `WITH gone AS (DELETE FROM processes WHERE last_seen < $7 AND id <> $1)
      INSERT INTO processes (id, role, host, pid, started_at, last_seen) VALUES ($1, $2, $3, $4, $5, $6)
      ON CONFLICT (id) DO UPDATE SET last_seen = excluded.last_seen`,
    values: [p.id, p.role, p.host, p.pid, ts(p.started_at), ts(now), ts(now - PROCESS_FORGET_MS)],
  });
}

export async function forgetProcess(pool: pg.Pool, id: string): Promise<void> {
  await pool.query("DELETE FROM processes WHERE id = $1", [id]);
}

export async function liveProcesses(pool: pg.Pool, now: number): Promise<LiveProcess[]> {
  const res = await pool.query<{ id: string; role: LiveProcess["role"]; host: string; pid: number; started_at: Date; last_seen: Date }>(
    "SELECT id, role, host, pid, started_at, last_seen FROM processes WHERE last_seen >= $1 ORDER BY last_seen DESC, id",
    [ts(now - LIVENESS_MS)],
  );
  return res.rows.map((r) => ({ ...r, started_at: r.started_at.getTime(), last_seen: r.last_seen.getTime() }));
}
