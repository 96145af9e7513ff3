// A server process SIGKILLed right after a batch of events commits, before it answers: the
// client sees no 202, yet every event of the batch is stored, a resend after the restart finds
// each one (duplicate: true, the same ids) and every event still starts its run.

import { spawn, type ChildProcess } from "node:child_process";
import { createServer } from "node:net";
import { fileURLToPath } from "node:url";
import { request } from "undici";
import { afterEach, describe, expect, it } from "vitest";
import { WS } from "./helpers/engine.js";
import { listAll, makeStore, STORE_KINDS, type TestStore } from "./helpers/stores.js";
import { until } from "./helpers/wait.js";

const ROOT = fileURLToPath(new URL("..", import.meta.url));
const TOKEN = "crash-admin-token-0123456789abcdef0123";

/** A port free on 127.0.0.1 now (the server is started on it next). */
async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.once("error", reject);
    s.listen(0, "127.0.0.1", () => {
      const port = (s.address() as { port: number }).port;
      s.close(() => resolve(port));
    });
  });
}

const started: ChildProcess[] = [];

/** `weft serve` (API and worker) on the test store; resolves once it listens. */
async function serve(ts: TestStore, port: number, extraEnv: Record<string, string> = {}): Promise<{ child: ChildProcess; exited: Promise<unknown> }> {
  const child = spawn(process.execPath, ["--import", "tsx", "src/cli/main.ts", "serve"], {
    cwd: ROOT,
    env: {
      ...process.env,
      ...(ts.kind === "embedded" ? { WEFT_DATABASE_URL: "" } : {}),
      ...ts.env,
      WEFT_SAMPLE: "0",
      WEFT_PORT: String(port),
      WEFT_ADMIN_TOKEN: TOKEN,
      ...extraEnv,
    },
    stdio: ["ignore", "pipe", "pipe"],
  });
  started.push(child);
  const exited = new Promise((resolve) => child.on("exit", (code, signal) => resolve({ code, signal })));
  let out = "";
  await new Promise<void>((resolve, reject) => {
    child.stdout!.on("data", (d: Buffer) => {
      out += d.toString();
      if (out.includes("listening on")) resolve();
    });
    child.stderr!.on("data", (d: Buffer) => (out += d.toString()));
    void exited.then(() => reject(new Error(`server exited before listening:\n${out}`)));
  });
  return { child, exited };
}

async function call(port: number, method: "GET" | "POST", path: string, body?: unknown): Promise<{ status: number; body: Record<string, unknown> }> {
  const res = await request(`http://127.0.0.1:${port}${path}`, {
    method,
    headers: { authorization: `Bearer ${TOKEN}`, ...(body !== undefined ? { "content-type": "application/json" } : {}) },
    ...(body !== undefined ? { body: JSON.stringify(body) } : {}),
  });
  const text = await res.body.text();
  return { status: res.statusCode, body: text === "" ? {} : (JSON.parse(text) as Record<string, unknown>) };
}

describe.each(STORE_KINDS)("batch intake across a crash (%s store)", (kind) => {
  let ts: TestStore | null = null;
  afterEach(async () => {
    for (const c of started.splice(0)) if (c.exitCode === null && c.signalCode === null) c.kill("SIGKILL");
    await ts?.destroy();
  });

  it("a server killed right after the batch commit loses none of its events", async () => {
    ts = await makeStore(kind);
    const port = await freePort();
    const first = await serve(ts, port, { WEFT_CRASH_POINT: "intake:after-commit", WEFT_CRASH_AFTER: "1" });
    const made = await call(port, "POST", "/v1/automations", {
      definition: {
        key: "crash-batch",
        name: "crash-batch",
        triggers: [{ type: "event", name: "crash.batch" }],
        reentry: { policy: "allow_concurrent" },
        root: "done",
        nodes: [{ key: "done", kind: "end" }],
      },
    });
    expect(made.status).toBe(201);
    const batch = Array.from({ length: 50 }, (_, i) => ({ type: "crash.batch", key: `c${i}`, subject_id: `s${i}`, payload: { i } }));

    // The process dies between the commit and the answer: the client gets no 202.
    await expect(call(port, "POST", "/v1/events", batch)).rejects.toThrow();
    expect(await first.exited).toMatchObject({ signal: "SIGKILL" });

    const keys = new Map<string, string>();
    for (const e of batch) {
      const page = await ts.store.listEvents({ workspace_id: WS, key: e.key, limit: 10 });
      expect(page.items, `event ${e.key}`).toHaveLength(1);
      keys.set(e.key, page.items[0]!.id);
    }

    // Restarted: the resend finds every event (the same ids), and each starts its run.
    await serve(ts, port);
    const resent = await call(port, "POST", "/v1/events", batch);
    expect(resent.status).toBe(202);
    expect(resent.body.results).toEqual(batch.map((e, index) => ({ index, event_id: keys.get(e.key), duplicate: true })));
    const automationId = made.body.id as string;
    // The killed server's dispatcher may have leased some of them: those wait out its dispatch lease (DISPATCH_LEASE_MS, 10 s).
    await until("a run per event", async () => (await listAll(ts!.store, automationId)).length === 50, 90_000);
  }, 180_000);
});
