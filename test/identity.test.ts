// Identities over real HTTP: tokens (random, shown once, stored only as a hash, revocable),
// roles (viewers read, members act, admins manage users, tokens, secrets and read the audit log),
// workspaces (only an instance admin creates them), run-as visibility (a run that executes as a
// user is that user's and the admins'), approvers (user:<id>, role:<role>), and the sweep: every
// route the app registers, called by another workspace's admin with this workspace's real ids,
// answers as if they did not exist and says nothing about them.

import { createHash, randomBytes } from "node:crypto";
import type { AddressInfo } from "node:net";
import type { FastifyInstance } from "fastify";
import { Agent, request } from "undici";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { z } from "zod";
import { defineAction } from "../src/engine/actions.js";
import { BOOTSTRAP_ADMIN } from "../src/engine/admin.js";
import { ManualClock } from "../src/engine/clock.js";
import { Engine } from "../src/engine/engine.js";
import type { Run, Store } from "../src/engine/store.js";
import { buildApp } from "../src/server/app.js";
import type { EmbeddedStore } from "../src/store/embedded/index.js";
import type { PostgresStore } from "../src/store/postgres/index.js";
import { LOOPBACK, WS } from "./helpers/engine.js";
import { makeStore, STORE_KINDS, type TestStore } from "./helpers/stores.js";
import { until } from "./helpers/wait.js";

const TOKEN = "identity-admin-token";
const ADMIN = `user:${BOOTSTRAP_ADMIN}`;
/** 32 bytes as 64 hex digits (WEFT_SECRET_KEY). */
const SECRET_KEY = "00112233445566778899aabbccddeeff".repeat(2);

type Method = "GET" | "POST" | "PUT" | "PATCH" | "DELETE";
interface Res<T = any> {
  status: number;
  text: string;
  body: T & { error?: { code: string; message: string; details: Record<string, unknown> } };
}
interface RunJson {
  id: string;
  workspace_id: string;
  automation_id: string;
  version: number;
  status: string;
  run_as: { type: string; user_id?: string };
}

const hex = (bytes: number) => randomBytes(bytes).toString("hex");
const sha256 = (s: string) => createHash("sha256").update(s).digest("hex");

/** Every row of the tokens table, straight from the store (no engine code in between). */
async function tokenRows(store: Store): Promise<Record<string, unknown>[]> {
  if (store.kind === "postgres") return (await (store as PostgresStore).pool.query("select * from tokens")).rows as Record<string, unknown>[];
  return (store as EmbeddedStore).db.prepare("select * from tokens").all() as Record<string, unknown>[];
}

