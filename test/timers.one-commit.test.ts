// Timers that fire in one commit: a run enrolled into a root delay is created parked on it (the
// insert writes the park; no commit of its own), and a due run whose next work runs in process (a
// delay's end, set, end) is driven without a claim and claimed by its commit (compare-and-swap on rev, no holder,
// no stop or cancel), so a fired timer is one write, not a claim and a commit. A run whose next
// node could reach outside the process takes its lease first, by the same kind of commit. A stop
// made while such a drive is in flight wins: the drive's commit is refused and the run ends stopped.

import { afterEach, beforeEach, describe, expect, it } from "vitest";
import type { Engine } from "../src/engine/engine.js";
import type { Checkpoint, Run } from "../src/engine/store.js";
import { startEngine, WS } from "./helpers/engine.js";
import { makeStore, STORE_KINDS, type TestStore } from "./helpers/stores.js";

const N = 12;

function timerAutomation(key: string, after: { key: string; kind: string; config?: Record<string, unknown> }) {
  return {
    key,
    name: key,
    triggers: [{ type: "event", name: "never.sent" }],
    root: "wait",
    // Long enough that enrolling the batch cannot outlast it on a loaded machine: a delay already
    // over when the run is created does not park it (the run is created held, and fires with one
    // commit fewer than these tests count).
    nodes: [{ key: "wait", kind: "delay", config: { duration_ms: 1500 } }, after, { key: "done", kind: "end" }],
    edges: [
      { from: "wait", port: "next", to: after.key },
      { from: after.key, port: "next", to: "done" },
    ],
  };
}

