// The role matrix, checked against the running API: docs/roles.md is what the routes' declarations
// generate; a route without a declaration does not register; every registered route is called as
// every role (viewer, member, admin, instance admin) with a minimal valid request whose path points
// at real objects of the caller's workspace: a role below the route's declared minimum gets 403
// `auth.forbidden` and changes nothing, a role at or above it succeeds. And a member of workspace A
// calling any route with an id on workspace B's objects finds nothing (404) and changes nothing.
//
// Every route needs a recipe in RECIPES, keyed by "METHOD url" as Fastify registers it: a new
// route without one fails this test by name.

import { readFileSync } from "node:fs";
import type { AddressInfo } from "node:net";
import type { FastifyInstance } from "fastify";
import { Webhook } from "standardwebhooks";
import { Agent, request } from "undici";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { z } from "zod";
import { defineAction } from "../src/engine/actions.js";
import { BOOTSTRAP_ADMIN } from "../src/engine/admin.js";
import { Engine } from "../src/engine/engine.js";
import { apiEvent } from "../src/engine/intake.js";
import type { RouteRole } from "../src/engine/identity.js";
import type { Run, Store } from "../src/engine/store.js";
import { StepFailure, stepError } from "../src/model/errors.js";
import { buildApp } from "../src/server/app.js";
import { needsToken } from "../src/server/roles.js";
import type { EmbeddedStore } from "../src/store/embedded/index.js";
import type { PostgresStore } from "../src/store/postgres/index.js";
import { declaredRoutes, ROLES_FILE, renderRoles } from "../scripts/docs-roles.js";
import { LOOPBACK, WS } from "./helpers/engine.js";
import { makeStore, STORE_KINDS, type TestStore } from "./helpers/stores.js";
import { sleep, until } from "./helpers/wait.js";

const TOKEN = "roles-matrix-instance-admin-token";
const SECRET_KEY = "00112233445566778899aabbccddeeff".repeat(2);

type Method = "GET" | "POST" | "PUT" | "PATCH" | "DELETE";
interface Res {
  status: number;
  text: string;
  body: { error?: { code: string; message: string; details: Record<string, unknown> } } & Record<string, any>;
}
type Call = (method: Method, path: string, body?: unknown, headers?: Record<string, string>, raw?: string) => Promise<Res>;

/** A caller: one of the four kinds the matrix has a column for. */
interface Who {
  role: RouteRole;
  user_id: string;
  call: Call;
}

/** The four callers in order, written out here rather than taken from the code under test. */
const LEVEL: Record<RouteRole, number> = { viewer: 0, member: 1, admin: 2, instance_admin: 3 };

/** A request; `raw` is sent as the body verbatim (a signed webhook delivery). */
interface Req {
  path: string;
  body?: unknown;
  raw?: string;
  headers?: Record<string, string>;
}

/**
 * Real objects of one workspace, made through its admin's token. Fresh ones for calls that use
 * their target up (stop, approve, revoke, …), so every allowed call of every role can succeed.
 */
interface Fixtures {
  ws: string;
  /** An automation (set → end), active. */
  automation: string;
  /** A run parked on an approval, and the approval. */
  parked: { run: string; approval: string };
  /** A completed fan-out run with one failed item. */
  fan: { run: string; item: string };
  event: string;
  hook: { id: string; secret: string };
  freshAutomation(): Promise<{ id: string; key: string }>;
  freshParked(): Promise<{ run: string; approval: string }>;
  freshCompleted(): Promise<string>;
  freshStopped(): Promise<string>;
  freshFailedItem(): Promise<{ run: string; item: string }>;
  freshUser(): Promise<string>;
  /** A token (id) of `userId`, or of a user of this workspace when the caller is not one of its users. */
  freshToken(who: Who): Promise<string>;
  freshSecret(): Promise<string>;
  /** A shared limit of its own (a deletion leaves the others). */
  freshLimit(): Promise<string>;
  /** An event marked undeliverable (its dispatch failed), for replay and drop. */
  freshUndeliverable(): Promise<string>;
  /** A webhook hook of its own (a rotation leaves the shared hook's secret as the deliveries sign it). */
  freshHook(): Promise<string>;
}