describe.each(STORE_KINDS)("identities (%s store)", (kind) => {
  let ts: TestStore;
  let engine: Engine;
  let app: FastifyInstance;
  let base: string;
  let agent: Agent;
  let errors: unknown[];
  /** Extra engines/apps a test started (a second process's view). */
  let extra: { engine: Engine; app: FastifyInstance }[];

  beforeEach(async () => {
    ts = await makeStore(kind);
    engine = new Engine({ httpAllow: LOOPBACK, store: ts.store, secretKey: SECRET_KEY, runner: { leaseMs: 30_000, pollMs: 20 } });
    engine.registerAction(
      defineAction({
        kind: "sweep.touch",
        input: z.object({ thing: z.string() }),
        handler: (input) => ({ touched: input.thing }),
      }),
    );
    engine.registerAction(
      defineAction({
        kind: "who.am_i",
        input: z.object({}),
        handler: (_input, ctx) => ({ run_as: ctx.run_as }),
      }),
    );
    errors = [];
    engine.events.on("engine:error", (e) => errors.push(e));
    await engine.start();
    app = buildApp({ engine, adminToken: TOKEN });
    await app.listen({ host: "127.0.0.1", port: 0 });
    base = `http://127.0.0.1:${(app.server.address() as AddressInfo).port}`;
    agent = new Agent({ connections: 20 });
    extra = [];
  });
  afterEach(async () => {
    await agent.close();
    for (const x of extra) {
      await x.app.close();
      await x.engine.stop();
    }
    await app.close();
    await engine.stop();
    await ts.destroy();
    expect(errors).toEqual([]);
  });

  /** One HTTP call; `token: null` sends no Authorization header. */
  async function http<T = any>(
    method: Method,
    path: string,
    token: string | null,
    body?: unknown,
    at = base,
    headers: Record<string, string> = {},
  ): Promise<Res<T>> {
    const res = await request(`${at}${path}`, {
      method,
      dispatcher: agent,
      headers: {
        ...(token !== null ? { authorization: `Bearer ${token}` } : {}),
        ...(body !== undefined ? { "content-type": "application/json" } : {}),
        ...headers,
      },
      ...(body !== undefined ? { body: JSON.stringify(body) } : {}),
    });
    const text = await res.body.text();
    return {
      status: res.statusCode,
      text,
      body: (text === "" || (!text.trimStart().startsWith("{") && !text.trimStart().startsWith("[")) ? {} : JSON.parse(text)) as Res<T>["body"],
    };
  }
  /** A client bound to one token. */
  const as =
    (token: string | null) =>
    <T = any>(method: Method, path: string, body?: unknown) =>
      http<T>(method, path, token, body);
  const admin = as(TOKEN);

  let seq = 0;
  async function newUser(
    role: "admin" | "member" | "viewer",
    call = admin,
  ): Promise<{ id: string; token: string; token_id: string; call: ReturnType<typeof as> }> {
    const u = await call<{ id: string }>("POST", "/v1/users", { name: `${role}-${++seq}`, role });
    expect(u.status).toBe(201);
    const t = await call<{ id: string; token: string }>("POST", "/v1/tokens", { user_id: u.body.id });
    expect(t.status).toBe(201);
    return { id: u.body.id, token: t.body.token, token_id: t.body.id, call: as(t.body.token) };
  }

  const setNode = { key: "s", kind: "set", config: { assign: { ok: "true" } } };
  function def(extraFields: Record<string, unknown> = {}, nodes: unknown[] = [setNode], edges: unknown[] = []) {
    const key = `id-${kind}-${++seq}`;
    return { key, name: key, reentry: { policy: "allow_concurrent" }, root: (nodes[0] as { key: string }).key, nodes, edges, ...extraFields };
  }
  async function createAutomation(
    definition: Record<string, unknown>,
    call = admin,
  ): Promise<{ id: string; key: string; hooks?: { id: string; secret: string }[] }> {
    const res = await call("POST", "/v1/automations", { definition });
    expect(res.status, res.text).toBe(201);
    return res.body;
  }
  async function enroll(automationId: string, body: Record<string, unknown> = {}, call = admin): Promise<RunJson> {
    const res = await call<RunJson>("POST", `/v1/automations/${automationId}/enroll`, body);
    expect(res.status, res.text).toBe(201);
    return res.body;
  }
  const parkedOnApproval = (r: Run) => r.status === "waiting" && r.waiting_for === "approval";
  async function approvalOf(runId: string): Promise<{ id: string; status: string }> {
    const list = await admin<{ items: { id: string; run_id: string; status: string }[] }>("GET", "/v1/approvals?limit=500");
    const mine = list.body.items.filter((a) => a.run_id === runId);
    expect(mine).toHaveLength(1);
    return mine[0]!;
  }

  // ---------------------------------------------------------------------------------------------

  it("tokens: issued once, never listed, stored only as a hash; a revoked token is refused (here at once, elsewhere within the cache window); no header is 401", async () => {
    const user = await admin<{ id: string; name: string; role: string; instance_admin: boolean }>("POST", "/v1/users", { name: "Mia", role: "member" });
    expect(user.status).toBe(201);
    expect(user.body).toMatchObject({ name: "Mia", role: "member", instance_admin: false });
    expect(user.body.id).toMatch(/^usr_/);

    const issued = await admin<{ id: string; token: string; user_id: string }>("POST", "/v1/tokens", { user_id: user.body.id });
    expect(issued.status).toBe(201);
    expect(issued.body.id).toMatch(/^tok_/);
    expect(issued.body.user_id).toBe(user.body.id);
    const token = issued.body.token;
    expect(typeof token).toBe("string");
    expect(token.length).toBeGreaterThanOrEqual(32);
    const mia = as(token);
    expect((await mia("GET", "/v1/automations")).status).toBe(200);

    // Listed without the token (nor any other token's text).
    const listed = await admin<{ items: Record<string, unknown>[] }>("GET", "/v1/tokens");
    expect(listed.status).toBe(200);
    expect(listed.body.items.find((t) => t.id === issued.body.id)).toMatchObject({ id: issued.body.id, user_id: user.body.id, revoked_at: null });
    for (const t of listed.body.items) expect(Object.keys(t)).not.toContain("token");
    expect(listed.text).not.toContain(token);
    expect(listed.text).not.toContain(TOKEN);
    // The audit log names the issue, never the token.
    const audit = await admin<{ items: { action: string; actor: string; target_id: string }[] }>("GET", "/v1/audit-log?limit=500");
    expect(audit.body.items.filter((e) => e.action === "token.issue" && e.target_id === issued.body.id)).toMatchObject([{ actor: ADMIN }]);
    expect(audit.text).not.toContain(token);

    // The store holds the SHA-256 and nothing from which the token reads back.
    const rows = await tokenRows(ts.store);
    const row = rows.find((r) => r.id === issued.body.id);
    expect(row).toBeDefined();
    expect(Object.values(row!)).toContain(sha256(token));
    for (const r of rows) {
      for (const [col, v] of Object.entries(r)) {
        const s = v instanceof Date ? v.toISOString() : String(v);
        expect(s.includes(token), `tokens.${col} holds the token`).toBe(false);
        expect(s.includes(TOKEN), `tokens.${col} holds the admin token`).toBe(false);
      }
    }

    // A second process (its own token cache, its own clock) has seen the token.
    const clock2 = new ManualClock(Date.now());
    const engine2 = new Engine({ store: ts.reopen(), clock: clock2, noRunner: true });
    await engine2.start();
    const app2 = buildApp({ engine: engine2, adminToken: TOKEN });
    extra.push({ engine: engine2, app: app2 });
    await app2.listen({ host: "127.0.0.1", port: 0 });
    const base2 = `http://127.0.0.1:${(app2.server.address() as AddressInfo).port}`;
    expect((await http("GET", "/v1/automations", token, undefined, base2)).status).toBe(200);

    const revoked = await admin("DELETE", `/v1/tokens/${issued.body.id}`);
    expect(revoked.status).toBe(204);
    expect(revoked.text).toBe("");
    // In the process that revoked it: refused.
    await until("the revoked token to be refused", async () => (await mia("GET", "/v1/automations")).status === 401);
    const refused = await mia("GET", "/v1/automations");
    expect(refused.status).toBe(401);
    expect(refused.body.error?.code).toBe("auth.invalid_token");
    // In the other process: refused once its cache window (1 s) has passed.
    clock2.advance(1001);
    const refused2 = await http("GET", "/v1/automations", token, undefined, base2);
    expect(refused2.status).toBe(401);
    expect(refused2.body.error?.code).toBe("auth.invalid_token");
    // A fresh process never accepts it.
    const engine3 = new Engine({ store: ts.reopen(), noRunner: true });
    await engine3.start();
    const app3 = buildApp({ engine: engine3, adminToken: TOKEN });
    extra.push({ engine: engine3, app: app3 });
    await app3.ready();
    const inj = await app3.inject({ method: "GET", url: "/v1/automations", headers: { authorization: `Bearer ${token}` } });
    expect(inj.statusCode).toBe(401);
    expect(inj.json().error.code).toBe("auth.invalid_token");

    // Shown as revoked; revoking again is 404; the row still holds no token.
    const after = await admin<{ items: { id: string; revoked_at: string | null }[] }>("GET", "/v1/tokens");
    expect(after.body.items.find((t) => t.id === issued.body.id)!.revoked_at).not.toBeNull();
    const again = await admin("DELETE", `/v1/tokens/${issued.body.id}`);
    expect(again.status).toBe(404);
    expect(again.body.error?.code).toBe("token.not_found");
    expect(JSON.stringify(await tokenRows(ts.store))).not.toContain(token);
    // The admin's own token is untouched.
    expect((await admin("GET", "/v1/automations")).status).toBe(200);

    // No header, a malformed header, an unknown token.
    const none = await http("GET", "/v1/automations", null);
    expect(none.status).toBe(401);
    expect(none.body.error?.code).toBe("auth.missing_token");
    const basic = await http("GET", "/v1/automations", null, undefined, base, { authorization: "Basic abc" });
    expect(basic.status).toBe(401);
    expect(basic.body.error?.code).toBe("auth.missing_token");
    const unknown = await http("GET", "/v1/automations", `wft_${hex(24)}`);
    expect(unknown.status).toBe(401);
    expect(unknown.body.error?.code).toBe("auth.invalid_token");
    // Unauthenticated by design.
    expect((await http("GET", "/healthz", null)).status).toBe(200);
  });

  it("a member issues tokens for itself only; a member cannot revoke another user's token", async () => {
    const m = await newUser("member");
    const other = await newUser("member");
    const own = await m.call<{ id: string; token: string; user_id: string }>("POST", "/v1/tokens", {});
    expect(own.status).toBe(201);
    expect(own.body.user_id).toBe(m.id);
    const forOther = await m.call("POST", "/v1/tokens", { user_id: other.id });
    expect(forOther.status).toBe(403);
    expect(forOther.body.error?.code).toBe("auth.forbidden");
    const revokeOther = await m.call("DELETE", `/v1/tokens/${other.token_id}`);
    expect(revokeOther.status).toBe(403);
    expect((await other.call("GET", "/v1/automations")).status).toBe(200);
    expect((await m.call("DELETE", `/v1/tokens/${own.body.id}`)).status).toBe(204);
  });

  it("roles: a viewer reads (and simulates) but changes nothing; a member acts but manages no users, secrets or audit; an admin does", async () => {
    const viewer = await newUser("viewer");
    const member = await newUser("member");
    const a = await createAutomation(def());

    // Viewer: reads.
    expect((await viewer.call("GET", "/v1/automations")).status).toBe(200);
    expect((await viewer.call("GET", `/v1/automations/${a.id}`)).status).toBe(200);
    expect((await viewer.call("GET", "/v1/automation-runs")).status).toBe(200);
    // ...may simulate (a POST that changes nothing)...
    const sim = await viewer.call("POST", `/v1/automations/${a.id}/simulate`, {});
    expect(sim.status, sim.text).toBe(200);
    // ...and changes nothing.
    const before = (await admin<{ items: unknown[] }>("GET", "/v1/automations")).body.items.length;
    for (const [method, path, body] of [
      ["POST", "/v1/automations", { definition: def() }],
      ["PUT", `/v1/automations/${a.id}`, { definition: { ...def(), key: a.key } }],
      ["POST", `/v1/automations/${a.id}/pause`, {}],
      ["POST", `/v1/automations/${a.id}/enroll`, {}],
      ["POST", "/v1/events", { type: "viewer.tried" }],
      ["POST", "/v1/subjects/ct_v/automation-pause", { pause_reason: "viewer" }],
      ["POST", "/v1/tokens", {}],
      ["PUT", "/v1/secrets/x", { value: "viewer-secret-value" }],
    ] as const) {
      const res = await viewer.call(method, path, body);
      expect(res.status, `viewer ${method} ${path}`).toBe(403);
      expect(res.body.error?.code).toBe("auth.forbidden");
    }
    expect((await admin<{ items: unknown[] }>("GET", "/v1/automations")).body.items.length).toBe(before);
    expect((await admin<{ items: unknown[] }>("GET", `/v1/automations/${a.id}/runs`)).body.items).toEqual([]);
    expect((await viewer.call("GET", "/v1/audit-log")).status).toBe(403);

    // Member: creates automations and enrolls.
    const ma = await createAutomation(def(), member.call);
    const run = await enroll(ma.id, { subject_id: "ct_m" }, member.call);
    expect(run.automation_id).toBe(ma.id);
    expect((await engine.waitForRun(WS, run.id)).status).toBe("completed");
    // ...but manages no users, tokens of others, secrets, nor reads the audit log.
    const addUser = await member.call("POST", "/v1/users", { name: "sneaky", role: "admin" });
    expect(addUser.status).toBe(403);
    expect(addUser.body.error?.code).toBe("auth.forbidden");
    expect((await member.call("GET", "/v1/users")).status).toBe(403);
    expect((await member.call("GET", "/v1/tokens")).status).toBe(403);
    const memberSecret = await member.call("PUT", "/v1/secrets/x", { value: "member-secret-value" });
    expect(memberSecret.status).toBe(403);
    expect(memberSecret.body.error?.code).toBe("auth.forbidden");
    expect((await member.call("DELETE", "/v1/secrets/x")).status).toBe(403);
    const memberAudit = await member.call("GET", "/v1/audit-log");
    expect(memberAudit.status).toBe(403);
    expect(memberAudit.body.error?.code).toBe("auth.forbidden");

    // Admin: secrets (values never come back) and the audit log, which names the member's acts.
    const put = await admin("PUT", "/v1/secrets/x", { value: "admin-secret-value" });
    expect(put.status).toBe(201);
    expect(put.body).toMatchObject({ name: "x", created: true });
    const secrets = await admin<{ items: { name: string }[] }>("GET", "/v1/secrets");
    expect(secrets.body.items.map((s) => s.name)).toEqual(["x"]);
    expect(secrets.text).not.toContain("admin-secret-value");
    const audit = await admin<{ items: { action: string; actor: string; target_id: string }[] }>("GET", "/v1/audit-log?limit=500");
    expect(audit.status).toBe(200);
    expect(audit.body.items.filter((e) => e.target_id === ma.id && e.action === "automation.create")).toMatchObject([{ actor: `user:${member.id}` }]);
    expect(audit.body.items.filter((e) => e.target_id === run.id && e.action === "run.enroll")).toMatchObject([{ actor: `user:${member.id}` }]);
    expect(audit.body.items.filter((e) => e.action === "secret.put" && e.target_id === "x")).toMatchObject([{ actor: ADMIN }]);
    expect(audit.text).not.toContain("admin-secret-value");
    // Refused attempts left no entries.
    expect(audit.body.items.some((e) => e.actor === `user:${viewer.id}`)).toBe(false);
  });

  it("workspaces: the instance admin creates one (its admin token works there, and sees nothing of the first); its admin cannot create another", async () => {
    const created = await admin<{ id: string; name: string; admin_user_id: string; admin_token: string }>("POST", "/v1/workspaces", { name: "Second" });
    expect(created.status).toBe(201);
    expect(created.body.id).toMatch(/^wsp_/);
    expect(created.body.id).not.toBe(WS);
    expect(created.body.name).toBe("Second");
    expect(typeof created.body.admin_token).toBe("string");
    const b = as(created.body.admin_token);
    expect((await b<{ items: unknown[] }>("GET", "/v1/automations")).body.items).toEqual([]);
    const users = await b<{ items: { id: string; role: string; instance_admin: boolean }[] }>("GET", "/v1/users");
    expect(users.body.items).toEqual([expect.objectContaining({ id: created.body.admin_user_id, role: "admin", instance_admin: false })]);

    const nested = await b("POST", "/v1/workspaces", { name: "Third" });
    expect(nested.status).toBe(403);
    expect(nested.body.error?.code).toBe("auth.forbidden");
    // Neither can a member of the default workspace.
    const member = await newUser("member");
    expect((await member.call("POST", "/v1/workspaces", { name: "Fourth" })).status).toBe(403);
    // A workspace admin of the default workspace who is not the instance admin cannot either.
    const admin2 = await newUser("admin");
    expect((await admin2.call("POST", "/v1/workspaces", { name: "Fifth" })).status).toBe(403);
  });

  it("run-as: a run that executes as a user is seen by that user and admins only; workspace runs by all; run-as is fixed at run start", async () => {
    const alice = await newUser("member");
    const bob = await newUser("member");
    const viewer = await newUser("viewer");
    // approval (any member) → who.am_i: parks first, so the definition can change under it.
    const nodes = [
      { key: "ask", kind: "approval", config: { title: "go?", approvers: [] } },
      { key: "who", kind: "who.am_i", config: {} },
    ];
    const edges = [{ from: "ask", port: "approved", to: "who" }];
    const d = def({ run_as: { type: "user", user_id: alice.id } }, nodes, edges);
    const a = await createAutomation(d);
    const run = await enroll(a.id, { subject_id: "ct_ra" });
    expect(run.run_as).toEqual({ type: "user", user_id: alice.id });
    await engine.waitForRun(WS, run.id, parkedOnApproval);

    // Alice and admins see it; Bob and the viewer do not: 404 (not 403), and lists omit it.
    const ids = async (call: ReturnType<typeof as>, path: string) => {
      const res = await call<{ items: { id: string }[] }>("GET", path);
      expect(res.status).toBe(200);
      return res.body.items.map((x) => x.id);
    };
    for (const who of [alice.call, admin]) {
      expect((await who("GET", `/v1/automation-runs/${run.id}`)).status).toBe(200);
      expect((await who("GET", `/v1/automation-runs/${run.id}/steps`)).status).toBe(200);
      expect(await ids(who, "/v1/automation-runs")).toContain(run.id);
      expect(await ids(who, `/v1/automations/${a.id}/runs`)).toContain(run.id);
      expect(await ids(who, `/v1/automation-runs?automation_id=${a.id}`)).toContain(run.id);
    }
    const apr = await approvalOf(run.id);
    for (const who of [bob.call, viewer.call]) {
      const got = await who("GET", `/v1/automation-runs/${run.id}`);
      expect(got.status).toBe(404);
      expect(got.body.error?.code).toBe("run.not_found");
      for (const sub of ["steps", "items"]) expect((await who("GET", `/v1/automation-runs/${run.id}/${sub}`)).status).toBe(404);
      expect(await ids(who, "/v1/automation-runs")).not.toContain(run.id);
      expect(await ids(who, `/v1/automations/${a.id}/runs`)).not.toContain(run.id);
      expect(await ids(who, `/v1/automation-runs?automation_id=${a.id}&subject_id=ct_ra`)).not.toContain(run.id);
      expect((await who("GET", `/v1/approvals/${apr.id}`)).status).toBe(404);
    }
    for (const verb of ["stop", "cancel", "retrigger"]) {
      const res = await bob.call("POST", `/v1/automation-runs/${run.id}/${verb}`, {});
      expect(res.status, verb).toBe(404);
      expect(res.body.error?.code).toBe("run.not_found");
    }
    const bobDecides = await bob.call("POST", `/v1/approvals/${apr.id}/approve`, {});
    expect(bobDecides.status).toBe(404);
    expect(bobDecides.body.error?.code).toBe("approval.not_found");
    expect((await engine.getRun(WS, run.id)).status).toBe("waiting");

    // A workspace run is everyone's to see.
    const w = await createAutomation(def({ run_as: { type: "workspace" } }));
    const wrun = await enroll(w.id, { subject_id: "ct_w" });
    await engine.waitForRun(WS, wrun.id);
    for (const who of [alice.call, bob.call, viewer.call, admin]) {
      expect((await who("GET", `/v1/automation-runs/${wrun.id}`)).status).toBe(200);
      expect(await ids(who, "/v1/automation-runs")).toContain(wrun.id);
    }

    // Version 2 runs as Bob; the parked run stays Alice's (and still executes as Alice).
    const put = await admin("PUT", `/v1/automations/${a.id}`, { definition: { ...d, run_as: { type: "user", user_id: bob.id } } });
    expect(put.status, put.text).toBe(200);
    expect(put.body.version).toBe(2);
    const still = await admin<RunJson>("GET", `/v1/automation-runs/${run.id}`);
    expect(still.body).toMatchObject({ version: 1, run_as: { type: "user", user_id: alice.id } });
    expect((await bob.call("GET", `/v1/automation-runs/${run.id}`)).status).toBe(404);
    expect((await alice.call("GET", `/v1/automation-runs/${run.id}`)).status).toBe(200);
    const decided = await alice.call("POST", `/v1/approvals/${apr.id}/approve`, {});
    expect(decided.status).toBe(200);
    expect(decided.body.decided_by).toBe(`user:${alice.id}`);
    const done = await engine.waitForRun(WS, run.id);
    expect(done.status).toBe("completed");
    expect(done.run_as).toEqual({ type: "user", user_id: alice.id });
    const who = (await engine.listSteps(WS, run.id)).find((s) => s.node_key === "who");
    expect(who?.output).toEqual({ run_as: { type: "user", user_id: alice.id } });

    // A new run is Bob's.
    const run2 = await enroll(a.id, { subject_id: "ct_ra2" });
    expect(run2).toMatchObject({ version: 2, run_as: { type: "user", user_id: bob.id } });
    expect((await bob.call("GET", `/v1/automation-runs/${run2.id}`)).status).toBe(200);
    expect((await alice.call("GET", `/v1/automation-runs/${run2.id}`)).status).toBe(404);
  });

  it("run-as cannot be borrowed: a member may name only itself, an admin anyone here, and nobody a user who is not in the workspace", async () => {
    const mia = await newUser("member");
    const bob = await newUser("member");
    const asBob = await mia.call("POST", "/v1/automations", { definition: def({ run_as: { type: "user", user_id: bob.id } }) });
    expect(asBob.status).toBe(403);
    expect(asBob.body.error.code).toBe("auth.forbidden");
    const asAdmin = await mia.call("POST", "/v1/automations", { definition: def({ run_as: { type: "user", user_id: BOOTSTRAP_ADMIN } }) });
    expect(asAdmin.status).toBe(403);
    const asSelf = await mia.call("POST", "/v1/automations", { definition: def({ run_as: { type: "user", user_id: mia.id } }) });
    expect(asSelf.status).toBe(201);
    // A PUT cannot switch it to someone else either.
    const put = await mia.call("PUT", `/v1/automations/${asSelf.body.id}`, {
      definition: { ...def({ run_as: { type: "user", user_id: bob.id } }), key: asSelf.body.key },
    });
    expect(put.status).toBe(403);
    const ghost = await admin("POST", "/v1/automations", { definition: def({ run_as: { type: "user", user_id: "usr_nobody" } }) });
    expect(ghost.status).toBe(400);
    expect(ghost.body.error).toMatchObject({ code: "definition.unknown_user", details: { pointer: "/definition/run_as/user_id" } });
    expect((await admin("POST", "/v1/automations", { definition: def({ run_as: { type: "user", user_id: bob.id } }) })).status).toBe(201);
  });

  it("approvers: user:<id> lets only that user decide; role:admin refuses a member and accepts an admin", async () => {
    const alice = await newUser("member");
    const bob = await newUser("member");
    const viewer = await newUser("viewer");
    const gate = (approvers: string[]) =>
      def(
        {},
        [
          { key: "ask", kind: "approval", config: { title: "ok?", approvers } },
          { key: "yes", kind: "set", config: { assign: { path: "'approved'" } } },
        ],
        [{ from: "ask", port: "approved", to: "yes" }],
      );

    const byUser = await createAutomation(gate([`user:${alice.id}`]));
    const r1 = await enroll(byUser.id, { subject_id: "ct_ap1" });
    await engine.waitForRun(WS, r1.id, parkedOnApproval);
    const a1 = await approvalOf(r1.id);
    for (const [who, verb] of [
      [bob.call, "approve"],
      [bob.call, "reject"],
      [viewer.call, "approve"],
    ] as const) {
      const res = await who("POST", `/v1/approvals/${a1.id}/${verb}`, {});
      expect(res.status).toBe(403);
      expect(res.body.error?.code).toBe("auth.forbidden");
    }
    expect((await admin("GET", `/v1/approvals/${a1.id}`)).body).toMatchObject({ status: "pending", decided_by: null });
    const ok1 = await alice.call("POST", `/v1/approvals/${a1.id}/approve`, { comment: "mine" });
    expect(ok1.status).toBe(200);
    expect(ok1.body).toMatchObject({ status: "approved", decided_by: `user:${alice.id}`, comment: "mine" });
    expect((await engine.waitForRun(WS, r1.id)).context.path).toBe("approved");

    const byRole = await createAutomation(gate(["role:admin"]));
    const r2 = await enroll(byRole.id, { subject_id: "ct_ap2" });
    await engine.waitForRun(WS, r2.id, parkedOnApproval);
    const a2 = await approvalOf(r2.id);
    for (const who of [alice.call, bob.call]) {
      const res = await who("POST", `/v1/approvals/${a2.id}/approve`, {});
      expect(res.status).toBe(403);
      expect(res.body.error?.code).toBe("auth.forbidden");
    }
    expect((await admin("GET", `/v1/approvals/${a2.id}`)).body.status).toBe("pending");
    const ok2 = await admin("POST", `/v1/approvals/${a2.id}/approve`, {});
    expect(ok2.status).toBe(200);
    expect(ok2.body).toMatchObject({ status: "approved", decided_by: ADMIN });
    expect((await engine.waitForRun(WS, r2.id)).context.path).toBe("approved");
    // Only the decisions that applied are on the record, each naming its approver.
    const audit = await admin<{ items: { action: string; actor: string; target_id: string }[] }>("GET", "/v1/audit-log?limit=500");
    const decisions = audit.body.items.filter((e) => e.action.startsWith("approval."));
    expect(decisions.map((e) => [e.target_id, e.action, e.actor]).sort()).toEqual(
      [
        [a1.id, "approval.approve", `user:${alice.id}`],
        [a2.id, "approval.approve", ADMIN],
      ].sort(),
    );
  });

  // ---------------------------------------------------------------------------------------------
  // The sweep.

  it("the sweep: every registered route, called by workspace B's admin with workspace A's real ids, answers as for nothing there and says nothing of A (0 leaks)", async () => {
    const TAG = `zq${hex(6)}`; // in every name and value A creates, so one search finds any of them
    const subjParked = "ct_sweep_parked"; // subject ids and the secret name are caller-chosen labels
    const subjPaused = "ct_sweep_paused";
    const secretName = "CRM_TOKEN";
    const limitName = "crm-sweep"; // a shared limit's name is a caller-chosen label too

    // ---- workspace A (the default), through its admin ----
    const autA = await createAutomation({
      key: `a-gate-${TAG}`,
      name: `A gate ${TAG}`,
      triggers: [{ type: "webhook" }],
      reentry: { policy: "allow_concurrent" },
      root: "ask",
      nodes: [{ key: "ask", kind: "approval", config: { title: `A title ${TAG}`, approvers: [] } }],
    });
    expect(autA.hooks).toHaveLength(1);
    const hook = autA.hooks![0]!;
    const parked = await enroll(autA.id, { subject_id: subjParked, context_overrides: { note: `A note ${TAG}` } });
    await engine.waitForRun(WS, parked.id, parkedOnApproval);
    const apr = await approvalOf(parked.id);
    const autF = await createAutomation({
      key: `a-fan-${TAG}`,
      name: `A fan ${TAG}`,
      reentry: { policy: "allow_concurrent" },
      root: "fan",
      nodes: [
        {
          key: "fan",
          kind: "for_each",
          config: { items: "context.things", subject: "item", action: { kind: "sweep.touch", config: { thing: "{{ item }}" } } },
        },
        { key: "done", kind: "end" },
      ],
      edges: [{ from: "fan", port: "next", to: "done" }],
    });
    const fan = await enroll(autF.id, { subject_id: "ct_sweep_fan", context_overrides: { things: [`A-item-${TAG}`] } });
    expect((await engine.waitForRun(WS, fan.id)).status).toBe("completed");
    const items = (await admin<{ items: { id: string; outcome: string }[] }>("GET", `/v1/automation-runs/${fan.id}/items`)).body.items;
    expect(items).toHaveLength(1);
    const itemA = items[0]!;
    const evt = await admin<{ event_id: string }>("POST", "/v1/events", {
      type: `a.thing.${TAG}`,
      key: `a-evt-${TAG}`,
      subject_id: "ct_sweep_evt",
      payload: { marker: `A payload ${TAG}` },
    });
    expect(evt.status).toBe(202);
    const pause = await admin("POST", `/v1/subjects/${subjPaused}/automation-pause`, { automation_id: autF.id, pause_reason: `A pause ${TAG}` });
    expect(pause.status).toBe(201);
    const userA = await admin<{ id: string }>("POST", "/v1/users", { name: `A user ${TAG}`, role: "member" });
    expect(userA.status).toBe(201);
    const tokA = await admin<{ id: string; token: string }>("POST", "/v1/tokens", { user_id: userA.body.id });
    expect(tokA.status).toBe(201);
    const secret = await admin("PUT", `/v1/secrets/${secretName}`, { value: `A secret ${TAG}` });
    expect(secret.status).toBe(201);
    const limitA = await admin("POST", "/v1/limits", { name: limitName, key: `account:${TAG}:{{ event.account_id }}`, limit: 3 });
    expect(limitA.status).toBe(201);
    const adminTokId = (await ts.store.listTokens(WS)).find((t) => t.user_id === BOOTSTRAP_ADMIN)!.id;
    const auditA = await admin<{ items: { id: number; action: string }[] }>("GET", "/v1/audit-log?limit=500");
    expect(auditA.body.items.length).toBeGreaterThan(5);
    expect(auditA.text).toContain(TAG); // A's audit entries name A's things (so a leaked entry would be found)

    // A's state, to compare after the sweep.
    const snapshotA = async () => ({
      automations: (await ts.store.listAutomations(WS)).map((a) => [a.id, a.status, a.current_version]),
      parked: (({ status, waiting_for, version }) => ({ status, waiting_for, version }))(await engine.getRun(WS, parked.id)),
      approval: (await engine.getApproval(WS, apr.id)).status,
      fan: (({ status, items_total, items_failed }) => ({ status, items_total, items_failed }))(await engine.getRun(WS, fan.id)),
      items: (await engine.listItems(WS, fan.id)).map((i) => [i.id, i.outcome, i.attempts]),
      pauses: await engine.listPauses(WS, subjPaused),
      users: (await ts.store.listUsers(WS)).map((u) => u.id).sort(),
      tokens: (await ts.store.listTokens(WS)).map((t) => [t.id, t.revoked_at]),
      secrets: await ts.store.listSecrets(WS),
      runs: (await engine.listRuns({ workspace_id: WS, limit: 500 })).items.map((r) => r.id).sort(),
      event: (await ts.store.getEvent(WS, evt.body.event_id))?.id,
    });
    const before = await snapshotA();

    // ---- workspace B, through its admin ----
    const wsB = await admin<{ id: string; admin_user_id: string; admin_token: string }>("POST", "/v1/workspaces", { name: "B" });
    expect(wsB.status).toBe(201);
    const B = wsB.body.id;
    const tokenB = wsB.body.admin_token;

    // Everything of A's a response to B must not contain. A's workspace and admin appear in B's
    // audit log once, by design: the instance admin's workspace.create entry (allowed below).
    const idsA = [
      autA.id,
      autF.id,
      hook.id,
      hook.secret,
      parked.id,
      fan.id,
      apr.id,
      itemA.id,
      evt.body.event_id,
      userA.body.id,
      tokA.body.id,
      tokA.body.token,
      adminTokId,
      TOKEN,
      WS,
      BOOTSTRAP_ADMIN,
    ];
    const valuesA = [TAG, ...idsA];
    /** While B has not yet used them itself, A's labels are A's too. */
    const labelsA = [subjParked, subjPaused, secretName, limitName];

    // Path parameters: A's real values, by parameter name and path prefix.
    const paramValues = (url: string, param: string): string[] => {
      if (param === "id") {
        if (url.startsWith("/v1/automations/")) return [autA.id, autF.id];
        if (url.startsWith("/v1/automation-runs/")) return [parked.id, fan.id];
        if (url.startsWith("/v1/events/")) return [evt.body.event_id];
        if (url.startsWith("/v1/approvals/")) return [apr.id];
        if (url.startsWith("/v1/tokens/")) return [tokA.body.id, adminTokId];
        if (url.startsWith("/v1/users/")) return [userA.body.id, BOOTSTRAP_ADMIN];
        if (url.startsWith("/v1/subjects/")) return [subjPaused, subjParked];
        if (url.startsWith("/v1/hooks/")) return [hook.id];
      }
      if (param === "n") return ["1"];
      if (param === "item") return [itemA.id];
      if (param === "name" && url.startsWith("/v1/limits/")) return [limitName];
      if (param === "name") return [secretName];
      throw new Error(`the sweep has no value of A for :${param} in ${url}: add it to paramValues`);
    };
    /** The same value, but of nothing: what a 404 for A's value must be indistinguishable from. */
    const fakes = new Map<string, string>();
    const fakeOf = (v: string): string => {
      if (v === "1") return v;
      if (!fakes.has(v)) fakes.set(v, /^[a-z]+_[0-9a-f]{28}$/.test(v) ? `${v.slice(0, v.indexOf("_") + 1)}${"0".repeat(12)}${hex(8)}` : `nope_${hex(6)}`);
      return fakes.get(v)!;
    };

    interface Probe {
      body?: unknown;
      query?: string;
      expect: number;
      /** Creates something in B: run after every other probe, then `verify` it is B's and not A's. */
      creates?: (res: Res) => Promise<void>;
      /** Further conditions on the reply; a returned string is a leak. */
      check?: (res: Res) => string | null | Promise<string | null>;
    }
    interface Coverage {
      /** No bearer token (signature-authenticated or public). */
      anonymous?: boolean;
      probes: Probe[];
    }
    const nf: Probe = { expect: 404 };
    const nfBody = (body: unknown): Probe => ({ expect: 404, body });
    const listed: Probe = { expect: 200 };
    const validDef = () => ({ key: `b-${hex(4)}`, name: "B thing", root: "s", nodes: [setNode] });
    const inB = (what: string, ok: boolean) => {
      if (!ok) throw new Error(`${what} is not in B`);
    };
    const notInA = (what: string, ok: boolean) => {
      if (!ok) throw new Error(`${what} landed in A`);
    };
    const wsOf = (res: Res): string | null => {
      const items = (res.body as { items?: unknown }).items;
      if (!Array.isArray(items)) return null;
      const foreign = items.filter((x) => x && typeof x === "object" && "workspace_id" in x && (x as { workspace_id: string }).workspace_id !== B);
      return foreign.length > 0 ? `${foreign.length} listed item(s) of another workspace` : null;
    };

    const COVERAGE: Record<string, Coverage> = {
      "GET /healthz": { anonymous: true, probes: [{ expect: 200 }] },
      "GET /openapi.json": { anonymous: true, probes: [{ expect: 200 }] },
      // The instance-wide scrape endpoint: its labels name automations of every workspace, so on
      // the API port only an instance admin reads it; B's admin is refused.
      "GET /metrics": { probes: [{ expect: 403, check: (r) => (r.body.error?.code === "auth.forbidden" ? null : `code ${r.body.error?.code}`) }] },
      "POST /v1/hooks/:id": {
        anonymous: true,
        probes: [{ expect: 401, body: {}, check: (r) => (r.body.error?.code.startsWith("webhook.") ? null : `code ${r.body.error?.code}`) }],
      },
      "POST /v1/automations": {
        probes: [
          {
            expect: 201,
            body: { definition: validDef() },
            creates: async (r) => {
              inB("the automation", (await ts.store.getAutomation(B, r.body.id)) !== null);
              notInA("the automation", (await ts.store.getAutomation(WS, r.body.id)) === null);
            },
          },
        ],
      },
      "GET /v1/automations": { probes: [{ ...listed, check: wsOf }] },
      "GET /v1/automations/:id": { probes: [nf] },
      "PUT /v1/automations/:id": { probes: [nfBody({ definition: validDef() })] },
      "GET /v1/automations/:id/versions/:n": { probes: [nf] },
      "POST /v1/automations/:id/activate": { probes: [nfBody({})] },
      "POST /v1/automations/:id/pause": { probes: [nfBody({})] },
      "POST /v1/automations/:id/enroll": { probes: [nfBody({ subject_id: "ct_b" }), nfBody({})] },
      "GET /v1/automations/:id/runs": { probes: [nf] },
      "GET /v1/automation-runs": {
        probes: [
          { ...listed, check: wsOf },
          { ...listed, query: `automation_id=${autA.id}`, check: wsOf },
          { ...listed, query: `automation_id=${autF.id}&status=completed`, check: wsOf },
          { ...listed, query: `subject_id=${subjParked}`, check: wsOf },
        ],
      },
      "GET /v1/automation-runs/:id": { probes: [nf] },
      "POST /v1/events": {
        probes: [
          {
            expect: 202,
            body: { type: "b.thing", key: `b-evt-${hex(4)}` },
            creates: async (r) => {
              inB("the event", (await ts.store.getEvent(B, r.body.event_id)) !== null);
              notInA("the event", (await ts.store.getEvent(WS, r.body.event_id)) === null);
            },
          },
        ],
      },
      "GET /v1/events/:id": { probes: [nf] },
      "GET /v1/events/:id/explain": { probes: [nf] },
      "POST /v1/events/:id/replay": { probes: [nf] },
      "POST /v1/events/:id/drop": { probes: [nf] },
      "GET /v1/events": {
        probes: [{ ...listed, check: (r) => ((r.body.items as { id: string }[]).some((e) => e.id === evt.body.event_id) ? "B lists A's event" : null) }],
      },
      "GET /v1/subjects/:id/automation-controls": {
        probes: [{ ...listed, check: (r) => ((r.body.items as unknown[]).length === 0 ? null : "B sees pause rows it never made") }],
      },
      "POST /v1/subjects/:id/automation-pause": {
        probes: [
          nfBody({ automation_id: autF.id, pause_reason: "B pause" }),
          {
            expect: 201,
            body: { pause_reason: "B pause" },
            creates: async () => {
              inB("the pause", (await engine.listPauses(B, subjPaused)).length + (await engine.listPauses(B, subjParked)).length > 0);
            },
          },
        ],
      },
      "POST /v1/subjects/:id/automation-resume": {
        probes: [
          // Naming A's automation is naming nothing (as automation-pause does): 404.
          { expect: 404, body: { automation_id: autF.id } },
          { expect: 200, body: {}, check: (r) => (r.body.resumed === false ? null : "B resumed A's pause") },
        ],
      },
      "GET /v1/ops/overdue": { probes: [listed] },
      "GET /v1/automation-runs/:id/steps": { probes: [nf] },
      "GET /v1/automation-runs/:id/explain": { probes: [nf] },
      "GET /v1/automation-runs/:id/items": { probes: [nf] },
      "POST /v1/automation-runs/:id/stop": { probes: [nfBody({})] },
      "POST /v1/automation-runs/:id/cancel": { probes: [nfBody({})] },
      "POST /v1/automation-runs/:id/retrigger": { probes: [nfBody({}), nfBody({ idempotency_key: "b-re" })] },
      "POST /v1/automation-runs/:id/redrive": { probes: [nfBody({}), nfBody({ version: "current" })] },
      "POST /v1/automation-runs/:id/items/:item/retry": { probes: [nfBody({})] },
      "POST /v1/automations/:id/simulate": { probes: [nfBody({})] },
      "GET /v1/approvals": { probes: [listed, { ...listed, query: "status=pending" }] },
      "GET /v1/approvals/:id": { probes: [nf] },
      "POST /v1/approvals/:id/approve": { probes: [nfBody({ comment: "B" })] },
      "POST /v1/approvals/:id/reject": { probes: [nfBody({})] },
      "GET /v1/audit-log": { probes: [listed] },
      "GET /v1/ops/overview": { probes: [listed] },
      "GET /v1/reports/outcomes": { probes: [{ ...listed, query: "from=2000-01-01T00:00:00Z&to=2100-01-01T00:00:00Z" }] },
      "POST /v1/workspaces": { probes: [{ expect: 403, body: { name: "B child" } }] },
      "POST /v1/users": {
        probes: [
          {
            expect: 201,
            body: { name: "B user", role: "viewer" },
            creates: async (r) => {
              inB("the user", (await ts.store.getUser(B, r.body.id)) !== null);
              notInA("the user", (await ts.store.getUser(WS, r.body.id)) === null);
            },
          },
        ],
      },
      "GET /v1/users": { probes: [listed] },
      "PATCH /v1/users/:id": { probes: [nfBody({ disabled: true })] },
      "POST /v1/tokens": {
        probes: [
          nfBody({ user_id: userA.body.id }),
          nfBody({ user_id: BOOTSTRAP_ADMIN }),
          {
            expect: 201,
            body: {},
            creates: async (r) => {
              inB(
                "the token",
                (await ts.store.listTokens(B)).some((t) => t.id === r.body.id),
              );
              notInA("the token", !(await ts.store.listTokens(WS)).some((t) => t.id === r.body.id));
              const mine = await http("GET", "/v1/users", r.body.token);
              inB("the token's user", mine.status === 200 && !mine.text.includes(userA.body.id));
            },
          },
        ],
      },
      "GET /v1/tokens": { probes: [listed] },
      "DELETE /v1/tokens/:id": { probes: [nf] },
      "PUT /v1/secrets/:name": {
        probes: [
          {
            expect: 201,
            body: { value: "B secret value" },
            check: (r) => (r.body.created === true ? null : "B's put found A's secret"),
            creates: async () => {
              inB(
                "the secret",
                (await ts.store.listSecrets(B)).some((s) => s.name === secretName),
              );
            },
          },
        ],
      },
      "GET /v1/secrets": { probes: [listed] },
      "DELETE /v1/secrets/:name": { probes: [nf] },
      // Who the caller is: B's own identity, never A's.
      "GET /v1/me": {
        probes: [
          {
            expect: 200,
            check: (r) => ((r.body as { workspace_id?: string }).workspace_id === B ? null : `workspace ${(r.body as { workspace_id?: string }).workspace_id}`),
          },
        ],
      },
      // Settings are the caller's own workspace's: B reads and changes B's, never A's.
      "GET /v1/workspace/settings": { probes: [listed] },
      "PATCH /v1/workspace/settings": { probes: [{ expect: 200, body: { strict_definitions: false } }] },
      // Another workspace's hook is not found by B's admin: neither revealed nor rotated.
      // Shared limits are the workspace's own: B finds none of A's, and makes one of the same name as its own.
      "GET /v1/limits": { probes: [listed] },
      "GET /v1/limits/:name": { probes: [nf] },
      "PATCH /v1/limits/:name": { probes: [nfBody({ limit: 9 })] },
      "DELETE /v1/limits/:name": { probes: [nf] },
      "POST /v1/limits": {
        probes: [
          {
            expect: 201,
            body: { name: limitName, key: "b", limit: 1 },
            creates: async () => {
              inB("the limit", (await ts.store.getSharedLimits(B, [limitName])).length === 1);
              notInA("the limit", (await ts.store.getSharedLimits(WS, [limitName]))[0]?.limit === 3);
            },
          },
        ],
      },
      "GET /v1/hooks/:id/secret": { probes: [nf] },
      "POST /v1/hooks/:id/rotate": { probes: [nfBody({}), nfBody({ grace_seconds: 60 })] },
    };

    // Every live route is covered, and the map names no route that is gone.
    const live = app.weftRoutes.map((r) => `${r.method} ${r.url}`);
    const uncovered = live.filter((r) => !(r in COVERAGE));
    const stale = Object.keys(COVERAGE).filter((r) => !live.includes(r));
    if (uncovered.length > 0 || stale.length > 0) {
      throw new Error(`the sweep's route map is out of date: not covered ${JSON.stringify(uncovered)}; no longer live ${JSON.stringify(stale)}`);
    }

    interface Call {
      route: string;
      method: Method;
      url: string;
      path: string;
      anonymous: boolean;
      probe: Probe;
      sent: string[];
    }
    const calls: Call[] = [];
    for (const r of app.weftRoutes) {
      const route = `${r.method} ${r.url}`;
      const cov = COVERAGE[route]!;
      const params = [...r.url.matchAll(/:([A-Za-z_]+)/g)].map((m) => m[1]!);
      let paths: { path: string; sent: string[] }[] = [{ path: r.url, sent: [] }];
      for (const p of params) {
        paths = paths.flatMap(({ path, sent }) =>
          paramValues(r.url, p).map((v) => ({ path: path.replace(`:${p}`, encodeURIComponent(v)), sent: [...sent, v] })),
        );
      }
      for (const probe of cov.probes) {
        for (const { path, sent } of paths) {
          calls.push({
            route,
            method: r.method as Method,
            url: r.url,
            path: probe.query ? `${path}?${probe.query}` : path,
            anonymous: cov.anonymous === true,
            probe,
            sent,
          });
        }
      }
    }

    const leaks: string[] = [];
    const probeCount = { n: 0 };
    const exec = async (c: Call, searchFor: string[]): Promise<void> => {
      probeCount.n += 1;
      const res = await http(c.method, c.path, c.anonymous ? null : tokenB, c.probe.body);
      const what = `${c.method} ${c.path}${c.probe.body !== undefined ? ` ${JSON.stringify(c.probe.body)}` : ""}`;
      if (res.status !== c.probe.expect) leaks.push(`${what}: status ${res.status} (expected ${c.probe.expect}): ${res.text.slice(0, 300)}`);
      if (res.status === 404 && res.body.error?.code === "route.not_found") leaks.push(`${what}: the sweep called a path no route serves`);
      // Search the reply for A, minus what B itself sent in this request (a 404 may name the id asked for).
      let text = res.text;
      if (c.route === "GET /metrics") text = text.replace(/automation_id="[^"]*"/g, 'automation_id=""');
      if (c.route === "GET /v1/audit-log" && Array.isArray(res.body.items)) {
        text = JSON.stringify({
          ...res.body,
          items: (res.body.items as { action: string; target_id: string }[]).filter((e) => !(e.action === "workspace.create" && e.target_id === B)),
        });
      }
      const sent = [
        ...c.sent,
        ...(c.probe.query ? c.probe.query.split(/[&=]/) : []),
        ...(JSON.stringify(c.probe.body ?? null).match(/"[^"]*"/g) ?? []).map((s) => JSON.parse(s) as string),
      ];
      for (const s of sent.filter((x) => x.length > 3).sort((x, y) => y.length - x.length)) text = text.split(s).join("<sent>");
      const found = searchFor.filter((v) => text.includes(v));
      if (found.length > 0) leaks.push(`${what}: the reply names A's ${JSON.stringify(found)}: ${res.text.slice(0, 300)}`);
      const extraCheck = c.probe.check ? await c.probe.check(res) : null;
      if (extraCheck) leaks.push(`${what}: ${extraCheck}`);
      // A 404 for A's thing must be the 404 for nothing at all (no existence oracle). Webhook
      // ingress is exempt: it is unauthenticated, and its ids are unguessable.
      if (c.probe.expect === 404 && res.status === 404) {
        const swap = (s: string) => [...fakes.keys()].reduce((acc, k) => acc.split(k).join(fakeOf(k)), s);
        c.sent.forEach(fakeOf);
        if (c.probe.body !== undefined) for (const v of idsA) if (JSON.stringify(c.probe.body).includes(v)) fakeOf(v);
        const fake = await http(c.method, swap(c.path), tokenB, c.probe.body === undefined ? undefined : JSON.parse(swap(JSON.stringify(c.probe.body))));
        const norm = (r: Res) => JSON.stringify({ status: r.status, code: r.body.error?.code, message: r.body.error?.message });
        if (swap(norm(res)) !== norm(fake)) leaks.push(`${what}: distinguishable from a nonexistent id: ${norm(res)} vs ${norm(fake)}`);
      }
      if (c.probe.creates && res.status === c.probe.expect) {
        try {
          await c.probe.creates(res);
        } catch (err) {
          leaks.push(`${what}: ${(err as Error).message}`);
        }
      }
    };

    // 1. Every read, before B has made anything: A's labels count as A's too.
    for (const c of calls.filter((x) => x.method === "GET")) await exec(c, [...valuesA, ...labelsA]);
    // 2. Every change: first those that must find nothing, then those that make things in B.
    for (const c of calls.filter((x) => x.method !== "GET" && !x.probe.creates)) await exec(c, valuesA);
    for (const c of calls.filter((x) => x.method !== "GET" && x.probe.creates)) await exec(c, valuesA);
    // 3. Every list again, now that B has things (some under the same labels as A's).
    for (const c of calls.filter((x) => x.method === "GET" && (!x.url.includes(":") || x.route === "GET /v1/subjects/:id/automation-controls"))) {
      await exec(
        {
          ...c,
          probe: {
            ...c.probe,
            check: c.route === "GET /v1/subjects/:id/automation-controls" ? (r) => (JSON.stringify(r.body).includes(TAG) ? "A's pause" : null) : c.probe.check,
          },
        },
        valuesA,
      );
    }

    // A is as it was, and nothing B did is on A's record.
    expect(await snapshotA()).toEqual(before);
    const auditAfter = await engine.listAudit(WS, 500);
    expect(auditAfter.filter((e) => e.actor === `user:${wsB.body.admin_user_id}`)).toEqual([]);
    expect((await http("GET", "/v1/automations", tokA.body.token)).status).toBe(200);
    const auditB = await engine.listAudit(B, 500);
    expect(auditB.some((e) => e.action === "automation.create")).toBe(true);

    // Same names in both workspaces do not collide: keys, event keys and secret names are per workspace.
    const sameKey = await http("POST", "/v1/automations", tokenB, { definition: { key: autA.key, name: "B's own", root: "s", nodes: [setNode] } });
    expect(sameKey.status, sameKey.text).toBe(201);
    const sameEvt = await http<{ event_id: string; duplicate: boolean }>("POST", "/v1/events", tokenB, { type: "b.other", key: `a-evt-${TAG}` });
    expect(sameEvt.status, sameEvt.text).toBe(202);
    expect(sameEvt.body).toMatchObject({ duplicate: false });
    expect(sameEvt.body.event_id).not.toBe(evt.body.event_id);
    expect((await engine.admin.secretsOf(WS)).get(secretName)).toBe(`A secret ${TAG}`);

    console.log(`[${kind}] swept ${live.length} routes with ${probeCount.n} calls: ${leaks.length} leaks`);
    expect(leaks).toEqual([]);
  });
});
