// Crash tests: worker processes (`weft serve --role worker`) are SIGKILLed at random moments and
// at each named crash point; every run must still complete, every effect must reach the sink
// under its idempotency key, and no step may be committed twice. The test process only writes
// (an Engine with noRunner) and reads the store; the children do all the running.

import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { CRASH_POINTS as ALL_POINTS } from "../src/engine/crashpoints.js";
import { Engine } from "../src/engine/engine.js";
import type { Run, Store } from "../src/engine/store.js";
import { isTerminal } from "../src/model/run-status.js";
import { WS } from "./helpers/engine.js";
import { Sink } from "./helpers/sink.js";
import { listAll, makeStore, STORE_KINDS, type TestStore } from "./helpers/stores.js";
import { sleep } from "./helpers/wait.js";
import { kill, killAll, startWorker as spawnWorker, type Worker } from "./helpers/workers.js";

// Workers are killed at random with up to 200 runs in flight and 1 s leases (which lapse on a
// loaded machine): a run in flight at three kills or lapses in a row, with no commit between, is
// what quarantine (WEFT_QUARANTINE_AFTER) ends on purpose; this file is about resuming, so the
// limit is out of reach here (quarantine has its own test, quarantine.test.ts).
const startWorker = (ts: TestStore, extraEnv: Record<string, string> = {}): Worker =>
  spawnWorker(ts, { WEFT_LEASE_MS: String(LEASE_MS), WEFT_QUARANTINE_AFTER: "1000", ...extraEnv });

const LEASE_MS = 1000;
const HTTP_NODES = ["a", "b", "c"] as const;
const ALL_NODES = [...HTTP_NODES, "done"] as const;
const RUNNER_POINTS = ALL_POINTS.filter((p) => p.startsWith("runner:"));

const randInt = (lo: number, hi: number) => lo + Math.floor(Math.random() * (hi - lo + 1));

// ---------- store reads ----------

/** Poll every ~200 ms until all `expected` runs of the automation are terminal, or the deadline. */
async function waitAllTerminal(
  store: Store,
  automationId: string,
  expected: number,
  deadline: number,
  stop?: () => boolean,
): Promise<{ ok: boolean; runs: Run[] }> {
  for (;;) {
    const runs = await listAll(store, automationId);
    if (runs.length === expected && runs.every((r) => isTerminal(r.status))) return { ok: true, runs };
    if (Date.now() >= deadline || stop?.()) return { ok: false, runs };
    await sleep(200);
  }
}

function describeStuck(runs: Run[]): string {
  const stuck = runs.filter((r) => !isTerminal(r.status));
  return (
    stuck
      .slice(0, 50)
      .map(
        (r) =>
          `${r.id} status=${r.status} node=${r.current_node_key} due_at=${r.due_at} lease_owner=${r.lease_owner} rev=${r.rev} interruptions=${r.interruptions}`,
      )
      .join("\n") + (stuck.length > 50 ? `\n… and ${stuck.length - 50} more` : "")
  );
}

// ---------- the automation and the checks ----------

function threeCalls(key: string, sinkUrl: string) {
  const retry = { max_attempts: 10, initial_ms: 20, max_ms: 200 };
  const call = (k: string) => ({ key: k, kind: "http_request", retry, config: { method: "POST", url: `${sinkUrl}/${k}`, body: { step: k } } });
  return {
    key,
    name: `crash test ${key}`,
    reentry: { policy: "allow_concurrent" },
    root: "a",
    nodes: [call("a"), call("b"), call("c"), { key: "done", kind: "end" }],
    edges: [
      { from: "a", port: "next", to: "b" },
      { from: "b", port: "next", to: "c" },
      { from: "c", port: "next", to: "done" },
    ],
  };
}

interface Verdict {
  notCompleted: string[];
  missingKeys: string[];
  badStepCounts: string[];
}

