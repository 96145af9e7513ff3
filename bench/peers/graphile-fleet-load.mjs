// The fleet benchmark's load for graphile-worker: a separate process that adds N jobs "s1" with
// addJob (worker utils, the documented way to add jobs from outside a worker), C at a time, each
// carrying its key and send time; prints { sent, errors } as one JSON line. The same shape as
// bench/load-fleet.ts, which posts events to Weft; its pool holds 10 connections, as Weft's API
// process's pool does (the C adds in flight share them). RATE > 0 paces the adds as
// bench/load-fleet.ts paces its events (add i at i / RATE seconds, at most C outstanding).
//   node graphile-fleet-load.mjs DATABASE_URL PREFIX N C [RATE]
import { makeWorkerUtils } from "graphile-worker";

const [dbUrl, prefix, n = "2000", c = "32", r = "0"] = process.argv.slice(2);
if (!dbUrl || prefix === undefined) throw new Error("usage: graphile-fleet-load.mjs DATABASE_URL PREFIX N C [RATE]");
const total = Number(n);
const rate = Number(r);
const utils = await makeWorkerUtils({ connectionString: dbUrl, schema: "graphile_worker", maxPoolSize: 10 });
const start = Date.now();
let next = 0;
let sent = 0;
let errors = 0;
async function worker() {
  while (next < total) {
    const i = next++;
    if (rate > 0) {
      const at = start + (i * 1000) / rate;
      if (at > Date.now()) await new Promise((res) => setTimeout(res, at - Date.now()));
    }
    const k = `${prefix}${i}`;
    try {
      await utils.addJob("s1", { k, t0: Date.now() });
      sent++;
    } catch {
      errors++;
    }
  }
}
await Promise.all(Array.from({ length: Number(c) }, worker));
await utils.release();
process.stdout.write(`${JSON.stringify({ sent, errors })}\n`);
