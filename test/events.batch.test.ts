// Batch intake (POST /v1/events with an array, engine.ingestMany): each element validated and
// stored on its own terms, results in request order, one bad element never refusing the others,
// duplicates inside and across batches behaving as resends, the whole batch in one group commit,
// and a single object still answered exactly as before.

import { afterEach, beforeEach, describe, expect, it } from "vitest";
import type { Engine } from "../src/engine/engine.js";
import { MAX_BATCH } from "../src/engine/intake.js";
import type { NewEvent } from "../src/engine/store.js";
import { type Api, startApi } from "./helpers/api.js";
import { runWeft, tempFile } from "./helpers/cli.js";
import { startEngine, WS } from "./helpers/engine.js";
import { listAll, makeStore, STORE_KINDS, type TestStore } from "./helpers/stores.js";
import { until } from "./helpers/wait.js";

const TOKEN = "test-admin-token";

type Result = { index: number; event_id?: string; duplicate?: boolean; error?: { code: string; message: string; details: Record<string, unknown> } };

function namedEventAutomation(key: string, name: string) {
  return {
    key,
    name: key,
    triggers: [{ type: "event", name }],
    reentry: { policy: "allow_concurrent" },
    root: "done",
    nodes: [{ key: "done", kind: "end" }],
    edges: [],
  };
}

