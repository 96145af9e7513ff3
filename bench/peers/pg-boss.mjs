// pg-boss. runs and loop: 3 chained jobs per run (a queue per step; a's handler sends to b, b's to c),
// LISTEN/NOTIFY on, batched fetches, the shortest polling interval pg-boss allows (0.5 s).
// fanout: a job whose handler inserts one job per item (insert, 1,000 per call). timers: insert
// with startAfter. intake: send with an id derived from the event key (a repeat inserts nothing).
import { createHash } from "node:crypto";
import { PgBoss } from "pg-boss";
import { DB_URL, WORKLOAD, N, throughput, latency, closedLoop, fanout, timers, intake, report, installedVersion, latches } from "./common.mjs";

const version = installedVersion("pg-boss");
const boss = new PgBoss({ connectionString: DB_URL, schema: "pgboss", max: 16, useListenNotify: true, schedule: false, supervise: false });
boss.on("error", (e) => console.error(e));
await boss.start();
let finished = 0;
let allResolve;
const all = new Promise((r) => (allResolve = r));
const latch = latches();
const opts = { batchSize: 20, localConcurrency: 4, pollingIntervalSeconds: 0.5, notifyPollingIntervalSeconds: 0.5, burstWhenBatchFull: true };
/** A UUID from the event key (pg-boss job ids are UUIDs; the same key gives the same id). */
const keyId = (key) => {
  const h = createHash("sha256").update(key).digest("hex");
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-4${h.slice(13, 16)}-8${h.slice(17, 20)}-${h.slice(20, 32)}`;
};

let r;
if (WORKLOAD === "runs" || WORKLOAD === "loop") {
  for (const q of ["a", "b", "c"]) await boss.createQueue(q, { notify: true });
  await boss.work("a", opts, async (jobs) => {
    for (const j of jobs) await boss.send("b", j.data);
  });
  await boss.work("b", opts, async (jobs) => {
    for (const j of jobs) await boss.send("c", j.data);
  });
  await boss.work("c", opts, async (jobs) => {
    for (const j of jobs) {
      if (j.data.lat) latch.done(j.data.lat);
      else if (++finished === N) allResolve();
    }
  });
  const one = async (k) => {
    const w = latch.wait(k);
    await boss.send("a", { lat: k });
    await w;
  };
  const how = "3 chained jobs, useListenNotify, batchSize 20 × localConcurrency 4, polling 0.5 s";
  if (WORKLOAD === "loop") r = { ...(await closedLoop(one)), how };
  else {
    const tp = await throughput(
      (i) => boss.send("a", { i }),
      () => all,
    );
    r = { ...tp, ...(await latency(one)), how };
  }
} else if (WORKLOAD === "fanout") {
  for (const q of ["fan", "item"]) await boss.createQueue(q, { notify: true });
  await boss.work("fan", opts, async ([j]) => {
    for (let i = 0; i < j.data.n; i += 1000)
      await boss.insert(
        "item",
        Array.from({ length: Math.min(1000, j.data.n - i) }, (_, k) => ({ data: { i: i + k } })),
      );
  });
  // 50 items at a time, as the others: batches of 10 × 5 local workers.
  await boss.work("item", { ...opts, batchSize: 10, localConcurrency: 5 }, async (jobs) => {
    finished += jobs.length;
    if (finished >= N) allResolve();
  });
  r = {
    ...(await fanout(async () => {
      await boss.send("fan", { n: N });
      await all;
    })),
    how: "a job inserts one job per item (insert, 1,000 a call); batchSize 10 × localConcurrency 5",
  };
} else if (WORKLOAD === "timers") {
  await boss.createQueue("timer", { notify: true });
  let onFired = () => {};
  await boss.work("timer", { ...opts, batchSize: 100 }, async (jobs) => {
    for (const j of jobs) onFired(j.data.due);
  });
  r = {
    ...(await timers(async (_dues, fired, batches) => {
      onFired = fired;
      await batches(1000, (slice) =>
        boss.insert(
          "timer",
          slice.map((due) => ({ data: { due }, startAfter: new Date(due) })),
        ),
      );
    })),
    how: "a job per timer with startAfter (insert, 1,000 a call); polling 0.5 s, batchSize 100 × localConcurrency 4",
  };
} else if (WORKLOAD === "intake") {
  await boss.createQueue("event", { notify: true });
  let processed = 0;
  await boss.work("event", opts, async (jobs) => {
    processed += jobs.length;
  });
  r = {
    ...(await intake(
      (e) => boss.send("event", e, { id: keyId(e.key) }),
      () => processed,
    )),
    how: "node:http; send with a UUID derived from the event key as job id, acknowledged once it returns",
  };
} else throw new Error(`unknown workload ${WORKLOAD}`);
await boss.stop({ graceful: true, wait: true, timeout: 5000 });
report("pg-boss", version, r);
process.exit(0);
