// Two workers on one store: every run completes once, every (run, node, visit) has exactly one
// committed success, no context assignment is lost; a worker whose lease lapsed while it was
// stalled cannot commit what it did once it wakes (its checkpoint is refused, the run goes on),
// nor can a superseded drive of its own; and lease renewal never deadlocks with checkpoints.

import pg from "pg";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { Engine } from "../src/engine/engine.js";
import type { EngineEvents } from "../src/engine/events.js";
import type { ActionContext } from "../src/engine/actions.js";
import type { Checkpoint, Store, StepRun } from "../src/engine/store.js";
import { StepFailure, stepError } from "../src/model/errors.js";
import { settle, startEngine, WS, LOOPBACK } from "./helpers/engine.js";
import { makeStore, STORE_KINDS, type TestStore } from "./helpers/stores.js";
import { flags } from "./helpers/stores.js";
import { sleep } from "./helpers/wait.js";

interface Call {
  worker: string;
  run_id: string;
  node_key: string;
  attempt: number;
  idempotency_key: string;
}

/** A promise with its resolver outside (a gate a handler waits on, a signal it has got somewhere). */
function latch<T = void>(): { promise: Promise<T>; open: (v: T) => void } {
  let open!: (v: T) => void;
  const promise = new Promise<T>((resolve) => (open = resolve));
  return { promise, open };
}

/**
 * Fault injection over a real store: while `renew` (`claim`) is set, this worker's lease renewals
 * (claims) fail, as for a worker stuck in a long pause or cut off from the database. Commits still
 * go through, so when the worker wakes, its checkpoint meets the store's compare-and-swap.
 */
function stallable(store: Store): { store: Store; renew: boolean; claim: boolean } {
  const ctl = { renew: false, claim: false, store: undefined as unknown as Store };
  ctl.store = new Proxy(store, {
    get(target, prop) {
      if ((ctl.renew && prop === "renewLeases") || (ctl.claim && prop === "claimRuns")) {
        return async () => {
          throw new Error(`injected stall: ${String(prop)}`);
        };
      }
      const v = Reflect.get(target, prop, target) as unknown;
      return typeof v === "function" ? (v as (...a: unknown[]) => unknown).bind(target) : v;
    },
  });
  return ctl;
}

function shuffled<T>(xs: readonly T[]): T[] {
  const out = [...xs];
  for (let i = out.length - 1; i > 0; i--) {
    const j = Math.floor(Math.random() * (i + 1));
    [out[i], out[j]] = [out[j]!, out[i]!];
  }
  return out;
}

