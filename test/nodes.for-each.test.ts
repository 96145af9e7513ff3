// for_each: the fan-out of one action over a list of subjects, each a run item. The
// credit union's weekly KYC review (a schedule tick finds 14 accounts, one inactive and skipped,
// two hit a transient messaging outage and recover on retry under the same idempotency key);
// permanent failures close the run completed_with_failures with the cause on the item; an
// operator's item retry under the same key comes back idempotent_replay (over HTTP too); bounded
// concurrency; cancel mid fan-out (in flight finish, the rest skipped, nothing new starts);
// approval-gated items; and a resumed fan-out never redoes a finished item.

import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { z } from "zod";
import { defineAction, replayed, type ActionContext } from "../src/engine/actions.js";
import { BOOTSTRAP_ADMIN } from "../src/engine/admin.js";
import { ManualClock } from "../src/engine/clock.js";
import { Engine, type EngineOptions } from "../src/engine/engine.js";
import type { Run, RunItem } from "../src/engine/store.js";
import { StepFailure, stepError } from "../src/model/errors.js";
import { buildApp } from "../src/server/app.js";
import { WS, LOOPBACK } from "./helpers/engine.js";
import { makeStore, STORE_KINDS, type TestStore } from "./helpers/stores.js";
import { sleep, until } from "./helpers/wait.js";

const MIN = 60_000;
const HOUR = 60 * MIN;
const DAY = 24 * HOUR;
const TOKEN = "fan-out-admin-token";

let seq = 0;

/** A one-fan-out automation (enrolled with the list in context): fanout → done. */
function fanOut(config: Record<string, unknown>, node: Record<string, unknown> = {}) {
  const key = `fan-${++seq}`;
  return {
    key,
    name: key,
    root: "fanout",
    nodes: [
      { key: "fanout", kind: "for_each", config, ...node },
      { key: "done", kind: "end" },
    ],
    edges: [{ from: "fanout", port: "next", to: "done" }],
  };
}

interface Deferred {
  promise: Promise<void>;
  resolve(): void;
}
function deferred(): Deferred {
  let resolve!: () => void;
  const promise = new Promise<void>((r) => (resolve = r));
  return { promise, resolve };
}

/** Hold a call until its gate opens, the step is aborted (engine shutdown), or all gates were released. */
class Gates {
  readonly held: Deferred[] = [];
  private released = false;
  async pass(signal: AbortSignal): Promise<void> {
    if (this.released) return;
    const g = deferred();
    this.held.push(g);
    signal.addEventListener("abort", () => g.resolve(), { once: true });
    await g.promise;
  }
  releaseAll(): void {
    this.released = true;
    for (const g of this.held) g.resolve();
  }
}

/** One call an action saw: enough to count effects per idempotency key. */
interface Call {
  key: string;
  attempt: number;
  input: Record<string, unknown>;
}
const record = (calls: Call[], input: unknown, ctx: ActionContext) =>
  calls.push({ key: ctx.idempotency_key, attempt: ctx.attempt, input: input as Record<string, unknown> });

/** How many calls each idempotency key got. */
function perKey(calls: readonly Call[]): Map<string, number> {
  const m = new Map<string, number>();
  for (const c of calls) m.set(c.key, (m.get(c.key) ?? 0) + 1);
  return m;
}

const outcomes = (items: readonly RunItem[]) => items.map((i) => i.outcome);
const count = (items: readonly RunItem[], o: RunItem["outcome"]) => items.filter((i) => i.outcome === o).length;

