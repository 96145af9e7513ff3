// A checkpoint commit (or a dispatch commit) the store fails (a connection killed mid-commit, a failover) is a fault of
// the store, not of the run: the batch is sent once more, so the run's claim is not lost and does
// not count towards quarantine (with WEFT_QUARANTINE_AFTER = 1, a single lost claim quarantines).
// And when the first try did commit and only its answer was lost, the second try is refused as
// stale: no step is recorded twice and no effect is repeated.
// An event's dispatch commit the store fails is sent again too: with WEFT_QUARANTINE_AFTER = 1 a
// single counted failure would make the event undeliverable.
// The fault is injected over the real store (the first try of each commit of the run fails,
// before or after the store applied it); an API engine enrolls, a worker engine drives.

import { afterEach, beforeEach, describe, expect, it } from "vitest";
import type { Engine } from "../src/engine/engine.js";
import type { Checkpoint, Store } from "../src/engine/store.js";
import { settle, startEngine, WS } from "./helpers/engine.js";
import { Sink } from "./helpers/sink.js";
import { makeStore, STORE_KINDS, type TestStore } from "./helpers/stores.js";
import { until } from "./helpers/wait.js";

const LEASE_MS = 400;

const twoCalls = (key: string, url: string) => ({
  key,
  name: key,
  reentry: { policy: "allow_concurrent" },
  root: "first",
  nodes: [
    { key: "first", kind: "http_request", config: { method: "POST", url: `${url}/first`, body: { n: 1 } } },
    { key: "second", kind: "http_request", config: { method: "POST", url: `${url}/second`, body: { n: 2 } } },
    { key: "done", kind: "end" },
  ],
  edges: [
    { from: "first", port: "next", to: "second" },
    { from: "second", port: "next", to: "done" },
  ],
});

type When = "before" | "after";

/** The real store, except that the first try of every commit holding `runId` throws (before or after applying it). */
function flaky(store: Store, when: When, runId: () => string | null): { store: Store; injected: number; dispatchInjected: number; calls: Checkpoint[][] } {
  const ctl = { injected: 0, dispatchInjected: 0, calls: [] as Checkpoint[][], store: undefined as unknown as Store };
  let failedLast = false;
  let dispatchFailedLast = false;
  ctl.store = new Proxy(store, {
    get(target, prop) {
      if (prop === "commitDispatch") {
        return async (...args: Parameters<Store["commitDispatch"]>) => {
          if (args[1].event_ids.length === 0 || dispatchFailedLast) {
            dispatchFailedLast = false;
            return target.commitDispatch(...args);
          }
          dispatchFailedLast = true;
          ctl.dispatchInjected++;
          if (when === "after") await target.commitDispatch(...args);
          throw new Error(`injected: connection terminated ${when} the dispatch commit`);
        };
      }
      if (prop === "commit") {
        return async (owner: string, cps: readonly Checkpoint[]) => {
          const id = runId();
          if (id === null || !cps.some((c) => c.run_id === id)) return target.commit(owner, cps);
          ctl.calls.push([...cps]);
          if (failedLast) {
            failedLast = false;
            return target.commit(owner, cps);
          }
          failedLast = true;
          ctl.injected++;
          if (when === "after") await target.commit(owner, cps);
          throw new Error(`injected: connection terminated ${when} the commit`);
        };
      }
      const v = Reflect.get(target, prop, target) as unknown;
      return typeof v === "function" ? (v as (...a: unknown[]) => unknown).bind(target) : v;
    },
  });
  return ctl;
}

describe.each(STORE_KINDS)("a failed commit is sent again (%s store)", (kind) => {
  let ts: TestStore;
  let api: Engine;
  let worker: Engine | null;
  let sink: Sink;

  beforeEach(async () => {
    ts = await makeStore(kind);
    api = await startEngine({ store: ts.store, noRunner: true });
    sink = await new Sink().start();
    worker = null;
  });
  afterEach(async () => {
    await worker?.stop();
    await api.stop();
    await sink.stop();
    await ts.destroy();
  });

  it.each(["before", "after"] as const)("the store fails the first try %s applying it: the run completes, no claim lost, each effect once", async (when) => {
    const aut = await api.createAutomation(WS, twoCalls(`retry-${when}-${kind}`, sink.url));
    let target: string | null = null;
    const f = flaky(ts.reopen(), when, () => target);
    worker = await startEngine({ store: f.store, runner: { leaseMs: LEASE_MS, quarantineAfter: 1 } });
    worker.events.on("engine:error", () => undefined);
    // Enrolled by the API engine, so the worker claims it (a lease, counted as unsettled until a commit).
    const { run } = await api.enroll(WS, aut.id, { subject_id: `s-${when}` });
    target = run.id;
    const done = await settle(api, run.id);

    expect(f.injected).toBeGreaterThan(0);
    expect({ status: done.status, exit_reason: done.exit_reason }).toEqual({ status: "completed", exit_reason: "completed" });
    const steps = await ts.store.listSteps(run.id);
    const succeeded = steps.filter((s) => s.outcome === "succeeded").map((s) => s.node_key);
    expect(succeeded.sort()).toEqual(["done", "first", "second"]);
    // One effect per node: the sink executed each node's key once.
    expect([...sink.succeeded.values()]).toEqual([1, 1]);
    if (when === "before") {
      // Each failed try was followed by the same checkpoints, sent again, not by a later claim's.
      expect(f.calls.length).toBeGreaterThanOrEqual(2);
      for (let i = 1; i < f.calls.length; i += 2) {
        expect(f.calls[i]!.map((c) => `${c.run_id}@${c.expected_rev}`)).toEqual(f.calls[i - 1]!.map((c) => `${c.run_id}@${c.expected_rev}`));
      }
    }
  });

  it.each(["before", "after"] as const)("the store fails a dispatch commit's first try %s applying it: the event starts its one run", async (when) => {
    const aut = await api.createAutomation(WS, { ...twoCalls(`dispatch-${when}-${kind}`, sink.url), triggers: [{ type: "event", name: `order.${when}` }] });
    const f = flaky(ts.reopen(), when, () => null);
    // When the first try did commit, its runs were inserted held by this worker (lease at insert,
    // counted as a claim) but the second try cannot say which they were: they wait out that lease
    // and are claimed again, one counted claim lost. So that case allows one.
    worker = await startEngine({ store: f.store, runner: { leaseMs: LEASE_MS, quarantineAfter: when === "before" ? 1 : 2 } });
    worker.events.on("engine:error", () => undefined);
    const { event_id } = await api.ingest(WS, { type: `order.${when}`, subject_id: `s-${when}`, payload: {} });
    const runs = await until("the event's run to complete", async () => {
      const page = await ts.store.listRuns({ workspace_id: WS, automation_id: aut.id, limit: 10 });
      return page.items.length > 0 && page.items.every((r) => r.status === "completed") ? page.items : null;
    });
    expect(f.dispatchInjected).toBeGreaterThan(0);
    expect(runs.map((r) => r.event_id)).toEqual([event_id]);
    const e = await ts.store.getEvent(WS, event_id);
    expect({ dispatched: e?.dispatched_at !== null, undeliverable: e?.undeliverable_at ?? null }).toEqual({ dispatched: true, undeliverable: null });
    expect([...sink.succeeded.values()]).toEqual([1, 1]);
  });
});
