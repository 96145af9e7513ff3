// A tenant that tries to do more than its role, and the operations that must hold against it:
// secret names are the admins', /metrics is the instance admin's (or the ops port's), a 500 is
// logged with its request id and never shows a stack, users can be disabled and demoted (never
// the last admin), tokens per user are bounded, nobody starts a run as someone they could not
// have chosen, the embedded store's files are the owner's only, and a revoked or short
// WEFT_ADMIN_TOKEN neither bricks nor weakens a start (a real `weft start` child process).

import { spawn } from "node:child_process";
import { mkdtempSync, readdirSync, rmSync, statSync, writeFileSync, chmodSync, mkdirSync } from "node:fs";
import type { AddressInfo } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import type { FastifyInstance } from "fastify";
import pino from "pino";
import { Agent, request } from "undici";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { BOOTSTRAP_ADMIN, MAX_TOKENS_PER_USER } from "../src/engine/admin.js";
import { ManualClock } from "../src/engine/clock.js";
import { Engine } from "../src/engine/engine.js";
import { buildApp } from "../src/server/app.js";
import { logServerErrors } from "../src/server/errors.js";
import { STORE_GAUGES_MS } from "../src/server/metrics.js";
import { buildOpsApp } from "../src/server/ops-app.js";
import { EmbeddedStore } from "../src/store/embedded/index.js";
import { WS } from "./helpers/engine.js";
import { makeStore, STORE_KINDS, type TestStore } from "./helpers/stores.js";
import { until } from "./helpers/wait.js";

const ROOT = fileURLToPath(new URL("..", import.meta.url));
const TOKEN = "hostile-ops-admin-token-0123456789abcdef";
const SECRET_KEY = "00112233445566778899aabbccddeeff".repeat(2);

type Method = "GET" | "POST" | "PUT" | "PATCH" | "DELETE";
interface Res<T = any> {
  status: number;
  text: string;
  body: T & { error?: { code: string; message: string; details: Record<string, unknown> } };
}

