// --only notify: what a wake-up notification costs a commit on PostgreSQL. Clients commit
// single-row INSERT transactions for a few seconds each, in three ways, with one process
// LISTENing (as a fleet worker does):
//   plain:        BEGIN; INSERT; COMMIT
//   notify after: the same, then `SELECT pg_notify(...)` as its own statement (its own transaction:
//                 how Weft announces, coalesced to one per turn of the event loop)
//   notify in tx: BEGIN; INSERT; SELECT pg_notify(...); COMMIT (one commit carries both)
// The "after" row is the worst case (one notification per commit); under load Weft sends one per
// event-loop turn, however many commits that turn made.

import pg from "pg";

export interface NotifyRow {
  variant: string;
  commitsPerS: number;
  perCommitUs: number;
}

const CHANNEL = "weft_bench_notify";

async function drive(url: string, seconds: number, clients: number, variant: "plain" | "after" | "in_tx"): Promise<number> {
  const pool = new pg.Pool({ connectionString: url, max: clients });
  await pool.query("CREATE TABLE IF NOT EXISTS bench_notify (id bigserial PRIMARY KEY, v int)");
  const end = Date.now() + seconds * 1000;
  let commits = 0;
  await Promise.all(
    Array.from({ length: clients }, async () => {
      const c = await pool.connect();
      try {
        while (Date.now() < end) {
          await c.query("BEGIN");
          await c.query("INSERT INTO bench_notify (v) VALUES (1)");
          if (variant === "in_tx") await c.query("SELECT pg_notify($1, 'claim')", [CHANNEL]);
          await c.query("COMMIT");
          if (variant === "after") await c.query("SELECT pg_notify($1, 'claim')", [CHANNEL]);
          commits++;
        }
      } finally {
        c.release();
      }
    }),
  );
  await pool.query("DROP TABLE bench_notify");
  await pool.end();
  return commits / seconds;
}

export async function benchNotify(url: string, seconds = 3, clients = 8): Promise<NotifyRow[]> {
  const listener = new pg.Client({ connectionString: url });
  await listener.connect();
  let heard = 0;
  listener.on("notification", () => heard++);
  await listener.query(`LISTEN ${CHANNEL}`);
  const rows: NotifyRow[] = [];
  try {
    for (const [variant, label] of [
      ["plain", "commit, no notification"],
      ["after", "commit, then pg_notify as its own statement"],
      ["in_tx", "pg_notify inside the commit"],
    ] as const) {
      const rate = await drive(url, seconds, clients, variant);
      rows.push({ variant: label, commitsPerS: Math.round(rate), perCommitUs: Math.round(1e6 / rate) });
    }
  } finally {
    await listener.end();
  }
  console.log(`  (the listener heard ${heard.toLocaleString("en-US")} notifications)`);
  return rows;
}