describe.each(STORE_KINDS)("two workers on one run (%s store)", (kind) => {
  let ts: TestStore;
  let engines: Engine[];
  let cleanups: (() => void)[];

  beforeEach(async () => {
    ts = await makeStore(kind);
    engines = [];
    cleanups = [];
  });
  afterEach(async () => {
    for (const c of cleanups) c();
    for (const e of engines) await e.stop();
    await ts.destroy();
  });

  /** A second Store object on the same data: its own connection (SQLite) or pool (PostgreSQL). */
  async function secondStore(): Promise<Store> {
    const s = ts.reopen();
    // EmbeddedStore prepares its statements in migrate(); migrating an up-to-date store is a no-op.
    await s.migrate();
    return s;
  }

  it("50 runs of a 3-action chain, raced by two engines: each completes once, one success per step, nothing lost", async () => {
    const calls: Call[] = [];
    const finished = new Map<string, string[]>();
    const claimed = new Map<string, number>();
    const errors: unknown[] = [];
    const storeB = await secondStore();

    const make = async (name: string, store: Store) => {
      // Small claims and few runs in flight per worker, so both workers get work and hand runs
      // to each other (every run parks once for a retry and is claimed again by either).
      const e = await startEngine({ store, runner: { owner: `wkr_${name}`, claimBatch: 4, maxInFlight: 8 } });
      engines.push(e);
      e.registerAction({
        kind: "work",
        async handler(input, ctx: ActionContext) {
          calls.push({ worker: name, run_id: ctx.run_id, node_key: ctx.node_key, attempt: ctx.attempt, idempotency_key: ctx.idempotency_key });
          await sleep(1 + Math.floor(Math.random() * 8)); // a slow action (an outside call)
          if (input.tag === "b" && ctx.attempt === 1) throw new StepFailure(stepError("work.busy", "try again", true));
          return { by: name, tag: input.tag, i: input.i };
        },
      });
      e.events.on("run:finished", (ev) => finished.set(ev.run_id, [...(finished.get(ev.run_id) ?? []), name]));
      e.events.on("run:claimed", () => claimed.set(name, (claimed.get(name) ?? 0) + 1));
      e.events.on("engine:error", (ev) => errors.push(ev));
      return e;
    };
    const a = await make("A", ts.store);
    const b = await make("B", storeB);

    const work = (key: string) => ({ key, kind: "work", config: { tag: key, i: "{{ context.i }}" }, retry: { max_attempts: 3, initial_ms: 5, max_ms: 10 } });
    const keep = (key: string, from: string, plus: number) => ({
      key,
      kind: "set",
      config: { assign: { [from]: `steps.${from}.i + ${plus}`, [`${from}_by`]: `steps.${from}.by` } },
    });
    const automation = await a.createAutomation(WS, {
      key: "race",
      name: "race",
      root: "a",
      nodes: [work("a"), keep("keep_a", "a", 1000), work("b"), keep("keep_b", "b", 2000), work("c"), keep("keep_c", "c", 3000)],
      edges: ["a", "keep_a", "b", "keep_b", "c", "keep_c"].slice(1).map((to, i, arr) => ({ from: i === 0 ? "a" : arr[i - 1]!, port: "next", to })),
    });

    const N = 50;
    const enrolled = await Promise.all(Array.from({ length: N }, (_, i) => a.enroll(WS, automation.id, { context_overrides: { i } })));
    b.poke();
    const runs = await Promise.all(enrolled.map(({ run }) => settle(a, run.id)));

    expect(errors).toEqual([]);
    // Both workers took part; otherwise this test races nothing.
    expect(claimed.get("A") ?? 0).toBeGreaterThan(0);
    expect(claimed.get("B") ?? 0).toBeGreaterThan(0);

    for (const [i, run] of runs.entries()) {
      expect(run.status).toBe("completed");
      expect(run.exit_reason).toBe("completed");
      // Every assignment from every step is present, whoever committed it.
      expect(run.context).toMatchObject({ i, a: i + 1000, b: i + 2000, c: i + 3000 });
      expect(["A", "B"]).toContain(run.context.a_by);
      expect(run.steps).toMatchObject({ a: { tag: "a", i }, b: { tag: "b", i }, c: { tag: "c", i } });
      // Finished once, by one worker.
      expect(finished.get(run.id)).toHaveLength(1);

      const steps: StepRun[] = await a.listSteps(WS, run.id);
      expect(steps.map((s) => [s.node_key, s.attempt, s.outcome])).toEqual([
        ["a", 1, "succeeded"],
        ["keep_a", 1, "succeeded"],
        ["b", 1, "retrying"],
        ["b", 2, "succeeded"],
        ["keep_b", 1, "succeeded"],
        ["c", 1, "succeeded"],
        ["keep_c", 1, "succeeded"],
      ]);
      const succeeded = new Map<string, number>();
      for (const s of steps.filter((x) => x.outcome === "succeeded")) {
        const k = `${s.run_id}/${s.node_key}/${s.visit}`;
        expect(s.idempotency_key).toBe(k);
        succeeded.set(k, (succeeded.get(k) ?? 0) + 1);
      }
      expect([...succeeded.values()].every((n) => n === 1)).toBe(true);
      expect(succeeded.size).toBe(6);
      // The committed output of each action is the one its worker returned.
      for (const node of ["a", "b", "c"]) {
        const row = steps.find((s) => s.node_key === node && s.outcome === "succeeded")!;
        expect(calls.some((c) => c.run_id === run.id && c.node_key === node && c.worker === (row.output as { by: string }).by)).toBe(true);
      }
    }
    // Each action call carried its visit's key; no call for a run that was not claimed.
    for (const c of calls) expect(c.idempotency_key).toBe(`${c.run_id}/${c.node_key}/1`);
  });

  it("a stalled worker whose lease lapsed cannot commit when it wakes; the other worker completes the run once", async () => {
    const calls: Call[] = [];
    const inA = latch<Call>();
    const wakeA = latch();
    cleanups.push(() => wakeA.open());
    const fault = stallable(ts.store);

    const handlerFor = (name: string) => async (input: Record<string, unknown>, ctx: ActionContext) => {
      const call = { worker: name, run_id: ctx.run_id, node_key: ctx.node_key, attempt: ctx.attempt, idempotency_key: ctx.idempotency_key };
      calls.push(call);
      if (name === "A" && calls.filter((c) => c.worker === "A").length === 1) {
        // A stalls mid-step: it renews nothing and claims nothing until long after its 300 ms lease.
        // (Not a synchronous busy loop: A and B share this process, so that would stall B as well,
        // and whether A's renewal or B's claim ran first afterwards would be left to chance.)
        fault.renew = true;
        fault.claim = true;
        inA.open(call);
        await wakeA.promise;
      }
      return { by: name, tag: input.tag };
    };

    const A = await startEngine({ store: fault.store, runner: { owner: "wkr_A", leaseMs: 300 } });
    engines.push(A);
    A.registerAction({ kind: "work", handler: handlerFor("A") });
    const automation = await A.createAutomation(WS, {
      key: "stale",
      name: "stale",
      root: "a",
      nodes: [
        { key: "a", kind: "work", config: { tag: "a" } },
        { key: "b", kind: "work", config: { tag: "b" } },
      ],
      edges: [{ from: "a", port: "next", to: "b" }],
    });
    const { run: created } = await A.enroll(WS, automation.id, {});
    const first = await inA.promise;
    expect(first).toMatchObject({ run_id: created.id, node_key: "a", attempt: 1 });

    // B starts only now, so A certainly claimed first; B claims once A's lease has expired.
    const B = new Engine({ httpAllow: LOOPBACK, store: await secondStore(), runner: { owner: "wkr_B", leaseMs: 2000, pollMs: 50 } });
    engines.push(B);
    B.registerAction({ kind: "work", handler: handlerFor("B") });
    const finishedBy: string[] = [];
    A.events.on("run:finished", (e) => e.run_id === created.id && finishedBy.push("A"));
    B.events.on("run:finished", (e) => e.run_id === created.id && finishedBy.push("B"));
    const lostByA: EngineEvents["run:lease_lost"][] = [];
    A.events.on("run:lease_lost", (e) => lostByA.push(e));
    const claimedByB = B.events.next("run:claimed", (e) => e.run_id === created.id);
    const bDone = B.events.next("run:finished", (e) => e.run_id === created.id);
    await B.start();

    const claim = await claimedByB;
    expect(claim.interruptions).toBe(1); // A's lapse is an interruption, not a failure
    const done = await bDone;
    expect(done).toMatchObject({ status: "completed", exit_reason: "completed" });
    const afterB = await B.getRun(WS, created.id);
    expect(afterB.status).toBe("completed");
    expect(lostByA).toEqual([]);

    // A wakes with its result for node a and tries to checkpoint it: refused.
    const lost = A.events.next("run:lease_lost", (e) => e.run_id === created.id);
    wakeA.open();
    await lost;

    const final = await settle(B, created.id);
    expect(final).toMatchObject({ status: "completed", exit_reason: "completed", rev: afterB.rev, completed_at: afterB.completed_at });
    expect(final.steps).toMatchObject({ a: { by: "B" }, b: { by: "B" } });
    const steps = await B.listSteps(WS, created.id);
    expect(steps.map((s) => [s.node_key, s.attempt, s.outcome, (s.output as { by: string }).by])).toEqual([
      ["a", 1, "succeeded", "B"],
      ["b", 1, "succeeded", "B"],
    ]);
    expect(steps.filter((s) => s.node_key === "a" && s.outcome === "succeeded")).toHaveLength(1);
    // The step ran twice (A, then B) under one idempotency key, as at-least-once promises.
    expect(calls.filter((c) => c.node_key === "a").map((c) => [c.worker, c.idempotency_key])).toEqual([
      ["A", `${created.id}/a/1`],
      ["B", `${created.id}/a/1`],
    ]);
    expect(finishedBy).toEqual(["B"]);
  });

  it("a worker that re-claims its own lapsed run keeps renewing the lease of the new drive", async () => {
    // A alone. Its first drive of node a stalls past the 300 ms lease (renewals fail meanwhile), so
    // A's own claim loop takes the run again and a second drive runs node a. When the first drive
    // wakes, its checkpoint is refused; the second drive, slower than a lease but healthy, must keep
    // its lease renewed and commit. The step must not be run a third time.
    const calls: Call[] = [];
    const wake1 = latch();
    const in2 = latch();
    const finish2 = latch();
    cleanups.push(() => (wake1.open(), finish2.open()));
    const fault = stallable(ts.store);
    const A = await startEngine({ store: fault.store, runner: { owner: "wkr_A", leaseMs: 300 } });
    engines.push(A);
    A.registerAction({
      kind: "work",
      async handler(_input, ctx) {
        calls.push({ worker: "A", run_id: ctx.run_id, node_key: ctx.node_key, attempt: ctx.attempt, idempotency_key: ctx.idempotency_key });
        const n = calls.length;
        if (n === 1) {
          fault.renew = true; // no renewals: the lease lapses, and A's claim loop takes the run again
          await wake1.promise;
        } else if (n === 2) {
          fault.renew = false; // renewals work again, for the drive that holds the lease now
          in2.open();
          await finish2.promise;
        }
        return { call: n };
      },
    });
    const automation = await A.createAutomation(WS, {
      key: "self",
      name: "self",
      root: "a",
      nodes: [{ key: "a", kind: "work", config: {} }],
    });
    const claims: number[] = [];
    A.events.on("run:claimed", (e) => claims.push(e.interruptions));
    const { run: created } = await A.enroll(WS, automation.id, {});
    await in2.promise; // A claimed its own lapsed run again: a second drive is in node a
    expect(claims).toEqual([0, 1]);

    // The first drive wakes and finds its lease gone. The second drive now runs for more than three
    // leases; it holds the lease, so no claim may come. (A bounded wait for an event that must not happen.)
    const thirdClaim = A.events.next("run:claimed", (e) => e.run_id === created.id);
    wake1.open();
    const outcome = await Promise.race([thirdClaim.then(() => "claimed again"), sleep(1000).then(() => "held")]);
    finish2.open();
    const final = await settle(A, created.id);
    const steps = await A.listSteps(WS, created.id);
    expect(outcome).toBe("held");
    expect(calls).toHaveLength(2);
    expect(final).toMatchObject({ status: "completed", steps: { a: { call: 2 } } });
    expect(steps.map((s) => [s.node_key, s.outcome, s.output])).toEqual([["a", "succeeded", { call: 2 }]]);
  });

  it("a stale checkpoint sharing a commit batch with a fresh one for the same run is refused and writes no step rows", async () => {
    // What the runner's group committer hands the store when one worker has two drives of a run:
    // the CAS must judge each checkpoint on its own, not the run as a whole.
    const e = new Engine({ store: ts.store, noRunner: true });
    await e.start();
    engines.push(e);
    const automation = await e.createAutomation(WS, {
      key: "batch",
      name: "batch",
      root: "s",
      nodes: [{ key: "s", kind: "set", config: { assign: { x: "1" } } }],
    });
    const { run } = await e.enroll(WS, automation.id, {});
    const now = Date.now();
    // An earlier drive's claim (rev r - 1), then, once its lease lapsed, the current one (rev r), by the same worker.
    await ts.store.claimRuns("wkr_X", now, 10_000, 10);
    const [claimed] = await ts.store.claimRuns("wkr_X", now + 20_000, 10_000, 10);
    expect(claimed?.id).toBe(run.id);
    const checkpoint = (by: string, expected_rev: number): Checkpoint => ({
      run_id: run.id,
      expected_rev,
      state: {
        status: "running",
        exit_reason: null,
        current_node_key: null,
        waiting_for: null,
        waiting_until: null,
        context: { by },
        steps: { s: { by } },
        cursor: claimed!.cursor,
        items_total: 0,
        items_failed: 0,
        interruptions: claimed!.interruptions,
        due_at: null,
        keep_lease: true,
        completed_at: null,
        updated_at: now,
      },
      steps: [
        {
          run_id: run.id,
          node_key: "s",
          node_kind: "set",
          visit: 1,
          attempt: 1,
          entered_via_port_key: null,
          exited_via_port_key: "next",
          outcome: "succeeded",
          duration_ms: 0,
          idempotency_key: `${run.id}/s/1`,
          input: null,
          output: { by },
          error: null,
          started_at: now,
          finished_at: now,
        },
      ],
    });
    const applied = await flags(ts.store.commit("wkr_X", [checkpoint("stale", claimed!.rev - 1), checkpoint("fresh", claimed!.rev)]));
    expect(applied).toEqual([false, true]);
    expect((await e.getRun(WS, run.id)).context).toEqual({ by: "fresh" });
    const steps = await e.listSteps(WS, run.id);
    expect(steps.map((s) => s.output)).toEqual([{ by: "fresh" }]);
  });

  it("a worker's lease renewal racing its own batched checkpoint never deadlocks", async () => {
    // The runner renews all its leases in one statement while the group committer writes a batch
    // of checkpoints for the same runs; the two must not lock those rows in conflicting orders.
    // (50 runs, 150 rounds, batches in reverse and shuffled order: on PostgreSQL a lock-order
    // conflict shows within a few dozen rounds.)
    const e = new Engine({ store: ts.store, noRunner: true });
    await e.start();
    engines.push(e);
    const automation = await e.createAutomation(WS, {
      key: "locks",
      name: "locks",
      root: "s",
      nodes: [{ key: "s", kind: "set", config: { assign: { x: "1" } } }],
    });
    const N = 50;
    await Promise.all(Array.from({ length: N }, () => e.enroll(WS, automation.id, {})));
    const now = Date.now();
    const runs = await ts.store.claimRuns("wkr_X", now, 60_000, N);
    expect(runs).toHaveLength(N);
    const rev = new Map(runs.map((r) => [r.id, r.rev]));
    const ids = runs.map((r) => r.id).sort();
    for (let round = 0; round < 150; round++) {
      // The committer hands checkpoints over in the order drives finished: here reversed, or shuffled.
      const order = round % 2 === 0 ? [...ids].reverse() : shuffled(ids);
      const cps: Checkpoint[] = order.map((id) => ({
        run_id: id,
        expected_rev: rev.get(id)!,
        steps: [],
        state: {
          status: "running",
          exit_reason: null,
          current_node_key: "s",
          waiting_for: null,
          waiting_until: null,
          context: { round },
          steps: {},
          cursor: runs[0]!.cursor,
          items_total: 0,
          items_failed: 0,
          interruptions: 0,
          due_at: null,
          keep_lease: true,
          completed_at: null,
          updated_at: now,
        },
      }));
      const [committed, renewed] = await Promise.allSettled([flags(ts.store.commit("wkr_X", cps)), ts.store.renewLeases("wkr_X", ids, now + 60_000)]);
      const failures = [
        ["commit", committed],
        ["renewLeases", renewed],
      ] as const;
      expect(failures.flatMap(([what, r]) => (r.status === "rejected" ? [`round ${round}: ${what}: ${(r.reason as Error).message}`] : []))).toEqual([]);
      expect((committed as PromiseFulfilledResult<boolean[]>).value).toEqual(cps.map(() => true));
      expect(new Set((renewed as PromiseFulfilledResult<string[]>).value)).toEqual(new Set(ids));
      for (const id of ids) rev.set(id, rev.get(id)! + 1);
    }
  }, 180_000);

  it.runIf(kind === "postgres")("renewal and checkpoint meeting on the same two rows in opposite orders do not deadlock", async () => {
    // The interleaving the randomized test above hopes for, made to happen: a third session holds
    // row B; the checkpoint batch (B, A) waits on B; the renewal (A, B) runs meanwhile. A renewal
    // that waited for row locks could close a cycle with the checkpoint; it must not wait at all
    // (it skips locked rows, still reporting them held), and both finish once B is released.
    // (SQLite serialises writers, so there is nothing to interleave there.)
    const e = new Engine({ store: ts.store, noRunner: true });
    await e.start();
    engines.push(e);
    const automation = await e.createAutomation(WS, {
      key: "order",
      name: "order",
      root: "s",
      nodes: [{ key: "s", kind: "set", config: { assign: { x: "1" } } }],
    });
    for (let i = 0; i < 3; i++) await e.enroll(WS, automation.id, {});
    const runs = await ts.store.claimRuns("wkr_X", Date.now(), 60_000, 10);
    const rev = new Map(runs.map((r) => [r.id, r.rev]));

    const admin = new pg.Client({ connectionString: ts.env.WEFT_DATABASE_URL });
    await admin.connect();
    const blocker = new pg.Client({ connectionString: ts.env.WEFT_DATABASE_URL });
    await blocker.connect();
    try {
      await blocker.query(`SET search_path TO "${ts.env.WEFT_DATABASE_SCHEMA}"`);
      // Two rows whose physical order agrees with their id order, so a scan meets A first either way.
      const phys = (await blocker.query<{ id: string }>("SELECT id FROM runs ORDER BY ctid")).rows.map((r) => r.id);
      const [A, B] = phys.flatMap((a, i) =>
        phys
          .slice(i + 1)
          .filter((b) => a < b)
          .map((b) => [a, b] as const),
      )[0]!;
      const blockerPid = (await blocker.query<{ pid: number }>("SELECT pg_backend_pid() AS pid")).rows[0]!.pid;
      /** The backend (other than `not`) that waits on a lock held by one of `holders`. */
      const waiterOn = async (holders: number[], not = -1): Promise<number> => {
        for (;;) {
          const r = await admin.query<{ pid: number }>("SELECT pid FROM pg_stat_activity WHERE pid <> $2 AND pg_blocking_pids(pid) && $1::int[] LIMIT 1", [
            holders,
            not,
          ]);
          if (r.rows[0]) return r.rows[0].pid;
          await sleep(5); // polling the database's lock table, not waiting on the engine
        }
      };
      await blocker.query("BEGIN");
      await blocker.query("SELECT 1 FROM runs WHERE id = $1 FOR UPDATE", [B]);

      const cp = (id: string): Checkpoint => ({
        run_id: id,
        expected_rev: rev.get(id)!,
        steps: [],
        state: {
          status: "running",
          exit_reason: null,
          current_node_key: "s",
          waiting_for: null,
          waiting_until: null,
          context: {},
          steps: {},
          cursor: runs[0]!.cursor,
          items_total: 0,
          items_failed: 0,
          interruptions: 0,
          due_at: null,
          keep_lease: true,
          completed_at: null,
          updated_at: Date.now(),
        },
      });
      const committed = flags(ts.store.commit("wkr_X", [cp(B), cp(A)])).then(
        (v) => ({ ok: v }),
        (err: Error) => ({ error: err.message }),
      );
      const committer = await waiterOn([blockerPid]);
      expect(committer).toBeGreaterThan(0);
      // Resolves while the blocker still holds B: the renewal waited on no lock.
      const renewed = await ts.store.renewLeases("wkr_X", [A, B], Date.now() + 60_000).then(
        (v) => ({ ok: [...v].sort() }),
        (err: Error) => ({ error: err.message }),
      );
      await blocker.query("ROLLBACK");
      expect({ commit: await committed, renew: renewed }).toEqual({ commit: { ok: [true, true] }, renew: { ok: [A, B] } });
    } finally {
      await blocker.end();
      await admin.end();
    }
  });
});
