// Webhook triggers: each `{type: "webhook"}` trigger gets an ingress point (id, path, secret).
// Deliveries are checked with the Standard Webhooks reference library: signed JSON is accepted
// (202) and starts one run; a redelivery (same webhook-id) is a duplicate; a bad signature or a
// stale timestamp is 401; a non-JSON content type is 415 — and none of the refused ones stores
// anything.

import { randomBytes } from "node:crypto";
import type { AddressInfo } from "node:net";
import type { FastifyInstance } from "fastify";
import { Webhook } from "standardwebhooks";
import { request } from "undici";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import type { Engine } from "../src/engine/engine.js";
import type { Run, Store } from "../src/engine/store.js";
import { buildApp } from "../src/server/app.js";
import { EmbeddedStore } from "../src/store/embedded/index.js";
import { PostgresStore } from "../src/store/postgres/index.js";
import { startEngine, WS } from "./helpers/engine.js";
import { makeStore, STORE_KINDS, type TestStore } from "./helpers/stores.js";
import { until } from "./helpers/wait.js";

const TOKEN = "hooks-admin-token";

/** Stored events of one source, straight from the database (the Store has no event listing). */
async function eventsFrom(store: Store, source: string): Promise<{ id: string; idempotency_key: string }[]> {
  if (store instanceof PostgresStore) {
    return (await store.pool.query("SELECT id, idempotency_key FROM events WHERE source = $1 ORDER BY received_at, id", [source])).rows as {
      id: string;
      idempotency_key: string;
    }[];
  }
  if (store instanceof EmbeddedStore) {
    return store.db.prepare("SELECT id, idempotency_key FROM events WHERE source = ? ORDER BY received_at, id").all(source) as {
      id: string;
      idempotency_key: string;
    }[];
  }
  throw new Error("unknown store");
}

let seq = 0;

interface HookJson {
  id: string;
  trigger_index: number;
  path: string;
  created_at: string;
  rotated_at: string | null;
  previous_secret_expires_at: string | null;
  secret: string;
}

