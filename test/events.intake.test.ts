// Event intake over HTTP (POST /v1/events): acknowledged with 202 only once the event is
// committed, idempotent on its key (same body → same event, another body → 409 and nothing
// stored), field errors with JSON pointers, and a burst of 1,000 concurrent posts of 100 keys
// that must store exactly 100 events and start exactly 100 runs.

import type { AddressInfo } from "node:net";
import type { FastifyInstance } from "fastify";
import { Agent, request } from "undici";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import type { Engine } from "../src/engine/engine.js";
import type { Run, Store } from "../src/engine/store.js";
import { buildApp } from "../src/server/app.js";
import { EmbeddedStore } from "../src/store/embedded/index.js";
import { PostgresStore } from "../src/store/postgres/index.js";
import { startEngine, WS } from "./helpers/engine.js";
import { makeStore, STORE_KINDS, type TestStore } from "./helpers/stores.js";
import { until } from "./helpers/wait.js";

const TOKEN = "test-admin-token";

/** Poll `fn` every `everyMs` until it returns a truthy value; fail after `capMs`. */

async function allRuns(engine: Engine, automationId: string): Promise<Run[]> {
  const out: Run[] = [];
  let cursor: string | undefined;
  for (;;) {
    const page = await engine.listRuns({ workspace_id: WS, automation_id: automationId, limit: 500, ...(cursor ? { cursor } : {}) });
    out.push(...page.items);
    if (!page.next_cursor) return out;
    cursor = page.next_cursor;
  }
}

interface EventRow {
  id: string;
  source: string;
  idempotency_key: string;
  type: string;
  name: string | null;
  body: Record<string, unknown>;
  runs_created: number;
}

/** Every stored event, read straight from the store's database (the Store has no event listing). */
async function storedEvents(store: Store): Promise<EventRow[]> {
  const cols = "id, source, idempotency_key, type, name, body, runs_created";
  if (store instanceof PostgresStore) {
    return (await store.pool.query<EventRow>(`SELECT ${cols} FROM events ORDER BY received_at, id`)).rows;
  }
  if (store instanceof EmbeddedStore) {
    const rows = store.db.prepare(`SELECT ${cols} FROM events ORDER BY received_at, id`).all() as (Omit<EventRow, "body"> & { body: string })[];
    return rows.map((r) => ({ ...r, body: JSON.parse(r.body) as Record<string, unknown> }));
  }
  throw new Error("unknown store");
}

let seq = 0;
/** An automation started by the named event `name`: one `set`, then `end`. */
function namedEventAutomation(name: string) {
  const key = `intake-${++seq}-${Date.now().toString(36)}`;
  return {
    key,
    name: key,
    triggers: [{ type: "event", name }],
    reentry: { policy: "allow_concurrent" },
    root: "note",
    nodes: [
      { key: "note", kind: "set", config: { assign: { got: "event.payload" } } },
      { key: "done", kind: "end" },
    ],
    edges: [{ from: "note", port: "next", to: "done" }],
  };
}

interface Reply {
  status: number;
  body: { event_id?: string; duplicate?: boolean; error?: { code: string; message: string; details: Record<string, unknown> } };
}

