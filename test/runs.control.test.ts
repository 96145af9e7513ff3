// Operator control of runs over the HTTP API: stop (exit admin_stopped) and cancel a parked run or
// one whose slow step is in flight, retrigger a run (a new run from the root for the same trigger
// event, idempotent on a key, re-entry rules applied), each recorded in the audit log; ending a
// run that already ended is 409 run.already_ended; an unknown run is 404 run.not_found.

import { afterEach, beforeEach, describe, expect, it } from "vitest";
import type { ActionContext } from "../src/engine/actions.js";
import { BOOTSTRAP_ADMIN } from "../src/engine/admin.js";
import { ManualClock } from "../src/engine/clock.js";
import { Engine } from "../src/engine/engine.js";
import type { Run } from "../src/engine/store.js";
import { startApi, type Api, type Reply } from "./helpers/api.js";
import { WS, LOOPBACK } from "./helpers/engine.js";
import { makeStore, STORE_KINDS, type TestStore } from "./helpers/stores.js";

const TOKEN = "control-admin-token";
/** The audit actor of an HTTP call made with TOKEN (the bootstrap admin user). */
const ADMIN = `user:${BOOTSTRAP_ADMIN}`;
const HOUR = 60 * 60_000;
const DAY = 24 * HOUR;

interface RunJson {
  id: string;
  automation_id: string;
  event_id: string | null;
  trigger_type: string;
  subject_id: string | null;
  status: string;
  exit_reason: string | null;
  current_node_key: string | null;
  waiting_for: string | null;
  context: Record<string, unknown>;
  event: Record<string, unknown>;
  completed_at: string | null;
  duplicate?: boolean;
  retriggered_from?: string;
}
interface AuditJson {
  id: number;
  actor: string;
  action: string;
  target_type: string;
  target_id: string;
  details: Record<string, unknown>;
  at: string;
}

interface Deferred<T> {
  promise: Promise<T>;
  resolve: (v: T) => void;
}
/** A promise with its resolver outside. */
function deferred<T>(): Deferred<T> {
  let resolve!: (v: T) => void;
  const promise = new Promise<T>((r) => (resolve = r));
  return { promise, resolve };
}

let seq = 0;