let seq = 0;
const uniq = (p: string) => `${p}-${++seq}-${Date.now().toString(36)}`;

const setEnd = (key: string) => ({
  key,
  name: key,
  reentry: { policy: "allow_concurrent" },
  root: "s",
  nodes: [
    { key: "s", kind: "set", config: { assign: { ok: "true" } } },
    { key: "e", kind: "end" },
  ],
  edges: [{ from: "s", port: "next", to: "e" }],
});

/**
 * How to call each route, keyed by "METHOD url" (the url as registered, `:param`s included). Each
 * recipe builds a minimal valid request from the caller's workspace fixtures. Add one for every
 * new route.
 */
const RECIPES: Record<string, (f: Fixtures, who: Who) => Promise<Req> | Req> = {
  "GET /healthz": () => ({ path: "/healthz" }),
  "GET /openapi.json": () => ({ path: "/openapi.json" }),
  "GET /metrics": () => ({ path: "/metrics" }),
  "POST /v1/hooks/:id": (f) => {
    const raw = JSON.stringify({ hello: uniq("delivery") });
    const msgId = uniq("msg");
    const at = new Date();
    return {
      path: `/v1/hooks/${f.hook.id}`,
      raw,
      headers: {
        "content-type": "application/json",
        "webhook-id": msgId,
        "webhook-timestamp": String(Math.floor(at.getTime() / 1000)),
        "webhook-signature": new Webhook(f.hook.secret).sign(msgId, at, raw),
      },
    };
  },
  "POST /v1/automations": () => ({ path: "/v1/automations", body: { definition: setEnd(uniq("new")) } }),
  "GET /v1/automations": () => ({ path: "/v1/automations" }),
  "GET /v1/automations/:id": (f) => ({ path: `/v1/automations/${f.automation}` }),
  "PUT /v1/automations/:id": async (f) => {
    const { id, key } = await f.freshAutomation();
    return { path: `/v1/automations/${id}`, body: { definition: { ...setEnd(key), name: "renamed" } } };
  },
  "GET /v1/automations/:id/versions/:n": (f) => ({ path: `/v1/automations/${f.automation}/versions/1` }),
  "POST /v1/automations/:id/activate": (f) => ({ path: `/v1/automations/${f.automation}/activate`, body: {} }),
  "POST /v1/automations/:id/pause": async (f) => ({ path: `/v1/automations/${(await f.freshAutomation()).id}/pause`, body: {} }),
  "POST /v1/automations/:id/enroll": (f) => ({ path: `/v1/automations/${f.automation}/enroll`, body: { subject_id: uniq("ct") } }),
  "GET /v1/automations/:id/runs": (f) => ({ path: `/v1/automations/${f.automation}/runs` }),
  "POST /v1/automations/:id/simulate": (f) => ({ path: `/v1/automations/${f.automation}/simulate`, body: {} }),
  "GET /v1/automation-runs": () => ({ path: "/v1/automation-runs" }),
  "GET /v1/automation-runs/:id": (f) => ({ path: `/v1/automation-runs/${f.parked.run}` }),
  "GET /v1/automation-runs/:id/steps": (f) => ({ path: `/v1/automation-runs/${f.parked.run}/steps` }),
  "GET /v1/automation-runs/:id/explain": (f) => ({ path: `/v1/automation-runs/${f.parked.run}/explain` }),
  "GET /v1/automation-runs/:id/items": (f) => ({ path: `/v1/automation-runs/${f.fan.run}/items` }),
  "POST /v1/automation-runs/:id/stop": async (f) => ({ path: `/v1/automation-runs/${(await f.freshParked()).run}/stop`, body: {} }),
  "POST /v1/automation-runs/:id/cancel": async (f) => ({ path: `/v1/automation-runs/${(await f.freshParked()).run}/cancel`, body: {} }),
  "POST /v1/automation-runs/:id/retrigger": async (f) => ({ path: `/v1/automation-runs/${await f.freshCompleted()}/retrigger`, body: {} }),
  "POST /v1/automation-runs/:id/redrive": async (f) => ({ path: `/v1/automation-runs/${await f.freshStopped()}/redrive`, body: {} }),
  "POST /v1/automation-runs/:id/items/:item/retry": async (f) => {
    const { run, item } = await f.freshFailedItem();
    return { path: `/v1/automation-runs/${run}/items/${item}/retry`, body: {} };
  },
  "POST /v1/events": () => ({ path: "/v1/events", body: { type: "roles.ping", key: uniq("evt") } }),
  "GET /v1/events": () => ({ path: "/v1/events" }),
  "GET /v1/events/:id": (f) => ({ path: `/v1/events/${f.event}` }),
  "GET /v1/events/:id/explain": (f) => ({ path: `/v1/events/${f.event}/explain` }),
  "GET /v1/subjects/:id/automation-controls": () => ({ path: "/v1/subjects/ct_roles/automation-controls" }),
  "POST /v1/subjects/:id/automation-pause": () => ({ path: `/v1/subjects/${uniq("ct")}/automation-pause`, body: { pause_reason: "roles" } }),
  "POST /v1/subjects/:id/automation-resume": () => ({ path: "/v1/subjects/ct_roles/automation-resume", body: {} }),
  "GET /v1/ops/overdue": () => ({ path: "/v1/ops/overdue" }),
  "GET /v1/ops/overview": () => ({ path: "/v1/ops/overview" }),
  "GET /v1/reports/outcomes": () => ({ path: "/v1/reports/outcomes?from=2000-01-01T00:00:00Z&to=2100-01-01T00:00:00Z" }),
  "GET /v1/approvals": () => ({ path: "/v1/approvals" }),
  "GET /v1/approvals/:id": (f) => ({ path: `/v1/approvals/${f.parked.approval}` }),
  "POST /v1/approvals/:id/approve": async (f) => ({ path: `/v1/approvals/${(await f.freshParked()).approval}/approve`, body: {} }),
  "POST /v1/approvals/:id/reject": async (f) => ({ path: `/v1/approvals/${(await f.freshParked()).approval}/reject`, body: {} }),
  "GET /v1/audit-log": () => ({ path: "/v1/audit-log" }),
  "POST /v1/workspaces": () => ({ path: "/v1/workspaces", body: { name: uniq("ws") } }),
  "POST /v1/users": () => ({ path: "/v1/users", body: { name: uniq("user"), role: "viewer" } }),
  "GET /v1/users": () => ({ path: "/v1/users" }),
  "GET /v1/me": () => ({ path: "/v1/me" }),
  "PATCH /v1/users/:id": async (f) => ({ path: `/v1/users/${await f.freshUser()}`, body: { role: "member" } }),
  "POST /v1/tokens": () => ({ path: "/v1/tokens", body: {} }),
  "GET /v1/tokens": () => ({ path: "/v1/tokens" }),
  // A non-admin revokes only their own tokens (a finer rule): each caller revokes one of its own.
  "DELETE /v1/tokens/:id": async (f, who) => ({ path: `/v1/tokens/${await f.freshToken(who)}` }),
  "PUT /v1/secrets/:name": () => ({ path: `/v1/secrets/${uniq("S").replace(/-/g, "_")}`, body: { value: "a secret value" } }),
  "GET /v1/secrets": () => ({ path: "/v1/secrets" }),
  "DELETE /v1/secrets/:name": async (f) => ({ path: `/v1/secrets/${await f.freshSecret()}` }),
  "GET /v1/workspace/settings": () => ({ path: "/v1/workspace/settings" }),
  "PATCH /v1/workspace/settings": () => ({ path: "/v1/workspace/settings", body: { strict_definitions: false } }),
  "POST /v1/events/:id/replay": async (f) => ({ path: `/v1/events/${await f.freshUndeliverable()}/replay`, body: {} }),
  "POST /v1/events/:id/drop": async (f) => ({ path: `/v1/events/${await f.freshUndeliverable()}/drop`, body: {} }),
  "GET /v1/hooks/:id/secret": (f) => ({ path: `/v1/hooks/${f.hook.id}/secret` }),
  "GET /v1/limits": () => ({ path: "/v1/limits" }),
  "POST /v1/limits": () => ({ path: "/v1/limits", body: { name: uniq("lim"), key: "{{ event.account_id }}", limit: 2 } }),
  "GET /v1/limits/:name": async (f) => ({ path: `/v1/limits/${await f.freshLimit()}` }),
  "PATCH /v1/limits/:name": async (f) => ({ path: `/v1/limits/${await f.freshLimit()}`, body: { limit: 5 } }),
  "DELETE /v1/limits/:name": async (f) => ({ path: `/v1/limits/${await f.freshLimit()}` }),
  "POST /v1/hooks/:id/rotate": async (f) => ({ path: `/v1/hooks/${await f.freshHook()}/rotate`, body: { grace_seconds: 60 } }),
};

