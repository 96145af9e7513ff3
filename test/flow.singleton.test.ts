// Singleton per key: reentry.key names the slot (one active run per key), and cancel_previous
// starts the new run and cancels the key's active run — at once when no worker holds it, at the
// worker's next checkpoint when a worker (of either engine on the store) is mid-step on it.

import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { Engine } from "../src/engine/engine.js";
import type { Run } from "../src/engine/store.js";
import { LOOPBACK, WS } from "./helpers/engine.js";
import { makeStore, STORE_KINDS, type TestStore } from "./helpers/stores.js";
import { until } from "./helpers/wait.js";

describe.each(STORE_KINDS)("reentry.key and cancel_previous (%s store)", (kind) => {
  let ts: TestStore;
  let engines: Engine[];
  let errors: unknown[];
  let release: () => void;
  let gate: Promise<void>;
  let started: number;

  beforeEach(async () => {
    ts = await makeStore(kind);
    errors = [];
    engines = [];
    started = 0;
    gate = new Promise<void>((r) => (release = r));
    for (const store of [ts.store, ts.reopen()]) {
      const e = new Engine({ httpAllow: LOOPBACK, store, dispatchPollMs: 20, runner: { leaseMs: 60_000, pollMs: 20 } });
      // The first call is held (a worker mid-step) until the test releases it; later calls return at once.
      e.registerAction({
        kind: "think",
        class: "slow",
        async handler() {
          started += 1;
          if (started === 1) await gate;
          return { thought: true };
        },
      });
      e.events.on("engine:error", (x) => errors.push(x));
      await e.start();
      engines.push(e);
    }
  });
  afterEach(async () => {
    release();
    for (const e of engines) await e.stop();
    await ts.destroy();
    expect(errors).toEqual([]);
  });

  const e1 = () => engines[0]!;
  const e2 = () => engines[1]!;
  const runs = async (automationId: string): Promise<Run[]> =>
    (await e1().listRuns({ workspace_id: WS, automation_id: automationId, limit: 50 })).items.sort((a, b) => (a.id < b.id ? -1 : 1));
  const get = (id: string) => ts.store.getRun(WS, id) as Promise<Run>;

  /** first → (then, if given) → done */
  function automation(first: unknown, then?: unknown) {
    return e1().createAutomation(WS, {
      key: `single-${Math.random().toString(36).slice(2, 8)}`,
      name: "singleton",
      triggers: [{ type: "event", name: "account.sync" }],
      reentry: { policy: "cancel_previous", key: "acct:{{ event.payload.account }}" },
      root: "first",
      nodes: then ? [first, then, { key: "done", kind: "end" }] : [first, { key: "done", kind: "end" }],
      edges: then
        ? [
            { from: "first", port: "next", to: "then" },
            { from: "then", port: "next", to: "done" },
          ]
        : [{ from: "first", port: "next", to: "done" }],
    });
  }

  it("a worker mid-step on the previous run: the new run starts at once, the previous one is cancelled at its checkpoint", async () => {
    // think, then a short delay: the checkpoint after the held step is where the cancel applies.
    const a = await automation({ key: "first", kind: "think", config: {} }, { key: "then", kind: "delay", config: { duration_ms: 1 } });
    await e1().ingest(WS, { type: "account.sync", payload: { account: 1 } });
    await until("the first run mid-step", () => started === 1);
    const [first] = await runs(a.id);
    expect(first!.status).toBe("running");

    await e2().ingest(WS, { type: "account.sync", payload: { account: 1 } });
    await e2().ingest(WS, { type: "account.sync", payload: { account: 2 } }); // another key: nothing to replace
    const all = await until("the replacing run and the other key's run completed", async () => {
      const rs = await runs(a.id);
      return rs.length === 3 && rs.filter((r) => r.id !== first!.id).every((r) => r.status === "completed") ? rs : null;
    });
    // Still mid-step: flagged, its slot already the new run's.
    const flagged = await get(first!.id);
    expect({ status: flagged.status, control: flagged.control }).toEqual({ status: "running", control: "cancel" });
    release();
    const ended = await until("the previous run cancelled", async () => {
      const r = await get(first!.id);
      return r.completed_at !== null ? r : null;
    });
    expect(ended.status).toBe("cancelled");
    const replacer = all.find((r) => r.id !== first!.id && (r.event as { payload: { account: number } }).payload.account === 1)!;
    const audit = (await e1().listAudit(WS, 100)).filter((x) => x.action === "run.replaced");
    expect(audit.map((x) => ({ target: x.target_id, by: x.details.replaced_by, key: x.details.key }))).toEqual([
      { target: first!.id, by: replacer.id, key: "acct:1" },
    ]);
  }, 60_000);

  it("two runs of one key inserted together: the later replaces the earlier (both stores alike)", async () => {
    release();
    const a = await automation({ key: "first", kind: "delay", config: { duration_ms: 3_600_000 } });
    // One call stores both events; one dispatch round usually plans and inserts their runs together.
    await e1().ingestMany(WS, [
      { type: "account.sync", payload: { account: 3, n: 1 } },
      { type: "account.sync", payload: { account: 3, n: 2 } },
    ]);
    const rs = await until("both runs settled", async () => {
      const all = await runs(a.id);
      return all.length === 2 && all.some((r) => r.status === "cancelled") && all.some((r) => r.status === "waiting") ? all : null;
    });
    // Events received in the same millisecond are dispatched in id order: the later one is the higher id.
    const inOrder = [...rs].sort((x, y) => ((x.event_id ?? "") < (y.event_id ?? "") ? -1 : 1));
    expect(inOrder.map((r) => r.status)).toEqual(["cancelled", "waiting"]);
  }, 60_000);

  it("a parked previous run is cancelled at once; without cancel_previous the key holds one active run", async () => {
    release(); // no step is held in this test
    const a = await automation({ key: "first", kind: "delay", config: { duration_ms: 3_600_000 } });
    await e1().ingest(WS, { type: "account.sync", payload: { account: 9 } });
    const [first] = await until("the first run parked", async () => {
      const rs = await runs(a.id);
      return rs.length === 1 && rs[0]!.status === "waiting" ? rs : null;
    });
    await e2().ingest(WS, { type: "account.sync", payload: { account: 9 } });
    await until("the second run parked", async () => (await runs(a.id)).filter((r) => r.status === "waiting").length === 1 && (await runs(a.id)).length === 2);
    const prev = await get(first!.id);
    expect({ status: prev.status, control: prev.control }).toEqual({ status: "cancelled", control: null });

    // skip_if_active with the same key: a second event for the key exits already_active.
    const b = await e1().createAutomation(WS, {
      key: "single-skip",
      name: "singleton skip",
      triggers: [{ type: "event", name: "account.hold" }],
      reentry: { policy: "skip_if_active", key: "acct:{{ event.payload.account }}" },
      root: "first",
      nodes: [
        { key: "first", kind: "delay", config: { duration_ms: 3_600_000 } },
        { key: "done", kind: "end" },
      ],
      edges: [{ from: "first", port: "next", to: "done" }],
    });
    await e1().ingest(WS, { type: "account.hold", payload: { account: 5 } });
    await e2().ingest(WS, { type: "account.hold", payload: { account: 5 } });
    const held = await until("two runs of the key", async () => {
      const rs = await runs(b.id);
      return rs.length === 2 ? rs : null;
    });
    expect(held.map((r) => r.exit_reason).sort()).toEqual(["already_active", null]);
  }, 60_000);
});
