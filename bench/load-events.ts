// A second process that loads POST /v1/events on loopback with autocannon, each request with a
// fresh idempotency key, and prints autocannon's result as one JSON line (with the CPU seconds this
// process spent: a load generator near a full core would cap what it measures). Bounded in time.
// BATCH > 1 posts arrays of that many events (the batch form); `events` counts events sent.
//   tsx bench/load-events.ts URL TOKEN SECONDS CONNECTIONS [BATCH]

import autocannon, { type Request } from "autocannon";

const [url, token, seconds = "5", connections = "32", batchArg = "1"] = process.argv.slice(2);
if (!url || !token) throw new Error("usage: load-events.ts URL TOKEN [SECONDS] [CONNECTIONS] [BATCH]");
const batch = Number(batchArg);
if (!Number.isInteger(batch) || batch < 1) throw new Error("BATCH must be a positive whole number");
if (!/^http:\/\/(127\.0\.0\.1|localhost|\[::1\])(:\d+)?\//.test(url)) throw new Error("loopback targets only");
let n = 0;
/** A fresh key per event, subjects spread over 1,000. */
const oneEvent = () => ({ type: "bench.ping", key: `k${process.pid}-${n++}`, subject_id: `s${n % 1000}` });
const cpu0 = process.cpuUsage();
const result = await autocannon({
  url,
  method: "POST",
  duration: Number(seconds),
  connections: Number(connections),
  headers: { authorization: `Bearer ${token}`, "content-type": "application/json" },
  requests: [{ setupRequest: (req: Request) => ({ ...req, body: JSON.stringify(batch === 1 ? oneEvent() : Array.from({ length: batch }, oneEvent)) }) }],
});
const cpu = process.cpuUsage(cpu0);
process.stdout.write(
  JSON.stringify({
    requests: result.requests.total,
    batch,
    events: result.requests.total * batch,
    non2xx: result.non2xx,
    errors: result.errors,
    rps: result.requests.average,
    p50: result.latency.p50,
    p99: result.latency.p99,
    duration: result.duration,
    cpu_s: (cpu.user + cpu.system) / 1e6,
  }) + "\n",
);
