// Group commit across requests: concurrent event intakes and enrollments that arrive while a
// commit is in flight share the next transaction (far fewer store writes than requests), each
// request still gets its own result (a resend inside the batch reads back the first, a key reused
// with another body is refused alone), and a write the store refuses fails only its own request.

import { afterEach, beforeEach, describe, expect, it } from "vitest";
import type { Engine } from "../src/engine/engine.js";
import type { WeftError } from "../src/model/errors.js";
import type { NewEvent, NewRun, Run, RunAudit } from "../src/engine/store.js";
import { startEngine, WS } from "./helpers/engine.js";
import { makeStore, STORE_KINDS, type TestStore } from "./helpers/stores.js";

const N = 40;
/** How long each store write is held before it runs: requests keep arriving meanwhile. */
const HOLD_MS = 30;

const nextTurn = () => new Promise<void>((resolve) => setImmediate(resolve));
const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));

/** Issue `n` calls, each in a turn of the event loop of its own (as requests from separate connections arrive). */
async function spread<T>(n: number, call: (i: number) => Promise<T>): Promise<PromiseSettledResult<T>[]> {
  const ps: Promise<T>[] = [];
  for (let i = 0; i < n; i++) {
    ps.push(call(i));
    await nextTurn();
  }
  return Promise.allSettled(ps);
}

function parkingAutomation(key: string) {
  return {
    key,
    name: key,
    triggers: [{ type: "event", name: "never.sent" }],
    root: "park",
    nodes: [
      { key: "park", kind: "delay", config: { duration_ms: 3_600_000 } },
      { key: "done", kind: "end" },
    ],
    edges: [{ from: "park", port: "next", to: "done" }],
  };
}

