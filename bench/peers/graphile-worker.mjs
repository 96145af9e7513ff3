// graphile-worker: 3 chained jobs per run (job a adds job b, b adds c), one runner in this
// process, batched fetching (localQueue) and batched completions, LISTEN/NOTIFY wake-ups.
import { run, Logger } from "graphile-worker";
import { DB_URL, RUNS, throughput, latency, report, installedVersion, latches } from "./common.mjs";

const version = installedVersion("graphile-worker");
let finished = 0;
let allResolve;
const all = new Promise((r) => (allResolve = r));
const latch = latches();
const logger = new Logger(() => (level, message) => { if (level === "error") console.error(message); });
const runner = await run({
  connectionString: DB_URL,
  schema: "graphile_worker",
  concurrency: 16,
  maxPoolSize: 16,
  noHandleSignals: true,
  pollInterval: 2000,
  logger,
  preset: { worker: { localQueue: { size: 64 }, completeJobBatchDelay: 0, failJobBatchDelay: 0 } },
  taskList: {
    a: async (p, h) => { await h.addJob("b", p); },
    b: async (p, h) => { await h.addJob("c", p); },
    c: async (p) => {
      if (p.lat) latch.done(p.lat);
      else if (++finished === RUNS) allResolve();
    },
  },
});
const tp = await throughput((i) => runner.addJob("a", { i }), () => all);
const lat = await latency(async (k) => { const w = latch.wait(k); await runner.addJob("a", { lat: k }); await w; });
await runner.stop();
report("graphile-worker", version, { ...tp, ...lat, how: "3 chained jobs (a adds b adds c), concurrency 16, localQueue 64" });
process.exit(0);
