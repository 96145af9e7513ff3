// Priority: the definition's `priority` (a number, or CEL over the trigger event evaluated once when
// the run is created), validated at /priority, stored on the run, and claimed highest first within
// the automation's queue (the store-level order and the aging bound: claim.marks.test.ts). An
// expression that fails or gives no number never loses the run: priority 0, the reason recorded.

import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { Engine } from "../src/engine/engine.js";
import { ManualClock } from "../src/engine/clock.js";
import { explainRun } from "../src/engine/explain.js";
import type { Run } from "../src/engine/store.js";
import { validateDefinition } from "../src/model/definition.js";
import { clampPriority, runPriority } from "../src/model/priority.js";
import { DEFAULT_BUDGET } from "../src/model/expressions.js";
import { LOOPBACK, WS } from "./helpers/engine.js";
import { makeStore, STORE_KINDS, type TestStore } from "./helpers/stores.js";
import { until } from "./helpers/wait.js";

const BASE = { key: "prio", name: "prio", root: "a", nodes: [{ key: "a", kind: "end" }] };

describe("priority in the definition", () => {
  it("accepts a number in range or a CEL expression; a bad one is a problem at /priority", () => {
    expect(validateDefinition({ ...BASE, priority: 7 }).ok).toBe(true);
    expect(validateDefinition({ ...BASE, priority: "event.payload.level * 2" }).ok).toBe(true);
    const problems = (priority: unknown) => {
      const r = validateDefinition({ ...BASE, priority });
      return r.ok ? [] : r.errors.map((e) => [e.code, e.pointer]);
    };
    expect(problems("event.payload.level +")).toEqual([["expression.syntax", "/priority"]]);
    expect(problems(Number.POSITIVE_INFINITY)).toEqual([["definition.invalid_type", "/priority"]]);
    expect(problems(Number.NaN)).toEqual([["definition.invalid_type", "/priority"]]);
    expect(problems(101)).toEqual([["definition.bad_priority", "/priority"]]);
    expect(problems(true)).toEqual([["definition.invalid_type", "/priority"]]);
  });

  it("a run's priority: literal or expression, rounded and clamped; an error or a non-number is 0 with the reason", () => {
    const ev = { type: "event", name: "job", payload: { level: 3, big: 1e9, text: "hi" } };
    expect(runPriority(undefined, ev)).toEqual({ priority: 0, error: null });
    expect(runPriority(-4, ev)).toEqual({ priority: -4, error: null });
    expect(runPriority("event.payload.level * 2", ev)).toEqual({ priority: 6, error: null });
    expect(runPriority("event.payload.big", ev)).toEqual({ priority: 100, error: null });
    expect(runPriority("2.6", ev)).toEqual({ priority: 3, error: null });
    const missing = runPriority("event.payload.nope", ev);
    expect(missing.priority).toBe(0);
    expect(missing.error).toMatch(/^\S+\.\S+: /);
    const text = runPriority("event.payload.text", ev);
    expect(text).toEqual({ priority: 0, error: expect.stringContaining("priority.not_number") });
    // A hostile expression runs out of budget; the run is not lost.
    const slow = runPriority(
      "[1,2,3,4,5,6,7,8,9,10].map(a, [1,2,3,4,5,6,7,8,9,10].map(b, [1,2,3,4,5,6,7,8,9,10].map(c, [1,2,3,4,5,6,7,8,9,10].map(d, a+b+c+d))))",
      ev,
      {
        ...DEFAULT_BUDGET,
        maxIterations: 100,
      },
    );
    expect(slow).toEqual({ priority: 0, error: expect.stringContaining("expression.budget_exceeded") });
    expect([clampPriority(-0.2), clampPriority(-1000), clampPriority("5")]).toEqual([0, -100, 0]);
  });

  it("explain names a pending run's priority, and why it is 0 when its expression failed", () => {
    const run = { id: "run_1", status: "pending", due_at: 0, priority: 7, priority_error: null, cursor: {} } as unknown as Run;
    const x = { steps: [], node: undefined, approvals: [], pauses: [], items: [], now: 0, graceMs: 60_000 };
    expect(explainRun({ ...x, run }).summary).toContain("Priority 7: among its automation's due runs it is claimed as if due 7 s earlier");
    const failed = { ...run, priority: 0, priority_error: "expression.error: boom" } as Run;
    expect(explainRun({ ...x, run: failed }).summary).toContain("priority expression failed, so it has priority 0 (expression.error: boom)");
    expect(explainRun({ ...x, run: { ...run, priority: 0 } as Run }).summary).not.toContain("riority");
  });
});

describe.each(STORE_KINDS)("priority end to end (%s store)", (kind) => {
  let ts: TestStore;
  let runner: Engine | null = null;
  const clock = new ManualClock(Date.UTC(2026, 2, 1));

  beforeEach(async () => {
    ts = await makeStore(kind);
  });
  afterEach(async () => {
    await runner?.stop();
    runner = null;
    await ts.destroy();
  });

  it("with a backlog, higher-priority runs start first; a failed expression starts at 0 and is recorded", async () => {
    const writer = new Engine({ store: ts.store, noRunner: true, clock });
    await writer.start();
    const def = {
      key: "prio",
      name: "prio",
      triggers: [{ type: "event", name: "job" }],
      reentry: { policy: "allow_concurrent" },
      priority: "event.payload.level",
      root: "work",
      nodes: [
        { key: "work", kind: "set", config: { assign: { n: "1" } } },
        { key: "done", kind: "end" },
      ],
      edges: [{ from: "work", port: "next", to: "done" }],
    };
    await writer.createAutomation(WS, def);
    const levels: unknown[] = [0, 5, -3, 50, "not a number", 1, 5, -100, 20, null, 2];
    for (const [i, level] of levels.entries()) await writer.ingest(WS, { type: "job", key: `job-${i}`, payload: { level } });
    await writer.stop();

    // One run at a time, so the order of claims is the order of starts. The clock stands still:
    // every run is due at the same time, and only priority (then id) orders them.
    const claimed: string[] = [];
    runner = new Engine({ httpAllow: LOOPBACK, store: ts.store, clock, runner: { maxInFlight: 1, claimBatch: 1, pollMs: 20, leaseMs: 30_000 } });
    runner.events.on("run:claimed", (p) => claimed.push(p.run_id));
    await runner.start();
    await until(`${levels.length} runs claimed`, () => claimed.length >= levels.length, 60_000);
    await until(
      "all finished",
      async () => (await runner!.listRuns({ workspace_id: WS, status: "completed", limit: 50 })).items.length === levels.length,
      60_000,
    );

    const runs = new Map((await runner.listRuns({ workspace_id: WS, limit: 50 })).items.map((r) => [r.id, r]));
    const started = claimed.map((id) => runs.get(id)!);
    expect(started.map((r) => r.priority)).toEqual([50, 20, 5, 5, 2, 1, 0, 0, 0, -3, -100]);
    const failed = started.filter((r) => r.priority_error !== null);
    expect(failed.map((r) => (r.event as { payload: { level: unknown } }).payload.level)).toEqual(expect.arrayContaining(["not a number", null]));
    expect(failed).toHaveLength(2);
    for (const r of failed) expect(r).toMatchObject({ priority: 0, status: "completed", priority_error: expect.stringContaining("priority.not_number") });
  }, 120_000);
});
