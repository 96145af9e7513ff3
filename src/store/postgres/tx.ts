// One transaction on one pooled connection: commit on success, roll back on any error.

import type pg from "pg";

export async function tx<T>(pool: pg.Pool, fn: (c: pg.PoolClient) => Promise<T>): Promise<T> {
  const c = await pool.connect();
  // A connection that cannot even roll back (ended, or stuck past the client's query timeout) is
  // dropped from the pool rather than handed to the next caller.
  let broken: Error | undefined;
  try {
    await c.query("BEGIN");
    const out = await fn(c);
    await c.query("COMMIT");
    return out;
  } catch (err) {
    await c.query("ROLLBACK").catch((e: Error) => (broken = e));
    throw err;
  } finally {
    c.release(broken);
  }
}