describe.each(STORE_KINDS)("timers fire in one commit (%s store)", (kind) => {
  let ts: TestStore;
  let engine: Engine;
  /** Per run: how often a claim returned it, and how many of its checkpoints committed. */
  let claims: Map<string, number>;
  let commits: Map<string, number>;
  /** Called with each checkpoint before the store applies it. */
  let beforeCommit: (cp: Checkpoint) => Promise<void>;

  beforeEach(async () => {
    ts = await makeStore(kind);
    claims = new Map();
    commits = new Map();
    beforeCommit = async () => undefined;
    const claimRuns = ts.store.claimRuns.bind(ts.store);
    ts.store.claimRuns = async (owner: string, now: number, leaseMs: number, limit: number): Promise<Run[]> => {
      const got = await claimRuns(owner, now, leaseMs, limit);
      for (const r of got) claims.set(r.id, (claims.get(r.id) ?? 0) + 1);
      return got;
    };
    const commit = ts.store.commit.bind(ts.store);
    ts.store.commit = async (owner: string, cps: readonly Checkpoint[]) => {
      for (const cp of cps) await beforeCommit(cp);
      const res = await commit(owner, cps);
      cps.forEach((cp, i) => {
        if (res[i]?.applied) commits.set(cp.run_id, (commits.get(cp.run_id) ?? 0) + 1);
      });
      return res;
    };
    engine = await startEngine({ store: ts.store, runner: { pollMs: 20 } });
  });
  afterEach(async () => {
    await engine.stop();
    await ts.destroy();
  });

  it("parks and fires a timer whose next work is in process with one commit each, and no claim", async () => {
    const a = await engine.createAutomation(WS, timerAutomation("fast-timer", { key: "mark", kind: "set", config: { assign: { fired: "true" } } }));
    const runs = await engine.enrollMany(
      WS,
      a.id,
      Array.from({ length: N }, (_, i) => ({ subject_id: `t${i}` })),
    );
    for (const r of runs) {
      if (!("run" in r)) throw new Error("enrollment refused");
      const done = await engine.waitForRun(WS, r.run.id);
      expect(done.status).toBe("completed");
      expect(done.context).toMatchObject({ fired: true });
      expect(claims.get(r.run.id) ?? 0).toBe(0);
      // Created parked on the delay (its insert wrote the park); one commit fires it (delay end, set, end).
      expect(r.run).toMatchObject({ status: "waiting", waiting_for: "delay" });
      expect(commits.get(r.run.id)).toBe(1);
      expect((await engine.listSteps(WS, r.run.id)).map((s) => `${s.node_key}:${s.outcome}`)).toEqual([
        "wait:waiting",
        "wait:succeeded",
        "mark:succeeded",
        "done:succeeded",
      ]);
    }
  });

  it("takes the lease with its first commit before an action, then commits the action's result", async () => {
    const calls = new Map<string, number>();
    engine.registerAction({
      kind: "effect",
      handler: (_input, ctx) => {
        calls.set(ctx.run_id, (calls.get(ctx.run_id) ?? 0) + 1);
        return {};
      },
    });
    const a = await engine.createAutomation(WS, timerAutomation("action-timer", { key: "act", kind: "effect" }));
    const runs = await engine.enrollMany(
      WS,
      a.id,
      Array.from({ length: N }, (_, i) => ({ subject_id: `t${i}` })),
    );
    for (const r of runs) {
      if (!("run" in r)) throw new Error("enrollment refused");
      expect((await engine.waitForRun(WS, r.run.id)).status).toBe("completed");
      expect(claims.get(r.run.id) ?? 0).toBe(0);
      expect(r.run).toMatchObject({ status: "waiting", waiting_for: "delay" });
      // Created parked; the claim with the delay's end before the action; the action's result with the end.
      expect(commits.get(r.run.id)).toBe(2);
      expect(calls.get(r.run.id)).toBe(1);
    }
  });

  it("fires a timer into a custom action declared fast with no permission in one commit; declared fast with a permission, it takes the lease first", async () => {
    const calls = new Map<string, number>();
    const count = (_input: unknown, ctx: { run_id: string }) => {
      calls.set(ctx.run_id, (calls.get(ctx.run_id) ?? 0) + 1);
      return {};
    };
    engine.registerAction({ kind: "pure", class: "fast", handler: count });
    engine.registerAction({ kind: "granted", class: "fast", permissions: ["http:127.0.0.1"], handler: count });
    for (const [kindOf, expected] of [
      ["pure", 1],
      ["granted", 2],
    ] as const) {
      const a = await engine.createAutomation(WS, timerAutomation(`${kindOf}-timer`, { key: "act", kind: kindOf }));
      const runs = await engine.enrollMany(
        WS,
        a.id,
        Array.from({ length: N }, (_, i) => ({ subject_id: `${kindOf}${i}` })),
      );
      for (const r of runs) {
        if (!("run" in r)) throw new Error("enrollment refused");
        expect((await engine.waitForRun(WS, r.run.id)).status).toBe("completed");
        expect(claims.get(r.run.id) ?? 0).toBe(0);
        expect(r.run).toMatchObject({ status: "waiting", waiting_for: "delay" });
        // Created parked, then pure: fired (delay end, the action, end) in one commit; granted: the
        // lease with the delay's end, then the action's result with the end.
        expect(commits.get(r.run.id)).toBe(expected);
        // Once each: one process with nothing else driving its runs drives each run once (a due read
        // that returns a run whose drive ended meanwhile does not drive it again).
        expect(calls.get(r.run.id)).toBe(1);
      }
    }
  });

  it("honours a stop made while the unclaimed drive is in flight: its commit is refused and the run ends stopped", async () => {
    const a = await engine.createAutomation(WS, timerAutomation("stopped-timer", { key: "mark", kind: "set", config: { assign: { fired: "true" } } }));
    const { run } = await engine.enroll(WS, a.id, { subject_id: "s" });
    // The run parks on the delay; when it comes due, an operator stops it just before the fire commits.
    await engine.waitForRun(WS, run.id, (r) => r.status === "waiting");
    let stopped = false;
    beforeCommit = async (cp) => {
      if (cp.run_id === run.id && cp.claim && !stopped) {
        stopped = true;
        await engine.controlRun(WS, run.id, "stop", "operator");
      }
    };
    const done = await engine.waitForRun(WS, run.id, (r) => r.completed_at !== null);
    expect(stopped).toBe(true);
    expect(done).toMatchObject({ status: "exited", exit_reason: "admin_stopped" });
    expect(done.context).not.toHaveProperty("fired");
    expect((await engine.listSteps(WS, run.id)).map((s) => s.node_key)).toEqual(["wait"]);
  });
});
