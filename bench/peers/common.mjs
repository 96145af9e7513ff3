import { readFileSync } from "node:fs";
// Shared by the peer benchmark processes (bench/peers/*.mjs). Each is spawned by
// `npm run bench -- --compare` with: <database url> <runs> <latency samples>. The database is
// fresh (created and dropped by the parent); the process prints one JSON line and exits.
export const [DB_URL, RUNS_S, SAMPLES_S] = process.argv.slice(2);
export const RUNS = Number(RUNS_S ?? 5000);
export const SAMPLES = Number(SAMPLES_S ?? 200);
export const BATCH = 50; // runs started concurrently, as Weft's enroll phase does

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

export function report(peer, version, r) {
  process.stdout.write(JSON.stringify({ peer, version, node: process.version, runs: RUNS, samples: SAMPLES, ...r }) + "\n");
}

/** A latch keyed by run: resolves when the run's last step reports. */
export function latches() {
  const waiting = new Map();
  return {
    wait(key) { return new Promise((resolve) => waiting.set(key, resolve)); },
    done(key) { const r = waiting.get(key); if (r) { waiting.delete(key); r(); } },
  };
}

/** The installed version of a package (read from the project's node_modules; not all export package.json). */
export function installedVersion(name) {
  return JSON.parse(readFileSync(new URL(`../../node_modules/${name}/package.json`, import.meta.url), "utf8")).version;
}
