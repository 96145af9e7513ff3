// Weft through the same harness as the peers, for the workloads where the process itself is
// measured (timers: memory while 100,000 runs are parked). Built code (dist/), as `npm start` runs
// it. First argument: a PostgreSQL URL, or "embedded" for a SQLite file in a fresh folder.
// loop: three checkpointed no-op steps per run, closed loop (each run enrolled alone, its end
// seen on the engine's run:finished event).
// timers: a run per timer (batch enrollment, MAX_BATCH subjects per call, one insert statement each)
// into delay until context.due → a custom action declared fast; the engine's default runner settings.
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Engine, DEFAULT_WORKSPACE, EmbeddedStore, MAX_BATCH, PostgresStore } from "../../dist/index.js";
import { DB_URL, WORKLOAD, closedLoop, timers, report } from "./common.mjs";

const dir = DB_URL === "embedded" ? mkdtempSync(join(tmpdir(), "weft-bench-")) : null;
const store = dir ? new EmbeddedStore({ file: join(dir, "weft.db") }) : new PostgresStore({ url: DB_URL, poolSize: 8 });
await store.migrate();
const engine = new Engine({ store, httpAllow: ["127.0.0.1"] });
let onFired = () => {};
engine.registerAction({
  kind: "fired",
  // It only records the lateness in this process: declared fast with no permission, so a timer
  // fires in one commit (README: custom actions).
  class: "fast",
  handler: (input) => {
    onFired(Number(input.due));
    return { ok: true };
  },
});
engine.registerAction({ kind: "noop", handler: () => ({ ok: true }) });
await engine.start();

/** Runs ended before anyone waited for them, and the waits for runs not ended yet. */
const ended = new Set();
const waiting = new Map();
engine.events.on("run:finished", (e) => {
  const w = waiting.get(e.run_id);
  if (w) {
    waiting.delete(e.run_id);
    w();
  } else ended.add(e.run_id);
});
const untilEnded = (runId) => {
  if (ended.delete(runId)) return Promise.resolve();
  return new Promise((resolve) => waiting.set(runId, resolve));
};

let r;
if (WORKLOAD === "loop") {
  const a = await engine.createAutomation(DEFAULT_WORKSPACE, {
    key: "bench-three",
    name: "Three checkpointed steps",
    root: "a",
    reentry: { policy: "allow_concurrent" },
    nodes: [
      { key: "a", kind: "noop", config: {} },
      { key: "b", kind: "noop", config: {} },
      { key: "c", kind: "noop", config: {} },
    ],
    edges: [
      { from: "a", port: "next", to: "b" },
      { from: "b", port: "next", to: "c" },
    ],
  });
  r = {
    ...(await closedLoop(async (k) => {
      const { run } = await engine.enroll(DEFAULT_WORKSPACE, a.id, { subject_id: k });
      await untilEnded(run.id);
    })),
    how: "enroll one run, wait for its run:finished, 50 such loops at once; default runner settings",
  };
} else if (WORKLOAD === "timers") {
  const a = await engine.createAutomation(DEFAULT_WORKSPACE, {
    key: "timers",
    name: "timers",
    root: "wait",
    reentry: { policy: "allow_concurrent" },
    nodes: [
      { key: "wait", kind: "delay", config: { until: "{{ context.due }}" } },
      { key: "fired", kind: "fired", config: { due: "{{ context.due }}" } },
    ],
    edges: [{ from: "wait", port: "next", to: "fired" }],
  });
  r = {
    ...(await timers(async (_dues, fired, batches) => {
      onFired = fired;
      // Parked through batch enrollment: one call and one insert statement per MAX_BATCH timers.
      await batches(MAX_BATCH, (slice, i) =>
        engine.enrollMany(
          DEFAULT_WORKSPACE,
          a.id,
          slice.map((due, j) => ({ subject_id: `t${i + j}`, context_overrides: { due } })),
        ),
      );
    })),
    how: `batch enrollment (${MAX_BATCH} per call, one insert statement each) into delay until context.due → a custom action declared fast (no permissions); default runner settings`,
  };
} else throw new Error(`unknown workload ${WORKLOAD}`);
await engine.stop();
await store.close();
if (dir) rmSync(dir, { recursive: true, force: true });
// No version: the rows are named as Weft's other rows (this is the code being benchmarked).
report(dir ? "Weft, embedded (SQLite) store" : "Weft, PostgreSQL store", undefined, r);
process.exit(0);