describe.each(STORE_KINDS)("a hostile tenant over HTTP (%s store)", (kind) => {
  let ts: TestStore;
  let clock: ManualClock;
  let engine: Engine;
  let app: FastifyInstance;
  let base: string;
  let agent: Agent;
  let logLines: Record<string, any>[];

  beforeEach(async () => {
    ts = await makeStore(kind);
    clock = new ManualClock(Date.now());
    engine = new Engine({ store: ts.store, clock, secretKey: SECRET_KEY, noRunner: true });
    await engine.start();
    app = buildApp({ engine, adminToken: TOKEN });
    logLines = [];
    logServerErrors(app, pino({ level: "info" }, { write: (s: string) => void logLines.push(JSON.parse(s)) }));
    await app.listen({ host: "127.0.0.1", port: 0 });
    base = `http://127.0.0.1:${(app.server.address() as AddressInfo).port}`;
    agent = new Agent({ connections: 10 });
  });
  afterEach(async () => {
    await agent.close();
    await app.close();
    await engine.stop();
    await ts.destroy();
  });

  async function http<T = any>(method: Method, path: string, token: string | null, body?: unknown, at = base): Promise<Res<T>> {
    const res = await request(`${at}${path}`, {
      method,
      dispatcher: agent,
      headers: { ...(token !== null ? { authorization: `Bearer ${token}` } : {}), ...(body !== undefined ? { "content-type": "application/json" } : {}) },
      ...(body !== undefined ? { body: JSON.stringify(body) } : {}),
    });
    const text = await res.body.text();
    return { status: res.statusCode, text, body: (text.trimStart().startsWith("{") ? JSON.parse(text) : {}) as Res<T>["body"] };
  }
  const as =
    (token: string | null) =>
    <T = any>(method: Method, path: string, body?: unknown) =>
      http<T>(method, path, token, body);
  const admin = as(TOKEN);
  let seq = 0;
  async function newUser(role: "admin" | "member" | "viewer"): Promise<{ id: string; token: string; token_id: string; call: ReturnType<typeof as> }> {
    const u = await admin<{ id: string }>("POST", "/v1/users", { name: `${role}-${++seq}`, role });
    expect(u.status).toBe(201);
    const t = await admin<{ id: string; token: string }>("POST", "/v1/tokens", { user_id: u.body.id });
    expect(t.status).toBe(201);
    return { id: u.body.id, token: t.body.token, token_id: t.body.id, call: as(t.body.token) };
  }
  const def = (extra: Record<string, unknown> = {}) => {
    const key = `hostile-${++seq}`;
    return {
      key,
      name: key,
      reentry: { policy: "allow_concurrent" },
      root: "s",
      nodes: [{ key: "s", kind: "set", config: { assign: { ok: "true" } } }],
      edges: [],
      ...extra,
    };
  };

  it("secret names are listed to admins only: a viewer and a member get 403 auth.forbidden", async () => {
    expect((await admin("PUT", "/v1/secrets/CRM_KEY", { value: "a-long-enough-secret-value" })).status).toBe(201);
    for (const role of ["viewer", "member"] as const) {
      const u = await newUser(role);
      const res = await u.call("GET", "/v1/secrets");
      expect(res.status).toBe(403);
      expect(res.body.error?.code).toBe("auth.forbidden");
      expect(res.text).not.toContain("CRM_KEY");
    }
    const listed = await admin<{ items: { name: string }[] }>("GET", "/v1/secrets");
    expect(listed.body.items.map((s) => s.name)).toEqual(["CRM_KEY"]);
  });

  it("/metrics on the API port needs an instance admin's token; the ops port serves it to its network", async () => {
    const created = await admin<{ id: string }>("POST", "/v1/automations", { definition: def() });
    expect(created.status).toBe(201);
    await admin("POST", `/v1/automations/${created.body.id}/enroll`, { subject_id: "ct_1" });
    const anonymous = await http("GET", "/metrics", null);
    expect(anonymous.status).toBe(401);
    expect(anonymous.body.error?.code).toBe("auth.missing_token");
    expect(anonymous.text).not.toContain(created.body.id);
    const other = await admin<{ admin_token: string }>("POST", "/v1/workspaces", { name: "other" });
    for (const token of [other.body.admin_token, (await newUser("admin")).token, (await newUser("member")).token]) {
      const res = await http("GET", "/metrics", token);
      expect(res.status).toBe(403);
      expect(res.text).not.toContain(created.body.id);
    }
    const own = await http("GET", "/metrics", TOKEN);
    expect(own.status).toBe(200);
    expect(own.text).toContain(`weft_runs_started_total{automation_id="${created.body.id}"} 1`);
    const ops = buildOpsApp(engine);
    try {
      const res = await ops.inject({ method: "GET", url: "/metrics" });
      expect(res.statusCode).toBe(200);
      expect(res.body).toContain("weft_queue_due_runs");
    } finally {
      await ops.close();
    }
  });

  it(`a scrape storm reads the store-backed gauges at most once per ${STORE_GAUGES_MS} ms`, async () => {
    let reads = 0;
    const queueDepth = ts.store.queueDepth.bind(ts.store);
    ts.store.queueDepth = (...args) => {
      reads += 1;
      return queueDepth(...args);
    };
    const a = await admin<{ id: string }>("POST", "/v1/automations", { definition: def() });
    const scrape = async () => {
      const res = await http("GET", "/metrics", TOKEN);
      expect(res.status).toBe(200);
      return Number(/^weft_queue_due_runs (\d+)$/m.exec(res.text)?.[1]);
    };
    await Promise.all(Array.from({ length: 25 }, scrape));
    expect(reads).toBe(1);
    // A new due run is shown once the cached read is older than the period (no runner: it stays due).
    const before = await scrape();
    await admin("POST", `/v1/automations/${a.body.id}/enroll`, { subject_id: "ct_storm" });
    clock.advance(STORE_GAUGES_MS);
    expect(await scrape()).toBe(before + 1);
    expect(reads).toBe(2);
  });

  it("a 500 is logged with its request id and stack; the client gets server.internal with that id and no stack", async () => {
    ts.store.listAutomations = async () => {
      throw new Error("the disk is on fire");
    };
    const res = await admin("GET", "/v1/automations");
    expect(res.status).toBe(500);
    expect(res.body.error?.code).toBe("server.internal");
    const requestId = res.body.error?.details.request_id;
    expect(typeof requestId).toBe("string");
    expect(res.text).not.toContain("the disk is on fire");
    expect(res.text).not.toMatch(/\bat .*\.ts:\d+/);
    const line = await until("the 500 to be logged", () => logLines.find((l) => l.request_id === requestId));
    expect(line.level).toBe(50);
    expect(line.err.message).toBe("the disk is on fire");
    expect(line.err.stack).toContain("the disk is on fire");
  });

  it("PATCH /v1/users: a disabled user's tokens stop at once, a role change applies to existing tokens, both audited; re-enabled works again", async () => {
    const m = await newUser("member");
    const created = await m.call<{ id: string }>("POST", "/v1/automations", { definition: def() });
    expect(created.status).toBe(201);
    // Demoted to viewer: the same token now reads only.
    const demoted = await admin("PATCH", `/v1/users/${m.id}`, { role: "viewer" });
    expect(demoted.status).toBe(200);
    expect(demoted.body).toMatchObject({ id: m.id, role: "viewer", disabled: false });
    const write = await m.call("POST", `/v1/automations/${created.body.id}/pause`);
    expect(write.status).toBe(403);
    expect((await m.call("GET", "/v1/automations")).status).toBe(200);
    // Disabled: 401 on the very next call (the cache was warm).
    expect((await admin("PATCH", `/v1/users/${m.id}`, { disabled: true })).body.disabled).toBe(true);
    const off = await m.call("GET", "/v1/automations");
    expect(off.status).toBe(401);
    expect(off.body.error?.code).toBe("auth.invalid_token");
    // Nor can a disabled user be given a fresh token that works.
    const fresh = await admin<{ token: string }>("POST", "/v1/tokens", { user_id: m.id });
    expect((await http("GET", "/v1/automations", fresh.body.token)).status).toBe(401);
    expect((await admin("PATCH", `/v1/users/${m.id}`, { disabled: false })).status).toBe(200);
    expect((await m.call("GET", "/v1/automations")).status).toBe(200);
    const audit = await admin<{ items: { action: string; target_id: string; details: Record<string, unknown> }[] }>("GET", "/v1/audit-log");
    const updates = audit.body.items.filter((e) => e.action === "user.update" && e.target_id === m.id).map((e) => e.details);
    expect(updates).toEqual(expect.arrayContaining([{ role: "viewer" }, { disabled: true }, { disabled: false }]));
    // Only admins change users; bad input is a structured error naming the field.
    expect((await m.call("PATCH", `/v1/users/${m.id}`, { role: "admin" })).status).toBe(403);
    const bad = await admin("PATCH", `/v1/users/${m.id}`, { role: "owner" });
    expect(bad.status).toBe(400);
    expect(bad.body.error?.details.pointer).toBe("/role");
    expect((await admin("PATCH", "/v1/users/usr_nobody", { disabled: true })).status).toBe(404);
  });

  it("the last enabled admin of a workspace can be neither disabled nor demoted (409); with a second admin it can", async () => {
    const other = await admin<{ id: string; admin_user_id: string; admin_token: string }>("POST", "/v1/workspaces", { name: "solo" });
    const solo = as(other.body.admin_token);
    for (const patch of [{ disabled: true }, { role: "member" }]) {
      const res = await solo("PATCH", `/v1/users/${other.body.admin_user_id}`, patch);
      expect(res.status).toBe(409);
      expect(res.body.error?.code).toBe("users.last_admin");
    }
    expect((await solo("GET", "/v1/users")).status).toBe(200);
    const second = await solo<{ id: string }>("POST", "/v1/users", { name: "second", role: "admin" });
    expect((await solo("PATCH", `/v1/users/${second.body.id}`, { disabled: true })).status).toBe(200);
    // A disabled admin does not count: the first is still the last enabled one.
    expect((await solo("PATCH", `/v1/users/${other.body.admin_user_id}`, { role: "member" })).status).toBe(409);
    expect((await solo("PATCH", `/v1/users/${second.body.id}`, { disabled: false })).status).toBe(200);
    expect((await solo("PATCH", `/v1/users/${other.body.admin_user_id}`, { role: "member" })).status).toBe(200);
    expect((await ts.store.getUser(other.body.id, other.body.admin_user_id))?.role).toBe("member");
    // In the default workspace, another admin cannot disable or demote the instance admin.
    const deputy = await newUser("admin");
    const coup = await deputy.call("PATCH", `/v1/users/${BOOTSTRAP_ADMIN}`, { disabled: true });
    expect(coup.status).toBe(403);
    expect(coup.body.error?.code).toBe("auth.forbidden");
    expect((await admin("GET", "/v1/users")).status).toBe(200);
  });

  it(`a user holds at most ${MAX_TOKENS_PER_USER} active tokens: beyond, 409 tokens.limit; a revocation frees a slot`, async () => {
    const m = await newUser("member"); // holds one already
    const ids: string[] = [m.token_id];
    for (let i = 1; i < MAX_TOKENS_PER_USER; i++) {
      const t = await m.call<{ id: string }>("POST", "/v1/tokens", {});
      expect(t.status).toBe(201);
      ids.push(t.body.id);
    }
    const over = await m.call("POST", "/v1/tokens", {});
    expect(over.status).toBe(409);
    expect(over.body.error).toMatchObject({ code: "tokens.limit", details: { pointer: "/user_id", limit: MAX_TOKENS_PER_USER } });
    expect((await admin("POST", "/v1/tokens", { user_id: m.id })).status).toBe(409);
    expect(
      (await admin<{ items: { user_id: string; revoked_at: string | null }[] }>("GET", "/v1/tokens")).body.items.filter((t) => t.user_id === m.id),
    ).toHaveLength(MAX_TOKENS_PER_USER);
    expect((await m.call("DELETE", `/v1/tokens/${ids[1]}`)).status).toBe(204);
    expect((await m.call("POST", "/v1/tokens", {})).status).toBe(201);
  });

  it("a member can neither enroll into nor retrigger a run of an automation that runs as someone else (403 auth.run_as_forbidden)", async () => {
    const m = await newUser("member");
    const asAdmin = await admin<{ id: string; version: number }>("POST", "/v1/automations", {
      definition: def({ run_as: { type: "user", user_id: BOOTSTRAP_ADMIN } }),
    });
    expect(asAdmin.status).toBe(201);
    const refused = await m.call("POST", `/v1/automations/${asAdmin.body.id}/enroll`, { subject_id: "ct_1" });
    expect(refused.status).toBe(403);
    expect(refused.body.error?.code).toBe("auth.run_as_forbidden");
    expect((await engine.listRuns({ workspace_id: WS, automation_id: asAdmin.body.id })).items).toHaveLength(0);
    expect((await admin("POST", `/v1/automations/${asAdmin.body.id}/enroll`, { subject_id: "ct_1" })).status).toBe(201);
    // The member's own run-as is theirs to use.
    const mine = await admin<{ id: string }>("POST", "/v1/automations", { definition: def({ run_as: { type: "user", user_id: m.id } }) });
    expect((await m.call("POST", `/v1/automations/${mine.body.id}/enroll`, { subject_id: "ct_2" })).status).toBe(201);

    // Retrigger: a run the member started, of an automation whose current version now runs as the admin.
    const plain = def();
    const open = await admin<{ id: string; version: number }>("POST", "/v1/automations", { definition: plain });
    const run = await m.call<{ id: string }>("POST", `/v1/automations/${open.body.id}/enroll`, { subject_id: "ct_3" });
    expect(run.status).toBe(201);
    const v2 = await admin("PUT", `/v1/automations/${open.body.id}`, {
      definition: { ...plain, run_as: { type: "user", user_id: BOOTSTRAP_ADMIN } },
      expected_version: 1,
    });
    expect(v2.status).toBe(200);
    const retrigger = await m.call("POST", `/v1/automation-runs/${run.body.id}/retrigger`, {});
    expect(retrigger.status).toBe(403);
    expect(retrigger.body.error?.code).toBe("auth.run_as_forbidden");
    expect((await engine.listRuns({ workspace_id: WS, automation_id: open.body.id })).items).toHaveLength(1);
    expect((await admin("POST", `/v1/automation-runs/${run.body.id}/retrigger`, {})).status).toBe(201);
  });
});

