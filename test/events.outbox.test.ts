// The transactional outbox (PostgreSQL only): emitEvent writes the event through the caller's own
// connection inside the caller's own transaction. A rollback leaves nothing; an event whose
// transaction commits after a later one has already been dispatched is still dispatched (the
// dispatcher must not keep an id or time watermark that skips it).

import pg from "pg";
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from "vitest";
import type { Engine } from "../src/engine/engine.js";
import type { Run } from "../src/engine/store.js";
import { emitEvent } from "../src/outbox.js";
import { startEngine, WS } from "./helpers/engine.js";
import { makeStore, PG_URL, STORE_KINDS, type TestStore } from "./helpers/stores.js";
import { until } from "./helpers/wait.js";

let seq = 0;

describe.skipIf(!STORE_KINDS.includes("postgres"))("transactional outbox (postgres store)", () => {
  let ts: TestStore;
  let schema: string;
  let engine: Engine;
  let errors: unknown[];
  const clients: pg.Client[] = [];

  beforeAll(async () => {
    ts = await makeStore("postgres");
    schema = ts.env.WEFT_DATABASE_SCHEMA!;
  });
  afterAll(async () => {
    await ts.destroy();
  });
  beforeEach(async () => {
    engine = await startEngine({ store: ts.store });
    errors = [];
    engine.events.on("engine:error", (e) => errors.push(e));
  });
  afterEach(async () => {
    for (const c of clients.splice(0)) {
      await c.query("ROLLBACK").catch(() => undefined);
      await c.end().catch(() => undefined);
    }
    await engine.stop();
    expect(errors).toEqual([]);
  });

  async function client(): Promise<pg.Client> {
    const c = new pg.Client({ connectionString: PG_URL });
    await c.connect();
    clients.push(c);
    return c;
  }

  async function automation(name: string) {
    const key = `outbox-${++seq}`;
    return engine.createAutomation(WS, {
      key,
      name: key,
      triggers: [{ type: "event", name }],
      reentry: { policy: "allow_concurrent" },
      root: "done",
      nodes: [{ key: "done", kind: "end" }],
    });
  }

  const runsOf = async (automationId: string): Promise<Run[]> => (await engine.listRuns({ workspace_id: WS, automation_id: automationId, limit: 500 })).items;

  const runFor = (automationId: string, eventId: string) =>
    until(`the run of ${eventId}`, async () => (await runsOf(automationId)).find((r) => r.event_id === eventId && r.status === "completed"));

  it("an event emitted in a transaction that rolls back stores nothing and starts nothing", async () => {
    const a = await automation("outbox.rollback");
    const c = await client();
    await c.query("BEGIN");
    await c.query(`CREATE TEMP TABLE app_change (id int) ON COMMIT DROP`);
    await c.query(`INSERT INTO app_change VALUES (1)`);
    const lost = await emitEvent(c, { type: "outbox.rollback", key: "rb-1", subject_id: "s1", payload: { n: 1 } }, { schema });
    expect(lost).toMatch(/^evt_/);
    await c.query("ROLLBACK");

    // A marker committed afterwards on the same stream: once its run exists, the dispatcher has
    // been over the stream after the rollback.
    await c.query("BEGIN");
    const marker = await emitEvent(c, { type: "outbox.rollback", key: "rb-marker", payload: { n: 2 } }, { schema });
    await c.query("COMMIT");
    await runFor(a.id, marker);

    expect(await ts.store.getEvent(WS, lost)).toBeNull();
    const runs = await runsOf(a.id);
    expect(runs.map((r) => r.event_id)).toEqual([marker]);
    // The key was never used: emitting it again for real is a new event, not a duplicate.
    const again = await engine.ingest(WS, { type: "outbox.rollback", key: "rb-1", source: "outbox", subject_id: "s1", payload: { n: 1 } });
    expect(again.duplicate).toBe(false);
  });

  it("out-of-order commits: an event whose transaction commits after a later event was dispatched is still dispatched", async () => {
    const a = await automation("outbox.order");
    const ca = await client();
    const cb = await client();

    await ca.query("BEGIN");
    const evA = await emitEvent(ca, { type: "outbox.order", key: "order-a", payload: { which: "a" } }, { schema });
    // keep A open while B is emitted, committed and dispatched
    const t0 = Date.now();
    await until("the next millisecond", async () => Date.now() > t0, 1000, 1); // so A is strictly the earlier event
    await cb.query("BEGIN");
    const evB = await emitEvent(cb, { type: "outbox.order", key: "order-b", payload: { which: "b" } }, { schema });
    await cb.query("COMMIT");

    const runB = await runFor(a.id, evB);
    expect(runB.event).toMatchObject({ name: "outbox.order", payload: { which: "b" } });
    expect(await ts.store.getEvent(WS, evA)).toBeNull(); // not visible until A commits
    expect(evA < evB).toBe(true); // time-ordered ids: A is the older event

    await ca.query("COMMIT");
    const runA = await runFor(a.id, evA);
    expect(runA.event).toMatchObject({ name: "outbox.order", payload: { which: "a" } });

    const [eA, eB] = await Promise.all([ts.store.getEvent(WS, evA), ts.store.getEvent(WS, evB)]);
    expect(eA!.received_at).toBeLessThan(eB!.received_at);
    expect(eA!.dispatched_at).not.toBeNull();
    expect(eA!.runs_created).toBe(1);
    expect(eB!.runs_created).toBe(1);
    expect((await runsOf(a.id)).map((r) => r.event_id).sort()).toEqual([evA, evB].sort());
  });

  it("many interleaved outbox transactions, some committed late and some rolled back: every committed event gets exactly one run", async () => {
    const a = await automation("outbox.many");
    const N = 12;
    const cs = await Promise.all(Array.from({ length: N }, () => client()));
    const ids: string[] = [];
    for (let i = 0; i < N; i++) {
      await cs[i]!.query("BEGIN");
      ids.push(await emitEvent(cs[i]!, { type: "outbox.many", key: `many-${i}`, payload: { i } }, { schema }));
    }
    // Commit in reverse order with dispatch rounds in between; roll back every third.
    const committed: string[] = [];
    for (let i = N - 1; i >= 0; i--) {
      if (i % 3 === 0) {
        await cs[i]!.query("ROLLBACK");
        continue;
      }
      await cs[i]!.query("COMMIT");
      committed.push(ids[i]!);
      await runFor(a.id, ids[i]!);
    }
    const runs = await runsOf(a.id);
    expect(runs.map((r) => r.event_id).sort()).toEqual([...committed].sort());
    for (const i of [0, 3, 6, 9]) expect(await ts.store.getEvent(WS, ids[i]!)).toBeNull();
  });
});
