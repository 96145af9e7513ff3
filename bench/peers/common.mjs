import { readFileSync } from "node:fs";
import { createServer } from "node:http";
import { createInterface } from "node:readline";
// Shared by the peer benchmark processes (bench/peers/*.mjs). Each is spawned by
// `npm run bench -- --compare` with: <database url> <workload> <n> [<extra>], on a fresh database
// (created and dropped by the parent), prints one JSON line of figures and exits. Workloads:
//   runs N SAMPLES   N three-step no-op runs (runs/s, steps/s), then SAMPLES single runs (p50/p99)
//   loop N           N three-step no-op runs in a closed loop, IN_FLIGHT in flight (a new one starts
//                    as each finishes: work processed while it is enqueued), metered by the parent
//                    (PostgreSQL commits and CPU) through the stdin handshake of `metered`
//   fanout N         one run whose work fans out over N items, 50 at a time (items/s)
//   timers N LEAD_MS N runs parked on timers due at random in [start + LEAD_MS, start + LEAD_MS + 60 s]:
//                    lateness p50/p99/max of each firing, and the process's memory while parked
//   intake           an HTTP endpoint (POST JSON {type, key, ...}) that acknowledges once the event's
//                    run is durably stored, keyed by the event's key so a repeat makes no second
//                    run; prints {"listening": url}, is loaded by the parent, then on stdin's end
//                    waits for the started runs to finish and prints its figures
export const [DB_URL, WORKLOAD = "runs", N_S, EXTRA_S] = process.argv.slice(2);
export const N = Number(N_S ?? 5000);
export const RUNS = N;
export const SAMPLES = Number(EXTRA_S ?? 200);
export const LEAD_MS = Number(EXTRA_S ?? 60_000);
export const BATCH = 50; // runs started concurrently, as Weft's enroll phase does
export const WINDOW_MS = 60_000; // timers fire within one minute
export const IN_FLIGHT = 50; // runs kept in flight by the closed loop

/** Lines from stdin, one at a time (the parent's handshakes). */
let stdinLines;
function nextStdinLine() {
  if (!stdinLines) {
    const queued = [];
    const waiting = [];
    createInterface({ input: process.stdin }).on("line", (l) => (waiting.length ? waiting.shift()(l) : queued.push(l)));
    stdinLines = () => (queued.length ? Promise.resolve(queued.shift()) : new Promise((r) => waiting.push(r)));
  }
  return stdinLines();
}

/**
 * Run `fn` between the parent's meter readings: print {"meter":"start"} and wait for the parent's
 * line (it has read PostgreSQL's counters), run, print {"meter":"stop"} and wait again (it has
 * read them again while this process's connections are still open).
 */
export async function metered(fn) {
  process.stdout.write('{"meter":"start"}\n');
  await nextStdinLine();
  const r = await fn();
  process.stdout.write('{"meter":"stop"}\n');
  await nextStdinLine();
  return r;
}

/**
 * Closed loop: N runs, IN_FLIGHT at a time, a new one started as each finishes; `one(key)` starts
 * a run and resolves when its third step is done. IN_FLIGHT warm-up runs first, not counted and
 * not metered. runs/s over the metered window.
 */
export async function closedLoop(one) {
  await Promise.all(Array.from({ length: IN_FLIGHT }, (_, i) => one(`warm-${i}`)));
  return metered(async () => {
    let next = 0;
    const t0 = performance.now();
    await Promise.all(
      Array.from({ length: Math.min(IN_FLIGHT, N) }, async () => {
        while (next < N) await one(`loop-${next++}`);
      }),
    );
    const secs = (performance.now() - t0) / 1000;
    return { loopRunsPerS: N / secs, loopStepsPerS: (N * 3) / secs, loopSeconds: secs, inFlight: IN_FLIGHT };
  });
}

export function pct(xs, p) {
  if (xs.length === 0) return NaN;
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor((p / 100) * s.length))];
}

/** Start RUNS runs BATCH at a time, then wait until all have finished; runs/s over the whole. */
export async function throughput(start, allDone) {
  const t0 = performance.now();
  for (let i = 0; i < RUNS; i += BATCH) {
    await Promise.all(Array.from({ length: Math.min(BATCH, RUNS - i) }, (_, j) => start(i + j)));
  }
  await allDone();
  const secs = (performance.now() - t0) / 1000;
  return { runsPerS: RUNS / secs, stepsPerS: (RUNS * 3) / secs, seconds: secs };
}

/** One run at a time, start → its third step done, SAMPLES times (after 10 warm-up runs). */
export async function latency(one) {
  for (let i = 0; i < 10; i++) await one(`w${i}`);
  const xs = [];
  for (let i = 0; i < SAMPLES; i++) {
    const t = performance.now();
    await one(`l${i}`);
    xs.push(performance.now() - t);
  }
  return { p50: pct(xs, 50), p99: pct(xs, 99) };
}

/** Fan-out: `start()` begins the one run and resolves when all N items are done. */
export async function fanout(start) {
  const t0 = performance.now();
  await start();
  const secs = (performance.now() - t0) / 1000;
  return { items: N, itemsPerS: N / secs, seconds: secs };
}