describe("the embedded store's files are the owner's only", () => {
  const dirs: string[] = [];
  afterEach(() => {
    for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
  });
  const mode = (p: string) => statSync(p).mode & 0o777;

  it("a new data folder is 0700 and the database, its -wal and -shm 0600", async () => {
    const parent = mkdtempSync(join(tmpdir(), "weft-files-"));
    dirs.push(parent);
    const dir = join(parent, ".weft");
    const store = new EmbeddedStore({ file: join(dir, "weft.db") });
    try {
      await store.migrate();
      expect(mode(dir)).toBe(0o700);
      const files = readdirSync(dir);
      expect(files).toEqual(expect.arrayContaining(["weft.db", "weft.db-wal", "weft.db-shm"]));
      for (const f of files) expect([f, mode(join(dir, f))]).toEqual([f, 0o600]);
    } finally {
      await store.close();
    }
  });

  it("an existing looser folder and database are tightened at start, with a warning naming them", async () => {
    const dir = mkdtempSync(join(tmpdir(), "weft-files-"));
    dirs.push(dir);
    chmodSync(dir, 0o755);
    const file = join(dir, "weft.db");
    writeFileSync(file, "");
    chmodSync(file, 0o644);
    const warnings: string[] = [];
    const onWarning = (w: Error) => warnings.push(w.message);
    process.on("warning", onWarning);
    const store = new EmbeddedStore({ file });
    try {
      expect(mode(dir)).toBe(0o700);
      expect(mode(file)).toBe(0o600);
      await until("the warnings", () => warnings.length >= 2);
      expect(warnings.some((w) => w.includes(dir) && w.includes("0755"))).toBe(true);
      expect(warnings.some((w) => w.includes(file) && w.includes("0644"))).toBe(true);
    } finally {
      process.off("warning", onWarning);
      await store.close();
    }
  });
});

