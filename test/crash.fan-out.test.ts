// A fan-out survives SIGKILL: worker processes driving one for_each over 120 items are killed at
// random moments while items are in flight. The run must complete with every item on record once,
// every item's effect must have reached the sink under the item's own idempotency key, and an
// item whose effect was re-sent after a crash must be reported as an idempotent replay (the sink
// answers a repeated key the way Stripe does, `Idempotent-Replayed: true`), never done twice.

import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { Engine } from "../src/engine/engine.js";
import { isTerminal } from "../src/model/run-status.js";
import { WS } from "./helpers/engine.js";
import { Sink } from "./helpers/sink.js";
import { makeStore, STORE_KINDS, type TestStore } from "./helpers/stores.js";
import { sleep } from "./helpers/wait.js";
import { kill, killAll, startWorker } from "./helpers/workers.js";

const ITEMS = 120;

describe.each(STORE_KINDS)("fan-out crash recovery (%s store)", (kind) => {
  let ts: TestStore;
  let sink: Sink;
  let writer: Engine;

  beforeEach(async () => {
    ts = await makeStore(kind);
    sink = await new Sink().start();
    // The remote dedupes by key: a repeat is answered with the original result, marked as a replay.
    sink.reply = (_req, nth) => ({
      status: 200,
      body: { ok: true },
      delayMs: 15,
      headers: nth > 1 ? { "idempotent-replayed": "true" } : ({} as Record<string, string>),
    });
    writer = new Engine({ store: ts.store, noRunner: true });
    await writer.start();
  });
  afterEach(async () => {
    await killAll();
    await writer.stop();
    await sink.stop();
    await ts.destroy();
  });

  it("SIGKILL mid fan-out: every item once on record, every effect under its key, re-sent effects reported as replays", async () => {
    const a = await writer.createAutomation(WS, {
      key: "kyc-week",
      name: "kyc week",
      root: "each",
      nodes: [
        {
          key: "each",
          kind: "for_each",
          retry: { max_attempts: 10, initial_ms: 20, max_ms: 200 },
          config: {
            items: "context.accounts",
            subject: "item",
            concurrency: 6,
            action: { kind: "http_request", config: { method: "POST", url: `${sink.url}/evidence`, body: { account: "{{ item }}" } } },
          },
        },
      ],
    });
    const accounts = Array.from({ length: ITEMS }, (_, i) => `acct_${i}`);
    const { run } = await writer.enroll(WS, a.id, { subject_id: "kyc", context_overrides: { accounts } });

    const env = { WEFT_LEASE_MS: "1000", WEFT_POLL_MS: "50" };
    let kills = 0;
    let midFlightKills = 0;
    const deadline = Date.now() + 120_000;
    let worker = startWorker(ts, env);
    let sentAtLastKill = 0;
    for (;;) {
      const cur = await ts.store.getRun(WS, run.id);
      if (cur && isTerminal(cur.status)) break;
      if (Date.now() > deadline) throw new Error(`run still ${cur?.status} after ${kills} kills\n${worker.output()}`);
      // Kill only a worker that is making progress on the fan-out (it claimed the run and sends).
      if (kills < 4 && sink.requests.length > sentAtLastKill + 3) {
        await sleep(Math.floor(Math.random() * 150));
        sentAtLastKill = sink.requests.length;
        const delivered = new Set(sink.requests.map((r) => r.key)).size;
        if (delivered < ITEMS) midFlightKills++;
        await kill(worker);
        kills++;
        worker = startWorker(ts, env);
        continue;
      }
      await sleep(100);
    }
    await kill(worker);

    const done = (await ts.store.getRun(WS, run.id))!;
    expect(done.status).toBe("completed");
    expect(midFlightKills).toBeGreaterThan(0); // the test really crashed a fan-out in progress
    expect(done.interruptions).toBeGreaterThanOrEqual(kills - 1);

    const items = await ts.store.listItems(run.id);
    expect(items.map((i) => i.idx)).toEqual(accounts.map((_, i) => i)); // each item once
    expect(new Set(items.map((i) => i.outcome))).toEqual(
      new Set(items.some((i) => i.outcome === "idempotent_replay") ? ["succeeded", "idempotent_replay"] : ["succeeded"]),
    );
    expect(done.items_total).toBe(ITEMS);
    expect(done.items_failed).toBe(0);

    // Every effect reached the sink under its item's key; a key sent more than once was answered
    // as a replay, and an item reported as a replay is one whose key was sent again.
    const byKey = new Map<string, number>();
    for (const r of sink.requests) if (r.status === 200) byKey.set(r.key!, (byKey.get(r.key!) ?? 0) + 1);
    expect(new Set(byKey.keys())).toEqual(new Set(items.map((i) => i.idempotency_key)));
    for (const it of items) {
      if (it.outcome === "idempotent_replay") expect(byKey.get(it.idempotency_key)).toBeGreaterThan(1);
      if (it.outcome === "succeeded") expect(it.output).toMatchObject({ status: 200 });
    }
    // The fan-out node has one succeeded step row.
    const steps = (await writer.listSteps(WS, run.id)).filter((s) => s.node_key === "each" && s.outcome === "succeeded");
    expect(steps).toHaveLength(1);
    expect(steps[0]!.output).toMatchObject({ total: ITEMS, failed: 0 });
    console.log(
      `[fan-out crash ${kind}] kills=${kills} mid-flight=${midFlightKills} interruptions=${done.interruptions} requests=${sink.requests.length} replays=${items.filter((i) => i.outcome === "idempotent_replay").length}`,
    );
  }, 180_000);
});
