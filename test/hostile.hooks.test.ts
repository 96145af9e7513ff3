// Webhook secrets against a hostile tenant. A hook's signing secret is a credential: whoever holds
// it can start runs as that hook's sender. It is sealed at rest, shown once (by the call that makes
// the hook, or a rotation), revealed only to admins (audited), rotated with a grace period, and the
// ingress is rate-limited per hook and over all hooks. Both stores, real HTTP, raw rows read back.

import { randomBytes } from "node:crypto";
import { readFileSync, existsSync } from "node:fs";
import type { AddressInfo } from "node:net";
import type { FastifyInstance } from "fastify";
import { Webhook } from "standardwebhooks";
import { Agent, request } from "undici";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { ManualClock } from "../src/engine/clock.js";
import { Engine } from "../src/engine/engine.js";
import type { Store } from "../src/engine/store.js";
import { buildApp, type AppOptions } from "../src/server/app.js";
import { loadConfig } from "../src/server/config.js";
import { EmbeddedStore } from "../src/store/embedded/index.js";
import { PostgresStore } from "../src/store/postgres/index.js";
import { LOOPBACK } from "./helpers/engine.js";
import { makeStore, STORE_KINDS, type TestStore } from "./helpers/stores.js";
import { until } from "./helpers/wait.js";

const ADMIN = "hostile-hooks-admin-token-0123456789";
const HOUR = 3_600_000;

interface HookJson {
  id: string;
  path: string;
  trigger_index: number;
  created_at: string;
  rotated_at: string | null;
  previous_secret_expires_at: string | null;
  secret?: string;
}
interface Reply {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  body: Record<string, unknown> & { error?: { code: string; message: string; details: Record<string, unknown> } };
}

/** Every row of a table, straight from the database (no Store method hides or decodes anything). */
async function rawRows(store: Store, table: "hooks" | "audit_log"): Promise<Record<string, unknown>[]> {
  if (store instanceof PostgresStore) return (await store.pool.query(`SELECT * FROM ${table}`)).rows as Record<string, unknown>[];
  if (store instanceof EmbeddedStore) return store.db.prepare(`SELECT * FROM ${table}`).all() as Record<string, unknown>[];
  throw new Error("unknown store");
}

async function rawExec(store: Store, sql: { pg: string; sqlite: string }, params: unknown[]): Promise<void> {
  if (store instanceof PostgresStore) await store.pool.query(sql.pg, params);
  else if (store instanceof EmbeddedStore) store.db.prepare(sql.sqlite).run(...params);
  else throw new Error("unknown store");
}

async function countEvents(store: Store, source: string): Promise<string[]> {
  if (store instanceof PostgresStore) {
    return (await store.pool.query("SELECT idempotency_key FROM events WHERE source = $1 ORDER BY idempotency_key", [source])).rows.map(
      (r) => r.idempotency_key as string,
    );
  }
  if (store instanceof EmbeddedStore) {
    return (store.db.prepare("SELECT idempotency_key FROM events WHERE source = ? ORDER BY idempotency_key").all(source) as { idempotency_key: string }[]).map(
      (r) => r.idempotency_key,
    );
  }
  throw new Error("unknown store");
}

let seq = 0;
const newKey = () => randomBytes(32).toString("base64");

