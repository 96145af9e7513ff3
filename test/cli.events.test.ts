// weft events get|list|explain and weft status as a user runs them: a child process talking over
// HTTP to an engine and API on 127.0.0.1, one per store. status exits 1 while a warning stands
// (no worker alive while events wait), 0 otherwise.

import { spawn } from "node:child_process";
import { fileURLToPath } from "node:url";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ManualClock } from "../src/engine/clock.js";
import { Engine } from "../src/engine/engine.js";
import { LIVENESS_MS } from "../src/engine/store.js";
import { startApi, type Api } from "./helpers/api.js";
import { startEngine, WS } from "./helpers/engine.js";
import { makeStore, STORE_KINDS, type TestStore } from "./helpers/stores.js";
import { until } from "./helpers/wait.js";

const ROOT = fileURLToPath(new URL("..", import.meta.url));
const TOKEN = "cli-events-admin-token";

interface Result {
  code: number | null;
  stdout: string;
  stderr: string;
}

function flow(key: string, name: string) {
  return {
    key,
    name: key,
    triggers: [{ type: "event", name }],
    reentry: { policy: "allow_concurrent" },
    root: "park",
    nodes: [
      { key: "park", kind: "delay", config: { duration_ms: 3_600_000 } },
      { key: "done", kind: "end" },
    ],
    edges: [{ from: "park", port: "next", to: "done" }],
  };
}

describe.each(STORE_KINDS)("weft events and weft status (%s store)", (kind) => {
  let ts: TestStore;
  let clock: ManualClock;
  let engine: Engine;
  let api: Api;

  beforeAll(async () => {
    ts = await makeStore(kind);
    clock = new ManualClock(Date.now());
    engine = await startEngine({ store: ts.store, clock, dispatchPollMs: 20 });
    api = await startApi(engine, TOKEN);
  });
  afterAll(async () => {
    await api?.close();
    await engine?.stop();
    await ts?.destroy();
  });

  function weft(args: string[]): Promise<Result> {
    return new Promise((resolve, reject) => {
      const child = spawn(process.execPath, ["--import", "tsx", "src/cli/main.ts", ...args], {
        cwd: ROOT,
        env: { ...process.env, WEFT_URL: api.base, WEFT_TOKEN: TOKEN },
        stdio: ["ignore", "pipe", "pipe"],
      });
      let stdout = "";
      let stderr = "";
      child.stdout.on("data", (d: Buffer) => (stdout += d.toString()));
      child.stderr.on("data", (d: Buffer) => (stderr += d.toString()));
      child.on("error", reject);
      child.on("close", (code) => resolve({ code, stdout, stderr }));
    });
  }

  it("events get, list (filters, limit) and explain (the table of automations and reasons)", async () => {
    await engine.createAutomation(WS, flow("welcome", "user.signed_up"));
    await engine.createAutomation(WS, flow("winback", "user.churned"));
    const ids: string[] = [];
    for (const [subject, key] of [
      ["u1", "k1"],
      ["u2", "k2"],
      ["u1", "k3"],
    ] as const) {
      ids.push((await engine.ingest(WS, { type: "user.signed_up", subject_id: subject, key })).event_id);
      clock.advance(1); // newest first: each event received a millisecond after the previous one
    }
    for (const id of ids) await until(`event ${id} dispatched`, async () => (await engine.getEvent(WS, id)).dispatched_at !== null);

    const got = await weft(["events", "get", ids[0]!]);
    expect(got.code).toBe(0);
    expect(got.stdout).toContain(ids[0]!);
    expect(got.stdout).toMatch(/dispatched\s+\S+ \S+ \(1 run\)/);

    const all = await weft(["events", "list", "--json"]);
    expect(all.code).toBe(0);
    expect(
      all.stdout
        .trim()
        .split("\n")
        .map((l) => JSON.parse(l).id),
    ).toEqual([...ids].reverse());
    expect(JSON.parse(all.stdout.split("\n")[0]!)).not.toHaveProperty("body");
    const bySubject = await weft(["events", "list", "--subject", "u1", "--json"]);
    expect(
      bySubject.stdout
        .trim()
        .split("\n")
        .map((l) => JSON.parse(l).id),
    ).toEqual([ids[2], ids[0]]);
    const byKey = await weft(["events", "list", "--key", "k2", "--type", "user.signed_up"]);
    expect(byKey.stdout).toContain(ids[1]!);
    expect(byKey.stdout).not.toContain(ids[0]!);
    const limited = await weft(["events", "list", "--limit", "1", "--json"]);
    expect(limited.stdout.trim().split("\n")).toHaveLength(1);
    expect((await weft(["events", "list", "--type", "no.such.event"])).stderr).toContain("no events");

    const why = await weft(["events", "explain", ids[0]!]);
    expect(why.code).toBe(0);
    const lines = why.stdout.split("\n");
    expect(lines.find((l) => l.startsWith("welcome"))).toMatch(/^welcome\s+yes\s+run_\S+\s+taken\s+/);
    expect(lines.find((l) => l.startsWith("winback"))).toMatch(
      /^winback\s+no\s+-\s+event_name_differs\s+It listens for "user.churned"; this event is "user.signed_up"\./,
    );
    expect((await weft(["events", "explain", "evt_missing"])).code).toBe(3);
  });

  it("status: the live worker, no warning (exit 0); with only an API process and an event waiting, the warning (exit 1)", async () => {
    const ok = await weft(["status"]);
    expect(ok.code).toBe(0);
    expect(ok.stdout).toMatch(new RegExp(`^all\\s+${engine.owner}\\s+`, "m"));
    expect(ok.stdout).not.toContain("warning");

    // The worker goes away; once its heartbeat is older than the liveness window, only the API process is alive.
    await api.close();
    await engine.stop();
    clock.advance(LIVENESS_MS + 1);
    engine = new Engine({ store: ts.store, clock, noRunner: true });
    await engine.start();
    api = await startApi(engine, TOKEN);
    await engine.ingest(WS, { type: "user.signed_up", subject_id: "u3" });

    const bad = await weft(["status"]);
    expect(bad.code).toBe(1);
    expect(bad.stdout).toMatch(new RegExp(`^api\\s+${engine.owner}\\s+`, "m"));
    expect(bad.stdout).toContain("warning: no worker alive: 1 event(s) wait for dispatch");
    expect(bad.stdout).toContain("1 undispatched event(s)");
  });
});