describe.each(STORE_KINDS)("batch intake (%s store)", (kind) => {
  let ts: TestStore;
  let engine: Engine;
  let api: Api;
  /** How many insertEvents calls (transactions) the store saw, and of what sizes. */
  let commits: number[];

  beforeEach(async () => {
    ts = await makeStore(kind);
    commits = [];
    const insertEvents = ts.store.insertEvents.bind(ts.store);
    ts.store.insertEvents = (es: readonly NewEvent[]) => {
      commits.push(es.length);
      return insertEvents(es);
    };
    engine = await startEngine({ store: ts.store });
    api = await startApi(engine, TOKEN);
  });
  afterEach(async () => {
    await api.close();
    await engine.stop();
    await ts.destroy();
  });

  const post = (body: unknown) => api.call<{ results: Result[] }>("POST", "/v1/events", body);

  it("stores the good elements of a mixed batch and names each bad one by index and pointer", async () => {
    const a = await engine.createAutomation(WS, namedEventAutomation("batch-mixed", "order.paid"));
    const res = await post([
      { type: "order.paid", key: "k0", subject_id: "s0" },
      { type: "order.paid", key: "k1", subject_id: "s1", payload: { n: 1 } },
      { type: "record", entity: "deal" }, // no op
      { key: "k3" }, // no type
      { type: "order.paid", key: "k4", source: "webhook:abc" },
      { type: "order.paid", key: "k5", subject_id: "s5", surprise: true },
      { type: "order.paid", key: "k6", subject_id: "s6" },
    ]);
    expect(res.status).toBe(202);
    const results = res.body.results;
    expect(results.map((r) => r.index)).toEqual([0, 1, 2, 3, 4, 5, 6]);
    expect(results[2]!.error).toMatchObject({ code: "event.invalid", details: { pointer: "/2/op" } });
    expect(results[3]!.error).toMatchObject({ code: "request.invalid", details: { pointer: "/3/type" } });
    expect(results[4]!.error).toMatchObject({ code: "event.reserved_source", details: { pointer: "/4/source" } });
    expect(results[5]!.error).toMatchObject({ code: "request.invalid", details: { pointer: "/5/surprise" } });
    for (const i of [0, 1, 6]) {
      expect(results[i]).toEqual({ index: i, event_id: expect.stringMatching(/^evt_/), duplicate: false });
      // Durable before the 202: readable at once through another Store object.
      const stored = await ts.reopen().getEvent(WS, results[i]!.event_id!);
      expect(stored?.idempotency_key).toBe(`k${i}`);
    }
    // All accepted elements went through one group commit.
    expect(commits).toEqual([3]);
    await until("three runs, one per stored event", async () => (await listAll(ts.store, a.id)).length === 3);
    expect((await listAll(ts.store, a.id)).map((r) => r.subject_id).sort()).toEqual(["s0", "s1", "s6"]);
  });

  it("treats a repeated key inside a batch as a resend, and a conflicting body as event.key_conflict", async () => {
    const res = await post([
      { type: "order.paid", key: "same", payload: { n: 1 } },
      { type: "order.paid", key: "same", payload: { n: 1 } },
      { type: "order.paid", key: "same", payload: { n: 2 } },
      { type: "order.paid", key: "other", payload: { n: 1 } },
    ]);
    expect(res.status).toBe(202);
    const [first, again, conflict, other] = res.body.results;
    expect(first).toMatchObject({ index: 0, duplicate: false });
    expect(again).toEqual({ index: 1, event_id: first!.event_id, duplicate: true });
    expect(conflict).toMatchObject({ index: 2, error: { code: "event.key_conflict", details: { event_id: first!.event_id } } });
    expect(other).toMatchObject({ index: 3, duplicate: false });

    // The same batch again: every accepted element is a resend of the first batch's event.
    const resent = await post([
      { type: "order.paid", key: "same", payload: { n: 1 } },
      { type: "order.paid", key: "other", payload: { n: 1 } },
    ]);
    expect(resent.body.results).toEqual([
      { index: 0, event_id: first!.event_id, duplicate: true },
      { index: 1, event_id: other!.event_id, duplicate: true },
    ]);
  });

  it("keeps a single object's response as it was, and refuses a batch over the limit naming it", async () => {
    const single = await api.call("POST", "/v1/events", { type: "order.paid", key: "one" });
    expect(single.status).toBe(202);
    expect(Object.keys(single.body).sort()).toEqual(["duplicate", "event_id"]);

    const tooMany = Array.from({ length: MAX_BATCH + 1 }, (_, i) => ({ type: "order.paid", key: `m${i}` }));
    const refused = await post(tooMany);
    expect(refused.status).toBe(413);
    expect(refused.body.error).toMatchObject({ code: "limits.batch_too_large", details: { limit: MAX_BATCH, count: MAX_BATCH + 1 } });
    const empty = await post([]);
    expect(empty).toEqual({ status: 202, body: { results: [] } });
  });

  it("engine.ingestMany gives the same per-element results to a library caller", async () => {
    const results = await engine.ingestMany(WS, [
      { type: "order.paid", key: "lib-1" },
      { type: "schedule", key: "lib-2" },
      { type: "order.paid", key: "lib-1" },
    ]);
    expect(results[0]).toMatchObject({ index: 0, duplicate: false });
    expect(results[1]).toMatchObject({ index: 1, error: { code: "event.invalid", details: { pointer: "/type" } } });
    expect(results[2]).toEqual({ index: 2, event_id: (results[0] as { event_id: string }).event_id, duplicate: true });
    await expect(engine.ingestMany(WS, new Array(MAX_BATCH + 1).fill({ type: "x" }))).rejects.toMatchObject({ code: "limits.batch_too_large" });
  });

  it("weft events send --file sends 1,200 lines in two requests, names the refused line and stores the rest", async () => {
    const lines = Array.from({ length: 1200 }, (_, i) => JSON.stringify(i === 700 ? { type: "schedule", key: "bad" } : { type: "cli.batch", key: `c${i}` }));
    const f = tempFile("events.jsonl", lines.join("\n") + "\n");
    commits.length = 0;
    const res = await runWeft(["events", "send", "--file", f, "--json"], api.base, TOKEN);
    expect(res.code, res.stderr).toBe(1);
    const out = res.stdout
      .trim()
      .split("\n")
      .map((l) => JSON.parse(l) as { line: number; event_id?: string; error?: { code: string } });
    expect(out.map((o) => o.line)).toEqual(lines.map((_, i) => i + 1));
    expect(out[700]).toMatchObject({ line: 701, error: { code: "event.invalid" } });
    expect(out.filter((o) => o.event_id)).toHaveLength(1199);
    expect(res.stderr).toContain("sent 1199 of 1200 events; 1 line failed");
    expect(commits).toEqual([999, 200]); // one request, one group commit, per batch of up to 1,000 lines
    const text = await runWeft(["events", "send", "--file", f], api.base, TOKEN);
    expect(text.code).toBe(1);
    expect(text.stderr).toContain(`${f}:701: event.invalid`);
    expect(text.stderr).toContain("sent 1199 of 1200 events (1199 duplicates); 1 line failed");
  });
});