describe.each(STORE_KINDS)("event intake over HTTP (%s store)", (kind) => {
  let ts: TestStore;
  let engine: Engine;
  let app: FastifyInstance;
  let base: string;
  let agent: Agent;
  let errors: unknown[];

  beforeEach(async () => {
    ts = await makeStore(kind); // fresh per test: the engine's first dispatch round stays short
    engine = await startEngine({ store: ts.store });
    errors = [];
    engine.events.on("engine:error", (e) => errors.push(e));
    app = buildApp({ engine, adminToken: TOKEN });
    await app.listen({ host: "127.0.0.1", port: 0 });
    base = `http://127.0.0.1:${(app.server.address() as AddressInfo).port}`;
    agent = new Agent({ connections: 100 });
  });
  afterEach(async () => {
    await agent.close();
    await app.close();
    await engine.stop();
    await ts.destroy();
    expect(errors).toEqual([]);
  });

  async function post(path: string, body: unknown, headers: Record<string, string> = {}): Promise<Reply> {
    const res = await request(`${base}${path}`, {
      method: "POST",
      dispatcher: agent,
      headers: { authorization: `Bearer ${TOKEN}`, "content-type": "application/json", ...headers },
      body: typeof body === "string" ? body : JSON.stringify(body),
    });
    const text = await res.body.text();
    return { status: res.statusCode, body: text === "" ? {} : (JSON.parse(text) as Reply["body"]) };
  }

  it("answers 202 only after the event is committed: it is readable at once, also through another connection", async () => {
    const a = await engine.createAutomation(WS, namedEventAutomation("intake.ack"));
    const other = ts.reopen(); // a second Store object: its own pool / SQLite connection
    for (let i = 0; i < 20; i++) {
      const res = await post("/v1/events", { type: "intake.ack", key: `ack-${i}`, subject_id: `s-${i}`, payload: { i } });
      expect(res.status).toBe(202);
      expect(res.body.duplicate).toBe(false);
      const id = res.body.event_id!;
      expect(id).toMatch(/^evt_/);
      // No wait of any kind between the 202 and these reads.
      const [mine, theirs] = await Promise.all([engine.getEvent(WS, id), other.getEvent(WS, id)]);
      expect(mine.idempotency_key).toBe(`ack-${i}`);
      expect(theirs).not.toBeNull();
      expect(theirs!.body).toMatchObject({ type: "event", name: "intake.ack", subject_id: `s-${i}`, payload: { i } });
    }
    // and each one starts its run
    await until("20 completed runs", async () => {
      const runs = await allRuns(engine, a.id);
      return runs.length === 20 && runs.every((r) => r.status === "completed");
    });
  });

  it("a repeated key returns the same event_id with duplicate:true and starts no second run", async () => {
    const a = await engine.createAutomation(WS, namedEventAutomation("intake.dup"));
    const body = { type: "intake.dup", key: "dup-1", subject_id: "s-dup", payload: { amount: 5, tags: ["a", "b"] } };
    const first = await post("/v1/events", body);
    expect(first).toMatchObject({ status: 202, body: { duplicate: false } });
    const id = first.body.event_id!;
    await until("the first event's run", async () => (await allRuns(engine, a.id)).length === 1);

    const again = await post("/v1/events", body);
    expect(again).toEqual({ status: 202, body: { event_id: id, duplicate: true } });
    // The same body with its keys in another order is the same body.
    const reordered = await post("/v1/events", { payload: { tags: ["a", "b"], amount: 5 }, subject_id: "s-dup", key: "dup-1", type: "intake.dup" });
    expect(reordered).toEqual({ status: 202, body: { event_id: id, duplicate: true } });

    // A later event of the same name is dispatched after the duplicates; by then a duplicate
    // would have made its run too.
    const marker = await post("/v1/events", { type: "intake.dup", key: "dup-marker" });
    await until("the marker's run", async () => (await allRuns(engine, a.id)).some((r) => r.event_id === marker.body.event_id));
    const runs = await allRuns(engine, a.id);
    expect(runs.filter((r) => r.event_id === id)).toHaveLength(1);
    expect(runs).toHaveLength(2);
    expect((await storedEvents(ts.store)).filter((e) => e.idempotency_key === "dup-1")).toHaveLength(1);
    expect((await engine.getEvent(WS, id)).runs_created).toBe(1);
  });

  it("the same key with a different body is refused with 409 event.key_conflict and nothing new is stored", async () => {
    const a = await engine.createAutomation(WS, namedEventAutomation("intake.conflict"));
    const first = await post("/v1/events", { type: "intake.conflict", key: "conf-1", payload: { amount: 10 } });
    expect(first.status).toBe(202);
    const before = await storedEvents(ts.store);

    for (const other of [
      { type: "intake.conflict", key: "conf-1", payload: { amount: 11 } },
      { type: "intake.conflict", key: "conf-1", payload: { amount: 10 }, subject_id: "someone" },
      { type: "intake.other", key: "conf-1", payload: { amount: 10 } },
    ]) {
      const res = await post("/v1/events", other);
      // soft: the storage checks below run whatever the status
      expect.soft({ status: res.status, code: res.body.error?.code }).toEqual({ status: 409, code: "event.key_conflict" });
      expect.soft(res.body.error?.details).toMatchObject({ event_id: first.body.event_id });
    }
    const after = await storedEvents(ts.store);
    expect(after).toHaveLength(before.length);
    const stored = after.filter((e) => e.idempotency_key === "conf-1");
    expect(stored).toHaveLength(1);
    expect(stored[0]!.body).toMatchObject({ name: "intake.conflict", payload: { amount: 10 } });
    await until("the one run", async () => (await engine.getEvent(WS, first.body.event_id!)).dispatched_at !== null);
    expect(await allRuns(engine, a.id)).toHaveLength(1);
  });

  it("field errors: a record event without entity is 400 with details.pointer /entity; malformed JSON is 400 request.bad_json", async () => {
    const count = (await storedEvents(ts.store)).length;

    const noEntity = await post("/v1/events", { type: "record", key: "rec-1", op: "updated", record_id: "r1", before: {}, after: { x: 1 } });
    expect(noEntity.status).toBe(400);
    expect(noEntity.body.error?.details).toMatchObject({ pointer: "/entity" });

    const noOp = await post("/v1/events", { type: "record", key: "rec-2", entity: "deal", record_id: "r1" });
    expect(noOp.status).toBe(400);
    expect(noOp.body.error?.details).toMatchObject({ pointer: "/op" });

    const reserved = await post("/v1/events", { type: "webhook", key: "rec-3" });
    expect(reserved.status).toBe(400);
    expect(reserved.body.error?.details).toMatchObject({ pointer: "/type" });

    const unknownField = await post("/v1/events", { type: "x.y", key: "rec-4", colour: "red" });
    expect(unknownField.status).toBe(400);
    expect(unknownField.body.error?.code).toBe("request.invalid");
    expect(unknownField.body.error?.details).toMatchObject({ pointer: "/colour" });

    const badJson = await post("/v1/events", '{"type": "x.y", "key": ');
    expect(badJson.status).toBe(400);
    expect(badJson.body.error?.code).toBe("request.bad_json");

    const noToken = await post("/v1/events", { type: "x.y", key: "rec-5" }, { authorization: "" });
    expect(noToken.status).toBe(401);

    expect(await storedEvents(ts.store)).toHaveLength(count);
  });

  it("1,000 concurrent posts of 100 distinct keys: exactly 100 events and 100 runs", async () => {
    const NAME = `burst.${kind}`;
    const a = await engine.createAutomation(WS, namedEventAutomation(NAME));
    const KEYS = 100;
    const COPIES = 10;
    const posts: number[] = [];
    for (let c = 0; c < COPIES; c++) for (let k = 0; k < KEYS; k++) posts.push(k);
    // shuffle, so copies of a key arrive interleaved with everything else
    for (let i = posts.length - 1; i > 0; i--) {
      const j = Math.floor(Math.random() * (i + 1));
      [posts[i], posts[j]] = [posts[j]!, posts[i]!];
    }
    // All 1,000 at once; the agent bounds them to 100 connections to 127.0.0.1.
    const replies = await Promise.all(posts.map(async (k) => ({ k, res: await post("/v1/events", { type: NAME, key: `burst-${k}`, payload: { k } }) })));

    expect(replies.filter((r) => r.res.status !== 202).map((r) => r.res)).toEqual([]);
    const byKey = new Map<number, Reply["body"][]>();
    for (const r of replies) byKey.set(r.k, [...(byKey.get(r.k) ?? []), r.res.body]);
    expect(byKey.size).toBe(KEYS);
    for (const [k, bodies] of byKey) {
      expect(bodies, `key burst-${k}`).toHaveLength(COPIES);
      expect(new Set(bodies.map((b) => b.event_id)).size, `key burst-${k}: one event id`).toBe(1);
      expect(
        bodies.filter((b) => b.duplicate === false),
        `key burst-${k}: exactly one first`,
      ).toHaveLength(1);
    }
    const ids = new Set(replies.map((r) => r.res.body.event_id!));
    expect(ids.size).toBe(KEYS);

    const stored = (await storedEvents(ts.store)).filter((e) => e.name === NAME);
    expect(stored).toHaveLength(KEYS);
    expect(new Set(stored.map((e) => e.id))).toEqual(ids);

    // Wait for dispatch of all 100, then for their runs to finish.
    await until("all 100 events dispatched", async () => {
      const evs = await Promise.all([...ids].map((id) => engine.getEvent(WS, id)));
      return evs.every((e) => e.dispatched_at !== null);
    });
    const runs = await until("100 completed runs", async () => {
      const rs = await allRuns(engine, a.id);
      return rs.length >= KEYS && rs.every((r) => r.status === "completed") ? rs : null;
    });
    expect(runs).toHaveLength(KEYS);
    expect(new Set(runs.map((r) => r.event_id))).toEqual(ids);
    for (const id of ids) expect((await engine.getEvent(WS, id)).runs_created).toBe(1);
  }, 120_000);
});
