// pg-boss: 3 chained jobs per run (a queue per step; a's handler sends to b, b's to c),
// LISTEN/NOTIFY on, batched fetches, the shortest polling interval pg-boss allows (0.5 s).
import { PgBoss } from "pg-boss";
import { DB_URL, RUNS, throughput, latency, report, installedVersion, latches } from "./common.mjs";

const version = installedVersion("pg-boss");
const boss = new PgBoss({ connectionString: DB_URL, schema: "pgboss", max: 16, useListenNotify: true, schedule: false, supervise: false });
boss.on("error", (e) => console.error(e));
await boss.start();
for (const q of ["a", "b", "c"]) await boss.createQueue(q, { notify: true });
let finished = 0;
let allResolve;
const all = new Promise((r) => (allResolve = r));
const latch = latches();
const opts = { batchSize: 20, localConcurrency: 4, pollingIntervalSeconds: 0.5, notifyPollingIntervalSeconds: 0.5, burstWhenBatchFull: true };
await boss.work("a", opts, async (jobs) => { for (const j of jobs) await boss.send("b", j.data); });
await boss.work("b", opts, async (jobs) => { for (const j of jobs) await boss.send("c", j.data); });
await boss.work("c", opts, async (jobs) => {
  for (const j of jobs) {
    if (j.data.lat) latch.done(j.data.lat);
    else if (++finished === RUNS) allResolve();
  }
});
const tp = await throughput((i) => boss.send("a", { i }), () => all);
const lat = await latency(async (k) => { const w = latch.wait(k); await boss.send("a", { lat: k }); await w; });
await boss.stop({ graceful: true, wait: true, timeout: 5000 });
report("pg-boss", version, { ...tp, ...lat, how: "3 chained jobs, useListenNotify, batchSize 20 × localConcurrency 4, polling 0.5 s" });
process.exit(0);
