// The dispatcher's lease reads a few tuples per round however many events are queued: each
// shard's oldest events come off an index in (received_at, id) order (migration 022) and the
// chosen candidates are locked by primary key. With a flooded shard the lease read every queued
// event of it each round (the index had no id, and the planner, misled during the flood, scanned
// every undispatched event against the candidates): 300 ms a round with 20,000 queued, and a quiet
// stream's events waited that long behind the flood.

import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { Engine, DEFAULT_WORKSPACE } from "../src/engine/engine.js";
import { PostgresStore } from "../src/store/postgres/index.js";
import { tuplesRead as tuplesReadOf } from "./helpers/pg-stats.js";
import { makeStore, PG_URL, STORE_KINDS, type TestStore } from "./helpers/stores.js";

const QUEUED = 3_000;
const BATCH = 50;

describe.runIf(STORE_KINDS.includes("postgres"))("the dispatch lease with a flooded stream (postgres store)", () => {
  let ts: TestStore;
  let one: PostgresStore;

  beforeEach(async () => {
    ts = await makeStore("postgres");
    one = new PostgresStore({ url: PG_URL, schema: ts.env.WEFT_DATABASE_SCHEMA!, poolSize: 1 });
  });
  afterEach(async () => {
    await one.close();
    await ts.destroy();
  });

  /** Tuples of events read so far, by index or sequential scans. */
  const tuplesRead = () => tuplesReadOf(one.pool, ts.env.WEFT_DATABASE_SCHEMA!, "events", { seq: true });

  it("leases the oldest of each stream, reading about a batch of tuples, not the whole flood", async () => {
    // The flood is written through a store of its own, closed before measuring: its connections'
    // statistics are flushed when they end, not in the middle of the measurement.
    const own = ts.reopen();
    const writer = new Engine({ store: own, noRunner: true });
    await writer.start();
    try {
      for (let i = 0; i < QUEUED; i += 500) {
        await writer.ingestMany(
          DEFAULT_WORKSPACE,
          Array.from({ length: 500 }, (_, j) => ({ type: "flood.ping", key: `f${i + j}` })),
        );
      }
      await writer.ingest(DEFAULT_WORKSPACE, { type: "quiet.ping", key: "q1" });
    } finally {
      await writer.stop();
      await own.close();
    }
    await new Promise((r) => setTimeout(r, 200));
    const before = await tuplesRead();
    const batch = await one.leaseEvents(Date.now(), 30_000, BATCH, 5);
    const read = (await tuplesRead()) - before;
    expect(batch.events).toHaveLength(BATCH);
    // The quiet stream's one event is in the first batch, beside the flood's oldest.
    expect(batch.events.some((e) => e.name === "quiet.ping")).toBe(true);
    // The flood's oldest, in (received_at, id) order.
    const oldest = await one.pool.query<{ id: string }>("SELECT id FROM events WHERE name = 'flood.ping' ORDER BY received_at, id LIMIT $1", [BATCH - 1]);
    expect(batch.events.filter((e) => e.name === "flood.ping").map((e) => e.id)).toEqual(oldest.rows.map((r) => r.id));
    // A few tuples per leased event and per shard probe; the flood is 3,000.
    expect(read).toBeLessThan(QUEUED / 5);
  });
});

// A dispatch round first asks, in one statement, whether anything is there to lease or retry: an
// idle worker's fallback poll costs one statement, not three, and a round with only fresh events
// skips the quarantine and retry statements; a lapsed lease still sends the round to them.
describe.runIf(STORE_KINDS.includes("postgres"))("the dispatch round's statements (postgres store)", () => {
  let ts: TestStore;
  let one: PostgresStore;
  let sent: string[];

  beforeEach(async () => {
    ts = await makeStore("postgres");
    one = new PostgresStore({ url: PG_URL, schema: ts.env.WEFT_DATABASE_SCHEMA!, poolSize: 1 });
    sent = [];
    const query = one.pool.query.bind(one.pool);
    // The real pool, the names of the statements it is sent recorded.
    one.pool.query = ((cfg: unknown, ...rest: unknown[]) => {
      sent.push(typeof cfg === "string" ? cfg : ((cfg as { name?: string }).name ?? "unnamed"));
      return (query as (...a: unknown[]) => unknown)(cfg, ...rest);
    }) as typeof one.pool.query;
  });
  afterEach(async () => {
    await one.close();
    await ts.destroy();
  });

  const ingest = async (key: string) => {
    const writer = new Engine({ store: ts.store, noRunner: true });
    await writer.start();
    try {
      await writer.ingest(DEFAULT_WORKSPACE, { type: "round.ping", key });
    } finally {
      await writer.stop();
    }
  };

  it("an idle round is one statement; fresh events skip quarantine and retry; a lapsed lease is retried", async () => {
    expect((await one.leaseEvents(Date.now(), 30_000, BATCH, 5)).events).toEqual([]);
    expect(sent).toEqual(["weft_dispatch_probe"]);

    await ingest("r1");
    sent = [];
    const first = await one.leaseEvents(Date.now(), 50, BATCH, 5);
    expect(first.events.map((e) => e.name)).toEqual(["round.ping"]);
    expect(sent).not.toContain("weft_quarantine_events");
    expect(sent).not.toContain("weft_lease_retry");

    // Its lease lapses undispatched (the dispatcher died): the next round retries it.
    await new Promise((r) => setTimeout(r, 80));
    sent = [];
    const again = await one.leaseEvents(Date.now(), 30_000, BATCH, 5);
    expect(again.events.map((e) => e.id)).toEqual(first.events.map((e) => e.id));
    expect(sent).toContain("weft_lease_retry");
  });
});