/** Every table's rows but the heartbeats (which tick on their own): what "changes nothing" compares. */
/** Tables of the engine's own bookkeeping, which its loops write whatever the routes do: processes' heartbeats, the claim's due marks. */
const BOOKKEEPING = new Set(["processes", "due_marks"]);

async function dump(store: Store): Promise<string> {
  const out: Record<string, unknown[]> = {};
  if (store.kind === "postgres") {
    const pool = (store as PostgresStore).pool;
    const tables = (
      await pool.query<{ t: string }>("select table_name as t from information_schema.tables where table_schema = current_schema() order by 1")
    ).rows.map((r) => r.t);
    for (const t of tables.filter((x) => !BOOKKEEPING.has(x) && !x.includes("migration"))) out[t] = (await pool.query(`select * from "${t}" order by 1`)).rows;
  } else {
    const db = (store as EmbeddedStore).db;
    const tables = (db.prepare("select name from sqlite_master where type = 'table' order by 1").all() as { name: string }[]).map((r) => r.name);
    for (const t of tables.filter((x) => !BOOKKEEPING.has(x) && !x.includes("migration") && !x.startsWith("sqlite_")))
      out[t] = db.prepare(`select * from "${t}" order by 1`).all();
  }
  return JSON.stringify(out);
}

/** Which tables differ between two dumps, and how (for the failure message). */
function changed(before: string, after: string): string {
  const b = JSON.parse(before) as Record<string, unknown[]>;
  const a = JSON.parse(after) as Record<string, unknown[]>;
  return Object.keys(a)
    .filter((t) => JSON.stringify(a[t]) !== JSON.stringify(b[t]))
    .map((t) => {
      const was = new Set((b[t] ?? []).map((x) => JSON.stringify(x)));
      return `${t}: ${(a[t] ?? [])
        .map((x) => JSON.stringify(x))
        .filter((x) => !was.has(x))
        .join(", ")
        .slice(0, 400)}`;
    })
    .join("; ");
}