/** Every run completed, every effect delivered under its key, exactly one succeeded step row per node. */
async function verify(engine: Engine, sink: Sink, runs: Run[]): Promise<Verdict> {
  const v: Verdict = { notCompleted: [], missingKeys: [], badStepCounts: [] };
  for (const r of runs) {
    const run = await engine.getRun(WS, r.id);
    if (run.status !== "completed") v.notCompleted.push(`${run.id}: ${run.status} (${run.exit_reason})`);
    for (const n of HTTP_NODES) {
      const key = `${run.id}/${n}/1`;
      if (!((sink.succeeded.get(key) ?? 0) >= 1)) v.missingKeys.push(key);
    }
    const steps = await engine.listSteps(WS, run.id);
    for (const n of ALL_NODES) {
      const ok = steps.filter((s) => s.node_key === n && s.outcome === "succeeded");
      if (ok.length !== 1 || ok[0]!.idempotency_key !== `${run.id}/${n}/1`) {
        v.badStepCounts.push(
          `${run.id}/${n}: ${ok.length} succeeded row(s) [${steps
            .filter((s) => s.node_key === n)
            .map((s) => `${s.outcome}#${s.attempt}`)
            .join(", ")}]`,
        );
      }
    }
  }
  return v;
}

/** Requests beyond the first per key (each is answered 2xx, so beyond the first success), and 2xx beyond the first. */
function duplicates(sink: Sink): { requests: number; successes: number } {
  const perKey = new Map<string, number>();
  for (const r of sink.requests) if (r.key !== undefined) perKey.set(r.key, (perKey.get(r.key) ?? 0) + 1);
  let requests = 0;
  for (const n of perKey.values()) requests += n - 1;
  let successes = 0;
  for (const n of sink.succeeded.values()) successes += n - 1;
  return { requests, successes };
}

// ---------- the tests ----------

describe.each(STORE_KINDS)("crash recovery (%s store)", (kind) => {
  let ts: TestStore;
  let engine: Engine;
  let sink: Sink | null = null;

  beforeAll(async () => {
    ts = await makeStore(kind);
    engine = new Engine({ store: ts.store, noRunner: true });
    await engine.start();
  });

  afterEach(async () => {
    await killAll();
    await sink?.stop();
    sink = null;
  });

  afterAll(async () => {
    await killAll();
    await engine?.stop();
    await ts?.destroy();
  });

  async function startSink(): Promise<Sink> {
    const s = new Sink();
    // a small random delay so that kills land while steps are in flight
    s.reply = () => ({ status: 200, body: { ok: true }, delayMs: randInt(0, 30) });
    sink = await s.start();
    return s;
  }

  it("a run survives its worker being killed with SIGKILL at random moments", async () => {
    const s = await startSink();
    const aut = await engine.createAutomation(WS, threeCalls(`kill-random-${kind}`, s.url));
    const RUNS = 200;
    const ids: string[] = [];
    for (let i = 0; i < RUNS; i++) ids.push((await engine.enroll(WS, aut.id, {})).run.id);

    const deadline = Date.now() + 240_000;
    let finished = false;
    let final: Run[] = [];
    const watcher = waitAllTerminal(ts.store, aut.id, RUNS, deadline).then((res) => {
      finished = true;
      final = res.runs;
      return res.ok;
    });

    /** Resolves once the sink has seen more than `n` requests (or after `ms`, or when all runs are done). */
    const requestsBeyond = async (n: number, ms: number) => {
      const until = Date.now() + ms;
      while (s.requests.length <= n && Date.now() < until && !finished) await sleep(10);
    };

    let kills = 0;
    let w = startWorker(ts);
    while (!finished) {
      // A worker needs about a second to start (tsx), more on a busy machine. Its random lifetime
      // counts from its first request to the sink, so that every worker claims and drives runs
      // (and the kill lands mid-step) rather than dying before it did anything.
      const seen = s.requests.length;
      const up = await Promise.race([w.ready, watcher.then(() => null)]);
      if (up === null) break;
      if (!up) throw new Error(`worker exited on its own before running:\n${w.output()}`);
      await requestsBeyond(seen, 5_000);
      // Its lifetime is a random amount of work (150–450 more requests), not of time: a fast
      // machine finishes everything in well under a second, and the kill must land mid-flight.
      await requestsBeyond(s.requests.length + randInt(150, 450), 2_000);
      if (finished) break;
      if (w.child.exitCode !== null || w.child.signalCode !== null) throw new Error(`worker exited on its own:\n${w.output()}`);
      await kill(w);
      kills++;
      w = startWorker(ts);
    }
    const ok = await watcher;
    await killAll();
    if (!ok) throw new Error(`runs still not terminal after 4 minutes and ${kills} kills:\n${describeStuck(final)}`);

    const verdict = await verify(engine, s, final);
    const interrupted = final.filter((r) => r.interruptions > 0);
    const dup = duplicates(s);
    console.log(
      `[crash ${kind}] kills=${kills} runs=${final.length} sink_requests=${s.requests.length} ` +
        `duplicate_deliveries=${dup.requests} (2xx beyond first per key: ${dup.successes}) ` +
        `runs_interrupted=${interrupted.length} interruptions_total=${final.reduce((n, r) => n + r.interruptions, 0)} ` +
        // one worker at a time, so a run can be interrupted at most once per kill (more means a worker re-claimed its own run)
        `interruptions_max=${Math.max(...final.map((r) => r.interruptions))}`,
    );
    expect(final.map((r) => r.id).sort()).toEqual([...ids].sort());
    expect(verdict.notCompleted).toEqual([]);
    expect(verdict.missingKeys).toEqual([]);
    expect(verdict.badStepCounts).toEqual([]);
    expect(kills).toBeGreaterThan(0);
    expect(interrupted.length).toBeGreaterThan(0);
  }, 300_000);

  it.each(RUNNER_POINTS)(
    "crash at each named crash point resumes without loss: %s",
    async (point) => {
      const s = await startSink();
      const aut = await engine.createAutomation(WS, threeCalls(`crash-${point.replace(/[^a-z]+/g, "-")}-${kind}`, s.url));
      const RUNS = 10;
      const ids: string[] = [];
      for (let i = 0; i < RUNS; i++) ids.push((await engine.enroll(WS, aut.id, {})).run.id);

      const crasher = startWorker(ts, { WEFT_CRASH_POINT: point, WEFT_CRASH_AFTER: "3" });
      const exit = await Promise.race([crasher.exited, sleep(30_000).then(() => null)]);
      if (exit === null) throw new Error(`worker with WEFT_CRASH_POINT=${point} did not die within 30 s:\n${crasher.output()}`);
      expect(exit.signal, crasher.output()).toBe("SIGKILL");
      const before = await listAll(ts.store, aut.id);
      expect(
        before.every((r) => isTerminal(r.status)),
        "the crash should leave work undone",
      ).toBe(false);
      const requestsAtCrash = s.requests.length;

      const healer = startWorker(ts);
      const res = await waitAllTerminal(ts.store, aut.id, RUNS, Date.now() + 60_000, () => healer.child.exitCode !== null || healer.child.signalCode !== null);
      if (!res.ok) throw new Error(`runs not terminal after the crash at ${point}:\n${describeStuck(res.runs)}\n${healer.output()}`);
      await kill(healer);

      const verdict = await verify(engine, s, res.runs);
      const dup = duplicates(s);
      const interrupted = res.runs.filter((r) => r.interruptions > 0);
      console.log(
        `[crash ${kind} ${point}] runs=${res.runs.length} sink_requests=${s.requests.length} (at crash: ${requestsAtCrash}) ` +
          `duplicate_deliveries=${dup.requests} runs_interrupted=${interrupted.length} interruptions=${res.runs.map((r) => r.interruptions).join(",")}`,
      );
      expect(res.runs.map((r) => r.id).sort()).toEqual([...ids].sort());
      expect(verdict.notCompleted).toEqual([]);
      expect(verdict.missingKeys).toEqual([]);
      expect(verdict.badStepCounts).toEqual([]);
      // The crash left at least one run mid-flight (claimed, status running), so its resumption is an interruption.
      expect(interrupted.length).toBeGreaterThan(0);
      // At these two points the step's effect had reached the sink but was not committed: it is re-sent.
      if (point !== "runner:after-checkpoint") expect(dup.requests).toBeGreaterThan(0);
    },
    120_000,
  );
});