describe.each(STORE_KINDS)("group commit across requests (%s store)", (kind) => {
  let ts: TestStore;
  let engine: Engine;
  /** Sizes of the insertEvents / insertRuns calls (one transaction each) the store saw. */
  let eventWrites: number[];
  let runWrites: number[];
  /** A write holding an event or run for which this returns true is refused by the store. */
  let refuse: (x: NewEvent | NewRun) => boolean;

  beforeEach(async () => {
    ts = await makeStore(kind);
    eventWrites = [];
    runWrites = [];
    refuse = () => false;
    const insertEvents = ts.store.insertEvents.bind(ts.store);
    ts.store.insertEvents = async (es: readonly NewEvent[]) => {
      eventWrites.push(es.length);
      await sleep(HOLD_MS);
      if (es.some(refuse)) throw new Error("refused by the store");
      return insertEvents(es);
    };
    const insertRuns = ts.store.insertRuns.bind(ts.store);
    ts.store.insertRuns = async (rs: readonly NewRun[], now: number, audit?: RunAudit) => {
      runWrites.push(rs.length);
      await sleep(HOLD_MS);
      if (rs.some(refuse)) throw new Error("refused by the store");
      return insertRuns(rs, now, audit);
    };
    engine = await startEngine({ store: ts.store, noRunner: true });
  });
  afterEach(async () => {
    await engine.stop();
    await ts.destroy();
  });

  it("stores concurrent events in far fewer transactions than requests, each with its own result", async () => {
    const results = await spread(N, (i) =>
      // Request 5 resends request 3 (same key and body); request 7 reuses request 3's key with another body.
      engine.ingest(WS, {
        type: "order.paid",
        source: "shop",
        key: i === 5 || i === 7 ? "k3" : `k${i}`,
        payload: { n: i === 5 ? 3 : i },
      }),
    );
    const ok = results.map((r) => (r.status === "fulfilled" ? r.value : null));
    expect(eventWrites.reduce((a, b) => a + b, 0)).toBe(N);
    expect(eventWrites.length).toBeLessThan(N / 4);
    const conflict = results[7];
    expect(conflict?.status).toBe("rejected");
    expect(((conflict as PromiseRejectedResult).reason as WeftError).code).toBe("event.key_conflict");
    expect(ok[5]).toEqual({ event_id: ok[3]?.event_id, duplicate: true });
    const ids = new Set<string>();
    for (const [i, r] of ok.entries()) {
      if (i === 5 || i === 7) continue;
      expect(r?.duplicate).toBe(false);
      ids.add(r!.event_id);
      const stored = await engine.getEvent(WS, r!.event_id);
      expect((stored.body as { payload: { n: number } }).payload.n).toBe(i);
    }
    expect(ids.size).toBe(N - 2);
  });

  it("fails only the request whose event the store refuses, not the others in its batch", async () => {
    refuse = (x) => "body" in x && (x.body as { payload?: { poison?: boolean } }).payload?.poison === true;
    // All in one turn, so all share one batch.
    const results = await Promise.allSettled(
      Array.from({ length: N }, (_, i) => engine.ingest(WS, { type: "order.paid", key: `p${i}`, payload: { poison: i === 10 } })),
    );
    expect(results.filter((r) => r.status === "rejected").length).toBe(1);
    expect(results[10]?.status).toBe("rejected");
    for (const [i, r] of results.entries()) {
      if (i === 10) continue;
      expect(r.status).toBe("fulfilled");
      const got = await engine.getEvent(WS, (r as PromiseFulfilledResult<{ event_id: string }>).value.event_id);
      expect(got.idempotency_key).toBe(`p${i}`);
    }
  });

  it("inserts concurrent enrollments in far fewer transactions than requests, each with its own run", async () => {
    const a = await engine.createAutomation(WS, parkingAutomation("grouped-enroll"));
    // Request 4 resends request 2's idempotency key; request 6 enrolls request 1's subject (active already).
    const results = await spread(N, (i) =>
      engine.enroll(WS, a.id, {
        subject_id: i === 6 ? "s1" : `s${i}`,
        ...(i === 4 ? { idempotency_key: "e2" } : i === 2 ? { idempotency_key: "e2" } : {}),
      }),
    );
    expect(runWrites.reduce((a, b) => a + b, 0)).toBe(N);
    expect(runWrites.length).toBeLessThan(N / 4);
    const got = results.map((r) => (r as PromiseFulfilledResult<{ run: Run; created: boolean }>).value);
    expect(results.every((r) => r.status === "fulfilled")).toBe(true);
    // Concurrent requests with one key: whichever reached the commit first made the run, the other reads it back.
    expect([got[2]?.created, got[4]?.created].sort()).toEqual([false, true]);
    expect(got[4]?.run.id).toBe(got[2]?.run.id);
    // Requests 1 and 6 enroll one subject: whichever reached the commit first holds it, the other exits already_active.
    expect([got[1]?.run.status, got[6]?.run.status].sort()).toEqual(["exited", "pending"]);
    expect([got[1]?.run.exit_reason, got[6]?.run.exit_reason]).toContain("already_active");
    for (const [i, r] of got.entries()) {
      if (i === 1 || i === 2 || i === 4 || i === 6) continue;
      expect(r.created).toBe(true);
      expect(r.run.subject_id).toBe(`s${i}`);
      expect((await engine.getRun(WS, r.run.id)).status).toBe("pending");
    }
  });

  it("keeps a batch enrollment whole: a refused run fails its own request, none of whose runs is stored, and no other", async () => {
    const a = await engine.createAutomation(WS, parkingAutomation("grouped-enroll-whole"));
    refuse = (x) => "subject_id" in x && x.subject_id === "bad";
    const singles = Array.from({ length: 10 }, (_, i) => engine.enroll(WS, a.id, { subject_id: `one${i}` }));
    const [refused, whole] = await Promise.allSettled([
      engine.enrollMany(WS, a.id, [{ subject_id: "m1" }, { subject_id: "bad" }, { subject_id: "m2" }]),
      engine.enrollMany(WS, a.id, [{ subject_id: "w1" }, { subject_id: "w2" }]),
    ]);
    expect((await Promise.allSettled(singles)).every((r) => r.status === "fulfilled")).toBe(true);
    expect(refused?.status).toBe("rejected");
    expect(whole?.status).toBe("fulfilled");
    const runs = await ts.store.listRuns({ workspace_id: WS, automation_id: a.id, limit: 500 });
    expect(runs.items.map((r) => r.subject_id).sort()).toEqual([...Array.from({ length: 10 }, (_, i) => `one${i}`), "w1", "w2"].sort());
  });

  it("starts a run enrolled alone at once, without waiting for the runner's next poll", async () => {
    await engine.stop();
    // A poll this long would fail the test: only the enrollment's own wake-up can start the run in time.
    engine = await startEngine({ store: ts.store, runner: { pollMs: 600_000 } });
    const a = await engine.createAutomation(WS, {
      key: "alone",
      name: "alone",
      triggers: [{ type: "event", name: "never.sent" }],
      root: "s",
      nodes: [
        { key: "s", kind: "set", config: { assign: { x: "1" } } },
        { key: "done", kind: "end" },
      ],
      edges: [{ from: "s", port: "next", to: "done" }],
    });
    // Let the runner's first round find nothing and go to sleep for its long poll.
    await sleep(200);
    const { run } = await engine.enroll(WS, a.id, { subject_id: "solo" });
    const done = await Promise.race([engine.waitForRun(WS, run.id), sleep(30_000).then(() => null)]);
    expect(done?.status).toBe("completed");
  });

  it("fails only the enrollment whose run the store refuses", async () => {
    const a = await engine.createAutomation(WS, parkingAutomation("grouped-enroll-refused"));
    refuse = (x) => "subject_id" in x && x.subject_id === "bad";
    const results = await spread(N, (i) => engine.enroll(WS, a.id, { subject_id: i === 9 ? "bad" : `s${i}` }));
    expect(results[9]?.status).toBe("rejected");
    expect(results.filter((r) => r.status === "fulfilled").length).toBe(N - 1);
    const runs = await ts.store.listRuns({ workspace_id: WS, automation_id: a.id, limit: 500 });
    expect(runs.items.map((r) => r.subject_id).sort()).toEqual(
      Array.from({ length: N }, (_, i) => `s${i}`)
        .filter((s) => s !== "s9")
        .sort(),
    );
  });
});
