// What one system costs PostgreSQL while it works, measured from outside the system, the same way
// for every system: transactions committed on its own database (pg_stat_database.xact_commit) and
// the CPU time of the server processes serving that database (read from /proc/<pid>/stat, since
// pg_stat_statements needs shared_preload_libraries and so a server restart).
//
// Method. A monitor connection on another database samples, every SAMPLE_MS, the pids that
// pg_stat_activity lists for the measured database and each one's utime + stime from
// /proc/<pid>/stat. A backend's CPU counts from its reading at the start (or from zero if it
// connected later: its connection setup is part of the work) to its last reading; a backend that
// exits between samples loses at most SAMPLE_MS of its CPU. The server's shared processes (WAL
// writer, checkpointer, background writer) are read alongside and reported apart, since other
// databases on the server share them. Backends send their statistics at most once a second, so
// both ends wait SETTLE_MS for them before reading xact_commit. Linux only (/proc); elsewhere the
// CPU figures are NaN.

import { readFileSync } from "node:fs";
import pg from "pg";

const SAMPLE_MS = 200;
/** PostgreSQL 15 flushes a backend's pending statistics at most every second (PGSTAT_MIN_INTERVAL). */
export const SETTLE_MS = 1500;
/** Clock ticks per second of /proc's utime and stime (USER_HZ, 100 on Linux). */
const TICKS_PER_S = 100;

export interface PgCost {
  /** Transactions committed on the measured database during the window. */
  commits: number;
  /** CPU ms of the backends serving the measured database. */
  backendCpuMs: number;
  /** CPU ms of the server's shared processes (WAL writer, checkpointer, background writer) in the window. */
  sharedCpuMs: number;
  /** WAL bytes the whole server wrote in the window (pg_current_wal_lsn difference). */
  walBytes: number;
}

/** utime + stime of a process in ms, or null once it is gone. */
export function cpuMs(pid: number): number | null {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
    // Fields after the command name (which may hold spaces) start at the last ')'.
    const rest = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
    return ((Number(rest[11]) + Number(rest[12])) * 1000) / TICKS_PER_S; // fields 14 and 15 of the line
  } catch {
    return null;
  }
}

export interface PgMeter {
  /** Wait for pending statistics, then take the starting readings and begin sampling. */
  start(): Promise<void>;
  /** Wait for pending statistics, take the closing readings, stop sampling. */
  stop(): Promise<PgCost>;
  close(): Promise<void>;
}

/** A meter for database `db` on the server `adminUrl` points at (the monitor connects to adminUrl's own database). */
export async function pgMeter(adminUrl: string, db: string): Promise<PgMeter> {
  const mon = new pg.Client({ connectionString: adminUrl });
  await mon.connect();
  const backends = new Map<number, { first: number; last: number }>();
  const shared = new Map<number, { first: number; last: number }>();
  let startCommits = 0;
  let startLsn = "0/0";
  let running = false;
  let sampling: Promise<void> = Promise.resolve();

  const sample = async (firstFromZero: boolean) => {
    const { rows } = await mon.query<{ pid: number; mine: boolean }>(
      `SELECT pid, datname = $1 AS mine FROM pg_stat_activity
        WHERE datname = $1 OR backend_type IN ('walwriter', 'checkpointer', 'background writer')`,
      [db],
    );
    for (const { pid, mine } of rows) {
      const now = cpuMs(pid);
      if (now === null) continue;
      const into = mine ? backends : shared;
      const seen = into.get(pid);
      if (seen) seen.last = now;
      else into.set(pid, { first: firstFromZero && mine ? 0 : now, last: now });
    }
  };
  const readCommits = async () =>
    Number((await mon.query<{ n: string }>("SELECT xact_commit::text AS n FROM pg_stat_database WHERE datname = $1", [db])).rows[0]?.n ?? NaN);
  const readLsn = async () => (await mon.query<{ l: string }>("SELECT pg_current_wal_lsn()::text AS l")).rows[0]!.l;
  const settle = () => new Promise((r) => setTimeout(r, SETTLE_MS));
  const sum = (m: Map<number, { first: number; last: number }>) => [...m.values()].reduce((a, v) => a + v.last - v.first, 0);

  return {
    async start() {
      await settle();
      await mon.query("SELECT pg_stat_clear_snapshot()");
      startCommits = await readCommits();
      startLsn = await readLsn();
      await sample(false);
      running = true;
      sampling = (async () => {
        while (running) {
          await new Promise((r) => setTimeout(r, SAMPLE_MS));
          await sample(true).catch(() => {}); // a failed sample only loses resolution
        }
      })();
    },
    async stop() {
      running = false;
      await sampling;
      await sample(true); // the last CPU readings before the settle wait
      await settle();
      await mon.query("SELECT pg_stat_clear_snapshot()");
      const commits = (await readCommits()) - startCommits;
      const wal = Number((await mon.query<{ b: string }>("SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), $1)::text AS b", [startLsn])).rows[0]!.b);
      return { commits, backendCpuMs: sum(backends), sharedCpuMs: sum(shared), walBytes: wal };
    },
    async close() {
      running = false;
      await sampling;
      await mon.end();
    },
  };
}
