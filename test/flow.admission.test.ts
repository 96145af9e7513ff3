// Admission at creation, both stores: a run whose concurrency key is full when it is inserted is
// parked as a waiter then and there (no claim, no place in the claim queue), so a flooded key's
// backlog never stands between another key's run and its claim; waiters are woken by the commit
// that frees a slot, by an operator's stop of a holder, by a shared limit's deletion, and, for a
// wake lost with its releaser, by the sweep.

import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { ManualClock } from "../src/engine/clock.js";
import type { Engine } from "../src/engine/engine.js";
import type { Run } from "../src/engine/store.js";
import { settle, startEngine, WS } from "./helpers/engine.js";
import { makeStore, STORE_KINDS, type TestStore } from "./helpers/stores.js";
import { sleep, until } from "./helpers/wait.js";

let seq = 0;

describe.each(STORE_KINDS)("admission at creation (%s store)", (kind) => {
  let ts: TestStore;
  const engines: Engine[] = [];
  /** Runs whose `work` step started, in order; each waits for its release. */
  let started: string[];
  let releases: Map<string, () => void>;
  let claims: string[];

  beforeEach(async () => {
    ts = await makeStore(kind);
    started = [];
    releases = new Map();
    claims = [];
  });
  afterEach(async () => {
    for (const r of releases.values()) r();
    await Promise.all(engines.splice(0).map((e) => e.stop()));
    await ts.destroy();
  });

  async function engine(opts: { noRunner?: boolean; leaseMs?: number; pollMs?: number } = {}): Promise<Engine> {
    const e = await startEngine({
      store: engines.length === 0 ? ts.store : ts.reopen(),
      ...(opts.noRunner ? { noRunner: true } : {}),
      runner: { leaseMs: opts.leaseMs ?? 60_000, ...(opts.pollMs === undefined ? {} : { pollMs: opts.pollMs }) },
    });
    e.registerAction({
      kind: "work",
      handler: (_input, ctx) => {
        started.push(ctx.run_id);
        return new Promise((resolve) => releases.set(ctx.run_id, () => resolve({ ok: true })));
      },
    });
    e.events.on("run:claimed", (x) => claims.push(x.run_id));
    engines.push(e);
    return e;
  }

  function def(extra: Record<string, unknown> = {}, first: Record<string, unknown> = { key: "w", kind: "work", config: {} }) {
    const key = `adm-${++seq}`;
    return {
      key,
      name: key,
      root: "w",
      reentry: { policy: "allow_concurrent" },
      concurrency: [{ key: "{{ context.k }}", limit: 2 }],
      nodes: [first],
      ...extra,
    };
  }

  /** One slot per key (unless `extra` says otherwise); each run parks an hour on a delay while it holds its slot. */
  const parkedDef = (extra: Record<string, unknown> = {}) =>
    def(
      { concurrency: [{ key: "{{ context.k }}", limit: 1 }], edges: [{ from: "park", port: "next", to: "w" }], root: "park", ...extra },
      { key: "park", kind: "delay", config: { duration_ms: 3_600_000 } },
    );

  async function enroll(e: Engine, automationId: string, keys: string[]): Promise<string[]> {
    const res = await e.enrollMany(
      WS,
      automationId,
      keys.map((k) => ({ context_overrides: { k } })),
    );
    return res.map((r) => {
      if ("error" in r) throw new Error(r.error.message);
      return r.run.id;
    });
  }

  const runs = (e: Engine, ids: string[]): Promise<Run[]> => Promise.all(ids.map((id) => e.getRun(WS, id)));

  it("a flooded key's backlog is parked when it is inserted: another key's run is claimed before any of it, and the backlog starts in order", async () => {
    const writer = await engine({ noRunner: true });
    // One slot per key: the hot key's runs start strictly one after another, in the order they got it.
    const a = await writer.createAutomation(WS, def({ concurrency: [{ key: "{{ context.k }}", limit: 1 }] }));
    const first = await enroll(writer, a.id, Array(20).fill("hot"));
    await sleep(5);
    const second = await enroll(writer, a.id, Array(20).fill("hot"));
    const [cold] = await enroll(writer, a.id, ["cold"]);

    // Before any claim: one of the hot key holds its slot; the rest wait, with no due time.
    const hot = await runs(writer, [...first, ...second]);
    // Decided in the insert's order: the first run enrolled took it.
    expect(hot.filter((r) => r.status === "pending").map((r) => r.id)).toEqual([first[0]]);
    const parked = hot.filter((r) => r.status === "waiting");
    expect(parked.length).toBe(39);
    for (const r of parked) expect({ waiting_for: r.waiting_for, due_at: r.due_at }).toEqual({ waiting_for: "concurrency", due_at: null });
    expect((await writer.getRun(WS, cold!)).status).toBe("pending");

    const e = await engine();
    await until("the hot slot's holder and the cold run at work", () => started.length === 2);
    expect(started).toContain(cold);
    // Nothing of the backlog was claimed to find its key full: the claims so far are the two that run.
    expect(new Set(claims)).toEqual(new Set(started));

    // Let everything through, a release at a time as each starts: the first enrollment's runs all start before the second's.
    for (let done = 0; done < 41; done++) {
      const next = await until("a run at work", () => [...releases.keys()][0]);
      releases.get(next)!();
      releases.delete(next);
    }
    for (const id of [...first, ...second, cold!]) expect((await settle(e, id)).status).toBe("completed");
    const pos = (id: string) => started.indexOf(id);
    expect(Math.max(...first.map(pos))).toBeLessThan(Math.min(...second.map(pos)));
    // No run claimed only to be parked: one claim per run.
    expect(claims.length).toBe(41);
    expect(await ts.store.flowStats(WS, Date.now(), 100)).toEqual([]);
  });

  it("a queued rate limit's backlog takes its turns at insert: each run is due at its own turn and claimed once, at it", async () => {
    const clock = new ManualClock(Date.UTC(2026, 0, 1));
    const e = await startEngine({ store: ts.store, clock, runner: { leaseMs: 600_000 } });
    engines.push(e);
    e.registerAction({ kind: "work", handler: () => ({ ok: true }) });
    e.events.on("run:claimed", (x) => claims.push(x.run_id));
    // The runs as the insert made them (read back later, a run the runner has claimed meanwhile is due at its lease's end).
    const asCreated = new Map<string, Run>();
    e.events.on("run:created", (x) => asCreated.set(x.run.id, structuredClone(x.run)));
    const a = await e.createAutomation(
      WS,
      def({ concurrency: undefined, rate_limit: { key: "{{ context.k }}", limit: 2, period_ms: 1000, on_limit: "queue" } }),
    );
    const t0 = clock.now();
    const ids = await enroll(e, a.id, Array(7).fill("crm"));
    const made = ids.map((id) => asCreated.get(id)!);
    // Two turns a second, handed out in the insert's order: now, now, +1 s, +1 s, +2 s, +2 s, +3 s.
    expect(made.map((r) => (r.due_at ?? 0) - t0)).toEqual([0, 0, 1000, 1000, 2000, 2000, 3000]);
    expect(made.map((r) => r.waiting_for)).toEqual([null, null, "rate_limit", "rate_limit", "rate_limit", "rate_limit", "rate_limit"]);
    for (let i = 0; i < 4; i++) {
      await until(`the runs of turn ${i}`, async () => (await runs(e, ids)).filter((r) => r.status === "completed").length === Math.min(7, 2 * (i + 1)));
      clock.advance(1000);
      e.poke();
    }
    // Each run claimed once: none was claimed only to be told to wait.
    expect(claims.length).toBe(7);
  });

  it("events dispatched into a full key are parked by the dispatch commit, not by a claim", async () => {
    const e = await engine();
    const a = await e.createAutomation(WS, def({ triggers: [{ type: "event", name: "ping" }], concurrency: [{ key: "{{ event.payload.k }}", limit: 1 }] }));
    for (let i = 0; i < 6; i++) await e.ingest(WS, { type: "ping", payload: { k: "x" } });
    await until("one run at work and five created", async () => {
      const list = await ts.store.listRuns({ workspace_id: WS, automation_id: a.id, limit: 10 });
      return started.length === 1 && list.items.length === 6;
    });
    const list = (await ts.store.listRuns({ workspace_id: WS, automation_id: a.id, limit: 10 })).items;
    expect(list.filter((r) => r.status === "waiting" && r.waiting_for === "concurrency" && r.due_at === null).length).toBe(5);
    expect(claims).toEqual(started);
  });

  it("a holder's end starts the oldest waiter at once: the wake-up after its commit pokes the claim, no poll needed", async () => {
    // A minute's poll: only a wake-up can start the waiter within the test.
    const e = await engine({ leaseMs: 60_000, pollMs: 60_000 });
    const a = await e.createAutomation(WS, def({ concurrency: [{ key: "{{ context.k }}", limit: 1 }] }));
    const [holder, waiter] = await enroll(e, a.id, ["k", "k"]);
    await until("the holder at work", () => started.includes(holder!));
    expect((await e.getRun(WS, waiter!)).waiting_for).toBe("concurrency");
    releases.get(holder!)!();
    await until("the waiter at work", () => started.includes(waiter!), 10_000);
    releases.get(waiter!)!();
    expect((await settle(e, waiter!)).status).toBe("completed");
  });

  it("an operator's stop of a slot holder starts the oldest waiter at once, not at the next sweep", async () => {
    const e = await engine({ leaseMs: 60_000 });
    const a = await e.createAutomation(WS, parkedDef());
    const [holder, waiter] = await enroll(e, a.id, ["k", "k"]);
    await settle(e, holder!, (r) => r.waiting_for === "delay");
    expect((await e.getRun(WS, waiter!)).waiting_for).toBe("concurrency");
    await e.controlRun(WS, holder!, "stop", "test");
    // The waiter's next stop is the same delay: it took the freed slot.
    expect((await settle(e, waiter!, (r) => r.waiting_for === "delay")).status).toBe("waiting");
  });

  it.each(["an enrollment", "a retrigger"] as const)(
    "a cancel_previous replacement (%s) that frees a slot an older waiter is owed starts that waiter at once, not at the next sweep",
    async (how) => {
      // A minute's poll: only the insert's wake of the claim (admissionMayWake) starts the waiter.
      const e = await engine({ leaseMs: 60_000, pollMs: 60_000 });
      const a = await e.createAutomation(WS, parkedDef({ reentry: { policy: "cancel_previous" } }));
      const one = async (subject: string) => {
        const [r] = await e.enrollMany(WS, a.id, [{ subject_id: subject, context_overrides: { k: "k" } }]);
        if (!r || "error" in r) throw new Error("not enrolled");
        return r.run.id;
      };
      const holder = await one("x");
      await settle(e, holder, (r) => r.waiting_for === "delay");
      const waiter = await one("y");
      expect((await e.getRun(WS, waiter)).waiting_for).toBe("concurrency");
      // x's new run cancels its holder: the slot is free, but the new run comes after y, which is woken by this insert.
      const replacement = how === "an enrollment" ? await one("x") : (await e.retriggerRun(WS, holder, "test")).run.id;
      expect((await e.getRun(WS, holder)).status).toBe("cancelled");
      expect((await settle(e, waiter, (r) => r.waiting_for === "delay")).status).toBe("waiting");
      expect((await e.getRun(WS, replacement)).waiting_for).toBe("concurrency");
    },
  );

  it("an event whose run replaces a slot holder (cancel_previous) starts the older waiter at once: the dispatch wakes the claim", async () => {
    const e = await engine({ leaseMs: 60_000, pollMs: 60_000 });
    const a = await e.createAutomation(
      WS,
      parkedDef({
        triggers: [{ type: "event", name: "ping" }],
        reentry: { policy: "cancel_previous" },
        concurrency: [{ key: "{{ event.payload.k }}", limit: 1 }],
      }),
    );
    const runOf = async (subject: string, not: readonly string[] = []) => {
      let id: string | undefined;
      await until(`a run of ${subject}`, async () => {
        const list = await ts.store.listRuns({ workspace_id: WS, automation_id: a.id, limit: 10 });
        id = list.items.find((r) => r.subject_id === subject && !not.includes(r.id))?.id;
        return id !== undefined;
      });
      return id!;
    };
    await e.ingest(WS, { type: "ping", subject_id: "x", payload: { k: "k" } });
    const holder = await runOf("x");
    await settle(e, holder, (r) => r.waiting_for === "delay");
    await e.ingest(WS, { type: "ping", subject_id: "y", payload: { k: "k" } });
    const waiter = await runOf("y");
    await settle(e, waiter, (r) => r.waiting_for === "concurrency");
    await e.ingest(WS, { type: "ping", subject_id: "x", payload: { k: "k" } });
    const replacement = await runOf("x", [holder]);
    expect((await settle(e, holder)).status).toBe("cancelled");
    expect((await settle(e, waiter, (r) => r.waiting_for === "delay")).status).toBe("waiting");
    expect((await e.getRun(WS, replacement)).waiting_for).toBe("concurrency");
  });

  it("an admission that finds two free slots and a waiter nobody woke: the new run takes one, and the insert wakes the waiter for the other", async () => {
    const e = await engine({ leaseMs: 60_000, pollMs: 60_000 });
    const a = await e.createAutomation(WS, parkedDef({ concurrency: [{ key: "{{ context.k }}", limit: 2 }] }));
    const [h1, h2, waiter] = await enroll(e, a.id, ["k", "k", "k"]);
    for (const id of [h1!, h2!]) await settle(e, id, (r) => r.waiting_for === "delay");
    expect((await e.getRun(WS, waiter!)).waiting_for).toBe("concurrency");
    // Both holders stopped in the store alone: two slots free, and nobody woke the waiter.
    for (const id of [h1!, h2!]) {
      const now = Date.now();
      await ts.store.controlRun(
        WS,
        id,
        "stop",
        { workspace_id: WS, actor: "test", action: "run.stop", target_type: "run", target_id: id, details: {}, at: now },
        now,
      );
    }
    const [late] = await enroll(e, a.id, ["k"]);
    for (const id of [waiter!, late!]) expect((await settle(e, id, (r) => r.waiting_for === "delay")).status).toBe("waiting");
  });

  it("a wake lost with its releaser is made good by the sweep (once per lease period)", async () => {
    const e = await engine({ leaseMs: 500 });
    const a = await e.createAutomation(WS, parkedDef());
    const [holder, waiter] = await enroll(e, a.id, ["k", "k"]);
    await settle(e, holder!, (r) => r.waiting_for === "delay");
    // Stopped in the store alone: no process wakes the key's waiters after this commit.
    const now = Date.now();
    await ts.store.controlRun(
      WS,
      holder!,
      "stop",
      { workspace_id: WS, actor: "test", action: "run.stop", target_type: "run", target_id: holder!, details: {}, at: now },
      now,
    );
    expect((await settle(e, waiter!, (r) => r.waiting_for === "delay")).status).toBe("waiting");
  });

  it("a redriven run meets its gates afresh: the slot it held before it failed is not its own again", async () => {
    const e = await engine({ leaseMs: 60_000 });
    e.registerAction({
      kind: "flaky",
      handler: (input: Record<string, unknown>) => {
        if (input.fail === "yes") throw new Error("the call failed");
        return { ok: true };
      },
    });
    const a = await e.createAutomation(
      WS,
      def(
        {
          concurrency: [{ key: "{{ context.k }}", limit: 1 }],
          root: "f",
          edges: [{ from: "f", port: "next", to: "park" }],
          nodes: [
            { key: "f", kind: "flaky", config: { fail: "{{ context.fail }}" }, retry: { max_attempts: 1 } },
            { key: "park", kind: "delay", config: { duration_ms: 3_600_000 } },
          ],
        },
        undefined,
      ),
    );
    const [failed] = (await e.enrollMany(WS, a.id, [{ context_overrides: { k: "k", fail: "yes" } }])).map((r) => ("run" in r ? r.run.id : ""));
    expect((await settle(e, failed!)).status).toBe("failed");
    const [holder] = (await e.enrollMany(WS, a.id, [{ context_overrides: { k: "k", fail: "no" } }])).map((r) => ("run" in r ? r.run.id : ""));
    await settle(e, holder!, (r) => r.waiting_for === "delay");
    await e.redriveRun(WS, failed!, {}, "test");
    const again = await settle(e, failed!, (r) => r.completed_at !== null || r.waiting_for === "concurrency");
    expect({ status: again.status, waiting_for: again.waiting_for }).toEqual({ status: "waiting", waiting_for: "concurrency" });
  });

  it("a deleted shared limit releases its waiters to their claim", async () => {
    const e = await engine({ leaseMs: 60_000 });
    const now = Date.now();
    const audit = (action: string) => ({ workspace_id: WS, actor: "test", action, target_type: "limit", target_id: "crm", details: {}, at: now });
    await ts.store.putSharedLimit(
      { workspace_id: WS, name: "crm", key: "{{ context.k }}", limit: 1, created_at: now, updated_at: now },
      audit("limit.create"),
      true,
    );
    const a = await e.createAutomation(WS, parkedDef({ concurrency: undefined, limits: ["crm"] }));
    const [holder, waiter] = await enroll(e, a.id, ["k", "k"]);
    await settle(e, holder!, (r) => r.waiting_for === "delay");
    const w = await e.getRun(WS, waiter!);
    expect({ status: w.status, waiting_for: w.waiting_for, due_at: w.due_at }).toEqual({ status: "waiting", waiting_for: "concurrency", due_at: null });
    expect(await ts.store.deleteSharedLimit(WS, "crm", audit("limit.delete"))).toBe(true);
    e.poke();
    expect((await settle(e, waiter!, (r) => r.waiting_for === "delay")).status).toBe("waiting");
  });
});