describe.each(STORE_KINDS)("for_each fan-out (%s store)", (kind) => {
  let ts: TestStore;
  const engines: Engine[] = [];
  let errors: unknown[] = [];
  /** Run before the engines stop (release gates a failed test left closed, so stop() does not wait on them). */
  const cleanups: (() => void)[] = [];

  beforeAll(async () => {
    ts = await makeStore(kind);
  });
  afterAll(async () => {
    await ts.destroy();
  });
  afterEach(async () => {
    for (const c of cleanups.splice(0)) c();
    for (const e of engines.splice(0)) await e.stop();
    expect(errors).toEqual([]);
    errors = [];
  });

  /** An engine on the suite's store with the test's actions registered before it starts. */
  async function boot(register: (e: Engine) => void, opts: Partial<EngineOptions> = {}): Promise<Engine> {
    const e = new Engine({ httpAllow: LOOPBACK, store: ts.store, ...opts, runner: { leaseMs: 30_000, pollMs: 20, ...opts.runner } });
    register(e);
    e.events.on("engine:error", (x) => errors.push(x));
    await e.start();
    engines.push(e);
    return e;
  }

  /** Wait (capped, naming what never happened) for the run to satisfy `pred`. */
  function runWhere(e: Engine, runId: string, what: string, pred: (r: Run) => boolean, capMs = 20_000): Promise<Run> {
    return until(
      `run ${runId} ${what}`,
      async () => {
        const r = await e.getRun(WS, runId);
        return pred(r) ? r : null;
      },
      capMs,
    );
  }
  const ended = (e: Engine, runId: string, capMs?: number) => runWhere(e, runId, "to end", (r) => r.completed_at !== null, capMs);

  /** The run ends once every approval is decided; if it does not, say what it is stuck on. */
  function endedAfterDecisions(e: Engine, runId: string): Promise<Run> {
    return runWhere(e, runId, "to end after every item's approval was decided", (r) => r.completed_at !== null, 10_000).catch(async (err: Error) => {
      const r = await e.getRun(WS, runId);
      const items = await e.listItems(WS, runId);
      const aps = await Promise.all(items.map((i) => e.getApproval(WS, i.approval_id!)));
      throw new Error(
        `${err.message}: run is ${r.status} (waiting_for ${r.waiting_for}, due_at ${r.due_at}); ` +
          `items ${outcomes(items).join(", ")}; their approvals ${aps.map((x) => x.status).join(", ")}`,
      );
    });
  }

  async function enrollList(e: Engine, definition: unknown, list: unknown[]): Promise<Run> {
    const a = await e.createAutomation(WS, definition);
    return (await e.enroll(WS, a.id, { context_overrides: { list } })).run;
  }

  // ---------- 1. the credit union's weekly KYC review ----------

  it("the credit-union week: Monday 09:00 Oslo finds 14 accounts → 13 evidence requests (2 after a transient outage, same key), 1 inactive skipped", async () => {
    const clock = new ManualClock(Date.parse("2026-02-28T12:00:00Z")); // a Saturday
    const accounts = Array.from({ length: 14 }, (_, i) => ({
      id: `KYC-${1001 + i}`,
      name: `Member ${i + 1}`,
      manager: `am-${(i % 3) + 1}`,
      active: i !== 6, // KYC-1007 went inactive
    }));
    const outage = new Set(["KYC-1003", "KYC-1011"]); // the messaging integration drops their first delivery
    const finds: string[] = [];
    const calls: Call[] = [];
    const engine = await boot(
      (e) => {
        e.registerAction(
          defineAction({
            kind: "kyc.find_due",
            input: z.object({}),
            handler(_input, ctx) {
              finds.push(ctx.idempotency_key);
              return { accounts };
            },
          }),
        );
        e.registerAction(
          defineAction({
            kind: "kyc.request_evidence",
            input: z.object({ account: z.string(), route_to: z.string() }),
            handler(input, ctx) {
              record(calls, input, ctx);
              if (outage.has(input.account) && ctx.attempt === 1) {
                throw new StepFailure(stepError("messaging.unavailable", `could not deliver the request for ${input.account}`, true));
              }
              return { evidence_request_id: `evr-${input.account}` };
            },
          }),
        );
      },
      { clock, schedulePollMs: HOUR, dispatchPollMs: HOUR, runner: { leaseMs: 30 * DAY } },
    );

    const a = await engine.createAutomation(WS, {
      key: "weekly-kyc-review",
      name: "Weekly KYC review",
      triggers: [{ type: "schedule", cron: "0 9 * * MON", timezone: "Europe/Oslo" }],
      root: "find",
      nodes: [
        { key: "find", kind: "kyc.find_due", config: {} },
        {
          key: "request",
          kind: "for_each",
          config: {
            items: "steps.find.accounts",
            subject: "item.id",
            condition: "item.active",
            action: { kind: "kyc.request_evidence", config: { account: "{{ item.id }}", route_to: "{{ item.manager }}" } },
            concurrency: 4,
          },
          retry: { max_attempts: 3, initial_ms: 10, max_ms: 20 },
        },
        { key: "done", kind: "end" },
      ],
      edges: [
        { from: "find", port: "next", to: "request" },
        { from: "request", port: "next", to: "done" },
      ],
    });
    // Monday 2 March 2026, 09:00 in Oslo (CET, UTC+1).
    const monday = Date.parse("2026-03-02T08:00:00Z");
    expect((await ts.store.listSchedules(a.id))[0]!.next_fire_at).toBe(monday);

    // Sunday passes: nothing fires.
    clock.set(monday - MIN);
    await engine.tick();
    expect((await engine.listRuns({ workspace_id: WS, automation_id: a.id })).items).toEqual([]);

    // The Monday tick.
    clock.set(monday);
    await engine.tick();
    const [created] = await until("the Monday run", async () => {
      const runs = (await engine.listRuns({ workspace_id: WS, automation_id: a.id })).items;
      return runs.length > 0 ? runs : null;
    });
    expect(created!.trigger_type).toBe("schedule");
    expect(created!.event).toMatchObject({ type: "schedule", scheduled_for: "2026-03-02T08:00:00.000Z" });

    // The two undelivered requests wait for their retry: the run parks until the earliest one.
    const parked = await runWhere(engine, created!.id, "to park for the item retries", (r) => r.status === "waiting" || r.completed_at !== null);
    expect(parked.status).toBe("waiting");
    expect(parked.waiting_for).toBe("item_retry");
    let items = await engine.listItems(WS, parked.id);
    expect(items).toHaveLength(14);
    const waiting = items.filter((i) => i.outcome === "pending");
    expect(waiting.map((i) => i.subject_id)).toEqual(["KYC-1003", "KYC-1011"]);
    for (const w of waiting) {
      expect(w.attempts).toBe(1);
      expect(w.error).toMatchObject({ code: "messaging.unavailable", retryable: true });
      expect(w.not_before).toBeGreaterThan(monday);
      expect(w.not_before).toBeLessThanOrEqual(monday + 20);
    }
    expect(parked.waiting_until).toBe(Math.min(...waiting.map((w) => w.not_before!)));
    expect(count(items, "succeeded")).toBe(11);
    expect(calls).toHaveLength(13); // 11 delivered + 2 dropped; nothing for the inactive account

    // Time reaches the retries.
    clock.advance(MIN);
    engine.poke();
    const run = await ended(engine, created!.id);
    expect(run.status).toBe("completed");
    expect(run.exit_reason).toBe("completed");
    expect(run.items_total).toBe(14);
    expect(run.items_failed).toBe(0);
    expect(finds).toEqual([`${run.id}/find/1`]);

    items = await engine.listItems(WS, run.id);
    expect(items.map((i) => i.idx)).toEqual([...Array(14).keys()]);
    expect(items.map((i) => i.subject_id)).toEqual(accounts.map((x) => x.id));
    expect(items.map((i) => i.idempotency_key)).toEqual(items.map((i) => `${run.id}/request/1/${i.idx}`));
    expect(count(items, "succeeded")).toBe(13);
    expect(count(items, "skipped")).toBe(1);
    expect(items.every((i) => i.action_kind === "kyc.request_evidence" && i.node_key === "request" && i.visit === 1)).toBe(true);

    // The inactive account: skipped by the condition, no call made.
    const inactive = items.find((i) => i.subject_id === "KYC-1007")!;
    expect(inactive).toMatchObject({ outcome: "skipped", attempts: 0, output: { reason: "condition" }, error: null });
    expect(calls.some((c) => c.input.account === "KYC-1007")).toBe(false);

    // Delivered: the resulting record reference on the item, the parameters as resolved at execution time.
    for (const it of items.filter((i) => i.outcome === "succeeded")) {
      const acct = accounts.find((x) => x.id === it.subject_id)!;
      expect(it.input).toEqual({ account: acct.id, route_to: acct.manager });
      expect(it.output).toEqual({ evidence_request_id: `evr-${acct.id}` });
      expect(it.error).toBeNull();
      expect(it.attempts).toBe(outage.has(acct.id) ? 2 : 1);
    }
    // The two that met the outage: two attempts, one idempotency key.
    for (const id of outage) {
      const it = items.find((i) => i.subject_id === id)!;
      expect(calls.filter((c) => c.input.account === id)).toEqual([
        { key: it.idempotency_key, attempt: 1, input: { account: id, route_to: accounts.find((x) => x.id === id)!.manager } },
        { key: it.idempotency_key, attempt: 2, input: { account: id, route_to: accounts.find((x) => x.id === id)!.manager } },
      ]);
    }
    // Every other account was called once.
    const keys = perKey(calls);
    expect(keys.size).toBe(13);
    for (const it of items.filter((i) => i.outcome === "succeeded")) expect(keys.get(it.idempotency_key)).toBe(outage.has(it.subject_id!) ? 2 : 1);

    // The fan-out step carries the counts (the run's steps.request and its step row).
    const counts = { total: 14, succeeded: 13, idempotent_replay: 0, failed: 0, skipped: 1, awaiting_approval: 0, pending: 0 };
    expect(run.steps.request).toEqual(counts);
    const steps = (await engine.listSteps(WS, run.id)).filter((s) => s.node_key === "request");
    expect(steps.map((s) => s.outcome)).toEqual(["waiting", "succeeded"]);
    expect(steps[1]!.output).toEqual(counts);
    expect(steps[1]!.input).toEqual({ items: 14, action: "kyc.request_evidence", concurrency: 4 });
    expect(steps[1]!.exited_via_port_key).toBe("next");

    // What Sigrid sees in the product: the run and its items over HTTP.
    const app = buildApp({ engine, adminToken: TOKEN });
    try {
      const res = await app.inject({ method: "GET", url: `/v1/automation-runs/${run.id}/items`, headers: { authorization: `Bearer ${TOKEN}` } });
      expect(res.statusCode).toBe(200);
      const body = res.json() as {
        items: { index: number; subject_id: string; outcome: string; attempts: number; idempotency_key: string; output: unknown; error: unknown }[];
      };
      expect(body.items).toHaveLength(14);
      expect(body.items.map((i) => i.subject_id)).toEqual(accounts.map((x) => x.id));
      expect(body.items.map((i) => i.outcome)).toEqual(accounts.map((x) => (x.active ? "succeeded" : "skipped")));
      expect(body.items.filter((i) => i.attempts === 2).map((i) => i.subject_id)).toEqual(["KYC-1003", "KYC-1011"]);
      expect(body.items[2]).toMatchObject({ index: 2, idempotency_key: `${run.id}/request/1/2`, output: { evidence_request_id: "evr-KYC-1003" }, error: null });
      const r = await app.inject({ method: "GET", url: `/v1/automation-runs/${run.id}`, headers: { authorization: `Bearer ${TOKEN}` } });
      expect(r.json()).toMatchObject({ id: run.id, status: "completed", trigger_type: "schedule", items_total: 14, items_failed: 0 });
    } finally {
      await app.close();
    }
  });

  // ---------- 2. permanent failures ----------

  it("permanent failures: the run ends completed_with_failures, items_failed counts them, the cause is on each item", async () => {
    const calls: Call[] = [];
    const engine = await boot((e) =>
      e.registerAction(
        defineAction({
          kind: "crm.create_task",
          input: z.object({ owner: z.string(), title: z.string() }),
          handler(input, ctx) {
            record(calls, input, ctx);
            if (input.owner === "o2" || input.owner === "o5")
              throw new StepFailure(stepError("crm.refused", `owner ${input.owner} is archived`, false, { owner: input.owner }));
            if (input.owner === "o7") throw new Error("unexpected null");
            if (input.owner === "o8") throw new StepFailure(stepError("crm.unavailable", "try later", true));
            return { task_id: `task-${input.owner}` };
          },
        }),
      ),
    );
    const list = [1, 2, 3, 4, 5, 6, 7, 8].map((n) => ({ id: `c${n}`, owner: `o${n}`, name: `Deal ${n}` }));
    list.push({ id: "c9", owner: "o9" } as (typeof list)[number]); // no name: its title cannot be rendered
    const run0 = await enrollList(
      engine,
      fanOut(
        {
          items: "context.list",
          action: { kind: "crm.create_task", config: { owner: "{{ item.owner }}", title: "Follow up {{ item.name }}" } },
          concurrency: 3,
        },
        { retry: { max_attempts: 2, initial_ms: 10, max_ms: 20 } },
      ),
      list,
    );
    const run = await ended(engine, run0.id);
    expect(run.status).toBe("completed_with_failures");
    expect(run.items_total).toBe(9);
    expect(run.items_failed).toBe(5);
    expect(run.steps.fanout).toMatchObject({ total: 9, succeeded: 4, failed: 5, skipped: 0, pending: 0 });

    const items = await engine.listItems(WS, run.id);
    expect(items.map((i) => i.subject_id)).toEqual(list.map((x) => x.id)); // default subject: item.id
    expect(outcomes(items)).toEqual(["succeeded", "failed", "succeeded", "succeeded", "failed", "succeeded", "failed", "failed", "failed"]);
    const by = (id: string) => items.find((i) => i.subject_id === id)!;
    expect(by("c2")).toMatchObject({ attempts: 1, error: { code: "crm.refused", retryable: false, details: { owner: "o2" } } });
    expect(by("c5").error).toMatchObject({ code: "crm.refused" });
    expect(by("c7")).toMatchObject({ attempts: 1, error: { code: "action.exception", message: "unexpected null" } });
    // Retryable, but the node allows 2 attempts: failed after the second, same key both times.
    expect(by("c8")).toMatchObject({ attempts: 2, error: { code: "crm.unavailable", retryable: true }, not_before: null });
    expect(calls.filter((c) => c.input.owner === "o8").map((c) => [c.key, c.attempt])).toEqual([
      [by("c8").idempotency_key, 1],
      [by("c8").idempotency_key, 2],
    ]);
    // Bad data fails that item alone, before any call.
    expect(by("c9")).toMatchObject({ attempts: 0, error: { code: "template.missing_variable" } });
    expect(calls.some((c) => c.input.owner === "o9")).toBe(false);
    for (const it of items.filter((i) => i.outcome === "failed")) expect(it.finished_at).not.toBeNull();
    // Permanent failures were not retried.
    expect(calls.filter((c) => ["o2", "o5", "o7"].includes(String(c.input.owner)))).toHaveLength(3);
  });

  // ---------- 3. operator's item retry, same idempotency key ----------

  it("item retry reuses the idempotency key: the effect that happened (response lost) comes back idempotent_replay, once", async () => {
    /** The remote system: effects by idempotency key. */
    const effects = new Map<string, { request_id: string; account: string }>();
    const calls: Call[] = [];
    const engine = await boot((e) =>
      e.registerAction(
        defineAction({
          kind: "kyc.request_evidence",
          input: z.object({ account: z.string() }),
          handler(input, ctx) {
            record(calls, input, ctx);
            const done = effects.get(ctx.idempotency_key);
            if (done) return replayed(done);
            const effect = { request_id: `evr-${effects.size + 1}`, account: input.account };
            effects.set(ctx.idempotency_key, effect);
            // The request for A-2 was delivered, but the answer never came back.
            if (input.account === "A-2") throw new StepFailure(stepError("messaging.response_lost", "connection closed before the response", false));
            return effect;
          },
        }),
      ),
    );
    const run0 = await enrollList(engine, fanOut({ items: "context.list", action: { kind: "kyc.request_evidence", config: { account: "{{ item.id }}" } } }), [
      { id: "A-1" },
      { id: "A-2" },
      { id: "A-3" },
    ]);
    const run = await ended(engine, run0.id);
    expect(run.status).toBe("completed_with_failures");
    expect(run.items_failed).toBe(1);
    const failed = (await engine.listItems(WS, run.id)).find((i) => i.outcome === "failed")!;
    expect(failed).toMatchObject({ subject_id: "A-2", attempts: 1, error: { code: "messaging.response_lost" } });
    expect(effects.size).toBe(3);

    const app = buildApp({ engine, adminToken: TOKEN });
    try {
      const res = await app.inject({
        method: "POST",
        url: `/v1/automation-runs/${run.id}/items/${failed.id}/retry`,
        headers: { authorization: `Bearer ${TOKEN}` },
      });
      expect(res.statusCode, res.body).toBe(200);
      const effect = effects.get(failed.idempotency_key)!;
      expect(res.json()).toMatchObject({
        id: failed.id,
        run_id: run.id,
        subject_id: "A-2",
        outcome: "idempotent_replay",
        attempts: 2,
        idempotency_key: failed.idempotency_key,
        output: effect,
        error: null,
      });
      // The action saw the same key, found its effect, and did not make another.
      expect(calls.filter((c) => c.input.account === "A-2")).toEqual([
        { key: failed.idempotency_key, attempt: 1, input: { account: "A-2" } },
        { key: failed.idempotency_key, attempt: 2, input: { account: "A-2" } },
      ]);
      expect(effects.size).toBe(3);
      expect([...effects.values()].filter((x) => x.account === "A-2")).toHaveLength(1);

      const item = (await engine.listItems(WS, run.id)).find((i) => i.id === failed.id)!;
      expect(item).toMatchObject({ outcome: "idempotent_replay", attempts: 2, output: effect, error: null, idempotency_key: failed.idempotency_key });
      const after = await engine.getRun(WS, run.id);
      expect(after.items_failed).toBe(0);
      expect(after.items_total).toBe(3);

      const audit = (await engine.listAudit(WS)).filter((x) => x.action === "run_item.retry");
      expect(audit).toHaveLength(1);
      expect(audit[0]).toMatchObject({
        actor: `user:${BOOTSTRAP_ADMIN}`,
        target_type: "run_item",
        target_id: failed.id, // the HTTP caller: TOKEN's user
        details: { run_id: run.id, idempotency_key: failed.idempotency_key, attempt: 2, outcome: "idempotent_replay" },
      });

      // It is no longer failed: a second retry is refused, over HTTP (409) and in the library.
      const again = await app.inject({
        method: "POST",
        url: `/v1/automation-runs/${run.id}/items/${failed.id}/retry`,
        headers: { authorization: `Bearer ${TOKEN}` },
      });
      expect(again.statusCode).toBe(409);
      expect(again.json()).toMatchObject({ error: { code: "item.not_failed" } });
      await expect(engine.retryItem(WS, run.id, failed.id, "admin")).rejects.toMatchObject({ code: "item.not_failed" });
      // A succeeded item cannot be retried either.
      const ok = (await engine.listItems(WS, run.id)).find((i) => i.subject_id === "A-1")!;
      await expect(engine.retryItem(WS, run.id, ok.id, "admin")).rejects.toMatchObject({ code: "item.not_failed" });
      expect(calls).toHaveLength(4);
      expect((await engine.listAudit(WS)).filter((x) => x.action === "run_item.retry")).toHaveLength(1);
    } finally {
      await app.close();
    }
  });

  // ---------- 4. bounded concurrency ----------

  it("bounded concurrency: 50 items at concurrency 5 never have more than 5 calls in flight", async () => {
    let inFlight = 0;
    let maxInFlight = 0;
    const calls: Call[] = [];
    const engine = await boot((e) =>
      e.registerAction({
        kind: "slow.touch",
        async handler(input, ctx) {
          record(calls, input, ctx);
          inFlight++;
          maxInFlight = Math.max(maxInFlight, inFlight);
          try {
            await sleep(3 + (calls.length % 5));
            return { touched: (input as { n: string }).n };
          } finally {
            inFlight--;
          }
        },
      }),
    );
    const run0 = await enrollList(
      engine,
      fanOut({ items: "context.list", action: { kind: "slow.touch", config: { n: "{{ item }}" } }, concurrency: 5 }),
      Array.from({ length: 50 }, (_, i) => String(i)),
    );
    const run = await ended(engine, run0.id);
    expect(run.status).toBe("completed");
    expect(run.items_total).toBe(50);
    expect(maxInFlight).toBeLessThanOrEqual(5);
    expect(maxInFlight).toBeGreaterThan(1);
    expect(inFlight).toBe(0);
    const items = await engine.listItems(WS, run.id);
    expect(count(items, "succeeded")).toBe(50);
    expect(items.map((i) => i.subject_id)).toEqual(items.map((i) => String(i.idx))); // a string is its own subject
    expect(items.map((i) => i.output)).toEqual(items.map((i) => ({ touched: String(i.idx) })));
    expect(calls).toHaveLength(50);
    expect([...perKey(calls).values()].every((n) => n === 1)).toBe(true);
  });

  // ---------- 5. cancel mid fan-out ----------

  it("cancel mid fan-out: the two in flight finish and are recorded, every other item is skipped (run.cancelled), nothing new starts", async () => {
    const calls: Call[] = [];
    const gates = new Gates();
    cleanups.push(() => gates.releaseAll());
    const engine = await boot((e) =>
      e.registerAction({
        kind: "slow.gated",
        async handler(input, ctx) {
          record(calls, input, ctx);
          await gates.pass(ctx.signal);
          return { done: (input as { n: string }).n };
        },
      }),
    );
    const run0 = await enrollList(
      engine,
      fanOut({ items: "context.list", action: { kind: "slow.gated", config: { n: "{{ item.n }}" } }, concurrency: 2 }),
      Array.from({ length: 20 }, (_, i) => ({ id: `s${i}`, n: `n${i}` })),
    );
    await until("two calls in flight", () => gates.held.length === 2);

    const r = await engine.controlRun(WS, run0.id, "cancel", "admin");
    expect(r.completed_at).toBeNull(); // a worker holds it: applied at its next checkpoint
    // Give a worker every chance to (wrongly) start another item, then let the two finish.
    await sleep(100);
    expect(gates.held).toHaveLength(2);
    expect(calls).toHaveLength(2);
    for (const g of gates.held) g.resolve();

    const run = await ended(engine, run0.id);
    expect(run.status).toBe("cancelled");
    expect(run.items_total).toBe(20);
    expect(run.items_failed).toBe(0);
    expect(calls).toHaveLength(2);
    const items = await engine.listItems(WS, run.id);
    const inFlightKeys = new Set(calls.map((c) => c.key));
    for (const it of items) {
      if (inFlightKeys.has(it.idempotency_key)) {
        expect(it).toMatchObject({ outcome: "succeeded", attempts: 1, output: { done: (it.input as { n: string }).n }, error: null });
      } else {
        expect(it).toMatchObject({ outcome: "skipped", attempts: 0, error: { code: "run.cancelled", retryable: false } });
        expect(it.finished_at).not.toBeNull();
      }
    }
    expect(count(items, "succeeded")).toBe(2);
    expect(count(items, "skipped")).toBe(18);
    const audit = (await engine.listAudit(WS)).filter((x) => x.action === "run.cancel" && x.target_id === run.id);
    expect(audit).toMatchObject([{ actor: "admin", target_type: "run" }]);
    // Nothing starts later either.
    await sleep(100);
    expect(calls).toHaveLength(2);
    await expect(engine.controlRun(WS, run.id, "cancel", "admin")).rejects.toMatchObject({ code: "run.already_ended" });
  });

  // ---------- 6. approval-gated items ----------

  it("approval-gated items: each waits for its own decision; approved ones run, the rejected one is skipped", async () => {
    const calls: Call[] = [];
    const engine = await boot((e) =>
      e.registerAction({
        kind: "mail.send",
        handler(input, ctx) {
          record(calls, input, ctx);
          return { sent_to: (input as { to: string }).to };
        },
      }),
    );
    const run0 = await enrollList(
      engine,
      fanOut({
        items: "context.list",
        subject: "item.id",
        action: { kind: "mail.send", config: { to: "{{ item.email }}" } },
        approval: { title: "Send to {{ subject.id }}" },
      }),
      [
        { id: "ct-1", email: "a@example.com" },
        { id: "ct-2", email: "b@example.com" },
        { id: "ct-3", email: "c@example.com" },
      ],
    );

    const parked = await runWhere(engine, run0.id, "to wait for approvals", (r) => r.status === "waiting" || r.completed_at !== null);
    expect(parked).toMatchObject({ status: "waiting", waiting_for: "approval" });
    let items = await engine.listItems(WS, run0.id);
    expect(outcomes(items)).toEqual(["awaiting_approval", "awaiting_approval", "awaiting_approval"]);
    expect(items.every((i) => i.approval_id !== null)).toBe(true);
    const approvals = (await engine.listApprovals(WS, "pending")).filter((x) => x.run_id === run0.id);
    expect(approvals.map((x) => x.id).sort()).toEqual(items.map((i) => i.approval_id!).sort());
    for (const it of items) {
      const ap = approvals.find((x) => x.id === it.approval_id)!;
      expect(ap).toMatchObject({ item_id: it.id, node_key: "fanout", title: `Send to ${it.subject_id}`, status: "pending" });
    }
    expect(calls).toEqual([]);

    await engine.decideApproval(WS, items[0]!.approval_id!, "approved", "admin");
    await engine.decideApproval(WS, items[1]!.approval_id!, "rejected", "admin", "not this one");
    await engine.decideApproval(WS, items[2]!.approval_id!, "approved", "admin");

    const run = await endedAfterDecisions(engine, run0.id);
    expect(run.status).toBe("completed");
    expect(run.items_failed).toBe(0);
    items = await engine.listItems(WS, run.id);
    expect(outcomes(items)).toEqual(["succeeded", "skipped", "succeeded"]);
    expect(items[0]!.output).toEqual({ sent_to: "a@example.com" });
    expect(items[2]!.output).toEqual({ sent_to: "c@example.com" });
    expect(items[1]!.output).toMatchObject({ reason: "rejected", decided_by: "admin" });
    expect(calls.map((c) => c.input.to).sort()).toEqual(["a@example.com", "c@example.com"]);
    expect(run.steps.fanout).toMatchObject({ total: 3, succeeded: 2, skipped: 1, awaiting_approval: 0 });
  });

  it("approval-gated items: decisions made while another approved item's action is running are not lost", async () => {
    const calls: Call[] = [];
    const gates = new Gates();
    cleanups.push(() => gates.releaseAll());
    const engine = await boot((e) =>
      e.registerAction({
        kind: "mail.send",
        async handler(input, ctx) {
          record(calls, input, ctx);
          if (calls.length === 1) await gates.pass(ctx.signal); // only the first send is held
          return { sent_to: (input as { to: string }).to };
        },
      }),
    );
    const run0 = await enrollList(
      engine,
      fanOut({
        items: "context.list",
        subject: "item.id",
        action: { kind: "mail.send", config: { to: "{{ item.email }}" } },
        approval: { title: "Send to {{ subject.id }}" },
      }),
      [
        { id: "ct-1", email: "a@example.com" },
        { id: "ct-2", email: "b@example.com" },
        { id: "ct-3", email: "c@example.com" },
      ],
    );
    await runWhere(engine, run0.id, "to wait for approvals", (r) => r.status === "waiting");
    const items = await engine.listItems(WS, run0.id);

    // The first approval wakes the run; its send is in flight when the other two are decided.
    await engine.decideApproval(WS, items[0]!.approval_id!, "approved", "admin");
    await until("the first send in flight", () => gates.held.length === 1);
    await engine.decideApproval(WS, items[1]!.approval_id!, "approved", "admin");
    await engine.decideApproval(WS, items[2]!.approval_id!, "rejected", "admin");
    gates.held[0]!.resolve();

    const run = await endedAfterDecisions(engine, run0.id);
    expect(run.status).toBe("completed");
    expect(outcomes(await engine.listItems(WS, run.id))).toEqual(["succeeded", "succeeded", "skipped"]);
    expect(calls.map((c) => c.input.to)).toEqual(["a@example.com", "b@example.com"]);
  });

  // ---------- 7. a resumed fan-out does not redo finished items ----------

  it("a fan-out resumed after an item retry runs only what is left: each key once, the retried one twice", async () => {
    const calls: Call[] = [];
    const engine = await boot((e) =>
      e.registerAction({
        kind: "ledger.post",
        handler(input, ctx) {
          record(calls, input, ctx);
          const n = (input as { n: string }).n;
          if (n === "10" && ctx.attempt === 1) throw new StepFailure(stepError("ledger.busy", "locked, try again", true));
          return { posted: n };
        },
      }),
    );
    const run0 = await enrollList(
      engine,
      fanOut(
        { items: "context.list", action: { kind: "ledger.post", config: { n: "{{ item }}" } }, concurrency: 4 },
        { retry: { max_attempts: 3, initial_ms: 10, max_ms: 20 } },
      ),
      Array.from({ length: 30 }, (_, i) => String(i)),
    );
    const run = await ended(engine, run0.id);
    expect(run.status).toBe("completed");
    expect(run.items_total).toBe(30);
    expect(run.items_failed).toBe(0);

    const items = await engine.listItems(WS, run.id);
    expect(count(items, "succeeded")).toBe(30);
    const keys = perKey(calls);
    expect(keys.size).toBe(30);
    for (const it of items) {
      expect(keys.get(it.idempotency_key)).toBe(it.idx === 10 ? 2 : 1);
      expect(it.attempts).toBe(it.idx === 10 ? 2 : 1);
    }
    expect(calls.filter((c) => c.key === items[10]!.idempotency_key).map((c) => c.attempt)).toEqual([1, 2]);
    expect(calls).toHaveLength(31);
    // The run parked once for the retry and resumed the same visit.
    const steps = (await engine.listSteps(WS, run.id)).filter((s) => s.node_key === "fanout");
    expect(steps.map((s) => [s.outcome, s.visit])).toEqual([
      ["waiting", 1],
      ["succeeded", 1],
    ]);
    expect(steps[1]!.output).toMatchObject({ total: 30, succeeded: 30, pending: 0 });
  });
});
