// graphile-worker. runs and loop: 3 chained jobs per run (job a adds job b, b adds c), one runner
// in this process, batched fetching (localQueue) and batched completions, LISTEN/NOTIFY wake-ups.
// fanout: a job that adds one job per item with addJobs (1,000 per call). timers: addJobs with
// runAt. intake: addJob with the event key as jobKey. Polling (for jobs due later) every 100 ms.
import { run, makeWorkerUtils, Logger } from "graphile-worker";
import { DB_URL, WORKLOAD, N, throughput, latency, closedLoop, fanout, timers, intake, report, installedVersion, latches } from "./common.mjs";

const version = installedVersion("graphile-worker");
let finished = 0;
let allResolve;
const all = new Promise((r) => (allResolve = r));
const latch = latches();
let onFired = () => {};
let processed = 0;
const logger = new Logger(() => (level, message) => {
  if (level === "error") console.error(message);
});
const runner = await run({
  connectionString: DB_URL,
  schema: "graphile_worker",
  concurrency: 16,
  maxPoolSize: 16,
  noHandleSignals: true,
  pollInterval: 100,
  logger,
  preset: { worker: { localQueue: { size: 64 }, completeJobBatchDelay: 0, failJobBatchDelay: 0 } },
  taskList: {
    a: async (p, h) => {
      await h.addJob("b", p);
    },
    b: async (p, h) => {
      await h.addJob("c", p);
    },
    c: async (p) => {
      if (p.lat) latch.done(p.lat);
      else if (++finished === N) allResolve();
    },
    fan: async (p, h) => {
      for (let i = 0; i < p.n; i += 1000) {
        await h.addJobs(Array.from({ length: Math.min(1000, p.n - i) }, (_, j) => ({ identifier: "item", payload: { i: i + j } })));
      }
    },
    item: async () => {
      if (++finished === N) allResolve();
    },
    timer: async (p) => {
      onFired(p.due);
    },
    event: async () => {
      processed++;
    },
  },
});

let r;
if (WORKLOAD === "runs") {
  const tp = await throughput(
    (i) => runner.addJob("a", { i }),
    () => all,
  );
  const lat = await latency(async (k) => {
    const w = latch.wait(k);
    await runner.addJob("a", { lat: k });
    await w;
  });
  r = { ...tp, ...lat, how: "3 chained jobs (a adds b adds c), concurrency 16, localQueue 64" };
} else if (WORKLOAD === "loop") {
  r = {
    ...(await closedLoop(async (k) => {
      const w = latch.wait(k);
      await runner.addJob("a", { lat: k });
      await w;
    })),
    how: "3 chained jobs, concurrency 16, localQueue 64",
  };
} else if (WORKLOAD === "fanout") {
  r = {
    ...(await fanout(async () => {
      await runner.addJob("fan", { n: N });
      await all;
    })),
    how: "a job adds one job per item (addJobs, 1,000 a call); concurrency 16",
  };
} else if (WORKLOAD === "timers") {
  const utils = await makeWorkerUtils({ connectionString: DB_URL, schema: "graphile_worker" });
  r = {
    ...(await timers(async (_dues, fired, batches) => {
      onFired = fired;
      await batches(1000, (slice) => utils.addJobs(slice.map((due) => ({ identifier: "timer", payload: { due }, runAt: new Date(due) }))));
    })),
    how: "a job per timer with runAt (addJobs, 1,000 a call); pollInterval 100 ms",
  };
  await utils.release();
} else if (WORKLOAD === "intake") {
  r = {
    ...(await intake(
      (e) => runner.addJob("event", e, { jobKey: e.key }),
      () => processed,
    )),
    how: "node:http; addJob with the event key as jobKey, acknowledged once it returns",
  };
} else throw new Error(`unknown workload ${WORKLOAD}`);
await runner.stop();
report("graphile-worker", version, r);
process.exit(0);
