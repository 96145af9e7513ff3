// Runs created holding their creator's lease (an enrollment in a process that will drive them at
// once): the creator is SIGKILLed right after the insert committed, before it drove them. Nothing
// is lost: once the lease lapses another worker claims each run and runs it from its start, every
// step's effect once, counted as an interruption (it was running), never as a failure.

import { spawn } from "node:child_process";
import { fileURLToPath } from "node:url";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { Engine } from "../src/engine/engine.js";
import { isTerminal } from "../src/model/run-status.js";
import { WS } from "./helpers/engine.js";
import { Sink } from "./helpers/sink.js";
import { makeStore, STORE_KINDS, type TestStore } from "./helpers/stores.js";
import { until } from "./helpers/wait.js";
import { killAll, startWorker } from "./helpers/workers.js";

const ROOT = fileURLToPath(new URL("..", import.meta.url));
const RUNS = 5;

describe.each(STORE_KINDS)("a run inserted holding its creator's lease, the creator killed (%s store)", (kind) => {
  let ts: TestStore;
  let writer: Engine;
  let sink: Sink;

  beforeEach(async () => {
    ts = await makeStore(kind);
    writer = new Engine({ store: ts.store, noRunner: true });
    await writer.start();
    sink = await new Sink().start();
  });
  afterEach(async () => {
    await killAll();
    await writer.stop();
    await sink.stop();
    await ts.destroy();
  });

  it("is claimed after its lease lapses and runs once, from its start", async () => {
    const a = await writer.createAutomation(WS, {
      key: "leased",
      name: "leased",
      root: "call",
      nodes: [{ key: "call", kind: "http_request", config: { method: "POST", url: `${sink.url}/x`, body: { s: "{{ subject.id }}" } } }],
    });
    const child = spawn(process.execPath, ["--import", "tsx", "test/fixtures/enroll-once.ts"], {
      cwd: ROOT,
      env: {
        ...process.env,
        ...(ts.kind === "embedded" ? { WEFT_DATABASE_URL: "" } : {}),
        ...ts.env,
        WEFT_HTTP_ALLOW: "127.0.0.1",
        WEFT_LEASE_MS: "1000",
        WEFT_CRASH_POINT: "enroll:after-insert",
        ENROLL_AUTOMATION: a.id,
        ENROLL_COUNT: String(RUNS),
      },
      stdio: ["ignore", "pipe", "pipe"],
    });
    let out = "";
    child.stdout.on("data", (d: Buffer) => (out += d.toString()));
    child.stderr.on("data", (d: Buffer) => (out += d.toString()));
    const exit = await new Promise<NodeJS.Signals | null>((resolve) => child.on("exit", (_code, signal) => resolve(signal)));
    expect(exit, out).toBe("SIGKILL");
    // Inserted held by the dead process, nothing driven.
    const held = (await writer.listRuns({ workspace_id: WS, automation_id: a.id, limit: 50 })).items;
    expect(held).toHaveLength(RUNS);
    for (const r of held) expect(r).toMatchObject({ status: "running", unsettled_claims: 1 });
    expect(held.every((r) => r.lease_owner !== null)).toBe(true);
    expect(sink.requests).toHaveLength(0);

    const healer = startWorker(ts, { WEFT_LEASE_MS: "1000", WEFT_POLL_MS: "50" });
    expect(await healer.ready, healer.output()).toBe(true);
    const done = await until(
      "every run to finish",
      async () => {
        const runs = (await writer.listRuns({ workspace_id: WS, automation_id: a.id, limit: 50 })).items;
        return runs.every((r) => isTerminal(r.status)) ? runs : null;
      },
      60_000,
    );
    expect(done.map((r) => r.status)).toEqual(Array(RUNS).fill("completed"));
    // Resumed, not failed: the lapsed lease of a running run is one interruption.
    expect(done.map((r) => r.interruptions)).toEqual(Array(RUNS).fill(1));
    // Each run's call once, under its own key.
    const keys = sink.requests.map((r) => r.key);
    expect(keys).toHaveLength(RUNS);
    expect(new Set(keys).size).toBe(RUNS);
  }, 90_000);
});