describe("the role matrix in docs/roles.md", () => {
  it("is what the routes' declarations generate (npm run docs:roles)", async () => {
    expect(readFileSync(ROLES_FILE, "utf8")).toBe(await renderRoles());
  });
});

describe.each(STORE_KINDS)("roles (%s store)", (kind) => {
  let ts: TestStore;
  let engine: Engine;
  let app: FastifyInstance;
  let base: string;
  let agent: Agent;
  const errors: unknown[] = [];

  beforeAll(async () => {
    ts = await makeStore(kind);
    engine = new Engine({ httpAllow: LOOPBACK, store: ts.store, secretKey: SECRET_KEY, runner: { leaseMs: 30_000, pollMs: 20 } });
    engine.registerAction(
      defineAction({
        kind: "roles.fail",
        input: z.object({}),
        handler: () => {
          throw new StepFailure(stepError("roles.refused", "this item always fails", false));
        },
      }),
    );
    engine.events.on("engine:error", (e) => errors.push(e));
    await engine.start();
    app = buildApp({ engine, adminToken: TOKEN, rateLimitPerSecond: 0 });
    await app.listen({ host: "127.0.0.1", port: 0 });
    base = `http://127.0.0.1:${(app.server.address() as AddressInfo).port}`;
    agent = new Agent({ connections: 10 });
  });
  afterAll(async () => {
    await agent?.close();
    await app?.close();
    await engine?.stop();
    await ts?.destroy();
    expect(errors).toEqual([]);
  });

  const as =
    (token: string | null): Call =>
    async (method, path, body, headers = {}, raw) => {
      const res = await request(`${base}${path}`, {
        method,
        dispatcher: agent,
        headers: {
          ...(token !== null ? { authorization: `Bearer ${token}` } : {}),
          ...(body !== undefined ? { "content-type": "application/json" } : {}),
          ...headers,
        },
        ...(raw !== undefined ? { body: raw } : body !== undefined ? { body: JSON.stringify(body) } : {}),
      });
      const text = await res.body.text();
      let parsed: Res["body"] = {};
      try {
        parsed = text.trimStart().startsWith("{") ? JSON.parse(text) : {};
      } catch {
        // not JSON (metrics text): the status is what counts
      }
      return { status: res.statusCode, text, body: parsed };
    };

  /** A user of the workspace `admin` manages, with a token. */
  async function newUser(admin: Call, role: "viewer" | "member" | "admin"): Promise<{ id: string; token: string }> {
    const u = await admin("POST", "/v1/users", { name: uniq(role), role });
    expect(u.status, u.text).toBe(201);
    const t = await admin("POST", "/v1/tokens", { user_id: u.body.id });
    expect(t.status, t.text).toBe(201);
    return { id: u.body.id as string, token: t.body.token as string };
  }

  /** The four callers of a workspace: its users, and the instance admin (the default workspace's bootstrap admin). */
  async function callers(admin: Call): Promise<Record<RouteRole, Who>> {
    const v = await newUser(admin, "viewer");
    const m = await newUser(admin, "member");
    const a = await newUser(admin, "admin");
    return {
      viewer: { role: "viewer", user_id: v.id, call: as(v.token) },
      member: { role: "member", user_id: m.id, call: as(m.token) },
      admin: { role: "admin", user_id: a.id, call: as(a.token) },
      instance_admin: { role: "instance_admin", user_id: BOOTSTRAP_ADMIN, call: as(TOKEN) },
    };
  }

  /** Objects of the workspace whose admin is `admin`. */
  async function fixtures(ws: string, admin: Call, ownUser: string): Promise<Fixtures> {
    const create = async (definition: Record<string, unknown>) => {
      const res = await admin("POST", "/v1/automations", { definition });
      expect(res.status, res.text).toBe(201);
      return res.body as { id: string; hooks?: { id: string; secret: string }[] };
    };
    const enroll = async (automation: string): Promise<string> => {
      const res = await admin("POST", `/v1/automations/${automation}/enroll`, { subject_id: uniq("ct") });
      expect(res.status, res.text).toBe(201);
      return res.body.id as string;
    };
    const automation = (await create(setEnd(uniq("auto")))).id;
    const gate = (
      await create({
        key: uniq("gate"),
        name: "gate",
        reentry: { policy: "allow_concurrent" },
        root: "ask",
        nodes: [{ key: "ask", kind: "approval", config: { title: "ok?", approvers: [] } }],
      })
    ).id;
    const fanAutomation = (
      await create({
        key: uniq("fan"),
        name: "fan",
        reentry: { policy: "allow_concurrent" },
        root: "fan",
        nodes: [{ key: "fan", kind: "for_each", config: { items: "[1]", subject: "string(item)", action: { kind: "roles.fail", config: {} } } }],
      })
    ).id;
    const hooked = await create({ ...setEnd(uniq("hooked")), triggers: [{ type: "webhook" }] });

    const freshParked = async () => {
      const run = await enroll(gate);
      await engine.waitForRun(ws, run, (r: Run) => r.status === "waiting" && r.waiting_for === "approval");
      const approvals = (await ts.store.listRunApprovals(run)).filter((a) => a.status === "pending");
      expect(approvals).toHaveLength(1);
      return { run, approval: approvals[0]!.id };
    };
    const freshFailedItem = async () => {
      const run = await enroll(fanAutomation);
      await engine.waitForRun(ws, run);
      const items = await engine.listItems(ws, run);
      expect(items.map((i) => i.outcome)).toEqual(["failed"]);
      return { run, item: items[0]!.id };
    };
    const event = await admin("POST", "/v1/events", { type: "roles.seen", key: uniq("seen") });
    expect(event.status, event.text).toBe(202);
    return {
      ws,
      automation,
      parked: await freshParked(),
      fan: await freshFailedItem(),
      event: event.body.event_id as string,
      hook: hooked.hooks![0]!,
      freshAutomation: async () => {
        const key = uniq("auto");
        return { id: (await create(setEnd(key))).id, key };
      },
      freshParked,
      freshCompleted: async () => {
        const run = await enroll(automation);
        expect((await engine.waitForRun(ws, run)).status).toBe("completed");
        return run;
      },
      freshStopped: async () => {
        const { run } = await freshParked();
        const res = await admin("POST", `/v1/automation-runs/${run}/stop`, {});
        expect(res.status, res.text).toBe(200);
        await engine.waitForRun(ws, run);
        return run;
      },
      freshFailedItem,
      freshUser: async () => (await newUser(admin, "viewer")).id,
      freshToken: async (who) => {
        const own = (await ts.store.getUser(ws, who.user_id)) !== null ? who.user_id : ownUser;
        const res = await admin("POST", "/v1/tokens", { user_id: own });
        expect(res.status, res.text).toBe(201);
        return res.body.id as string;
      },
      freshUndeliverable: async () => {
        // Stored without waking the dispatcher, then failed before a round takes it (tried again if one did).
        for (let i = 0; i < 50; i++) {
          const now = engine.clock.now();
          const [stored] = await ts.store.insertEvents([apiEvent(ws, { type: "roles.none", key: uniq("lost") }, now)]);
          const id = stored!.event.id;
          if ((await ts.store.failDispatch([id], "roles matrix fixture", now, 0)).length === 1) return id;
        }
        throw new Error("could not make an undeliverable event");
      },
      freshHook: async () => (await create({ ...setEnd(uniq("hooked")), triggers: [{ type: "webhook" }] })).hooks![0]!.id,
      freshLimit: async () => {
        const name = uniq("lim");
        const res = await admin("POST", "/v1/limits", { name, key: "{{ event.account_id }}", limit: 2 });
        expect(res.status, res.text).toBe(201);
        return name;
      },
      freshSecret: async () => {
        const name = uniq("GONE").replace(/-/g, "_");
        const res = await admin("PUT", `/v1/secrets/${name}`, { value: "a secret value" });
        expect(res.status, res.text).toBe(201);
        return name;
      },
    };
  }

  /**
   * Wait until nothing earlier calls started is still moving: no run due, no event undispatched,
   * and the store the same across a short pause (a claimed run finishing is neither).
   */
  async function quiet(ws: string): Promise<void> {
    await until("the engine to be idle", async () => {
      const c = await ts.store.opsCounts(ws, engine.clock.now(), 3_600_000);
      if (c.due_runs > 0 || c.undispatched_events > 0) return false;
      const first = await dump(ts.store);
      await sleep(50);
      return (await dump(ts.store)) === first;
    });
  }

  async function send(who: Who, method: Method, req: Req): Promise<Res> {
    // Routes without a token are still called with the caller's token: it must make no difference.
    return who.call(method, req.path, req.raw === undefined ? req.body : undefined, req.headers, req.raw);
  }

  it("a route without a declared role (or with an unknown one) fails to register", async () => {
    const undeclared = buildApp({ engine });
    undeclared.register(
      async (v1) => {
        v1.post("/undeclared", async () => ({ ok: true }));
      },
      { prefix: "/v1" },
    );
    await expect(undeclared.ready()).rejects.toThrow(/POST \/v1\/undeclared declares no role/);
    await undeclared.close().catch(() => undefined);

    const unknown = buildApp({ engine });
    unknown.register(async (v1) => {
      v1.get("/v1/unknown", { config: { role: "superuser" as never } }, async () => ({ ok: true }));
    });
    await expect(unknown.ready()).rejects.toThrow(/GET \/v1\/unknown declares no role/);
    await unknown.close().catch(() => undefined);
  });

  it("every route, called as every role: below the declared minimum 403 auth.forbidden and nothing changes; at or above, it succeeds", async () => {
    const admin = as(TOKEN);
    const who = await callers(admin);
    const f = await fixtures(WS, admin, BOOTSTRAP_ADMIN);

    // The generated list and the live app agree, and every route has a recipe.
    const routes = app.weftRoutes;
    expect(routes.map((r) => `${r.method} ${r.url} ${r.role}`).sort()).toEqual((await declaredRoutes()).map((r) => `${r.method} ${r.url} ${r.role}`).sort());
    const missing = routes.map((r) => `${r.method} ${r.url}`).filter((k) => !(k in RECIPES));
    const stale = Object.keys(RECIPES).filter((k) => !routes.some((r) => `${r.method} ${r.url}` === k));
    expect(missing, "routes without a request recipe in RECIPES (add one)").toEqual([]);
    expect(stale, "recipes for routes that no longer exist").toEqual([]);

    const problems: string[] = [];
    let refused = 0;
    let allowed = 0;
    for (const r of routes) {
      for (const role of ["viewer", "member", "admin", "instance_admin"] as const) {
        const caller = who[role];
        const req = await RECIPES[`${r.method} ${r.url}`]!(f, caller);
        const what = `${role} ${r.method} ${req.path}`;
        const mayCall = !needsToken(r.role) || LEVEL[role] >= LEVEL[r.role];
        if (mayCall) {
          allowed += 1;
          const res = await send(caller, r.method as Method, req);
          if (res.status < 200 || res.status >= 300) problems.push(`${what}: ${res.status} ${res.text.slice(0, 200)} (the role may call it)`);
          continue;
        }
        refused += 1;
        await quiet(WS);
        const before = await dump(ts.store);
        const res = await send(caller, r.method as Method, req);
        if (res.status !== 403 || res.body.error?.code !== "auth.forbidden") {
          problems.push(`${what}: ${res.status} ${res.text.slice(0, 200)} (expected 403 auth.forbidden)`);
          continue;
        }
        const e = res.body.error;
        if (e.details.required !== r.role || typeof e.message !== "string" || e.message.includes("    at ")) {
          problems.push(`${what}: the refusal does not name the required role: ${res.text.slice(0, 200)}`);
        }
        await quiet(WS);
        const after = await dump(ts.store);
        if (after !== before) problems.push(`${what}: refused, but the store changed: ${changed(before, after)}`);
      }
    }
    expect(problems).toEqual([]);
    // Every route was called by all four callers; the declarations refuse someone somewhere.
    expect(allowed + refused).toBe(routes.length * 4);
    expect(refused).toBeGreaterThan(20);
  });

  it("a member of workspace A calling any route with an id on workspace B's objects gets 404 and changes nothing", async () => {
    const adminA = as(TOKEN);
    const memberA: Who = { ...(await callers(adminA)).member };
    const wsB = await adminA("POST", "/v1/workspaces", { name: uniq("B") });
    expect(wsB.status, wsB.text).toBe(201);
    const B = wsB.body.id as string;
    const adminB = as(wsB.body.admin_token as string);
    const f = await fixtures(B, adminB, wsB.body.admin_user_id as string);
    await quiet(B);

    // Not objects of a workspace: a webhook delivery is authenticated by its signature, not a
    // workspace token; subject ids are the caller's own labels (any workspace may use the same one).
    const notObjects = new Set([
      "POST /v1/hooks/:id",
      "GET /v1/subjects/:id/automation-controls",
      "POST /v1/subjects/:id/automation-pause",
      "POST /v1/subjects/:id/automation-resume",
    ]);
    const withId = app.weftRoutes.filter((r) => r.url.includes(":") && !notObjects.has(`${r.method} ${r.url}`));
    expect(withId.length).toBeGreaterThan(20);
    const problems: string[] = [];
    for (const r of withId) {
      const recipe = RECIPES[`${r.method} ${r.url}`];
      if (!recipe) {
        problems.push(`${r.method} ${r.url}: no recipe`);
        continue;
      }
      const req = await recipe(f, memberA);
      await quiet(B);
      const before = await dump(ts.store);
      const res = await send(memberA, r.method as Method, req);
      const what = `A's member ${r.method} ${req.path}`;
      // A route above a member refuses before looking anything up (403, says nothing of B).
      const expected = needsToken(r.role) && LEVEL.member < LEVEL[r.role] ? 403 : 404;
      if (res.status !== expected) problems.push(`${what}: ${res.status} ${res.text.slice(0, 200)} (expected ${expected})`);
      if (res.text.includes(B)) problems.push(`${what}: the reply names workspace B`);
      await quiet(B);
      const after = await dump(ts.store);
      if (after !== before) problems.push(`${what}: the store changed: ${changed(before, after)}`);
    }
    expect(problems).toEqual([]);
  });
});
