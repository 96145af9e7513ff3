// A 202 is a promise: the event was committed before the answer. A `weft start` child is killed
// with SIGKILL the moment its 202 arrives; the event must be in the store, and a new child must
// dispatch it (if the first had not) into exactly one run that completes.

import { spawn, type ChildProcess } from "node:child_process";
import http from "node:http";
import { fileURLToPath } from "node:url";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { Engine } from "../src/engine/engine.js";
import type { Run } from "../src/engine/store.js";
import { WS } from "./helpers/engine.js";
import { makeStore, STORE_KINDS, type TestStore } from "./helpers/stores.js";
import { until } from "./helpers/wait.js";

const ROOT = fileURLToPath(new URL("..", import.meta.url));
const TOKEN = "durability-token-at-least-32-characters";

interface Child {
  proc: ChildProcess;
  /** The base URL once it prints `listening on`, or an error with its output if it exits first. */
  url: Promise<string>;
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  output: () => string;
}

const children = new Set<Child>();

function startWeft(ts: TestStore): Child {
  const proc = spawn(process.execPath, ["--import", "tsx", "src/cli/main.ts", "start"], {
    cwd: ROOT,
    env: {
      ...process.env,
      ...(ts.kind === "embedded" ? { WEFT_DATABASE_URL: "" } : {}),
      ...ts.env,
      WEFT_PORT: "0",
      WEFT_HOST: "127.0.0.1",
      WEFT_ADMIN_TOKEN: TOKEN,
      WEFT_SAMPLE: "0",
      // if the kill lands while the run is leased, its restart need not wait the default 30 s
      WEFT_LEASE_MS: "2000",
    },
    stdio: ["ignore", "pipe", "pipe"],
  });
  let out = "";
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => proc.on("exit", (code, signal) => resolve({ code, signal })));
  const url = new Promise<string>((resolve, reject) => {
    proc.stdout!.on("data", (d: Buffer) => {
      out += d.toString();
      const m = /listening on (http:\/\/[^\s]+)/.exec(out);
      if (m) resolve(m[1]!);
    });
    proc.stderr!.on("data", (d: Buffer) => (out += d.toString()));
    void exited.then((e) => reject(new Error(`weft start exited (${JSON.stringify(e)}) before listening:\n${out}`)));
  });
  url.catch(() => undefined);
  const c: Child = { proc, url, exited, output: () => out };
  children.add(c);
  void exited.then(() => children.delete(c));
  return c;
}

async function kill(c: Child): Promise<void> {
  if (c.proc.exitCode === null && c.proc.signalCode === null) c.proc.kill("SIGKILL");
  await c.exited;
}

/** POST an event and SIGKILL the child in the same tick as its 202 response is complete. */
function postThenKill(c: Child, base: string, body: unknown): Promise<{ status: number; json: { event_id?: string; duplicate?: boolean } }> {
  const data = JSON.stringify(body);
  return new Promise((resolve, reject) => {
    const req = http.request(
      `${base}/v1/events`,
      {
        method: "POST",
        headers: { authorization: `Bearer ${TOKEN}`, "content-type": "application/json", "content-length": Buffer.byteLength(data) },
      },
      (res) => {
        let text = "";
        res.on("data", (d: Buffer) => (text += d.toString()));
        res.on("end", () => {
          if (res.statusCode === 202) c.proc.kill("SIGKILL");
          try {
            resolve({ status: res.statusCode ?? 0, json: JSON.parse(text) as { event_id?: string } });
          } catch (err) {
            reject(err as Error);
          }
        });
      },
    );
    req.on("error", reject);
    req.end(data);
  });
}

describe.each(STORE_KINDS)("event durability across SIGKILL (%s store)", (kind) => {
  let ts: TestStore;
  let engine: Engine;

  beforeAll(async () => {
    ts = await makeStore(kind);
    // The test process only writes definitions and reads; the children do the work.
    engine = new Engine({ store: ts.store, noRunner: true });
    await engine.start();
  });
  afterEach(async () => {
    await Promise.all([...children].map(kill));
  });
  afterAll(async () => {
    await Promise.all([...children].map(kill));
    await engine?.stop();
    await ts?.destroy();
  });

  it("SIGKILL the engine right after a 202: the event is there after restart and produces its run", async () => {
    const a = await engine.createAutomation(WS, {
      key: `durable-${kind}`,
      name: "durable",
      triggers: [{ type: "event", name: "durable.ping" }],
      root: "note",
      nodes: [
        { key: "note", kind: "set", config: { assign: { n: "event.payload.n" } } },
        { key: "done", kind: "end" },
      ],
      edges: [{ from: "note", port: "next", to: "done" }],
    });

    const first = startWeft(ts);
    const base = await first.url;
    const res = await postThenKill(first, base, { type: "durable.ping", key: "durable-1", subject_id: "ct_1", payload: { n: 7 } });
    expect(res.status).toBe(202);
    const exit = await first.exited;
    expect(exit.signal).toBe("SIGKILL");
    const eventId = res.json.event_id!;
    expect(eventId).toMatch(/^evt_/);

    // The event survived the kill (read by this process, not the dead one).
    const stored = await ts.store.getEvent(WS, eventId);
    expect(stored).not.toBeNull();
    expect(stored!.idempotency_key).toBe("durable-1");
    expect(stored!.body).toMatchObject({ type: "event", name: "durable.ping", subject_id: "ct_1", payload: { n: 7 } });
    const runsAtKill = (await ts.store.listRuns({ workspace_id: WS, automation_id: a.id, limit: 10 })).items;
    console.log(`[durability ${kind}] at the kill: dispatched=${stored!.dispatched_at !== null} runs=${runsAtKill.length}`);
    expect(runsAtKill.length).toBeLessThanOrEqual(1);

    const second = startWeft(ts);
    await second.url;
    const run = await until<Run>(
      "the event's run to complete after the restart",
      async () => {
        const runs = (await ts.store.listRuns({ workspace_id: WS, automation_id: a.id, limit: 10 })).items;
        const r = runs.find((x) => x.event_id === eventId);
        return r && r.status === "completed" ? r : null;
      },
      60_000,
    );
    expect(run.context).toMatchObject({ n: 7 });
    expect(run.subject_id).toBe("ct_1");

    const runs = (await ts.store.listRuns({ workspace_id: WS, automation_id: a.id, limit: 10 })).items;
    expect(runs.map((r) => r.event_id)).toEqual([eventId]);
    const after = await ts.store.getEvent(WS, eventId);
    expect(after!.dispatched_at).not.toBeNull();
    expect(after!.runs_created).toBe(1);

    // The restarted process answers a replay of the same key as a duplicate of the same event.
    const replay = await new Promise<{ status: number; body: string }>((resolve, reject) => {
      const data = JSON.stringify({ type: "durable.ping", key: "durable-1", subject_id: "ct_1", payload: { n: 7 } });
      void second.url.then((b) => {
        const req = http.request(
          `${b}/v1/events`,
          { method: "POST", headers: { authorization: `Bearer ${TOKEN}`, "content-type": "application/json" } },
          (r) => {
            let text = "";
            r.on("data", (d: Buffer) => (text += d.toString()));
            r.on("end", () => resolve({ status: r.statusCode ?? 0, body: text }));
          },
        );
        req.on("error", reject);
        req.end(data);
      });
    });
    expect(replay.status).toBe(202);
    expect(JSON.parse(replay.body)).toEqual({ event_id: eventId, duplicate: true });
    await kill(second);
  }, 120_000);
});