describe.each(STORE_KINDS)("webhook triggers (%s store)", (kind) => {
  let ts: TestStore;
  let engine: Engine;
  let app: FastifyInstance;
  let base: string;
  let errors: unknown[];

  beforeEach(async () => {
    ts = await makeStore(kind); // fresh per test: the engine's first dispatch round stays short
    engine = await startEngine({ store: ts.store, secretKey: randomBytes(32).toString("base64") });
    errors = [];
    engine.events.on("engine:error", (e) => errors.push(e));
    app = buildApp({ engine, adminToken: TOKEN });
    await app.listen({ host: "127.0.0.1", port: 0 });
    base = `http://127.0.0.1:${(app.server.address() as AddressInfo).port}`;
  });
  afterEach(async () => {
    await app.close();
    await engine.stop();
    await ts.destroy();
    expect(errors).toEqual([]);
  });

  async function api(method: "GET" | "POST", path: string, body?: unknown) {
    const res = await request(`${base}${path}`, {
      method,
      headers: { authorization: `Bearer ${TOKEN}`, ...(body !== undefined ? { "content-type": "application/json" } : {}) },
      ...(body !== undefined ? { body: JSON.stringify(body) } : {}),
    });
    return { status: res.statusCode, body: (await res.body.json()) as Record<string, unknown> };
  }

  /** Create an automation with one webhook trigger over the API; returns it and its hook. */
  async function webhookAutomation(): Promise<{ id: string; hook: HookJson }> {
    const key = `hook-${++seq}`;
    const res = await api("POST", "/v1/automations", {
      definition: {
        key,
        name: key,
        triggers: [{ type: "event", name: `${key}.manual` }, { type: "webhook" }],
        reentry: { policy: "allow_concurrent" },
        root: "keep",
        nodes: [
          { key: "keep", kind: "set", config: { assign: { order: "event.payload.order" } } },
          { key: "done", kind: "end" },
        ],
        edges: [{ from: "keep", port: "next", to: "done" }],
      },
    });
    expect(res.status).toBe(201);
    const hooks = res.body.hooks as HookJson[];
    expect(hooks).toHaveLength(1);
    return { id: res.body.id as string, hook: hooks[0]! };
  }

  async function deliver(
    path: string,
    opts: { msgId: string; body: string; secret: string; at?: Date; sendBody?: string; contentType?: string; omit?: string[] },
  ) {
    const at = opts.at ?? new Date();
    const signature = new Webhook(opts.secret).sign(opts.msgId, at, opts.body);
    const headers: Record<string, string> = {
      "webhook-id": opts.msgId,
      "webhook-timestamp": String(Math.floor(at.getTime() / 1000)),
      "webhook-signature": signature,
      "content-type": opts.contentType ?? "application/json",
    };
    for (const h of opts.omit ?? []) delete headers[h];
    const res = await request(`${base}${path}`, { method: "POST", headers, body: opts.sendBody ?? opts.body });
    const text = await res.body.text();
    return { status: res.statusCode, body: JSON.parse(text) as { event_id?: string; duplicate?: boolean; error?: { code: string } } };
  }

  const runsOf = async (automationId: string): Promise<Run[]> => (await engine.listRuns({ workspace_id: WS, automation_id: automationId, limit: 500 })).items;

  it("a webhook trigger has an ingress point: id, path and signing secret; reads show the hook, never the secret", async () => {
    const a = await webhookAutomation();
    expect(a.hook.id).toMatch(/^hook_/);
    expect(a.hook.path).toBe(`/v1/hooks/${a.hook.id}`);
    expect(a.hook.secret).toMatch(/^whsec_/);
    expect(a.hook.trigger_index).toBe(1);
    const got = await api("GET", `/v1/automations/${a.id}`);
    const { secret: _shownOnce, ...hook } = a.hook;
    expect(got.body.hooks).toEqual([hook]);
    // The engine view says the same.
    const view = await engine.getAutomation(WS, a.id);
    expect(view.hooks?.map((h) => ({ id: h.id, secret: h.secret }))).toEqual([{ id: a.hook.id, secret: undefined }]);
  });

  it("a signed JSON delivery is accepted with 202 and starts one run; the same webhook-id again is a duplicate", async () => {
    const a = await webhookAutomation();
    const other = await webhookAutomation(); // another webhook automation must not be started
    const body = JSON.stringify({ order: "A-1", total: 42 });
    const first = await deliver(a.hook.path, { msgId: "msg_1", body, secret: a.hook.secret });
    expect(first.status).toBe(202);
    expect(first.body.duplicate).toBe(false);
    const eventId = first.body.event_id!;
    const ev = await engine.getEvent(WS, eventId);
    expect(ev).toMatchObject({ type: "webhook", source: `webhook:${a.hook.id}`, idempotency_key: "msg_1" });
    expect(ev.body).toMatchObject({ type: "webhook", hook_id: a.hook.id, payload: { order: "A-1", total: 42 } });

    const run = await until("the delivery's run", async () => (await runsOf(a.id)).find((r) => r.event_id === eventId && r.status === "completed"));
    expect(run.trigger_type).toBe("webhook");
    expect(run.context).toEqual({ order: "A-1" });

    // Redelivery: same webhook-id, signed again (new timestamp) — same event, no second run.
    const again = await deliver(a.hook.path, { msgId: "msg_1", body, secret: a.hook.secret });
    expect(again).toEqual({ status: 202, body: { event_id: eventId, duplicate: true } });
    const marker = await deliver(a.hook.path, { msgId: "msg_2", body: JSON.stringify({ order: "A-2" }), secret: a.hook.secret });
    expect(marker.status).toBe(202);
    await until("the marker's run", async () => (await runsOf(a.id)).some((r) => r.event_id === marker.body.event_id));
    const runs = await runsOf(a.id);
    expect(runs.map((r) => r.event_id).sort()).toEqual([eventId, marker.body.event_id!].sort());
    expect(await runsOf(other.id)).toEqual([]);
    expect((await eventsFrom(ts.store, `webhook:${a.hook.id}`)).map((e) => e.idempotency_key)).toEqual(["msg_1", "msg_2"]);
  });

  it("the same webhook-id with another body is refused with 409 event.key_conflict and not stored", async () => {
    const a = await webhookAutomation();
    const first = await deliver(a.hook.path, { msgId: "msg_c", body: JSON.stringify({ order: "D-1" }), secret: a.hook.secret });
    expect(first.status).toBe(202);
    const conflict = await deliver(a.hook.path, { msgId: "msg_c", body: JSON.stringify({ order: "changed" }), secret: a.hook.secret });
    expect.soft({ status: conflict.status, code: conflict.body.error?.code }).toEqual({ status: 409, code: "event.key_conflict" });
    expect((await eventsFrom(ts.store, `webhook:${a.hook.id}`)).map((e) => e.id)).toEqual([first.body.event_id]);
  });

  it("refusals store nothing: tampered body 401 bad_signature, 10-minute-old timestamp 401 bad_timestamp, text/plain and form bodies 415", async () => {
    const a = await webhookAutomation();
    const other = await webhookAutomation();
    const body = JSON.stringify({ order: "B-1" });

    const tampered = await deliver(a.hook.path, { msgId: "bad_1", body, sendBody: JSON.stringify({ order: "B-1", total: 1_000_000 }), secret: a.hook.secret });
    expect(tampered.status).toBe(401);
    expect(tampered.body.error?.code).toBe("webhook.bad_signature");

    const wrongSecret = await deliver(a.hook.path, { msgId: "bad_2", body, secret: other.hook.secret });
    expect(wrongSecret.status).toBe(401);
    expect(wrongSecret.body.error?.code).toBe("webhook.bad_signature");

    const old = await deliver(a.hook.path, { msgId: "bad_3", body, secret: a.hook.secret, at: new Date(Date.now() - 10 * 60_000) });
    expect(old.status).toBe(401);
    expect(old.body.error?.code).toBe("webhook.bad_timestamp");

    const future = await deliver(a.hook.path, { msgId: "bad_4", body, secret: a.hook.secret, at: new Date(Date.now() + 10 * 60_000) });
    expect(future.status).toBe(401);
    expect(future.body.error?.code).toBe("webhook.bad_timestamp");

    for (const contentType of ["text/plain", "application/x-www-form-urlencoded"]) {
      const res = await deliver(a.hook.path, { msgId: `bad_ct_${contentType}`, body, secret: a.hook.secret, contentType });
      expect(res.status, contentType).toBe(415);
      expect(res.body.error?.code, contentType).toBe("webhook.unsupported_media_type");
    }

    const noSignature = await deliver(a.hook.path, { msgId: "bad_5", body, secret: a.hook.secret, omit: ["webhook-signature"] });
    expect(noSignature.status).toBe(401);

    const unknownHook = await deliver("/v1/hooks/hook_does_not_exist", { msgId: "bad_6", body, secret: a.hook.secret });
    expect(unknownHook.status).toBe(404);

    expect(await eventsFrom(ts.store, `webhook:${a.hook.id}`)).toEqual([]);

    // The refused ids were never taken: a correct delivery under one of them is a new event.
    const good = await deliver(a.hook.path, { msgId: "bad_3", body, secret: a.hook.secret });
    expect(good.status).toBe(202);
    expect(good.body.duplicate).toBe(false);
    await until("its run", async () => (await runsOf(a.id)).some((r) => r.event_id === good.body.event_id));
    expect(await runsOf(a.id)).toHaveLength(1);
    expect(await runsOf(other.id)).toEqual([]);
  });

  it("application/*+json and a charset parameter count as JSON", async () => {
    const a = await webhookAutomation();
    const body = JSON.stringify({ order: "C-1" });
    const withCharset = await deliver(a.hook.path, { msgId: "ct_1", body, secret: a.hook.secret, contentType: "application/json; charset=utf-8" });
    expect(withCharset.status).toBe(202);
    const vendor = await deliver(a.hook.path, { msgId: "ct_2", body, secret: a.hook.secret, contentType: "application/cloudevents+json" });
    expect(vendor.status).toBe(202);
    expect((await eventsFrom(ts.store, `webhook:${a.hook.id}`)).map((e) => e.idempotency_key)).toEqual(["ct_1", "ct_2"]);
  });

  it("a correctly signed application/json body that is not JSON is 400 webhook.bad_json (the signature is fine) and not stored", async () => {
    const a = await webhookAutomation();
    const notJson = await deliver(a.hook.path, { msgId: "nj_1", body: "order=C-1", secret: a.hook.secret });
    expect.soft({ status: notJson.status, code: notJson.body.error?.code }).toEqual({ status: 400, code: "webhook.bad_json" });
    expect(await eventsFrom(ts.store, `webhook:${a.hook.id}`)).toEqual([]);
  });
});
