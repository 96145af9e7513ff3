// A huge fan-out is a neighbour, not a takeover: building 100,000 items (subject, condition and
// input of each) and running them leaves the event loop free for the process's timers, other runs
// and requests; a worker killed between two committed chunks of items resumes with the items not
// yet on record, each run once under its own key; and one workspace's fan-outs share a cap on
// items in flight across the process, while another workspace's fan-out still gets slots.

import http from "node:http";
import type { AddressInfo } from "node:net";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { z } from "zod";
import { defineAction } from "../src/engine/actions.js";
import { Engine } from "../src/engine/engine.js";
import type { Checkpoint } from "../src/engine/store.js";
import { isTerminal } from "../src/model/run-status.js";
import { LOOPBACK, WS, startEngine } from "./helpers/engine.js";
import { Sink } from "./helpers/sink.js";
import { makeStore, STORE_KINDS, type TestStore } from "./helpers/stores.js";
import { sleep } from "./helpers/wait.js";
import { kill, killAll, startWorker } from "./helpers/workers.js";

const WS2 = "wsp_neighbour";

function fanOut(key: string, config: Record<string, unknown>) {
  return {
    key,
    name: key,
    root: "fanout",
    nodes: [
      { key: "fanout", kind: "for_each", config },
      { key: "done", kind: "end" },
    ],
    edges: [{ from: "fanout", port: "next", to: "done" }],
  };
}

