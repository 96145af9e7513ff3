// Batching survives a dispatcher killed mid-commit: two worker processes dispatch a stream of
// events into batches; one SIGKILLs itself inside a dispatch transaction (after its events joined
// their windows, before the commit). Its transaction rolls back, its leased events are dispatched
// again by the other worker once the lease lapses, and every event ends up in exactly one batch.

import { afterEach, describe, expect, it } from "vitest";
import { Engine } from "../src/engine/engine.js";
import type { Run } from "../src/engine/store.js";
import { TARGET_HOLD_MS } from "../src/engine/wakeups.js";
import { WS } from "./helpers/engine.js";
import { makeStore, STORE_KINDS, type TestStore } from "./helpers/stores.js";
import { until } from "./helpers/wait.js";
import { kill, startWorker, type Worker } from "./helpers/workers.js";

describe.each(STORE_KINDS)("batch intake with a dispatcher SIGKILLed mid-commit (%s store)", (kind) => {
  let ts: TestStore | null = null;
  let api: Engine | null = null;
  const workers: Worker[] = [];

  afterEach(async () => {
    for (const w of workers.splice(0)) await kill(w);
    await api?.stop();
    api = null;
    await ts?.destroy();
    ts = null;
  });

  it("no event lost, none in two batches", async () => {
    ts = await makeStore(kind);
    api = new Engine({ store: ts.store, noRunner: true });
    await api.start();
    const N = 2000;
    const a = await api.createAutomation(WS, {
      key: "batched",
      name: "batched",
      triggers: [{ type: "event", name: "row.imported" }],
      reentry: { policy: "allow_concurrent" },
      batch: { max_size: 50, max_wait_ms: 600_000 },
      root: "done",
      nodes: [{ key: "done", kind: "end" }],
      edges: [],
    });
    // The dead worker's leased events go to the other once its dispatch lease lapses (the wait below allows it).
    // Its second dispatch transaction: early enough that the other worker cannot have taken every round first.
    // A 2 s lease: its dispatch lease is 2 s too (the shorter of the two), so the wait is short.
    const doomed = startWorker(ts, { WEFT_CRASH_POINT: "dispatcher:inside-transaction", WEFT_CRASH_AFTER: "2", WEFT_LEASE_MS: "2000" });
    const steady = startWorker(ts);
    workers.push(doomed, steady);
    expect(await doomed.ready).toBe(true);
    expect(await steady.ready).toBe(true);
    // The API process tells one worker its dispatch wake-ups for TARGET_HOLD_MS, then the other:
    // chunks sent further apart than that reach both workers in turn, so each dispatches some.
    for (let i = 0; i < N; i += 100) {
      await api.ingestMany(
        WS,
        Array.from({ length: 100 }, (_, j) => ({ type: "row.imported", payload: { seq: i + j } })),
      );
      await new Promise((r) => setTimeout(r, TARGET_HOLD_MS + 50));
    }
    const died = await Promise.race([doomed.exited, new Promise<null>((r) => setTimeout(() => r(null), 60_000))]);
    expect(died?.signal, "the doomed worker reached its crash point").toBe("SIGKILL");
    // N is a multiple of max_size, so every batch fills and starts without waiting for max_wait_ms.
    const runs = await until(
      `batches holding all ${N} events`,
      async () => {
        const out: Run[] = [];
        let cursor: string | undefined;
        do {
          const page = await api!.listRuns({ workspace_id: WS, automation_id: a.id, limit: 200, ...(cursor ? { cursor } : {}) });
          out.push(...page.items);
          cursor = page.next_cursor ?? undefined;
        } while (cursor);
        return out.reduce((n, r) => n + ((r.event as { batch_size?: number }).batch_size ?? 0), 0) >= N ? out : null;
      },
      180_000,
    );
    const seqs = runs.flatMap((r) => (r.event as { batch: { payload: { seq: number } }[] }).batch.map((b) => b.payload.seq));
    expect({
      runs: runs.length,
      events: seqs.length,
      distinct: new Set(seqs).size,
      largest: Math.max(...runs.map((r) => (r.event as { batch_size: number }).batch_size)),
    }).toEqual({
      runs: N / 50,
      events: N,
      distinct: N,
      largest: 50,
    });
  }, 300_000);
});