/** The process's resident memory, sampled every 250 ms: peak, and the last reading on demand. */
export function memorySampler() {
  let peak = process.memoryUsage().rss;
  const t = setInterval(() => {
    peak = Math.max(peak, process.memoryUsage().rss);
  }, 250);
  t.unref();
  return { now: () => process.memoryUsage().rss / 2 ** 20, peak: () => Math.max(peak, process.memoryUsage().rss) / 2 ** 20, stop: () => clearInterval(t) };
}

/** The due times of N timers (epoch ms): uniform over one minute starting LEAD_MS from now. */
export function dueTimes() {
  const start = Date.now() + LEAD_MS;
  return Array.from({ length: N }, () => start + Math.floor(Math.random() * WINDOW_MS));
}

/**
 * Timers: `create(dues, fired, batches)` parks one run per due time (epoch ms) and resolves when
 * all are stored, going through `batches(size, fn)` so that creation stops early when it cannot
 * finish before the first timer is due; the peer calls `fired(due)` when a run wakes. Resolves
 * once all have fired (or 5 minutes past the window), with lateness, memory and whether every
 * timer was parked before the first was due (if not: how long parking all would have taken, so
 * the parent can run it again with that much lead).
 */
export async function timers(create) {
  const mem = memorySampler();
  const dues = dueTimes();
  const firstDue = Math.min(...dues);
  const late = [];
  let resolveAll;
  const all = new Promise((r) => (resolveAll = r));
  const fired = (due) => {
    late.push(Date.now() - due);
    if (late.length === N) resolveAll();
  };
  let created = 0;
  const batches = async (size, fn) => {
    for (let i = 0; i < dues.length; i += size) {
      if (Date.now() >= firstDue - 1000) return; // too slow to park them all in time: stop here
      const slice = dues.slice(i, i + size);
      await fn(slice, i);
      created += slice.length;
    }
  };
  const t0 = performance.now();
  await create(dues, fired, batches);
  const createdS = (performance.now() - t0) / 1000;
  if (created < N) {
    mem.stop();
    return { timers: N, fired: late.length, parkedInTime: false, createdS: (createdS * N) / Math.max(1, created), created };
  }
  const parkedInTime = Date.now() < firstDue;
  // Memory while parked: just before the first timer is due.
  await new Promise((r) => setTimeout(r, Math.max(0, firstDue - Date.now() - 500)));
  const rssParked = mem.now();
  await Promise.race([all, new Promise((r) => setTimeout(r, Math.max(0, Math.max(...dues) - Date.now()) + 300_000))]);
  mem.stop();
  return {
    timers: N,
    fired: late.length,
    createdS,
    parkedInTime,
    lateP50: pct(late, 50),
    lateP99: pct(late, 99),
    lateMax: late.length ? Math.max(...late) : NaN,
    rssParkedMB: rssParked,
    rssPeakMB: mem.peak(),
  };
}

/**
 * Intake: an HTTP server on loopback; `accept(event)` stores the event's run durably (keyed by
 * `event.key`) before the 202 goes out. Prints {"listening": url}; on stdin's end stops taking
 * requests and waits (up to 2 minutes) until `processed()` reaches the number accepted.
 */
export async function intake(accept, processed) {
  let accepted = 0;
  let failed = 0;
  const server = createServer((req, res) => {
    let body = "";
    req.setEncoding("utf8");
    req.on("data", (c) => (body += c));
    req.on("end", async () => {
      try {
        const e = JSON.parse(body);
        if (typeof e.type !== "string" || typeof e.key !== "string") throw new Error("type and key are required");
        await accept(e);
        accepted++;
        res.writeHead(202, { "content-type": "application/json" }).end('{"accepted":true}');
      } catch (err) {
        failed++;
        res.writeHead(500, { "content-type": "application/json" }).end(JSON.stringify({ error: String(err?.message ?? err) }));
      }
    });
  });
  await new Promise((r) => server.listen(0, "127.0.0.1", r));
  process.stdout.write(JSON.stringify({ listening: `http://127.0.0.1:${server.address().port}/v1/events` }) + "\n");
  await new Promise((r) => createInterface({ input: process.stdin }).on("close", r));
  await new Promise((r) => server.close(r));
  const t0 = performance.now();
  while (processed() < accepted && performance.now() - t0 < 120_000) await new Promise((r) => setTimeout(r, 50));
  return { accepted, failed, processed: processed(), drainS: (performance.now() - t0) / 1000 };
}

export function report(peer, version, r) {
  process.stdout.write(JSON.stringify({ peer, version, node: process.version, workload: WORKLOAD, n: N, runs: RUNS, samples: SAMPLES, ...r }) + "\n");
}

/** A latch keyed by run: resolves when the run's last step reports. */
export function latches() {
  const waiting = new Map();
  return {
    wait(key) {
      return new Promise((resolve) => waiting.set(key, resolve));
    },
    done(key) {
      const r = waiting.get(key);
      if (r) {
        waiting.delete(key);
        r();
      }
    },
  };
}

/** The installed version of a package (read from bench/node_modules; not all export package.json). */
export function installedVersion(name) {
  return JSON.parse(readFileSync(new URL(`../node_modules/${name}/package.json`, import.meta.url), "utf8")).version;
}