describe.each(STORE_KINDS)("hostile fan-outs (%s store)", (kind) => {
  let ts: TestStore;
  let engine: Engine | null = null;

  beforeEach(async () => {
    ts = await makeStore(kind);
  });
  afterEach(async () => {
    await killAll();
    await engine?.stop();
    engine = null;
    await ts.destroy();
  });

  it("100,000 items: timers keep firing while the items are built and committed, and while they run", async () => {
    const N = 100_000;
    // Count the ticks of a 1 ms interval: a blocked event loop shows as ticks that never happened.
    let ticks = 0;
    const timer = setInterval(() => ticks++, 1);
    // Observe (not replace) the store's commits: the tick count when item rows land.
    const itemIds = new Set<string>();
    let firstItemCommit = -1;
    let allItemsCommitted = -1;
    const commit = ts.store.commit.bind(ts.store);
    ts.store.commit = async (owner: string, cps: readonly Checkpoint[]) => {
      const res = await commit(owner, cps);
      for (const cp of cps) for (const it of cp.items ?? []) itemIds.add(it.id);
      if (itemIds.size > 0 && firstItemCommit < 0) firstItemCommit = ticks;
      if (itemIds.size >= N && allItemsCommitted < 0) allItemsCommitted = ticks;
      return res;
    };
    const calls = new Map<string, number>();
    let firstCall = -1;
    let lastCall = -1;
    try {
      // The production lease: this test is about the event loop, not about a lease's margin on a busy machine.
      engine = await startEngine({ store: ts.store, httpAllow: LOOPBACK, runner: { leaseMs: 30_000 } });
      engine.registerAction(
        defineAction({
          kind: "noop",
          class: "fast",
          input: z.object({ n: z.number() }),
          handler(_input, ctx) {
            if (firstCall < 0) firstCall = ticks;
            lastCall = ticks;
            calls.set(ctx.idempotency_key, (calls.get(ctx.idempotency_key) ?? 0) + 1);
            return null;
          },
        }),
      );
      const a = await engine.createAutomation(
        WS,
        fanOut("huge", { items: "context.list", subject: "item", concurrency: 50, action: { kind: "noop", config: { n: "{{ item }}" } } }),
      );
      const list = Array.from({ length: N }, (_, i) => i);
      const { run } = await engine.enroll(WS, a.id, { subject_id: "huge", context_overrides: { list } });
      const done = await engine.waitForRun(WS, run.id);
      expect(done.status).toBe("completed");
      expect(done.items_total).toBe(N);
    } finally {
      clearInterval(timer);
    }
    // Every item ran under its own key. (A run handed to another worker after a lost lease may call
    // an item's action again under the same key — the promise is one effect per key, which the
    // destination's idempotency gives — so repeats are counted, not forbidden, and must be few.)
    expect(calls.size).toBe(N);
    const repeats = [...calls.values()].reduce((n, c) => n + (c - 1), 0);
    expect(repeats).toBeLessThan(N / 10);
    // The item rows were committed in many chunks, with the event loop free between them...
    expect(allItemsCommitted).toBeGreaterThan(firstItemCommit);
    expect(allItemsCommitted - firstItemCommit).toBeGreaterThanOrEqual(5);
    // ...and no item ran before every item was on record.
    expect(firstCall).toBeGreaterThanOrEqual(allItemsCommitted);
    // Running 100,000 items of a fast action yields too.
    expect(lastCall - firstCall).toBeGreaterThanOrEqual(5);
  }, 300_000);

  it("a worker SIGKILLed between two committed chunks of items resumes: every item once on record, each effect sent once", async () => {
    const N = 2_000;
    const sink = await new Sink().start();
    try {
      const writer = new Engine({ store: ts.store, noRunner: true });
      await writer.start();
      engine = writer;
      const a = await writer.createAutomation(
        WS,
        fanOut("chunks", {
          items: "context.accounts",
          subject: "item",
          concurrency: 8,
          action: { kind: "http_request", config: { method: "POST", url: `${sink.url}/evidence`, body: { account: "{{ item }}" } } },
        }),
      );
      const accounts = Array.from({ length: N }, (_, i) => `acct_${i}`);
      const { run } = await writer.enroll(WS, a.id, { subject_id: "kyc", context_overrides: { accounts } });

      // The second checkpoint of the drive is the second chunk of item rows: the worker dies right after it.
      const crasher = startWorker(ts, { WEFT_LEASE_MS: "1000", WEFT_POLL_MS: "50", WEFT_CRASH_POINT: "runner:after-checkpoint", WEFT_CRASH_AFTER: "2" });
      const exit = await Promise.race([crasher.exited, sleep(60_000).then(() => null)]);
      if (exit === null) throw new Error(`the worker did not die at its second checkpoint:\n${crasher.output()}`);
      expect(exit.signal).toBe("SIGKILL");
      const partial = await ts.store.listItems(run.id);
      // The crash fell between chunks: some items on record, not all, none run yet.
      expect(partial.length).toBeGreaterThan(0);
      expect(partial.length).toBeLessThan(N);
      expect(sink.requests).toHaveLength(0);

      // The crashed worker's short lease lapses at once; the resuming worker keeps a lease a busy machine cannot outlast.
      const worker = startWorker(ts, { WEFT_LEASE_MS: "15000", WEFT_POLL_MS: "50" });
      const deadline = Date.now() + 120_000;
      for (;;) {
        const cur = await ts.store.getRun(WS, run.id);
        if (cur && isTerminal(cur.status)) break;
        if (Date.now() > deadline) throw new Error(`run still ${cur?.status}\n${worker.output()}`);
        await sleep(100);
      }
      await kill(worker);
      const done = (await ts.store.getRun(WS, run.id))!;
      expect(done.status).toBe("completed");
      expect(done.items_total).toBe(N);
      const items = await ts.store.listItems(run.id);
      expect(items.map((i) => i.idx)).toEqual(accounts.map((_, i) => i));
      expect(new Set(items.map((i) => i.idempotency_key)).size).toBe(N);
      expect(items.every((i) => i.outcome === "succeeded" && i.attempts === 1)).toBe(true);
      // Each item's effect once, under its own key, with its own subject's input.
      const byKey = new Map<string, number>();
      for (const r of sink.requests) byKey.set(r.key!, (byKey.get(r.key!) ?? 0) + 1);
      expect(byKey.size).toBe(N);
      expect(Math.max(...byKey.values())).toBe(1);
      for (const it of items) expect(JSON.parse(sink.requests.find((r) => r.key === it.idempotency_key)!.body)).toEqual({ account: `acct_${it.idx}` });
    } finally {
      await sink.stop();
    }
  }, 240_000);

  it("one workspace's fan-outs share its cap on items in flight; another workspace's fan-out still gets slots", async () => {
    const CAP = 4;
    // A loopback server that records, per path, the most requests it held at once.
    const active = new Map<string, number>();
    const most = new Map<string, number>();
    /** How many of the first workspace's requests were open when each of the neighbour's arrived. */
    const ownersOpenAtNeighbour: number[] = [];
    // The first workspace's requests are held until the neighbour's 40 have been answered (or 20 s
    // pass): its items fill its whole share and keep it, so the neighbour's items can only run if its
    // workspace has slots of its own. Without that, the check depends on how the two overlap in time.
    let neighbourAnswered = 0;
    let releaseOwners!: () => void;
    const ownersReleased = new Promise<void>((resolve) => {
      releaseOwners = resolve;
    });
    const fallback = setTimeout(releaseOwners, 20_000);
    const server = http.createServer((req, res) => {
      const path = req.url ?? "";
      const n = (active.get(path) ?? 0) + 1;
      active.set(path, n);
      most.set(path, Math.max(most.get(path) ?? 0, n));
      if (path === "/neighbour") ownersOpenAtNeighbour.push(active.get("/owner") ?? 0);
      req.resume();
      const answer = () => {
        active.set(path, active.get(path)! - 1);
        res.writeHead(200, { "content-type": "application/json" });
        res.end("{}");
        if (path === "/neighbour" && ++neighbourAnswered === 40) releaseOwners();
      };
      if (path === "/owner") void ownersReleased.then(() => setTimeout(answer, 5));
      else setTimeout(answer, 25);
    });
    await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", () => resolve()));
    const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
    try {
      await ts.store.ensureWorkspace(WS2, "Neighbour", Date.now());
      engine = await startEngine({ store: ts.store, httpAllow: LOOPBACK, settings: { itemsInFlight: CAP } });
      const action = (path: string) => ({ kind: "http_request", config: { method: "POST", url: `${url}${path}`, body: { n: "{{ item }}" } } });
      const list = Array.from({ length: 40 }, (_, i) => i);
      const a1 = await engine.createAutomation(WS, fanOut("owner-1", { items: "context.list", concurrency: 10, action: action("/owner") }));
      const a2 = await engine.createAutomation(WS, fanOut("owner-2", { items: "context.list", concurrency: 10, action: action("/owner") }));
      const b = await engine.createAutomation(WS2, fanOut("neighbour", { items: "context.list", concurrency: 10, action: action("/neighbour") }));
      const r1 = (await engine.enroll(WS, a1.id, { subject_id: "s1", context_overrides: { list } })).run;
      const r2 = (await engine.enroll(WS, a2.id, { subject_id: "s2", context_overrides: { list } })).run;
      const rb = (await engine.enroll(WS2, b.id, { subject_id: "s3", context_overrides: { list } })).run;
      for (const [ws, r] of [
        [WS, r1],
        [WS, r2],
        [WS2, rb],
      ] as const) {
        const done = await engine.waitForRun(ws, r.id);
        expect(done.status).toBe("completed");
        expect(done.items_total).toBe(40);
      }
    } finally {
      clearTimeout(fallback);
      server.closeAllConnections();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    }
    // Two fan-outs of one workspace, 10 workers each: never more than the cap at once, and the cap was reached.
    expect(most.get("/owner")).toBe(CAP);
    expect(most.get("/neighbour")).toBeLessThanOrEqual(CAP);
    // The neighbour's items ran while the first workspace held its whole share.
    expect(Math.max(...ownersOpenAtNeighbour)).toBe(CAP);
  }, 120_000);
});
