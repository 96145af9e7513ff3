// Wake-ups inside one process, on each store: with the runner's and the dispatcher's polls at ten
// minutes, a change that makes work due must wake the loop that does it, or these tests time out.
// A reply event's dispatch makes the run waiting on it due and pokes the runner; so does a decision
// refused as too late, which records the approval's timeout. A process that
// stops cleanly leaves the live list at once (no wake-up is sent to it afterwards). (Wake-ups
// between processes: fleet.wakeups and the model-based test's wake-ups-only run, PostgreSQL.)

import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { ManualClock } from "../src/engine/clock.js";
import type { Engine } from "../src/engine/engine.js";
import type { Run } from "../src/engine/store.js";
import { startEngine, WS } from "./helpers/engine.js";
import { makeStore, STORE_KINDS, type TestStore } from "./helpers/stores.js";
import { until } from "./helpers/wait.js";

const TEN_MINUTES = 600_000;
const HOUR = 3_600_000;

describe.each(STORE_KINDS)("wake-ups inside one process (%s store)", (kind) => {
  let ts: TestStore;
  let engine: Engine;

  beforeEach(async () => {
    ts = await makeStore(kind);
    engine = await startEngine({ store: ts.store, dispatchPollMs: TEN_MINUTES, schedulePollMs: TEN_MINUTES, runner: { pollMs: TEN_MINUTES } });
  });
  afterEach(async () => {
    await engine.stop();
    await ts.destroy();
  });

  const state = (id: string, pred: (r: Run) => boolean, what: string) =>
    until(
      what,
      async () => {
        const r = await engine.getRun(WS, id);
        return pred(r) ? r : null;
      },
      15_000,
    );

  it("a reply event's dispatch wakes the runner for the run waiting on it", async () => {
    const a = await engine.createAutomation(WS, {
      key: "ask",
      name: "ask",
      root: "wait",
      nodes: [
        { key: "wait", kind: "wait_for_event", config: { event: "reply.received", timeout_ms: HOUR } },
        { key: "done", kind: "end" },
      ],
      edges: [
        { from: "wait", port: "received", to: "done" },
        { from: "wait", port: "timeout", to: "done" },
      ],
    });
    const { run } = await engine.enroll(WS, a.id, { subject_id: "s1" });
    await state(run.id, (r) => r.status === "waiting", "the run to wait");
    await engine.ingest(WS, { type: "reply.received", subject_id: "s1" });
    expect((await state(run.id, (r) => r.completed_at !== null, "the run to end")).status).toBe("completed");
  });

  it("a decision refused as too late wakes the runner for the run whose approval it timed out", async () => {
    await engine.stop();
    const clock = new ManualClock(Date.now() + 365 * 86_400_000);
    engine = await startEngine({ store: ts.store, clock, dispatchPollMs: TEN_MINUTES, schedulePollMs: TEN_MINUTES, runner: { pollMs: TEN_MINUTES } });
    const a = await engine.createAutomation(WS, {
      key: "late",
      name: "late",
      root: "ask",
      nodes: [
        { key: "ask", kind: "approval", config: { title: "ok?", approvers: ["role:admin"], timeout_ms: HOUR } },
        { key: "done", kind: "end" },
      ],
      edges: [
        { from: "ask", port: "approved", to: "done" },
        { from: "ask", port: "rejected", to: "done" },
        { from: "ask", port: "timeout", to: "done" },
      ],
    });
    const { run } = await engine.enroll(WS, a.id, { subject_id: "s2" });
    await state(run.id, (r) => r.status === "waiting", "the run to wait for its approval");
    const [approval] = await engine.listApprovals(WS, "pending");
    // The hour passes unseen (the runner sleeps its ten minutes); then someone approves, too late.
    clock.advance(HOUR + 1);
    await expect(engine.decideApproval(WS, approval!.id, "approved", "tester")).rejects.toMatchObject({ code: "approval.already_decided" });
    expect((await state(run.id, (r) => r.completed_at !== null, "the run to take its timeout path")).status).toBe("completed");
  });

  it("a process that stops cleanly leaves the live list at once", async () => {
    const other = await startEngine({ store: ts.reopen(), role: "worker" });
    expect((await ts.store.liveProcesses(Date.now())).map((p) => p.id)).toContain(other.owner);
    await other.stop();
    expect((await ts.store.liveProcesses(Date.now())).map((p) => p.id)).not.toContain(other.owner);
  });
});
