// The dispatch lease: short, so a dispatcher that dies mid-round leaves its events to the others
// soon; renewed by a living round (Store.renewDispatch), so a round that plans longer than the
// lease keeps its events and no second dispatcher counts an attempt against them. A dispatcher
// with nothing to lease sleeps until the first live lease lapses, not until its next poll.

import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { DISPATCH_LEASE_MS, type Engine } from "../src/engine/engine.js";
import { startEngine, WS } from "./helpers/engine.js";
import { makeStore, STORE_KINDS, type TestStore } from "./helpers/stores.js";
import { until } from "./helpers/wait.js";

describe.each(STORE_KINDS)("dispatch lease (%s store)", (kind) => {
  let ts: TestStore;
  let engine: Engine;
  beforeEach(async () => {
    ts = await makeStore(kind);
    engine = await startEngine({ store: ts.store });
    await engine.dispatcher!.stop();
  });
  afterEach(async () => {
    await engine.stop();
    await ts.destroy();
  });

  it("a renewed lease keeps the events past its first end; an unrenewed one lets another round take them, the attempt counted", async () => {
    const { event_id } = await engine.ingest(WS, { type: "ping", subject_id: "s1" });
    const t0 = Date.now();
    const first = await ts.store.leaseEvents(t0, DISPATCH_LEASE_MS, 10, 3);
    expect(first.events.map((e) => e.id)).toEqual([event_id]);
    // Still planning near the lease's end: the round renews it.
    await ts.store.renewDispatch([event_id], t0 + 2 * DISPATCH_LEASE_MS);
    expect((await ts.store.leaseEvents(t0 + DISPATCH_LEASE_MS + 1, DISPATCH_LEASE_MS, 10, 3)).events).toEqual([]);
    // The round died after its last renewal: once that lapses, another round takes the event, a second attempt.
    const again = await ts.store.leaseEvents(t0 + 2 * DISPATCH_LEASE_MS + 1, DISPATCH_LEASE_MS, 10, 3);
    expect(again.events.map((e) => [e.id, e.dispatch_attempts])).toEqual([[event_id, 2]]);
  });

  it("a renewal never revives a lease another round holds later, nor an event no round holds", async () => {
    const { event_id } = await engine.ingest(WS, { type: "ping", subject_id: "s2" });
    const t0 = Date.now();
    await ts.store.renewDispatch([event_id], t0 + DISPATCH_LEASE_MS);
    // Never leased: the renewal did nothing, so a round leases it at once.
    expect((await ts.store.leaseEvents(t0, DISPATCH_LEASE_MS, 10, 3)).events.map((e) => e.id)).toEqual([event_id]);
    // A renewal to an earlier time does not shorten the lease.
    await ts.store.renewDispatch([event_id], t0 + 1);
    expect((await ts.store.leaseEvents(t0 + 2, DISPATCH_LEASE_MS, 10, 3)).events).toEqual([]);
  });

  it("a round that leases nothing says when the first live lease lapses", async () => {
    const t0 = Date.now();
    expect((await ts.store.leaseEvents(t0, DISPATCH_LEASE_MS, 10, 3)).next_lapse ?? null).toBeNull();
    const { event_id } = await engine.ingest(WS, { type: "ping", subject_id: "s3" });
    expect((await ts.store.leaseEvents(t0, 5_000, 10, 3)).events.map((e) => e.id)).toEqual([event_id]);
    expect((await ts.store.leaseEvents(t0 + 1, DISPATCH_LEASE_MS, 10, 3)).next_lapse).toBe(t0 + 5_000);
  });

  it("events leased by a dispatcher that died are dispatched when the lease lapses, though the next poll is ten minutes off", async () => {
    await engine.createAutomation(WS, {
      key: "lapse",
      name: "lapse",
      triggers: [{ type: "event", name: "lapse.go" }],
      root: "mark",
      nodes: [{ key: "mark", kind: "set", config: { assign: { ok: "true" } } }],
    });
    const { event_id } = await engine.ingest(WS, { type: "lapse.go", subject_id: "s4" });
    // A dispatcher leases it for 1.5 s and dies.
    expect((await ts.store.leaseEvents(Date.now(), 1_500, 10, 3)).events.map((e) => e.id)).toEqual([event_id]);
    const other = await startEngine({ store: ts.reopen(), dispatchPollMs: 600_000, runner: { pollMs: 600_000 } });
    try {
      const runs = await until(
        "the event's run",
        async () => {
          const rs = await ts.store.eventRuns(WS, event_id);
          return rs.length > 0 ? rs : null;
        },
        20_000,
      );
      expect(runs).toHaveLength(1);
    } finally {
      await other.stop();
    }
  });
});