describe.each(STORE_KINDS)("hook secrets against a hostile tenant (%s store)", (kind) => {
  let ts: TestStore;
  let clock: ManualClock;
  let engine: Engine;
  let app: FastifyInstance;
  let base: string;
  let agent: Agent;
  let key: string;

  async function boot(opts: { secretKey?: string; app?: Partial<AppOptions> } = {}): Promise<void> {
    engine = new Engine({ store: ts.store, clock, noRunner: true, httpAllow: LOOPBACK, ...(opts.secretKey ? { secretKey: opts.secretKey } : {}) });
    await engine.start();
    app = buildApp({ engine, adminToken: ADMIN, ...opts.app });
    await app.listen({ host: "127.0.0.1", port: 0 });
    base = `http://127.0.0.1:${(app.server.address() as AddressInfo).port}`;
  }
  async function shutdown(): Promise<void> {
    await app?.close();
    await engine?.stop();
  }

  beforeEach(async () => {
    ts = await makeStore(kind);
    clock = new ManualClock(Date.now());
    agent = new Agent({ connections: 50 });
    key = newKey();
    await boot({ secretKey: key });
  });
  afterEach(async () => {
    await shutdown();
    await agent.close();
    await ts.destroy();
  });

  async function call(token: string, method: "GET" | "POST" | "PUT", path: string, body?: unknown): Promise<Reply> {
    const res = await request(`${base}${path}`, {
      method,
      dispatcher: agent,
      headers: { authorization: `Bearer ${token}`, ...(body !== undefined ? { "content-type": "application/json" } : {}) },
      ...(body !== undefined ? { body: JSON.stringify(body) } : {}),
    });
    const text = await res.body.text();
    return { status: res.statusCode, headers: res.headers, body: text === "" ? {} : JSON.parse(text) };
  }

  /** A user of the default workspace with this role, and a token of theirs. */
  async function tokenFor(role: "viewer" | "member" | "admin"): Promise<string> {
    const u = await call(ADMIN, "POST", "/v1/users", { name: `${role} ${++seq}`, role });
    expect(u.status).toBe(201);
    const t = await call(ADMIN, "POST", "/v1/tokens", { user_id: u.body.id });
    expect(t.status).toBe(201);
    return t.body.token as string;
  }

  function definition(k: string) {
    return {
      key: k,
      name: k,
      triggers: [{ type: "webhook" }],
      reentry: { policy: "allow_concurrent" },
      root: "keep",
      nodes: [{ key: "keep", kind: "set", config: { assign: { order: "event.payload.order" } } }],
    };
  }

  /** An automation with one webhook trigger, made over the API by `token`; its hook as the create response shows it. */
  async function webhookAutomation(token = ADMIN): Promise<{ id: string; hook: HookJson & { secret: string } }> {
    const res = await call(token, "POST", "/v1/automations", { definition: definition(`hook-${++seq}`) });
    expect(res.status, JSON.stringify(res.body)).toBe(201);
    const hook = (res.body.hooks as HookJson[])[0]!;
    expect(hook.secret).toMatch(/^whsec_/);
    return { id: res.body.id as string, hook: hook as HookJson & { secret: string } };
  }

  async function deliver(hookId: string, secret: string, msgId: string, payload: unknown = { order: msgId }): Promise<Reply> {
    const at = new Date();
    const body = JSON.stringify(payload);
    const res = await request(`${base}/v1/hooks/${hookId}`, {
      method: "POST",
      dispatcher: agent,
      headers: {
        "webhook-id": msgId,
        "webhook-timestamp": String(Math.floor(at.getTime() / 1000)),
        "webhook-signature": new Webhook(secret).sign(msgId, at, body),
        "content-type": "application/json",
      },
      body,
    });
    const text = await res.body.text();
    return { status: res.statusCode, headers: res.headers, body: JSON.parse(text) };
  }

  /** Every string anywhere in a JSON value. */
  const strings = (v: unknown): string[] =>
    typeof v === "string" ? [v] : Array.isArray(v) ? v.flatMap(strings) : v && typeof v === "object" ? Object.values(v).flatMap(strings) : [];

  it("viewers and members see hook ids, paths, times and rotation state but no secret anywhere, and cannot reveal or rotate", async () => {
    const viewer = await tokenFor("viewer");
    const member = await tokenFor("member");
    const a = await webhookAutomation(member); // the member who made it saw the secret once, in this response
    for (const [who, token] of [
      ["viewer", viewer],
      ["member", member],
      ["admin", ADMIN],
    ] as const) {
      const got = await call(token, "GET", `/v1/automations/${a.id}`);
      expect(got.status, who).toBe(200);
      const { secret: _once, ...shown } = a.hook;
      expect(got.body.hooks, who).toEqual([{ ...shown, rotated_at: null, previous_secret_expires_at: null }]);
      const list = await call(token, "GET", "/v1/automations");
      const version = await call(token, "GET", `/v1/automations/${a.id}/versions/1`);
      for (const [what, r] of [
        ["get", got],
        ["list", list],
        ["version", version],
      ] as const) {
        expect(JSON.stringify(r.body), `${who} ${what}`).not.toContain(a.hook.secret);
        expect(
          strings(r.body).filter((s) => s.startsWith("whsec_")),
          `${who} ${what}`,
        ).toEqual([]);
      }
    }
    for (const [who, token] of [
      ["viewer", viewer],
      ["member", member],
    ] as const) {
      const reveal = await call(token, "GET", `/v1/hooks/${a.hook.id}/secret`);
      expect({ status: reveal.status, code: reveal.body.error?.code }, `${who} reveal`).toEqual({ status: 403, code: "auth.forbidden" });
      const rotate = await call(token, "POST", `/v1/hooks/${a.hook.id}/rotate`, {});
      expect({ status: rotate.status, code: rotate.body.error?.code }, `${who} rotate`).toEqual({ status: 403, code: "auth.forbidden" });
    }
    // Refused calls changed nothing and were not recorded as reveals or rotations.
    expect((await rawRows(ts.store, "audit_log")).filter((r) => String(r.action).startsWith("hook."))).toEqual([]);
    expect(await deliver(a.hook.id, a.hook.secret, "still-1")).toMatchObject({ status: 202 });
  });

  it("an update that adds a webhook trigger shows the new hook's secret once and the existing hook's not at all", async () => {
    const a = await webhookAutomation();
    const def = {
      ...definition((await call(ADMIN, "GET", `/v1/automations/${a.id}`)).body.key as string),
      triggers: [{ type: "webhook" }, { type: "webhook" }],
    };
    const up = await call(ADMIN, "PUT", `/v1/automations/${a.id}`, { definition: def });
    expect(up.status).toBe(200);
    const hooks = up.body.hooks as HookJson[];
    expect(hooks.map((h) => [h.trigger_index, h.id === a.hook.id, typeof h.secret])).toEqual([
      [0, true, "undefined"],
      [1, false, "string"],
    ]);
    expect(await deliver(hooks[1]!.id, hooks[1]!.secret!, "second-hook")).toMatchObject({ status: 202 });
    const again = await call(ADMIN, "PUT", `/v1/automations/${a.id}`, { definition: { ...def, name: "renamed" } });
    expect((again.body.hooks as HookJson[]).map((h) => h.secret)).toEqual([undefined, undefined]);
  });

  it("the original attack: a viewer reads the automation, signs a delivery with what it shows, posts it — refused, nothing stored", async () => {
    const viewer = await tokenFor("viewer");
    const a = await webhookAutomation();
    const read = await call(viewer, "GET", `/v1/automations/${a.id}`);
    const hook = (read.body.hooks as HookJson[])[0]!;
    expect(hook.path).toBe(`/v1/hooks/${a.hook.id}`);
    expect(hook.secret).toBeUndefined();
    // Whatever the viewer could read, tried as a signing key: none verifies.
    const candidates = [...new Set(strings(read.body).filter((s) => s.length >= 8))];
    expect(candidates.length).toBeGreaterThan(0);
    for (const [i, guess] of candidates.entries()) {
      const res = await deliver(hook.id, `whsec_${Buffer.from(guess).toString("base64")}`, `forged-${i}`);
      expect({ status: res.status, code: res.body.error?.code }, guess).toEqual({ status: 401, code: "webhook.bad_signature" });
    }
    expect(await countEvents(ts.store, `webhook:${a.hook.id}`)).toEqual([]);
  });

  it("an admin reveals the secret (audited as hook.reveal, before it is shown); another workspace's admin finds no such hook", async () => {
    const a = await webhookAutomation();
    const reveal = await call(ADMIN, "GET", `/v1/hooks/${a.hook.id}/secret`);
    expect(reveal).toMatchObject({ status: 200, body: { id: a.hook.id, secret: a.hook.secret } });
    const audit = (await call(ADMIN, "GET", "/v1/audit-log")).body.items as { action: string; target_type: string; target_id: string; actor: string }[];
    expect(audit.filter((e) => e.action === "hook.reveal")).toEqual([
      expect.objectContaining({ action: "hook.reveal", target_type: "hook", target_id: a.hook.id, actor: "user:usr_admin" }),
    ]);
    // The revealed secret is the one deliveries verify against.
    expect(await deliver(a.hook.id, reveal.body.secret as string, "revealed-1")).toMatchObject({ status: 202 });

    const other = await call(ADMIN, "POST", "/v1/workspaces", { name: `other ${++seq}` });
    expect(other.status).toBe(201);
    const stranger = other.body.admin_token as string;
    for (const [method, path, body] of [
      ["GET", `/v1/hooks/${a.hook.id}/secret`, undefined],
      ["POST", `/v1/hooks/${a.hook.id}/rotate`, {}],
    ] as const) {
      const res = await call(stranger, method, path, body);
      expect({ status: res.status, code: res.body.error?.code }, path).toEqual({ status: 404, code: "hook.not_found" });
    }
    expect(await deliver(a.hook.id, a.hook.secret, "still-mine")).toMatchObject({ status: 202 });
  });

  it("rotation: the new secret is shown once; within the grace period old and new verify, after it only the new (audited as hook.rotate)", async () => {
    const a = await webhookAutomation();
    const rotated = await call(ADMIN, "POST", `/v1/hooks/${a.hook.id}/rotate`, { grace_seconds: 3600 });
    expect(rotated.status).toBe(200);
    const fresh = rotated.body as unknown as HookJson & { secret: string };
    expect(fresh.secret).toMatch(/^whsec_/);
    expect(fresh.secret).not.toBe(a.hook.secret);
    const now = clock.now();
    expect(fresh).toMatchObject({
      id: a.hook.id,
      rotated_at: new Date(now).toISOString(),
      previous_secret_expires_at: new Date(now + HOUR).toISOString(),
    });
    // Reads show the rotation, not the secret.
    const got = (await call(ADMIN, "GET", `/v1/automations/${a.id}`)).body.hooks as HookJson[];
    expect(got[0]).toEqual({ ...fresh, secret: undefined });
    expect(JSON.stringify(got)).not.toContain(fresh.secret);

    expect(await deliver(a.hook.id, a.hook.secret, "old-in-grace")).toMatchObject({ status: 202 });
    expect(await deliver(a.hook.id, fresh.secret, "new-in-grace")).toMatchObject({ status: 202 });
    clock.advance(HOUR - 1);
    expect(await deliver(a.hook.id, a.hook.secret, "old-last-ms")).toMatchObject({ status: 202 });
    clock.advance(1);
    const late = await deliver(a.hook.id, a.hook.secret, "old-after-grace");
    expect({ status: late.status, code: late.body.error?.code }).toEqual({ status: 401, code: "webhook.bad_signature" });
    expect(await deliver(a.hook.id, fresh.secret, "new-after-grace")).toMatchObject({ status: 202 });
    expect(await countEvents(ts.store, `webhook:${a.hook.id}`)).toEqual(["new-after-grace", "new-in-grace", "old-in-grace", "old-last-ms"]);

    // A rotation without a body keeps the old secret 24 hours; grace 0 cuts over at once.
    const again = await call(ADMIN, "POST", `/v1/hooks/${a.hook.id}/rotate`);
    expect(again.status).toBe(200);
    expect(again.body.previous_secret_expires_at).toBe(new Date(clock.now() + 24 * HOUR).toISOString());
    expect(await deliver(a.hook.id, fresh.secret, "second-old")).toMatchObject({ status: 202 });
    const third = await call(ADMIN, "POST", `/v1/hooks/${a.hook.id}/rotate`, { grace_seconds: 0 });
    expect(third.body.previous_secret_expires_at).toBeNull();
    expect(await deliver(a.hook.id, again.body.secret as string, "cut-over")).toMatchObject({ status: 401 });
    expect(await deliver(a.hook.id, third.body.secret as string, "third-new")).toMatchObject({ status: 202 });

    const audit = (await call(ADMIN, "GET", "/v1/audit-log")).body.items as { action: string; target_id: string; details: Record<string, unknown> }[];
    expect(audit.filter((e) => e.action === "hook.rotate").map((e) => [e.target_id, e.details.grace_seconds])).toEqual([
      [a.hook.id, 0],
      [a.hook.id, 86_400],
      [a.hook.id, 3600],
    ]);
    expect(JSON.stringify(audit)).not.toMatch(/whsec_/);
  });

  it("a rotation's grace_seconds is validated with the pointer at fault; a refused rotation changes nothing", async () => {
    const a = await webhookAutomation();
    for (const body of [{ grace_seconds: -1 }, { grace_seconds: 7 * 24 * 3600 + 1 }, { grace_seconds: 1.5 }, { grace_seconds: "3600" }]) {
      const res = await call(ADMIN, "POST", `/v1/hooks/${a.hook.id}/rotate`, body);
      expect({ status: res.status, code: res.body.error?.code, pointer: res.body.error?.details.pointer }, JSON.stringify(body)).toEqual({
        status: 400,
        code: "request.invalid",
        pointer: "/grace_seconds",
      });
    }
    const unknown = await call(ADMIN, "POST", `/v1/hooks/${a.hook.id}/rotate`, { grace: 10 });
    expect({ status: unknown.status, code: unknown.body.error?.code }).toEqual({ status: 400, code: "request.invalid" });
    expect((await call(ADMIN, "POST", `/v1/hooks/${a.hook.id}/rotate`, { grace_seconds: 7 * 24 * 3600 })).status).toBe(200);
    const missing = await call(ADMIN, "POST", "/v1/hooks/hook_nope/rotate", {});
    expect({ status: missing.status, code: missing.body.error?.code }).toEqual({ status: 404, code: "hook.not_found" });
    expect((await rawRows(ts.store, "hooks"))[0]!.rotated_at).not.toBeNull();
  });

  it("at rest a hook's secrets are sealed: neither the current nor a rotated-out one is in the table (nor, embedded, in the database files)", async () => {
    const a = await webhookAutomation();
    const rotated = await call(ADMIN, "POST", `/v1/hooks/${a.hook.id}/rotate`, { grace_seconds: 600 });
    const plain = [a.hook.secret, rotated.body.secret as string];
    const rows = await rawRows(ts.store, "hooks");
    expect(rows).toHaveLength(1);
    const row = rows[0]!;
    expect(String(row.secret)).toMatch(/^v1\./);
    expect(String(row.previous_secret)).toMatch(/^v1\./);
    for (const p of plain) {
      const b64 = p.slice("whsec_".length);
      expect(JSON.stringify(row)).not.toContain(b64);
    }
    if (ts.store instanceof EmbeddedStore) {
      const file = ts.store.db.name;
      for (const f of [file, `${file}-wal`]) {
        if (!existsSync(f)) continue;
        const bytes = readFileSync(f);
        for (const p of plain) expect(bytes.includes(Buffer.from(p.slice("whsec_".length))), f).toBe(false);
      }
    }
    // Sealed under this key: the same store with another key cannot verify (nor reveal) with it.
    await shutdown();
    await boot({ secretKey: newKey() });
    const res = await deliver(a.hook.id, rotated.body.secret as string, "other-key");
    expect(res.status).toBeGreaterThanOrEqual(400);
    expect(res.status).toBeLessThan(500);
    expect(res.body.error?.code).toBe("secrets.undecryptable");
  });

  it("a plaintext secret from before sealing keeps verifying and is sealed when a process starts with the key", async () => {
    const a = await webhookAutomation();
    const legacy = `whsec_${randomBytes(24).toString("base64")}`;
    await shutdown();
    // As a row written before migration 010 looks: the secret in plaintext.
    await rawExec(ts.store, { pg: "UPDATE hooks SET secret = $1 WHERE id = $2", sqlite: "UPDATE hooks SET secret = ? WHERE id = ?" }, [legacy, a.hook.id]);
    // Without a key it cannot be sealed: it still verifies, as it did.
    await boot({});
    expect(await deliver(a.hook.id, legacy, "legacy-no-key")).toMatchObject({ status: 202 });
    expect((await rawRows(ts.store, "hooks"))[0]!.secret).toBe(legacy);
    await shutdown();
    // With the key, the start seals it; deliveries signed with it still verify.
    await boot({ secretKey: key });
    const row = (await rawRows(ts.store, "hooks"))[0]!;
    expect(String(row.secret)).toMatch(/^v1\./);
    expect(JSON.stringify(row)).not.toContain(legacy.slice("whsec_".length));
    expect(await deliver(a.hook.id, legacy, "legacy-sealed")).toMatchObject({ status: 202 });
    expect((await call(ADMIN, "GET", `/v1/hooks/${a.hook.id}/secret`)).body.secret).toBe(legacy);
  });

  it("without a secret key a webhook trigger is refused (secrets.no_key, with the pointer) and nothing is written, as for workspace secrets", async () => {
    await shutdown();
    await boot({});
    const before = { hooks: (await rawRows(ts.store, "hooks")).length, automations: (await call(ADMIN, "GET", "/v1/automations")).body.items };
    const res = await call(ADMIN, "POST", "/v1/automations", {
      definition: { ...definition(`no-key-${++seq}`), triggers: [{ type: "event", name: "x" }, { type: "webhook" }] },
    });
    expect({ status: res.status, code: res.body.error?.code, pointer: res.body.error?.details.pointer }).toEqual({
      status: 400,
      code: "secrets.no_key",
      pointer: "/triggers/1",
    });
    expect((await call(ADMIN, "GET", "/v1/automations")).body.items).toEqual(before.automations);
    expect((await rawRows(ts.store, "hooks")).length).toBe(before.hooks);
    // Nor may an update add one; an automation without webhook triggers is made and edited as before.
    const plainAut = await call(ADMIN, "POST", "/v1/automations", {
      definition: { ...definition(`plain-${++seq}`), triggers: [{ type: "event", name: "x" }] },
    });
    expect(plainAut.status).toBe(201);
    const up = await call(ADMIN, "PUT", `/v1/automations/${plainAut.body.id}`, {
      definition: { ...definition(plainAut.body.key as string), triggers: [{ type: "webhook" }] },
    });
    expect({ status: up.status, code: up.body.error?.code, pointer: up.body.error?.details.pointer }).toEqual({
      status: 400,
      code: "secrets.no_key",
      pointer: "/triggers/0",
    });
    expect((await call(ADMIN, "GET", `/v1/automations/${plainAut.body.id}`)).body.version).toBe(1);
    expect((await rawRows(ts.store, "hooks")).length).toBe(before.hooks);
    const secret = await call(ADMIN, "PUT", "/v1/secrets/CRM_TOKEN", { value: "a-secret-value" });
    expect(secret.body.error?.code).toBe("secrets.no_key");
  });

  it("ingress is rate-limited per hook (429 limits.rate with Retry-After) without touching other hooks; accepted deliveries are all stored and refused ones can be sent again", async () => {
    await shutdown();
    await boot({ secretKey: key, app: { hookRateLimitPerSecond: 5, hookRateLimitTotalPerSecond: 1000 } });
    const a = await webhookAutomation();
    const b = await webhookAutomation();
    const ids = Array.from({ length: 20 }, (_, i) => `burst-${String(i).padStart(2, "0")}`);
    const replies = await Promise.all(ids.map((id) => deliver(a.hook.id, a.hook.secret, id)));
    const accepted = ids.filter((_, i) => replies[i]!.status === 202);
    const limited = ids.filter((_, i) => replies[i]!.status === 429);
    expect(accepted.length + limited.length).toBe(ids.length);
    // 5 a second: a burst that straddles a window may get a second window's 5 too, never all 20.
    expect(accepted.length).toBeGreaterThanOrEqual(5);
    expect(limited.length).toBeGreaterThan(0);
    for (const r of replies.filter((x) => x.status === 429)) {
      expect(r.body.error?.code).toBe("limits.rate");
      expect(Number(r.headers["retry-after"])).toBeGreaterThanOrEqual(1);
    }
    // Another hook is not held by this one's limit.
    expect(await deliver(b.hook.id, b.hook.secret, "other-hook")).toMatchObject({ status: 202 });
    // Every 202 is stored; no 429 stored anything.
    expect(await countEvents(ts.store, `webhook:${a.hook.id}`)).toEqual([...accepted].sort());
    // The refused ones, sent again once the window has passed, are taken.
    for (const id of limited) await until(`${id} accepted on a retry`, async () => (await deliver(a.hook.id, a.hook.secret, id)).status === 202, 30_000, 200);
    expect(await countEvents(ts.store, `webhook:${a.hook.id}`)).toEqual([...ids].sort());
  });

  it("ingress over all hooks is capped too (made-up hook ids count), with 429 limits.rate and nothing stored for a refused delivery", async () => {
    await shutdown();
    await boot({ secretKey: key, app: { hookRateLimitPerSecond: 1000, hookRateLimitTotalPerSecond: 4 } });
    const hooks = [await webhookAutomation(), await webhookAutomation(), await webhookAutomation()];
    const sends = hooks.flatMap((h, i) => [0, 1, 2].map((j) => ({ h, id: `all-${i}-${j}` })));
    const replies = await Promise.all(sends.map((s) => deliver(s.h.hook.id, s.h.hook.secret, s.id)));
    const limited = replies.filter((r) => r.status === 429);
    expect(replies.filter((r) => r.status === 202).length).toBeGreaterThanOrEqual(4);
    expect(limited.length).toBeGreaterThan(0);
    expect(limited.length + replies.filter((r) => r.status === 202).length).toBe(sends.length);
    expect(limited.map((r) => r.body.error?.code)).toEqual(Array(limited.length).fill("limits.rate"));
    const stored = (await Promise.all(hooks.map((h) => countEvents(ts.store, `webhook:${h.hook.id}`)))).flat().sort();
    expect(stored).toEqual(
      sends
        .filter((_, i) => replies[i]!.status === 202)
        .map((s) => s.id)
        .sort(),
    );
    // A flood of made-up hook ids is held by the same cap (each has its own per-hook budget).
    const madeUp = await Promise.all(Array.from({ length: 12 }, (_, i) => deliver(`hook_madeup${i}`, "whsec_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA", `m-${i}`)));
    expect(madeUp.filter((r) => r.status === 429).length).toBeGreaterThan(0);
    expect(madeUp.every((r) => r.status === 429 || r.body.error?.code === "webhook.not_found")).toBe(true);
  });
});

describe("the hook ingress limits are settings", () => {
  it("WEFT_HOOK_RATE_LIMIT and WEFT_HOOK_RATE_LIMIT_TOTAL are read (0 turns a limit off; a bad value is refused, naming it)", () => {
    expect(loadConfig({})).toMatchObject({ hookRateLimit: 100, hookRateLimitTotal: 1000 });
    expect(loadConfig({ WEFT_HOOK_RATE_LIMIT: "7", WEFT_HOOK_RATE_LIMIT_TOTAL: "0" })).toMatchObject({ hookRateLimit: 7, hookRateLimitTotal: 0 });
    expect(() => loadConfig({ WEFT_HOOK_RATE_LIMIT: "fast" })).toThrow(/WEFT_HOOK_RATE_LIMIT/);
    expect(() => loadConfig({ WEFT_HOOK_RATE_LIMIT_TOTAL: "-1" })).toThrow(/WEFT_HOOK_RATE_LIMIT_TOTAL/);
  });
});
