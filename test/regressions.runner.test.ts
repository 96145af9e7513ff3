// Regressions in the runner's control, waits and shutdown, each on both stores:
// - a stop or cancel made through another process reaches a run whose worker parks it next
//   (a wait, a retry) instead of leaving it parked with the request and no due time;
// - the wait rule holds past 100 waits: no event is taken twice, none is skipped;
// - shutdown stops a fan-out from starting items, hands the run back with the items it did not
//   finish still pending (an aborted call is not an attempt), and the next claim finishes it;
//   an aborted http_request step is not an attempt either;
// - the pause check fails closed: a run whose pause state cannot be read does not proceed.

import Database from "better-sqlite3";
import { join } from "node:path";
import pg from "pg";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { ManualClock } from "../src/engine/clock.js";
import { Engine } from "../src/engine/engine.js";
import type { RunControl } from "../src/engine/store.js";
import { startEngine, WS } from "./helpers/engine.js";
import { Gate } from "./helpers/gate.js";
import { Sink } from "./helpers/sink.js";
import { makeStore, PG_URL, STORE_KINDS, type TestStore } from "./helpers/stores.js";
import { until } from "./helpers/wait.js";

let seq = 0;

describe.each(STORE_KINDS)("runner regressions (%s store)", (kind) => {
  let ts: TestStore;
  let engines: Engine[];
  let errors: { where: string; error: unknown }[];
  const stopped = new Set<Engine>();

  async function boot(opts: Partial<Parameters<typeof startEngine>[0]> = {}): Promise<Engine> {
    const e = await startEngine({ store: ts.store, ...opts });
    e.events.on("engine:error", (x) => errors.push(x as { where: string; error: unknown }));
    engines.push(e);
    return e;
  }
  async function stop(e: Engine): Promise<void> {
    stopped.add(e);
    await e.stop();
  }

  beforeEach(async () => {
    ts = await makeStore(kind);
    engines = [];
    errors = [];
  });
  afterEach(async () => {
    for (const e of engines) if (!stopped.has(e)) await e.stop();
    await ts.destroy();
  });

  const automation = (e: Engine, nodes: unknown[], edges: { from: string; port: string; to: string }[] = [], extra: Record<string, unknown> = {}) => {
    const key = `reg-${kind}-${++seq}`;
    return e.createAutomation(WS, { key, name: key, root: (nodes[0] as { key: string }).key, nodes, edges, ...extra });
  };
  const ended = (e: Engine, id: string) =>
    until(
      `run ${id} to end`,
      async () => {
        const r = await e.getRun(WS, id);
        return r.completed_at !== null ? r : null;
      },
      15_000,
    );

  describe("a stop made through another process is not lost", () => {
    const expected: Record<RunControl, [string, string | null]> = { stop: ["exited", "admin_stopped"], cancel: ["cancelled", null] };

    it.each(["stop", "cancel"] as const)(
      "%s while the worker is inside a slow step followed by a wait: the park commit makes it due, the next claim applies it",
      async (control) => {
        const gate = await new Gate().start();
        gate.hold.add("/slow");
        try {
          const worker = await boot();
          // Another process: its own Store object on the same data, no runner.
          const other = new Engine({ store: ts.reopen(), noRunner: true });
          const a = await automation(
            worker,
            [
              { key: "call", kind: "http_request", config: { method: "POST", url: `${gate.url}/slow` } },
              { key: "wait", kind: "wait_for_event", config: { event: "never.sent" } },
            ],
            [{ from: "call", port: "next", to: "wait" }],
          );
          const { run } = await worker.enroll(WS, a.id, { subject_id: "s1" });
          await until("the slow call to arrive", () => gate.seen.length === 1);
          const asked = await other.controlRun(WS, run.id, control, "admin");
          expect(asked.completed_at).toBeNull(); // the worker holds it: the request waits for its next commit
          gate.release("/slow");
          const r = await ended(worker, run.id);
          expect([r.status, r.exit_reason]).toEqual(expected[control]);
          expect(r.control).toBeNull();
          // The worker, not knowing of the request, went on to the wait and parked; nothing ran after.
          expect((await worker.listSteps(WS, run.id)).map((s) => [s.node_key, s.outcome])).toEqual([
            ["call", "succeeded"],
            ["wait", "waiting"],
          ]);
        } finally {
          await gate.stop();
        }
      },
    );

    it("stop while the worker's slow step fails and parks for a retry an hour away: the retry park makes it due now", async () => {
      const sink = await new Sink().start();
      // The answer (a retryable 503) comes well after the request, so the stop lands while the call is in flight.
      sink.reply = () => ({ status: 503, delayMs: 2000 });
      try {
        const worker = await boot();
        const other = new Engine({ store: ts.reopen(), noRunner: true });
        const a = await automation(
          worker,
          [
            {
              key: "call",
              kind: "http_request",
              config: { method: "POST", url: `${sink.url}/flaky` },
              retry: { max_attempts: 3, initial_ms: 3_600_000, max_ms: 3_600_000 },
            },
            { key: "done", kind: "end" },
          ],
          [{ from: "call", port: "next", to: "done" }],
        );
        const { run } = await worker.enroll(WS, a.id, { subject_id: "s1" });
        await until("the call to arrive", () => sink.requests.length === 1);
        const asked = await other.controlRun(WS, run.id, "stop", "admin");
        expect(asked.completed_at).toBeNull();
        const r = await ended(worker, run.id);
        expect([r.status, r.exit_reason]).toEqual(["exited", "admin_stopped"]);
        expect(sink.requests).toHaveLength(1);
        expect((await worker.listSteps(WS, run.id)).map((s) => [s.node_key, s.outcome])).toEqual([["call", "retrying"]]);
      } finally {
        await sink.stop();
      }
    });
  });

  it("the wait rule past 100 waits: a loop that waits 150 times, each wait fed one event, takes each event once and skips none", async () => {
    const e = await boot();
    const a = await automation(
      e,
      [
        { key: "init", kind: "set", config: { assign: { got: "[]" } } },
        { key: "wait", kind: "wait_for_event", config: { event: "tick" } },
        { key: "add", kind: "set", config: { assign: { got: "context.got + [steps.wait.event.payload.n]" } } },
        { key: "more", kind: "branch", config: { condition: "size(context.got) < 150" } },
      ],
      [
        { from: "init", port: "next", to: "wait" },
        { from: "wait", port: "received", to: "add" },
        { from: "add", port: "next", to: "more" },
        { from: "more", port: "true", to: "wait" },
      ],
    );
    const { run } = await e.enroll(WS, a.id, { subject_id: "s1" });
    const got = async () => ((await e.getRun(WS, run.id)).context.got as number[] | undefined) ?? [];
    for (let n = 1; n <= 150; n++) {
      await until(`wait ${n} to park`, async () => {
        const r = await e.getRun(WS, run.id);
        return (r.status === "waiting" && r.current_node_key === "wait") || r.completed_at !== null;
      });
      await e.ingest(WS, { type: "tick", key: `tick-${n}`, subject_id: "s1", payload: { n } });
      await until(`event ${n} to be taken`, async () => (await got()).length >= n || (await e.getRun(WS, run.id)).completed_at !== null);
    }
    const r = await ended(e, run.id);
    expect(r.status).toBe("completed");
    expect(r.context.got).toEqual(Array.from({ length: 150 }, (_, i) => i + 1));
  }, 120_000);

  describe("shutdown during a fan-out", () => {
    it("stops starting items, hands the run back with unfinished items pending and no attempt spent, and the next claim finishes it", async () => {
      const sink = await new Sink().start();
      sink.reply = () => "hang";
      try {
        const first = await boot();
        const a = await automation(
          first,
          [
            {
              key: "fanout",
              kind: "for_each",
              config: { items: "context.list", action: { kind: "http_request", config: { method: "POST", url: `${sink.url}/item` } }, concurrency: 5 },
            },
            { key: "done", kind: "end" },
          ],
          [{ from: "fanout", port: "next", to: "done" }],
        );
        const list = Array.from({ length: 200 }, (_, i) => `s${i}`);
        const { run } = await first.enroll(WS, a.id, { subject_id: null, context_overrides: { list } });
        await until("five item calls in flight", () => sink.requests.length === 5);
        await stop(first); // SIGTERM's path: abort in-flight signals, wait for drivers
        const handed = await first.getRun(WS, run.id);
        expect(handed.status).toBe("interrupted");
        const items = await ts.store.listItems(run.id);
        expect(items).toHaveLength(200);
        // No item started after the signal; the five aborted in flight are not attempts.
        expect(items.filter((i) => i.outcome !== "pending")).toEqual([]);
        expect(items.filter((i) => i.attempts > 0)).toEqual([]);
        expect(sink.requests).toHaveLength(5);

        sink.reply = () => ({ status: 200, body: { ok: true } });
        const second = await boot();
        const r = await ended(second, run.id);
        expect(r.status).toBe("completed");
        const after = await ts.store.listItems(run.id);
        expect(after.map((i) => [i.outcome, i.attempts])).toEqual(after.map(() => ["succeeded", 1]));
      } finally {
        await sink.stop();
      }
    });

    it("an http_request step aborted by shutdown is not an attempt: no retry row, the resumed step is attempt 1", async () => {
      const sink = await new Sink().start();
      sink.reply = () => "hang";
      try {
        const first = await boot();
        const a = await automation(
          first,
          [
            { key: "call", kind: "http_request", config: { method: "POST", url: `${sink.url}/call` } },
            { key: "done", kind: "end" },
          ],
          [{ from: "call", port: "next", to: "done" }],
        );
        const { run } = await first.enroll(WS, a.id, { subject_id: "s1" });
        await until("the call in flight", () => sink.requests.length === 1);
        await stop(first);
        expect((await first.getRun(WS, run.id)).status).toBe("interrupted");
        expect(await first.listSteps(WS, run.id)).toEqual([]);

        sink.reply = () => ({ status: 200, body: { ok: true } });
        const second = await boot();
        const r = await ended(second, run.id);
        expect(r.status).toBe("completed");
        const steps = await second.listSteps(WS, run.id);
        expect(steps.map((s) => [s.node_key, s.outcome, s.attempt])).toEqual([
          ["call", "succeeded", 1],
          ["done", "succeeded", 1],
        ]);
      } finally {
        await sink.stop();
      }
    });
  });

  it("the pause check fails closed: a run whose pause state cannot be read does not proceed, is not failed, and goes on once it can be read", async () => {
    const clock = new ManualClock(Date.parse("2026-06-01T08:00:00Z") + seq * 86_400_000);
    // The run is made by a process without a runner, before the pause table breaks (enrollment reads it too).
    const maker = new Engine({ store: ts.store, clock, noRunner: true });
    await maker.start();
    engines.push(maker);
    const a = await automation(
      maker,
      [
        { key: "mark", kind: "set", config: { assign: { went: "true" } } },
        { key: "done", kind: "end" },
      ],
      [{ from: "mark", port: "next", to: "done" }],
    );
    const { run } = await maker.enroll(WS, a.id, { subject_id: "s1" });

    // A real failure: the pause table is renamed away under the store, then back.
    const rename = await renamer(ts);
    await rename("subject_controls", "subject_controls_away");
    try {
      const worker = await boot({ clock });
      await until("the pause check to fail", () => errors.some((x) => x.where === "pause check"));
      const r = await until("the run to be handed back", async () => {
        const x = await worker.getRun(WS, run.id);
        return x.status !== "running" && x.status !== "pending" ? x : null;
      });
      expect(r.status).toBe("interrupted");
      expect(r.completed_at).toBeNull();
      expect(r.context.went).toBeUndefined();
      expect(await worker.listSteps(WS, run.id)).toEqual([]);
      expect(r.due_at).toBeGreaterThan(clock.now()); // retried shortly, not in a tight loop
    } finally {
      await rename("subject_controls_away", "subject_controls");
    }
    clock.advance(5_000);
    engines[1]!.poke();
    const done = await ended(engines[1]!, run.id);
    expect(done.status).toBe("completed");
    expect(done.context.went).toBe(true);
  });
});

/** Rename a table of the test's own store from outside the Store object (a real failure to read it). */
async function renamer(ts: TestStore): Promise<(from: string, to: string) => Promise<void>> {
  if (ts.kind === "embedded") {
    return async (from, to) => {
      const db = new Database(join(ts.env.WEFT_DATA_DIR!, "weft.db"));
      db.pragma("foreign_keys = OFF");
      db.exec(`ALTER TABLE ${from} RENAME TO ${to}`);
      db.close();
    };
  }
  return async (from, to) => {
    const c = new pg.Client({ connectionString: PG_URL });
    await c.connect();
    await c.query(`ALTER TABLE "${ts.env.WEFT_DATABASE_SCHEMA}".${from} RENAME TO ${to}`);
    await c.end();
  };
}
