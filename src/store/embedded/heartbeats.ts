// Liveness of the fleet on SQLite: one row per process, upserted by its heartbeat.

import type Database from "better-sqlite3";
import { LIVENESS_MS, PROCESS_FORGET_MS, type LiveProcess, type ProcessBeat } from "../../engine/store.js";

export function heartbeat(db: Database.Database, p: ProcessBeat, now: number): void {
  db.transaction(() => {
    db.prepare(`INSERT INTO processes (id, role, host, pid, started_at, last_seen) VALUES (?, ?, ?, ?, ?, ?)
        ON CONFLICT (id) DO UPDATE SET last_seen = excluded.last_seen`).run(p.id, p.role, p.host, p.pid, p.started_at, now);
    db.prepare("DELETE FROM processes WHERE last_seen < ?").run(now - PROCESS_FORGET_MS);
  }).immediate();
}

export function forgetProcess(db: Database.Database, id: string): void {
  db.prepare("DELETE FROM processes WHERE id = ?").run(id);
}

export function liveProcesses(db: Database.Database, now: number): LiveProcess[] {
  return db
    .prepare("SELECT id, role, host, pid, started_at, last_seen FROM processes WHERE last_seen >= ? ORDER BY last_seen DESC, id")
    .all(now - LIVENESS_MS) as LiveProcess[];
}
