// What a statement cost PostgreSQL, from its own statistics: tuples of a table read by index and
// (optionally) sequential scans, counted over all backends. Measure with a store of one connection
// and no other activity on the schema: the connection's statistics are flushed before each reading.

import type pg from "pg";

export async function tuplesRead(pool: pg.Pool, schema: string, table: string, opts: { seq?: boolean } = {}): Promise<number> {
  await pool.query("SELECT pg_stat_force_next_flush()");
  // The flush happens when the backend goes idle after that statement.
  await new Promise((r) => setTimeout(r, 50));
  await pool.query("SELECT pg_stat_clear_snapshot()");
  const { rows } = await pool.query<{ n: string }>(
    `SELECT (coalesce((SELECT sum(idx_tup_read) FROM pg_stat_user_indexes WHERE schemaname = $1 AND relname = $2), 0)
           + CASE WHEN $3 THEN coalesce((SELECT seq_tup_read FROM pg_stat_user_tables WHERE schemaname = $1 AND relname = $2), 0) ELSE 0 END)::text AS n`,
    [schema, table, opts.seq === true],
  );
  return Number(rows[0]!.n);
}
