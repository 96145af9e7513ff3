// Secrets: the canary. A random value is stored as a secret, used by every kind of step that can
// carry it outward (http_request header, URL query and body; a `set` into context; a custom
// action that logs it and throws it; a fan-out whose items carry it), and the remote echoes it
// back in failed responses. The remote must receive the real value (the secret works); then every
// table of the store, every API response the test received and every engine event emitted are
// searched for it: it must appear nowhere (the secrets table holds only ciphertext, new on every
// PUT). A wrong key fails the steps that use a secret (no crash); no key refuses PUT (secrets.no_key);
// a value under 8 characters is refused (secrets.too_short).

import { randomBytes } from "node:crypto";
import { existsSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { z } from "zod";
import { defineAction } from "../src/engine/actions.js";
import { Engine, type EngineOptions } from "../src/engine/engine.js";
import type { EngineEvents } from "../src/engine/events.js";
import { SecretBox } from "../src/engine/secrets.js";
import type { Run, RunItem, StepRun, Store } from "../src/engine/store.js";
import { WeftError } from "../src/model/errors.js";
import { EmbeddedStore } from "../src/store/embedded/index.js";
import { PostgresStore } from "../src/store/postgres/index.js";
import { startApi, type Api, type Reply } from "./helpers/api.js";
import { LOOPBACK, WS } from "./helpers/engine.js";
import { Sink, type SinkRequest } from "./helpers/sink.js";
import { makeStore, STORE_KINDS, type TestStore } from "./helpers/stores.js";
import { until } from "./helpers/wait.js";

const TOKEN = "secrets-admin-token";
const NAME = "CRM_TOKEN";
const MARK = `[secret:${NAME}]`;

/** Every engine event name, as a typed list; a test below checks it against events.ts itself. */
const EVENT_NAMES = [
  "run:created",
  "run:claimed",
  "step:finished",
  "step:retry_scheduled",
  "run:parked",
  "run:finished",
  "run:lease_lost",
  "run:quarantined",
  "checkpoint:committed",
  "event:stored",
  "event:dispatched",
  "event:undeliverable",
  "schedule:fired",
  "policy:violation",
  "approval:decided",
  "engine:error",
] as const satisfies readonly (keyof EngineEvents)[];

const newKey = () => randomBytes(32).toString("hex");
const newCanary = () => `canary-${randomBytes(16).toString("hex")}`;

/** JSON with Error objects (message, stack, own fields such as code and details), bigints and Buffers spelled out. */
function dump(v: unknown): string {
  return (
    JSON.stringify(v, (_k, x: unknown) => {
      if (x instanceof Error) return { ...x, name: x.name, message: x.message, stack: x.stack, cause: (x as { cause?: unknown }).cause };
      if (typeof x === "bigint") return x.toString();
      if (x !== null && typeof x === "object" && (x as { type?: unknown }).type === "Buffer" && Array.isArray((x as { data?: unknown }).data)) {
        return Buffer.from((x as { data: number[] }).data).toString("latin1");
      }
      return x;
    }) ?? String(v)
  );
}

/** Every row of every table of the store, as text (PostgreSQL: `t::text`; SQLite: JSON of each row). */
async function dumpStore(store: Store): Promise<{ text: string; tables: Map<string, number> }> {
  const tables = new Map<string, number>();
  const parts: string[] = [];
  if (store instanceof PostgresStore) {
    const names = await store.pool.query<{ table_name: string }>(
      "SELECT table_name FROM information_schema.tables WHERE table_schema = $1 ORDER BY table_name",
      [store.schema],
    );
    for (const { table_name } of names.rows) {
      const rows = await store.pool.query<{ row: string }>(`SELECT t::text AS row FROM "${store.schema}"."${table_name}" t`);
      tables.set(table_name, rows.rows.length);
      for (const r of rows.rows) parts.push(`${table_name}: ${r.row}`);
    }
  } else if (store instanceof EmbeddedStore) {
    const names = store.db.prepare("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name").pluck().all() as string[];
    for (const name of names) {
      const rows = store.db.prepare(`SELECT * FROM "${name.replace(/"/g, '""')}"`).all();
      tables.set(name, rows.length);
      for (const r of rows) parts.push(`${name}: ${dump(r)}`);
    }
  } else {
    throw new Error("unknown store");
  }
  return { text: parts.join("\n"), tables };
}

/** The SQLite database files as raw bytes (free pages and the WAL included). */
function rawSqliteFiles(ts: TestStore): string {
  const dir = ts.env.WEFT_DATA_DIR;
  if (!dir) return "";
  return ["weft.db", "weft.db-wal", "weft.db-journal"]
    .map((f) => join(dir, f))
    .filter((f) => existsSync(f))
    .map((f) => readFileSync(f).toString("latin1"))
    .join("\n");
}

/** The stored ciphertext of a secret, read straight from the database. */
async function storedCiphertext(store: Store, name: string): Promise<string | null> {
  if (store instanceof PostgresStore) {
    const r = await store.pool.query<{ ciphertext: string }>("SELECT ciphertext FROM secrets WHERE workspace_id = $1 AND name = $2", [WS, name]);
    return r.rows[0]?.ciphertext ?? null;
  }
  if (store instanceof EmbeddedStore) {
    return (store.db.prepare("SELECT ciphertext FROM secrets WHERE workspace_id = ? AND name = ?").pluck().get(WS, name) as string | undefined) ?? null;
  }
  throw new Error("unknown store");
}

async function countRows(store: Store, table: string): Promise<number> {
  if (store instanceof PostgresStore) return (await store.pool.query<{ n: number }>(`SELECT count(*)::int AS n FROM ${table}`)).rows[0]!.n;
  if (store instanceof EmbeddedStore) return store.db.prepare(`SELECT count(*) FROM ${table}`).pluck().get() as number;
  throw new Error("unknown store");
}

interface Recorded {
  api: Api;
  /** Every response body the test got, as text. */
  seen: string[];
  call<T = Record<string, unknown>>(method: "GET" | "POST" | "PUT" | "DELETE", path: string, body?: unknown): Promise<Reply<T>>;
}

function recording(api: Api): Recorded {
  const seen: string[] = [];
  return {
    api,
    seen,
    async call<T>(method: "GET" | "POST" | "PUT" | "DELETE", path: string, body?: unknown) {
      const r = await api.call<T>(method, path, body);
      seen.push(`${method} ${path} → ${r.status} ${JSON.stringify(r.body)}`);
      return r;
    },
  };
}

let seq = 0;
const uniq = (p: string) => `${p}-${++seq}-${Date.now().toString(36)}`;

describe("the canary's event list", () => {
  it("names every event events.ts declares (so the search below listens to all of them)", () => {
    const src = readFileSync(fileURLToPath(new URL("../src/engine/events.ts", import.meta.url)), "utf8");
    const declared = [...src.matchAll(/^\s+"([a-z]+:[a-z_]+)":/gm)].map((m) => m[1]);
    expect(declared.length).toBeGreaterThan(5);
    expect([...EVENT_NAMES].sort()).toEqual([...declared].sort());
  });
});

describe.each(STORE_KINDS)("secrets (%s store)", (kind) => {
  let ts: TestStore;
  let sink: Sink;
  let engines: Engine[];
  let apis: Api[];
  /** Every engine event of every engine the test started, as text. */
  let emitted: string[];
  let engineErrors: EngineEvents["engine:error"][];

  beforeEach(async () => {
    ts = await makeStore(kind);
    sink = await new Sink().start();
    engines = [];
    apis = [];
    emitted = [];
    engineErrors = [];
  });
  afterEach(async () => {
    for (const a of apis.splice(0)) await a.close();
    for (const e of engines.splice(0)) await e.stop();
    await sink.stop();
    await ts.destroy();
  });

  /** An engine on the test's store, listening to every event, with actions registered before it starts. */
  async function boot(opts: Partial<EngineOptions>, register: (e: Engine) => void = () => undefined): Promise<Engine> {
    const e = new Engine({ httpAllow: LOOPBACK, store: ts.store, ...opts, runner: { leaseMs: 5000, pollMs: 20, ...opts.runner } });
    for (const name of EVENT_NAMES) {
      e.events.on(name, (p: unknown) => {
        emitted.push(`${name} ${dump(p)}`);
        if (name === "engine:error") engineErrors.push(p as EngineEvents["engine:error"]);
      });
    }
    register(e);
    await e.start();
    engines.push(e);
    return e;
  }

  async function api(e: Engine): Promise<Recorded> {
    const a = await startApi(e, TOKEN);
    apis.push(a);
    return recording(a);
  }

  async function create(r: Recorded, definition: Record<string, unknown>): Promise<string> {
    const res = await r.call<{ id: string }>("POST", "/v1/automations", { definition });
    expect(res.status, JSON.stringify(res.body)).toBe(201);
    return res.body.id;
  }

  async function enroll(r: Recorded, automationId: string, context: Record<string, unknown> = {}): Promise<string> {
    const res = await r.call<{ id: string }>("POST", `/v1/automations/${automationId}/enroll`, { context_overrides: context });
    expect(res.status, JSON.stringify(res.body)).toBe(201);
    return res.body.id;
  }

  const ended = (e: Engine, runId: string): Promise<Run> => e.waitForRun(WS, runId);

  /** The sink's echo of a request: URL, every header and the body, so a failed response carries the secret back. */
  const echo = (req: SinkRequest) => ({ url: req.path, headers: req.headers, body: req.body });

  it("THE CANARY: the remote gets the real value; no table, API response or engine event ever holds it", async () => {
    const key = newKey();
    const canary = newCanary();
    expect(canary.length).toBeGreaterThanOrEqual(24);
    const actionSaw: string[] = [];
    const e = await boot({ secretKey: key }, (eng) => {
      eng.registerAction(
        defineAction({
          kind: "crm.leaky",
          input: z.object({ token: z.string(), n: z.number().optional() }),
          handler(input, ctx) {
            actionSaw.push(input.token);
            ctx.log.info(`calling the CRM with ${input.token}`, { token: input.token, header: `Bearer ${input.token}` });
            ctx.log.error("refused", { [input.token]: "as a key too" });
            throw new Error(`the CRM refused token ${input.token} (Bearer ${input.token})`);
          },
        }),
      );
    });
    const r = await api(e);

    // ---- the secret API: names only, and fresh ciphertext on every PUT ----
    const put1 = await r.call<{ name: string; created: boolean }>("PUT", `/v1/secrets/${NAME}`, { value: canary });
    expect(put1.status, JSON.stringify(put1.body)).toBe(201);
    expect(put1.body).toEqual({ name: NAME, created: true });
    const c1 = await storedCiphertext(ts.store, NAME);
    const listed = await r.call<{ items: { name: string; created_at: string; updated_at: string }[] }>("GET", "/v1/secrets");
    expect(listed.status).toBe(200);
    expect(listed.body.items.map((s) => s.name)).toEqual([NAME]);
    expect(Object.keys(listed.body.items[0]!).sort()).toEqual(["created_at", "name", "updated_at"]);
    const put2 = await r.call<{ name: string; created: boolean }>("PUT", `/v1/secrets/${NAME}`, { value: canary });
    expect(put2.status).toBe(200);
    expect(put2.body).toEqual({ name: NAME, created: false });
    const c2 = await storedCiphertext(ts.store, NAME);
    const put3 = await r.call<{ name: string; created: boolean }>("PUT", `/v1/secrets/${NAME}`, { value: canary });
    expect(put3.status).toBe(200);
    const c3 = await storedCiphertext(ts.store, NAME);
    for (const c of [c1, c2, c3]) {
      expect(c).toMatch(/^v1\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+$/);
      expect(c).not.toContain(canary);
      expect(c).not.toContain(Buffer.from(canary).toString("base64url"));
      expect(c).not.toContain(Buffer.from(canary).toString("hex"));
      // Real encryption, bound to the workspace and name: the right key opens it, another key does not.
      expect(SecretBox.fromString(key).open(c!, `${WS}/${NAME}`)).toBe(canary);
      expect(() => SecretBox.fromString(newKey()).open(c!, `${WS}/${NAME}`)).toThrow(WeftError);
      expect(() => SecretBox.fromString(key).open(c!, `${WS}/OTHER`)).toThrow(WeftError);
    }
    // Same value, three PUTs, three different ciphertexts (a fresh IV each time).
    expect(new Set([c1, c2, c3]).size).toBe(3);

    // ---- the remote: 503 then 500, each echoing the request; /ok answers 200 with the echo ----
    sink.reply = (req, nth) => {
      if (req.path.startsWith("/ok")) return { status: 200, body: { echo: echo(req) }, headers: { "x-echo": String(req.headers["x-token"]) } };
      return { status: nth === 1 ? 503 : 500, body: { echo: echo(req) } };
    };

    // 1. http_request carrying the secret in two headers, the URL query and the body; event-triggered.
    const pushId = await create(r, {
      key: uniq("crm-push"),
      name: "CRM push",
      triggers: [{ type: "event", name: "crm.sync" }],
      root: "push",
      nodes: [
        {
          key: "push",
          kind: "http_request",
          retry: { max_attempts: 2, initial_ms: 10, max_ms: 10 },
          config: {
            method: "POST",
            url: `${sink.url}/crm/contacts?t={{ secrets.CRM_TOKEN }}`,
            headers: { authorization: "Bearer {{ secrets.CRM_TOKEN }}", "x-token": "{{ secrets.CRM_TOKEN }}" },
            body: { token: "{{ secrets.CRM_TOKEN }}", note: "sent with {{ secrets.CRM_TOKEN }}", contact: "{{ event.payload.contact }}" },
          },
        },
        { key: "done", kind: "end" },
      ],
      edges: [{ from: "push", port: "next", to: "done" }],
    });
    // 2. set: the secret assigned into context.
    const keepId = await create(r, {
      key: uniq("crm-keep"),
      name: "CRM keep",
      root: "keep",
      nodes: [
        { key: "keep", kind: "set", config: { assign: { token: "secrets.CRM_TOKEN" } } },
        { key: "done", kind: "end" },
      ],
      edges: [{ from: "keep", port: "next", to: "done" }],
    });
    // 3. a custom action that logs the secret and throws it.
    const leakId = await create(r, {
      key: uniq("crm-leak"),
      name: "CRM leak",
      root: "leak",
      nodes: [{ key: "leak", kind: "crm.leaky", config: { token: "{{ secrets.CRM_TOKEN }}" } }],
    });
    // 4. a fan-out of the leaky action: items carry the secret in their input and error.
    const fanId = await create(r, {
      key: uniq("crm-fan"),
      name: "CRM fan",
      root: "fan",
      nodes: [
        {
          key: "fan",
          kind: "for_each",
          config: { items: "[1, 2]", action: { kind: "crm.leaky", config: { token: "{{ secrets.CRM_TOKEN }}", n: "{{ item }}" } } },
        },
        { key: "done", kind: "end" },
      ],
      edges: [{ from: "fan", port: "next", to: "done" }],
    });
    // 5. a successful call whose response echoes the secret in its body and a header, assigned into context.
    const okId = await create(r, {
      key: uniq("crm-ok"),
      name: "CRM ok",
      root: "call",
      nodes: [
        {
          key: "call",
          kind: "http_request",
          config: {
            method: "GET",
            url: `${sink.url}/ok`,
            headers: { "x-token": "{{ secrets.CRM_TOKEN }}" },
            assign: { echoed: "response.body.echo.headers['x-token']" },
          },
        },
        { key: "done", kind: "end" },
      ],
      edges: [{ from: "call", port: "next", to: "done" }],
    });

    const ev = await r.call<{ event_id: string; duplicate: boolean }>("POST", "/v1/events", { type: "crm.sync", key: "sync-1", payload: { contact: "c-1" } });
    expect(ev.status).toBe(202);
    const pushRun = await until("the event's run", async () => (await e.listRuns({ workspace_id: WS, automation_id: pushId })).items[0]);
    const runIds = [pushRun.id, await enroll(r, keepId), await enroll(r, leakId), await enroll(r, fanId), await enroll(r, okId)];
    const [push, keep, leak, fan, ok] = await Promise.all(runIds.map((id) => ended(e, id)));

    // ---- the secret works: the remote and the action got the real value ----
    const crm = sink.requests.filter((q) => q.path.startsWith("/crm/"));
    expect(crm.map((q) => q.status)).toEqual([503, 500]);
    for (const q of crm) {
      expect(q.headers.authorization).toBe(`Bearer ${canary}`);
      expect(q.headers["x-token"]).toBe(canary);
      expect(q.path).toBe(`/crm/contacts?t=${canary}`);
      expect(JSON.parse(q.body)).toEqual({ token: canary, note: `sent with ${canary}`, contact: "c-1" });
    }
    expect(sink.requests.filter((q) => q.path === "/ok").map((q) => q.headers["x-token"])).toEqual([canary]);
    expect(actionSaw).toEqual([canary, canary, canary]);

    // ---- and what was left behind says [secret:CRM_TOKEN] ----
    expect(push!.status).toBe("failed");
    const pushSteps = await e.listSteps(WS, push!.id);
    expect(pushSteps.map((s) => [s.outcome, s.error?.code])).toEqual([
      ["retrying", "http.status_503"],
      ["failed", "http.status_500"],
    ]);
    for (const s of pushSteps) {
      const input = s.input as { url: string; headers: Record<string, string>; body: Record<string, unknown> };
      expect(input.url).toBe(`${sink.url}/crm/contacts?t=${MARK}`);
      expect(input.headers.authorization).toBe("[redacted]");
      expect(input.headers["x-token"]).toBe(MARK);
      expect(input.body).toEqual({ token: MARK, note: `sent with ${MARK}`, contact: "c-1" });
      const echoed = JSON.parse(String(s.error!.details!.body)) as { echo: { url: string; headers: Record<string, string>; body: string } };
      expect(echoed.echo.url).toBe(`/crm/contacts?t=${MARK}`);
      expect(echoed.echo.headers.authorization).toBe(`Bearer ${MARK}`);
      expect(echoed.echo.headers["x-token"]).toBe(MARK);
      expect(JSON.parse(echoed.echo.body).token).toBe(MARK);
      expect(s.error!.message).toContain(MARK);
    }
    expect(keep!.status).toBe("completed");
    expect(keep!.context).toMatchObject({ token: MARK });
    expect(leak!.status).toBe("failed");
    const [leakStep] = await e.listSteps(WS, leak!.id);
    expect(leakStep!.error).toMatchObject({ code: "action.exception", message: `the CRM refused token ${MARK} (Bearer ${MARK})` });
    expect(leakStep!.logs?.[0]).toMatchObject({ level: "info", message: `calling the CRM with ${MARK}`, data: { token: MARK, header: `Bearer ${MARK}` } });
    expect(leakStep!.logs?.[1]).toMatchObject({ level: "error", data: { [MARK]: "as a key too" } });
    expect(fan!.status).toBe("completed_with_failures");
    const items: RunItem[] = await e.listItems(WS, fan!.id);
    expect(items.map((i) => i.outcome)).toEqual(["failed", "failed"]);
    for (const i of items) {
      expect((i.input as { token: string }).token).toBe(MARK);
      expect(i.error?.message).toContain(MARK);
    }
    expect(ok!.status).toBe("completed");
    expect(ok!.context.echoed).toBe(MARK);
    const [okStep] = await e.listSteps(WS, ok!.id);
    expect((okStep!.output as { headers: Record<string, string> }).headers["x-echo"]).toBe(MARK);

    // ---- read everything back over the API (each response is searched) ----
    const list = await r.call<{ items: { id: string }[] }>("GET", "/v1/automation-runs?limit=500");
    expect(list.body.items.map((x) => x.id).sort()).toEqual([...runIds].sort());
    for (const id of runIds) {
      expect((await r.call("GET", `/v1/automation-runs/${id}`)).status).toBe(200);
      expect((await r.call("GET", `/v1/automation-runs/${id}/steps`)).status).toBe(200);
      expect((await r.call("GET", `/v1/automation-runs/${id}/items`)).status).toBe(200);
    }
    for (const id of [pushId, keepId, leakId, fanId, okId]) {
      expect((await r.call("GET", `/v1/automations/${id}`)).status).toBe(200);
      expect((await r.call("GET", `/v1/automations/${id}/runs`)).status).toBe(200);
    }
    expect((await r.call("GET", `/v1/events/${ev.body.event_id}`)).status).toBe(200);
    const audit = await r.call<{ items: { action: string; details: Record<string, unknown> }[] }>("GET", "/v1/audit-log?limit=500");
    expect(audit.status).toBe(200);
    expect(audit.body.items.filter((a) => a.action === "secret.put")).toHaveLength(3);
    expect((await r.call("GET", "/v1/secrets")).status).toBe(200);
    expect((await r.call("GET", "/v1/ops/overview")).status).toBe(200);

    // ---- THE SEARCH ----
    const db = await dumpStore(ts.store);
    expect(db.tables.get("secrets")).toBe(1);
    expect(db.tables.get("step_runs")).toBe(9);
    expect(db.tables.get("run_items")).toBe(2);
    expect(db.tables.get("runs")).toBe(5);
    // Positive controls: the scans reach the places the secret would have been.
    expect(db.text).toContain(MARK);
    expect(db.text).toContain(c3!);
    expect(emitted.join("\n")).toContain(MARK);
    expect(r.seen.join("\n")).toContain(MARK);

    expect(engineErrors).toEqual([]);
    const where = (text: string) =>
      text
        .split("\n")
        .filter((l) => l.includes(canary))
        .map((l) => l.slice(0, 300));
    expect(where(db.text), "the canary in a table row").toEqual([]);
    expect(where(r.seen.join("\n")), "the canary in an API response").toEqual([]);
    expect(where(emitted.join("\n")), "the canary in an engine event").toEqual([]);
    if (kind === "embedded") {
      for (const a of apis.splice(0)) await a.close();
      for (const x of engines.splice(0)) await x.stop();
      await (ts.store as EmbeddedStore).close();
      const raw = rawSqliteFiles(ts);
      expect(raw.length).toBeGreaterThan(0);
      expect(raw.includes(canary), "the canary in the SQLite files' raw bytes").toBe(false);
    }
  });

  it("a wrong key: steps that use a secret fail with secrets.undecryptable (the cause, not a missing variable), nothing crashes, the rest runs", async () => {
    const canary = newCanary();
    const e1 = await boot({ secretKey: newKey() });
    const r1 = await api(e1);
    expect((await r1.call("PUT", `/v1/secrets/${NAME}`, { value: canary })).status).toBe(201);
    sink.reply = () => ({ status: 200, body: { ok: true } });
    const keepId = await create(r1, {
      key: uniq("wk-keep"),
      name: "keep",
      root: "keep",
      nodes: [
        { key: "keep", kind: "set", config: { assign: { token: "secrets.CRM_TOKEN" } } },
        { key: "done", kind: "end" },
      ],
      edges: [{ from: "keep", port: "next", to: "done" }],
    });
    const callId = await create(r1, {
      key: uniq("wk-call"),
      name: "call",
      root: "call",
      nodes: [
        { key: "call", kind: "http_request", config: { method: "POST", url: `${sink.url}/crm`, headers: { authorization: "Bearer {{ secrets.CRM_TOKEN }}" } } },
        { key: "done", kind: "end" },
      ],
      edges: [{ from: "call", port: "next", to: "done" }],
    });
    const plainId = await create(r1, {
      key: uniq("wk-plain"),
      name: "plain",
      root: "note",
      nodes: [
        { key: "note", kind: "set", config: { assign: { n: "1 + 1" } } },
        { key: "done", kind: "end" },
      ],
      edges: [{ from: "note", port: "next", to: "done" }],
    });
    for (const a of apis.splice(0)) await a.close();
    for (const x of engines.splice(0)) await x.stop();

    // Another process, configured with another key, on the same data.
    const e2 = await boot({ secretKey: newKey() });
    const r2 = await api(e2);
    const ids = [await enroll(r2, keepId), await enroll(r2, callId), await enroll(r2, plainId)];
    const [keep, call, plain] = await Promise.all(ids.map((id) => ended(e2, id)));
    expect(plain!.status).toBe("completed");
    expect(plain!.context).toMatchObject({ n: 2 });
    expect(keep!.status).toBe("failed");
    expect(call!.status).toBe("failed");
    expect(sink.requests).toEqual([]); // nothing went out with a missing or garbled credential
    const codes: string[] = [];
    for (const run of [keep!, call!]) {
      const steps: StepRun[] = await e2.listSteps(WS, run.id);
      expect(steps).toHaveLength(1);
      expect(steps[0]!.outcome).toBe("failed");
      codes.push(steps[0]!.error!.code);
    }
    // Which one it is: see the report. Either names the problem without crashing the run's drive.
    for (const c of codes) expect(c).toMatch(/^(template\.missing_variable|secrets\.[a-z_]+)$/);
    expect(codes).toEqual(["secrets.undecryptable", "secrets.undecryptable"]);
    // The cause is reported as an engine error (secrets.undecryptable), once per run that needed the secrets.
    const secretErrors = engineErrors.filter((x) => x.where.startsWith("secrets for "));
    expect(secretErrors.map((x) => x.where).sort()).toEqual([`secrets for ${keep!.id}`, `secrets for ${call!.id}`].sort());
    for (const x of secretErrors) expect((x.error as WeftError).code).toBe("secrets.undecryptable");
    expect(engineErrors.length).toBe(secretErrors.length);
    // Still nowhere.
    const db = await dumpStore(ts.store);
    expect(db.text.includes(canary)).toBe(false);
    expect(r1.seen.join("\n").includes(canary) || r2.seen.join("\n").includes(canary)).toBe(false);
    expect(emitted.join("\n").includes(canary)).toBe(false);
  });

  it("without a key, PUT /v1/secrets is 400 secrets.no_key and nothing is stored", async () => {
    const e = await boot({});
    const r = await api(e);
    const auditBefore = await countRows(ts.store, "audit_log");
    const res = await r.call("PUT", `/v1/secrets/${NAME}`, { value: newCanary() });
    expect(res.status).toBe(400);
    expect(res.body.error?.code).toBe("secrets.no_key");
    expect((await r.call<{ items: unknown[] }>("GET", "/v1/secrets")).body.items).toEqual([]);
    expect(await countRows(ts.store, "secrets")).toBe(0);
    expect(await countRows(ts.store, "audit_log")).toBe(auditBefore);
  });

  it("a value shorter than 8 characters is 400 secrets.too_short (8 is accepted)", async () => {
    const e = await boot({ secretKey: newKey() });
    const r = await api(e);
    const short = await r.call("PUT", `/v1/secrets/${NAME}`, { value: "seven77" });
    expect(short.status).toBe(400);
    expect(short.body.error?.code).toBe("secrets.too_short");
    expect(short.body.error?.details.pointer).toBe("/value");
    expect(await countRows(ts.store, "secrets")).toBe(0);
    const eight = await r.call("PUT", `/v1/secrets/${NAME}`, { value: "eight888" });
    expect(eight.status).toBe(201);
    expect(await countRows(ts.store, "secrets")).toBe(1);
  });

  it("a fan-out item retried after a transient failure sends the real secret again", async () => {
    const canary = newCanary();
    const e = await boot({ secretKey: newKey() });
    const r = await api(e);
    expect((await r.call("PUT", `/v1/secrets/${NAME}`, { value: canary })).status).toBe(201);
    sink.reply = (_req, nth) => ({ status: nth === 1 ? 503 : 200, body: { ok: true } });
    const id = await create(r, {
      key: uniq("fan-retry"),
      name: "fan retry",
      root: "fan",
      nodes: [
        {
          key: "fan",
          kind: "for_each",
          retry: { max_attempts: 3, initial_ms: 10, max_ms: 10 },
          config: {
            items: "[1]",
            action: { kind: "http_request", config: { method: "POST", url: `${sink.url}/fan/{{ item }}`, headers: { "x-token": "{{ secrets.CRM_TOKEN }}" } } },
          },
        },
        { key: "done", kind: "end" },
      ],
      edges: [{ from: "fan", port: "next", to: "done" }],
    });
    const run = await ended(e, await enroll(r, id));
    expect(sink.requests.map((q) => q.status)).toEqual([503, 200]);
    expect(run.status).toBe("completed");
    // The first attempt carried the secret; the retry (after the run parked and resumed) must too.
    expect(sink.requests.map((q) => q.headers["x-token"])).toEqual([canary, canary]);
  });

  it("an operator's retry of a failed item sends the real secret again", async () => {
    const canary = newCanary();
    const saw: string[] = [];
    const e = await boot({ secretKey: newKey() }, (eng) => {
      eng.registerAction(
        defineAction({
          kind: "crm.flaky",
          input: z.object({ token: z.string() }),
          handler(input) {
            saw.push(input.token);
            if (saw.length === 1) throw new Error("the CRM is down");
            return { ok: true };
          },
        }),
      );
    });
    const r = await api(e);
    expect((await r.call("PUT", `/v1/secrets/${NAME}`, { value: canary })).status).toBe(201);
    const id = await create(r, {
      key: uniq("op-retry"),
      name: "operator retry",
      root: "fan",
      nodes: [
        { key: "fan", kind: "for_each", config: { items: "[1]", action: { kind: "crm.flaky", config: { token: "{{ secrets.CRM_TOKEN }}" } } } },
        { key: "done", kind: "end" },
      ],
      edges: [{ from: "fan", port: "next", to: "done" }],
    });
    const run = await ended(e, await enroll(r, id));
    expect(run.status).toBe("completed_with_failures");
    const [item] = await e.listItems(WS, run.id);
    const retried = await r.call<{ outcome: string }>("POST", `/v1/automation-runs/${run.id}/items/${item!.id}/retry`);
    expect(retried.status).toBe(200);
    expect(retried.body.outcome).toBe("succeeded");
    expect(saw).toEqual([canary, canary]);
  });

  it("an error body cut mid-secret keeps no piece of it", async () => {
    const canary = newCanary();
    const e = await boot({ secretKey: newKey() });
    const r = await api(e);
    expect((await r.call("PUT", `/v1/secrets/${NAME}`, { value: canary })).status).toBe(201);
    // The step keeps the first 2,000 characters of an error body; the sink puts 20 of the
    // secret's characters before that cut (the body is a JSON string: 1 quote + 1,979 x's + 20).
    sink.reply = () => ({ status: 500, body: `${"x".repeat(1979)}${canary}-tail` });
    const id = await create(r, {
      key: uniq("cut"),
      name: "cut",
      root: "call",
      nodes: [{ key: "call", kind: "http_request", config: { method: "POST", url: `${sink.url}/cut`, body: { token: "{{ secrets.CRM_TOKEN }}" } } }],
    });
    const run = await ended(e, await enroll(r, id));
    expect(run.status).toBe("failed");
    const [step] = await e.listSteps(WS, run.id);
    const kept = String(step!.error!.details!.body);
    // The cut-off piece is replaced by the marker, like a whole secret.
    expect(kept).toBe(`"${"x".repeat(1979)}[secret:${NAME}]`);
    const db = await dumpStore(ts.store);
    expect(db.text.includes(canary)).toBe(false);
    // No prefix of the secret (here: its first 20 characters) survives the cut.
    const prefix = canary.slice(0, 20);
    expect(kept.includes(prefix), `the kept error body ends with the secret's first 20 characters: …${kept.slice(-30)}`).toBe(false);
    expect(db.text.includes(prefix), "a 20-character prefix of the secret is in a table row").toBe(false);
  });
});
