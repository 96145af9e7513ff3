// A crash at each named commit boundary of the dispatcher and the scheduler (the runner's are in
// crash.test.ts): a worker process SIGKILLs itself there; a second worker must then dispatch every
// event exactly once (one run per event) and fire every schedule tick once (one event per tick,
// one run per event), with nothing lost.

import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { CRASH_POINTS } from "../src/engine/crashpoints.js";
import { Engine } from "../src/engine/engine.js";
import { isTerminal } from "../src/model/run-status.js";
import { WS } from "./helpers/engine.js";
import { makeStore, STORE_KINDS, type TestStore } from "./helpers/stores.js";
import { sleep, until } from "./helpers/wait.js";
import { killAll, startWorker } from "./helpers/workers.js";

const DISPATCH = CRASH_POINTS.filter((p) => p.startsWith("dispatcher:"));
const SCHEDULE = CRASH_POINTS.filter((p) => p.startsWith("scheduler:"));

describe.each(STORE_KINDS)("crash at the dispatcher's and scheduler's boundaries (%s store)", (kind) => {
  let ts: TestStore;
  let writer: Engine;

  beforeEach(async () => {
    ts = await makeStore(kind);
    writer = new Engine({ store: ts.store, noRunner: true });
    await writer.start();
  });
  afterEach(async () => {
    await killAll();
    await writer.stop();
    await ts.destroy();
  });

  const oneStep = { root: "s", reentry: { policy: "allow_concurrent" }, nodes: [{ key: "s", kind: "set", config: { assign: { ok: "true" } } }] };

  it.each(DISPATCH)(
    "%s: every event becomes exactly one run after the restart",
    async (point) => {
      const a = await writer.createAutomation(WS, { key: "paid", name: "paid", triggers: [{ type: "event", name: "order.paid" }], ...oneStep });
      const ids: string[] = [];
      for (let i = 0; i < 10; i++) ids.push((await writer.ingest(WS, { type: "order.paid", key: `o${i}`, subject_id: `c${i}` })).event_id);

      // A 2 s lease: what the crasher held (its dispatch lease, runs created holding its run lease) lapses soon.
      const crasher = startWorker(ts, { WEFT_CRASH_POINT: point, WEFT_CRASH_AFTER: "1", WEFT_LEASE_MS: "2000" });
      const exit = await crasher.exited;
      expect(exit.signal).toBe("SIGKILL");
      const healer = startWorker(ts);
      expect(await healer.ready).toBe(true);
      await until(
        "every event's run to finish",
        async () => {
          const runs = (await writer.listRuns({ workspace_id: WS, automation_id: a.id, limit: 500 })).items;
          return runs.length >= ids.length && runs.every((r) => isTerminal(r.status));
        },
        60_000,
      );
      await sleep(300); // a duplicate would show up by now
      const runs = (await writer.listRuns({ workspace_id: WS, automation_id: a.id, limit: 500 })).items;
      expect(runs.map((r) => r.event_id).sort()).toEqual([...ids].sort());
      expect(runs.every((r) => r.status === "completed")).toBe(true);
      for (const id of ids) expect((await writer.getEvent(WS, id)).runs_created).toBe(1);
    },
    90_000,
  );

  it.each(SCHEDULE)(
    "%s: every tick fires once and becomes one run",
    async (point) => {
      // Every second, so ticks fall due while the crasher starts and after the restart.
      const a = await writer.createAutomation(WS, {
        key: "tick",
        name: "tick",
        triggers: [{ type: "schedule", cron: "* * * * * *", catch_up: "all" }],
        ...oneStep,
      });
      const crasher = startWorker(ts, { WEFT_CRASH_POINT: point, WEFT_CRASH_AFTER: "1" });
      const exit = await crasher.exited;
      expect(exit.signal).toBe("SIGKILL");
      const crashedAt = Date.now();
      const healer = startWorker(ts);
      expect(await healer.ready).toBe(true);
      await until(
        "ticks after the restart to run",
        async () => {
          const runs = (await writer.listRuns({ workspace_id: WS, automation_id: a.id, limit: 500 })).items;
          return runs.filter((r) => r.started_at > crashedAt).length >= 3;
        },
        60_000,
      );
      await healer.child.kill("SIGTERM");
      await healer.exited;
      const runs = (await writer.listRuns({ workspace_id: WS, automation_id: a.id, limit: 500 })).items;
      const ticks = runs.map((r) => String((r.event as { scheduled_for?: unknown }).scheduled_for));
      // One run per tick event, one event per tick: no tick fired twice.
      expect(new Set(runs.map((r) => r.event_id)).size).toBe(runs.length);
      expect(new Set(ticks).size).toBe(ticks.length);
      // The ticks form an unbroken run of seconds from the first one fired: none lost in the crash.
      const seconds = ticks.map((t) => Math.round(Date.parse(t) / 1000)).sort((x, y) => x - y);
      expect(seconds.every(Number.isFinite)).toBe(true);
      expect(seconds[seconds.length - 1]! - seconds[0]! + 1).toBe(seconds.length);
    },
    90_000,
  );
});