describe("WEFT_ADMIN_TOKEN at start (a real weft start)", () => {
  const dirs: string[] = [];
  afterEach(() => {
    for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
  });

  interface Child {
    url: Promise<string>;
    exited: Promise<number | null>;
    output: () => string;
    kill: () => Promise<void>;
  }
  function start(dataDir: string, token: string): Child {
    const proc = spawn(process.execPath, ["--import", "tsx", "src/cli/main.ts", "start"], {
      cwd: ROOT,
      env: { ...process.env, WEFT_DATABASE_URL: "", WEFT_DATA_DIR: dataDir, WEFT_PORT: "0", WEFT_HOST: "127.0.0.1", WEFT_ADMIN_TOKEN: token, WEFT_SAMPLE: "0" },
      stdio: ["ignore", "pipe", "pipe"],
    });
    let out = "";
    const exited = new Promise<number | null>((resolve) => proc.on("exit", (code) => resolve(code)));
    const url = new Promise<string>((resolve, reject) => {
      proc.stdout!.on("data", (d: Buffer) => {
        out += d.toString();
        const m = /listening on (http:\/\/[^\s]+)/.exec(out);
        if (m) resolve(m[1]!);
      });
      proc.stderr!.on("data", (d: Buffer) => (out += d.toString()));
      void exited.then((code) => reject(new Error(`weft start exited (${code}) before listening:\n${out}`)));
    });
    url.catch(() => undefined);
    return {
      url,
      exited,
      output: () => out,
      kill: async () => {
        if (proc.exitCode === null && proc.signalCode === null) proc.kill("SIGKILL");
        await exited;
      },
    };
  }

  it("a revoked configured token is not re-created and does not brick the next start, which says it is ignored", async () => {
    const dir = mkdtempSync(join(tmpdir(), "weft-boot-"));
    dirs.push(dir);
    const token = `wft_${"r".repeat(40)}`;
    const first = start(dir, token);
    try {
      const base = await first.url;
      const auth = { authorization: `Bearer ${token}` };
      const tokens = (await (await fetch(`${base}/v1/tokens`, { headers: auth })).json()) as { items: { id: string; revoked_at: string | null }[] };
      const live = tokens.items.filter((t) => t.revoked_at === null);
      expect(live).toHaveLength(1);
      expect((await fetch(`${base}/v1/tokens/${live[0]!.id}`, { method: "DELETE", headers: auth })).status).toBe(204);
    } finally {
      await first.kill();
    }
    const second = start(dir, token);
    try {
      const base = await second.url;
      await until("the start to say the token is revoked", () => /revoked/.test(second.output()) && /WEFT_ADMIN_TOKEN/.test(second.output()));
      expect((await fetch(`${base}/v1/automations`, { headers: { authorization: `Bearer ${token}` } })).status).toBe(401);
    } finally {
      await second.kill();
    }
  });

  it("a token shorter than 32 characters is a configuration error: exit 2 with a clear message, nothing started", async () => {
    const dir = mkdtempSync(join(tmpdir(), "weft-boot-"));
    dirs.push(dir);
    rmSync(dir, { recursive: true });
    mkdirSync(dir);
    const child = start(dir, "short-token");
    expect(await child.exited).toBe(2);
    expect(child.output()).toMatch(/WEFT_ADMIN_TOKEN must be at least 32 characters/);
    expect(readdirSync(dir)).toEqual([]);
  });
});