describe.each(STORE_KINDS)("run control over HTTP (%s store)", (kind) => {
  let ts: TestStore;
  let clock: ManualClock;
  let engine: Engine;
  let api: Api;
  let errors: unknown[];
  let finished: Map<string, number>;
  /** The "think" action: signals each start, then waits for `gate` (or its signal's abort). */
  let thinking: { started: Deferred<ActionContext>; gate: Deferred<void>; calls: number; aborted: boolean[] };

  beforeEach(async () => {
    ts = await makeStore(kind);
    clock = new ManualClock(Date.parse("2026-06-01T08:00:00Z") + seq++ * 30 * DAY);
    engine = new Engine({ httpAllow: LOOPBACK, store: ts.store, clock, runner: { leaseMs: 30 * DAY, pollMs: 50 } });
    thinking = { started: deferred<ActionContext>(), gate: deferred<void>(), calls: 0, aborted: [] };
    engine.registerAction({
      kind: "think",
      class: "slow",
      async handler(_input, ctx) {
        thinking.calls += 1;
        thinking.started.resolve(ctx);
        await new Promise<void>((resolve, reject) => {
          if (ctx.signal.aborted) return reject(new Error("aborted before it began"));
          ctx.signal.addEventListener(
            "abort",
            () => {
              thinking.aborted.push(true);
              reject(ctx.signal.reason instanceof Error ? ctx.signal.reason : new Error("aborted"));
            },
            { once: true },
          );
          void thinking.gate.promise.then(() => resolve());
        });
        return { thought: true };
      },
    });
    await engine.start();
    errors = [];
    engine.events.on("engine:error", (e) => errors.push(e));
    finished = new Map();
    engine.events.on("run:finished", (e) => finished.set(e.run_id, (finished.get(e.run_id) ?? 0) + 1));
    api = await startApi(engine, TOKEN, 20);
  });
  afterEach(async () => {
    thinking.gate.resolve(); // never leave a handler hanging
    await api.close();
    await engine.stop();
    await ts.destroy();
    expect(errors).toEqual([]);
  });

  const call = <T = Record<string, unknown>>(method: "GET" | "POST", path: string, body?: unknown): Promise<Reply<T>> => api.call<T>(method, path, body);

  async function automation(nodes: unknown[], edges: unknown[], reentry: unknown = { policy: "allow_concurrent" }) {
    const k = `ctl-${kind}-${++seq}`;
    return engine.createAutomation(WS, { key: k, name: k, reentry, root: (nodes[0] as { key: string }).key, nodes, edges });
  }
  /** delay 1h → set (mark) → end */
  const delayed = (reentry?: unknown) =>
    automation(
      [
        { key: "wait", kind: "delay", config: { duration_ms: HOUR } },
        { key: "mark", kind: "set", config: { assign: { marked: "true" } } },
        { key: "done", kind: "end" },
      ],
      [
        { from: "wait", port: "next", to: "mark" },
        { from: "mark", port: "next", to: "done" },
      ],
      reentry,
    );
  /** approval → approved: set (mark) */
  const gated = () =>
    automation(
      [
        { key: "ask", kind: "approval", config: { title: "Go {{ context.name }}?", approvers: ["role:admin"] } },
        { key: "mark", kind: "set", config: { assign: { marked: "true" } } },
      ],
      [
        { from: "ask", port: "approved", to: "mark" },
        { from: "ask", port: "rejected", to: "mark" },
      ],
    );

  async function enroll(automationId: string, body: Record<string, unknown> = {}): Promise<RunJson> {
    const res = await call<RunJson>("POST", `/v1/automations/${automationId}/enroll`, body);
    expect(res.status).toBe(201);
    return res.body;
  }
  const parkedOn = (what: string) => (r: Run) => r.status === "waiting" && r.waiting_for === what;

  /** The run's control entries (every mutation is audited: the enrollment that made the run is too, and is left out here). */
  async function auditFor(targetId: string): Promise<AuditJson[]> {
    const res = await call<{ items: AuditJson[] }>("GET", "/v1/audit-log?limit=500");
    expect(res.status).toBe(200);
    return res.body.items.filter((a) => a.target_id === targetId && a.action !== "run.enroll");
  }

  it("stop a run parked on a delay: exited admin_stopped at once; stopping (or cancelling) again is 409 run.already_ended; audited as run.stop", async () => {
    const a = await delayed();
    const r = await enroll(a.id, { subject_id: "ct_1", context_overrides: { name: "Ada" } });
    await engine.waitForRun(WS, r.id, parkedOn("delay"));

    const stopped = await call<RunJson>("POST", `/v1/automation-runs/${r.id}/stop`);
    expect(stopped.status).toBe(200);
    expect(stopped.body).toMatchObject({ id: r.id, status: "exited", exit_reason: "admin_stopped", waiting_for: null, current_node_key: null });
    expect(stopped.body.completed_at).not.toBeNull();
    const got = await call<RunJson>("GET", `/v1/automation-runs/${r.id}`);
    expect(got.body).toMatchObject({ status: "exited", exit_reason: "admin_stopped" });
    expect(finished.get(r.id)).toBe(1);

    for (const verb of ["stop", "cancel"]) {
      const again = await call<RunJson>("POST", `/v1/automation-runs/${r.id}/${verb}`);
      expect(again.status).toBe(409);
      expect(again.body.error).toMatchObject({ code: "run.already_ended", details: { status: "exited" } });
    }
    expect((await call<RunJson>("GET", `/v1/automation-runs/${r.id}`)).body).toEqual(got.body);

    const entries = await auditFor(r.id);
    expect(entries.map((e) => e.action)).toEqual(["run.stop"]);
    expect(entries[0]).toMatchObject({ actor: ADMIN, target_type: "run", target_id: r.id });

    // The delay's time comes and goes: the stopped run does not resume. (A later run of the same
    // automation is driven to completion past that time, so the runner has been round since.)
    clock.advance(HOUR + 1);
    const later = await enroll(a.id, { subject_id: "ct_2" });
    await engine.waitForRun(WS, later.id, parkedOn("delay"));
    clock.advance(HOUR + 1);
    await engine.tick();
    expect((await engine.waitForRun(WS, later.id)).status).toBe("completed");
    expect(await engine.getRun(WS, r.id)).toMatchObject({ status: "exited", exit_reason: "admin_stopped" });
    expect((await engine.listSteps(WS, r.id)).map((s) => s.node_key)).toEqual(["wait"]);
    expect(finished.get(r.id)).toBe(1);
  });

  it("stop a run parked on an approval: its pending approval becomes cancelled and can no longer be decided", async () => {
    const a = await gated();
    const r = await enroll(a.id, { subject_id: "ct_a", context_overrides: { name: "Bo" } });
    await engine.waitForRun(WS, r.id, parkedOn("approval"));
    const apr = (await engine.listApprovals(WS, "pending")).find((x) => x.run_id === r.id)!;
    expect(apr).toBeDefined();

    const stopped = await call<RunJson>("POST", `/v1/automation-runs/${r.id}/stop`);
    expect(stopped.status).toBe(200);
    expect(stopped.body).toMatchObject({ status: "exited", exit_reason: "admin_stopped" });

    const after = await call<{ status: string }>("GET", `/v1/approvals/${apr.id}`);
    expect(after.body.status).toBe("cancelled");
    expect((await call<{ items: { id: string }[] }>("GET", "/v1/approvals?status=pending")).body.items.some((x) => x.id === apr.id)).toBe(false);
    const late = await call("POST", `/v1/approvals/${apr.id}/approve`, {});
    expect(late.status).toBe(409);
    expect(late.body.error).toMatchObject({ code: "approval.already_decided", details: { status: "cancelled" } });
    expect(await engine.getRun(WS, r.id)).toMatchObject({ status: "exited", exit_reason: "admin_stopped" });
    expect((await engine.listSteps(WS, r.id)).some((s) => s.node_key === "mark")).toBe(false);

    expect((await call("POST", `/v1/automation-runs/${r.id}/stop`)).status).toBe(409);
    expect((await auditFor(r.id)).map((e) => e.action)).toEqual(["run.stop"]);
  });

  it("stop while a slow custom action is in flight: its signal is aborted, the run ends exited admin_stopped, the next node never runs", async () => {
    const a = await automation(
      [
        { key: "think", kind: "think", config: {} },
        { key: "mark", kind: "set", config: { assign: { marked: "true" } } },
      ],
      [{ from: "think", port: "next", to: "mark" }],
    );
    const r = await enroll(a.id, { subject_id: "ct_t" });
    const ctx = await thinking.started.promise;
    expect(ctx.signal.aborted).toBe(false);

    const stopped = await call<RunJson>("POST", `/v1/automation-runs/${r.id}/stop`);
    expect(stopped.status).toBe(200);
    expect(stopped.body.id).toBe(r.id);

    const done = await engine.waitForRun(WS, r.id);
    expect(ctx.signal.aborted).toBe(true);
    expect(thinking.aborted).toEqual([true]);
    expect(done).toMatchObject({ status: "exited", exit_reason: "admin_stopped" });
    expect(done.context.marked).toBeUndefined();
    const steps = await engine.listSteps(WS, r.id);
    expect(steps.some((s) => s.node_key === "mark")).toBe(false);
    expect(thinking.calls).toBe(1);
    expect(finished.get(r.id)).toBe(1);
    expect((await auditFor(r.id)).map((e) => e.action)).toEqual(["run.stop"]);
    const again = await call("POST", `/v1/automation-runs/${r.id}/stop`);
    expect(again.status).toBe(409);
    expect(again.body.error?.code).toBe("run.already_ended");
  });

  it("cancel a waiting run: status cancelled; audited as run.cancel; cancelling again is 409", async () => {
    const a = await delayed();
    const r = await enroll(a.id, { subject_id: "ct_c" });
    await engine.waitForRun(WS, r.id, parkedOn("delay"));

    const cancelled = await call<RunJson>("POST", `/v1/automation-runs/${r.id}/cancel`);
    expect(cancelled.status).toBe(200);
    expect(cancelled.body).toMatchObject({ id: r.id, status: "cancelled", exit_reason: null, waiting_for: null });
    expect(cancelled.body.completed_at).not.toBeNull();
    expect((await engine.getRun(WS, r.id)).status).toBe("cancelled");
    expect(finished.get(r.id)).toBe(1);

    const again = await call("POST", `/v1/automation-runs/${r.id}/cancel`);
    expect(again.status).toBe(409);
    expect(again.body.error).toMatchObject({ code: "run.already_ended", details: { status: "cancelled" } });
    const entries = await auditFor(r.id);
    expect(entries.map((e) => e.action)).toEqual(["run.cancel"]);
    expect(entries[0]).toMatchObject({ actor: ADMIN, target_type: "run" });

    // A run parked on an approval: cancelled, and so is its approval.
    const g = await gated();
    const r2 = await enroll(g.id, { subject_id: "ct_c2", context_overrides: { name: "Cy" } });
    await engine.waitForRun(WS, r2.id, parkedOn("approval"));
    const apr = (await engine.listApprovals(WS, "pending")).find((x) => x.run_id === r2.id)!;
    expect((await call<RunJson>("POST", `/v1/automation-runs/${r2.id}/cancel`)).body.status).toBe("cancelled");
    expect((await engine.getApproval(WS, apr.id)).status).toBe("cancelled");
  });

  it("retrigger a completed run: 201 a new run for the same event and subject, from the root; idempotent on a key; audited", async () => {
    const a = await automation(
      [
        { key: "first", kind: "set", config: { assign: { greeting: "'hi ' + context.name" } } },
        { key: "second", kind: "set", config: { assign: { n: "context.n + 1" } } },
      ],
      [{ from: "first", port: "next", to: "second" }],
    );
    const r = await enroll(a.id, { subject_id: "ct_r", context_overrides: { name: "Ada", n: 1 } });
    const orig = await engine.waitForRun(WS, r.id);
    expect(orig).toMatchObject({ status: "completed", context: { name: "Ada", n: 2, greeting: "hi Ada" } });

    const re = await call<RunJson>("POST", `/v1/automation-runs/${r.id}/retrigger`);
    expect(re.status).toBe(201);
    expect(re.body.id).not.toBe(r.id);
    expect(re.body).toMatchObject({
      automation_id: a.id,
      event_id: orig.event_id,
      subject_id: "ct_r",
      trigger_type: orig.trigger_type,
      duplicate: false,
      retriggered_from: r.id,
    });
    expect(re.body.event).toEqual(orig.event);
    const next = await engine.waitForRun(WS, re.body.id);
    expect(next.status).toBe("completed");
    // From the root, with the enrollment's overrides again (not the first run's final context).
    expect(next.context).toEqual({ name: "Ada", n: 2, greeting: "hi Ada" });
    expect((await engine.listSteps(WS, next.id)).map((s) => `${s.node_key}:${s.entered_via_port_key}`)).toEqual(["first:null", "second:next"]);
    expect(await engine.getRun(WS, r.id)).toMatchObject({ status: "completed" }); // the original is untouched

    // With an idempotency key: the second call returns the same run.
    const k1 = await call<RunJson>("POST", `/v1/automation-runs/${r.id}/retrigger`, { idempotency_key: "again-1" });
    expect(k1.status).toBe(201);
    expect(k1.body.duplicate).toBe(false);
    const k2 = await call<RunJson>("POST", `/v1/automation-runs/${r.id}/retrigger`, { idempotency_key: "again-1" });
    expect(k2.status).toBe(200);
    expect(k2.body).toMatchObject({ id: k1.body.id, duplicate: true });
    expect((await engine.waitForRun(WS, k1.body.id)).status).toBe("completed");
    const runs = (await engine.listRuns({ workspace_id: WS, automation_id: a.id })).items;
    expect(runs.map((x) => x.id).sort()).toEqual([r.id, re.body.id, k1.body.id].sort());

    const entries = await auditFor(r.id);
    expect(entries.map((e) => e.action)).toEqual(["run.retrigger", "run.retrigger"]);
    expect(entries.every((e) => e.actor === ADMIN && e.target_type === "run")).toBe(true);
    expect(entries.map((e) => e.details.new_run_id).sort()).toEqual([re.body.id, k1.body.id].sort());
  });

  it("retrigger while the original is still active under skip_if_active: the new run is recorded as exited already_active", async () => {
    const a = await delayed({ policy: "skip_if_active" });
    const r = await enroll(a.id, { subject_id: "ct_s" });
    await engine.waitForRun(WS, r.id, parkedOn("delay"));

    const re = await call<RunJson>("POST", `/v1/automation-runs/${r.id}/retrigger`, {});
    expect(re.status).toBe(201);
    expect(re.body.id).not.toBe(r.id);
    expect(re.body).toMatchObject({ status: "exited", exit_reason: "already_active", subject_id: "ct_s", duplicate: false });
    expect(await engine.getRun(WS, re.body.id)).toMatchObject({ status: "exited", exit_reason: "already_active" });
    expect(await engine.listSteps(WS, re.body.id)).toEqual([]);
    expect(await engine.getRun(WS, r.id)).toMatchObject({ status: "waiting", waiting_for: "delay" });

    // Once the original has ended, a retrigger runs.
    expect((await call("POST", `/v1/automation-runs/${r.id}/stop`)).status).toBe(200);
    const re2 = await call<RunJson>("POST", `/v1/automation-runs/${r.id}/retrigger`, {});
    expect(re2.status).toBe(201);
    expect(re2.body.exit_reason).toBeNull();
    expect(await engine.waitForRun(WS, re2.body.id, parkedOn("delay"))).toMatchObject({ status: "waiting", subject_id: "ct_s" });
  });

  it("an unknown run is 404 run.not_found for stop, cancel, retrigger and get", async () => {
    for (const verb of ["stop", "cancel", "retrigger"]) {
      const res = await call("POST", `/v1/automation-runs/run_does_not_exist/${verb}`);
      expect(res.status, verb).toBe(404);
      expect(res.body.error?.code).toBe("run.not_found");
    }
    const get = await call("GET", "/v1/automation-runs/run_does_not_exist");
    expect(get.status).toBe(404);
    expect(get.body.error?.code).toBe("run.not_found");
    const audit = (await call<{ items: AuditJson[] }>("GET", "/v1/audit-log")).body.items;
    expect(audit.filter((e) => e.target_id === "run_does_not_exist")).toEqual([]);
  });
});
