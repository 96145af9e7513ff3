// The fleet benchmark's graphile-worker anchor (bench/fleet.ts): one worker process running the
// same three-step work as Weft's fleet rows, three chained jobs (s1 adds s2, s2 adds s3), each
// job one HTTP POST of {k, t0} to the loopback sink. Jobs are added by a separate process
// (graphile-fleet-load.mjs). Settings as in the side-by-side runs: concurrency 16, localQueue 64,
// batched completions, LISTEN/NOTIFY wake-ups, polling every 100 ms. Prints {"ready":true} once
// running; runs until killed.
//   node graphile-fleet.mjs DATABASE_URL SINK_URL
import { run, Logger } from "graphile-worker";

const [dbUrl, sink] = process.argv.slice(2);
if (!dbUrl || !sink) throw new Error("usage: graphile-fleet.mjs DATABASE_URL SINK_URL");
if (!/^http:\/\/127\.0\.0\.1:\d+$/.test(sink)) throw new Error("loopback sink only");
const logger = new Logger(() => (level, message) => {
  if (level === "error") console.error(message);
});
/** One step: POST the run's payload to the sink; a failed call fails the job (graphile-worker retries it). */
const call = async (n, payload) => {
  const res = await fetch(`${sink}/s${n}`, { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify(payload) });
  await res.arrayBuffer();
  if (!res.ok) throw new Error(`sink answered ${res.status}`);
};
await run({
  connectionString: dbUrl,
  schema: "graphile_worker",
  concurrency: 16,
  maxPoolSize: 16,
  pollInterval: 100,
  logger,
  preset: { worker: { localQueue: { size: 64 }, completeJobBatchDelay: 0, failJobBatchDelay: 0 } },
  taskList: {
    s1: async (p, h) => {
      await call(1, p);
      await h.addJob("s2", p);
    },
    s2: async (p, h) => {
      await call(2, p);
      await h.addJob("s3", p);
    },
    s3: async (p) => {
      await call(3, p);
    },
  },
});
process.stdout.write('{"ready":true}\n');
